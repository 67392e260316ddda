//! The recorder: a writer thread that owns the pre-capture ring, the clip being written, the
//! poster and the event folder, fed by a bounded channel so that writing never stalls
//! detection.
//!
//! Frames travel in buffers from a fixed pool of `queue_frames` buffers: the detection side
//! takes a buffer, copies the frame in, and sends it; the writer stores or writes it and
//! sends the buffer back. When the pool is empty (the disk is slow) the frame is dropped and
//! counted, never queued: memory stays flat. Control messages (start, end) use spare channel
//! capacity that frames can never fill.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::avi::{self, AviWriter};
use crate::event::EndReason;
use crate::life::Report;
use crate::ring::FrameRing;
use crate::store::{self, CLIP, CLIP_PART, EventMeta, EventState, Limits, POSTER, Recovery};

/// Channel slots reserved for control messages beyond the frame pool.
pub const CONTROL_SLACK: usize = 16;
/// Highest frame rate the ring's frame index is sized for.
pub const MAX_FPS: f64 = 60.0;
/// Reports ([`Report`]: an event started, an event ended) waiting for the service, at most:
/// a start and an end for each of 16 events. When it is full a report is lost, and logged.
pub const REPORT_QUEUE: usize = 32;
/// How often the writer checks the storage limits when idle (they are also checked when an
/// event starts and after each event).
pub const STORAGE_CHECK_EVERY: Duration = Duration::from_secs(600);
/// An ending clip with no frames for this long is closed anyway.
const CLOSE_AFTER_SILENCE: Duration = Duration::from_secs(2);
/// How often the writer looks at the events disk (free space, read-only, writable), frames
/// or not: a disk that comes back is noticed within this.
pub const DISK_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Below this much free space (after the storage limits made room) no event is recorded.
pub const MIN_FREE_TO_RECORD: u64 = 1024 * 1024;
/// Final `event.json` files that could not be written (full disk), kept to write again when
/// the disk comes back, at most (the oldest is given up, logged).
pub const MAX_PENDING_META: usize = 16;

/// Changes of the events disk's state are logged once per change, and at most once per
/// interval if it flaps (then with a count).
static DISK_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);

/// What the events disk allows, as the writer last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DiskState {
    /// Writable, with room.
    #[default]
    Ok,
    /// No space left (after the storage limits deleted what they may).
    Full,
    /// Mounted read-only.
    ReadOnly,
    /// Anything else: missing, not a directory, no permission, I/O errors.
    Broken(String),
}

impl DiskState {
    /// The state an I/O error on the events disk shows.
    pub fn from_io(e: &std::io::Error) -> DiskState {
        match e.raw_os_error() {
            Some(n) if n == nix::errno::Errno::ENOSPC as i32 => DiskState::Full,
            Some(n) if n == nix::errno::Errno::EDQUOT as i32 => DiskState::Full,
            Some(n) if n == nix::errno::Errno::EROFS as i32 => DiskState::ReadOnly,
            _ => DiskState::Broken(e.to_string()),
        }
    }

    /// For the status line and the journal.
    pub fn describe(&self) -> String {
        match self {
            DiskState::Ok => "ok".into(),
            DiskState::Full => "full".into(),
            DiskState::ReadOnly => "read-only".into(),
            DiskState::Broken(why) => format!("unusable ({why})"),
        }
    }
}

/// Looks at the events disk without writing to it: the directory exists (it is created if
/// not), the file system is not read-only, has `min_free` bytes free, and the directory is
/// writable.
pub fn probe_disk(events_dir: &Path, min_free: u64) -> DiskState {
    if let Err(e) = std::fs::create_dir_all(events_dir) {
        return DiskState::from_io(&e);
    }
    match nix::sys::statvfs::statvfs(events_dir) {
        Err(e) => return DiskState::Broken(e.to_string()),
        Ok(s) if s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) => {
            return DiskState::ReadOnly;
        }
        Ok(_) if store::free_bytes(events_dir).is_some_and(|f| f < min_free) => {
            return DiskState::Full;
        }
        Ok(_) => {}
    }
    match nix::unistd::access(events_dir, nix::unistd::AccessFlags::W_OK) {
        Ok(()) => DiskState::Ok,
        Err(e) => DiskState::from_io(&std::io::Error::from(e)),
    }
}

/// Recorder settings.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Event folders go here.
    pub events_dir: PathBuf,
    /// Seconds before first motion kept in the clip.
    pub pre_capture_s: f64,
    /// Longest time from first motion to the start of the event
    /// ([`crate::event::max_start_delay_s`]): the ring keeps `pre_capture_s` plus this behind
    /// the newest frame, so the clip can still begin `pre_capture_s` before the first motion.
    pub start_delay_s: f64,
    /// Seconds after last motion kept in the clip.
    pub post_capture_s: f64,
    /// Bytes of the pre-capture ring (allocated once; it bounds the window when frames are
    /// large).
    pub pre_capture_bytes: usize,
    /// Frame buffers in flight (the channel bound).
    pub queue_frames: usize,
    /// Storage limits applied after each event and periodically.
    pub limits: Limits,
    /// The start's crash recovery could not write everything (read-only or full disk): the
    /// writer runs it again once the disk is writable.
    pub recovery_pending: bool,
}

impl RecorderConfig {
    /// Seconds the pre-capture ring keeps behind the newest frame: the pre-capture and the
    /// longest wait between first motion and the event's start.
    pub fn ring_window_s(&self) -> f64 {
        self.pre_capture_s + self.start_delay_s
    }
}

/// A clip being written, frame by frame.
pub trait ClipSink: Send {
    /// Appends a frame captured at `mono_ns`; `false` when it was not written (too large).
    ///
    /// # Errors
    /// The write failed.
    fn push(&mut self, jpeg: &[u8], mono_ns: u64) -> std::io::Result<bool>;
    /// Writes what is buffered.
    ///
    /// # Errors
    /// The write failed.
    fn flush(&mut self) -> std::io::Result<()>;
    /// Completes the file; the frames it holds.
    ///
    /// # Errors
    /// The write failed.
    fn finish(self: Box<Self>) -> std::io::Result<usize>;
}

