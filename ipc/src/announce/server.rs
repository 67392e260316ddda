//! The announce server, run by `capture-svc`.
//!
//! One shared record holds the newest frame announcement and the current camera state; a
//! `watch` channel wakes every subscriber task when it changes. Each task sends what is new
//! since it last wrote, so a subscriber that reads slowly skips sequence numbers and one that
//! reads nothing costs one task and one socket until its write times out: the server never
//! queues per subscriber.
//!
//! Who gets in: every name in [`ServerConfig::reserved`] (the consumers, `motion-svc` and
//! `web-svc`) has a place of its own outside the shared pool of
//! [`ServerConfig::max_subscribers`], and a new connection under that name takes it over from
//! the previous holder (a restarted consumer's old connection is stale). So no number of other
//! local peers can keep a consumer out. Only a peer running as root, as the server's user or
//! with the server's group as its own may hold a reserved place; another member of the
//! socket's group giving a consumer's name is served from the pool. Connections that have not yet said who they are wait
//! in a queue of [`ServerConfig::max_handshakes`]; past it the oldest is dropped, so silent
//! connections cannot keep a consumer from saying its name either. A refused connection is
//! told why ([`Message::Refused`]) before it is closed, and every log line a peer can trigger
//! goes through a [`LogThrottle`]: one line per [`ServerConfig::log_interval`] with a count,
//! while the counters in [`ServerStats`] stay exact. Log lines name the peer's uid and pid
//! (`SO_PEERCRED`), which the kernel vouches for, unlike the name the peer gives.

use std::collections::VecDeque;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::proto::{
    CameraState, FrameAnnounce, Heartbeat, Hello, Message, MessageReader, PROTOCOL_VERSION,
    ProtoError, Refused, write_message,
};
use super::{MOTION_SVC, WEB_SVC};
use crate::region::FrameMeta;
use crate::service::monotonic_ns;
use crate::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};

/// The largest `Subscribe` message a server reads; anything longer is garbage.
const MAX_SUBSCRIBE_LEN: usize = 1024;
/// How often, with no frames, subscribers get a heartbeat.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);
/// The socket file's mode, set explicitly whatever the umask: owner and group may connect
/// (connecting needs write permission), others may not. capture-svc's group is the consumers'.
pub const SOCKET_MODE: u32 = 0o660;
/// How long a refusal may take to write; past it the connection is closed without it (a
/// subscriber that reads nothing does not hold a task any longer than that).
const REFUSAL_TIMEOUT: Duration = Duration::from_millis(100);
/// Connections the kernel queues before `accept`.
const LISTEN_BACKLOG: i32 = 64;

/// Bounds of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Subscribers served at once from the shared pool: every name not in
    /// [`ServerConfig::reserved`]. More are refused with a [`Message::Refused`].
    pub max_subscribers: usize,
    /// A subscriber whose socket takes nothing for this long is disconnected; also the time a
    /// new connection has to send its `Subscribe`.
    pub idle_timeout: Duration,
    /// Names with a place of their own, outside the shared pool: one connection each, the
    /// newest wins. The default is the two consumers, [`MOTION_SVC`] and [`WEB_SVC`].
    pub reserved: Vec<String>,
    /// Connections that have not sent their `Subscribe` yet; past this the oldest is closed
    /// (at least 1).
    pub max_handshakes: usize,
    /// Every log line a peer can trigger (refusals, protocol errors, idle subscribers, places
    /// taken over) is let through once per this interval, with a count of the rest.
    pub log_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_subscribers: 16,
            idle_timeout: Duration::from_secs(5),
            reserved: vec![MOTION_SVC.to_owned(), WEB_SVC.to_owned()],
            max_handshakes: 16,
            log_interval: OUTSIDER_LOG_INTERVAL,
        }
    }
}

/// Counters of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Subscribers connected now, in the shared pool and in reserved places.
    pub subscribers: usize,
    /// Connections accepted that have not said who they are yet.
    pub handshaking: usize,
    /// Subscribers refused because [`ServerConfig::max_subscribers`] were connected.
    pub refused_full: u64,
    /// Subscribers dropped for taking nothing for [`ServerConfig::idle_timeout`].
    pub dropped_idle: u64,
    /// Connections closed for a protocol violation (a wrong version included).
    pub protocol_errors: u64,
    /// Reserved places taken over by a newer connection under the same name.
    pub replaced: u64,
    /// Connections closed before their `Subscribe` because
    /// [`ServerConfig::max_handshakes`] newer ones were waiting.
    pub dropped_handshakes: u64,
}

