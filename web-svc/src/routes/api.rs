//! The JSON API for scripts and the dashboard's poll: the service's status, the event list,
//! one event, and deleting one.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

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
