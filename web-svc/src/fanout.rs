//! The live fan-out: one task reads frames from `capture-svc` (through [`FrameSource`], which
//! [`ipc::announce::FrameClient`] implements) into a small pool of reusable reference-counted
//! buffers, and publishes the newest one to every viewer through one `watch` channel. Each
//! frame is copied out of shared memory once, whatever the number of viewers; a viewer holds
//! a reference to at most the frame it is sending and sees only the newest one after that, so
//! a slow viewer skips frames and nothing ever queues.
//!
//! When the camera is gone (capture-svc unreachable, not streaming, or no frame for
//! [`OFFLINE_AFTER`]) the task publishes a "camera offline" placeholder once a second instead.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipc::announce::{CameraState, ClientEvent, FrameClient};
use tokio::sync::watch;

/// Buffers kept for reuse. A buffer is reused once no viewer holds it; viewers hold at most
/// the frame they are writing, so a handful covers the steady state and more are only
/// allocated (and then freed) while many viewers lag on different frames.
pub const POOL_SIZE: usize = 8;
/// The camera counts as offline when no frame has come for this long.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(2);
/// How often the offline placeholder is re-rendered (it shows the time).
pub const OFFLINE_PERIOD: Duration = Duration::from_secs(1);
/// The multipart boundary of every MJPEG stream.
pub const BOUNDARY: &str = "mecamframe";

/// Where frames come from: the announce client in the service, a feeder in tests.
pub trait FrameSource: Send {
    /// Waits for the next event; frames are copied into `buf` (cleared first).
    fn next(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = ClientEvent> + Send;
    /// Frames announced but not delivered (overwritten, torn or corrupt).
    fn skipped(&self) -> u64;
}

impl FrameSource for FrameClient {
    fn next(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = ClientEvent> + Send {
        FrameClient::next(self, buf)
    }

    fn skipped(&self) -> u64 {
        let s = self.stats();
        s.skipped + s.corrupt
    }
}

/// One pooled buffer: the multipart part header and the JPEG bytes.
#[derive(Debug, Default)]
struct FrameBuf {
    head: Vec<u8>,
    jpeg: Vec<u8>,
}

struct HeadView(Arc<FrameBuf>);
impl AsRef<[u8]> for HeadView {
    fn as_ref(&self) -> &[u8] {
        &self.0.head
    }
}
struct JpegView(Arc<FrameBuf>);
impl AsRef<[u8]> for JpegView {
    fn as_ref(&self) -> &[u8] {
        &self.0.jpeg
    }
}

/// A published frame: cheap to clone (two reference counts), shared by every viewer.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The multipart part header, starting with the boundary line.
    pub head: Bytes,
    /// The JPEG bytes exactly as the camera made them (or the placeholder).
    pub jpeg: Bytes,
    /// Sequence number from the region (0 for the placeholder).
    pub seq: u64,
    /// Capture time, nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    /// False for the "camera offline" placeholder.
    pub live: bool,
}

/// What the dashboard and `/api/status` show about the camera.
#[derive(Debug, Clone, Default)]
pub struct CameraStatus {
    /// `streaming`, `stalled`, `starting`, `restarting`, `failed` or `offline`.
    pub state: String,
    /// Why it is not streaming, if known.
    pub reason: Option<String>,
    /// The source name from capture-svc's hello.
    pub source: String,
    /// Frame geometry.
    pub width: u32,
    /// Frame geometry.
    pub height: u32,
    /// Measured frames per second (smoothed).
    pub fps: f64,
    /// When the newest live frame arrived.
    pub last_frame: Option<Instant>,
}

/// Counters for `/metrics`; all monotonic except the gauges noted.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Live frames received from capture-svc.
    pub frames_in: AtomicU64,
    /// Frames announced but not delivered to web-svc (overwritten, torn, corrupt).
    pub frames_skipped_source: AtomicU64,
    /// Placeholder frames published.
    pub offline_frames: AtomicU64,
    /// Frame parts written to viewers.
    pub frames_sent: AtomicU64,
    /// Frames a viewer never got because a newer one came first.
    pub frames_skipped_viewers: AtomicU64,
    /// Body bytes handed to viewers' connections.
    pub bytes_sent: AtomicU64,
    /// Viewers streaming now (gauge).
    pub viewers: AtomicUsize,
    /// Streams refused with 503 (too many).
    pub streams_refused: AtomicU64,
    /// Connections dropped because their socket took nothing for the viewer timeout.
    pub viewers_dropped_stalled: AtomicU64,
    /// Connections refused at accept (too many, none idle).
    pub connections_refused: AtomicU64,
    /// Idle connections closed to make room for a new client.
    pub connections_evicted: AtomicU64,
    /// Open TCP connections (gauge).
    pub connections: AtomicUsize,
    /// Failed logins (form and Basic).
    pub login_failures: AtomicU64,
    /// Logins refused by the rate limiter.
    pub login_limited: AtomicU64,
    /// Frame buffers allocated because every pooled one was in use.
    pub pool_misses: AtomicU64,
    /// Monotonic milliseconds (`ipc::service::monotonic_ns` / 1e6) of the fan-out task's
    /// latest loop turn; the systemd watchdog is pinged only while this is fresh.
    pub feeder_alive_ms: AtomicU64,
}

