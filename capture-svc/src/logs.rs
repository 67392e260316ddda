//! The log lines a camera (or whoever pretends to be one) can trigger, each through
//! [`ipc::throttle`]: one line per [`OUTSIDER_LOG_INTERVAL`] and kind, then a count of what
//! was held back.
//!
//! A camera that floods garbage, sends hostile frames, flaps, or an HTTP camera that answers
//! nonsense decides how often these things happen; the journal must not follow its pace (it
//! rate-limits the whole service, hiding everything else, and an SD card wears). The counters
//! in [`crate::capture::CaptureStats`] stay exact whatever is logged; [`flush`] (called by the
//! status task every tick) sums up a burst that stopped with one line.

use std::sync::Mutex;

use ipc::announce::CameraState;
use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};

use crate::capture::CaptureStats;
use crate::splitter::SplitStats;

/// Frames refused by the JPEG check before publishing.
pub static REFUSED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
/// Frames the splitter or the region dropped (truncated, oversized, corrupt, over capacity).
pub static DROPPED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
/// Reads that brought bytes outside any frame.
pub static GARBAGE: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
/// The camera's frame size changed.
pub static SIZE_CHANGED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
/// A camera process was started (once per attempt: a camera that keeps exiting repeats it).
pub static PROCESS_STARTED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
/// With no source configured, a camera was found (a flapping USB camera repeats it).
pub static CAMERA_FOUND: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// The lines of one kind of camera-state change: the first of an interval goes out at once;
/// the latest one held back is kept, so [`flush`] can say it with the count.
#[derive(Debug)]
pub struct StateLines {
    throttle: LogThrottle,
    latest_held: Mutex<Option<String>>,
}

impl StateLines {
    const fn new() -> StateLines {
        StateLines {
            throttle: LogThrottle::new(OUTSIDER_LOG_INTERVAL),
            latest_held: Mutex::new(None),
        }
    }

    /// Counts one change; `Some(held_back)`: log `message` now. `None`: it is kept as the
    /// latest held-back line.
    fn offer(&self, message: String) -> Option<(String, u64)> {
        let mut latest = self.latest_held.lock().unwrap_or_else(|e| e.into_inner());
        match self.throttle.check() {
            Some(held_back) => {
                *latest = None;
                Some((message, held_back))
            }
            None => {
                *latest = Some(message);
                None
            }
        }
    }

    /// The latest held-back line and how many were held back, once the interval has passed.
    fn flush(&self) -> Option<(String, u64)> {
        let mut latest = self.latest_held.lock().unwrap_or_else(|e| e.into_inner());
        let held_back = self.throttle.flush()?;
        Some((latest.take().unwrap_or_default(), held_back))
    }
}

/// One [`StateLines`] per state kind (starting, streaming, stalled, restarting, failed), so a
/// flapping camera cannot hide a failure behind its recoveries.
static STATE_LINES: [StateLines; 5] = [const { StateLines::new() }; 5];

/// The state kinds, in the order of [`STATE_LINES`].
const STATE_NAMES: [&str; 5] = ["starting", "streaming", "stalled", "restarting", "failed"];

fn state_index(state: &CameraState) -> usize {
    match state {
        CameraState::Starting => 0,
        CameraState::Streaming => 1,
        CameraState::Stalled => 2,
        CameraState::Restarting { .. } => 3,
        CameraState::Failed { .. } => 4,
    }
}

/// Logs a camera-state change `message` (at the state's level), throttled per state kind.
pub fn state_change(state: &CameraState, source: &str, message: String) {
    let kind = state_index(state);
    if let Some((message, held_back)) = STATE_LINES[kind].offer(message) {
        log_state(kind, source, &message, held_back, false);
    }
}

fn log_state(kind: usize, source: &str, message: &str, held_back: u64, summary: bool) {
    let name = STATE_NAMES[kind];
    let note = match (held_back, summary) {
        (0, _) => String::new(),
        (n, false) => format!(" ({n} more {name} changes held back before this one)"),
        (n, true) => format!(
            " (the latest of {n} {name} changes held back in the last {}s)",
            OUTSIDER_LOG_INTERVAL.as_secs()
        ),
    };
    match kind {
        0 | 1 => tracing::info!(%source, held_back, "{message}{note}"),
        2 | 3 => tracing::warn!(%source, held_back, "{message}{note}"),
        _ => tracing::error!(%source, held_back, "{message}{note}"),
    }
}