/// Where the writer's clips go: [`AviFiles`] in the service; tests put a slower disk behind
/// the same calls.
pub trait ClipFiles: Send + 'static {
    /// Creates the clip file at `path`.
    ///
    /// # Errors
    /// It cannot be created.
    fn create(
        &self,
        path: &Path,
        width: u32,
        height: u32,
        nominal_fps: f64,
    ) -> std::io::Result<Box<dyn ClipSink>>;
}

/// Clips as AVI files ([`AviWriter`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct AviFiles;

impl ClipFiles for AviFiles {
    fn create(
        &self,
        path: &Path,
        width: u32,
        height: u32,
        nominal_fps: f64,
    ) -> std::io::Result<Box<dyn ClipSink>> {
        Ok(Box::new(AviWriter::create(
            path,
            width,
            height,
            nominal_fps,
        )?))
    }
}

impl ClipSink for AviWriter {
    fn push(&mut self, jpeg: &[u8], mono_ns: u64) -> std::io::Result<bool> {
        AviWriter::push(self, jpeg, mono_ns)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        AviWriter::flush(self)
    }

    fn finish(self: Box<Self>) -> std::io::Result<usize> {
        AviWriter::finish(*self)
    }
}

/// What the detection side knows about a frame it hands over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameTag {
    /// Capture time, monotonic ns.
    pub mono_ns: u64,
    /// Capture time, wall clock ns.
    pub wall_ns: u64,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Detection score when this frame was analysed.
    pub score: Option<f32>,
}

/// What an ending event reports to the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct EndInfo {
    /// Wall-clock end, ms.
    pub end_unix_ms: u64,
    /// Last motion, monotonic ns: the clip ends `post_capture_s` after it (or now, if later).
    pub last_motion_ns: u64,
    /// Peak score.
    pub peak_score: f32,
    /// Area at the peak.
    pub peak_area_pct: f32,
    /// Boxes at the peak.
    pub boxes: Vec<[f32; 4]>,
    /// Why the event ended.
    pub reason: EndReason,
}

enum Msg {
    Frame(Vec<u8>, FrameTag),
    /// The event, first motion (ns), the detection side's drop count when it was sent, and
    /// the camera's frame rate.
    Start(Box<EventMeta>, u64, u64, f64),
    End(Box<EndInfo>),
    Reset,
}

/// Counters of the detection side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Frames handed over.
    pub sent: u64,
    /// Frames dropped because no buffer was free (slow disk) or the channel was full.
    pub dropped: u64,
    /// Control messages that could not be queued.
    pub control_lost: u64,
}

/// The detection side's handle on the writer thread.
#[derive(Debug)]
pub struct Recorder {
    tx: Option<SyncSender<Msg>>,
    pool: Receiver<Vec<u8>>,
    reports: tokio::sync::mpsc::Receiver<Report>,
    thread: Option<JoinHandle<()>>,
    /// Where a frame's buffer goes back when the channel refuses it.
    pool_back: SyncSender<Vec<u8>>,
    stats: RecorderStats,
    /// `stats.dropped`, shared with the writer so that it counts the frames dropped while
    /// a clip is open (post-capture included) into that event's metadata.
    dropped: Arc<AtomicU64>,
    /// The events disk as the writer last saw it.
    disk: Arc<Mutex<DiskState>>,
}

impl Recorder {
    /// Starts the writer thread with a pool of `config.queue_frames` buffers and a
    /// pre-capture ring of `config.pre_capture_bytes`, writing AVI clips.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(config: RecorderConfig) -> std::io::Result<Recorder> {
        Recorder::start_with(config, Box::new(AviFiles))
    }

    /// [`Recorder::start`], with the clips going to `clips`.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start_with(
        config: RecorderConfig,
        clips: Box<dyn ClipFiles>,
    ) -> std::io::Result<Recorder> {
        let q = config.queue_frames.max(1);
        let (tx, rx) = sync_channel(q + CONTROL_SLACK);
        let (pool_tx, pool) = sync_channel(q);
        for _ in 0..q {
            pool_tx.send(Vec::new()).expect("pool has room");
        }
        let (report_tx, reports) = tokio::sync::mpsc::channel(REPORT_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let pool_back = pool_tx.clone();
        let mut writer = Writer::new(config, clips, pool_tx, report_tx, dropped.clone());
        let disk = Arc::clone(&writer.disk_shared);
        writer.check_disk();
        let thread = std::thread::Builder::new()
            .name("motion-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Recorder {
            tx: Some(tx),
            pool,
            reports,
            thread: Some(thread),
            pool_back,
            stats: RecorderStats::default(),
            dropped,
            disk,
        })
    }

    /// The events disk as the writer last saw it.
    pub fn disk(&self) -> DiskState {
        self.disk.lock().expect("disk state poisoned").clone()
    }

    /// Counters.
    pub fn stats(&self) -> RecorderStats {
        self.stats
    }

    fn count_drop(&mut self) {
        self.stats.dropped += 1;
        // Relaxed: a counter; the writer reads it at an event's start and end, and a frame
        // counted one message late changes nothing.
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands a frame over (copied into a pooled buffer). Never blocks: with no free buffer,
    /// or no room in the channel, the frame is dropped and counted; its buffer goes back to
    /// the pool.
    pub fn frame(&mut self, jpeg: &[u8], tag: FrameTag) {
        if self.tx.is_none() {
            return; // shut down
        }
        let Ok(mut buf) = self.pool.try_recv() else {
            self.count_drop();
            return;
        };
        buf.clear();
        buf.extend_from_slice(jpeg);
        let tx = self.tx.as_ref().expect("checked above");
        match tx.try_send(Msg::Frame(buf, tag)) {
            Ok(()) => self.stats.sent += 1,
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                if let Msg::Frame(buf, _) = msg {
                    // The pool has room: this buffer was taken from it just above.
                    let _ = self.pool_back.try_send(buf);
                }
                self.count_drop();
            }
        }
    }

    fn control(&mut self, msg: Msg) {
        if let Some(tx) = &self.tx {
            if tx.try_send(msg).is_err() {
                self.stats.control_lost += 1;
                tracing::error!(
                    "recorder control queue full or writer gone: an event start/end was lost"
                );
            }
        }
    }

    /// Starts recording `meta` (state recording), with pre-capture from `first_motion_ns`.
    /// `camera_fps` is the rate the camera announced (its hello): the clip's header claims it
    /// until the measured rate is known (a clip repaired after a crash keeps it). 0 if unknown.
    pub fn start_event(&mut self, meta: EventMeta, first_motion_ns: u64, camera_fps: f64) {
        let dropped = self.stats.dropped;
        self.control(Msg::Start(
            Box::new(meta),
            first_motion_ns,
            dropped,
            camera_fps,
        ));
    }

    /// Ends the current event; the clip goes on for the post-capture time.
    pub fn end_event(&mut self, info: EndInfo) {
        self.control(Msg::End(Box::new(info)));
    }

    /// The camera restarted: forget the pre-capture ring.
    pub fn reset(&mut self) {
        self.control(Msg::Reset);
    }

    /// The writer's next report, if one is waiting (non-blocking).
    pub fn report(&mut self) -> Option<Report> {
        self.reports.try_recv().ok()
    }

    /// The writer's next report, when it comes; `None` once the writer has stopped and every
    /// report was taken.
    pub async fn next_report(&mut self) -> Option<Report> {
        self.reports.recv().await
    }

    /// Closes the current clip and stops the thread.
    pub fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Current {
    meta: EventMeta,
    dir: PathBuf,
    /// The event folder exists (false: nothing of this event is written).
    folder: bool,
    clip: Option<Box<dyn ClipSink>>,
    ending_at_ns: Option<u64>,
    peak: f32,
    written_dropped: u64,
    /// The detection side's drop count when the event started.
    dropped_before: u64,
    last_frame: Instant,
}

