//! The router: which path goes to which handler, behind which rule, and the error every
//! handler answers with. Handlers live by area: [`auth`] (login, setup, logout, the login
//! rule), [`origin`] (the same-origin rule for state changes), [`live`] (the dashboard, the
//! live stream, the snapshot), [`events`] (event pages, files and replay), [`api`] (JSON for
//! scripts), [`metrics`] (Prometheus) and [`settings`] (the settings page, the live preview).

pub mod api;
pub mod auth;
pub mod events;
pub mod favicon;
pub mod live;
pub mod metrics;
pub mod origin;
pub mod settings;

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use tokio_util::sync::CancellationToken;

use crate::events::EventError;
use crate::state::AppState;

pub use auth::PASSWORD_BROKEN;
pub use events::FILE_CHUNK;
pub use live::DASHBOARD_EVENTS;
pub use origin::{CrossSite, same_origin};

/// The peer address of a connection, put in request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Errors of handlers: the client gets a clean status and message, internals go to the log.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// An event request failed.
    #[error(transparent)]
    Event(#[from] EventError),
    /// Something is wrong in the request.
    #[error("{0}")]
    BadRequest(String),
    /// An internal failure (logged).
    #[error("internal error; see the service log")]
    Internal(String),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::Event(EventError::BadId) | WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Event(EventError::NotFound) => StatusCode::NOT_FOUND,
            WebError::Event(EventError::Recording) => StatusCode::CONFLICT,
            WebError::Event(EventError::Io(e)) => {
                if let Some(held_back) = SERVER_ERROR_LOG.check() {
                    tracing::error!(error = %e, held_back, "events directory error");
                }
                StatusCode::INTERNAL_SERVER_ERROR
            }
            WebError::Internal(e) => {
                if let Some(held_back) = SERVER_ERROR_LOG.check() {
                    tracing::error!(error = %e, held_back, "internal error");
                }
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// The router with every route and rule. The routes that need a login are exactly
/// [`PROTECTED_ROUTES`], so the test that walks that table walks every one.
pub fn app(state: AppState) -> Router {
    let protected = PROTECTED_ROUTES
        .iter()
        .fold(Router::new(), |r, &(method, path)| {
            r.route(path, protected_handler(method, path))
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_login,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/favicon.ico", get(favicon::favicon))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/setup", get(auth::setup_page).post(auth::setup))
        .merge(protected)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            origin::check_origin,
        ))
        .layer(DefaultBodyLimit::max(state.0.config.max_body_bytes))
        .layer(middleware::from_fn(api::json_errors))
        .with_state(state)
}

/// Every route that needs a login (method, path): the router is built from this table, and
/// the access test walks it without a login.
pub const PROTECTED_ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/stream.mjpg"),
    ("GET", "/video_feed"),
    ("GET", "/stream"),
    ("GET", "/snapshot.jpg"),
    ("GET", "/events"),
    ("GET", "/events/{id}"),
    ("GET", "/events/{id}/clip.avi"),
    ("GET", "/events/{id}/poster.jpg"),
    ("GET", "/events/{id}/play.mjpg"),
    ("POST", "/events/{id}/delete"),
    ("GET", "/api/status"),
    ("GET", "/api/events"),
    ("GET", "/api/events/{id}"),
    ("DELETE", "/api/events/{id}"),
    ("GET", "/metrics"),
    ("POST", "/logout"),
    ("GET", "/settings"),
    ("POST", "/settings"),
    ("POST", "/settings/reset"),
    ("GET", "/api/preview"),
];

/// The handler of one entry of [`PROTECTED_ROUTES`].
///
/// # Panics
/// An entry without a handler (any test that builds the router finds it).
fn protected_handler(method: &str, path: &str) -> MethodRouter<AppState> {
    match (method, path) {
        ("GET", "/") => get(live::dashboard),
        ("GET", "/stream.mjpg" | "/video_feed" | "/stream") => get(live::live_stream),
        ("GET", "/snapshot.jpg") => get(live::snapshot),
        ("GET", "/events") => get(events::events_page),
        ("GET", "/events/{id}") => get(events::event_page),
        ("GET", "/events/{id}/clip.avi") => get(events::event_clip),
        ("GET", "/events/{id}/poster.jpg") => get(events::event_poster),
        ("GET", "/events/{id}/play.mjpg") => get(events::event_play),
        ("POST", "/events/{id}/delete") => post(events::event_delete_form),
        ("GET", "/api/status") => get(api::api_status),
        ("GET", "/api/events") => get(api::api_events),
        ("GET", "/api/events/{id}") => get(api::api_event),
        ("DELETE", "/api/events/{id}") => delete(api::api_event_delete),
        ("GET", "/metrics") => get(metrics::metrics),
        ("POST", "/logout") => post(auth::logout),
        ("GET", "/settings") => get(settings::settings_page),
        ("POST", "/settings") => post(settings::settings_save),
        ("POST", "/settings/reset") => post(settings::settings_reset),
        ("GET", "/api/preview") => get(settings::api_preview),
        _ => panic!("PROTECTED_ROUTES lists {method} {path} without a handler"),
    }
}

/// The client's address, as the server put it in the request (loopback in-process).
pub(crate) fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.0.ip())
}

/// Requests answered 500 (a broken events disk answers every request that touches it so).
static SERVER_ERROR_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// Logs, once the interval has passed, how many outsider-triggered lines of the handlers were
/// held back since the last one; [`crate::run`] calls it periodically.
pub fn flush_outsider_logs() {
    auth::flush_logs();
    origin::flush_logs();
    if let Some(n) = SERVER_ERROR_LOG.flush() {
        tracing::error!(
            held_back = n,
            "{n} more requests answered with an internal error"
        );
    }
}

/// Calls [`flush_outsider_logs`] every [`OUTSIDER_LOG_INTERVAL`] until `shutdown` is cancelled.
pub async fn flush_outsider_logs_until(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(OUTSIDER_LOG_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => flush_outsider_logs(),
        }
    }
    flush_outsider_logs();
}
