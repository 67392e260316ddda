//! The event pages and files: the list and one event as HTML, the clip and poster as
//! downloads, the clip replayed as MJPEG at its own rate, and deleting from a form.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::WebError;
use super::live::{busy, mjpeg_response};
use crate::events::{AviFrames, EventFile, EventInfo};
use crate::fanout::BOUNDARY;
use crate::review;
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

/// The query of the event list: a page, and a day (`YYYY-MM-DD`, the viewer's).
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    page: Option<usize>,
    day: Option<String>,
}

/// How the viewer reads times: the browser's offset from its cookie, else `[web] timezone`.
fn viewer(state: &AppState, headers: &HeaderMap) -> review::View {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(review::day::cookie_offset);
    review::View {
        offset_min: cookie.unwrap_or_else(|| state.0.config.utc_offset_min()),
        now_ms: ::events::now_unix_ms(),
    }
}

pub(super) async fn events_page(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Html<String>, WebError> {
    let page = q.page.unwrap_or(0);
    let view = viewer(&state, &headers);
    let day = q.day.filter(|d| !d.is_empty());
    if let Some(d) = &day {
        if !review::day::valid_day(d) {
            return Err(WebError::BadRequest(format!(
                "day {d:?} is not a date like 2026-11-24"
            )));
        }
    }
    let store = state.0.events.clone();
    let per = state.0.config.events_per_page;
    let (list, more, days) = tokio::task::spawn_blocking(move || {
        // The day of each event comes from its id (its UTC start): no file is read for it.
        let day_of = |id: &str| ::events::parse_id(id).map(|ms| view.local(ms).day());
        let ids = store.ids();
        let mut days: Vec<String> = Vec::with_capacity(review::MAX_FILTER_DAYS);
        for d in ids.iter().filter_map(|id| day_of(id)) {
            if days.last() != Some(&d) && !days.contains(&d) {
                if days.len() == review::MAX_FILTER_DAYS {
                    break;
                }
                days.push(d);
            }
        }
        let matching: Vec<&String> = ids
            .iter()
            .filter(|id| day.is_none() || day_of(id) == day)
            .collect();
        let start = page.saturating_mul(per);
        let list: Vec<EventInfo> = matching
            .iter()
            .skip(start)
            .take(per)
            .filter_map(|id| store.info(id).ok())
            .collect();
        (
            list,
            matching.len() > start.saturating_add(per),
            (days, day),
        )
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?;
    let (days, day) = days;
    Ok(Html(review::events(
        &list,
        &review::ListView {
            page,
            more,
            day: day.as_deref(),
            days: &days,
            view,
        },
    )))
}

pub(super) async fn event_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Html<String>, WebError> {
    let store = state.0.events.clone();
    let id2 = id.clone();
    let (info, nav) = tokio::task::spawn_blocking(move || {
        let info = store.info(&id2)?;
        let ids = store.ids();
        let at = ids.iter().position(|i| *i == id2);
        let nav = review::Neighbours {
            newer: at.and_then(|k| k.checked_sub(1)).map(|k| ids[k].clone()),
            older: at.and_then(|k| ids.get(k + 1)).cloned(),
        };
        Ok::<_, WebError>((info, nav))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))??;
    let folder = state.0.events.folder(&id)?;
    let mp4 = state.0.mp4.status(&id, &folder);
    Ok(Html(review::event(
        &info,
        &nav,
        &mp4,
        &viewer(&state, &headers),
    )))
}

/// Opens `file` of event `id` off the runtime (see [`EventStore::open`]).
pub(super) async fn open_event_file(
    state: &AppState,
    id: &str,
    file: EventFile,
) -> Result<(std::fs::File, u64), WebError> {
    let (store, id) = (state.0.events.clone(), id.to_owned());
    Ok(tokio::task::spawn_blocking(move || store.open(&id, file))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??)
}

pub(super) async fn send_file(
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
    // An MP4 being made of it is stopped first, so that nothing writes into the folder.
    state.0.mp4.cancel(id).await;
    let store = state.0.events.clone();
    let id2 = id.to_owned();
    tokio::task::spawn_blocking(move || store.delete(&id2))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    tracing::info!(event = id, "event deleted");
    Ok(())
}
