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

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::fanout::Hub;
use crate::routes::ClientAddr;
use crate::stream::ConnWatch;

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

/// The address a per-client bound counts by: an IPv4 address (also when written as an
/// IPv4-mapped IPv6 one), or the /64 of an IPv6 one (one host usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

fn now_ms() -> u64 {
    ipc::service::monotonic_ns() / 1_000_000
}

/// One connection's record in the table, shared with its task and its requests.
#[derive(Debug)]
struct Slot {
    /// Requests being served (head read, answer not yet fully sent); idle at 0.
    in_flight: AtomicUsize,
    /// Monotonic ms since which it has been idle (its accept, or its last answer's end).
    idle_since_ms: AtomicU64,
    /// Monotonic ms since which its request's handler has been waiting for more of the body
    /// from the client; [`NOT_WAITING`] while it is not.
    body_wait_since_ms: AtomicU64,
    /// Told when the connection is evicted: its task closes it.
    evict: Notify,
}

const NOT_WAITING: u64 = u64::MAX;

impl Slot {
    /// Whether the client owes the next move: no request being served (a head to come), or
    /// a request whose body the handler is waiting for. Since when, if so.
    fn waiting_on_client_since(&self) -> Option<u64> {
        // Relaxed: see `Busy::drop`.
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            return Some(self.idle_since_ms.load(Ordering::Relaxed));
        }
        let since = self.body_wait_since_ms.load(Ordering::Relaxed);
        (since != NOT_WAITING).then_some(since)
    }
}

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

/// Marks its connection busy while a request is served: from its head until its answer's
/// body is dropped (sent in full, or the connection ended).
#[derive(Debug)]
struct Busy(Arc<Slot>);

impl Busy {
    fn start(slot: &Arc<Slot>) -> Busy {
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(slot.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Relaxed: the idle state is a hint for choosing whom to evict, read under the table
        // lock; a request that starts just as its connection is evicted is closed with it.
        self.0.idle_since_ms.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Entry {
    peer: SocketAddr,
    key: IpAddr,
    slot: Arc<Slot>,
    /// Evicted and closing: no longer counted against either bound.
    evicted: bool,
}

/// The open connections: at most `max_connections` counted ones plus [`MAX_CLOSING`]
/// evicted ones closing; `per_client` has one entry per client address with a counted one.
#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_client: HashMap<IpAddr, usize>,
    counted: usize,
    closing: usize,
}

impl Table {
    /// The counted connection to evict, among those waiting on their client (see
    /// `Slot::waiting_on_client_since`: a head or a body to come): of `key` if given, the one
    /// waiting longest; otherwise the one waiting longest of the client address holding the
    /// most connections. So a flood spread over many addresses evicts its own connections
    /// first, and a new client (one connection at its address) is evicted only if every
    /// address holds just one and it waited longest: an attacker would need more addresses
    /// (IPv6: /64s) than `max_connections`.
    fn victim(&self, key: Option<IpAddr>) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.evicted && key.is_none_or(|k| e.key == k))
            .filter_map(|(id, e)| Some((*id, e, e.slot.waiting_on_client_since()?)))
            .min_by_key(|(id, e, since)| {
                let held = self.per_client.get(&e.key).copied().unwrap_or(0);
                (std::cmp::Reverse(held), *since, *id)
            })
            .map(|(id, _, _)| id)
    }

    /// Evicts `id`: it stops counting now and its task closes it.
    fn evict(&mut self, id: u64) -> SocketAddr {
        let e = self
            .entries
            .get_mut(&id)
            .expect("evicting a listed connection");
        e.evicted = true;
        e.slot.evict.notify_one();
        let (peer, key) = (e.peer, e.key);
        self.uncount(key);
        self.closing += 1;
        peer
    }

    fn uncount(&mut self, key: IpAddr) {
        self.counted -= 1;
        if let Some(n) = self.per_client.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&key);
            }
        }
    }
}

/// Why a newcomer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Its address holds its limit, none of them waiting on it.
    Client,
    /// Every connection is busy.
    Full,
    /// Too many evicted connections are still closing.
    Closing,
}

