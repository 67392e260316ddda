//! The live fan-out: one task follows `capture-svc`'s announcements (through [`FrameSource`],
//! which [`ipc::announce::FrameClient`] implements) and keeps the camera's state and the
//! newest frame's place in the shared region; the [`Hub`] copies a frame out of the region only
//! when someone will use it: at once while viewers stream, on demand for a snapshot or a viewer
//! that joins. With nobody watching, nothing is copied. A copy goes into a small pool of
//! reusable reference-counted buffers and is published to every viewer through one `watch`
//! channel: each frame is copied out of shared memory at most once, whatever the number of
//! viewers; a viewer holds a reference to at most the frame it is sending and sees only the
//! newest one after that, so a slow viewer skips frames and nothing ever queues.
//!
//! When the camera is gone (capture-svc unreachable, not streaming, or no frame for
//! [`OFFLINE_AFTER`]) the task publishes a "camera offline" placeholder once a second instead.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipc::announce::{Announcement, CameraState, ClientEvent, FrameAnnounce, FrameClient, Hello};
use ipc::region::RegionReader;
use tokio::sync::{Notify, watch};

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

/// Where announcements come from: the announce client in the service, a script in tests. The
/// frames themselves are read from the region the hello names.
pub trait FrameSource: Send {
    /// Waits for the next event; a frame is announced, not copied.
    fn next(&mut self) -> impl Future<Output = Announcement> + Send;
    /// The next event already received, without waiting; in between, arriving events should
    /// wake nothing. `None` when there is none, or when waiting is needed (connecting).
    fn try_next(&mut self) -> Option<Announcement>;
    /// Whether connected: [`FrameSource::try_next`] only reads an open connection.
    fn is_connected(&self) -> bool;
}

impl FrameSource for FrameClient {
    fn next(&mut self) -> impl Future<Output = Announcement> + Send {
        FrameClient::next_announcement(self)
    }

    fn try_next(&mut self) -> Option<Announcement> {
        FrameClient::try_next_announcement(self)
    }

    fn is_connected(&self) -> bool {
        FrameClient::is_connected(self)
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
    /// Live frames announced by capture-svc (copied or not).
    pub frames_in: AtomicU64,
    /// Live frames copied out of shared memory: at most one per frame announced, however
    /// many viewers, and none while nobody watches.
    pub frames_copied: AtomicU64,
    /// Copies that failed: the frame was overwritten, torn or corrupt when it was wanted.
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

/// The frames' side of the hub: the region, the buffer pool, and which frame is newest.
#[derive(Debug)]
struct Store {
    /// The region the latest hello named, mapped read-only.
    reader: Option<RegionReader>,
    pool: Vec<Arc<FrameBuf>>,
    /// Whether the camera counts as live: a frame was announced since it last did not.
    live: bool,
    /// Sequence number of the live frame in the channel (0: none, or the placeholder).
    published: u64,
    /// Width and height of the newest frame copied, to keep the status's true.
    geometry: (u32, u32),
}

impl Store {
    /// A buffer no viewer holds, from the pool if one is free.
    fn take_buf(&mut self, metrics: &Metrics) -> Arc<FrameBuf> {
        if let Some(i) = self.pool.iter().position(|b| Arc::strong_count(b) == 1) {
            return self.pool.swap_remove(i);
        }
        metrics.pool_misses.fetch_add(1, Ordering::Relaxed);
        Arc::new(FrameBuf::default())
    }

    fn give_back(&mut self, buf: Arc<FrameBuf>) {
        if self.pool.len() < POOL_SIZE {
            self.pool.push(buf);
        }
    }
}

/// The fan-out's shared end: viewers subscribe, pages read the status and snapshots.
#[derive(Debug)]
pub struct Hub {
    tx: watch::Sender<Option<Frame>>,
    status: Mutex<CameraStatus>,
    store: Mutex<Store>,
    /// Wakes the fan-out task when a viewer joins (it sleeps between ticks while nobody
    /// watches).
    joined: Notify,
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
            store: Mutex::new(Store {
                reader: None,
                pool: (0..POOL_SIZE)
                    .map(|_| Arc::new(FrameBuf::default()))
                    .collect(),
                live: false,
                published: 0,
                geometry: (0, 0),
            }),
            joined: Notify::new(),
            metrics: Metrics::default(),
        }
    }
}

