//! What the capture loop counts, for the status task and the watchdog.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipc::announce::CameraState;
use ipc::jpeg::FrameRejected;

use super::EXIT_GRACE;
use crate::config::CaptureConfig;
use crate::splitter::SplitStats;

/// Frames refused by [`ipc::jpeg::check`] before publishing, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedFrames {
    /// No SOI, or a malformed marker segment.
    pub not_jpeg: u64,
    /// The bytes end before the first scan.
    pub truncated: u64,
    /// A frame header no camera sends (zero size, hierarchical).
    pub unsupported: u64,
    /// Larger than the camera's frames (or the ceiling for any camera).
    pub too_large: u64,
    /// Progressive or multi-scan with a coefficient buffer over the memory budget.
    pub too_much_memory: u64,
}

impl RefusedFrames {
    /// Counts one refusal.
    pub fn count(&mut self, r: &FrameRejected) {
        *match r {
            FrameRejected::NotJpeg => &mut self.not_jpeg,
            FrameRejected::Truncated => &mut self.truncated,
            FrameRejected::Unsupported => &mut self.unsupported,
            FrameRejected::TooLarge { .. } => &mut self.too_large,
            FrameRejected::TooMuchMemory { .. } => &mut self.too_much_memory,
        } += 1;
    }

    /// Each reason's stable name ([`FrameRejected::kind`]) and count.
    pub fn by_reason(&self) -> [(&'static str, u64); 5] {
        [
            ("not_jpeg", self.not_jpeg),
            ("truncated", self.truncated),
            ("unsupported", self.unsupported),
            ("too_large", self.too_large),
            ("too_much_memory", self.too_much_memory),
        ]
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }

    /// `"3 refused"`, with the non-zero reasons: `"3 refused (too_large 1, too_much_memory 2)"`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} refused", self.total());
        let mut first = true;
        for (name, n) in self.by_reason() {
            if n > 0 {
                s.push_str(if first { " (" } else { ", " });
                s.push_str(&format!("{name} {n}"));
                first = false;
            }
        }
        if !first {
            s.push(')');
        }
        s
    }
}

/// Counters the status task reads.
#[derive(Debug, Clone, Default)]
pub struct CaptureStats {
    /// Frames published.
    pub published: u64,
    /// Frames dropped by the region: larger than the slot capacity.
    pub over_capacity: u64,
    /// Splitter counters, summed over sessions.
    pub split: SplitStats,
    /// Frames refused by the JPEG check (size, decode memory) before publishing.
    pub refused: RefusedFrames,
    /// The latest refusal.
    pub last_refused: Option<FrameRejected>,
    /// Frames refused since the last one published (a stall with only these says so).
    pub refused_since_frame: u64,
    /// When the last frame was published.
    pub last_frame: Option<Instant>,
    /// The current state.
    pub state: Option<CameraState>,
    /// The current source's label (as in the hello).
    pub source: String,
    /// Source restarts.
    pub restarts: u64,
    /// When the capture loop, after a failure, is due to try the source again (the latest such
    /// time; it stays set during the attempt). `None` before any failure and once the loop has
    /// stopped retrying (a file source that ended).
    pub retry_at: Option<Instant>,
}

impl CaptureStats {
    /// Whether the capture loop is legitimately between frames: starting, or restarting or
    /// failed with a retry that is pending or in progress (within `attempt` of its time).
    /// The watchdog is pinged only then or while frames flow, so a loop that stopped turning
    /// is left to systemd.
    pub fn restarting(&self, now: Instant, attempt: Duration) -> bool {
        match self.state {
            None | Some(CameraState::Starting) => true,
            Some(CameraState::Restarting { .. } | CameraState::Failed { .. }) => {
                self.retry_at.is_some_and(|at| now < at + attempt)
            }
            Some(CameraState::Streaming | CameraState::Stalled) => false,
        }
    }
}

/// The longest one attempt at the source takes before the capture loop turns again: an HTTP
/// connect, a stall timeout without a frame, then stopping the camera process.
pub fn attempt_bound(cfg: &CaptureConfig) -> Duration {
    crate::http::CONNECT_TIMEOUT
        + cfg.stall_timeout()
        + EXIT_GRACE
        + crate::supervise::STOP_GRACE
        + Duration::from_secs(1)
}

/// Shared view of [`CaptureStats`].
pub type SharedStats = Arc<Mutex<CaptureStats>>;