/// The connection table with its bounds; [`Connections::admit`] decides for each newcomer.
#[derive(Debug)]
struct Connections {
    limits: Limits,
    table: Mutex<Table>,
    /// Its `connections` gauge is set under the table lock, so it is never stale.
    hub: Arc<Hub>,
    /// Told when an evicted connection has closed (the accept loop waits for one while
    /// [`MAX_CLOSING`] are closing).
    closed: Notify,
}

/// A counted connection; dropping it (its task ends) frees its place.
#[derive(Debug)]
struct Admitted {
    table: Arc<Connections>,
    id: u64,
    slot: Arc<Slot>,
}

impl Connections {
    fn new(limits: Limits, hub: Arc<Hub>) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            table: Mutex::new(Table::default()),
            hub,
            closed: Notify::new(),
        })
    }

    fn publish(&self, t: &Table) {
        self.hub
            .metrics
            .connections
            .store(t.counted, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every update below keeps the table consistent before anything that could panic.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a newcomer from `peer`, evicting an idle connection if a bound is reached (its
    /// own address's oldest first); the evicted peers are returned for the log.
    fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<(Admitted, Vec<SocketAddr>), Refusal> {
        let key = client_key(peer.ip());
        let per_client = self.limits.max_per_client.min(self.limits.max_connections);
        let mut t = self.lock();
        let mut evicted = Vec::new();
        if t.per_client.get(&key).copied().unwrap_or(0) >= per_client {
            if t.closing >= MAX_CLOSING {
                return Err(Refusal::Closing);
            }
            let id = t.victim(Some(key)).ok_or(Refusal::Client)?;
            evicted.push(t.evict(id));
        }
        if t.counted >= self.limits.max_connections {
            if t.closing >= MAX_CLOSING {
                return Err(Refusal::Closing);
            }
            let id = t.victim(None).ok_or(Refusal::Full)?;
            evicted.push(t.evict(id));
        }
        let id = t.next_id;
        t.next_id += 1;
        let slot = Arc::new(Slot {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms()),
            body_wait_since_ms: AtomicU64::new(NOT_WAITING),
            evict: Notify::new(),
        });
        t.entries.insert(
            id,
            Entry {
                peer,
                key,
                slot: slot.clone(),
                evicted: false,
            },
        );
        *t.per_client.entry(key).or_insert(0) += 1;
        t.counted += 1;
        self.publish(&t);
        Ok((
            Admitted {
                table: self.clone(),
                id,
                slot,
            },
            evicted,
        ))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        if let Some(e) = t.entries.remove(&self.id) {
            if e.evicted {
                t.closing -= 1;
                self.table.closed.notify_one();
            } else {
                t.uncount(e.key);
            }
        }
        self.table.publish(&t);
    }
}

/// Serves `router` on `listener` until `shutdown` turns true, then waits for the connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    hub: Arc<Hub>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) {
    let table = Connections::new(limits, hub.clone());
    let mut tasks = JoinSet::new();
    let mut summary = tokio::time::interval(OUTSIDER_LOG_INTERVAL);
    'accept: loop {
        while tasks.try_join_next().is_some() {}
        // Backpressure: while evicted connections have not closed yet (their tasks have not
        // run), newcomers wait in the listen queue rather than being refused.
        loop {
            let closing = table.lock().closing;
            if closing < MAX_CLOSING {
                break;
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break 'accept,
                () = table.closed.notified() => {}
            }
        }
        let (tcp, peer) = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
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
        let admitted = match table.admit(peer) {
            Ok((admitted, evicted)) => {
                hub.metrics
                    .connections_evicted
                    .fetch_add(evicted.len() as u64, Ordering::Relaxed);
                if let Some(victim) = evicted.first()
                    && let Some(held_back) = EVICTED.check()
                {
                    tracing::info!(%victim, %peer, held_back, "evicted a connection waiting on its client (the longest waiting of the client holding the most) to make room for a new one");
                }
                admitted
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
                    tracing::warn!(%peer, held_back, max_connections = limits.max_connections, max_per_client = limits.max_per_client, "refused a connection: {why}");
                }
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (router, hub, tls, shutdown) =
            (router.clone(), hub.clone(), tls.clone(), shutdown.clone());
        tasks.spawn(async move {
            let slot = admitted.slot.clone();
            match tls {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(timeouts.head, acceptor.accept(tcp));
                    let io = tokio::select! {
                        r = handshake => r,
                        () = slot.evict.notified() => return,
                    };
                    match io {
                        Ok(Ok(io)) => {
                            connection(io, peer, router, &hub, &slot, timeouts, shutdown).await;
                        }
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
                None => connection(tcp, peer, router, &hub, &slot, timeouts, shutdown).await,
            }
            drop(admitted);
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
    flush_throttled();
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

async fn connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    hub: &Hub,
    slot: &Arc<Slot>,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Arc::new(ConnWatch::default());
    let (w, s) = (watch.clone(), slot.clone());
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::start(&s);
        let slot = s.clone();
        let mut req = req.map(|body| axum::body::Body::new(ClientBody { body, slot }));
        req.extensions_mut().insert(ClientAddr(peer));
        req.extensions_mut().insert(w.clone());
        let answer = router.clone().oneshot(req);
        // Bounds reading the body and running the handler; a stream's body runs after
        // this, under the viewer timeout. On time-out hyper closes the connection, since
        // the body was not read to its end.
        async move {
            let response = match tokio::time::timeout(timeouts.request, answer).await {
                Ok(Ok(r)) => r,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    if let Some(held_back) = TIMED_OUT.check() {
                        tracing::info!(%peer, timeout_s = timeouts.request.as_secs_f64(), held_back, "request timed out (body or answer too slow); closing its connection");
                    }
                    request_timed_out()
                }
            };
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, _busy: busy }))
        }
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
            _ = shutdown.wait_for(|s| *s), if closing_at.is_none() => {
                if watch.write_blocked_for().is_some() {
                    if let Some(held_back) = FULL_AT_SHUTDOWN.check() {
                        tracing::info!(%peer, held_back, "shutting down: closing a connection whose socket is full");
                    }
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing_at = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = tick.tick() => {
                if watch.stalled(timeouts.viewer) {
                    hub.metrics.viewers_dropped_stalled.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = STALLED.check() {
                        tracing::info!(%peer, timeout_s = timeouts.viewer.as_secs_f64(), held_back, "dropping a viewer whose socket took nothing");
                    }
                    return;
                }
                let blocked = watch.write_blocked_for();
                if !watch.is_streaming() && blocked.is_some_and(|b| b > timeouts.request) {
                    if let Some(held_back) = DEAF.check() {
                        tracing::info!(%peer, timeout_s = timeouts.request.as_secs_f64(), held_back, "dropping a client that reads nothing of its answer");
                    }
                    return;
                }
                if closing_at.is_some() && blocked.is_some() {
                    if let Some(held_back) = FULL_AT_SHUTDOWN.check() {
                        tracing::info!(%peer, held_back, "shutting down: closing a connection whose socket is full");
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_connections: usize, max_per_client: usize) -> Arc<Connections> {
        Connections::new(
            Limits {
                max_connections,
                max_per_client,
            },
            Arc::new(Hub::default()),
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn clients_are_counted_by_ipv4_address_or_ipv6_slash_64() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("192.0.2.7"), k("::ffff:192.0.2.7"), "mapped IPv4 is IPv4");
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(
            k("2001:db8:1:2:aaaa::1"),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn one_ipv6_slash_64_is_one_client_and_its_oldest_idle_connection_goes_first() {
        let t = table(100, 3);
        let mut held = Vec::new();
        for i in 1..=3 {
            let (a, evicted) = t.admit(addr(&format!("[2001:db8::{i}]:1000"))).unwrap();
            assert!(evicted.is_empty());
            held.push(a);
        }
        // A fourth address of the same /64: the oldest of the three makes room.
        let (_d, evicted) = t.admit(addr("[2001:db8::ffff]:1000")).unwrap();
        assert_eq!(evicted, [addr("[2001:db8::1]:1000")]);
        // Another /64 is another client.
        let (_e, evicted) = t.admit(addr("[2001:db8:0:1::1]:1000")).unwrap();
        assert!(evicted.is_empty());
        // Busy ones are never evicted: with the rest busy, the newcomer is refused.
        let _busy: Vec<Busy> = held[1..].iter().map(|a| Busy::start(&a.slot)).collect();
        let (f, evicted) = t.admit(addr("[2001:db8::5]:1000")).unwrap();
        assert_eq!(
            evicted,
            [addr("[2001:db8::ffff]:1000")],
            "the only idle one"
        );
        let _f_busy = Busy::start(&f.slot);
        assert_eq!(
            t.admit(addr("[2001:db8::6]:1000")).unwrap_err(),
            Refusal::Client
        );
    }

    #[test]
    fn at_the_global_bound_the_oldest_idle_of_anyone_goes_and_busy_ones_stay() {
        let t = table(4, 4);
        let held: Vec<Admitted> = (1..=4)
            .map(|i| t.admit(addr(&format!("192.0.2.{i}:1"))).unwrap().0)
            .collect();
        // The first becomes busy, then idle again later than the others: it is the youngest.
        drop(Busy::start(&held[0].slot));
        held[0]
            .slot
            .idle_since_ms
            .store(now_ms() + 1, Ordering::Relaxed);
        let (_n, evicted) = t.admit(addr("192.0.2.9:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.2:1")]);
        let _busy: Vec<Busy> = held.iter().map(|a| Busy::start(&a.slot)).collect();
        let (m, evicted) = t.admit(addr("192.0.2.10:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.9:1")]);
        let _also_busy = Busy::start(&m.slot);
        assert_eq!(t.admit(addr("192.0.2.11:1")).unwrap_err(), Refusal::Full);
        assert_eq!(t.lock().counted, 4);
        assert_eq!(t.hub.metrics.connections.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn at_the_global_bound_the_address_holding_the_most_gives_way_first() {
        let t = table(4, 4);
        let _old = t.admit(addr("192.0.2.1:1")).unwrap();
        let _flood: Vec<Admitted> = (0..3)
            .map(|i| t.admit(addr(&format!("192.0.2.66:{i}"))).unwrap().0)
            .collect();
        // 192.0.2.1 is the oldest, but 192.0.2.66 holds three: its oldest goes.
        let (_n, evicted) = t.admit(addr("192.0.2.2:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.66:0")]);
        let (_m, evicted) = t.admit(addr("192.0.2.3:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.66:1")]);
        // Now every address holds one: the oldest of all goes.
        let (_k, evicted) = t.admit(addr("192.0.2.4:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.1:1")]);
    }

    #[test]
    fn evicted_connections_still_closing_are_bounded() {
        let t = table(1, 1);
        let mut closing = Vec::new();
        let mut refused = 0;
        // Every newcomer evicts the one before, whose task (here) never ends.
        for i in 0..MAX_CLOSING + 10 {
            match t.admit(addr(&format!("192.0.2.1:{}", 1000 + i))) {
                Ok((a, _)) => closing.push(a),
                Err(why) => {
                    assert_eq!(why, Refusal::Closing);
                    refused += 1;
                }
            }
        }
        assert_eq!(t.lock().closing, MAX_CLOSING);
        assert_eq!(refused, 9, "past MAX_CLOSING newcomers are refused");
        // Once they close, a newcomer gets in again.
        let last = closing.pop().unwrap();
        assert!(
            futures_util::FutureExt::now_or_never(t.closed.notified()).is_none(),
            "nothing closed yet"
        );
        drop(closing);
        assert_eq!(t.lock().closing, 0);
        assert!(
            futures_util::FutureExt::now_or_never(t.closed.notified()).is_some(),
            "the accept loop is woken when an evicted one closes"
        );
        drop(last);
        let _again = t.admit(addr("192.0.2.1:2000")).unwrap();
        assert_eq!(t.lock().entries.len(), 1);
    }
}