/// The fan-out's shared end: viewers subscribe, pages read the status.
#[derive(Debug)]
pub struct Hub {
    tx: watch::Sender<Option<Frame>>,
    status: Mutex<CameraStatus>,
    /// Counters.
    pub metrics: Metrics,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: watch::channel(None).0,
            status: Mutex::new(CameraStatus {
                state: "offline".into(),
                reason: Some("not connected to capture-svc yet".into()),
                ..CameraStatus::default()
            }),
            metrics: Metrics::default(),
        }
    }
}

impl Hub {
    /// A receiver of the newest frame.
    pub fn subscribe(&self) -> watch::Receiver<Option<Frame>> {
        self.tx.subscribe()
    }

    /// The newest frame, live or placeholder.
    pub fn latest(&self) -> Option<Frame> {
        self.tx.borrow().clone()
    }

    /// A copy of the camera status.
    pub fn status(&self) -> CameraStatus {
        self.status.lock().expect("status lock").clone()
    }

    fn update_status(&self, f: impl FnOnce(&mut CameraStatus)) {
        f(&mut self.status.lock().expect("status lock"));
    }
}

/// The task that feeds the hub. Owns the buffer pool.
#[derive(Debug)]
pub struct Feeder {
    hub: Arc<Hub>,
    pool: Vec<Arc<FrameBuf>>,
    connected: bool,
    streaming: bool,
    last_frame: Option<Instant>,
    last_offline: Option<Instant>,
}

impl Feeder {
    /// A feeder publishing into `hub`.
    pub fn new(hub: Arc<Hub>) -> Feeder {
        Feeder {
            hub,
            pool: (0..POOL_SIZE)
                .map(|_| Arc::new(FrameBuf::default()))
                .collect(),
            connected: false,
            streaming: false,
            last_frame: None,
            last_offline: None,
        }
    }

    /// A buffer no viewer holds, from the pool if one is free.
    fn take_buf(&mut self) -> Arc<FrameBuf> {
        if let Some(i) = self.pool.iter().position(|b| Arc::strong_count(b) == 1) {
            return self.pool.swap_remove(i);
        }
        self.hub.metrics.pool_misses.fetch_add(1, Ordering::Relaxed);
        Arc::new(FrameBuf::default())
    }

    fn give_back(&mut self, buf: Arc<FrameBuf>) {
        if self.pool.len() < POOL_SIZE {
            self.pool.push(buf);
        }
    }

