//! The accept loop: bounded connections, optional TLS, HTTP/1.1 with header limits, the
//! per-connection watchdog (a stalled viewer, a request body that never comes, an answer
//! nobody reads), and graceful shutdown that never waits on a viewer.

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
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::fanout::Hub;
use crate::stream::ConnWatch;
use crate::web::ClientAddr;

/// Largest request head (request line plus headers) in bytes; more gets an error.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time for the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight (streams end at once, and so does any
/// connection whose socket is full).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often each connection checks whether its stream is stalled.
pub const WATCH_PERIOD: Duration = Duration::from_millis(250);

/// Loads a TLS acceptor from PEM files.
///
/// # Errors
/// Unreadable or invalid certificate or key, naming the file.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read [web] tls_cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "[web] tls_cert {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read [web] tls_key {} as a PEM private key",
            key.display()
        )
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("[web] tls_cert and tls_key do not form a valid pair")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The per-connection time limits, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A stream or download whose socket takes nothing this long is dropped.
    pub viewer: Duration,
    /// Time for a request head, and again for its body and the start of the answer; an
    /// answer (not a stream) whose socket takes nothing this long is dropped.
    pub request: Duration,
}

/// Serves `router` on `listener` until `shutdown` turns true, then waits for the connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    hub: Arc<Hub>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            hub.metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, max_connections, "too many connections; closing a new one");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (router, hub, tls, shutdown) =
            (router.clone(), hub.clone(), tls.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _permit = permit;
            hub.metrics.connections.fetch_add(1, Ordering::Relaxed);
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(io)) => {
                            connection(io, peer, router, &hub, timeouts, shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => connection(tcp, peer, router, &hub, timeouts, shutdown).await,
            }
            hub.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(1);
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    left = tasks.len(),
                    "closing connections still open at shutdown"
                );
                tasks.shutdown().await;
            }
        }
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

async fn connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    hub: &Hub,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Arc::new(ConnWatch::default());
    let w = watch.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        req.extensions_mut().insert(w.clone());
        let answer = router.clone().oneshot(req);
        // Bounds reading the body and running the handler; a stream's body runs after
        // this, under the viewer timeout. On time-out hyper closes the connection, since
        // the body was not read to its end.
        async move {
            match tokio::time::timeout(timeouts.request, answer).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!(%peer, timeout_s = timeouts.request.as_secs_f64(), "request timed out (body or answer too slow); closing its connection");
                    Ok(request_timed_out())
                }
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(Watched::new(io, watch.clone())), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(WATCH_PERIOD);
    let mut closing_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.wait_for(|s| *s), if closing_at.is_none() => {
                if watch.write_blocked_for().is_some() {
                    tracing::info!(%peer, "shutting down: closing a connection whose socket is full");
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing_at = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = tick.tick() => {
                if watch.stalled(timeouts.viewer) {
                    hub.metrics.viewers_dropped_stalled.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, timeout_s = timeouts.viewer.as_secs_f64(), "dropping a viewer whose socket took nothing");
                    return;
                }
                let blocked = watch.write_blocked_for();
                if !watch.is_streaming() && blocked.is_some_and(|b| b > timeouts.request) {
                    tracing::info!(%peer, timeout_s = timeouts.request.as_secs_f64(), "dropping a client that reads nothing of its answer");
                    return;
                }
                if closing_at.is_some() && blocked.is_some() {
                    tracing::info!(%peer, "shutting down: closing a connection whose socket is full");
                    return;
                }
                if closing_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    return;
                }
            }
        }
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
