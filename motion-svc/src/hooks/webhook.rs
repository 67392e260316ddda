//! The webhook: an `http://` URL, and a POST of the event's JSON with hyper's HTTP/1 client,
//! retried a bounded number of times.

use std::time::Duration;

use hyper::Uri;

use super::{HookError, HookKind};

/// Bytes of a webhook response head that are read at most (hyper's smallest read buffer): a
/// longer head is an error. The response body is never read.
pub const MAX_RESPONSE_BYTES: usize = 8192;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address to connect to (an IPv6 address without its brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The `Host` header: the URL's authority as written.
    pub authority: String,
}

/// Parses `http://host[:port][/path]` with `http::Uri` (IPv6 literals included:
/// `http://[::1]:8123/hook`).
///
/// # Errors
/// A message saying what is wrong (https is not supported: put a local proxy in front).
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?}: {e}; expected http://host[:port]/path"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{url:?}: only http:// URLs are supported (use a local proxy for https)"
        ));
    }
    let (host, port) = host_and_port(url, &uri, "http://host[:port]/path")?;
    let authority = uri.authority().expect("checked");
    Ok(HttpUrl {
        host,
        port: port.unwrap_or(80),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        authority: authority.as_str().to_string(),
    })
}

/// The host (an IPv6 address without its brackets) and the port, if written, of a URL
/// parsed as `uri`; the form expected is in the messages.
///
/// # Errors
/// No host, a user name or password in the URL, or a bad port.
pub fn host_and_port(url: &str, uri: &Uri, form: &str) -> Result<(String, Option<u16>), String> {
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?}: no host; expected {form}"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?}: user names in the URL are not supported; expected {form}"
        ));
    }
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("{url:?}: no host; expected {form}"));
    }
    let has_port = authority.as_str().len() > authority.host().len();
    if has_port && authority.port_u16().is_none() {
        return Err(format!("{url:?}: bad port; expected {form}"));
    }
    Ok((host.to_owned(), authority.port_u16()))
}

/// One POST with hyper's HTTP/1 client over a fresh connection; the status code.
async fn post_once(url: &HttpUrl, kind: HookKind, body: &[u8]) -> Result<u16, String> {
    use hyper::header;
    let stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_BYTES)
        .handshake::<_, String>(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let body = String::from_utf8(body.to_vec()).map_err(|e| format!("body: {e}"))?;
    let req = hyper::Request::post(url.path.as_str())
        .header(header::HOST, url.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "mecam-motion-svc")
        .header(header::CONNECTION, "close")
        .header("x-mecam-event", kind.as_str())
        .body(body)
        .map_err(|e| format!("request: {e}"))?;
    // The connection is driven here, not in a task of its own: when the caller's timeout
    // drops this future, the socket goes with it.
    tokio::pin!(conn);
    let response = sender.send_request(req);
    tokio::pin!(response);
    let response = tokio::select! {
        biased;
        r = &mut response => r,
        c = &mut conn => match c {
            // The connection is done (the server closed it): the response, if any, is there.
            Ok(()) => response.await,
            Err(e) => return Err(format!("receive: {e}")),
        },
    }
    .map_err(|e| format!("send: {e}"))?;
    // The body is never read: the status is all a hook needs.
    Ok(response.status().as_u16())
}

/// POSTs `body` to `url`, retrying failures up to `attempts` times in all.
///
/// # Errors
/// [`HookError::Webhook`] with the last failure.
pub async fn post_with_retries(
    url: &HttpUrl,
    kind: HookKind,
    body: &[u8],
    attempts: u32,
    timeout: Duration,
    backoff: Duration,
) -> Result<(), HookError> {
    let mut last = String::new();
    let mut pause = backoff;
    for attempt in 1..=attempts.max(1) {
        match tokio::time::timeout(timeout, post_once(url, kind, body)).await {
            Ok(Ok(code)) if (200..300).contains(&code) => return Ok(()),
            Ok(Ok(code)) => last = format!("HTTP status {code}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {timeout:?}"),
        }
        if attempt < attempts {
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2);
        }
    }
    Err(HookError::Webhook {
        attempts: attempts.max(1),
        last,
    })
}
