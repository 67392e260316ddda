//! The event pages and files: the list and one event as HTML, the clip and poster as
//! downloads, the clip replayed as MJPEG at its own rate, and deleting from a form.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::WebError;
use super::live::{busy, mjpeg_response};
use crate::events::{AviFrames, EventFile, EventInfo};
use crate::fanout::BOUNDARY;
use crate::pages;
use crate::state::AppState;
use crate::stream::{self, ConnWatch, ViewerSlot};

/// Chunk size when sending files.
pub const FILE_CHUNK: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    pub(super) page: Option<usize>,
}

pub(super) async fn list_events(
    state: &AppState,
    page: usize,
) -> Result<(Vec<EventInfo>, bool), WebError> {
    let store = state.0.events.clone();
    let per = state.0.config.events_per_page;
    tokio::task::spawn_blocking(move || {
        let ids = store.ids();
        let start = page.saturating_mul(per);
        let list = ids
            .iter()
            .skip(start)
            .take(per)
            .filter_map(|id| store.info(id).ok())
            .collect();
        (list, ids.len() > start.saturating_add(per))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))
}

pub(super) async fn events_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, WebError> {
    let page = q.page.unwrap_or(0);
    let (list, more) = list_events(&state, page).await?;
    Ok(Html(pages::events(&list, page, more)))
}

pub(super) async fn event_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, WebError> {
    Ok(Html(pages::event(&state.0.events.info(&id)?)))
}

/// Opens `file` of event `id` off the runtime (see [`EventStore::open`]).
async fn open_event_file(
    state: &AppState,
    id: &str,
    file: EventFile,
) -> Result<(std::fs::File, u64), WebError> {
    let (store, id) = (state.0.events.clone(), id.to_owned());
    Ok(tokio::task::spawn_blocking(move || store.open(&id, file))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??)
}

async fn send_file(
    (file, len): (std::fs::File, u64),
    content_type: &'static str,
    download: Option<String>,
    conn: Option<Arc<ConnWatch>>,
) -> Result<Response, WebError> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::from_std(file);
    let watch = stream::ConnProgress::new(conn);
    let body = futures_util::stream::unfold(Some((file.take(len), watch)), |st| async move {
        let (mut f, watch) = st?;
        let mut buf = vec![0u8; FILE_CHUNK];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                watch.progress();
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                    Some((f, watch)),
                ))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CACHE_CONTROL, "private, max-age=60");
    if let Some(name) = download {
        resp = resp.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        );
    }
    resp.body(Body::from_stream(body))
        .map_err(|e| WebError::Internal(e.to_string()))
}

pub(super) async fn event_clip(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, WebError> {
    let file = open_event_file(&state, &id, EventFile::Clip).await?;
    let conn = req.extensions().get::<Arc<ConnWatch>>().cloned();
    send_file(file, "video/x-msvideo", Some(format!("{id}.avi")), conn).await
}

pub(super) async fn event_poster(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, WebError> {
    let file = open_event_file(&state, &id, EventFile::Poster).await?;
    let conn = req.extensions().get::<Arc<ConnWatch>>().cloned();
    send_file(file, "image/jpeg", None, conn).await
}

pub(super) async fn event_play(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, WebError> {
    let (file, _) = open_event_file(&state, &id, EventFile::Clip).await?;
    let avi = tokio::task::spawn_blocking(move || AviFrames::new(std::io::BufReader::new(file)))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .map_err(|e| WebError::BadRequest(format!("the clip cannot be played: {e}")))?;
    let conn = req.extensions().get::<Arc<ConnWatch>>().cloned();
    let Some(slot) = ViewerSlot::acquire(&state.0.hub, state.0.config.max_streams, conn) else {
        return Ok(busy());
    };
    let replay = Replay {
        avi: Some(avi),
        slot,
        shutdown: state.shutdown_token(),
        next_at: Instant::now(),
        buf: Vec::new(),
    };
    let body = futures_util::stream::unfold(replay, Replay::next_part);
    Ok(mjpeg_response(Body::from_stream(body)))
}

/// A clip being replayed to one viewer at its own frame rate.
struct Replay<R> {
    avi: Option<AviFrames<R>>,
    slot: ViewerSlot,
    shutdown: CancellationToken,
    next_at: Instant,
    buf: Vec<u8>,
}

impl<R: std::io::Read + std::io::Seek + Send + 'static> Replay<R> {
    /// The next frame as a multipart part, when its time comes; `None` at the clip's end, on
    /// a damaged chunk, or on shutdown.
    async fn next_part(
        mut self,
    ) -> Option<(Result<bytes::Bytes, std::convert::Infallible>, Replay<R>)> {
        let mut avi = self.avi.take()?;
        tokio::select! {
            () = self.shutdown.cancelled() => return None,
            () = tokio::time::sleep_until(self.next_at.into()) => {}
        }
        let mut buf = std::mem::take(&mut self.buf);
        let (avi, buf, more) = tokio::task::spawn_blocking(move || {
            let more = avi.next_frame(&mut buf).unwrap_or(false);
            (avi, buf, more)
        })
        .await
        .ok()?;
        if !more {
            return None;
        }
        let us = if avi.us_per_frame == 0 {
            66_666
        } else {
            avi.us_per_frame.clamp(8_333, 1_000_000)
        };
        self.next_at += Duration::from_micros(u64::from(us));
        let mut part = format!(
            "\r\n--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            buf.len()
        )
        .into_bytes();
        part.extend_from_slice(&buf);
        self.slot.progress(part.len());
        self.buf = buf;
        self.avi = Some(avi);
        Some((Ok(bytes::Bytes::from(part)), self))
    }
}

pub(super) async fn event_delete_form(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    delete_event(&state, &id).await?;
    Ok(Redirect::to("/events").into_response())
}

pub(super) async fn delete_event(state: &AppState, id: &str) -> Result<(), WebError> {
    let store = state.0.events.clone();
    let id2 = id.to_owned();
    tokio::task::spawn_blocking(move || store.delete(&id2))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    tracing::info!(event = id, "event deleted");
    Ok(())
}
