//! The fan-out's shared end: the buffer pool, the newest frame copied out of the region at most
//! once, the camera's status, and the counters.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ipc::announce::Hello;
use ipc::region::RegionReader;
use tokio::sync::{Notify, watch};

use super::{BOUNDARY, POOL_SIZE};

/// One pooled pair of buffers: the multipart part header and the JPEG bytes. A frame is
/// published as the filled part split off and frozen ([`BytesMut::split`]: the same storage,
/// one more reference); once every viewer has let go of it the whole storage is taken back
/// ([`BytesMut::try_reclaim`]) and filled again in place. After the first frames, copying a
/// frame and publishing it allocate nothing, however many viewers share it.
#[derive(Debug, Default)]
struct FrameBuf {
    head: BytesMut,
    jpeg: BytesMut,
    /// Whether a frame published from it may still be held (a fresh pair, or one given back
    /// unpublished, has nothing to take back).
    used: bool,
}

impl FrameBuf {
    /// Whether no viewer holds the frame published from it: its storage is taken back.
    fn reclaim(&mut self) -> bool {
        // More than what is left after the split: only the whole storage, unshared, has it.
        !self.used
            || (self.head.try_reclaim(self.head.capacity() + 1)
                && self.jpeg.try_reclaim(self.jpeg.capacity() + 1))
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
    pool: Vec<FrameBuf>,
    /// Whether the camera counts as live: a frame was announced since it last did not.
    live: bool,
    /// Sequence number of the live frame in the channel (0: none, or the placeholder).
    published: u64,
    /// Width and height of the newest frame copied, to keep the status's true.
    geometry: (u32, u32),
}

impl Store {
    /// Buffers no viewer holds, from the pool if a pair is free.
    fn take_buf(&mut self, metrics: &Metrics) -> FrameBuf {
        if let Some(i) = self.pool.iter_mut().position(FrameBuf::reclaim) {
            let mut b = self.pool.swap_remove(i);
            b.head.clear();
            b.jpeg.clear();
            return b;
        }
        metrics.pool_misses.fetch_add(1, Ordering::Relaxed);
        FrameBuf::default()
    }

    /// Keeps `buf` for a later frame.
    fn give_back(&mut self, buf: FrameBuf) {
        if self.pool.len() < POOL_SIZE {
            self.pool.push(buf);
        }
    }
}

/// The fan-out's shared end: viewers subscribe, pages read the status and snapshots.
#[derive(Debug)]
pub struct Hub {
    pub(super) tx: watch::Sender<Option<Frame>>,
    status: Mutex<CameraStatus>,
    store: Mutex<Store>,
    /// Wakes the fan-out task when a viewer joins (it sleeps between ticks while nobody
    /// watches).
    pub(super) joined: Notify,
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
                pool: (0..POOL_SIZE).map(|_| FrameBuf::default()).collect(),
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

    pub(super) fn update_status(&self, f: impl FnOnce(&mut CameraStatus)) {
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
        let read = match &store.reader {
            Some(reader) => reader.read_latest_bytes(&mut buf.jpeg),
            None => Err(ipc::region::ReadError::Empty),
        };
        let meta = match read {
            Ok(meta) if meta.seq > store.published => meta,
            _ => {
                self.metrics
                    .frames_skipped_source
                    .fetch_add(1, Ordering::Relaxed);
                // Nothing was split off: the pair is free as it is.
                buf.used = false;
                store.give_back(buf);
                return;
            }
        };
        write_head(&mut buf.head, buf.jpeg.len(), meta.seq, meta.wall_ns, true);
        self.metrics.frames_copied.fetch_add(1, Ordering::Relaxed);
        if store.geometry != (meta.width, meta.height) {
            store.geometry = (meta.width, meta.height);
            self.update_status(|s| (s.width, s.height) = (meta.width, meta.height));
        }
        store.published = meta.seq;
        self.publish(store, buf, meta.seq, meta.wall_ns, true);
    }

    /// Publishes a filled buffer; the store stays locked, so frames go out in order.
    fn publish(&self, store: &mut Store, mut buf: FrameBuf, seq: u64, wall_ns: u64, live: bool) {
        let frame = Frame {
            head: buf.head.split().freeze(),
            jpeg: buf.jpeg.split().freeze(),
            seq,
            wall_ns,
            live,
        };
        buf.used = true;
        store.give_back(buf);
        self.tx.send_replace(Some(frame));
    }

    /// A frame was announced: the camera is live, and the frame is copied at once if anyone
    /// streams.
    pub(super) fn announced(&self) {
        let mut store = self.store.lock().expect("store lock");
        store.live = true;
        if self.metrics.viewers.load(Ordering::Acquire) > 0 {
            self.copy_newest(&mut store);
        }
    }

    /// Maps the region `hello` names, unless the one mapped is still it. `Err` says why not.
    pub(super) fn attach(&self, hello: &Hello) -> Result<(), String> {
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
    pub(super) fn not_live(&self) {
        self.store.lock().expect("store lock").live = false;
    }

    /// Publishes the placeholder `jpeg` (copied into a pooled buffer).
    pub(super) fn placeholder(&self, jpeg: &[u8], wall_ns: u64) {
        let mut store = self.store.lock().expect("store lock");
        store.live = false;
        store.published = 0;
        let mut buf = store.take_buf(&self.metrics);
        buf.jpeg.clear();
        buf.jpeg.extend_from_slice(jpeg);
        write_head(&mut buf.head, buf.jpeg.len(), 0, wall_ns, false);
        self.metrics.offline_frames.fetch_add(1, Ordering::Relaxed);
        self.publish(&mut store, buf, 0, wall_ns, false);
    }

    /// A viewer joined: from now on each frame is copied as it is announced.
    pub(crate) fn viewer_joined(&self) {
        self.joined.notify_one();
    }

    /// Ends every stream: the channel holds no frame, and none is copied.
    pub(super) fn shut(&self) {
        let mut store = self.store.lock().expect("store lock");
        store.live = false;
        self.tx.send_replace(None);
    }
}

/// Writes the multipart part header for a frame into `out` (cleared, reused). Written per
/// frame, so without the formatting machinery: byte strings and [`put_decimal`].
pub(super) fn write_head(out: &mut BytesMut, len: usize, seq: u64, wall_ns: u64, live: bool) {
    out.clear();
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: image/jpeg\r\nContent-Length: ");
    put_decimal(out, len as u64, 1);
    out.extend_from_slice(b"\r\nX-Timestamp: ");
    put_decimal(out, wall_ns / 1_000_000_000, 1);
    out.extend_from_slice(b".");
    put_decimal(out, wall_ns % 1_000_000_000 / 1000, 6);
    out.extend_from_slice(b"\r\nX-Mecam-Seq: ");
    put_decimal(out, seq, 1);
    out.extend_from_slice(b"\r\nX-Mecam-Camera: ");
    out.extend_from_slice(if live { b"live" } else { b"offline" });
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends `v` in decimal, zero-padded to at least `width` digits (at most 20, the digits of
/// `u64::MAX`).
fn put_decimal(out: &mut BytesMut, mut v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while v > 0 || digits.len() - start < width.min(digits.len()) {
        start -= 1;
        digits[start] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits[start..]);
}
