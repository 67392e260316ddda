//! The writer thread: takes frames into the pre-capture ring, opens an event's folder and
//! clip at its start and writes its frames (closing is in `close.rs`), and looks after the
//! events disk (its state, metadata left to write, recovery, storage limits).

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::disk::{DISK_LOG, DiskState, log_recovery, probe_disk};
use super::{
    CLOSE_AFTER_SILENCE, ClipFiles, ClipSink, DISK_CHECK_EVERY, EndInfo, FrameTag, MAX_FPS,
    MAX_PENDING_META, MIN_FREE_TO_RECORD, Msg, RecorderConfig, STORAGE_CHECK_EVERY,
};
use crate::event::EndReason;
use crate::life::Report;
use crate::ring::FrameRing;
use events::avi::IndexBuffer;
use events::{CLIP, CLIP_PART, EventMeta, EventState, META_TMP};

/// Frames the ring indexes for a window of `window_s` seconds.
pub(super) fn ring_frames(window_s: f64) -> usize {
    (window_s * MAX_FPS).ceil() as usize + 2
}

/// The pre-capture ring `config` asks for.
pub(super) fn new_ring(config: &RecorderConfig) -> FrameRing {
    let window_s = config.ring_window_s();
    FrameRing::new(config.pre_capture_bytes, ring_frames(window_s), window_s)
}

pub(super) struct Current {
    pub(super) meta: EventMeta,
    pub(super) dir: PathBuf,
    /// The event folder exists (false: nothing of this event is written).
    pub(super) folder: bool,
    pub(super) clip: Option<Box<dyn ClipSink>>,
    pub(super) ending_at_ns: Option<u64>,
    pub(super) peak: f32,
    pub(super) written_dropped: u64,
    /// The detection side's drop count when the event started.
    pub(super) dropped_before: u64,
    pub(super) last_frame: Instant,
}

impl Current {
    /// The clip cannot be written on: keep what is on disk (repaired when the event is
    /// finished), mark the event, and drop the rest of its frames (counted).
    pub(super) fn clip_failed(&mut self, what: &str, e: &std::io::Error) {
        tracing::error!(event = %self.meta.id, "cannot {what}: {e}; the clip stops here and the event will be marked failed");
        self.clip = None;
        self.meta
            .clip_error
            .get_or_insert_with(|| format!("cannot {what}: {e}"));
    }
}

pub(super) struct Writer {
    pub(super) config: RecorderConfig,
    pub(super) clips: Box<dyn ClipFiles>,
    pub(super) ring: FrameRing,
    pub(super) pool: SyncSender<Vec<u8>>,
    pub(super) reports: tokio::sync::mpsc::Sender<Report>,
    pub(super) current: Option<Current>,
    pub(super) poster: Vec<u8>,
    pub(super) last_storage_check: Instant,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) disk: DiskState,
    pub(super) disk_shared: Arc<Mutex<DiskState>>,
    /// Events the storage limits deleted, shared with [`super::Recorder::retention_deletions`].
    pub(super) retention_deleted: Arc<AtomicU64>,
    pub(super) last_disk_check: Instant,
    pub(super) recovery_pending: bool,
    /// Final metadata that could not be written: (folder, metadata), written again later.
    pub(super) pending_meta: std::collections::VecDeque<(PathBuf, EventMeta)>,
    /// The clip index, reserved at start for the longest clip
    /// ([`RecorderConfig::clip_index_frames`]) and handed from clip to clip: writing a frame
    /// never allocates. Empty while a clip holds it (or after a clip failed; the next start
    /// reserves it again).
    pub(super) index: IndexBuffer,
    /// Frames taken in, for [`super::Recorder::frames_handled`].
    pub(super) handled: Arc<AtomicU64>,
}

