//! The MJPEG-over-HTTP camera client (`multipart/x-mixed-replace`), on hyper's HTTP/1 client.
//!
//! The URL is parsed by `http::Uri` (re-exported by hyper), so `http://[::1]:8080/stream` and
//! `http://user:pass@cam.local/video` work as anywhere else. One GET goes out over a tokio
//! `TcpStream` through `hyper::client::conn::http1` (no pool: one long response is all a
//! camera gives), with Basic auth from the `username`/`password` keys or the URL's user info.
//! The status is checked and the body (close-delimited, `Content-Length` or chunked: hyper
//! decodes them all) is handed to the JPEG splitter as a byte stream. The multipart boundary
//! lines between the JPEGs are skipped by the splitter as bytes outside a frame, so a camera
//! that gets its part headers wrong still works. Plain `http://` only.
//!
//! Bounds: connecting and the response head take at most [`CONNECT_TIMEOUT`]; hyper's read
//! buffer, and so the response head, is at most [`MAX_HEAD`]; a frame is at most the slot
//! capacity (the splitter); no frame for the stall timeout ends the session (the capture loop).

use std::time::Duration;

use base64::Engine as _;
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest read buffer of the HTTP connection (hyper's `max_buf_size`): it bounds the
/// response head (a longer one is refused) and each read of the body.
pub const MAX_HEAD: usize = 64 * 1024;
/// Time to connect and get the response head.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A camera's `http://` URL, parsed by `http::Uri`, with the user info taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraUrl {
    /// Host name or address, without the brackets of an IPv6 literal (for connecting).
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// The `Host` header: the authority without user info (`[::1]:8080`, `cam.local`).
    pub host_header: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// User from the URL (percent-decoded).
    pub user: Option<String>,
    /// Password from the URL (percent-decoded).
    pub password: Option<String>,
}

/// Why the camera could not be streamed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not an `http://host[:port]/path` URL. The URL itself is not repeated: it may hold a
    /// password.
    #[error("not an http://host[:port]/path URL: {0}")]
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
    /// Any other status.
    #[error("camera answered {0}; check the URL's path")]
    Status(String),
    /// The answer is not HTTP, or breaks a bound.
    #[error("camera's answer is not usable HTTP: {0}")]
    Protocol(String),
}

impl CameraUrl {
    /// Parses `http://[user[:pass]@]host[:port][/path]`; the host may be an IPv6 literal in
    /// brackets; user and password may be percent-encoded (`p%40ss` for `p@ss`).
    ///
    /// # Errors
    /// [`HttpError::BadUrl`], saying what is wrong (never echoing the URL).
    pub fn parse(s: &str) -> Result<CameraUrl, HttpError> {
        let uri: Uri = s
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| HttpError::BadUrl(e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(HttpError::BadUrl(
                    "https is not supported; use the camera's plain http:// URL".into(),
                ));
            }
            _ => return Err(HttpError::BadUrl("it must start with http://".into())),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| HttpError::BadUrl("no host".into()))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(HttpError::BadUrl("no host".into()));
        }
        let (user, password) = match authority.as_str().rsplit_once('@') {
            Some((info, _)) => {
                let (u, p) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                (Some(decode(u)?), p.map(decode).transpose()?)
            }
            None => (None, None),
        };
        let host_port = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, hp)| hp);
        let port = match authority.port_u16() {
            Some(p) => p,
            None if host_port.len() == host.len() => 80,
            None => {
                return Err(HttpError::BadUrl(
                    "the port must be a number 1..=65535".into(),
                ));
            }
        };
        let host_header = match uri.port() {
            Some(p) => format!("{host}:{}", p.as_str()),
            None => host.to_owned(),
        };
        Ok(CameraUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            host_header,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            user,
            password,
        })
    }

    /// The label for logs and the hello: `http:HOST:PORT/PATH`, never the credentials.
    pub fn label(&self) -> String {
        format!("http:{}{}", self.host_header_with_port(), self.path)
    }

    /// The URL for showing (`--print-config`): the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let user = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            (None, _) => String::new(),
        };
        format!("http://{user}{}{}", self.host_header, self.path)
    }

    fn host_header_with_port(&self) -> String {
        if self.host_header.ends_with(']') || !self.host_header.contains(':') {
            format!("{}:{}", self.host_header, self.port)
        } else {
            self.host_header.clone()
        }
    }
}

/// Percent-decodes user info; it must be UTF-8.
fn decode(s: &str) -> Result<String, HttpError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| HttpError::BadUrl("the user or password is not UTF-8".into()))
}

/// An open camera response: its body, read as a byte stream.
#[derive(Debug)]
pub struct HttpStream {
    body: Incoming,
    /// Body bytes received and not yet read.
    pending: Bytes,
    /// Drives the connection; aborted when the stream is dropped.
    _conn: ConnTask,
}

