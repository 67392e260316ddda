//! A small HTTP/1.1 client over `std::net::TcpStream`, enough to test `web-svc`: one-shot
//! requests (`Connection: close`), login, and reading an MJPEG `multipart/x-mixed-replace`
//! stream part by part (plain or chunked transfer encoding).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context as _;

/// Read and write timeout on every socket; a hung server fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head or part header block accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body or part accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// First header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `GET path`, with `cookie` if given.
///
/// # Errors
/// Connection or protocol error.
pub fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> anyhow::Result<Response> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    request(addr, "GET", path, &headers, b"")
}

/// Send one request with `Connection: close` and read the whole response.
///
/// # Errors
/// Connection or protocol error.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    let (status, headers, mut reader) = send(addr, method, path, headers, body)?;
    let mut body = Vec::new();
    reader
        .by_ref()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)?;
    anyhow::ensure!(
        body.len() <= MAX_BODY,
        "response body over {MAX_BODY} bytes"
    );
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Log in as `user` with `password` (`POST /login`, form-encoded) and return the session cookie
/// as `name=value`, ready for a `Cookie:` header.
///
/// # Errors
/// The login was refused or no cookie came back.
pub fn login(addr: SocketAddr, user: &str, password: &str) -> anyhow::Result<String> {
    let form = format!(
        "username={}&password={}",
        urlencode(user),
        urlencode(password)
    );
    post_for_session(addr, "/login", &form).with_context(|| format!("login as {user}"))
}

/// First-visit setup (`POST /setup`): set the admin password with the one-time setup code
/// (`web-svc --print-setup-code` prints it); the session cookie, as [`login`] returns it.
///
/// # Errors
/// The setup was refused (wrong code, a password already set) or no cookie came back.
pub fn setup(addr: SocketAddr, code: &str, password: &str) -> anyhow::Result<String> {
    let pw = urlencode(password);
    let form = format!("code={}&password={pw}&confirm={pw}", urlencode(code));
    post_for_session(addr, "/setup", &form).context("first-visit setup")
}

/// Posts `form` to `path` as a browser on this server's page would, and returns the session
/// cookie it sets.
fn post_for_session(addr: SocketAddr, path: &str, form: &str) -> anyhow::Result<String> {
    // web-svc refuses a state change without its own Origin, as a browser would send it.
    let origin = format!("http://{addr}");
    let resp = request(
        addr,
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        form.as_bytes(),
    )?;
    anyhow::ensure!(
        resp.status < 400,
        "refused: {} {}",
        resp.status,
        resp.text()
    );
    let cookie = resp
        .headers
        .iter()
        .find(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.split(';').next().unwrap_or_default().trim().to_owned())
        .with_context(|| format!("{path} answered {} without Set-Cookie", resp.status))?;
    Ok(cookie)
}

/// `s` encoded for a form body or a query (`application/x-www-form-urlencoded`).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type Head = (u16, Vec<(String, String)>, BodyReader);

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Head> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let status_line = read_line(&mut reader)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = read_headers(&mut reader)?;
    let chunked = find_header(&headers, "transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let len = find_header(&headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let body = match (chunked, len, method) {
        (_, _, "HEAD") => BodyReader::Plain(reader.take(0)),
        (true, _, _) => BodyReader::Chunked {
            inner: reader,
            left: 0,
            done: false,
        },
        (false, Some(n), _) => BodyReader::Plain(reader.take(n)),
        (false, None, _) => BodyReader::Plain(reader.take(u64::MAX)),
    };
    Ok((status, headers, body))
}

fn read_line(r: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = Vec::new();
    r.by_ref()
        .take(MAX_HEAD as u64)
        .read_until(b'\n', &mut line)?;
    anyhow::ensure!(
        line.ends_with(b"\n"),
        "connection closed or line too long (got {} bytes)",
        line.len()
    );
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

fn read_headers(r: &mut impl BufRead) -> anyhow::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            return Ok(headers);
        }
        anyhow::ensure!(headers.len() < 100, "more than 100 headers");
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
}

/// A response body: plain (length-bounded or to EOF) or chunked.
#[derive(Debug)]
enum BodyReader {
    Plain(std::io::Take<BufReader<TcpStream>>),
    Chunked {
        inner: BufReader<TcpStream>,
        left: usize,
        done: bool,
    },
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            BodyReader::Plain(r) => r.read(buf),
            BodyReader::Chunked { inner, left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let line = read_line(inner).map_err(std::io::Error::other)?;
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .map_err(|_| {
                                std::io::Error::other(format!("bad chunk size {line:?}"))
                            })?;
                    if size == 0 {
                        *done = true;
                        return Ok(0);
                    }
                    *left = size;
                }
                let n = buf.len().min(*left);
                let got = inner.read(&mut buf[..n])?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                *left -= got;
                if *left == 0 {
                    let mut crlf = [0u8; 2];
                    inner.read_exact(&mut crlf)?;
                }
                Ok(got)
            }
        }
    }
}

/// One part of a multipart stream.
#[derive(Debug, Clone)]
pub struct Part {
    /// Part headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The part's bytes (a JPEG for a live stream).
    pub body: Vec<u8>,
}

impl Part {
    /// First header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// An open `multipart/x-mixed-replace` stream (one HTTP connection).
#[derive(Debug)]
pub struct MjpegStream {
    reader: BufReader<BodyReader>,
    boundary: String,
    /// Set when the previous part's scan already consumed the next boundary line.
    at_part_headers: bool,
}

impl MjpegStream {
    /// `GET path` with `cookie`; fails unless the answer is 200 multipart.
    ///
    /// # Errors
    /// Connection error, non-200 status, or not a multipart response.
    pub fn open(addr: SocketAddr, path: &str, cookie: Option<&str>) -> anyhow::Result<MjpegStream> {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        let (status, headers, body) = send(addr, "GET", path, &headers, b"")?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}");
        let ctype = find_header(&headers, "content-type")
            .unwrap_or_default()
            .to_owned();
        let boundary = ctype
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .map(|b| b.trim_matches('"').to_owned())
            .with_context(|| format!("GET {path}: content-type {ctype:?} has no boundary"))?;
        Ok(MjpegStream {
            reader: BufReader::new(body),
            boundary,
            at_part_headers: false,
        })
    }

    /// Read the next part.
    ///
    /// # Errors
    /// The stream ended, timed out ([`IO_TIMEOUT`]) or is malformed.
    pub fn next_part(&mut self) -> anyhow::Result<Part> {
        let delim = format!("--{}", self.boundary);
        if !self.at_part_headers {
            loop {
                let line = read_line(&mut self.reader)?;
                if line == delim {
                    break;
                }
                anyhow::ensure!(line.is_empty(), "expected boundary, got {line:?}");
            }
        }
        self.at_part_headers = false;
        let headers = read_headers(&mut self.reader)?;
        let body = if let Some(n) =
            find_header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok())
        {
            anyhow::ensure!(n <= MAX_BODY, "part of {n} bytes");
            let mut body = vec![0; n];
            self.reader.read_exact(&mut body)?;
            body
        } else {
            // No length: read up to the next boundary line.
            let end = format!("\r\n{delim}\r\n").into_bytes();
            let mut body = Vec::new();
            while !body.ends_with(&end) {
                anyhow::ensure!(body.len() <= MAX_BODY, "part over {MAX_BODY} bytes");
                let mut b = [0u8; 1];
                self.reader.read_exact(&mut b)?;
                body.push(b[0]);
            }
            body.truncate(body.len() - end.len());
            self.at_part_headers = true;
            body
        };
        Ok(Part { headers, body })
    }
}