impl Current {
    /// The clip cannot be written on: keep what is on disk (repaired when the event is
    /// finished), mark the event, and drop the rest of its frames (counted).
    fn clip_failed(&mut self, what: &str, e: &std::io::Error) {
        tracing::error!(event = %self.meta.id, "cannot {what}: {e}; the clip stops here and the event will be marked failed");
        self.clip = None;
        self.meta
            .clip_error
            .get_or_insert_with(|| format!("cannot {what}: {e}"));
    }
}

struct Writer {
    config: RecorderConfig,
    clips: Box<dyn ClipFiles>,
    ring: FrameRing,
    pool: SyncSender<Vec<u8>>,
    reports: tokio::sync::mpsc::Sender<Report>,
    current: Option<Current>,
    poster: Vec<u8>,
    last_storage_check: Instant,
    dropped: Arc<AtomicU64>,
    disk: DiskState,
    disk_shared: Arc<Mutex<DiskState>>,
    last_disk_check: Instant,
    recovery_pending: bool,
    /// Final metadata that could not be written: (folder, metadata), written again later.
    pending_meta: std::collections::VecDeque<(PathBuf, EventMeta)>,
}

impl Writer {
    fn new(
        config: RecorderConfig,
        clips: Box<dyn ClipFiles>,
        pool: SyncSender<Vec<u8>>,
        reports: tokio::sync::mpsc::Sender<Report>,
        dropped: Arc<AtomicU64>,
    ) -> Writer {
        let window_s = config.ring_window_s();
        let max_frames = (window_s * MAX_FPS).ceil() as usize + 2;
        let ring = FrameRing::new(config.pre_capture_bytes, max_frames, window_s);
        tracing::info!(
            ring_bytes = ring.capacity_bytes(),
            ring_window_s = window_s,
            ring_max_frames = max_frames,
            "pre-capture ring: {} bytes allocated, {window_s:.2} s ({} s pre-capture + {:.2} s until an event starts), at most {max_frames} frames",
            ring.capacity_bytes(),
            config.pre_capture_s,
            config.start_delay_s,
        );
        let recovery_pending = config.recovery_pending;
        Writer {
            config,
            clips,
            ring,
            pool,
            reports,
            current: None,
            poster: Vec::new(),
            last_storage_check: Instant::now(),
            dropped,
            disk: DiskState::Ok,
            disk_shared: Arc::default(),
            last_disk_check: Instant::now(),
            recovery_pending,
            pending_meta: std::collections::VecDeque::with_capacity(MAX_PENDING_META),
        }
    }

    /// Records what the events disk allows now; a change is logged (throttled).
    fn set_disk(&mut self, state: DiskState) {
        if state == self.disk {
            return;
        }
        let was_ok = self.disk == DiskState::Ok;
        *self.disk_shared.lock().expect("disk state poisoned") = state.clone();
        self.disk = state;
        if let Some(held_back) = DISK_LOG.check() {
            if self.disk == DiskState::Ok {
                tracing::info!(
                    held_back,
                    "events disk {} writable again: recording resumes",
                    self.config.events_dir.display()
                );
            } else {
                tracing::error!(
                    held_back,
                    disk = %self.disk.describe(),
                    "events disk {} is {}: recording nothing until it is writable again (motion is still detected and logged); free space or fix the disk",
                    self.config.events_dir.display(),
                    self.disk.describe()
                );
            }
        }
        if !was_ok && self.disk == DiskState::Ok {
            self.recovery_pending = true;
        }
    }

    /// Looks at the disk now (after making room when the limits say so).
    fn check_disk(&mut self) {
        self.last_disk_check = Instant::now();
        let min_free = MIN_FREE_TO_RECORD;
        let state = probe_disk(&self.config.events_dir, min_free);
        self.set_disk(state);
    }

    /// The periodic work, frames or not: the disk check, metadata and recovery left over from
    /// a bad disk, the storage limits.
    fn maintenance(&mut self) {
        if self.last_disk_check.elapsed() >= DISK_CHECK_EVERY {
            self.check_disk();
            if self.disk == DiskState::Ok {
                self.write_pending_meta();
                if self.recovery_pending && self.current.is_none() {
                    self.recover();
                }
            }
        }
        // During a long event too (it is kept): a nearly full disk gets room before it fills.
        if self.last_storage_check.elapsed() > STORAGE_CHECK_EVERY {
            self.enforce_limits(None);
        }
    }

