//! The live view: the dashboard page, the MJPEG stream (bounded by `max_streams`) and the
//! latest frame as a snapshot (the camera-offline picture when there is none).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::WebError;
use crate::fanout::BOUNDARY;
use crate::pages;
use crate::state::AppState;
use crate::stream::{self, ConnWatch, ViewerSlot};

/// Events shown on the dashboard.
pub const DASHBOARD_EVENTS: usize = 6;

pub(super) async fn dashboard(State(state): State<AppState>) -> Result<Html<String>, WebError> {
    let store = state.0.events.clone();
    let (dir, min_free) = (
        state.0.config.events_dir.clone(),
        state.0.config.events_min_free_bytes(),
    );
    let runtime_dir = state.0.runtime_dir.clone();
    let (latest, disk, health) = tokio::task::spawn_blocking(move || {
        let latest = store
            .ids()
            .iter()
            .take(DASHBOARD_EVENTS)
            .filter_map(|id| store.info(id).ok())
            .collect::<Vec<_>>();
        let health = crate::health::Health::read(&runtime_dir);
        (latest, crate::events::disk_state(&dir, min_free), health)
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(Html(pages::dashboard(&latest, &disk, &health)))
}

#[derive(Debug, Deserialize)]
pub(super) struct StreamQuery {
    fps: Option<f64>,
}

pub(super) fn mjpeg_response(body: Body) -> Response {
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
        )
        .header(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
        .header(header::PRAGMA, "no-cache")
        .header("X-Accel-Buffering", "no")
        .body(body)
        .expect("static headers are valid")
}

pub(super) fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        "too many live streams; try again shortly\n",
    )
        .into_response()
}

pub(super) async fn live_stream(
    State(state): State<AppState>,
    Query(q): Query<StreamQuery>,
    req: Request,
) -> Response {
    if q.fps.is_some_and(|f| !f.is_finite() || f <= 0.0) {
        return WebError::BadRequest("fps must be a positive number".into()).into_response();
    }
    let conn = req.extensions().get::<Arc<ConnWatch>>().cloned();
    let Some(slot) = ViewerSlot::acquire(&state.0.hub, state.0.config.max_streams, conn) else {
        return busy();
    };
    mjpeg_response(Body::from_stream(stream::live(
        slot,
        state.shutdown_token(),
        q.fps,
    )))
}

pub(super) async fn snapshot(State(state): State<AppState>) -> Response {
    match state.0.hub.latest() {
        Some(f) => {
            let status = if f.live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let ts = format!(
                "{}.{:06}",
                f.wall_ns / 1_000_000_000,
                f.wall_ns % 1_000_000_000 / 1000
            );
            (
                status,
                [
                    (header::CONTENT_TYPE, "image/jpeg".to_owned()),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                    (
                        header::HeaderName::from_static("x-mecam-camera"),
                        if f.live { "live" } else { "offline" }.to_owned(),
                    ),
                    (
                        header::HeaderName::from_static("x-mecam-seq"),
                        f.seq.to_string(),
                    ),
                    (header::HeaderName::from_static("x-timestamp"), ts),
                ],
                f.jpeg,
            )
                .into_response()
        }
        None => {
            let mut jpeg = Vec::new();
            crate::offline::render(ipc::service::wall_ns() / 1_000_000_000, &mut jpeg);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    (header::CONTENT_TYPE, "image/jpeg"),
                    (header::CACHE_CONTROL, "no-store"),
                    (header::HeaderName::from_static("x-mecam-camera"), "offline"),
                ],
                jpeg,
            )
                .into_response()
        }
    }
}
