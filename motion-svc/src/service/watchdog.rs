//! The watchdog: systemd is pinged only while the detection loop makes progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipc::service::monotonic_ns;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// When the detection loop last made progress (monotonic ns), shared with the watchdog task:
/// systemd's watchdog is pinged only while this is fresh, so a loop that hangs gets the
/// service restarted, while a camera outage (the loop still turning) does not.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    /// The loop made progress at `now_ns`.
    pub fn beat_at(&self, now_ns: u64) {
        // Relaxed: a lone timestamp; the watchdog needs no other memory to be visible.
        self.0.store(now_ns, Ordering::Relaxed);
    }

    /// Whether the last progress is at most `within` before `now_ns`.
    pub fn fresh_at(&self, now_ns: u64, within: Duration) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        now_ns.saturating_sub(last) <= within.as_nanos() as u64
    }
}

/// Calls `ping` (systemd's watchdog) every half `interval` while `progress` is at most
/// `stall_after` old; a stall is logged once. The task is spawned on `tasks` and ends when
/// `shutdown` is cancelled.
pub(super) fn spawn_watchdog(
    (tasks, shutdown): (&TaskTracker, &CancellationToken),
    interval: Duration,
    stall_after: Duration,
    progress: Progress,
    ping: impl Fn() + Send + 'static,
) {
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        let mut stalled = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if progress.fresh_at(monotonic_ns(), stall_after) {
                ping();
                stalled = false;
            } else if !stalled {
                stalled = true;
                tracing::error!(
                    "the detection loop made no progress for {stall_after:?}: not pinging the watchdog, systemd will restart motion-svc"
                );
            }
        }
    });
}
