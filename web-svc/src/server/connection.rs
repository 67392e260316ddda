//! One connection: HTTP/1.1 over it with the request and head timeouts, and its watchdog
//! (a stalled viewer, an answer nobody reads, a full socket at shutdown).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::table::{Busy, NOT_WAITING, Slot, now_ms};
use super::{
    CONN_ERROR, DEAF, FULL_AT_SHUTDOWN, MAX_HEAD_BYTES, SHUTDOWN_GRACE, STALLED, TIMED_OUT,
    Timeouts, WATCH_PERIOD,
};
use crate::fanout::Hub;
use crate::routes::ClientAddr;
use crate::stream::ConnWatch;

/// A request's body, marking its connection as waiting on the client while a read of it
/// is pending (a body trickled in gives way to a new client like a trickled head).
struct ClientBody {
    body: Incoming,
    slot: Arc<Slot>,
}

impl hyper::body::Body for ClientBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        let wait = &self.slot.body_wait_since_ms;
        match r {
            Poll::Pending => {
                if wait.load(Ordering::Relaxed) == NOT_WAITING {
                    wait.store(now_ms(), Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => wait.store(NOT_WAITING, Ordering::Relaxed),
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.slot
            .body_wait_since_ms
            .store(NOT_WAITING, Ordering::Relaxed);
    }
}

/// The answer to a request whose body (or handler) took longer than the request timeout.
fn request_timed_out() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        hyper::StatusCode::REQUEST_TIMEOUT,
        [(hyper::header::CONNECTION, "close")],
        "request timed out: send the whole request at once\n",
    )
        .into_response()
}

/// An answer's body that keeps its connection marked busy until it is dropped.
struct Tracked {
    body: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// What a connection's task serves it with.
pub(super) struct Conn<'a> {
    pub(super) peer: SocketAddr,
    pub(super) router: Router,
    pub(super) hub: &'a Hub,
    pub(super) slot: &'a Arc<Slot>,
    pub(super) timeouts: Timeouts,
    pub(super) shutdown: CancellationToken,
}

/// Serves HTTP/1.1 on `io` until the client closes, the connection is evicted, the watchdog
/// drops it, or shutdown closes it (at once if its socket is full, else after the requests in
/// flight, within [`SHUTDOWN_GRACE`]).
pub(super) async fn connection<I>(io: I, conn: Conn<'_>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        router,
        hub,
        slot,
        timeouts,
        shutdown,
    } = conn;
    let watch = Arc::new(ConnWatch::default());
    let (w, s) = (watch.clone(), slot.clone());
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::start(&s);
        let slot = s.clone();
        let mut req = req.map(|body| axum::body::Body::new(ClientBody { body, slot }));
        req.extensions_mut().insert(ClientAddr(peer));
        req.extensions_mut().insert(w.clone());
        answer(router.clone().oneshot(req), busy, peer, timeouts.request)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.head)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(Watched::new(io, watch.clone())), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(WATCH_PERIOD);
    let mut closing_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r
                    && let Some(held_back) = CONN_ERROR.check()
                {
                    tracing::debug!(%peer, error = %e, held_back, "connection ended with an error");
                }
                return;
            }
            () = slot.evict.notified() => return,
            () = shutdown.cancelled(), if closing_at.is_none() => {
                if watch.write_blocked_for().is_some() {
                    log_full_at_shutdown(peer);
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing_at = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = tick.tick() => {
                if watchdog_closes(&watch, hub, peer, timeouts, closing_at) {
                    return;
                }
            }
        }
    }
}

/// One request's answer: the handler's, bounded by `timeout` (reading the body and running
/// the handler; a stream's body runs after this, under the viewer timeout), or `408`. On
/// time-out hyper closes the connection, since the body was not read to its end. The answer's
/// body keeps `busy` until it is dropped.
async fn answer(
    handler: impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>,
    busy: Busy,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<hyper::Response<Tracked>, std::convert::Infallible> {
    let response = match tokio::time::timeout(timeout, handler).await {
        Ok(Ok(r)) => r,
        Ok(Err(never)) => match never {},
        Err(_) => {
            if let Some(held_back) = TIMED_OUT.check() {
                tracing::info!(%peer, timeout_s = timeout.as_secs_f64(), held_back, "request timed out (body or answer too slow); closing its connection");
            }
            request_timed_out()
        }
    };
    Ok(response.map(|body| Tracked { body, _busy: busy }))
}

/// The watchdog's turn: whether to close the connection now, because its stream's socket took
/// nothing for the viewer timeout, its answer's socket took nothing for the request timeout,
/// or, shutting down, its socket is full or the grace period is over.
fn watchdog_closes(
    watch: &ConnWatch,
    hub: &Hub,
    peer: SocketAddr,
    timeouts: Timeouts,
    closing_at: Option<tokio::time::Instant>,
) -> bool {
    if watch.stalled(timeouts.viewer) {
        hub.metrics
            .viewers_dropped_stalled
            .fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = STALLED.check() {
            tracing::info!(%peer, timeout_s = timeouts.viewer.as_secs_f64(), held_back, "dropping a viewer whose socket took nothing");
        }
        return true;
    }
    let blocked = watch.write_blocked_for();
    if !watch.is_streaming() && blocked.is_some_and(|b| b > timeouts.request) {
        if let Some(held_back) = DEAF.check() {
            tracing::info!(%peer, timeout_s = timeouts.request.as_secs_f64(), held_back, "dropping a client that reads nothing of its answer");
        }
        return true;
    }
    if closing_at.is_some() && blocked.is_some() {
        log_full_at_shutdown(peer);
        return true;
    }
    closing_at.is_some_and(|t| tokio::time::Instant::now() >= t)
}

fn log_full_at_shutdown(peer: SocketAddr) {
    if let Some(held_back) = FULL_AT_SHUTDOWN.check() {
        tracing::info!(%peer, held_back, "shutting down: closing a connection whose socket is full");
    }
}

/// The connection's socket, recording in its [`ConnWatch`] when a write cannot go out (the
/// socket is full) and when one goes out again.
struct Watched<I> {
    io: I,
    watch: Arc<ConnWatch>,
}

impl<I> Watched<I> {
    fn new(io: I, watch: Arc<ConnWatch>) -> Watched<I> {
        Watched { io, watch }
    }

    fn track<T>(&self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match &r {
            Poll::Pending => self.watch.write_blocked(),
            Poll::Ready(_) => self.watch.write_unblocked(),
        }
        r
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.track(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.track(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.track(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
