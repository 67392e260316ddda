//! The JSON API for scripts and the dashboard's poll: the service's status, the event list,
//! one event, and deleting one. Every error under `/api/` is JSON, `{"error": "..."}`, with
//! its status ([`json_errors`]).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::WebError;
use super::events::{PageQuery, delete_event, list_events};
use crate::events::EventInfo;
use crate::state::AppState;

pub(super) async fn api_event_delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, WebError> {
    delete_event(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn api_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EventInfo>, WebError> {
    Ok(Json(state.0.events.info(&id)?))
}

pub(super) async fn api_events(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<serde_json::Value>, WebError> {
    let page = q.page.unwrap_or(0);
    let (list, more) = list_events(&state, page).await?;
    Ok(Json(serde_json::json!({
        "page": page, "per_page": state.0.config.events_per_page, "more": more, "events": list,
    })))
}

pub(super) async fn api_status(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, WebError> {
    let s = &state.0;
    let cam = s.hub.status();
    let m = &s.hub.metrics;
    let store = s.events.clone();
    let (dir, min_free) = (
        s.config.events_dir.clone(),
        s.config.events_min_free_bytes(),
    );
    let runtime_dir = s.runtime_dir.clone();
    let (recording, disk, health) = tokio::task::spawn_blocking(move || {
        (
            store.recording_now(),
            crate::events::disk_state(&dir, min_free),
            crate::health::Health::read(&runtime_dir),
        )
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "camera": {
            "state": cam.state, "reason": cam.reason, "source": cam.source,
            "width": cam.width, "height": cam.height,
        },
        "fps": cam.fps,
        "frame_age_ms": cam.last_frame.map(|t| t.elapsed().as_millis() as u64),
        "viewers": m.viewers.load(Ordering::Relaxed),
        "max_streams": s.config.max_streams,
        "drops": {
            "source": m.frames_skipped_source.load(Ordering::Relaxed),
            "viewers": m.frames_skipped_viewers.load(Ordering::Relaxed),
            "stalled_viewers_dropped": m.viewers_dropped_stalled.load(Ordering::Relaxed),
        },
        "motion": { "active": recording.is_some(), "event": recording },
        "disk": disk,
        "services": health.services,
        "disk_used_pct": health.disk_used_pct,
        "banner": health.banner,
    })))
}

/// The prefix of the JSON API's paths.
pub const API_PREFIX: &str = "/api/";
/// The longest error text kept from a response turned into JSON; error texts are one line.
pub const MAX_ERROR_TEXT: usize = 1024;

/// Every error answered under [`API_PREFIX`] (a handler's, the login rule's `401`, a bad query,
/// a wrong method, an unknown path) becomes `{"error": "<its text>"}` with the same status
/// and headers (`WWW-Authenticate`, `Retry-After` stay), so scripts parse one shape.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with(API_PREFIX);
    let res = next.run(req).await;
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || !(res.status().is_client_error() || res.status().is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(b) if !b.trim_ascii().is_empty() => String::from_utf8_lossy(b.trim_ascii()).into_owned(),
        _ => parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase(),
    };
    let body = serde_json::json!({ "error": text }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body)).into_response()
}
