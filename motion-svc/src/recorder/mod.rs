//! The recorder: a writer thread that owns the pre-capture ring, the clip being written, the
//! poster and the event folder, fed by a bounded channel so that writing never stalls
//! detection.
//!
//! Frames travel in buffers from a fixed pool of `queue_frames` buffers: the detection side
//! takes a buffer, copies the frame in, and sends it; the writer stores or writes it and
//! sends the buffer back. When the pool is empty (the disk is slow) the frame is dropped and
//! counted, never queued: memory stays flat. Control messages (start, end) use spare channel
//! capacity that frames can never fill.
//!
//! Here: the detection side's handle ([`Recorder`]) and the messages. `writer.rs` is the
//! thread (ring, an event's start and frames, the disk's upkeep), `close.rs` closes an event,
//! `disk.rs` knows the events disk, `clip.rs` is where clips go.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::event::EndReason;
use crate::life::Report;
use events::{EventMeta, Limits};

mod clip;
mod close;
mod disk;
mod retune;
#[cfg(test)]
mod tests;
mod writer;

pub use clip::{AviFiles, ClipFiles, ClipSink};
pub use disk::{DiskState, log_recovery, probe_disk};
pub use retune::Retune;
use writer::Writer;

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

/// Recorder settings.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Event folders go here.
    pub events_dir: PathBuf,
    /// Seconds before first motion kept in the clip.
    pub pre_capture_s: f64,
    /// Longest time from first motion to the start of the event
    /// ([`crate::event::max_first_motion_age_s`]): the ring keeps `pre_capture_s` plus this behind
    /// the newest frame, so the clip can still begin `pre_capture_s` before the first motion.
    pub start_delay_s: f64,
    /// Seconds after last motion kept in the clip.
    pub post_capture_s: f64,
    /// Longest event ([`crate::event::EventSettings`]'s `max_event_s`): with the pre- and
    /// post-capture it bounds a clip's length, which the clip index is reserved for
    /// ([`RecorderConfig::clip_index_frames`]).
    pub max_event_s: f64,
    /// Bytes the pre-capture ring may grow to (it is sized by the seconds it keeps and the
    /// frames seen; this cap bounds the window when frames are large).
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

    /// Frames of the longest clip at [`MAX_FPS`] (the ring's window, the longest event, the
    /// post-capture and [`CLOSE_AFTER_SILENCE`]), at most [`events::avi::MAX_CLIP_FRAMES`]: the
    /// clip index is reserved for this many once, and kept from clip to clip, so that
    /// recording a frame never allocates. A faster camera grows it (to the same bound).
    pub fn clip_index_frames(&self) -> usize {
        let s = self.ring_window_s()
            + self.max_event_s
            + self.post_capture_s
            + CLOSE_AFTER_SILENCE.as_secs_f64();
        ((s * MAX_FPS).ceil() as usize).min(events::avi::MAX_CLIP_FRAMES)
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
    /// Boxes at each analysed frame (bounded, [`events::MAX_TRACK_FRAMES`]).
    pub track: Vec<events::TrackFrame>,
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
    /// New capture times and storage limits (`retune.rs`).
    Retune(Box<Retune>),
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
    /// Events the storage limits deleted (the writer counts them).
    retention_deleted: Arc<AtomicU64>,
    /// Frames the writer has taken off the channel (stored in the ring, written, or both).
    handled: Arc<AtomicU64>,
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
        let handled = Arc::new(AtomicU64::new(0));
        let mut writer = Writer::new(config, clips, pool_tx, report_tx, dropped.clone());
        writer.handled = Arc::clone(&handled);
        let disk = Arc::clone(&writer.disk_shared);
        let retention_deleted = Arc::clone(&writer.retention_deleted);
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
            retention_deleted,
            handled,
        })
    }

    /// Frames the writer has taken in so far: equal to `stats().sent` once it has caught up.
    pub fn frames_handled(&self) -> u64 {
        // Acquire: pairs with the writer's Release increment after a frame, so everything it
        // did for that frame (the ring, the clip) happened before a caller that sees the count.
        self.handled.load(Ordering::Acquire)
    }

    /// The events disk as the writer last saw it.
    pub fn disk(&self) -> DiskState {
        self.disk.lock().expect("disk state poisoned").clone()
    }

    /// Events the storage limits deleted since start.
    pub fn retention_deletions(&self) -> u64 {
        self.retention_deleted.load(Ordering::Relaxed)
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

    /// New capture times and storage limits, from the next event on (the overrides file
    /// changed).
    ///
    /// # Errors
    /// The control queue is full: `r` back, to try again later.
    pub fn retune(&mut self, r: Retune) -> Result<(), Retune> {
        match &self.tx {
            Some(tx) => tx.try_send(Msg::Retune(Box::new(r))).map_err(|e| match e {
                TrySendError::Full(Msg::Retune(r)) | TrySendError::Disconnected(Msg::Retune(r)) => {
                    *r
                }
                _ => unreachable!("the message sent is a Retune"),
            }),
            None => Ok(()),
        }
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
