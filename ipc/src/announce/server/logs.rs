//! The announce server's log throttles: one per kind of line a peer can trigger, so a peer
//! cannot flood the journal, with a summary of what was held back.

use std::time::{Duration, Instant};

use crate::throttle::LogThrottle;

/// One throttle per kind of line a peer can trigger.
#[derive(Debug)]
pub(super) struct Logs {
    pub(super) refused: LogThrottle,
    pub(super) untrusted: LogThrottle,
    pub(super) protocol: LogThrottle,
    pub(super) idle: LogThrottle,
    pub(super) replaced: LogThrottle,
    pub(super) crowded: LogThrottle,
    pub(super) accept: LogThrottle,
}

impl Logs {
    pub(super) fn new(interval: Duration) -> Logs {
        Logs {
            refused: LogThrottle::new(interval),
            untrusted: LogThrottle::new(interval),
            protocol: LogThrottle::new(interval),
            idle: LogThrottle::new(interval),
            replaced: LogThrottle::new(interval),
            crowded: LogThrottle::new(interval),
            accept: LogThrottle::new(interval),
        }
    }

    /// Sums up, one line each, what was held back and is due at `now`.
    pub(super) fn flush_at(&self, now: Instant) {
        let kinds = [
            (&self.refused, "subscribers refused: announce socket full"),
            (
                &self.untrusted,
                "subscribers gave a consumer's name without running as one",
            ),
            (
                &self.protocol,
                "announce connections closed after a protocol error",
            ),
            (&self.idle, "subscribers disconnected for taking nothing"),
            (
                &self.replaced,
                "reserved announce places taken over by a newer connection",
            ),
            (
                &self.crowded,
                "announce connections closed before subscribing: too many waiting",
            ),
            (&self.accept, "accepts on the announce socket failed"),
        ];
        for (throttle, what) in kinds {
            if let Some(n) = throttle.flush_at(now) {
                tracing::warn!(count = n, "{n} more {what}");
            }
        }
    }
}