    fn write_pending_meta(&mut self) {
        while let Some((dir, meta)) = self.pending_meta.front() {
            match store::write_meta(dir, meta) {
                Ok(()) => {
                    tracing::info!(event = %meta.id, "event.json written now that the disk is back");
                    self.pending_meta.pop_front();
                }
                Err(_) if !dir.is_dir() => {
                    // The folder was deleted meanwhile: nothing left to write into.
                    self.pending_meta.pop_front();
                }
                Err(e) => {
                    if let Some(held_back) = DISK_LOG.check() {
                        tracing::warn!(event = %meta.id, held_back, "event.json still cannot be written: {e}");
                    }
                    return;
                }
            }
        }
    }

    fn recover(&mut self) {
        match store::recover(&self.config.events_dir) {
            Ok(r) => {
                log_recovery(&r);
                self.recovery_pending = r.write_errors > 0;
            }
            Err(e) => tracing::warn!("crash recovery: {e}"),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(Msg::Frame(buf, tag)) => {
                    self.on_frame(&buf, tag);
                    let _ = self.pool.try_send(buf);
                }
                Ok(Msg::Start(meta, first_ns, dropped, fps)) => {
                    self.on_start(*meta, first_ns, dropped, fps);
                }
                Ok(Msg::End(info)) => self.on_end(*info),
                Ok(Msg::Reset) => self.ring.clear(),
                Err(RecvTimeoutError::Timeout) => self.on_idle(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.maintenance();
        }
        // Shutdown: close what is open, with the frames we have.
        if let Some(cur) = self.current.take() {
            self.finish(cur, Some(EndReason::Shutdown));
        }
    }

    fn on_idle(&mut self) {
        if let Some(cur) = &self.current {
            if cur.ending_at_ns.is_some() && cur.last_frame.elapsed() > CLOSE_AFTER_SILENCE {
                let cur = self.current.take().expect("checked");
                self.finish(cur, None);
            }
        }
    }

    fn on_frame(&mut self, jpeg: &[u8], tag: FrameTag) {
        self.ring.push(jpeg, tag.mono_ns, tag.wall_ns);
        let Some(cur) = &mut self.current else { return };
        if cur.ending_at_ns.is_some_and(|end| tag.mono_ns > end) {
            let cur = self.current.take().expect("checked");
            self.finish(cur, None);
            return;
        }
        cur.last_frame = Instant::now();
        if let Some(s) = tag.score {
            if s > cur.peak {
                cur.peak = s;
                self.poster.clear();
                self.poster.extend_from_slice(jpeg);
            }
        }
        if self.poster.is_empty() {
            self.poster.extend_from_slice(jpeg);
        }
        if let Some(clip) = &mut cur.clip {
            match clip.push(jpeg, tag.mono_ns) {
                Ok(true) => {}
                Ok(false) => cur.written_dropped += 1,
                Err(e) => {
                    cur.written_dropped += 1;
                    cur.clip_failed("write the clip", &e);
                    self.set_disk(DiskState::from_io(&e));
                    // The recording ends now, as failed: never left "recording" (which
                    // nobody may delete) while the disk is full.
                    let cur = self.current.take().expect("checked");
                    self.finish(cur, None);
                }
            }
        } else {
            cur.written_dropped += 1;
        }
    }

    /// An event that is not recorded at all (`why`): it is still reported when it ends, as
    /// failed, so that the journal's end record says so.
    fn not_recorded(&mut self, meta: EventMeta, dir: PathBuf, dropped_before: u64, why: String) {
        tracing::error!(event = %meta.id, "event not recorded: {why}");
        let mut meta = meta;
        meta.clip = None;
        meta.clip_error = Some(why);
        self.poster.clear();
        self.report(Report::Started(meta.clone()));
        self.current = Some(Current {
            meta,
            dir,
            folder: false,
            clip: None,
            ending_at_ns: None,
            peak: f32::MIN,
            written_dropped: 0,
            dropped_before,
            last_frame: Instant::now(),
        });
    }

    fn on_start(&mut self, mut meta: EventMeta, first_ns: u64, dropped_before: u64, fps: f64) {
        if let Some(cur) = self.current.take() {
            // Its end was lost (control queue full): the reason is not known.
            self.finish(cur, None);
        }
        let dir = self.config.events_dir.join(&meta.id);
        // Room first (the storage limits, free space included), then a look at the disk.
        self.enforce_limits(None);
        self.check_disk();
        if self.disk != DiskState::Ok {
            let why = format!("events disk {}", self.disk.describe());
            return self.not_recorded(meta, dir, dropped_before, why);
        }
        if let Err(e) = std::fs::create_dir(&dir) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                self.set_disk(DiskState::from_io(&e));
            }
            let why = format!("cannot create event folder {}: {e}", dir.display());
            return self.not_recorded(meta, dir, dropped_before, why);
        }
        // event.json first, so that a reader never finds a clip without metadata.
        meta.clip = Some(CLIP.to_string());
        meta.state = EventState::Recording;
        if let Err(e) = store::write_meta(&dir, &meta) {
            let store::StoreError::Io { source, .. } = &e;
            self.set_disk(DiskState::from_io(source));
            // Nothing of it is on disk: the empty folder goes, the event is not recorded.
            let _ = std::fs::remove_file(dir.join("event.json.tmp"));
            let _ = std::fs::remove_dir(&dir);
            return self.not_recorded(meta, dir, dropped_before, e.to_string());
        }
        let clip = self
            .clips
            .create(&dir.join(CLIP_PART), meta.width, meta.height, fps);
        self.poster.clear();
        let mut cur = Current {
            meta,
            dir,
            folder: true,
            clip: None,
            ending_at_ns: None,
            peak: f32::MIN,
            written_dropped: 0,
            dropped_before,
            last_frame: Instant::now(),
        };
        match clip {
            Ok(c) => cur.clip = Some(c),
            Err(e) => {
                self.set_disk(DiskState::from_io(&e));
                cur.clip_failed("create the clip", &e);
                cur.meta.clip = None;
                if let Err(e) = store::write_meta(&cur.dir, &cur.meta) {
                    tracing::error!(event = %cur.meta.id, "{e}");
                }
            }
        }
        let since = first_ns.saturating_sub((self.config.pre_capture_s * 1e9) as u64);
        if let Some(clip) = &mut cur.clip {
            let mut result = Ok(());
            for (entry, bytes) in self.ring.since(since) {
                if self.poster.is_empty() {
                    self.poster.extend_from_slice(bytes);
                }
                if let Err(e) = clip.push(bytes, entry.mono_ns) {
                    result = Err(e);
                    break;
                }
            }
            if let Err(e) = result.and_then(|()| clip.flush()) {
                self.set_disk(DiskState::from_io(&e));
                cur.clip_failed("write the pre-capture", &e);
            }
        }
        self.report(Report::Started(cur.meta.clone()));
        if cur.meta.clip_error.is_some() {
            // Failed before it began: closed now, as failed.
            self.finish(cur, None);
            return;
        }
        self.current = Some(cur);
    }

    fn on_end(&mut self, info: EndInfo) {
        let Some(cur) = &mut self.current else { return };
        cur.meta.end_unix_ms = Some(info.end_unix_ms);
        cur.meta.duration_s =
            info.end_unix_ms.saturating_sub(cur.meta.start_unix_ms) as f64 / 1000.0;
        cur.meta.peak_score = info.peak_score;
        cur.meta.peak_area_pct = info.peak_area_pct;
        cur.meta.boxes = info.boxes;
        cur.meta.end_reason = Some(info.reason);
        cur.ending_at_ns = Some(info.last_motion_ns + (self.config.post_capture_s * 1e9) as u64);
        cur.last_frame = Instant::now();
    }

    /// Closes the clip, writes the poster and the final `event.json`. `reason` is why the
    /// event ended when no end was received (shutdown).
    fn finish(&mut self, mut cur: Current, reason: Option<EndReason>) {
        if !cur.folder {
            // Nothing was written: report it, failed, with what the end said.
            self.close_meta(&mut cur, 0, reason);
            self.report(Report::Ended(cur.meta));
            return;
        }
        let mut frames = 0;
        if let Some(clip) = cur.clip.take() {
            match clip.finish() {
                Ok(0) => {
                    // Nothing to play (stopped right after the start): no clip at all.
                    let _ = std::fs::remove_file(cur.dir.join(CLIP_PART));
                    cur.meta.clip = None;
                }
                Ok(n) => {
                    frames = n;
                    if let Err(e) = std::fs::rename(cur.dir.join(CLIP_PART), cur.dir.join(CLIP)) {
                        cur.clip_failed("rename the clip", &e);
                    }
                }
                Err(e) => cur.clip_failed("close the clip", &e),
            }
        }
        if cur.meta.clip_error.is_some() {
            frames = salvage_clip(&mut cur);
        }
        if !self.poster.is_empty() {
            let tmp = cur.dir.join("poster.jpg.tmp");
            match std::fs::write(&tmp, &self.poster)
                .and_then(|()| std::fs::rename(&tmp, cur.dir.join(POSTER)))
            {
                Ok(()) => cur.meta.poster = Some(POSTER.into()),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::error!(event = %cur.meta.id, "cannot write poster: {e}");
                }
            }
        }
        self.close_meta(&mut cur, frames, reason);
        // The end is reported with the metadata as it is (or will be, once the disk is back)
        // in the final event.json, so that the journal and the hooks say what the folder does.
        if let Err(e) = store::write_meta(&cur.dir, &cur.meta) {
            self.final_meta_failed(&mut cur, &e);
        }
        self.report(Report::Ended(cur.meta));
        self.enforce_limits(None);
    }

    /// Hands `report` to the service ([`crate::life::Herald`] tells the journal and the
    /// hooks). Never blocks: with [`REPORT_QUEUE`] reports waiting it is lost, and logged.
    fn report(&self, report: Report) {
        if let Err(e) = self.reports.try_send(report) {
            let (Report::Started(m) | Report::Ended(m)) = e.into_inner();
            tracing::error!(event = %m.id, "{REPORT_QUEUE} event reports waiting for the service: this one is lost (no journal record or hook for it); is the detection loop stuck?");
        }
    }

    /// The final `event.json` could not be written: make room and try once more, else keep
    /// it to write when the disk comes back. The event is reported failed either way.
    fn final_meta_failed(&mut self, cur: &mut Current, e: &store::StoreError) {
        tracing::error!(event = %cur.meta.id, "{e}; the event is marked failed");
        let store::StoreError::Io { source, .. } = e;
        self.set_disk(DiskState::from_io(source));
        let _ = std::fs::remove_file(cur.dir.join("event.json.tmp"));
        cur.meta.state = EventState::Failed;
        cur.meta.end_reason = Some(EndReason::WriteFailed);
        cur.meta
            .clip_error
            .get_or_insert_with(|| format!("cannot write event.json: {e}"));
        self.enforce_limits(Some(&cur.meta.id.clone()));
        if store::write_meta(&cur.dir, &cur.meta).is_ok() {
            return;
        }
        let _ = std::fs::remove_file(cur.dir.join("event.json.tmp"));
        if self.pending_meta.len() >= MAX_PENDING_META {
            if let Some((_, lost)) = self.pending_meta.pop_front() {
                tracing::error!(event = %lost.id, "gave up writing its event.json ({MAX_PENDING_META} waiting): the next start marks it interrupted");
            }
        }
        self.pending_meta
            .push_back((cur.dir.clone(), cur.meta.clone()));
    }

    /// The final fields of `cur.meta`: end, frames, drops, state and reason.
    fn close_meta(&self, cur: &mut Current, frames: usize, reason: Option<EndReason>) {
        if cur.meta.end_unix_ms.is_none() {
            let now = store::now_unix_ms();
            cur.meta.end_unix_ms = Some(now);
            cur.meta.duration_s = now.saturating_sub(cur.meta.start_unix_ms) as f64 / 1000.0;
        }
        cur.meta.frames = frames as u64;
        let dropped_upstream = self
            .dropped
            .load(Ordering::Relaxed)
            .saturating_sub(cur.dropped_before);
        cur.meta.dropped_frames = cur.written_dropped + dropped_upstream;
        if cur.meta.end_reason.is_none() {
            cur.meta.end_reason = reason;
        }
        // A recording that could not be written ends as failed, and says so.
        if cur.meta.clip_error.is_none() {
            cur.meta.state = EventState::Complete;
        } else {
            cur.meta.state = EventState::Failed;
            cur.meta.end_reason = Some(EndReason::WriteFailed);
        }
    }

    fn enforce_limits(&mut self, keep: Option<&str>) {
        self.last_storage_check = Instant::now();
        let dir = self.config.events_dir.clone();
        let keep = keep
            .map(str::to_owned)
            .or_else(|| self.current.as_ref().map(|c| c.meta.id.clone()));
        match store::enforce_limits(
            &dir,
            self.config.limits,
            keep.as_deref(),
            store::now_unix_ms(),
            &|| store::free_bytes(&dir),
        ) {
            Ok(deleted) if !deleted.is_empty() => tracing::info!(
                "storage limits: deleted {} old event(s): {}",
                deleted.len(),
                deleted.join(", ")
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("storage limits: {e}"),
        }
    }
}

