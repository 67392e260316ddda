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
        if let Some(n) = self.refused.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more subscribers refused: announce socket full"
            );
        }
        if let Some(n) = self.untrusted.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more subscribers gave a consumer's name without running as one"
            );
        }
        if let Some(n) = self.protocol.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more announce connections closed after a protocol error"
            );
        }
        if let Some(n) = self.idle.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more subscribers disconnected for taking nothing"
            );
        }
        if let Some(n) = self.replaced.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more reserved announce places taken over by a newer connection"
            );
        }
        if let Some(n) = self.crowded.flush_at(now) {
            tracing::warn!(
                count = n,
                "{n} more announce connections closed before subscribing: too many waiting"
            );
        }
        if let Some(n) = self.accept.flush_at(now) {
            tracing::warn!(count = n, "{n} more accepts on the announce socket failed");
        }
    }
}
