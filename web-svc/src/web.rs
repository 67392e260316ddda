//! The router: shared state, the access rules (login, Basic, the login limiter, same-origin
//! state changes), and every handler.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, delete, get, post};
use base64::Engine as _;
use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use serde::Deserialize;
use tokio::sync::watch;

use crate::auth::{
    self, BasicCache, Checker, ClientKey, PasswordStore, RateLimiter, SESSION_COOKIE, Sessions,
};
use crate::config::WebConfig;
use crate::events::{AviFrames, EventError, EventFile, EventStore};
use crate::fanout::{BOUNDARY, Hub};
use crate::pages;
use crate::stream::{self, ConnWatch, ViewerSlot};

/// Events shown on the dashboard.
pub const DASHBOARD_EVENTS: usize = 6;
/// Chunk size when sending files.
pub const FILE_CHUNK: usize = 64 * 1024;

/// The peer address of a connection, put in request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Everything handlers share.
#[derive(Debug)]
pub struct Inner {
    /// The configuration.
    pub config: WebConfig,
    /// The live fan-out.
    pub hub: Arc<Hub>,
    /// The announce socket of capture-svc.
    pub socket_path: PathBuf,
    passwords: PasswordStore,
    sessions: Sessions,
    limiter: RateLimiter,
    basic: BasicCache,
    checker: Checker,
    /// State changes refused by the same-origin rule.
    cross_site_refused: std::sync::atomic::AtomicU64,
    events: EventStore,
    shutdown_tx: watch::Sender<bool>,
    tls: bool,
    /// Whether the current password-file error was logged (logged once, not per request).
    password_error_logged: std::sync::atomic::AtomicBool,
}

/// Cloneable handle on the shared state.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Inner>);

impl AppState {
    /// State for `config`, reading frames from the announce socket at `socket_path`.
    pub fn new(config: WebConfig, socket_path: PathBuf) -> AppState {
        let tls = config.tls_cert.is_some();
        AppState(Arc::new(Inner {
            hub: Arc::new(Hub::default()),
            socket_path,
            passwords: PasswordStore::new(&config.state_dir),
            sessions: Sessions::new(
                config.max_sessions,
                Duration::from_secs(config.session_ttl_s),
            ),
            limiter: RateLimiter::new(config.login_policy()),
            basic: BasicCache::default(),
            checker: Checker::new(config.request_timeout() / 4),
            cross_site_refused: std::sync::atomic::AtomicU64::new(0),
            events: EventStore::new(&config.events_dir, config.max_events_listed),
            shutdown_tx: watch::channel(false).0,
            tls,
            password_error_logged: std::sync::atomic::AtomicBool::new(false),
            config,
        }))
    }

    /// Ends every stream; called by `run` on shutdown.
    pub fn begin_shutdown(&self) {
        self.0.shutdown_tx.send_replace(true);
    }

    /// The password file's state; an unusable file is logged once (with what to do) and
    /// is never taken for "no password".
    pub fn password(&self) -> Password {
        let logged = &self.0.password_error_logged;
        match self.0.passwords.load() {
            Ok(None) => {
                logged.store(false, Ordering::Relaxed);
                Password::Unset
            }
            Ok(Some(hash)) => {
                logged.store(false, Ordering::Relaxed);
                Password::Set(hash)
            }
            Err(e) => {
                if !logged.swap(true, Ordering::Relaxed) {
                    tracing::error!("{e}; until then nobody can log in");
                }
                Password::Broken
            }
        }
    }

    /// A receiver that turns true on shutdown.
    pub fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.0.shutdown_tx.subscribe()
    }
}

/// The admin password, as the password file says.
#[derive(Debug, PartialEq, Eq)]
pub enum Password {
    /// No password file: first-visit setup is open.
    Unset,
    /// The hash.
    Set(String),
    /// The file exists but cannot be used (logged); nobody can log in, setup stays shut.
    Broken,
}

impl Password {
    /// The hash, if there is a usable one: sessions and the Basic cache are tied to it, so
    /// any new password ends them, whatever the file's time says.
    pub fn hash(&self) -> Option<&str> {
        match self {
            Password::Set(h) => Some(h),
            Password::Unset | Password::Broken => None,
        }
    }
}

