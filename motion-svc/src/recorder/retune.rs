//! New capture times and storage limits while running (the overrides file changed): they
//! apply from the next event on; an event being written keeps the times it started with.

use super::RecorderConfig;
use super::writer::{Writer, new_ring};
use events::Limits;

/// What a settings change may move in the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Retune {
    /// Seconds before the first motion kept in the clip.
    pub pre_capture_s: f64,
    /// Longest time from first motion to an event's start (the analysis rate moves it).
    pub start_delay_s: f64,
    /// Seconds after the last motion kept in the clip.
    pub post_capture_s: f64,
    /// Storage limits.
    pub limits: Limits,
}

impl Writer {
    /// Takes the new times and limits. A different ring window gets a new ring: what the old
    /// one held is dropped (an event starting in the next seconds has a shorter pre-capture),
    /// the old arena freed.
    pub(super) fn retune(&mut self, r: Retune) {
        let old_window = self.config.ring_window_s();
        let c: &mut RecorderConfig = &mut self.config;
        c.pre_capture_s = r.pre_capture_s;
        c.start_delay_s = r.start_delay_s;
        c.post_capture_s = r.post_capture_s.max(0.0);
        c.limits = r.limits;
        let window = self.config.ring_window_s();
        if (window - old_window).abs() > 1e-9 {
            self.ring = new_ring(&self.config);
        }
        tracing::debug!(
            pre_capture_s = r.pre_capture_s,
            post_capture_s = r.post_capture_s,
            ring_window_s = window,
            "recorder settings changed; they apply from the next event"
        );
    }
}
