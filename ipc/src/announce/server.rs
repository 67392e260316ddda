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

mod logs;
mod peer;
mod places;
mod subscriber;
#[cfg(test)]
mod tests;

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::proto::{CameraState, FrameAnnounce, Hello};
use super::{MOTION_SVC, WEB_SVC};
use crate::region::FrameMeta;
use crate::throttle::OUTSIDER_LOG_INTERVAL;
use logs::Logs;
use peer::{Ids, Peer};
use places::{Place, Places};

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
            latest.frame = Some(FrameAnnounce::from(meta));
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
        let (subscribers, handshaking) = shared.places().counts();
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
        let places = Places::new(&config.reserved);
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
            places: Mutex::new(places),
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
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
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
                        tasks.spawn(subscriber::serve(stream, peer, place, kick, Arc::clone(&shared), stop.clone()));
                    }
                    Err(e) => {
                        if let Some(held_back) = shared.logs.accept.check() {
                            tracing::warn!(error = %e, held_back, "accept on the announce socket failed");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = flush.tick() => shared.logs.flush_at(Instant::now()),
            }
        }
        stop.cancel();
        tasks.close();
        tasks.wait().await;
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