#[derive(Debug)]
struct Latest {
    hello: Hello,
    frame: Option<FrameAnnounce>,
    last_frame_at: Instant,
    state_version: u64,
}

#[derive(Debug)]
struct Shared {
    config: ServerConfig,
    /// Who may hold a reserved place, besides root.
    ids: Ids,
    // A std Mutex: it is held only to copy a few fields, never across an await.
    latest: Mutex<Latest>,
    wake: watch::Sender<u64>,
    // A std Mutex too: held for a few pointer moves, never across an await.
    places: Mutex<Places>,
    refused_full: AtomicU64,
    dropped_idle: AtomicU64,
    protocol_errors: AtomicU64,
    replaced: AtomicU64,
    dropped_handshakes: AtomicU64,
    logs: Logs,
}

impl Shared {
    fn places(&self) -> MutexGuard<'_, Places> {
        // Every change to `Places` is a few moves that cannot panic half-way.
        self.places.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One throttle per kind of line a peer can trigger.
#[derive(Debug)]
struct Logs {
    refused: LogThrottle,
    untrusted: LogThrottle,
    protocol: LogThrottle,
    idle: LogThrottle,
    replaced: LogThrottle,
    crowded: LogThrottle,
    accept: LogThrottle,
}

impl Logs {
    fn new(interval: Duration) -> Logs {
        Logs {
            refused: LogThrottle::new(interval),
            untrusted: LogThrottle::new(interval),
            protocol: LogThrottle::new(interval),
            idle: LogThrottle::new(interval),
            replaced: LogThrottle::new(interval),
            crowded: LogThrottle::new(interval),
            accept: LogThrottle::new(interval),
        }
    }

    /// Sums up, one line each, what was held back and is due at `now`.
    fn flush_at(&self, now: Instant) {
        if let Some(n) = self.refused.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more subscribers refused: announce socket full"
            );
        }
        if let Some(n) = self.untrusted.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more subscribers gave a consumer's name without running as one"
            );
        }
        if let Some(n) = self.protocol.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more announce connections closed after a protocol error"
            );
        }
        if let Some(n) = self.idle.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more subscribers disconnected for taking nothing"
            );
        }
        if let Some(n) = self.replaced.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more reserved announce places taken over by a newer connection"
            );
        }
        if let Some(n) = self.crowded.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more announce connections closed before subscribing: too many waiting"
            );
        }
        if let Some(n) = self.accept.flush_at(now) {
            tracing::warn!(count = n, "{n} more accepts on the announce socket failed");
        }
    }
}

/// The cheap, cloneable side of the server that the capture loop uses.
#[derive(Debug, Clone)]
pub struct AnnounceHandle {
    shared: Arc<Shared>,
}

