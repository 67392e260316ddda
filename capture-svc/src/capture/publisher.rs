//! The capture loop's output: checks each frame, publishes it into the region, announces it
//! and the camera's state changes, and counts what it refused.

use std::time::{Duration, Instant};

use ipc::announce::{AnnounceHandle, CameraState};
use ipc::jpeg::{FrameLimits, FrameRejected};
use ipc::region::{FrameInfo, PublishError, RegionWriter};

use super::backoff::Backoff;
use super::stats::SharedStats;
use crate::logs;
use crate::source::SourceSpec;

/// Writes frames and states out.
pub struct Publisher {
    pub(super) region: RegionWriter,
    announce: AnnounceHandle,
    state: CameraState,
    pub(super) stats: SharedStats,
    size: (u32, u32),
    pub(super) source: String,
    /// What a frame from the current source may be (see [`SourceSpec::frame_limits`]).
    limits: FrameLimits,
    /// Bytes outside frames are normal from the current source (HTTP multipart headers).
    pub(super) garbage_expected: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("state", &self.state)
            .finish()
    }
}

impl Publisher {
    /// A publisher over the region and announce handle.
    pub fn new(
        region: RegionWriter,
        announce: AnnounceHandle,
        stats: SharedStats,
        size: (u32, u32),
        source: String,
    ) -> Publisher {
        stats.lock().expect("stats lock").source = source.clone();
        Publisher {
            region,
            announce,
            state: CameraState::Starting,
            stats,
            size,
            source,
            limits: FrameLimits::default(),
            garbage_expected: false,
        }
    }

    /// A (new) source is about to be opened: its label goes into the hello, its known frame
    /// size into the frame check.
    pub fn use_source(&mut self, spec: &SourceSpec) {
        self.limits = spec.frame_limits();
        self.garbage_expected = matches!(spec, SourceSpec::Http { .. });
        let label = spec.label();
        if label != self.source {
            self.announce.update_hello(|h| h.source = label.clone());
            self.stats.lock().expect("stats lock").source = label.clone();
            self.source = label;
        }
    }

    /// Gives the region back (for removal at shutdown).
    pub fn into_region(self) -> RegionWriter {
        self.region
    }

    /// Publishes one JPEG, after [`ipc::jpeg::check`] against the source's limits: a frame
    /// that fails it (too large for the camera, too much memory to decode, not a JPEG) is
    /// counted by reason, logged (throttled) and never published. True if published.
    pub fn publish(&mut self, jpeg: &[u8]) -> bool {
        // Reads only the marker segments up to the first scan, jumping by their lengths: a
        // dozen steps per frame whatever its size.
        let header = match ipc::jpeg::check(jpeg, &self.limits) {
            Ok(h) => h,
            Err(e) => {
                self.refuse(e, jpeg.len());
                return false;
            }
        };
        let (width, height) = (header.width, header.height);
        if (width, height) != self.size {
            self.size = (width, height);
            self.announce.update_hello(|h| {
                h.width = width;
                h.height = height;
            });
            if let Some(held_back) = logs::SIZE_CHANGED.check() {
                tracing::info!(
                    width,
                    height,
                    held_back,
                    "frame size is now {width}x{height}"
                );
            }
        }
        let info = FrameInfo::jpeg_now(width, height);
        match self.region.publish(&info, jpeg) {
            Ok(meta) => {
                self.announce.frame(&meta);
                {
                    let mut s = self.stats.lock().expect("stats lock");
                    s.published += 1;
                    s.refused_since_frame = 0;
                    s.last_frame = Some(Instant::now());
                }
                if self.state != CameraState::Streaming {
                    self.set_state(CameraState::Streaming, "");
                }
                true
            }
            Err(PublishError::TooLarge { .. }) => {
                let n = {
                    let mut s = self.stats.lock().expect("stats lock");
                    s.over_capacity += 1;
                    s.over_capacity
                };
                if let Some(held_back) = logs::DROPPED.check() {
                    tracing::warn!(
                        len = jpeg.len(),
                        capacity = self.region.slot_capacity(),
                        dropped = n,
                        held_back,
                        "frame larger than the slot capacity dropped ({n} so far); raise [capture] slot_capacity or lower quality"
                    );
                }
                false
            }
        }
    }

    /// Counts and logs (throttled) a frame refused by the check.
    fn refuse(&mut self, e: FrameRejected, len: usize) {
        let summary = {
            let mut s = self.stats.lock().expect("stats lock");
            s.refused.count(&e);
            s.last_refused = Some(e);
            s.refused_since_frame += 1;
            // Formatted only when a line is due (below); the counters stay exact regardless.
            s.refused
        };
        if let Some(held_back) = logs::REFUSED.check() {
            tracing::warn!(
                source = %self.source,
                reason = e.kind(),
                len,
                held_back,
                "frame refused before publishing, never shown or recorded: {e} ({len} bytes; limits {}x{}, {} MiB to decode); {held_back} more refused since the last such line; totals: {}",
                self.limits.max_width,
                self.limits.max_height,
                self.limits.max_buffered_bytes >> 20,
                summary.summary()
            );
        }
    }

    /// Takes the next backoff delay (at most `cap`) and records when the retry is due (for
    /// the watchdog).
    pub(super) fn schedule_retry(&mut self, backoff: &mut Backoff, cap: Duration) -> Duration {
        let delay = backoff.next_delay().min(cap);
        self.stats.lock().expect("stats lock").retry_at = Some(Instant::now() + delay);
        delay
    }

    /// Announces a state change with one log line (`detail` = e.g. the child's stderr tail).
    pub fn set_state(&mut self, state: CameraState, detail: &str) {
        if state == self.state {
            return;
        }
        logs::state_change(&state, &self.source, state_message(&state, detail));
        self.announce.state(state.clone());
        self.state = state.clone();
        self.stats.lock().expect("stats lock").state = Some(state);
    }
}

/// The log line of a state change. The child's stderr tail (`detail`, already bounded by
/// [`crate::supervise::StderrTail`]) goes into the text itself: journald keeps extra fields
/// apart from MESSAGE, so `journalctl -u mecam-capture` would not show them.
pub(super) fn state_message(state: &CameraState, detail: &str) -> String {
    let mut message = match state {
        CameraState::Streaming => "camera streaming".to_owned(),
        CameraState::Starting => "camera starting".to_owned(),
        CameraState::Stalled => {
            "camera stalled: no frame within the stall timeout; restarting it".to_owned()
        }
        CameraState::Restarting { reason } => format!("camera restarting: {reason}"),
        CameraState::Failed { reason } => format!("camera failed: {reason}"),
    };
    if !detail.is_empty() {
        message.push_str("; its last stderr lines: ");
        message.push_str(detail);
    }
    message
}