impl Hub {
    /// A receiver of the newest frame copied (call [`Hub::refresh`] first to have the newest
    /// frame announced in it; the fan-out copies each new frame at once while viewers stream).
    pub fn subscribe(&self) -> watch::Receiver<Option<Frame>> {
        self.tx.subscribe()
    }

    /// The newest frame, live or placeholder: the newest live frame is copied out of the
    /// region now if nobody has yet.
    pub fn latest(&self) -> Option<Frame> {
        self.refresh();
        self.tx.borrow().clone()
    }

    /// A copy of the camera status.
    pub fn status(&self) -> CameraStatus {
        self.status.lock().expect("status lock").clone()
    }

    fn update_status(&self, f: impl FnOnce(&mut CameraStatus)) {
        f(&mut self.status.lock().expect("status lock"));
    }

    /// Copies the newest live frame out of the region and publishes it, unless it already is
    /// or the camera is not live. Whoever asks first pays the one copy.
    pub fn refresh(&self) {
        let mut store = self.store.lock().expect("store lock");
        self.copy_newest(&mut store);
    }

    fn copy_newest(&self, store: &mut Store) {
        // The newest committed frame, whether its announcement has been read yet or not.
        // A torn read of it (the writer busy announcing each time): keep what is published.
        let newest = match &store.reader {
            Some(reader) if store.live => match reader.latest_seq() {
                Ok(seq) => seq,
                Err(_) => return,
            },
            _ => return,
        };
        if newest <= store.published {
            return;
        }
        let mut buf = store.take_buf(&self.metrics);
        let fb = Arc::get_mut(&mut buf).expect("take_buf returns unshared buffers");
        let read = match &store.reader {
            Some(reader) => reader.read_latest(&mut fb.jpeg),
            None => Err(ipc::region::ReadError::Empty),
        };
        let meta = match read {
            Ok(meta) if meta.seq > store.published => meta,
            _ => {
                self.metrics
                    .frames_skipped_source
                    .fetch_add(1, Ordering::Relaxed);
                store.give_back(buf);
                return;
            }
        };
        write_head(&mut fb.head, fb.jpeg.len(), meta.seq, meta.wall_ns, true);
        self.metrics.frames_copied.fetch_add(1, Ordering::Relaxed);
        if store.geometry != (meta.width, meta.height) {
            store.geometry = (meta.width, meta.height);
            self.update_status(|s| (s.width, s.height) = (meta.width, meta.height));
        }
        store.published = meta.seq;
        self.publish(store, buf, meta.seq, meta.wall_ns, true);
    }

    /// Publishes a filled buffer; the store stays locked, so frames go out in order.
    fn publish(&self, store: &mut Store, buf: Arc<FrameBuf>, seq: u64, wall_ns: u64, live: bool) {
        let frame = Frame {
            head: Bytes::from_owner(HeadView(buf.clone())),
            jpeg: Bytes::from_owner(JpegView(buf.clone())),
            seq,
            wall_ns,
            live,
        };
        store.give_back(buf);
        self.tx.send_replace(Some(frame));
    }

    /// A frame was announced: the camera is live, and the frame is copied at once if anyone
    /// streams.
    fn announced(&self) {
        let mut store = self.store.lock().expect("store lock");
        store.live = true;
        if self.metrics.viewers.load(Ordering::Acquire) > 0 {
            self.copy_newest(&mut store);
        }
    }

