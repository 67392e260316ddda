//! The accept loop: bounded connections, optional TLS, HTTP/1.1 with header limits, the
//! stalled-viewer watchdog per connection, and graceful shutdown that never waits on a viewer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::fanout::Hub;
use crate::stream::ConnWatch;
use crate::web::ClientAddr;

/// Time a client has to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line plus headers) in bytes; more gets an error.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time for the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight (streams end at once).
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

/// Serves `router` on `listener` until `shutdown` turns true, then waits for the connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    hub: Arc<Hub>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
    viewer_timeout: Duration,
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
                            connection(io, peer, router, &hub, viewer_timeout, shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => connection(tcp, peer, router, &hub, viewer_timeout, shutdown).await,
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

async fn connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    hub: &Hub,
    viewer_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Arc::new(ConnWatch::default());
    let w = watch.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        req.extensions_mut().insert(w.clone());
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service);
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
                conn.as_mut().graceful_shutdown();
                closing_at = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = tick.tick() => {
                if watch.stalled(viewer_timeout) {
                    hub.metrics.viewers_dropped_stalled.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, timeout_s = viewer_timeout.as_secs_f64(), "dropping a viewer whose socket took nothing");
                    return;
                }
                if closing_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    return;
                }
            }
        }
    }
}