impl AnnounceHandle {
    /// Announces a committed frame. Subscribers get the newest one; older ones are skipped.
    pub fn frame(&self, meta: &FrameMeta) {
        {
            let mut latest = self.shared.latest.lock().expect("announce state poisoned");
            latest.frame = Some(FrameAnnounce {
                seq: meta.seq,
                slot: meta.slot,
                len: meta.len as u32,
                mono_ns: meta.mono_ns,
                wall_ns: meta.wall_ns,
            });
            latest.last_frame_at = Instant::now();
            if latest.hello.width != meta.width || latest.hello.height != meta.height {
                latest.hello.width = meta.width;
                latest.hello.height = meta.height;
            }
        }
        self.shared.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Announces a camera state. Every subscriber is sent the newest state it has not seen.
    pub fn state(&self, state: CameraState) {
        {
            let mut latest = self.shared.latest.lock().expect("announce state poisoned");
            if latest.hello.state == state {
                return;
            }
            latest.hello.state = state;
            latest.state_version += 1;
        }
        self.shared.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Changes the hello that new subscribers get (geometry, generation, source).
    pub fn update_hello(&self, f: impl FnOnce(&mut Hello)) {
        let mut latest = self.shared.latest.lock().expect("announce state poisoned");
        f(&mut latest.hello);
    }

    /// The camera state last announced.
    pub fn current_state(&self) -> CameraState {
        self.shared
            .latest
            .lock()
            .expect("announce state poisoned")
            .hello
            .state
            .clone()
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        let shared = &self.shared;
        let (subscribers, handshaking) = {
            let places = shared.places();
            let reserved = places.reserved.iter().filter(|r| r.holder.is_some());
            (places.pool + reserved.count(), places.handshaking.len())
        };
        ServerStats {
            subscribers,
            handshaking,
            refused_full: shared.refused_full.load(Ordering::Relaxed),
            dropped_idle: shared.dropped_idle.load(Ordering::Relaxed),
            protocol_errors: shared.protocol_errors.load(Ordering::Relaxed),
            replaced: shared.replaced.load(Ordering::Relaxed),
            dropped_handshakes: shared.dropped_handshakes.load(Ordering::Relaxed),
        }
    }
}

/// A bound announce socket, ready to [`AnnounceServer::run`].
#[derive(Debug)]
pub struct AnnounceServer {
    listener: UnixListener,
    path: PathBuf,
    handle: AnnounceHandle,
}

impl AnnounceServer {
    /// Binds the socket at `path` with mode [`SOCKET_MODE`]. A socket file left by a crashed
    /// server is replaced; one that still answers belongs to a running server and is an error.
    ///
    /// # Errors
    /// `AddrInUse` when another server answers there, else what `bind`, `chmod` or `listen`
    /// say.
    pub fn bind(
        path: &Path,
        hello: Hello,
        config: ServerConfig,
    ) -> std::io::Result<AnnounceServer> {
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "{} is served by another running capture-svc; stop it or use another --runtime-dir",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::from_std(listen_at(path)?)?;
        let (wake, _) = watch::channel(0);
        let reserved = config
            .reserved
            .iter()
            .map(|name| ReservedPlace {
                name: name.clone(),
                holder: None,
            })
            .collect();
        let shared = Arc::new(Shared {
            ids: Ids::own(),
            logs: Logs::new(config.log_interval),
            config: ServerConfig {
                max_handshakes: config.max_handshakes.max(1),
                ..config
            },
            latest: Mutex::new(Latest {
                hello,
                frame: None,
                last_frame_at: Instant::now(),
                state_version: 0,
            }),
            wake,
            places: Mutex::new(Places {
                next_id: 0,
                handshaking: VecDeque::new(),
                pool: 0,
                reserved,
            }),
            refused_full: AtomicU64::new(0),
            dropped_idle: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            dropped_handshakes: AtomicU64::new(0),
        });
        Ok(AnnounceServer {
            listener,
            path: path.to_owned(),
            handle: AnnounceHandle { shared },
        })
    }

    /// A handle for announcing.
    pub fn handle(&self) -> AnnounceHandle {
        self.handle.clone()
    }

    /// Accepts and serves subscribers until `shutdown` completes, then closes every connection,
    /// waits for their tasks, logs what the throttles held back and removes the socket file.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let AnnounceServer {
            listener,
            path,
            handle,
        } = self;
        let shared = handle.shared;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        // `interval` panics on zero; a throttle of zero lets every line through anyway.
        let mut flush =
            tokio::time::interval(shared.config.log_interval.max(Duration::from_secs(1)));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let peer = Peer::of(&stream);
                        let (place, kick) = Place::handshake(&shared, peer);
                        tasks.spawn(serve(stream, peer, place, kick, Arc::clone(&shared), stop_rx.clone()));
                    }
                    Err(e) => {
                        if let Some(held_back) = shared.logs.accept.check() {
                            tracing::warn!(error = %e, held_back, "accept on the announce socket failed");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = flush.tick() => shared.logs.flush_at(Instant::now()),
            }
        }
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        // Whatever is still held back is said now, due or not: nothing comes after.
        shared
            .logs
            .flush_at(Instant::now() + shared.config.log_interval);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(error = %e, path = %path.display(), "could not remove the announce socket");
        }
    }
}

/// Binds and listens at `path` with mode [`SOCKET_MODE`]. The mode is set between `bind` and
/// `listen`, when nobody can connect yet: no connection is ever made under the mode the
/// umask gave.
fn listen_at(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    let listening = std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot set mode {SOCKET_MODE:o} on {}: {e}", path.display()),
            )
        })
        .and_then(|()| Ok(socket::listen(&fd, Backlog::new(LISTEN_BACKLOG)?)?));
    if let Err(e) = listening {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(std::os::unix::net::UnixListener::from(fd))
}

/// Who is at the other end, as the kernel says (`SO_PEERCRED`), unlike the name it gives.
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: Option<u32>,
    gid: Option<u32>,
    pid: Option<i32>,
}

impl Peer {
    fn of(stream: &UnixStream) -> Peer {
        match stream.peer_cred() {
            Ok(cred) => Peer {
                uid: Some(cred.uid()),
                gid: Some(cred.gid()),
                pid: cred.pid(),
            },
            Err(_) => Peer {
                uid: None,
                gid: None,
                pid: None,
            },
        }
    }

    /// Whether this peer may hold a reserved place: it runs as root, as the server's user, or
    /// with the server's group as its own (the consumers' units: `Group=mecam`, like
    /// capture-svc's). Another user who is merely a member of the socket's group can connect,
    /// but only to the shared pool, so it cannot take a consumer's place.
    fn may_reserve(&self, server: Ids) -> bool {
        self.uid == Some(0) || self.uid == Some(server.uid) || self.gid == Some(server.gid)
    }
}