/// What clients are told while the password file cannot be used.
pub const PASSWORD_BROKEN: &str = "web-svc cannot use its password file; see the service log (journalctl -u mecam-web) and set the password again with `sudo -u mecam web-svc set-password`";

fn password_broken(page: bool) -> Response {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    if page {
        (status, Html(pages::login(Some(PASSWORD_BROKEN)))).into_response()
    } else {
        (status, format!("{PASSWORD_BROKEN}\n")).into_response()
    }
}

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
        .layer(middleware::from_fn_with_state(state.clone(), require_login));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(login_page).post(login))
        .route("/setup", get(setup_page).post(setup))
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), check_origin))
        .layer(DefaultBodyLimit::max(state.0.config.max_body_bytes))
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
];

/// The handler of one entry of [`PROTECTED_ROUTES`].
///
/// # Panics
/// An entry without a handler (any test that builds the router finds it).
fn protected_handler(method: &str, path: &str) -> MethodRouter<AppState> {
    match (method, path) {
        ("GET", "/") => get(dashboard),
        ("GET", "/stream.mjpg" | "/video_feed" | "/stream") => get(live_stream),
        ("GET", "/snapshot.jpg") => get(snapshot),
        ("GET", "/events") => get(events_page),
        ("GET", "/events/{id}") => get(event_page),
        ("GET", "/events/{id}/clip.avi") => get(event_clip),
        ("GET", "/events/{id}/poster.jpg") => get(event_poster),
        ("GET", "/events/{id}/play.mjpg") => get(event_play),
        ("POST", "/events/{id}/delete") => post(event_delete_form),
        ("GET", "/api/status") => get(api_status),
        ("GET", "/api/events") => get(api_events),
        ("GET", "/api/events/{id}") => get(api_event),
        ("DELETE", "/api/events/{id}") => delete(api_event_delete),
        ("GET", "/metrics") => get(metrics),
        ("POST", "/logout") => post(logout),
        _ => panic!("PROTECTED_ROUTES lists {method} {path} without a handler"),
    }
}

fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.0.ip())
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == SESSION_COOKIE).then(|| v.to_owned())
        })
}

/// Outcome of checking a password.
enum Check {
    Ok,
    Wrong,
    Limited(Duration),
}

/// Failed logins (one line per interval, with a count of the others).
static FAILED_LOGIN_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
/// Clients refused by the login limiter.
static LIMITED_LOGIN_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
/// State changes refused by the same-origin rule.
static CROSS_SITE_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
/// Requests answered 500 (a broken events disk answers every request that touches it so).
static SERVER_ERROR_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// Logs, once the interval has passed, how many outsider-triggered lines of this module were
/// held back since the last one; [`crate::run`] calls it periodically.
pub fn flush_outsider_logs() {
    if let Some(n) = FAILED_LOGIN_LOG.flush() {
        tracing::warn!(held_back = n, "{n} more failed logins");
    }
    if let Some(n) = LIMITED_LOGIN_LOG.flush() {
        tracing::warn!(held_back = n, "{n} more logins refused by the rate limiter");
    }
    if let Some(n) = CROSS_SITE_LOG.flush() {
        tracing::warn!(held_back = n, "{n} more cross-site requests refused");
    }
    if let Some(n) = SERVER_ERROR_LOG.flush() {
        tracing::error!(
            held_back = n,
            "{n} more requests answered with an internal error"
        );
    }
}

/// Calls [`flush_outsider_logs`] every [`OUTSIDER_LOG_INTERVAL`] until `shutdown` turns true.
pub async fn flush_outsider_logs_until(mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(OUTSIDER_LOG_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            _ = tick.tick() => flush_outsider_logs(),
        }
    }
    flush_outsider_logs();
}

/// How a password came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The login form (makes a session; never remembered).
    Form,
    /// HTTP Basic (remembered in the [`BasicCache`], so polling costs no hash per request).
    Basic,
}