/// The task driving a connection, aborted when dropped: whether the stream ends, `open` fails
/// or its timeout cancels it half-way, no connection is left behind.
#[derive(Debug)]
struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HttpStream {
    /// Reads body bytes into `buf`; 0 at the end of the body. Cancel-safe: a cancelled read
    /// loses nothing (a received chunk is kept in `pending` until it is copied out).
    ///
    /// # Errors
    /// The connection failed or the body is malformed (e.g. bad chunked encoding).
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                self.pending = self.pending.slice(n..);
                return Ok(n);
            }
            let frame =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut self.body).poll_frame(cx)).await;
            match frame {
                None => return Ok(0),
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                // Trailers carry no image bytes.
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.pending = data;
                    }
                }
            }
        }
    }
}

/// Connects, sends the GET and checks the response head.
///
/// `user`/`password` override the URL's user info.
///
/// # Errors
/// Connection, timeout, authorisation, status or protocol failures.
pub async fn open(
    url: &CameraUrl,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<HttpStream, HttpError> {
    tokio::time::timeout(CONNECT_TIMEOUT, open_inner(url, user, password))
        .await
        .map_err(|_| HttpError::Timeout(CONNECT_TIMEOUT))?
}

async fn open_inner(
    url: &CameraUrl,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<HttpStream, HttpError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake::<_, String>(TokioIo::new(tcp))
        .await
        .map_err(protocol)?;
    let conn = ConnTask(tokio::spawn(async move {
        // Its error reaches the body reader; nothing to log twice.
        let _ = conn.await;
    }));
    let mut req = Request::get(url.path.as_str())
        .header(HOST, url.host_header.as_str())
        .header(USER_AGENT, "mecam-capture")
        .header(ACCEPT, "multipart/x-mixed-replace, image/jpeg");
    let user = user.or(url.user.as_deref());
    let password = password.or(url.password.as_deref());
    if let Some(u) = user {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{u}:{}", password.unwrap_or("")));
        req = req.header(AUTHORIZATION, format!("Basic {token}"));
    }
    let req = req
        .body(String::new())
        .map_err(|e| HttpError::BadUrl(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(protocol)?;
    let status = resp.status();
    if status != StatusCode::OK {
        return Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                HttpError::Unauthorized(status.as_u16())
            }
            s => HttpError::Status(s.to_string()),
        });
    }
    Ok(HttpStream {
        body: resp.into_body(),
        pending: Bytes::new(),
        _conn: conn,
    })
}

fn protocol(e: hyper::Error) -> HttpError {
    if e.is_parse_too_large() {
        HttpError::Protocol(format!("a response head over {MAX_HEAD} bytes"))
    } else if e.is_incomplete_message() {
        HttpError::Protocol("connection closed before the response head".into())
    } else {
        HttpError::Protocol(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = CameraUrl::parse("http://admin:pw@cam.local:8081/video?x=1").unwrap();
        assert_eq!(u.host, "cam.local");
        assert_eq!(u.port, 8081);
        assert_eq!(u.host_header, "cam.local:8081");
        assert_eq!(u.path, "/video?x=1");
        assert_eq!(u.user.as_deref(), Some("admin"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.label(), "http:cam.local:8081/video?x=1");
        let u = CameraUrl::parse("http://10.0.0.2").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(u.label(), "http:10.0.0.2:80/");
        assert!(CameraUrl::parse("https://x/").is_err());
        assert!(CameraUrl::parse("ftp://x/").is_err());
        assert!(CameraUrl::parse("http://:80/").is_err());
        assert!(CameraUrl::parse("http://x:notaport/").is_err());
        assert!(CameraUrl::parse("nope").is_err());
        assert!(CameraUrl::parse("").is_err());
    }

    #[test]
    fn ipv6_literals_with_and_without_a_port() {
        let u = CameraUrl::parse("http://[::1]:8080/stream").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.host_header, "[::1]:8080");
        assert_eq!(u.path, "/stream");
        assert_eq!(u.label(), "http:[::1]:8080/stream");
        let u = CameraUrl::parse("http://user@[fe80::2]/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fe80::2", 80));
        assert_eq!(u.host_header, "[fe80::2]");
        assert_eq!(u.user.as_deref(), Some("user"));
        assert_eq!(u.password, None);
    }

    #[test]
    fn user_info_is_percent_decoded_and_never_in_errors_or_labels() {
        let u = CameraUrl::parse("http://ad%3Amin:p%40ss@cam/").unwrap();
        assert_eq!(u.user.as_deref(), Some("ad:min"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert!(!u.label().contains("p%40ss") && !u.label().contains("p@ss"));
        assert_eq!(u.redacted(), "http://ad:min:***@cam/");
        let e = CameraUrl::parse("https://admin:hunter2@cam/").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = CameraUrl::parse("http://admin:hunter2@cam:99999/").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
