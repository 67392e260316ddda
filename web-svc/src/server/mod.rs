//! The accept loop: bounded connections (in all, and per client address, with a connection
//! that waits on its client evicted to make room for a newcomer), optional TLS, HTTP/1.1 with a
//! tight head-read timeout and header limits, the per-connection watchdog (a stalled viewer, a
//! request body that never comes, an answer nobody reads), and graceful shutdown that never
//! waits on a viewer.
//!
//! Slow clients: a connection *waits on its client* while no request of it is being served (it
//! is in its TLS handshake, waiting for or trickling a request head, or an idle keep-alive), or
//! while its request's handler waits for more of the body. A client address (an IPv6 client's
//! /64) holds at most `max_connections_per_client`; past it, its own connection that has waited
//! longest is closed for the newcomer. At `max_connections`, the one that has waited longest
//! of the address holding the most connections is closed for the newcomer (see
//! `Table::victim`). Only when none waits on its client (streams, downloads, handlers at work,
//! each under its own time limit) is the newcomer refused. So a flood of slow connections,
//! from one address or many, never shuts out a new client.

mod connection;
mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fanout::Hub;
use connection::{Conn, connection};
use table::{Admitted, Connections, Refusal};

pub use table::client_key;

/// Largest request head (request line plus headers) in bytes; more gets an error.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long shutdown waits for requests in flight (streams end at once, and so does any
/// connection whose socket is full).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often each connection checks whether its stream is stalled.
pub const WATCH_PERIOD: Duration = Duration::from_millis(250);
/// Evicted connections still closing (each closes at its task's next turn); while this many
/// are, the accept loop waits for one to close (newcomers wait in the listen queue), so open
/// sockets stay under `max_connections` plus this.
pub const MAX_CLOSING: usize = 64;

// Every line below can be triggered by a network client: one line per interval, then a count.
static ACCEPT_FAILED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static REFUSED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static EVICTED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static TLS_FAILED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static CONN_ERROR: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static TIMED_OUT: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static STALLED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static DEAF: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static FULL_AT_SHUTDOWN: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// The throttled lines of this module and what each counts, for the periodic summary.
static THROTTLED: [(&LogThrottle, &str); 9] = [
    (&ACCEPT_FAILED, "accept failures"),
    (&REFUSED, "connections refused"),
    (&EVICTED, "idle connections evicted"),
    (&TLS_FAILED, "failed TLS handshakes"),
    (&CONN_ERROR, "connections ended with an error"),
    (&TIMED_OUT, "requests timed out"),
    (&STALLED, "stalled viewers dropped"),
    (&DEAF, "clients reading nothing dropped"),
    (&FULL_AT_SHUTDOWN, "full sockets closed at shutdown"),
];

/// Logs one summary line per throttled kind that held lines back (called every interval).
fn flush_throttled() {
    for (t, what) in &THROTTLED {
        if let Some(n) = t.flush() {
            tracing::info!(
                held_back = n,
                "{n} more {what} not logged in the last interval"
            );
        }
    }
    crate::events::flush_skipped_log();
}

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
    /// Time for a request's body and the start of its answer; an answer (not a stream) whose
    /// socket takes nothing this long is dropped.
    pub request: Duration,
    /// Time for the TLS handshake, and for each request head (counted from when the server
    /// starts waiting for it, so it also ends an idle keep-alive).
    pub head: Duration,
}

/// The connection bounds, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (not counting evicted ones still closing).
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 client's /64).
    pub max_per_client: usize,
}

/// Serves `router` on `listener` until `shutdown` turns true, then waits for the connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    hub: Arc<Hub>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let table = Connections::new(limits, hub.clone());
    let mut tasks = JoinSet::new();
    let mut summary = tokio::time::interval(OUTSIDER_LOG_INTERVAL);
    loop {
        while tasks.try_join_next().is_some() {}
        if !wait_while_closing(&table, &shutdown).await {
            break;
        }
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = summary.tick() => {
                flush_throttled();
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    if let Some(held_back) = ACCEPT_FAILED.check() {
                        tracing::warn!(error = %e, held_back, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = admit(&table, &hub, peer) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (router, hub, tls, shutdown) =
            (router.clone(), hub.clone(), tls.clone(), shutdown.clone());
        tasks.spawn(async move {
            let slot = admitted.slot.clone();
            let conn = Conn {
                peer,
                router,
                hub: &hub,
                slot: &slot,
                timeouts,
                shutdown,
            };
            match tls {
                Some(acceptor) => serve_tls(tcp, acceptor, conn).await,
                None => connection(tcp, conn).await,
            }
            drop(admitted);
        });
    }
    drop(listener);
    drain(tasks).await;
    flush_throttled();
}

/// Backpressure: while [`MAX_CLOSING`] evicted connections have not closed yet (their tasks
/// have not run), newcomers wait in the listen queue rather than being refused. False once
/// `shutdown` turns true.
async fn wait_while_closing(table: &Connections, shutdown: &CancellationToken) -> bool {
    loop {
        let closing = table.lock().closing;
        if closing < MAX_CLOSING {
            return true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = table.closed.notified() => {}
        }
    }
}

/// Admits the newcomer from `peer` into `table` (counting and logging whom it evicted), or
/// counts and logs why it is refused.
fn admit(table: &Arc<Connections>, hub: &Hub, peer: SocketAddr) -> Option<Admitted> {
    match table.admit(peer) {
        Ok((admitted, evicted)) => {
            hub.metrics
                .connections_evicted
                .fetch_add(evicted.len() as u64, Ordering::Relaxed);
            if let Some(victim) = evicted.first()
                && let Some(held_back) = EVICTED.check()
            {
                tracing::info!(%victim, %peer, held_back, "evicted a connection waiting on its client (the longest waiting of the client holding the most) to make room for a new one");
            }
            Some(admitted)
        }
        Err(why) => {
            hub.metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = REFUSED.check() {
                let why = match why {
                    Refusal::Client => {
                        "this client address holds [web] max_connections_per_client, all busy"
                    }
                    Refusal::Full => "[web] max_connections reached, all busy",
                    Refusal::Closing => "too many evicted connections still closing",
                };
                let limits = table.limits;
                tracing::warn!(%peer, held_back, max_connections = limits.max_connections, max_per_client = limits.max_per_client, "refused a connection: {why}");
            }
            None
        }
    }
}

/// The TLS handshake (within the head timeout, given up if the connection is evicted), then
/// the connection.
async fn serve_tls(tcp: TcpStream, acceptor: tokio_rustls::TlsAcceptor, conn: Conn<'_>) {
    let handshake = tokio::time::timeout(conn.timeouts.head, acceptor.accept(tcp));
    let io = tokio::select! {
        r = handshake => r,
        () = conn.slot.evict.notified() => return,
    };
    let peer = conn.peer;
    match io {
        Ok(Ok(io)) => connection(io, conn).await,
        Ok(Err(e)) => {
            if let Some(held_back) = TLS_FAILED.check() {
                tracing::info!(%peer, error = %e, held_back, "TLS handshake failed");
            }
        }
        Err(_) => {
            if let Some(held_back) = TLS_FAILED.check() {
                tracing::info!(%peer, held_back, "TLS handshake timed out");
            }
        }
    }
}

/// Waits for the connections' tasks after the listener closed: those still open after
/// [`SHUTDOWN_GRACE`] and a second are aborted.
async fn drain(mut tasks: JoinSet<()>) {
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
