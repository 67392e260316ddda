//! Closing an event: the clip finished (or salvaged after a write error), the poster, the
//! final `event.json` (kept to write later when the disk fails), and the end reported.

use std::sync::atomic::Ordering;

use super::disk::DiskState;
use super::writer::{Current, Writer};
use super::{MAX_PENDING_META, REPORT_QUEUE};
use crate::event::EndReason;
use crate::life::Report;
use events::avi;
use events::{CLIP, CLIP_PART, EventState, META_TMP, POSTER, POSTER_TMP};

impl Writer {
    /// Closes the clip, writes the poster and the final `event.json`. `reason` is why the
    /// event ended when no end was received (shutdown).
    pub(super) fn finish(&mut self, mut cur: Current, reason: Option<EndReason>) {
        if !cur.folder {
            // Nothing was written: report it, failed, with what the end said.
            self.close_meta(&mut cur, 0, reason);
            self.report(Report::Ended(cur.meta));
            return;
        }
        let mut frames = 0;
        if let Some(clip) = cur.clip.take() {
            let (finished, index) = clip.finish();
            self.index = index;
            match finished {
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
            let tmp = cur.dir.join(POSTER_TMP);
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
        if let Err(e) = events::write_meta(&cur.dir, &cur.meta) {
            self.final_meta_failed(&mut cur, &e);
        }
        self.report(Report::Ended(cur.meta));
        self.enforce_limits(None);
    }

    /// Hands `report` to the service ([`crate::life::Herald`] tells the journal and the
    /// hooks). Never blocks: with [`REPORT_QUEUE`] reports waiting it is lost, and logged.
    pub(super) fn report(&self, report: Report) {
        if let Err(e) = self.reports.try_send(report) {
            let (Report::Started(m) | Report::Ended(m)) = e.into_inner();
            tracing::error!(event = %m.id, "{REPORT_QUEUE} event reports waiting for the service: this one is lost (no journal record or hook for it); is the detection loop stuck?");
        }
    }

    /// The final `event.json` could not be written: make room and try once more, else keep
    /// it to write when the disk comes back. The event is reported failed either way.
    pub(super) fn final_meta_failed(&mut self, cur: &mut Current, e: &events::StoreError) {
        tracing::error!(event = %cur.meta.id, "{e}; the event is marked failed");
        let events::StoreError::Io { source, .. } = e;
        self.set_disk(DiskState::from_io(source));
        let _ = std::fs::remove_file(cur.dir.join(META_TMP));
        cur.meta.state = EventState::Failed;
        cur.meta.end_reason = Some(EndReason::WriteFailed);
        cur.meta
            .clip_error
            .get_or_insert_with(|| format!("cannot write event.json: {e}"));
        self.enforce_limits(Some(&cur.meta.id.clone()));
        if events::write_meta(&cur.dir, &cur.meta).is_ok() {
            return;
        }
        let _ = std::fs::remove_file(cur.dir.join(META_TMP));
        if self.pending_meta.len() >= MAX_PENDING_META {
            if let Some((_, lost)) = self.pending_meta.pop_front() {
                tracing::error!(event = %lost.id, "gave up writing its event.json ({MAX_PENDING_META} waiting): the next start marks it interrupted");
            }
        }
        self.pending_meta
            .push_back((cur.dir.clone(), cur.meta.clone()));
    }

    /// The final fields of `cur.meta`: end, frames, drops, state and reason.
    pub(super) fn close_meta(&self, cur: &mut Current, frames: usize, reason: Option<EndReason>) {
        if cur.meta.end_unix_ms.is_none() {
            let now = events::now_unix_ms();
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
}

/// After a write error: the frames that reached the disk are kept (the partial clip is
/// repaired as after a crash), or the partial file is removed. Returns the frames kept.
pub(super) fn salvage_clip(cur: &mut Current) -> usize {
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