/// The server's own effective uid and gid.
#[derive(Debug, Clone, Copy)]
struct Ids {
    uid: u32,
    gid: u32,
}

impl Ids {
    fn own() -> Ids {
        Ids {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.uid {
            Some(uid) => write!(f, "uid {uid}")?,
            None => f.write_str("uid unknown")?,
        }
        match self.pid {
            Some(pid) => write!(f, " pid {pid}"),
            None => f.write_str(" pid unknown"),
        }
    }
}

/// Why a connection is closed from outside its own task.
#[derive(Debug)]
enum Kick {
    /// [`ServerConfig::max_handshakes`] newer connections are waiting to subscribe.
    Crowded,
    /// A newer connection under the same reserved name took the place; from this peer.
    Replaced(Peer),
}

/// Every connection's place. Bounded: at most `max_handshakes` waiting, `max_subscribers` in
/// the pool, one per reserved name.
#[derive(Debug)]
struct Places {
    next_id: u64,
    /// Oldest first, each with the way to close it.
    handshaking: VecDeque<Waiting>,
    pool: usize,
    reserved: Vec<ReservedPlace>,
}

/// A connection that has not said who it is yet.
#[derive(Debug)]
struct Waiting {
    id: u64,
    /// Its peer [`Peer::may_reserve`]: dropped only when no stranger is left to drop.
    trusted: bool,
    kick: oneshot::Sender<Kick>,
}

#[derive(Debug)]
struct ReservedPlace {
    name: String,
    holder: Option<Holder>,
}

#[derive(Debug)]
struct Holder {
    id: u64,
    peer: Peer,
    kick: oneshot::Sender<Kick>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Handshake,
    Pool,
    Reserved(usize),
    /// Refused or kicked: holds nothing.
    Nothing,
}

/// What taking a subscriber's place gave.
enum Taken {
    /// A place in the pool; `not_trusted`: the name is reserved, but not for this peer.
    Pool { not_trusted: bool },
    /// A reserved place; the peer of the connection it was taken from, if any.
    Reserved(Option<Peer>),
}

/// Why a subscriber got no place.
enum NoPlace {
    Full,
    /// Kicked from the handshake queue just before; the kick is in its receiver.
    Crowded,
}

/// A connection's place, given back on drop: however its task ends (returns, panics, is
/// aborted), the place is freed.
struct Place {
    shared: Arc<Shared>,
    id: u64,
    kind: Kind,
    /// A pool subscriber keeps its own kick sender, so its receiver never fires.
    _kick: Option<oneshot::Sender<Kick>>,
}

impl Place {
    /// A place among the connections that have not said who they are; when
    /// [`ServerConfig::max_handshakes`] are already waiting one is kicked (counted): the oldest
    /// from a peer that may not hold a reserved place, else the oldest. So strangers flooding
    /// the socket cannot push a consumer's handshake out.
    fn handshake(shared: &Arc<Shared>, peer: Peer) -> (Place, oneshot::Receiver<Kick>) {
        let (tx, rx) = oneshot::channel();
        let mut places = shared.places();
        let id = places.next_id;
        places.next_id += 1;
        while places.handshaking.len() >= shared.config.max_handshakes {
            let victim = places.handshaking.iter().position(|w| !w.trusted);
            let Some(oldest) = places.handshaking.remove(victim.unwrap_or(0)) else {
                break;
            };
            shared.dropped_handshakes.fetch_add(1, Ordering::Relaxed);
            let _ = oldest.kick.send(Kick::Crowded);
        }
        places.handshaking.push_back(Waiting {
            id,
            trusted: peer.may_reserve(shared.ids),
            kick: tx,
        });
        let place = Place {
            shared: Arc::clone(shared),
            id,
            kind: Kind::Handshake,
            _kick: None,
        };
        (place, rx)
    }