/// Counts `n` occurrences on `t`; `Some(held_back)` when one of them is due for a line.
pub fn check_n(t: &LogThrottle, n: u64) -> Option<u64> {
    let mut due = None;
    for _ in 0..n {
        if let Some(h) = t.check() {
            due = Some(h);
        }
    }
    due
}

/// The splitter's and the region's drops so far, for a log line.
pub fn drop_totals(split: &SplitStats, over_capacity: u64) -> String {
    format!(
        "{} truncated, {} oversized, {} corrupt, {over_capacity} over the slot capacity",
        split.truncated, split.oversized, split.corrupt
    )
}

/// Says what the throttles held back once their interval has passed; called by the status
/// task every tick with the current counters. `garbage_expected`: an HTTP camera's multipart
/// headers land outside frames, so garbage is logged at debug level there.
pub fn flush(s: &CaptureStats, source: &str, garbage_expected: bool) {
    if let Some(n) = REFUSED.flush() {
        let latest = s.last_refused.map(|r| r.to_string()).unwrap_or_default();
        tracing::warn!(
            held_back = n,
            "{n} more frames refused before publishing in the last {}s (latest: {latest}); totals: {}",
            OUTSIDER_LOG_INTERVAL.as_secs(),
            s.refused.summary()
        );
    }
    if let Some(n) = DROPPED.flush() {
        tracing::warn!(
            held_back = n,
            "camera stream: {n} more frames dropped in the last {}s; totals: {}",
            OUTSIDER_LOG_INTERVAL.as_secs(),
            drop_totals(&s.split, s.over_capacity)
        );
    }
    if let Some(n) = GARBAGE.flush() {
        garbage_line(s.split.garbage_bytes, n, garbage_expected);
    }
    // What a flapping source repeats, said at info level: the throttle, what happened, and
    // whether the summary names the source it settled on.
    let repeated = [
        (&SIZE_CHANGED, "frame size changed", false),
        (&PROCESS_STARTED, "camera process started", false),
        (&CAMERA_FOUND, "a camera was found", true),
    ];
    for (throttle, what, names_source) in repeated {
        if let Some(n) = throttle.flush() {
            let using = if names_source {
                format!("; using {source}")
            } else {
                String::new()
            };
            tracing::info!(
                %source,
                held_back = n,
                "{what} {n} more times in the last {}s{using}",
                OUTSIDER_LOG_INTERVAL.as_secs()
            );
        }
    }
    for (kind, lines) in STATE_LINES.iter().enumerate() {
        if let Some((message, n)) = lines.flush() {
            log_state(kind, source, &message, n, true);
        }
    }
}

/// The garbage line: `total` bytes so far, `held_back` lines held back.
pub fn garbage_line(total: u64, held_back: u64, expected: bool) {
    if expected {
        tracing::debug!(
            garbage_bytes = total,
            held_back,
            "{total} garbage bytes between frames so far (multipart headers)"
        );
    } else {
        tracing::warn!(
            garbage_bytes = total,
            held_back,
            "camera stream had {total} garbage bytes outside frames so far; is the camera program printing other output to stdout?"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_line_held_back_is_the_one_the_summary_says() {
        let lines = StateLines::new();
        assert_eq!(lines.offer("first".into()), Some(("first".into(), 0)));
        assert_eq!(lines.offer("second".into()), None);
        assert_eq!(lines.offer("third".into()), None);
        // Within the interval: nothing to say yet.
        assert_eq!(lines.flush(), None);
        assert_eq!(lines.throttle.total(), 3, "every change counted");
        assert_eq!(
            lines.latest_held.lock().unwrap().as_deref(),
            Some("third"),
            "the latest held-back line is kept for the summary"
        );
    }

    #[test]
    fn check_n_counts_every_occurrence() {
        let t = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
        assert_eq!(check_n(&t, 0), None);
        assert_eq!(check_n(&t, 5), Some(0));
        assert_eq!(check_n(&t, 3), None);
        assert_eq!(t.total(), 8);
    }
}
