//! Who gets in: the login rule in front of every protected route (a session cookie, or HTTP
//! Basic as admin), the password check behind the login limiter, and the login, first-visit
//! setup (behind the one-time setup code) and logout handlers.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use serde::Deserialize;

use super::{ClientAddr, WebError, client_ip};
use crate::auth::{self, ClientKey, SESSION_COOKIE};
use crate::pages;
use crate::state::{AppState, Password};

/// What clients are told while the password file cannot be used.
pub const PASSWORD_BROKEN: &str = "web-svc cannot use its password file; see the service log (journalctl -u mecam-web) and set the password again with `sudo -u mecam web-svc set-password`";

pub(super) fn password_broken(page: bool) -> Response {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    if page {
        (status, Html(pages::login(Some(PASSWORD_BROKEN)))).into_response()
    } else {
        (status, format!("{PASSWORD_BROKEN}\n")).into_response()
    }
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

/// Logs how many login lines were held back since the last one (see
/// [`super::flush_outsider_logs`]).
pub(super) fn flush_logs() {
    if let Some(n) = FAILED_LOGIN_LOG.flush() {
        tracing::warn!(held_back = n, "{n} more failed logins");
    }
    if let Some(n) = FAILED_SETUP_LOG.flush() {
        tracing::warn!(held_back = n, "{n} more wrong setup codes");
    }
    if let Some(n) = LIMITED_LOGIN_LOG.flush() {
        tracing::warn!(held_back = n, "{n} more logins refused by the rate limiter");
    }
}

/// How a password came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The login form (makes a session; never remembered).
    Form,
    /// HTTP Basic (remembered in the [`BasicCache`](crate::auth::BasicCache), so polling costs no hash per request).
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

pub(super) async fn require_login(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
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
    too_many_on(retry, pages::login)
}

/// [`too_many`] on the form `page` (login or setup).
fn too_many_on(retry: Duration, page: fn(Option<&str>) -> String) -> Response {
    let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        Html(page(Some(
            "Too many attempts from your address; wait as long as Retry-After says (it doubles with each wrong try) and try again.",
        ))),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    username: Option<String>,
    password: String,
}

pub(super) async fn login_page(State(state): State<AppState>) -> Response {
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

pub(super) async fn login(
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

pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(t) = session_token(&headers) {
        state.0.sessions.end(&t);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    resp
}

#[derive(Debug, Deserialize)]
pub(super) struct SetupForm {
    /// The one-time setup code; missing is wrong.
    #[serde(default)]
    code: String,
    password: String,
    confirm: String,
}

pub(super) async fn setup_page(State(state): State<AppState>) -> Response {
    match state.password() {
        Password::Unset => Html(pages::setup(None)).into_response(),
        Password::Set(..) | Password::Broken => Redirect::to("/login").into_response(),
    }
}

/// Failed setup codes (one line per interval, with a count of the others).
static FAILED_SETUP_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// What a setup without the right code gets: the form again, and what to do.
fn wrong_code(message: &str) -> Response {
    (StatusCode::FORBIDDEN, Html(pages::setup(Some(message)))).into_response()
}

/// First-visit setup: the one-time code (checked behind the login limiter, in constant
/// time) first, then the password, stored only if none is, and the code removed with it.
pub(super) async fn setup(
    State(state): State<AppState>,
    addr: Option<axum::Extension<ClientAddr>>,
    Form(form): Form<SetupForm>,
) -> Response {
    let ip = addr.map_or(IpAddr::from([127, 0, 0, 1]), |a| a.0.0.ip());
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
    let s = &state.0;
    // The limiter answers first, so a limited client learns nothing of its code.
    let attempt = match s.limiter.admit(ip) {
        Ok(a) => a,
        Err(retry) => {
            s.hub.metrics.login_limited.fetch_add(1, Ordering::Relaxed);
            return too_many_on(retry, pages::setup);
        }
    };
    match s.setup_code.matches(&form.code) {
        Ok(true) => attempt.succeeded(),
        Ok(false) if s.setup_code.load().ok().flatten().is_none() => {
            drop(attempt);
            return wrong_code(
                "There is no setup code: run `sudo web-svc --print-setup-code` on the camera to make one.",
            );
        }
        Ok(false) => {
            attempt.failed();
            s.hub.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = FAILED_SETUP_LOG.check() {
                let client = ClientKey::of(ip);
                tracing::warn!(%client, held_back, "wrong setup code");
            }
            return wrong_code(
                "Wrong setup code. `sudo web-svc --print-setup-code` on the camera prints it.",
            );
        }
        Err(e) => {
            drop(attempt);
            return WebError::Internal(e.to_string()).into_response();
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
                if let Err(e) = state.0.setup_code.remove() {
                    // Harmless (a code works only while no password is set), but say so.
                    tracing::warn!("{e}");
                }
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
