//! Reviewing an event: its clip's frames by number for the player (straight from the AVI's
//! index, nothing decoded), what the player needs to know of the clip (`frames.json`), and
//! "Save as MP4" (start, progress, download).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

use super::WebError;
use super::events::{open_event_file, send_file};
use crate::events::{EventFile, Shown};
use crate::mp4::{Mp4Status, StartError};
use crate::state::AppState;
use crate::stream::ConnWatch;
use ::events::avi::{ClipIndex, IndexError};

/// How long a browser may keep a frame (a finished clip never changes; its folder can only
/// be deleted).
const FRAME_CACHE: &str = "private, max-age=86400, immutable";

/// `GET /events/<id>/frames.json`: what the player needs (see the README for each field).
#[derive(Debug, Serialize)]
pub struct ClipFrames {
    /// Frames in the clip; `/events/<id>/frames/<n>` serves `n` from 0 to `frames - 1`.
    pub frames: u32,
    /// Milliseconds between frames (the clip's measured rate).
    pub ms_per_frame: f64,
    /// Frame size.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Wall-clock time of the first frame, ms since the epoch (`null` if unknown).
    pub first_frame_unix_ms: Option<u64>,
    /// The moving objects' boxes, by time in the clip: `t_ms` after the first frame,
    /// `boxes` `[x, y, w, h]` as fractions of the frame.
    pub track: Vec<TrackAt>,
}

/// Boxes at a time of the clip.
#[derive(Debug, Serialize)]
pub struct TrackAt {
    /// Milliseconds after the clip's first frame.
    pub t_ms: u64,
    /// `[x, y, w, h]`, fractions of the frame, largest first.
    pub boxes: Vec<[f32; 4]>,
}

fn index_error(e: IndexError) -> WebError {
    match e {
        IndexError::NoSuchFrame { .. } => WebError::NotFound(e.to_string()),
        IndexError::Malformed(_) => WebError::Unprocessable(format!(
            "{e}; the clip can still be downloaded as AVI, and replayed at /events/<id>/play.mjpg up to where it is whole"
        )),
        IndexError::Io(e) => WebError::Event(e.into()),
    }
}

/// Opens the clip of `id` and its index (off the runtime).
async fn clip_index(state: &AppState, id: &str) -> Result<(std::fs::File, ClipIndex), WebError> {
    let (mut file, len) = open_event_file(state, id, EventFile::Clip).await?;
    tokio::task::spawn_blocking(move || {
        let idx = ClipIndex::open(&mut file, len).map_err(index_error)?;
        Ok((file, idx))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?
}

pub(super) async fn frames_json(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ClipFrames>, WebError> {
    let (_, idx) = clip_index(&state, &id).await?;
    let info = state.0.events.info(&id)?;
    let meta = info.meta.as_ref();
    let lead = meta.and_then(|m| m.clip_lead_ms).unwrap_or(0);
    let track = meta
        .map(|m| {
            m.track
                .iter()
                .map(|t| TrackAt {
                    t_ms: u64::from(t.t_ms) + u64::from(lead),
                    boxes: t.boxes.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(ClipFrames {
        frames: idx.frames,
        ms_per_frame: f64::from(idx.us_per_frame) / 1000.0,
        width: idx.width,
        height: idx.height,
        first_frame_unix_ms: meta.map(|m| m.start_unix_ms.saturating_sub(u64::from(lead))),
        track,
    }))
}

pub(super) async fn frame(
    State(state): State<AppState>,
    Path((id, n)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let n: u64 = n.parse().map_err(|_| {
        WebError::BadRequest(format!(
            "{n:?} is not a frame number: frames are numbered 0, 1, 2... (frames.json says how many)"
        ))
    })?;
    let (mut file, idx) = clip_index(&state, &id).await?;
    let jpeg = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        idx.frame(&mut file, n, &mut buf).map(|()| buf)
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?
    .map_err(index_error)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, FRAME_CACHE),
        ],
        Body::from(jpeg),
    )
        .into_response())
}

/// Whether the client asked for JSON (the player's `fetch`) rather than a page (a form).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

pub(super) async fn mp4_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Mp4Status>, WebError> {
    let folder = state.0.events.folder(&id)?;
    Ok(Json(state.0.mp4.status(&id, &folder)))
}

pub(super) async fn mp4_start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let info = state.0.events.info(&id)?;
    if matches!(info.state, Shown::Recording | Shown::Incomplete) || !info.has_clip {
        return Err(WebError::Conflict(
            "this event has no finished clip yet (it is being recorded, or its clip was cut off): an MP4 can be made once clip.avi is complete".into(),
        ));
    }
    let folder = state.0.events.folder(&id)?;
    let (_, idx) = clip_index(&state, &id).await?;
    let started = state
        .0
        .mp4
        .start(&id, &folder, u64::from(idx.frames), &state.shutdown_token());
    if !wants_json(&headers) {
        // A form without JavaScript: back to the event, which shows the job's state (or why
        // it did not start).
        return Ok(Redirect::to(&format!("/events/{id}#mp4")).into_response());
    }
    match started {
        Ok(st) => Ok((StatusCode::ACCEPTED, Json(st)).into_response()),
        Err(e @ StartError::Busy { .. }) => Err(WebError::Conflict(e.to_string())),
        Err(e @ StartError::NoFfmpeg) => Err(WebError::Unavailable(e.to_string())),
    }
}

pub(super) async fn mp4_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, WebError> {
    let file = open_event_file(&state, &id, EventFile::Mp4).await?;
    let conn = req.extensions().get::<Arc<ConnWatch>>().cloned();
    send_file(file, "video/mp4", Some(format!("{id}.mp4")), conn).await
}
