//! A minimal HTTP client for MJPEG network cameras (`multipart/x-mixed-replace`).
//!
//! Hand-written over a tokio `TcpStream` rather than pulling in a full client: it sends one
//! `HTTP/1.0` GET (so the camera answers without chunked encoding) with optional basic auth,
//! checks the status, and hands the body to the JPEG splitter as a byte stream. The multipart
//! boundary lines between the JPEGs are skipped by the splitter as bytes outside a frame, so a
//! camera that gets its part headers wrong still works. Plain `http://` only.

use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Time to connect and get the response head.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address.
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// User from the URL.
    pub user: Option<String>,
    /// Password from the URL.
    pub password: Option<String>,
}

/// Why the camera could not be streamed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not an `http://host[:port]/path` URL.
    #[error("not an http:// URL: {0}")]
    BadUrl(String),
    /// Network error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Timed out.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The camera refused the credentials.
    #[error("HTTP {0}: check username and password")]
    Unauthorized(u16),
    /// Any other non-200 status or a malformed head.
    #[error("camera answered {0}")]
    Status(String),
}

impl Url {
    /// Parses `http://[user[:pass]@]host[:port][/path]`.
    ///
    /// # Errors
    /// [`HttpError::BadUrl`].
    pub fn parse(s: &str) -> Result<Url, HttpError> {
        let bad = || HttpError::BadUrl(s.to_owned());
        let rest = s.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse().map_err(|_| bad())?)
            }
            _ => (hostport, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((a, b)) => (Some(a.to_owned()), Some(b.to_owned())),
                None => (Some(u.to_owned()), None),
            },
            None => (None, None),
        };
        Ok(Url {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            user,
            password,
        })
    }
}

/// Connects, sends the request and reads the head. Returns the stream and the body bytes
/// that came with the head.
///
/// # Errors
/// Connection, timeout, authorisation or status failures.
pub async fn open(
    url: &Url,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<(TcpStream, Vec<u8>), HttpError> {
    tokio::time::timeout(CONNECT_TIMEOUT, open_inner(url, user, password))
        .await
        .map_err(|_| HttpError::Timeout(CONNECT_TIMEOUT))?
}

async fn open_inner(
    url: &Url,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<(TcpStream, Vec<u8>), HttpError> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
    let mut req = format!(
        "GET {} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: mecam-capture\r\nAccept: multipart/x-mixed-replace, image/jpeg\r\n",
        url.path, url.host, url.port
    );
    let user = user.or(url.user.as_deref());
    let password = password.or(url.password.as_deref());
    if let Some(u) = user {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{u}:{}", password.unwrap_or("")));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut head = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    let end = loop {
        if filled == head.len() {
            return Err(HttpError::Status(format!(
                "a response head over {MAX_HEAD} bytes"
            )));
        }
        let n = stream.read(&mut head[filled..]).await?;
        if n == 0 {
            return Err(HttpError::Status(
                "nothing (connection closed before the response head)".into(),
            ));
        }
        filled += n;
        if let Some(i) = head[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]);
    let status_line = text.lines().next().unwrap_or("");
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HttpError::Status(format!("a malformed status line {status_line:?}")))?;
    match code {
        200 => {}
        401 | 403 => return Err(HttpError::Unauthorized(code)),
        _ => return Err(HttpError::Status(status_line.to_owned())),
    }
    if text.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        return Err(HttpError::Status(
            "with chunked encoding to an HTTP/1.0 request (unsupported)".into(),
        ));
    }
    Ok((stream, head[end..filled].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://admin:pw@cam.local:8081/video?x=1").unwrap();
        assert_eq!(u.host, "cam.local");
        assert_eq!(u.port, 8081);
        assert_eq!(u.path, "/video?x=1");
        assert_eq!(u.user.as_deref(), Some("admin"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        let u = Url::parse("http://10.0.0.2").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert!(Url::parse("https://x/").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://x:notaport/").is_err());
    }
}