/// Checks a password for a client at `ip`. The limiter answers first, before any cache or
/// hash looks at the password: a limited client gets the same answer whatever it sent.
async fn check_password(
    state: &AppState,
    hash: &str,
    ip: IpAddr,
    via: Via,
    (user, pw): (&str, &str),
) -> Check {
    let s = &state.0;
    let limited = |retry: Duration| {
        s.hub.metrics.login_limited.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = LIMITED_LOGIN_LOG.check() {
            let client = ClientKey::of(ip);
            tracing::warn!(%client, held_back, "login refused by the rate limiter");
        }
        Check::Limited(retry)
    };
    let attempt = match s.limiter.admit(ip) {
        Ok(a) => a,
        Err(retry) => return limited(retry),
    };
    let ok = if user != auth::ADMIN_USER {
        attempt.failed();
        false
    } else if via == Via::Basic && s.basic.hit(pw, hash) {
        attempt.succeeded();
        true
    } else {
        match s.checker.check(&s.limiter, attempt, hash, pw).await {
            Some(ok) => ok,
            None => return limited(s.limiter.policy().slow_spacing()),
        }
    };
    if ok {
        if via == Via::Basic {
            s.basic.remember(pw, hash);
        }
        Check::Ok
    } else {
        s.hub.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = FAILED_LOGIN_LOG.check() {
            let client = ClientKey::of(ip);
            // The name is the client's: quoted and cut, so it cannot forge log lines.
            let user: String = user.chars().take(64).collect();
            tracing::warn!(%client, user = ?user, held_back, "failed login");
        }
        Check::Wrong
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    if b64.len() > 2048 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"mecam\", charset=\"UTF-8\"",
        )],
        "log in first: a session cookie from /login, or HTTP Basic as admin\n",
    )
        .into_response()
}

fn is_page(method: &Method, path: &str) -> bool {
    *method == Method::GET
        && (path == "/"
            || path == "/events"
            || (path.starts_with("/events/") && path[8..].bytes().all(|b| b != b'/')))
}

async fn require_login(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let password = state.password();
    state.0.sessions.password_is(password.hash());
    if session_token(req.headers()).is_some_and(|t| state.0.sessions.check(&t)) {
        return next.run(req).await;
    }
    if let Some((user, pw)) = basic_credentials(req.headers()) {
        let hash = match &password {
            Password::Set(hash) => hash,
            Password::Unset => return unauthorized(),
            Password::Broken => return password_broken(false),
        };
        return match check_password(&state, hash, client_ip(&req), Via::Basic, (&user, &pw)).await {
            Check::Ok => next.run(req).await,
            Check::Limited(retry) => too_many(retry),
            Check::Wrong => unauthorized(),
        };
    }
    if is_page(req.method(), req.uri().path()) {
        let to = match password {
            Password::Unset => "/setup",
            Password::Set(..) | Password::Broken => "/login",
        };
        return Redirect::to(to).into_response();
    }
    unauthorized()
}

/// What a limited client gets, whatever password it sent (only `Retry-After` varies, with
/// the time).
fn too_many(retry: Duration) -> Response {
    let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        Html(pages::login(Some(
            "Too many attempts from your address; wait as long as Retry-After says (it doubles with each wrong password) and try again.",
        ))),
    )
        .into_response()
}

/// Why a state change was refused by the same-origin rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossSite {
    /// Neither `Origin` nor `Referer`.
    NoOrigin,
    /// `Origin` (or, without one, `Referer`) names another site.
    Foreign,
    /// The request has no `Host` to compare with.
    NoHost,
}

/// `scheme://host[:port]` of `url`, lower-cased, without the scheme's default port.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(normal_origin(scheme, authority))
}

fn normal_origin(scheme: &str, authority: &str) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let authority = authority.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => "",
    };
    let authority = match authority.strip_suffix(default) {
        Some(a) if !default.is_empty() => a,
        _ => &authority,
    };
    format!("{scheme}://{authority}")
}

/// The same-origin rule for a state change: its `Origin`, or, when the browser sent none, its
/// `Referer`, must be this server as the request reached it: its own `Host`, and the scheme
/// it is served with.
///
/// # Errors
/// Why the request is not same-origin.
pub fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri, tls: bool) -> Result<(), CrossSite> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| !h.is_empty())
        .ok_or(CrossSite::NoHost)?;
    let expected = normal_origin(if tls { "https" } else { "http" }, host);
    let claimed = match (headers.get(header::ORIGIN), headers.get(header::REFERER)) {
        (Some(origin), _) => origin,
        (None, Some(referer)) => referer,
        (None, None) => return Err(CrossSite::NoOrigin),
    };
    let claimed = claimed.to_str().ok().and_then(origin_of);
    if claimed.as_deref() == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(CrossSite::Foreign)
    }
}