    /// Maps the region `hello` names, unless the one mapped is still it. `Err` says why not.
    fn attach(&self, hello: &Hello) -> Result<(), String> {
        let mut store = self.store.lock().expect("store lock");
        store.live = false;
        store.published = 0;
        let current = store.reader.as_ref().is_some_and(|r| {
            r.generation() == hello.generation && r.path() == hello.region_path && !r.is_stale()
        });
        if !current {
            store.reader = None;
            let reader = RegionReader::open(&hello.region_path).map_err(|e| e.to_string())?;
            if reader.generation() != hello.generation {
                return Err(format!(
                    "the region's generation {:x} is not the hello's {:x} (capture-svc restarted)",
                    reader.generation(),
                    hello.generation
                ));
            }
            store.reader = Some(reader);
        }
        Ok(())
    }

    /// The camera is not live: no frame is copied until one is announced again.
    fn not_live(&self) {
        self.store.lock().expect("store lock").live = false;
    }

    /// Publishes the placeholder `jpeg` (copied into a pooled buffer).
    fn placeholder(&self, jpeg: &[u8], wall_ns: u64) {
        let mut store = self.store.lock().expect("store lock");
        store.live = false;
        store.published = 0;
        let mut buf = store.take_buf(&self.metrics);
        let fb = Arc::get_mut(&mut buf).expect("take_buf returns unshared buffers");
        fb.jpeg.clear();
        fb.jpeg.extend_from_slice(jpeg);
        write_head(&mut fb.head, fb.jpeg.len(), 0, wall_ns, false);
        self.metrics.offline_frames.fetch_add(1, Ordering::Relaxed);
        self.publish(&mut store, buf, 0, wall_ns, false);
    }

    /// A viewer joined: from now on each frame is copied as it is announced.
    pub(crate) fn viewer_joined(&self) {
        self.joined.notify_one();
    }

    /// Ends every stream: the channel holds no frame, and none is copied.
    fn shut(&self) {
        let mut store = self.store.lock().expect("store lock");
        store.live = false;
        self.tx.send_replace(None);
    }
}

/// The task that follows the announcements and feeds the hub.
#[derive(Debug)]
pub struct Feeder {
    hub: Arc<Hub>,
    connected: bool,
    streaming: bool,
    last_frame: Option<Instant>,
    /// Capture time of the newest frame announced (`CLOCK_MONOTONIC` ns), for the rate.
    last_mono_ns: Option<u64>,
    last_offline: Option<Instant>,
    /// The placeholder is rendered here (its allocation is reused).
    offline_jpeg: Vec<u8>,
}

impl Feeder {
    /// A feeder publishing into `hub`.
    pub fn new(hub: Arc<Hub>) -> Feeder {
        Feeder {
            hub,
            connected: false,
            streaming: false,
            last_frame: None,
            last_mono_ns: None,
            last_offline: None,
            offline_jpeg: Vec::new(),
        }
    }