    /// Runs until `shutdown` completes.
    pub async fn run<S: FrameSource>(mut self, mut source: S, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut buf = self.take_buf();
            let event = {
                let fb = Arc::get_mut(&mut buf).expect("take_buf returns unshared buffers");
                tokio::select! {
                    () = &mut shutdown => {
                        self.hub.tx.send_replace(None);
                        return;
                    }
                    ev = source.next(&mut fb.jpeg) => Some(ev),
                    _ = tick.tick() => None,
                }
            };
            self.hub
                .metrics
                .frames_skipped_source
                .store(source.skipped(), Ordering::Relaxed);
            self.hub
                .metrics
                .feeder_alive_ms
                .store(ipc::service::monotonic_ns() / 1_000_000, Ordering::Relaxed);
            match event {
                Some(ClientEvent::Frame(meta)) => {
                    self.live_frame(buf, meta.seq, meta.wall_ns, meta.width, meta.height);
                    continue;
                }
                Some(ClientEvent::Connected(hello)) => {
                    tracing::info!(source = %hello.source, width = hello.width, height = hello.height, state = hello.state.name(), "connected to capture-svc");
                    self.connected = true;
                    self.camera_state(&hello.state);
                    self.hub.update_status(|s| {
                        s.source = hello.source.clone();
                        s.width = hello.width;
                        s.height = hello.height;
                    });
                }
                Some(ClientEvent::State(state)) => {
                    tracing::info!(state = state.name(), "camera state changed");
                    self.camera_state(&state);
                }
                Some(ClientEvent::Gone { reason }) => {
                    tracing::warn!(%reason, "capture-svc is gone; viewers get the offline frame");
                    self.connected = false;
                    self.streaming = false;
                    self.hub.update_status(|s| {
                        s.state = "offline".into();
                        s.reason = Some(reason);
                        s.fps = 0.0;
                    });
                }
                Some(ClientEvent::Heartbeat(_)) | None => {}
            }
            self.give_back(buf);
            self.maybe_offline();
        }
    }

    fn camera_state(&mut self, state: &CameraState) {
        self.streaming = *state == CameraState::Streaming;
        let reason = match state {
            CameraState::Restarting { reason } | CameraState::Failed { reason } => {
                Some(reason.clone())
            }
            _ => None,
        };
        self.hub.update_status(|s| {
            s.state = state.name().into();
            s.reason = reason;
        });
    }

    fn is_offline(&self, now: Instant) -> bool {
        !self.connected
            || !self.streaming
            || self
                .last_frame
                .is_none_or(|t| now.duration_since(t) > OFFLINE_AFTER)
    }

    fn maybe_offline(&mut self) {
        let now = Instant::now();
        if !self.is_offline(now)
            || self
                .last_offline
                .is_some_and(|t| now.duration_since(t) < OFFLINE_PERIOD)
        {
            return;
        }
        if self.connected && self.streaming {
            self.hub.update_status(|s| {
                s.state = "stalled".into();
                s.fps = 0.0;
            });
        }
        self.last_offline = Some(now);
        let wall_ns = ipc::service::wall_ns();
        let mut buf = self.take_buf();
        {
            let fb = Arc::get_mut(&mut buf).expect("unshared");
            crate::offline::render(wall_ns / 1_000_000_000, &mut fb.jpeg);
            write_head(&mut fb.head, fb.jpeg.len(), 0, wall_ns, false);
        }
        self.hub
            .metrics
            .offline_frames
            .fetch_add(1, Ordering::Relaxed);
        self.publish(buf, 0, wall_ns, false);
    }

    fn live_frame(&mut self, mut buf: Arc<FrameBuf>, seq: u64, wall_ns: u64, w: u32, h: u32) {
        let now = Instant::now();
        {
            let fb = Arc::get_mut(&mut buf).expect("unshared");
            write_head(&mut fb.head, fb.jpeg.len(), seq, wall_ns, true);
        }
        self.hub.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
        // A frame is proof of a working camera, whatever state was last announced (a source
        // may still say `starting` while its first frames flow).
        self.streaming = true;
        let prev = self.last_frame.replace(now);
        self.last_offline = None;
        self.hub.update_status(|s| {
            if let Some(p) = prev {
                let dt = now.duration_since(p).as_secs_f64();
                if dt > 0.0 {
                    let inst = 1.0 / dt;
                    s.fps = if s.fps == 0.0 {
                        inst
                    } else {
                        s.fps * 0.9 + inst * 0.1
                    };
                }
            }
            s.last_frame = Some(now);
            s.width = w;
            s.height = h;
            s.state = "streaming".into();
            s.reason = None;
        });
        self.publish(buf, seq, wall_ns, true);
    }

    fn publish(&mut self, buf: Arc<FrameBuf>, seq: u64, wall_ns: u64, live: bool) {
        let frame = Frame {
            head: Bytes::from_owner(HeadView(buf.clone())),
            jpeg: Bytes::from_owner(JpegView(buf.clone())),
            seq,
            wall_ns,
            live,
        };
        self.give_back(buf);
        self.hub.tx.send_replace(Some(frame));
    }
}