    /// Moves a handshaking connection to a subscriber's place: its reserved one if `name` is
    /// reserved (taking it over from any holder, who is kicked), else one from the pool.
    fn subscribe(&mut self, name: &str, peer: Peer) -> Result<Taken, NoPlace> {
        let shared = Arc::clone(&self.shared);
        let mut places = shared.places();
        let Some(at) = places.handshaking.iter().position(|w| w.id == self.id) else {
            self.kind = Kind::Nothing;
            return Err(NoPlace::Crowded);
        };
        let kick = places
            .handshaking
            .remove(at)
            .expect("index from position")
            .kick;
        let reserved = places.reserved.iter().position(|r| r.name == name);
        if let Some(i) = reserved.filter(|_| peer.may_reserve(shared.ids)) {
            let holder = Holder {
                id: self.id,
                peer,
                kick,
            };
            let old = places.reserved[i].holder.replace(holder);
            self.kind = Kind::Reserved(i);
            let replaced = old.map(|old| {
                let _ = old.kick.send(Kick::Replaced(peer));
                old.peer
            });
            return Ok(Taken::Reserved(replaced));
        }
        if places.pool < shared.config.max_subscribers {
            places.pool += 1;
            self.kind = Kind::Pool;
            self._kick = Some(kick);
            Ok(Taken::Pool {
                not_trusted: reserved.is_some(),
            })
        } else {
            self.kind = Kind::Nothing;
            Err(NoPlace::Full)
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut places = self.shared.places();
        match self.kind {
            Kind::Handshake => {
                if let Some(at) = places.handshaking.iter().position(|w| w.id == self.id) {
                    places.handshaking.remove(at);
                }
            }
            Kind::Pool => places.pool -= 1,
            Kind::Reserved(i) => {
                let place = &mut places.reserved[i];
                if place.holder.as_ref().is_some_and(|h| h.id == self.id) {
                    place.holder = None;
                }
            }
            Kind::Nothing => {}
        }
    }
}

/// Why a subscriber's connection ended.
enum End {
    Gone,
    Idle,
    Protocol(String),
    Replaced(Peer),
    Stopped,
}

/// One connection and what its task needs to serve it.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    reader: MessageReader,
    scratch: Vec<u8>,
    peer: Peer,
    /// Fires when the place is taken from this connection.
    kick: oneshot::Receiver<Kick>,
    /// Changes when the server stops.
    stop: watch::Receiver<bool>,
}

async fn serve(
    stream: UnixStream,
    peer: Peer,
    place: Place,
    kick: oneshot::Receiver<Kick>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let (rd, wr) = stream.into_split();
    let mut c = Conn {
        rd,
        wr,
        reader: MessageReader::with_limit(MAX_SUBSCRIBE_LEN),
        scratch: Vec::with_capacity(256),
        peer,
        kick,
        stop,
    };
    let first = tokio::select! {
        first = tokio::time::timeout(config.idle_timeout, c.reader.read(&mut c.rd)) => first,
        _ = &mut c.kick => {
            // Counted when kicked.
            return crowded(&shared, &mut c).await;
        }
        _ = c.stop.changed() => return,
    };
    let why = match first {
        Ok(Ok(Message::Subscribe(s))) if s.protocol_version == PROTOCOL_VERSION => {
            return subscribed(&shared, s.name, place, c).await;
        }
        // Version 1 has no `Refused`; its clients read this hello's version and say so.
        Ok(Ok(Message::Subscribe(s))) if s.protocol_version < 2 => {
            let hello = shared
                .latest
                .lock()
                .expect("announce state poisoned")
                .hello
                .clone();
            let why = format!(
                "{:?} speaks announce protocol {}, this server {PROTOCOL_VERSION}",
                s.name, s.protocol_version
            );
            let _ = tokio::time::timeout(
                REFUSAL_TIMEOUT,
                write_message(&mut c.wr, &Message::Hello(hello), &mut c.scratch),
            )
            .await;
            return protocol_error(&shared, peer, &why);
        }
        // The name is the peer's: quoted wherever it goes, so it cannot forge a log line.
        Ok(Ok(Message::Subscribe(s))) => format!(
            "{:?} speaks announce protocol {}, this capture-svc {PROTOCOL_VERSION}; run matching versions",
            s.name, s.protocol_version
        ),
        Ok(Ok(other)) => format!("expected Subscribe, got {}", message_kind(&other)),
        Ok(Err(ProtoError::Closed)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no Subscribe within {:?}", config.idle_timeout),
    };
    refuse(&mut c, why.clone()).await;
    protocol_error(&shared, peer, &why);
}

/// Serves a connection that subscribed as `name`, once it has a place.
async fn subscribed(shared: &Arc<Shared>, name: String, mut place: Place, mut c: Conn) {
    let config = &shared.config;
    let peer = c.peer;
    match place.subscribe(&name, peer) {
        Ok(Taken::Pool { not_trusted: false } | Taken::Reserved(None)) => {}
        Ok(Taken::Pool { not_trusted: true }) => {
            if let Some(held_back) = shared.logs.untrusted.check() {
                let ids = shared.ids;
                tracing::warn!(subscriber = ?name, %peer, held_back, "a subscriber gave a consumer's name but runs neither as this capture-svc's user (uid {}) nor with its group (gid {}) as its own: served from the shared pool, not the reserved place", ids.uid, ids.gid);
            }
        }
        Ok(Taken::Reserved(Some(old))) => {
            shared.replaced.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = shared.logs.replaced.check() {
                tracing::warn!(subscriber = ?name, new = %peer, old = %old, held_back, "a new connection took over the reserved announce place of {name}; the old one is closed (a restarted consumer, or two running at once)");
            }
        }
        Err(NoPlace::Full) => {
            shared.refused_full.fetch_add(1, Ordering::Relaxed);
            let max = config.max_subscribers;
            if let Some(held_back) = shared.logs.refused.check() {
                tracing::warn!(subscriber = ?name, peer = %peer, max, held_back, "announce socket full: refused a subscriber (the consumers have reserved places; raise max_subscribers in [capture] for more others)");
            }
            let why = format!(
                "the announce socket is full ({max} subscribers besides the consumers); try again later, or raise max_subscribers in [capture]"
            );
            return refuse(&mut c, why).await;
        }
        Err(NoPlace::Crowded) => return crowded(shared, &mut c).await,
    }
    tracing::debug!(subscriber = ?name, %peer, "subscriber connected");
    let mut wake = shared.wake.subscribe();
    let (hello, mut sent_state, mut sent_seq) = {
        let latest = shared.latest.lock().expect("announce state poisoned");
        (
            latest.hello.clone(),
            latest.state_version,
            latest.frame.map_or(0, |f| f.seq),
        )
    };
    let mut end = send(
        &mut c.wr,
        &Message::Hello(hello),
        &mut c.scratch,
        config.idle_timeout,
    )
    .await;
    let mut heartbeat = tokio::time::interval(HEARTBEAT_PERIOD);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while end.is_none() {
        let mut outgoing: [Option<Message>; 2] = [None, None];
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() { end = Some(End::Stopped); break; }
                let latest = shared.latest.lock().expect("announce state poisoned");
                if latest.state_version != sent_state {
                    sent_state = latest.state_version;
                    outgoing[0] = Some(Message::CameraState(latest.hello.state.clone()));
                }
                if let Some(frame) = latest.frame.filter(|f| f.seq != sent_seq) {
                    sent_seq = frame.seq;
                    outgoing[1] = Some(Message::Frame(frame));
                }
            }
            _ = heartbeat.tick() => {
                let latest = shared.latest.lock().expect("announce state poisoned");
                if latest.last_frame_at.elapsed() >= HEARTBEAT_PERIOD {
                    outgoing[0] = Some(Message::Heartbeat(Heartbeat {
                        mono_ns: monotonic_ns(),
                        last_seq: latest.frame.map_or(0, |f| f.seq),
                    }));
                }
            }
            got = c.reader.read(&mut c.rd) => {
                end = Some(match got {
                    Err(ProtoError::Closed) | Err(ProtoError::Io(_)) => End::Gone,
                    Ok(m) => End::Protocol(format!("unexpected {} from a subscriber", message_kind(&m))),
                    Err(e) => End::Protocol(e.to_string()),
                });
            }
            // Only a reserved place's holder can be kicked; the pool's keep their sender.
            kicked = &mut c.kick => end = Some(match kicked {
                Ok(Kick::Replaced(by)) => End::Replaced(by),
                Ok(Kick::Crowded) | Err(_) => End::Stopped,
            }),
            _ = c.stop.changed() => end = Some(End::Stopped),
        }
        for message in outgoing.into_iter().flatten() {
            end = send(&mut c.wr, &message, &mut c.scratch, config.idle_timeout).await;
            if end.is_some() {
                break;
            }
        }
    }
    // The place is given back before the (bounded) refusal write.
    drop(place);
    match end {
        Some(End::Idle) => {
            shared.dropped_idle.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = shared.logs.idle.check() {
                tracing::warn!(subscriber = ?name, %peer, timeout = ?config.idle_timeout, held_back, "subscriber took nothing for the idle timeout, disconnected");
            }
        }
        Some(End::Protocol(why)) => {
            refuse(&mut c, why.clone()).await;
            protocol_error(shared, peer, &format!("{name:?}: {why}"));
        }
        Some(End::Replaced(by)) => {
            let why = format!(
                "replaced by a newer connection under the name {name} ({by}); is a second {name} running?"
            );
            refuse(&mut c, why).await;
        }
        Some(End::Gone) => tracing::debug!(subscriber = ?name, "subscriber disconnected"),
        Some(End::Stopped) | None => {}
    }
}

