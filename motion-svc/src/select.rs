//! Frame selection: which announced frames get analysed.
//!
//! The decision uses only sequence numbers and capture timestamps, never the length of a
//! queue: each offered frame is the newest one the client has, and it is analysed when at
//! least one analysis period (less a quarter period of jitter allowance) has passed since
//! the last analysed frame. Frames the client never saw (a jump in sequence numbers) are
//! counted as gaps. A sequence going backwards, a repeated sequence number, or a long silence
//! tell the caller to re-learn the background.

/// A silence longer than this between analysed frames means the scene may have changed
/// unseen: the background is re-learned.
pub const RELEARN_AFTER_SILENCE_NS: u64 = 2_000_000_000;

/// What to do with an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Analyse it.
    Analyse,
    /// Analyse it, but the stream was interrupted before it: re-learn first.
    AnalyseAfterGap,
    /// Not due yet: skip (still useful for the clip).
    Skip,
    /// Same sequence number as the previous frame: a duplicate, never analysed.
    Duplicate,
}

/// Counters, for logs and the metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelectStats {
    /// Frames offered.
    pub offered: u64,
    /// Frames analysed.
    pub analysed: u64,
    /// Frames that never reached us (sequence jumps).
    pub gaps: u64,
    /// Frames skipped because analysis was not due.
    pub skipped: u64,
    /// Duplicate sequence numbers.
    pub duplicates: u64,
    /// Restarts seen (sequence going backwards or silence).
    pub restarts: u64,
}

/// Chooses frames at a configured analysis rate.
#[derive(Debug, Clone)]
pub struct FrameSelector {
    period_ns: u64,
    last_seq: Option<u64>,
    last_analysed_ns: Option<u64>,
    stats: SelectStats,
}

impl FrameSelector {
    /// Analyse at most `fps` frames per second.
    pub fn new(fps: f64) -> FrameSelector {
        let mut s = FrameSelector {
            period_ns: 0,
            last_seq: None,
            last_analysed_ns: None,
            stats: SelectStats::default(),
        };
        s.set_fps(fps);
        s
    }

    /// Analyse at most `fps` frames per second from now on (the stream is not forgotten).
    pub fn set_fps(&mut self, fps: f64) {
        self.period_ns = (1e9 / fps.max(0.01)) as u64;
    }

    /// Forget the stream (new generation, camera restart): the next frame is analysed after a
    /// re-learn.
    pub fn reset(&mut self) {
        self.last_seq = None;
        self.last_analysed_ns = None;
    }

    /// Counters so far.
    pub fn stats(&self) -> SelectStats {
        self.stats
    }

    /// Offers the newest frame, with its sequence number and monotonic capture time.
    pub fn offer(&mut self, seq: u64, mono_ns: u64) -> Selection {
        self.stats.offered += 1;
        let mut restart = false;
        match self.last_seq {
            Some(last) if seq == last => {
                self.stats.duplicates += 1;
                return Selection::Duplicate;
            }
            Some(last) if seq > last => self.stats.gaps += seq - last - 1,
            Some(_) => restart = true,
            None => {}
        }
        self.last_seq = Some(seq);
        let due = match self.last_analysed_ns {
            None => true,
            Some(prev) if mono_ns < prev => {
                restart = true;
                true
            }
            Some(prev) => {
                let elapsed = mono_ns - prev;
                if elapsed > RELEARN_AFTER_SILENCE_NS {
                    restart = true;
                }
                elapsed >= self.period_ns - self.period_ns / 4
            }
        };
        if restart {
            self.stats.restarts += 1;
        }
        if !due && !restart {
            self.stats.skipped += 1;
            return Selection::Skip;
        }
        self.last_analysed_ns = Some(mono_ns);
        self.stats.analysed += 1;
        if restart || self.stats.analysed == 1 {
            Selection::AnalyseAfterGap
        } else {
            Selection::Analyse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn five_fps_out_of_fifteen_takes_every_third_frame() {
        let mut s = FrameSelector::new(5.0);
        let mut analysed = Vec::new();
        for seq in 0..30u64 {
            let t = seq * 1000 * MS / 15;
            if matches!(
                s.offer(seq, t),
                Selection::Analyse | Selection::AnalyseAfterGap
            ) {
                analysed.push(seq);
            }
        }
        assert_eq!(analysed, (0..30).step_by(3).collect::<Vec<_>>());
        assert_eq!(s.stats().skipped, 20);
        assert_eq!(s.stats().gaps, 0);
    }

    #[test]
    fn gaps_are_counted_and_the_newest_frame_is_analysed() {
        let mut s = FrameSelector::new(5.0);
        assert_eq!(s.offer(1, 0), Selection::AnalyseAfterGap);
        // The client skipped 2..=9 (we were slow): frame 10 is newest and due.
        assert_eq!(s.offer(10, 600 * MS), Selection::Analyse);
        assert_eq!(s.stats().gaps, 8);
    }

    #[test]
    fn duplicates_restarts_and_silences() {
        let mut s = FrameSelector::new(5.0);
        s.offer(5, 0);
        assert_eq!(s.offer(5, 10 * MS), Selection::Duplicate);
        // Sequence going backwards: a restarted camera.
        assert_eq!(s.offer(1, 300 * MS), Selection::AnalyseAfterGap);
        // A three second silence.
        assert_eq!(s.offer(2, 3300 * MS), Selection::AnalyseAfterGap);
        assert_eq!(s.stats().restarts, 2);
        assert_eq!(s.stats().duplicates, 1);
    }

    #[test]
    fn jitter_does_not_halve_the_rate() {
        let mut s = FrameSelector::new(15.0);
        let mut n = 0;
        let mut t = 0;
        for seq in 0..150u64 {
            t += if seq % 2 == 0 { 60 * MS } else { 73 * MS };
            if s.offer(seq, t) != Selection::Skip {
                n += 1;
            }
        }
        assert_eq!(n, 150);
    }
}