/// Refuses every state change (any method but GET and HEAD: forms, logout, delete, login and
/// setup included, whether authenticated by cookie or Basic, which browsers replay
/// cross-site) that is not same-origin; see [`same_origin`].
async fn check_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let Err(why) = same_origin(req.headers(), req.uri(), state.0.tls) else {
        return next.run(req).await;
    };
    state.0.cross_site_refused.fetch_add(1, Ordering::Relaxed);
    if let Some(held_back) = CROSS_SITE_LOG.check() {
        let client = ClientKey::of(client_ip(&req));
        tracing::warn!(method = %req.method(), path = req.uri().path(), %client, ?why, held_back, "cross-site request refused");
    }
    let scheme = if state.0.tls { "https" } else { "http" };
    let what = match why {
        CrossSite::NoOrigin => "it carries neither Origin nor Referer",
        CrossSite::Foreign => "its Origin (or Referer) names another site",
        CrossSite::NoHost => "it has no Host header",
    };
    (
        StatusCode::FORBIDDEN,
        format!(
            "refused: a state change (POST, DELETE) must come from this server's own pages, and {what}. \
             Browsers send Origin by themselves; API clients send it too, naming the address they use: \
             curl -H 'Origin: {scheme}://HOST:PORT' ...\n"
        ),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: Option<String>,
    password: String,
}

async fn login_page(State(state): State<AppState>) -> Response {
    match state.password() {
        Password::Unset => Redirect::to("/setup").into_response(),
        Password::Broken => password_broken(true),
        Password::Set(..) => Html(pages::login(None)).into_response(),
    }
}

fn session_cookie(state: &AppState, token: &str, max_age: u64) -> HeaderValue {
    let secure = if state.0.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie is ASCII")
}

fn logged_in(state: &AppState, hash: &str) -> Response {
    state.0.sessions.password_is(Some(hash));
    let token = state.0.sessions.create();
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(state, &token, state.0.config.session_ttl_s),
    );
    resp
}

async fn login(
    State(state): State<AppState>,
    addr: Option<axum::Extension<ClientAddr>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let ip = addr.map_or(IpAddr::from([127, 0, 0, 1]), |a| a.0.0.ip());
    let user = form.username.as_deref().unwrap_or(auth::ADMIN_USER);
    let hash = match state.password() {
        Password::Set(hash) => hash,
        Password::Unset => return Redirect::to("/setup").into_response(),
        Password::Broken => return password_broken(true),
    };
    match check_password(&state, &hash, ip, Via::Form, (user, &form.password)).await {
        Check::Ok => {
            tracing::info!(%ip, "logged in");
            logged_in(&state, &hash)
        }
        Check::Limited(retry) => too_many(retry),
        Check::Wrong => (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(Some("Wrong user name or password."))),
        )
            .into_response(),
    }
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(t) = session_token(&headers) {
        state.0.sessions.end(&t);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    resp
}

#[derive(Debug, Deserialize)]
struct SetupForm {
    password: String,
    confirm: String,
}

async fn setup_page(State(state): State<AppState>) -> Response {
    match state.password() {
        Password::Unset => Html(pages::setup(None)).into_response(),
        Password::Set(..) | Password::Broken => Redirect::to("/login").into_response(),
    }
}

async fn setup(State(state): State<AppState>, Form(form): Form<SetupForm>) -> Response {
    match state.password() {
        Password::Unset => {}
        Password::Broken => return password_broken(true),
        Password::Set(..) => {
            return (
                StatusCode::CONFLICT,
                Html(pages::login(Some(
                    "A password is already set. Log in, or change it with `web-svc set-password`.",
                ))),
            )
                .into_response();
        }
    }
    if form.password != form.confirm {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::setup(Some("The two passwords differ."))),
        )
            .into_response();
    }
    let store = state.0.passwords.clone();
    let result = tokio::task::spawn_blocking(move || store.set_if_absent(&form.password)).await;
    match result {
        Ok(Ok(())) => match state.password() {
            Password::Set(hash) => {
                tracing::info!("admin password set on first visit");
                logged_in(&state, &hash)
            }
            Password::Unset | Password::Broken => password_broken(true),
        },
        Ok(Err(auth::PasswordError::Broken(_))) => password_broken(true),
        Ok(Err(auth::PasswordError::AlreadySet)) => (
            StatusCode::CONFLICT,
            Html(pages::login(Some("A password is already set."))),
        )
            .into_response(),
        Ok(Err(auth::PasswordError::BadLength)) => (
            StatusCode::BAD_REQUEST,
            Html(pages::setup(Some(
                &auth::PasswordError::BadLength.to_string(),
            ))),
        )
            .into_response(),
        Ok(Err(e)) => WebError::Internal(e.to_string()).into_response(),
        Err(e) => WebError::Internal(e.to_string()).into_response(),
    }
}

