//! Log lines an outsider can trigger, throttled to one line per interval with a count.
//!
//! A refused connection, a failed login, a garbage request: each is worth a line in the
//! journal, but an outsider who repeats it 10,000 times a second must not get 10,000 lines
//! (the journal rate-limits a whole service, hiding everything else, and an SD card wears).
//! [`LogThrottle::check`] lets the first occurrence of an interval through and counts the rest;
//! the next line that goes through says how many were held back, and so does
//! [`LogThrottle::flush`], which a service's periodic task calls so a burst that stopped is
//! still summed up.
//!
//! ```
//! use ipc::throttle::LogThrottle;
//! static REFUSED: LogThrottle = LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);
//! if let Some(held_back) = REFUSED.check() {
//!     tracing::warn!(held_back, "refused a connection: too many subscribers");
//! }
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The interval every outsider-triggered log line is throttled to: one line, then a count.
pub const OUTSIDER_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of log line, let through at most once per interval; the rest are counted.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last line went through; `None` before the first.
    last: Option<Instant>,
    /// Occurrences held back since the last line.
    held_back: u64,
    /// Occurrences ever, logged or not.
    total: u64,
}

impl LogThrottle {
    /// A throttle letting one line through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            state: Mutex::new(State {
                last: None,
                held_back: 0,
                total: 0,
            }),
        }
    }

    /// Counts one occurrence now; see [`LogThrottle::check_at`].
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// Counts one occurrence at `now`. `Some(held_back)`: log this one, saying that `held_back`
    /// others were held back since the last line. `None`: stay quiet (it was counted).
    pub fn check_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.lock();
        s.total += 1;
        let due = match s.last {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= self.interval,
        };
        if due {
            s.last = Some(now);
            Some(std::mem::take(&mut s.held_back))
        } else {
            s.held_back += 1;
            None
        }
    }

    /// The count held back since the last line, if any and if the interval has passed: the
    /// caller logs one summary line with it. Call it from a periodic task.
    pub fn flush(&self) -> Option<u64> {
        self.flush_at(Instant::now())
    }

    /// [`LogThrottle::flush`] at `now`.
    pub fn flush_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.lock();
        let due = s
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if s.held_back > 0 && due {
            s.last = Some(now);
            Some(std::mem::take(&mut s.held_back))
        } else {
            None
        }
    }

    /// Occurrences ever counted, logged or not (for status and metrics).
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_one_line_per_interval_and_the_next_says_how_many_were_held_back() {
        let t = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.check_at(t0), Some(0));
        let mut logged = 0;
        for i in 1..10_000u64 {
            if t.check_at(t0 + Duration::from_micros(i * 100)).is_some() {
                logged += 1;
            }
        }
        assert_eq!(logged, 0, "a flood within one interval logs nothing more");
        assert_eq!(t.check_at(t0 + Duration::from_secs(10)), Some(9_999));
        assert_eq!(t.total(), 10_001);
    }

    #[test]
    fn flush_sums_up_a_burst_that_stopped_once_the_interval_has_passed() {
        let t = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.flush_at(t0), None, "nothing held back, nothing to say");
        t.check_at(t0);
        t.check_at(t0 + Duration::from_secs(1));
        t.check_at(t0 + Duration::from_secs(2));
        assert_eq!(t.flush_at(t0 + Duration::from_secs(5)), None, "too early");
        assert_eq!(t.flush_at(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.flush_at(t0 + Duration::from_secs(30)), None, "said once");
    }
}
