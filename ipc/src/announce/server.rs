//! The announce server, run by `capture-svc`.
//!
//! One shared record holds the newest frame announcement and the current camera state; a
//! `watch` channel wakes every subscriber task when it changes. Each task sends what is new
//! since it last wrote, so a subscriber that reads slowly skips sequence numbers and one that
//! reads nothing costs one task and one socket until its write times out: the server never
//! queues per subscriber.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::proto::{
    CameraState, FrameAnnounce, Heartbeat, Hello, Message, MessageReader, PROTOCOL_VERSION,
    ProtoError, write_message,
};
use crate::region::FrameMeta;
use crate::service::monotonic_ns;

/// The largest `Subscribe` message a server reads; anything longer is garbage.
const MAX_SUBSCRIBE_LEN: usize = 1024;
/// How often, with no frames, subscribers get a heartbeat.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// Bounds of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Connections served at once; more are closed at once with a log line.
    pub max_subscribers: usize,
    /// A subscriber whose socket takes nothing for this long is disconnected; also the time a
    /// new connection has to send its `Subscribe`.
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_subscribers: 16,
            idle_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Subscribers connected now.
    pub subscribers: usize,
    /// Connections refused because [`ServerConfig::max_subscribers`] were connected.
    pub refused_full: u64,
    /// Subscribers dropped for taking nothing for [`ServerConfig::idle_timeout`].
    pub dropped_idle: u64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: u64,
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
    // A std Mutex: it is held only to copy a few fields, never across an await.
    latest: Mutex<Latest>,
    wake: watch::Sender<u64>,
    subscribers: AtomicUsize,
    refused_full: AtomicU64,
    dropped_idle: AtomicU64,
    protocol_errors: AtomicU64,
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
        ServerStats {
            subscribers: self.shared.subscribers.load(Ordering::Relaxed),
            refused_full: self.shared.refused_full.load(Ordering::Relaxed),
            dropped_idle: self.shared.dropped_idle.load(Ordering::Relaxed),
            protocol_errors: self.shared.protocol_errors.load(Ordering::Relaxed),
        }
    }
}

/// A bound announce socket, ready to [`AnnounceServer::run`].
#[derive(Debug)]
pub struct AnnounceServer {
    listener: UnixListener,
    path: PathBuf,
    config: ServerConfig,
    handle: AnnounceHandle,
}

impl AnnounceServer {
    /// Binds the socket at `path`. A socket file left by a crashed server is replaced; one that
    /// still answers belongs to a running server and is an error.
    ///
    /// # Errors
    /// `AddrInUse` when another server answers there, else what `bind` says.
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
        let listener = UnixListener::bind(path)?;
        let (wake, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            latest: Mutex::new(Latest {
                hello,
                frame: None,
                last_frame_at: Instant::now(),
                state_version: 0,
            }),
            wake,
            subscribers: AtomicUsize::new(0),
            refused_full: AtomicU64::new(0),
            dropped_idle: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
        });
        Ok(AnnounceServer {
            listener,
            path: path.to_owned(),
            config,
            handle: AnnounceHandle { shared },
        })
    }

    /// A handle for announcing.
    pub fn handle(&self) -> AnnounceHandle {
        self.handle.clone()
    }

    /// Accepts and serves subscribers until `shutdown` completes, then closes every connection,
    /// waits for their tasks and removes the socket file.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let AnnounceServer {
            listener,
            path,
            config,
            handle,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let shared = &handle.shared;
                        if shared.subscribers.load(Ordering::Relaxed) >= config.max_subscribers {
                            shared.refused_full.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(max = config.max_subscribers, "announce socket full, refusing a subscriber");
                            drop(stream);
                            continue;
                        }
                        let slot = SubscriberSlot::take(shared);
                        let stop = stop_rx.clone();
                        tasks.spawn(async move {
                            serve(stream, &slot.0, config, stop).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept on the announce socket failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(error = %e, path = %path.display(), "could not remove the announce socket");
        }
    }
}

/// One of the [`ServerConfig::max_subscribers`] places, given back on drop: however the
/// subscriber task ends (returns, panics, is aborted), its place is freed.
struct SubscriberSlot(Arc<Shared>);

impl SubscriberSlot {
    fn take(shared: &Arc<Shared>) -> SubscriberSlot {
        shared.subscribers.fetch_add(1, Ordering::Relaxed);
        SubscriberSlot(Arc::clone(shared))
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a subscriber's connection ended.
enum End {
    Gone,
    Idle,
    Protocol(String),
    Stopped,
}

async fn serve(
    stream: UnixStream,
    shared: &Shared,
    config: ServerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut reader = MessageReader::with_limit(MAX_SUBSCRIBE_LEN);
    let name = match tokio::time::timeout(config.idle_timeout, reader.read(&mut rd)).await {
        Ok(Ok(Message::Subscribe(s))) if s.protocol_version == PROTOCOL_VERSION => s.name,
        Ok(Ok(Message::Subscribe(s))) => {
            return protocol_error(
                shared,
                &format!(
                    "subscriber speaks protocol {}, this server {PROTOCOL_VERSION}",
                    s.protocol_version
                ),
            );
        }
        Ok(Ok(other)) => {
            return protocol_error(shared, &format!("expected Subscribe, got {other:?}"));
        }
        Ok(Err(ProtoError::Closed)) => return,
        Ok(Err(e)) => return protocol_error(shared, &e.to_string()),
        Err(_) => return protocol_error(shared, "no Subscribe within the idle timeout"),
    };
    tracing::debug!(subscriber = %name, "subscriber connected");
    let mut wake = shared.wake.subscribe();
    let mut scratch = Vec::with_capacity(256);
    let (hello, mut sent_state, mut sent_seq) = {
        let latest = shared.latest.lock().expect("announce state poisoned");
        (
            latest.hello.clone(),
            latest.state_version,
            latest.frame.map_or(0, |f| f.seq),
        )
    };
    let mut end = send(
        &mut wr,
        &Message::Hello(hello),
        &mut scratch,
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
            got = reader.read(&mut rd) => {
                end = Some(match got {
                    Err(ProtoError::Closed) | Err(ProtoError::Io(_)) => End::Gone,
                    Ok(m) => End::Protocol(format!("unexpected {m:?} from a subscriber")),
                    Err(e) => End::Protocol(e.to_string()),
                });
            }
            _ = stop.changed() => end = Some(End::Stopped),
        }
        for message in outgoing.into_iter().flatten() {
            end = send(&mut wr, &message, &mut scratch, config.idle_timeout).await;
            if end.is_some() {
                break;
            }
        }
    }
    match end {
        Some(End::Idle) => {
            shared.dropped_idle.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(subscriber = %name, timeout = ?config.idle_timeout, "subscriber took nothing for the idle timeout, disconnected");
        }
        Some(End::Protocol(why)) => protocol_error(shared, &format!("{name}: {why}")),
        Some(End::Gone) => tracing::debug!(subscriber = %name, "subscriber disconnected"),
        Some(End::Stopped) | None => {}
    }
}

/// Writes one message, giving up after `timeout`: a subscriber that takes nothing is idle.
/// `None` when it was sent, else why the connection ends.
async fn send(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
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
    }
}

fn protocol_error(shared: &Shared, why: &str) {
    shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        reason = why,
        "closing an announce connection after a protocol error"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn a_panicking_subscriber_task_gives_its_place_back() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        let handle = server.handle();
        let slot = SubscriberSlot::take(&handle.shared);
        let held = SubscriberSlot::take(&handle.shared);
        assert_eq!(handle.stats().subscribers, 2);
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