/// Closes a connection kicked from the handshake queue (counted when kicked).
async fn crowded(shared: &Shared, c: &mut Conn) {
    let max = shared.config.max_handshakes;
    if let Some(held_back) = shared.logs.crowded.check() {
        tracing::warn!(peer = %c.peer, max, held_back, "closed an announce connection before its Subscribe: {max} newer ones are waiting");
    }
    let why = format!("{max} newer connections are waiting to subscribe; try again");
    refuse(c, why).await;
}

/// Tells the peer why it is being closed, if it takes the message within
/// [`REFUSAL_TIMEOUT`].
async fn refuse(c: &mut Conn, reason: String) {
    let message = Message::Refused(Refused {
        protocol_version: PROTOCOL_VERSION,
        reason,
    });
    let write = write_message(&mut c.wr, &message, &mut c.scratch);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, write).await;
}

/// Writes one message, giving up after `timeout`: a subscriber that takes nothing is idle.
/// `None` when it was sent, else why the connection ends.
async fn send(
    wr: &mut OwnedWriteHalf,
    message: &Message,
    scratch: &mut Vec<u8>,
    timeout: Duration,
) -> Option<End> {
    match tokio::time::timeout(timeout, write_message(wr, message, scratch)).await {
        Ok(Ok(())) => None,
        // Nothing was written: the message itself cannot be encoded (over the size limit).
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => Some(End::Protocol(format!(
            "cannot send {}: {e}",
            message_kind(message)
        ))),
        Ok(Err(_)) => Some(End::Gone),
        Err(_) => Some(End::Idle),
    }
}