/// After a write error: the frames that reached the disk are kept (the partial clip is
/// repaired as after a crash), or the partial file is removed. Returns the frames kept.
fn salvage_clip(cur: &mut Current) -> usize {
    let part = cur.dir.join(CLIP_PART);
    cur.meta.clip = None;
    if !part.exists() {
        return 0;
    }
    let kept = avi::repair(&part).map_err(|e| e.to_string()).and_then(|n| {
        std::fs::rename(&part, cur.dir.join(CLIP))
            .map(|()| n)
            .map_err(|e| e.to_string())
    });
    match kept {
        Ok(n) => {
            cur.meta.clip = Some(CLIP.into());
            tracing::warn!(event = %cur.meta.id, "kept the {n} frames written before the error");
            n
        }
        Err(e) => {
            tracing::warn!(event = %cur.meta.id, "partial clip removed: {e}");
            let _ = std::fs::remove_file(&part);
            0
        }
    }
}

/// Event folders that recovery skipped (a hostile or damaged file can make thousands).
static RECOVERY_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);

/// Logs what a crash-recovery pass did: each closed event, and each folder left as it was
/// (throttled: one line per interval, then a count).
pub fn log_recovery(r: &Recovery) {
    for e in &r.recovered {
        if let Some(held_back) = RECOVERY_LOG.check() {
            tracing::warn!(event = %e.id, frames = e.frames, held_back, "closed an event interrupted by a crash (state interrupted)");
        }
    }
    for s in &r.skipped {
        if let Some(held_back) = RECOVERY_LOG.check() {
            tracing::warn!(event = %s.id, held_back, "crash recovery skipped event folder {}: {}", s.id, s.why);
        }
    }
    if !r.recovered.is_empty() || !r.skipped.is_empty() {
        tracing::warn!(
            closed = r.recovered.len(),
            skipped = r.skipped.len(),
            "crash recovery: {} interrupted event(s) closed, {} folder(s) left as they were{}",
            r.recovered.len(),
            r.skipped.len(),
            if r.write_errors > 0 {
                " (some for a write error: tried again when the events disk is writable)"
            } else {
                ""
            }
        );
    }
}