async fn dashboard(State(state): State<AppState>) -> Result<Html<String>, WebError> {
    let store = state.0.events.clone();
    let (dir, min_free) = (
        state.0.config.events_dir.clone(),
        state.0.config.events_min_free_bytes(),
    );
    let (latest, disk) = tokio::task::spawn_blocking(move || {
        let latest = store
            .ids()
            .iter()
            .take(DASHBOARD_EVENTS)
            .filter_map(|id| store.info(id).ok())
            .collect::<Vec<_>>();
        (latest, crate::events::disk_state(&dir, min_free))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(Html(pages::dashboard(&latest, &disk)))
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    fps: Option<f64>,
}

fn mjpeg_response(body: Body) -> Response {
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

fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        "too many live streams; try again shortly\n",
    )
        .into_response()
}

async fn live_stream(
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
        state.shutdown_rx(),
        q.fps,
    )))
}

async fn snapshot(State(state): State<AppState>) -> Response {
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

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

async fn list_events(
    state: &AppState,
    page: usize,
) -> Result<(Vec<crate::events::EventInfo>, bool), WebError> {
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

async fn events_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, WebError> {
    let page = q.page.unwrap_or(0);
    let (list, more) = list_events(&state, page).await?;
    Ok(Html(pages::events(&list, page, more)))
}

async fn event_page(
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

async fn event_clip(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, WebError> {
    let file = open_event_file(&state, &id, EventFile::Clip).await?;
    let conn = req.extensions().get::<Arc<ConnWatch>>().cloned();
    send_file(file, "video/x-msvideo", Some(format!("{id}.avi")), conn).await
}

async fn event_poster(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, WebError> {
    let file = open_event_file(&state, &id, EventFile::Poster).await?;
    let conn = req.extensions().get::<Arc<ConnWatch>>().cloned();
    send_file(file, "image/jpeg", None, conn).await
}

async fn event_play(
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
    let shutdown = state.shutdown_rx();
    struct Replay<R> {
        avi: Option<AviFrames<R>>,
        slot: ViewerSlot,
        shutdown: watch::Receiver<bool>,
        next_at: Instant,
        buf: Vec<u8>,
    }
    let st = Replay {
        avi: Some(avi),
        slot,
        shutdown,
        next_at: Instant::now(),
        buf: Vec::new(),
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        let mut avi = st.avi.take()?;
        tokio::select! {
            _ = st.shutdown.changed() => return None,
            () = tokio::time::sleep_until(st.next_at.into()) => {}
        }
        let mut buf = std::mem::take(&mut st.buf);
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
        st.next_at += Duration::from_micros(u64::from(us));
        let mut part = format!(
            "\r\n--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            buf.len()
        )
        .into_bytes();
        part.extend_from_slice(&buf);
        st.slot.progress(part.len());
        st.buf = buf;
        st.avi = Some(avi);
        Some((
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from(part)),
            st,
        ))
    });
    Ok(mjpeg_response(Body::from_stream(body)))
}

async fn event_delete_form(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    delete_event(&state, &id).await?;
    Ok(Redirect::to("/events").into_response())
}

async fn delete_event(state: &AppState, id: &str) -> Result<(), WebError> {
    let store = state.0.events.clone();
    let id2 = id.to_owned();
    tokio::task::spawn_blocking(move || store.delete(&id2))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    tracing::info!(event = id, "event deleted");
    Ok(())
}

async fn api_event_delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, WebError> {
    delete_event(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn api_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<crate::events::EventInfo>, WebError> {
    Ok(axum::Json(state.0.events.info(&id)?))
}

async fn api_events(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<serde_json::Value>, WebError> {
    let page = q.page.unwrap_or(0);
    let (list, more) = list_events(&state, page).await?;
    Ok(axum::Json(serde_json::json!({
        "page": page, "per_page": state.0.config.events_per_page, "more": more, "events": list,
    })))
}

async fn api_status(
    State(state): State<AppState>,
) -> Result<axum::Json<serde_json::Value>, WebError> {
    let s = &state.0;
    let cam = s.hub.status();
    let m = &s.hub.metrics;
    let store = s.events.clone();
    let (dir, min_free) = (
        s.config.events_dir.clone(),
        s.config.events_min_free_bytes(),
    );
    let (recording, disk) = tokio::task::spawn_blocking(move || {
        (
            store.recording_now(),
            crate::events::disk_state(&dir, min_free),
        )
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(axum::Json(serde_json::json!({
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
    })))
}

async fn metrics(State(state): State<AppState>) -> Response {
    use std::fmt::Write as _;
    let m = &state.0.hub.metrics;
    let mut out = String::with_capacity(2048);
    let mut put = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP mecam_web_{name} {help}\n# TYPE mecam_web_{name} {kind}\nmecam_web_{name} {v}"
        );
    };
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    put(
        "frames_received_total",
        "counter",
        "Live frames read from capture-svc.",
        l(&m.frames_in),
    );
    put(
        "frames_skipped_source_total",
        "counter",
        "Announced frames not read (overwritten, torn, corrupt).",
        l(&m.frames_skipped_source),
    );
    put(
        "offline_frames_total",
        "counter",
        "Camera-offline placeholder frames published.",
        l(&m.offline_frames),
    );
    put(
        "frames_sent_total",
        "counter",
        "Frame parts handed to viewers.",
        l(&m.frames_sent),
    );
    put(
        "frames_skipped_viewers_total",
        "counter",
        "Frames slow viewers skipped.",
        l(&m.frames_skipped_viewers),
    );
    put(
        "bytes_sent_total",
        "counter",
        "Stream body bytes handed to viewers.",
        l(&m.bytes_sent),
    );
    put(
        "viewers",
        "gauge",
        "Live streams open.",
        m.viewers.load(Ordering::Relaxed) as u64,
    );
    put(
        "streams_refused_total",
        "counter",
        "Streams refused with 503.",
        l(&m.streams_refused),
    );
    put(
        "viewers_dropped_stalled_total",
        "counter",
        "Connections dropped because their socket took nothing.",
        l(&m.viewers_dropped_stalled),
    );
    put(
        "connections",
        "gauge",
        "Open connections.",
        m.connections.load(Ordering::Relaxed) as u64,
    );
    put(
        "connections_refused_total",
        "counter",
        "Connections refused at accept (every one busy).",
        l(&m.connections_refused),
    );
    put(
        "connections_evicted_total",
        "counter",
        "Idle connections closed to make room for a new client.",
        l(&m.connections_evicted),
    );
    put(
        "login_failures_total",
        "counter",
        "Failed logins.",
        l(&m.login_failures),
    );
    put(
        "login_rate_limited_total",
        "counter",
        "Logins refused by the rate limiter.",
        l(&m.login_limited),
    );
    put(
        "login_password_checks_total",
        "counter",
        "Password hashes computed (logins and Basic credentials not remembered).",
        state.0.checker.checks(),
    );
    put(
        "login_global_slowing",
        "gauge",
        "1 while failed logins come faster than the global ceiling: addresses that already failed are slowed.",
        u64::from(state.0.limiter.slowing()),
    );
    put(
        "login_tracked_clients",
        "gauge",
        "Client addresses (IPv6: /64s) the login limiter remembers.",
        state.0.limiter.tracked() as u64,
    );
    put(
        "cross_site_refused_total",
        "counter",
        "State changes refused because their Origin or Referer was missing or foreign.",
        state.0.cross_site_refused.load(Ordering::Relaxed),
    );
    put(
        "frame_pool_misses_total",
        "counter",
        "Frame buffers allocated outside the pool.",
        l(&m.pool_misses),
    );
    put(
        "sessions",
        "gauge",
        "Browser sessions.",
        state.0.sessions.len() as u64,
    );
    put(
        "resident_memory_bytes",
        "gauge",
        "Resident memory of web-svc.",
        ipc::service::resident_bytes(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