fn message_kind(message: &Message) -> &'static str {
    match message {
        Message::Subscribe(_) => "a subscribe",
        Message::Hello(_) => "the hello",
        Message::Frame(_) => "a frame announcement",
        Message::CameraState(_) => "a camera state",
        Message::Heartbeat(_) => "a heartbeat",
        Message::Refused(_) => "a refusal",
    }
}

fn protocol_error(shared: &Shared, peer: Peer, why: &str) {
    shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
    if let Some(held_back) = shared.logs.protocol.check() {
        tracing::warn!(
            reason = why,
            %peer,
            held_back,
            "closing an announce connection after a protocol error"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::MOTION_SVC;

    fn server(dir: &Path) -> AnnounceServer {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            generation: 1,
            region_path: dir.join("frames"),
            slot_count: 3,
            slot_capacity: 1024,
            width: 0,
            height: 0,
            nominal_fps: 1.0,
            source: "test".into(),
            state: CameraState::Starting,
        };
        AnnounceServer::bind(&dir.join("capture.sock"), hello, ServerConfig::default()).unwrap()
    }

    fn nobody() -> Peer {
        Peer {
            uid: None,
            gid: None,
            pid: None,
        }
    }

    /// A peer running as this process does.
    fn us() -> Peer {
        let ids = Ids::own();
        Peer {
            uid: Some(ids.uid),
            gid: Some(ids.gid),
            pid: Some(std::process::id() as i32),
        }
    }

    #[tokio::test]
    async fn a_panicking_subscriber_task_gives_its_place_back() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        let handle = server.handle();
        let (mut slot, _kick) = Place::handshake(&handle.shared, nobody());
        let (mut held, _kick2) = Place::handshake(&handle.shared, us());
        assert_eq!(handle.stats().handshaking, 2);
        assert!(matches!(
            slot.subscribe("a", nobody()),
            Ok(Taken::Pool { not_trusted: false })
        ));
        assert!(matches!(
            held.subscribe(WEB_SVC, us()),
            Ok(Taken::Reserved(None))
        ));
        assert_eq!(
            (handle.stats().subscribers, handle.stats().handshaking),
            (2, 0)
        );
        let task = tokio::spawn(async move {
            let _slot = slot;
            panic!("a subscriber task fails");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(
            handle.stats().subscribers,
            1,
            "the panicked task's place is free"
        );
        drop(held);
        assert_eq!(handle.stats().subscribers, 0);
    }

    #[tokio::test]
    async fn only_the_servers_user_group_or_root_may_hold_a_reserved_place() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        let handle = server.handle();
        let own = Ids::own();
        // Some other user who can connect (a member of the socket's group, say).
        let stranger = Peer {
            uid: Some(own.uid.wrapping_add(4242).max(1)),
            gid: Some(own.gid.wrapping_add(4242)),
            pid: Some(1),
        };
        let (mut holder, mut holder_kick) = Place::handshake(&handle.shared, us());
        assert!(matches!(
            holder.subscribe(WEB_SVC, us()),
            Ok(Taken::Reserved(None))
        ));
        let (mut impostor, _kick) = Place::handshake(&handle.shared, us());
        assert!(matches!(
            impostor.subscribe(WEB_SVC, stranger),
            Ok(Taken::Pool { not_trusted: true })
        ));
        assert!(
            holder_kick.try_recv().is_err(),
            "the consumer keeps its place"
        );
        let (mut unknown, _kick) = Place::handshake(&handle.shared, us());
        assert!(matches!(
            unknown.subscribe(MOTION_SVC, nobody()),
            Ok(Taken::Pool { not_trusted: true })
        ));
        // Root, the server's user, or its group: any of them.
        for peer in [
            Peer {
                uid: Some(0),
                ..stranger
            },
            Peer {
                uid: Some(own.uid),
                ..stranger
            },
            Peer {
                gid: Some(own.gid),
                ..stranger
            },
        ] {
            assert!(peer.may_reserve(own), "{peer}");
        }
        assert!(!stranger.may_reserve(own));
    }

    #[tokio::test]
    async fn a_flood_of_strangers_never_pushes_a_consumers_handshake_out() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        let handle = server.handle();
        let max = handle.shared.config.max_handshakes;
        let mut strangers = Vec::new();
        for _ in 0..max - 1 {
            strangers.push(Place::handshake(&handle.shared, nobody()));
        }
        let (mut consumer, mut consumer_kick) = Place::handshake(&handle.shared, us());
        for _ in 0..10 * max {
            strangers.push(Place::handshake(&handle.shared, nobody()));
        }
        assert_eq!(handle.stats().handshaking, max);
        assert_eq!(handle.stats().dropped_handshakes, 10 * max as u64);
        assert!(
            consumer_kick.try_recv().is_err(),
            "the consumer still waits"
        );
        assert!(matches!(
            consumer.subscribe(WEB_SVC, us()),
            Ok(Taken::Reserved(None))
        ));
        // With only trusted ones waiting, the oldest goes.
        let (_a, mut a_kick) = Place::handshake(&handle.shared, us());
        drop(strangers);
        let trusted: Vec<_> = (0..max)
            .map(|_| Place::handshake(&handle.shared, us()))
            .collect();
        assert!(matches!(a_kick.try_recv(), Ok(Kick::Crowded)));
        assert_eq!(handle.stats().handshaking, max);
        drop(trusted);
    }

    #[tokio::test]
    async fn a_replaced_holder_leaving_does_not_free_its_successors_place() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        let handle = server.handle();
        let (mut old, mut old_kick) = Place::handshake(&handle.shared, us());
        assert!(old.subscribe(WEB_SVC, us()).is_ok());
        let (mut new, _kick) = Place::handshake(&handle.shared, us());
        assert!(matches!(
            new.subscribe(WEB_SVC, us()),
            Ok(Taken::Reserved(Some(_)))
        ));
        assert!(matches!(old_kick.try_recv(), Ok(Kick::Replaced(_))));
        drop(old);
        assert_eq!(handle.stats().subscribers, 1, "the new holder keeps it");
        drop(new);
        assert_eq!(handle.stats().subscribers, 0);
    }

    #[tokio::test]
    async fn a_message_too_large_to_encode_closes_the_connection_not_the_server() {
        use super::super::proto::{Subscribe, encode};
        use tokio::io::AsyncWriteExt as _;
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        let handle = server.handle();
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let run = tokio::spawn(server.run(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        let mut s = UnixStream::connect(dir.path().join("capture.sock"))
            .await
            .unwrap();
        let mut out = Vec::new();
        encode(
            &Message::Subscribe(Subscribe {
                protocol_version: PROTOCOL_VERSION,
                name: "big".into(),
            }),
            &mut out,
        )
        .unwrap();
        s.write_all(&out).await.unwrap();
        let mut reader = MessageReader::new();
        assert!(matches!(reader.read(&mut s).await, Ok(Message::Hello(_))));
        handle.state(CameraState::Failed {
            reason: "x".repeat(super::super::MAX_MESSAGE_LEN),
        });
        let why = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut s)).await;
        assert!(
            matches!(&why, Ok(Ok(Message::Refused(r))) if r.reason.contains("cannot send a camera state")),
            "{why:?}"
        );
        let end = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut s)).await;
        assert!(matches!(end, Ok(Err(ProtoError::Closed))), "{end:?}");
        assert_eq!(handle.stats().protocol_errors, 1);
        // The task gives its place back just after the socket closes.
        for _ in 0..500 {
            if handle.stats().subscribers == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(handle.stats().subscribers, 0);
        let _ = stop_tx.send(true);
        run.await.unwrap();
    }
}