/// Next free counter for ids: one past the highest counter among existing folders.
pub fn next_counter(events_dir: &Path) -> u32 {
    std::fs::read_dir(events_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    store::parse_id(&n)?;
                    n.rsplit('-').next()?.parse::<u32>().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avi;
    use std::time::Instant;

    const MS: u64 = 1_000_000;
    /// The camera's rate in these tests: a frame every 100 ms.
    const FPS: f64 = 10.0;

    fn config(dir: &Path) -> RecorderConfig {
        RecorderConfig {
            events_dir: dir.to_path_buf(),
            pre_capture_s: 1.0,
            start_delay_s: 1.5,
            post_capture_s: 0.5,
            pre_capture_bytes: 1 << 20,
            queue_frames: 8,
            limits: Limits {
                max_total_bytes: 0,
                max_age_ms: 0,
                min_free_bytes: 0,
            },
            recovery_pending: false,
        }
    }

    /// AVI clips on a disk that takes this long per frame written: a slow SD card.
    struct SlowDisk(Duration);

    struct SlowClip(AviWriter, Duration);

    impl ClipFiles for SlowDisk {
        fn create(
            &self,
            path: &Path,
            width: u32,
            height: u32,
            fps: f64,
        ) -> std::io::Result<Box<dyn ClipSink>> {
            let avi = AviWriter::create(path, width, height, fps)?;
            Ok(Box::new(SlowClip(avi, self.0)))
        }
    }

    impl ClipSink for SlowClip {
        fn push(&mut self, jpeg: &[u8], mono_ns: u64) -> std::io::Result<bool> {
            std::thread::sleep(self.1);
            self.0.push(jpeg, mono_ns)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }

        fn finish(self: Box<Self>) -> std::io::Result<usize> {
            self.0.finish()
        }
    }

    fn jpeg(i: u64) -> Vec<u8> {
        crate::test_jpeg::encode_gray(64, 48, &vec![(i * 7 % 256) as u8; 64 * 48], 60).unwrap()
    }

    fn meta(id: &str) -> EventMeta {
        EventMeta::new(id.into(), store::parse_id(id).unwrap(), 64, 48)
    }

    /// The end of event `id` with last motion at frame `last`.
    fn end(id: &str, last: u64) -> EndInfo {
        EndInfo {
            end_unix_ms: meta(id).start_unix_ms + 1000,
            last_motion_ns: last * 100 * MS,
            peak_score: 1.0,
            peak_area_pct: 1.0,
            boxes: vec![],
            reason: EndReason::Quiet,
        }
    }

    fn tag(i: u64, score: Option<f32>) -> FrameTag {
        FrameTag {
            mono_ns: i * 100 * MS,
            wall_ns: 0,
            width: 64,
            height: 48,
            score,
        }
    }

    /// The next `Ended` report waiting in `rx`, skipping `Started` ones.
    fn ended(rx: &mut tokio::sync::mpsc::Receiver<Report>) -> Option<EventMeta> {
        std::iter::from_fn(|| rx.try_recv().ok()).find_map(|r| match r {
            Report::Ended(m) => Some(m),
            Report::Started(_) => None,
        })
    }

    fn wait_done(r: &mut Recorder) -> EventMeta {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(m) = ended(&mut r.reports) {
                return m;
            }
            assert!(Instant::now() < deadline, "no event completed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Hands a frame over, retrying while the pool is empty, so that tests not about drops
    /// are not disturbed by a busy machine.
    fn paced(r: &mut Recorder, i: u64, score: Option<f32>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let sent = r.stats().sent;
        while r.stats().sent == sent {
            assert!(Instant::now() < deadline, "writer never took a frame");
            r.frame(&jpeg(i), tag(i, score));
            if r.stats().sent == sent {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    #[test]
    fn a_clip_has_pre_capture_event_and_post_capture_and_a_poster() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Recorder::start(config(d.path())).unwrap();
        for i in 0..30 {
            paced(&mut r, i, None);
        }
        // Motion first seen at frame 30 (3.0 s): pre-capture from 2.0 s = frame 20.
        let id = "20261124T182900Z-0001";
        r.start_event(meta(id), 30 * 100 * MS, FPS);
        for i in 30..40 {
            paced(&mut r, i, Some(if i == 35 { 9.0 } else { 1.0 }));
        }
        r.end_event(EndInfo {
            end_unix_ms: meta(id).start_unix_ms + 4000,
            last_motion_ns: 39 * 100 * MS,
            peak_score: 9.0,
            peak_area_pct: 3.0,
            boxes: vec![[0.1, 0.1, 0.2, 0.2]],
            reason: EndReason::Quiet,
        });
        // Post-capture 0.5 s: frames 40..=44 go in, 45 closes the clip.
        for i in 40..50 {
            paced(&mut r, i, None);
        }
        let m = wait_done(&mut r);
        assert_eq!(m.state, EventState::Complete);
        let dir = d.path().join(id);
        let (_, frames) = avi::read_frames(&dir.join(CLIP)).unwrap();
        assert_eq!(frames.len(), 45 - 20);
        assert_eq!(frames[0], jpeg(20));
        assert_eq!(*frames.last().unwrap(), jpeg(44));
        assert_eq!(std::fs::read(dir.join(POSTER)).unwrap(), jpeg(35));
        let on_disk = store::read_meta(&dir).unwrap();
        assert_eq!(on_disk, m);
        assert_eq!(on_disk.frames, 25);
        assert_eq!(on_disk.peak_score, 9.0);
        assert!(!dir.join(CLIP_PART).exists());
        assert_eq!(on_disk.end_reason, Some(EndReason::Quiet));
        assert_eq!(on_disk.clip_error, None);
        assert_eq!(next_counter(d.path()), 1);
    }

    #[test]
    fn pre_capture_survives_the_wait_before_an_event_starts() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Recorder::start(config(d.path())).unwrap();
        // Motion first seen at frame 30 (3.0 s); the event is confirmed 1.2 s later (the
        // persistence time and a dropout), so Start arrives after frame 42.
        for i in 0..=42 {
            paced(&mut r, i, None);
        }
        let id = "20261124T182900Z-0004";
        r.start_event(meta(id), 30 * 100 * MS, FPS);
        r.end_event(end(id, 42));
        for i in 43..50 {
            paced(&mut r, i, None);
        }
        wait_done(&mut r);
        let (_, frames) = avi::read_frames(&d.path().join(id).join(CLIP)).unwrap();
        // First frame = first motion minus pre_capture_s (1 s) = frame 20.
        assert_eq!(frames[0], jpeg(20), "the clip lost its pre-capture");
    }

    #[test]
    fn a_slow_disk_drops_frames_counts_them_post_capture_included_and_never_blocks() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(d.path());
        cfg.queue_frames = 4;
        cfg.post_capture_s = 60.0;
        let slow = SlowDisk(Duration::from_millis(30));
        let mut r = Recorder::start_with(cfg, Box::new(slow)).unwrap();
        let id = "20261124T182900Z-0002";
        r.start_event(meta(id), 0, FPS);
        // 300 frames pushed as fast as possible: the writer can take only a few of them.
        // The event ends half-way; the rest falls in its post-capture.
        for i in 0..300 {
            if i == 150 {
                r.end_event(end(id, 150));
            }
            r.frame(&jpeg(i), tag(i, Some(1.0)));
        }
        let s = r.stats();
        assert!(s.dropped > 200, "{s:?}");
        assert_eq!(s.sent + s.dropped, 300);
        let m = wait_done(&mut r);
        assert!(m.dropped_frames >= s.dropped, "{m:?} {s:?}");
        assert!(m.frames <= s.sent);
    }

    #[test]
    fn a_frame_the_full_channel_refuses_gives_its_buffer_back() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(d.path());
        cfg.queue_frames = 2;
        let mut r = Recorder::start_with(cfg, Box::new(SlowDisk(Duration::from_secs(2)))).unwrap();
        let id = "20261124T182900Z-0005";
        r.start_event(meta(id), 0, FPS);
        // The writer sleeps 2 s on this frame while control messages fill the channel.
        paced(&mut r, 0, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.path().join(id).join(CLIP_PART).exists() {
            assert!(Instant::now() < deadline, "the event never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Frame 0 is next in the channel, ahead of every message sent from now on: the
        // writer sleeps 2 s on it before it can take any of them, so they fill the channel.
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.stats().control_lost == 0 {
            assert!(Instant::now() < deadline, "the channel never filled");
            r.reset();
        }
        r.frame(&jpeg(1), tag(1, None));
        assert_eq!(r.stats().dropped, 1, "{:?}", r.stats());
        // Once the writer has caught up, both buffers are back in the pool.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let free: Vec<_> = std::iter::from_fn(|| r.pool.try_recv().ok()).collect();
            let n = free.len();
            for b in free {
                r.pool_back.try_send(b).unwrap();
            }
            if n == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a buffer was lost: {n} of 2 free"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_clip_write_error_keeps_what_was_written_and_marks_the_event() {
        let d = tempfile::tempdir().unwrap();
        let (pool_tx, _pool) = sync_channel(1);
        let (done_tx, mut done) = tokio::sync::mpsc::channel(4);
        let mut w = Writer::new(
            config(d.path()),
            Box::new(AviFiles),
            pool_tx,
            done_tx,
            Arc::default(),
        );
        for i in 0..10 {
            w.on_frame(&jpeg(i), tag(i, None));
        }
        let id = "20261124T182900Z-0006";
        w.on_start(meta(id), 10 * 100 * MS, 0, FPS);
        let dir = d.path().join(id);
        // Pre-capture (frames 0..=9) is on disk; from now on every write fails.
        let cur = w.current.as_mut().unwrap();
        cur.clip = Some(Box::new(
            AviWriter::create(Path::new("/dev/full"), 64, 48, 10.0).unwrap(),
        ));
        let big = vec![0xab; 100_000];
        w.on_frame(&big, tag(10, Some(1.0)));
        // The recording ended there, as failed: not left "recording" until the motion ends.
        assert!(w.current.is_none());
        w.on_frame(&jpeg(11), tag(11, Some(1.0)));
        let m = ended(&mut done).unwrap();
        assert_eq!(m.state, EventState::Failed);
        assert!(
            m.clip_error.as_deref().unwrap().contains("write the clip"),
            "{m:?}"
        );
        assert_eq!(m.end_reason, Some(EndReason::WriteFailed));
        assert!(!dir.join(CLIP_PART).exists());
        let (_, frames) = avi::read_frames(&dir.join(CLIP)).unwrap();
        assert_eq!(frames.len(), 10);
        assert_eq!(m.frames, 10);
        assert_eq!(m.dropped_frames, 1, "the frame that failed is counted");
        assert_eq!(store::read_meta(&dir).unwrap(), m);
    }

    #[test]
    fn an_event_stopped_before_any_frame_names_no_clip() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Recorder::start(config(d.path())).unwrap();
        let id = "20261124T182900Z-0008";
        r.start_event(meta(id), 0, FPS);
        r.shutdown();
        let dir = d.path().join(id);
        let m = store::read_meta(&dir).unwrap();
        assert_eq!((m.state, m.clip, m.frames), (EventState::Complete, None, 0));
        assert!(!dir.join(CLIP).exists() && !dir.join(CLIP_PART).exists());
    }

    #[test]
    fn storage_limits_are_applied_when_an_event_starts() {
        let d = tempfile::tempdir().unwrap();
        let old = "20200101T000000Z-0001";
        std::fs::create_dir(d.path().join(old)).unwrap();
        let mut done = meta(old);
        done.state = EventState::Complete;
        store::write_meta(&d.path().join(old), &done).unwrap();
        let mut cfg = config(d.path());
        cfg.limits.max_age_ms = 86_400_000;
        let mut r = Recorder::start(cfg).unwrap();
        r.start_event(meta("20261124T182900Z-0007"), 0, FPS);
        paced(&mut r, 0, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while d.path().join(old).exists() {
            assert!(Instant::now() < deadline, "the old event was not deleted");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            ended(&mut r.reports).is_none(),
            "deleted while the new event is recording"
        );
    }

    #[test]
    fn the_disk_probe_tells_a_usable_disk_from_a_broken_one() {
        let d = tempfile::tempdir().unwrap();
        // Missing: created.
        assert_eq!(probe_disk(&d.path().join("events"), 0), DiskState::Ok);
        assert!(d.path().join("events").is_dir());
        // A file where the directory should be.
        std::fs::write(d.path().join("file"), b"x").unwrap();
        assert!(matches!(
            probe_disk(&d.path().join("file"), 0),
            DiskState::Broken(_)
        ));
        // Less free than asked for.
        assert_eq!(probe_disk(d.path(), u64::MAX), DiskState::Full);
    }

    #[test]
    fn unwritable_final_metadata_is_kept_up_to_its_bound_and_reported_failed() {
        let d = tempfile::tempdir().unwrap();
        let (pool_tx, _pool) = sync_channel(1);
        let (done_tx, mut done) = tokio::sync::mpsc::channel(MAX_PENDING_META * 2);
        let mut w = Writer::new(
            config(d.path()),
            Box::new(AviFiles),
            pool_tx,
            done_tx,
            Arc::default(),
        );
        for k in 0..MAX_PENDING_META + 3 {
            let id = format!("20261124T1829{:02}Z-0001", k % 60);
            // A folder that is gone (as if the disk failed under it): nothing can be written.
            let cur = Current {
                meta: meta(&id),
                dir: d.path().join("gone").join(&id),
                folder: true,
                clip: None,
                ending_at_ns: None,
                peak: f32::MIN,
                written_dropped: 0,
                dropped_before: 0,
                last_frame: Instant::now(),
            };
            w.finish(cur, Some(EndReason::Quiet));
            let m = ended(&mut done).unwrap();
            assert_eq!(
                (m.state, m.end_reason),
                (EventState::Failed, Some(EndReason::WriteFailed))
            );
            assert!(m.clip_error.unwrap().contains("event.json"));
        }
        assert_eq!(w.pending_meta.len(), MAX_PENDING_META);
        // The disk comes back: what is kept is written.
        std::fs::create_dir_all(d.path().join("gone")).unwrap();
        // ... except for the first, whose folder the user deleted meanwhile: given up.
        for (dir, _) in w.pending_meta.iter().skip(1) {
            std::fs::create_dir_all(dir).unwrap();
        }
        w.write_pending_meta();
        assert!(w.pending_meta.is_empty());
        let written = std::fs::read_dir(d.path().join("gone"))
            .unwrap()
            .flatten()
            .filter(|e| store::read_meta(&e.path()).is_ok_and(|m| m.state == EventState::Failed))
            .count();
        assert_eq!(written, MAX_PENDING_META - 1);
    }

    #[test]
    fn a_clip_claims_the_rate_the_camera_announced_until_it_is_measured() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Recorder::start(config(d.path())).unwrap();
        let id = "20261124T182900Z-0009";
        r.start_event(meta(id), 0, 25.0);
        paced(&mut r, 0, Some(1.0));
        r.shutdown();
        let (fps, frames) = avi::read_frames(&d.path().join(id).join(CLIP)).unwrap();
        assert_eq!((fps, frames.len()), (25.0, 1));
    }

    #[test]
    fn shutdown_mid_event_closes_the_clip() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Recorder::start(config(d.path())).unwrap();
        let id = "20261124T182900Z-0003";
        r.start_event(meta(id), 0, FPS);
        for i in 0..5 {
            paced(&mut r, i, Some(1.0));
        }
        r.shutdown();
        let m = store::read_meta(&d.path().join(id)).unwrap();
        assert_eq!(m.state, EventState::Complete);
        assert_eq!(m.end_reason, Some(EndReason::Shutdown));
        assert_eq!(
            avi::read_frames(&d.path().join(id).join(CLIP))
                .unwrap()
                .1
                .len(),
            5
        );
    }
}