impl Writer {
    pub(super) fn new(
        config: RecorderConfig,
        clips: Box<dyn ClipFiles>,
        pool: SyncSender<Vec<u8>>,
        reports: tokio::sync::mpsc::Sender<Report>,
        dropped: Arc<AtomicU64>,
    ) -> Writer {
        let ring = new_ring(&config);
        let window_s = config.ring_window_s();
        let max_frames = ring_frames(window_s);
        tracing::info!(
            ring_bytes = ring.capacity_bytes(),
            ring_cap = ring.cap_bytes(),
            ring_window_s = window_s,
            ring_max_frames = max_frames,
            "pre-capture ring: {} bytes now, growing with the frames up to {} bytes, {window_s:.2} s ({} s pre-capture + {:.2} s until an event starts), at most {max_frames} frames",
            ring.capacity_bytes(),
            ring.cap_bytes(),
            config.pre_capture_s,
            config.start_delay_s,
        );
        let recovery_pending = config.recovery_pending;
        let index = IndexBuffer::with_frames(config.clip_index_frames());
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
            retention_deleted: Arc::default(),
            last_disk_check: Instant::now(),
            recovery_pending,
            pending_meta: std::collections::VecDeque::with_capacity(MAX_PENDING_META),
            index,
            handled: Arc::default(),
        }
    }

    /// Records what the events disk allows now; a change is logged (throttled).
    pub(super) fn set_disk(&mut self, state: DiskState) {
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
    pub(super) fn check_disk(&mut self) {
        self.last_disk_check = Instant::now();
        let min_free = MIN_FREE_TO_RECORD;
        let state = probe_disk(&self.config.events_dir, min_free);
        self.set_disk(state);
    }

    /// The periodic work, frames or not: the disk check, metadata and recovery left over from
    /// a bad disk, the storage limits.
    pub(super) fn maintenance(&mut self) {
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

    pub(super) fn write_pending_meta(&mut self) {
        while let Some((dir, meta)) = self.pending_meta.front() {
            match events::write_meta(dir, meta) {
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

    pub(super) fn recover(&mut self) {
        match events::recover(&self.config.events_dir) {
            Ok(r) => {
                log_recovery(&r);
                self.recovery_pending = r.write_errors > 0;
            }
            Err(e) => tracing::warn!("crash recovery: {e}"),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(Msg::Frame(buf, tag)) => {
                    self.on_frame(&buf, tag);
                    let _ = self.pool.try_send(buf);
                    // Release: pairs with the Acquire load in `Recorder::frames_handled`.
                    self.handled
                        .fetch_add(1, std::sync::atomic::Ordering::Release);
                }
                Ok(Msg::Start(meta, first_ns, dropped, fps)) => {
                    self.on_start(*meta, first_ns, dropped, fps);
                }
                Ok(Msg::End(info)) => self.on_end(*info),
                Ok(Msg::Reset) => self.ring.clear(),
                Ok(Msg::Retune(r)) => self.retune(*r),
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

    pub(super) fn on_idle(&mut self) {
        if let Some(cur) = &self.current {
            if cur.ending_at_ns.is_some() && cur.last_frame.elapsed() > CLOSE_AFTER_SILENCE {
                let cur = self.current.take().expect("checked");
                self.finish(cur, None);
            }
        }
    }

    pub(super) fn on_frame(&mut self, jpeg: &[u8], tag: FrameTag) {
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
    pub(super) fn not_recorded(
        &mut self,
        meta: EventMeta,
        dir: PathBuf,
        dropped_before: u64,
        why: String,
    ) {
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

    pub(super) fn on_start(
        &mut self,
        mut meta: EventMeta,
        first_ns: u64,
        dropped_before: u64,
        fps: f64,
    ) {
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
        if let Err(e) = events::write_meta(&dir, &meta) {
            let events::StoreError::Io { source, .. } = &e;
            self.set_disk(DiskState::from_io(source));
            // Nothing of it is on disk: the empty folder goes, the event is not recorded.
            let _ = std::fs::remove_file(dir.join(META_TMP));
            let _ = std::fs::remove_dir(&dir);
            return self.not_recorded(meta, dir, dropped_before, e.to_string());
        }
        let mut index = std::mem::take(&mut self.index);
        index.reserve_frames(self.config.clip_index_frames());
        let clip = self
            .clips
            .create(&dir.join(CLIP_PART), meta.width, meta.height, fps, index);
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
                if let Err(e) = events::write_meta(&cur.dir, &cur.meta) {
                    tracing::error!(event = %cur.meta.id, "{e}");
                }
            }
        }
        self.write_pre_capture(&mut cur, first_ns);
        self.report(Report::Started(cur.meta.clone()));
        if cur.meta.clip_error.is_some() {
            // Failed before it began: closed now, as failed.
            self.finish(cur, None);
            return;
        }
        self.current = Some(cur);
    }

    /// Writes into the new clip what the ring holds from `pre_capture_s` before the first
    /// motion (`first_ns`); a write error marks the event.
    fn write_pre_capture(&mut self, cur: &mut Current, first_ns: u64) {
        let since = first_ns.saturating_sub((self.config.pre_capture_s * 1e9) as u64);
        if let Some(clip) = &mut cur.clip {
            let mut result = Ok(());
            // The clip starts at its first frame: the pre-capture's, else the next one.
            cur.meta.clip_lead_ms = Some(0);
            for (entry, bytes) in self.ring.since(since) {
                if self.poster.is_empty() {
                    self.poster.extend_from_slice(bytes);
                    let lead_ms = first_ns.saturating_sub(entry.mono_ns) / 1_000_000;
                    cur.meta.clip_lead_ms = Some(u32::try_from(lead_ms).unwrap_or(u32::MAX));
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
    }

    pub(super) fn on_end(&mut self, info: EndInfo) {
        let Some(cur) = &mut self.current else { return };
        cur.meta.end_unix_ms = Some(info.end_unix_ms);
        cur.meta.duration_s =
            info.end_unix_ms.saturating_sub(cur.meta.start_unix_ms) as f64 / 1000.0;
        cur.meta.peak_score = info.peak_score;
        cur.meta.peak_area_pct = info.peak_area_pct;
        cur.meta.boxes = info.boxes;
        cur.meta.track = info.track;
        cur.meta.end_reason = Some(info.reason);
        cur.ending_at_ns = Some(info.last_motion_ns + (self.config.post_capture_s * 1e9) as u64);
        cur.last_frame = Instant::now();
    }

    pub(super) fn enforce_limits(&mut self, keep: Option<&str>) {
        self.last_storage_check = Instant::now();
        let dir = self.config.events_dir.clone();
        let keep = keep
            .map(str::to_owned)
            .or_else(|| self.current.as_ref().map(|c| c.meta.id.clone()));
        match events::enforce_limits(
            &dir,
            self.config.limits,
            keep.as_deref(),
            events::now_unix_ms(),
            &|| events::free_bytes(&dir),
        ) {
            Ok(deleted) if !deleted.is_empty() => {
                self.retention_deleted
                    .fetch_add(deleted.len() as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    "storage limits: deleted {} old event(s): {}",
                    deleted.len(),
                    deleted.join(", ")
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("storage limits: {e}"),
        }
    }
}
