//! Events: turning per-frame motion verdicts into events that start after motion persists
//! and end after a quiet gap.
//!
//! Times are seconds on the monotonic clock of the frames. A short dropout while motion is
//! still pending (one frame under the threshold) does not restart the wait.

/// Event timing, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventSettings {
    /// Persistence before start, seconds.
    pub min_duration_s: f64,
    /// Quiet gap before end, seconds.
    pub quiet_gap_s: f64,
    /// Longest event, seconds.
    pub max_event_s: f64,
    /// Pre-capture, seconds.
    pub pre_capture_s: f64,
    /// Post-capture, seconds.
    pub post_capture_s: f64,
}

/// While an event is pending, a gap in motion up to this long is tolerated, seconds.
pub const PENDING_TOLERANCE_S: f64 = 0.5;

/// Longest time, seconds, from the first motion of an event to its `Start` transition when
/// frames are analysed at `analysis_fps`: the persistence time, a dropout the pending state
/// tolerates, and one analysis period (the first frame at or after the persistence time).
/// The pre-capture ring must reach back this much further than the pre-capture itself.
pub fn max_start_delay_s(min_duration_s: f64, analysis_fps: f64) -> f64 {
    min_duration_s + PENDING_TOLERANCE_S + 1.0 / analysis_fps
}

/// How far before its `Start` transition an event's first motion can lie: the start delay,
/// and the time its object was followed before it counted as motion (the detector dates the
/// motion back to when the object was first seen, by at most
/// [`crate::detect::MAX_BACKDATE_S`]). The pre-capture ring must reach back this much further
/// than the pre-capture itself.
pub fn max_first_motion_age_s(min_duration_s: f64, analysis_fps: f64) -> f64 {
    max_start_delay_s(min_duration_s, analysis_fps) + crate::detect::MAX_BACKDATE_S
}

pub use events::EndReason;

/// What an observation changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// Nothing.
    None,
    /// An event starts; motion first seen at `first_motion` seconds.
    Start {
        /// When the motion that started it was first seen.
        first_motion: f64,
    },
    /// The event ends; last motion at `last_motion` seconds.
    End {
        /// Last motion seen.
        last_motion: f64,
        /// Why.
        reason: EndReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Idle,
    Pending { since: f64, last: f64 },
    Active { started: f64, last: f64 },
}

/// The event state machine.
#[derive(Debug, Clone)]
pub struct EventTracker {
    settings: EventSettings,
    state: State,
}

impl EventTracker {
    /// A tracker with these timings.
    pub fn new(settings: EventSettings) -> EventTracker {
        EventTracker {
            settings,
            state: State::Idle,
        }
    }

    /// Whether an event is in progress.
    pub fn active(&self) -> bool {
        matches!(self.state, State::Active { .. })
    }

    /// Feeds one analysed frame at `t` seconds.
    pub fn observe(&mut self, t: f64, motion: bool) -> Transition {
        self.observe_since(t, motion.then_some(t))
    }

    /// Feeds one analysed frame at `t` seconds, with motion first seen at `since` (its
    /// object was followed since then before it counted), or `None` for no motion.
    pub fn observe_since(&mut self, t: f64, since: Option<f64>) -> Transition {
        let s = self.settings;
        let motion = since.is_some();
        match self.state {
            State::Idle if motion => {
                let since = since.map_or(t, |s| s.min(t));
                self.state = State::Pending { since, last: t };
                self.promote(t)
            }
            State::Idle => Transition::None,
            State::Pending { since, .. } if motion => {
                self.state = State::Pending { since, last: t };
                self.promote(t)
            }
            State::Pending { last, .. } => {
                if t - last > PENDING_TOLERANCE_S {
                    self.state = State::Idle;
                }
                Transition::None
            }
            State::Active { started, last } => {
                let last = if motion { t } else { last };
                if t - started >= s.max_event_s {
                    self.state = State::Idle;
                    Transition::End {
                        last_motion: last,
                        reason: EndReason::MaxDuration,
                    }
                } else if !motion && t - last >= s.quiet_gap_s {
                    self.state = State::Idle;
                    Transition::End {
                        last_motion: last,
                        reason: EndReason::Quiet,
                    }
                } else {
                    self.state = State::Active { started, last };
                    Transition::None
                }
            }
        }
    }