/// Writes the multipart part header for a frame into `out` (cleared, reused).
fn write_head(out: &mut Vec<u8>, len: usize, seq: u64, wall_ns: u64, live: bool) {
    out.clear();
    let _ = write!(
        out,
        "\r\n--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nX-Timestamp: {}.{:06}\r\nX-Mecam-Seq: {seq}\r\nX-Mecam-Camera: {}\r\n\r\n",
        wall_ns / 1_000_000_000,
        wall_ns % 1_000_000_000 / 1000,
        if live { "live" } else { "offline" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::region::{FrameFormat, FrameMeta};
    use tokio::sync::mpsc;

    struct Feed(mpsc::Receiver<(u64, Vec<u8>)>);
    impl FrameSource for Feed {
        async fn next(&mut self, buf: &mut Vec<u8>) -> ClientEvent {
            match self.0.recv().await {
                Some((seq, bytes)) => {
                    buf.clear();
                    buf.extend_from_slice(&bytes);
                    ClientEvent::Frame(FrameMeta {
                        seq,
                        slot: 0,
                        width: 4,
                        height: 4,
                        format: FrameFormat::Jpeg,
                        mono_ns: 0,
                        wall_ns: 1,
                        len: bytes.len(),
                    })
                }
                None => std::future::pending().await,
            }
        }
        fn skipped(&self) -> u64 {
            0
        }
    }

    #[tokio::test]
    async fn frames_reuse_the_pool_and_slow_viewers_see_only_the_newest() {
        let hub = Arc::new(Hub::default());
        let (tx, rx) = mpsc::channel(1);
        let mut feeder = Feeder::new(hub.clone());
        feeder.connected = true;
        feeder.streaming = true;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(feeder.run(Feed(rx), async {
            let _ = stop_rx.await;
        }));
        let mut slow = hub.subscribe();
        // Push past the pool size while a viewer holds one frame: no frame is lost to the
        // newest-only rule, the pool never grows, and a held frame stays intact.
        let mut held = None;
        for seq in 1..=(POOL_SIZE as u64 * 4) {
            tx.send((seq, vec![seq as u8; 100])).await.unwrap();
            if seq == 3 {
                // wait until frame 3 is published, and hold it
                for _ in 0..1000 {
                    if hub.latest().is_some_and(|f| f.seq == 3) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                held = hub.latest();
            }
        }
        for _ in 0..1000 {
            if hub.latest().is_some_and(|f| f.seq == POOL_SIZE as u64 * 4) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let newest = slow.borrow_and_update().clone().unwrap();
        assert_eq!(
            newest.seq,
            POOL_SIZE as u64 * 4,
            "a slow viewer jumps to the newest"
        );
        let held = held.unwrap();
        assert_eq!(held.seq, 3);
        assert_eq!(
            &held.jpeg[..],
            &[3u8; 100][..],
            "a held frame is never overwritten"
        );
        assert!(
            std::str::from_utf8(&held.head)
                .unwrap()
                .contains("X-Mecam-Seq: 3\r\n")
        );
        assert_eq!(hub.metrics.pool_misses.load(Ordering::Relaxed), 0);
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        assert!(
            hub.latest().is_none(),
            "shutdown clears the frame so streams end"
        );
    }

    /// Plays a script of client events; a frame gets a tiny JPEG-shaped body from its seq.
    struct Script(mpsc::Receiver<ClientEvent>);
    impl FrameSource for Script {
        async fn next(&mut self, buf: &mut Vec<u8>) -> ClientEvent {
            match self.0.recv().await {
                Some(ClientEvent::Frame(meta)) => {
                    buf.clear();
                    buf.extend_from_slice(&[0xFF, 0xD8, meta.seq as u8, 0xFF, 0xD9]);
                    ClientEvent::Frame(meta)
                }
                Some(other) => other,
                None => std::future::pending().await,
            }
        }
        fn skipped(&self) -> u64 {
            0
        }
    }

    fn hello() -> ipc::announce::Hello {
        ipc::announce::Hello {
            protocol_version: ipc::announce::PROTOCOL_VERSION,
            generation: 1,
            region_path: "/nonexistent".into(),
            slot_count: 3,
            slot_capacity: 1024,
            width: 4,
            height: 4,
            nominal_fps: 10.0,
            source: "script".into(),
            state: CameraState::Streaming,
        }
    }

    async fn until(hub: &Hub, what: &str, f: impl Fn(&Hub) -> bool) {
        for _ in 0..500 {
            if f(hub) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn stalled_or_gone_camera_gives_offline_frames_and_live_ones_resume() {
        let hub = Arc::new(Hub::default());
        let (tx, rx) = mpsc::channel(4);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Feeder::new(hub.clone()).run(Script(rx), async {
            let _ = stop_rx.await;
        }));
        let frame = |seq| {
            ClientEvent::Frame(FrameMeta {
                seq,
                slot: 0,
                width: 4,
                height: 4,
                format: FrameFormat::Jpeg,
                mono_ns: 0,
                wall_ns: 1,
                len: 5,
            })
        };
        tx.send(ClientEvent::Connected(hello())).await.unwrap();
        tx.send(frame(1)).await.unwrap();
        until(&hub, "a live frame", |h| h.latest().is_some_and(|f| f.live)).await;
        assert_eq!(hub.status().state, "streaming");
        tx.send(ClientEvent::State(CameraState::Stalled))
            .await
            .unwrap();
        until(&hub, "the offline frame", |h| {
            h.latest().is_some_and(|f| !f.live)
        })
        .await;
        assert_eq!(hub.status().state, "stalled");
        let offline = hub.latest().unwrap();
        assert!(
            std::str::from_utf8(&offline.head)
                .unwrap()
                .contains("X-Mecam-Camera: offline")
        );
        assert_eq!(&offline.jpeg[..2], &[0xFF, 0xD8]);
        tx.send(ClientEvent::State(CameraState::Streaming))
            .await
            .unwrap();
        tx.send(frame(2)).await.unwrap();
        until(&hub, "live again", |h| {
            h.latest().is_some_and(|f| f.live && f.seq == 2)
        })
        .await;
        tx.send(ClientEvent::Gone {
            reason: "test".into(),
        })
        .await
        .unwrap();
        until(&hub, "offline after gone", |h| {
            h.latest().is_some_and(|f| !f.live)
        })
        .await;
        assert_eq!(hub.status().state, "offline");
        // Placeholders come at most once per OFFLINE_PERIOD.
        let before = hub.metrics.offline_frames.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let n = hub.metrics.offline_frames.load(Ordering::Relaxed) - before;
        assert!(n <= 2, "{n} placeholders in 1.5 s");
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
