//! The same-origin rule: every state change (any method but GET and HEAD) must come from this
//! server's own pages, as its `Origin` (or, without one, its `Referer`) says.

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};

use super::client_ip;
use crate::auth::ClientKey;
use crate::state::AppState;

/// State changes refused by the same-origin rule.
static CROSS_SITE_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// Logs how many cross-site lines were held back since the last one (see
/// [`super::flush_outsider_logs`]).
pub(super) fn flush_logs() {
    if let Some(n) = CROSS_SITE_LOG.flush() {
        tracing::warn!(held_back = n, "{n} more cross-site requests refused");
    }
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
pub(super) async fn check_origin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
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