    /// Runs until `shutdown` completes.
    pub async fn run<S: FrameSource>(mut self, mut source: S, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let idle = self.hub.metrics.viewers.load(Ordering::Acquire) == 0;
            let event = if idle && source.is_connected() {
                // Nobody watches: no wake-up per frame. What came since the last turn is taken
                // without waiting (the connection is parked in between, so announcements
                // arriving wake no thread), then the task sleeps until the tick or a viewer
                // joins (a snapshot reads the region's newest frame itself).
                match source.try_next() {
                    Some(ev) => Some(ev),
                    None => {
                        tokio::select! {
                            () = &mut shutdown => {
                                self.hub.shut();
                                return;
                            }
                            _ = tick.tick() => {}
                            () = self.hub.joined.notified() => {}
                        }
                        None
                    }
                }
            } else {
                tokio::select! {
                    () = &mut shutdown => {
                        self.hub.shut();
                        return;
                    }
                    ev = source.next() => Some(ev),
                    _ = tick.tick() => None,
                }
            };
            self.hub
                .metrics
                .feeder_alive_ms
                .store(ipc::service::monotonic_ns() / 1_000_000, Ordering::Relaxed);
            let event = match event {
                Some(Announcement::Frame(announce)) => {
                    self.live_frame(announce);
                    continue;
                }
                Some(Announcement::Event(event)) => Some(event),
                None => None,
            };
            match event {
                Some(ClientEvent::Connected(hello)) => {
                    tracing::info!(source = %hello.source, width = hello.width, height = hello.height, state = hello.state.name(), "connected to capture-svc");
                    if let Err(why) = self.hub.attach(&hello) {
                        tracing::warn!(
                            region = %hello.region_path.display(),
                            "cannot map the frame region ({why}); viewers get the offline frame until capture-svc is reconnected (it is retried on each connection)"
                        );
                    }
                    self.connected = true;
                    self.camera_state(&hello.state);
                    self.hub.update_status(|s| {
                        s.source.clone_from(&hello.source);
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
                    self.hub.not_live();
                    self.hub.update_status(|s| {
                        s.state = "offline".into();
                        s.reason = Some(reason);
                        s.fps = 0.0;
                    });
                }
                // `next_announcement` reports frames as announcements, never copied.
                Some(ClientEvent::Heartbeat(_) | ClientEvent::Frame(_)) | None => {}
            }
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
        crate::offline::render(wall_ns / 1_000_000_000, &mut self.offline_jpeg);
        self.hub.placeholder(&self.offline_jpeg, wall_ns);
    }

    /// A live frame was announced: the camera's state and rate are updated, and the frame is
    /// copied only if someone streams (no allocation or formatting here otherwise).
    fn live_frame(&mut self, announce: FrameAnnounce) {
        let now = Instant::now();
        self.hub.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
        // A frame is proof of a working camera, whatever state was last announced (a source
        // may still say `starting` while its first frames flow).
        self.streaming = true;
        self.last_frame = Some(now);
        self.last_offline = None;
        // Rate and age from the capture times (announcements read in a batch arrive together).
        let age =
            Duration::from_nanos(ipc::service::monotonic_ns().saturating_sub(announce.mono_ns));
        let captured = now.checked_sub(age).unwrap_or(now);
        let prev = self.last_mono_ns.replace(announce.mono_ns);
        self.hub.update_status(|s| {
            if let Some(p) = prev {
                let dt = announce.mono_ns.saturating_sub(p) as f64 / 1e9;
                if dt > 0.0 {
                    // The mean interval, not the mean of instantaneous rates: frames that
                    // arrive in a burst after a gap (a camera or a loaded machine catching up)
                    // average out with the gap instead of reading as a thousand fps.
                    let mean_dt = if s.fps > 0.0 { 1.0 / s.fps } else { dt };
                    s.fps = 1.0 / (mean_dt * 0.9 + dt * 0.1);
                }
            }
            s.last_frame = Some(captured);
            if s.state != "streaming" {
                s.state = "streaming".into();
            }
            s.reason = None;
        });
        self.hub.announced();
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
    use crate::stream::ViewerSlot;
    use futures_util::StreamExt as _;
    use ipc::region::{FrameFormat, FrameInfo, RegionWriter};
    use tokio::sync::mpsc;

    /// Plays a script of announcements and events.
    struct Script(mpsc::Receiver<Announcement>);
    impl FrameSource for Script {
        async fn next(&mut self) -> Announcement {
            match self.0.recv().await {
                Some(a) => a,
                None => std::future::pending().await,
            }
        }
        fn try_next(&mut self) -> Option<Announcement> {
            self.0.try_recv().ok()
        }
        fn is_connected(&self) -> bool {
            true
        }
    }

    /// A camera: a real region in a temporary directory, and the script announcing its
    /// frames to a feeder running on a hub.
    struct Camera {
        writer: RegionWriter,
        tx: mpsc::Sender<Announcement>,
        hub: Arc<Hub>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    impl Camera {
        fn start() -> Camera {
            let dir = tempfile::tempdir().unwrap();
            let writer = RegionWriter::create(&dir.path().join("frames"), 4096).unwrap();
            let hub = Arc::new(Hub::default());
            let (tx, rx) = mpsc::channel(64);
            let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(Feeder::new(hub.clone()).run(Script(rx), async {
                let _ = stop_rx.await;
            }));
            Camera {
                writer,
                tx,
                hub,
                stop: Some(stop),
                task: Some(task),
                _dir: dir,
            }
        }

        async fn event(&self, event: ClientEvent) {
            self.tx.send(Announcement::Event(event)).await.unwrap();
        }

        async fn connect(&self) {
            let hello = Hello::streaming(&self.writer, 4, 4, 15.0, "script");
            self.event(ClientEvent::Connected(hello)).await;
        }

        /// Commits a frame of `len` bytes all equal to its sequence number (mod 256).
        fn commit(&mut self, len: usize) -> FrameAnnounce {
            let info = FrameInfo {
                width: 4,
                height: 4,
                format: FrameFormat::Jpeg,
                mono_ns: ipc::service::monotonic_ns(),
                wall_ns: 1,
            };
            let seq = self.writer.stats().published + 1;
            let meta = self.writer.publish(&info, &vec![seq as u8; len]).unwrap();
            assert_eq!(meta.seq, seq);
            FrameAnnounce {
                seq,
                slot: meta.slot,
                len: len as u32,
                mono_ns: meta.mono_ns,
                wall_ns: meta.wall_ns,
            }
        }

        /// Commits a frame and announces it.
        async fn frame(&mut self, len: usize) -> u64 {
            let a = self.commit(len);
            self.tx.send(Announcement::Frame(a)).await.unwrap();
            a.seq
        }

        fn counter(&self, c: impl Fn(&Metrics) -> &AtomicU64) -> u64 {
            c(&self.hub.metrics).load(Ordering::Relaxed)
        }

        /// The frame in the channel, without asking for a copy.
        fn published(&self) -> Option<Frame> {
            self.hub.tx.borrow().clone()
        }

        async fn stop(mut self) {
            self.stop.take().unwrap().send(()).unwrap();
            self.task.take().unwrap().await.unwrap();
        }
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn frames_reuse_the_pool_and_slow_viewers_see_only_the_newest() {
        let mut cam = Camera::start();
        let _viewer = ViewerSlot::acquire(&cam.hub, 10, None).unwrap();
        cam.connect().await;
        let mut slow = cam.hub.subscribe();
        // Push past the pool size while a viewer holds one frame: no frame is lost to the
        // newest-only rule, the pool never grows, and a held frame stays intact.
        let mut held = None;
        let last = POOL_SIZE as u64 * 4;
        for seq in 1..=last {
            assert_eq!(cam.frame(100).await, seq);
            if seq == 3 {
                until("frame 3 published", || {
                    cam.published().is_some_and(|f| f.seq == 3)
                })
                .await;
                held = cam.published();
            }
        }
        until("the last frame published", || {
            cam.published().is_some_and(|f| f.seq == last)
        })
        .await;
        let newest = slow.borrow_and_update().clone().unwrap();
        assert_eq!(newest.seq, last, "a slow viewer jumps to the newest");
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
        assert_eq!(cam.counter(|m| &m.pool_misses), 0);
        assert!(cam.counter(|m| &m.frames_copied) <= last);
        let hub = cam.hub.clone();
        cam.stop().await;
        assert!(
            hub.latest().is_none(),
            "shutdown clears the frame so streams end"
        );
    }

    #[tokio::test]
    async fn without_viewers_nothing_is_copied_and_a_snapshot_reads_the_newest_frame() {
        let mut cam = Camera::start();
        cam.connect().await;
        for _ in 0..20 {
            cam.frame(1000).await;
        }
        until("20 frames announced", || {
            cam.counter(|m| &m.frames_in) == 20
        })
        .await;
        assert_eq!(cam.counter(|m| &m.frames_copied), 0, "nobody watches");
        assert!(cam.published().is_none_or(|f| !f.live));
        assert_eq!(cam.hub.status().state, "streaming");
        let snap = cam.hub.latest().unwrap();
        assert!(snap.live);
        assert_eq!(snap.seq, 20);
        assert_eq!(&snap.jpeg[..], &[20u8; 1000][..]);
        assert_eq!(cam.counter(|m| &m.frames_copied), 1);
        assert_eq!(cam.hub.latest().unwrap().seq, 20);
        assert_eq!(
            cam.counter(|m| &m.frames_copied),
            1,
            "a frame already copied is not copied again"
        );
        // A frame committed whose announcement has not been read yet is the newest.
        cam.commit(1000);
        assert_eq!(cam.hub.latest().unwrap().seq, 21);
        assert_eq!(cam.counter(|m| &m.frames_copied), 2);
        cam.stop().await;
    }

    #[tokio::test]
    async fn with_viewers_each_frame_is_copied_once() {
        let mut cam = Camera::start();
        cam.connect().await;
        cam.frame(500).await;
        until("a frame announced", || cam.counter(|m| &m.frames_in) == 1).await;
        let viewers: Vec<_> = (0..3)
            .map(|_| ViewerSlot::acquire(&cam.hub, 10, None).unwrap())
            .collect();
        for seq in 2..=11 {
            cam.frame(500).await;
            until("the frame published", || {
                cam.published().is_some_and(|f| f.seq == seq)
            })
            .await;
            assert_eq!(cam.hub.latest().unwrap().seq, seq);
        }
        assert_eq!(cam.counter(|m| &m.frames_in), 11);
        assert_eq!(
            cam.counter(|m| &m.frames_copied),
            10,
            "one copy per frame announced while viewers stream, however many"
        );
        drop(viewers);
        cam.stop().await;
    }

    #[tokio::test]
    async fn a_viewer_that_joins_starts_at_the_newest_frame() {
        let mut cam = Camera::start();
        cam.connect().await;
        cam.frame(300).await;
        until("a frame announced", || cam.counter(|m| &m.frames_in) == 1).await;
        // Copied once by a snapshot, then frames go by with nobody watching.
        assert_eq!(cam.hub.latest().unwrap().seq, 1);
        for _ in 0..5 {
            cam.frame(300).await;
        }
        until("6 frames announced", || cam.counter(|m| &m.frames_in) == 6).await;
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let slot = ViewerSlot::acquire(&cam.hub, 10, None).unwrap();
        let mut body = std::pin::pin!(crate::stream::live(slot, shutdown, None));
        let head = body.next().await.unwrap().unwrap();
        let head = std::str::from_utf8(&head).unwrap();
        assert!(head.contains("X-Mecam-Seq: 6\r\n"), "{head}");
        let jpeg = body.next().await.unwrap().unwrap();
        assert_eq!(&jpeg[..], &[6u8; 300][..]);
        let seq = cam.frame(300).await;
        let head = body.next().await.unwrap().unwrap();
        assert!(
            std::str::from_utf8(&head)
                .unwrap()
                .contains(&format!("X-Mecam-Seq: {seq}\r\n"))
        );
        assert_eq!(cam.counter(|m| &m.frames_copied), 3);
        cam.stop().await;
    }

    #[tokio::test]
    async fn stalled_or_gone_camera_gives_offline_frames_and_live_ones_resume() {
        let mut cam = Camera::start();
        let _viewer = ViewerSlot::acquire(&cam.hub, 10, None).unwrap();
        let hub = cam.hub.clone();
        cam.connect().await;
        cam.frame(5).await;
        until("a live frame", || hub.latest().is_some_and(|f| f.live)).await;
        assert_eq!(hub.status().state, "streaming");
        cam.event(ClientEvent::State(CameraState::Stalled)).await;
        until("the offline frame", || {
            hub.latest().is_some_and(|f| !f.live)
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
        cam.event(ClientEvent::State(CameraState::Streaming)).await;
        cam.frame(5).await;
        until("live again", || {
            hub.latest().is_some_and(|f| f.live && f.seq == 2)
        })
        .await;
        cam.event(ClientEvent::Gone {
            reason: "test".into(),
        })
        .await;
        until("offline after gone", || {
            hub.latest().is_some_and(|f| !f.live)
        })
        .await;
        assert_eq!(hub.status().state, "offline");
        // Placeholders come at most once per OFFLINE_PERIOD.
        let before = cam.counter(|m| &m.offline_frames);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let n = cam.counter(|m| &m.offline_frames) - before;
        assert!(n <= 2, "{n} placeholders in 1.5 s");
        cam.stop().await;
    }
}