    fn promote(&mut self, t: f64) -> Transition {
        if let State::Pending { since, .. } = self.state {
            if t - since >= self.settings.min_duration_s {
                self.state = State::Active {
                    started: since,
                    last: t,
                };
                return Transition::Start {
                    first_motion: since,
                };
            }
        }
        Transition::None
    }

    /// The camera went away: a pending event is forgotten, an active one ends now.
    pub fn interrupt(&mut self) -> Transition {
        let prev = std::mem::replace(&mut self.state, State::Idle);
        match prev {
            State::Active { last, .. } => Transition::End {
                last_motion: last,
                reason: EndReason::Interrupted,
            },
            _ => Transition::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EventSettings {
        EventSettings {
            min_duration_s: 1.0,
            quiet_gap_s: 2.0,
            max_event_s: 30.0,
            pre_capture_s: 1.0,
            post_capture_s: 1.0,
        }
    }

    fn run(tr: &mut EventTracker, from: f64, to: f64, motion: bool) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut t = from;
        while t < to - 1e-9 {
            let x = tr.observe(t, motion);
            if x != Transition::None {
                out.push(x);
            }
            t += 0.2;
        }
        out
    }

    #[test]
    fn starts_after_persistence_and_ends_after_quiet_gap() {
        let mut tr = EventTracker::new(settings());
        let starts = run(&mut tr, 0.0, 3.0, true);
        assert_eq!(starts.len(), 1);
        assert!(matches!(starts[0], Transition::Start { first_motion } if first_motion == 0.0));
        assert!(tr.active());
        let ends = run(&mut tr, 3.0, 6.0, false);
        assert_eq!(ends.len(), 1);
        assert!(
            matches!(ends[0], Transition::End { reason: EndReason::Quiet, last_motion } if (last_motion - 2.8).abs() < 1e-6)
        );
    }

    #[test]
    fn an_event_starts_within_max_start_delay_of_first_motion() {
        let fps = 5.0;
        let bound = max_start_delay_s(settings().min_duration_s, fps);
        // Motion from 0 s with a dropout of every length the pending state tolerates,
        // placed everywhere around the persistence time.
        for gap_frames in 0..=2u32 {
            for gap_at in 0..8u32 {
                let mut tr = EventTracker::new(settings());
                let start = (0..100u32).find_map(|k| {
                    let t = f64::from(k) / fps;
                    let motion = !(gap_at..gap_at + gap_frames).contains(&k);
                    match tr.observe(t, motion) {
                        Transition::Start { first_motion } => Some(t - first_motion),
                        _ => None,
                    }
                });
                let delay = start.expect("an event starts");
                assert!(delay <= bound + 1e-9, "{delay} > {bound}");
            }
        }
    }

    #[test]
    fn short_blips_never_start() {
        let mut tr = EventTracker::new(settings());
        for k in 0..10 {
            let t = k as f64 * 2.0;
            assert_eq!(run(&mut tr, t, t + 0.6, true), vec![]);
            assert_eq!(run(&mut tr, t + 0.6, t + 2.0, false), vec![]);
        }
    }

    #[test]
    fn one_missed_frame_does_not_restart_the_wait() {
        let mut tr = EventTracker::new(settings());
        tr.observe(0.0, true);
        tr.observe(0.2, true);
        tr.observe(0.4, false);
        tr.observe(0.6, true);
        tr.observe(0.8, true);
        assert!(
            matches!(tr.observe(1.0, true), Transition::Start { first_motion } if first_motion == 0.0)
        );
    }

    #[test]
    fn long_motion_is_cut_at_max_duration_and_outage_interrupts() {
        let mut tr = EventTracker::new(settings());
        let x = run(&mut tr, 0.0, 31.5, true);
        assert!(
            matches!(
                x[1],
                Transition::End {
                    reason: EndReason::MaxDuration,
                    ..
                }
            ),
            "{x:?}"
        );
        assert!(matches!(tr.interrupt(), Transition::None));
        run(&mut tr, 40.0, 42.0, true);
        assert!(tr.active());
        assert!(matches!(
            tr.interrupt(),
            Transition::End {
                reason: EndReason::Interrupted,
                ..
            }
        ));
        assert!(!tr.active());
    }
}
