//! The analyzer: frame selection, decoding, detection and the event state machine put
//! together, with no I/O, so the service and the accuracy suite run exactly the same code.
//!
//! It also decides what is never motion: a duplicated frame (same bytes as the previous
//! analysed one), a grey frame, a frame that does not decode, and anything across a camera
//! outage, stall or restart; after those the background is re-learned.

use crate::config::Settings;
use crate::decode::{DecodeError, LumaDecoder};
use crate::detect::{Detector, Verdict};
use crate::event::{EventTracker, Transition};
use crate::geometry::Rect;
use crate::select::{FrameSelector, RELEARN_AFTER_SILENCE_NS, Selection};
use events::{MAX_TRACK_BOXES, MAX_TRACK_FRAMES, TrackFrame};

/// One announced frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameInput<'a> {
    /// Sequence number from capture.
    pub seq: u64,
    /// Monotonic capture time, ns.
    pub mono_ns: u64,
    /// Wall-clock capture time, ns.
    pub wall_ns: u64,
    /// The JPEG.
    pub jpeg: &'a [u8],
}

/// What happened to one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Verdict and score when the frame was analysed.
    pub analysed: Option<(Verdict, f32)>,
    /// Event transition caused by this frame.
    pub transition: Transition,
}

/// The peak of the current (or last) event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peak {
    /// Score.
    pub score: f32,
    /// Area, percent.
    pub area_pct: f32,
    /// Boxes `[x, y, w, h]`.
    pub boxes: Vec<[f32; 4]>,
}

/// The moving objects' boxes at each analysed frame of the current (or last) event, bounded by
/// [`MAX_TRACK_FRAMES`]: when full, every second entry is dropped and from then on every
/// second frame is kept (then every fourth...). All of it is allocated once.
#[derive(Debug)]
pub struct BoxTrack {
    frames: Vec<TrackFrame>,
    used: usize,
    stride: u32,
    offered: u32,
    origin: f64,
}

impl BoxTrack {
    fn new() -> BoxTrack {
        BoxTrack {
            frames: (0..MAX_TRACK_FRAMES)
                .map(|_| TrackFrame {
                    t_ms: 0,
                    boxes: Vec::with_capacity(MAX_TRACK_BOXES),
                })
                .collect(),
            used: 0,
            stride: 1,
            offered: 0,
            origin: 0.0,
        }
    }

    /// Starts again for an event whose first motion was at `origin` seconds.
    fn restart(&mut self, origin: f64) {
        (self.used, self.stride, self.offered, self.origin) = (0, 1, 0, origin);
    }

    fn push(&mut self, t: f64, boxes: &[Rect]) {
        self.offered += 1;
        if (self.offered - 1) % self.stride != 0 {
            return;
        }
        if self.used == self.frames.len() {
            for i in 0..self.used / 2 {
                self.frames.swap(i, 2 * i);
            }
            self.used /= 2;
            self.stride *= 2;
        }
        let f = &mut self.frames[self.used];
        f.t_ms = ((t - self.origin).max(0.0) * 1000.0) as u32;
        f.boxes.clear();
        // The largest (the detector reports them largest first).
        f.boxes
            .extend(boxes.iter().take(MAX_TRACK_BOXES).map(|b| b.to_array()));
        self.used += 1;
    }

    /// The frames kept, oldest first.
    pub fn frames(&self) -> &[TrackFrame] {
        &self.frames[..self.used]
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnalyzerStats {
    /// Frames that failed to decode.
    pub corrupt: u64,
    /// Analysed frames that were byte-identical to the previous one.
    pub duplicates: u64,
    /// Grey frames.
    pub grey: u64,
    /// Scene changes.
    pub scene_changes: u64,
    /// Background re-learns.
    pub relearns: u64,
}

/// Selection + decoding + detection + events.
#[derive(Debug)]
pub struct Analyzer {
    selector: FrameSelector,
    decoder: LumaDecoder,
    detector: Detector,
    tracker: EventTracker,
    last_fingerprint: Option<u64>,
    duplicate_since: Option<u64>,
    peak: Peak,
    track: BoxTrack,
    stats: AnalyzerStats,
    last_error: Option<String>,
}

/// A cheap fingerprint of a JPEG: its length and a sample of its bytes. Two different camera
/// frames practically never share length and entropy-coded samples; a repeated buffer does.
pub fn fingerprint(jpeg: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ jpeg.len() as u64;
    let mut mix = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    let step = (jpeg.len() / 256).max(1);
    for &b in jpeg.iter().step_by(step) {
        mix(b);
    }
    for &b in &jpeg[jpeg.len().saturating_sub(512)..] {
        mix(b);
    }
    h
}

impl Analyzer {
    /// An analyzer with validated settings.
    ///
    /// # Errors
    /// The JPEG decoder cannot be created.
    pub fn new(settings: &Settings) -> Result<Analyzer, DecodeError> {
        Ok(Analyzer {
            selector: FrameSelector::new(settings.analysis_fps),
            decoder: LumaDecoder::new()?,
            detector: Detector::new(settings.detect.clone()),
            tracker: EventTracker::new(settings.events),
            last_fingerprint: None,
            duplicate_since: None,
            peak: Peak {
                boxes: Vec::with_capacity(crate::detect::MAX_BOXES),
                ..Peak::default()
            },
            track: BoxTrack::new(),
            stats: AnalyzerStats::default(),
            last_error: None,
        })
    }

    /// New settings while running (the overrides file changed): the analysis rate and the
    /// detection numbers, masks and zones change; the background, the event in progress and
    /// the counters stay.
    pub fn retune(&mut self, settings: &Settings) {
        self.selector.set_fps(settings.analysis_fps);
        self.detector.retune(settings.detect.clone());
    }

    /// Forgets an event the service did not record (detection was disarmed): motion still
    /// going on starts a new one after `min_duration_s`.
    pub fn forget_event(&mut self) {
        let _ = self.tracker.interrupt();
    }

    /// The detector (its last analysis and changed pixels, for the live preview).
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// Counters.
    pub fn stats(&self) -> AnalyzerStats {
        self.stats
    }

    /// Selection counters.
    pub fn selection(&self) -> crate::select::SelectStats {
        self.selector.stats()
    }

    /// The peak of the current or last event.
    pub fn peak(&self) -> &Peak {
        &self.peak
    }

    /// The boxes of the current or last event's analysed frames.
    pub fn track(&self) -> &BoxTrack {
        &self.track
    }

    /// Whether an event is in progress.
    pub fn event_active(&self) -> bool {
        self.tracker.active()
    }

    /// Frames are decoded only within `limits` (the camera's announced geometry and the
    /// memory budget); see [`LumaDecoder::set_limits`].
    pub fn set_frame_limits(&mut self, limits: ipc::jpeg::FrameLimits) {
        self.decoder.set_limits(limits);
    }

    /// The last decode error, taken (for logging once).
    pub fn take_error(&mut self) -> Option<String> {
        self.last_error.take()
    }

    fn relearn(&mut self) {
        self.stats.relearns += 1;
        self.detector.relearn();
        self.last_fingerprint = None;
        self.duplicate_since = None;
    }

    /// The camera went away (outage, stall, restart, failure): an active event ends now,
    /// the background is re-learned when frames come back.
    pub fn camera_lost(&mut self) -> Transition {
        self.selector.reset();
        self.relearn();
        self.tracker.interrupt()
    }

    /// Offers the newest frame.
    pub fn offer(&mut self, f: FrameInput<'_>) -> Outcome {
        let none = Outcome {
            analysed: None,
            transition: Transition::None,
        };
        let selection = self.selector.offer(f.seq, f.mono_ns);
        match selection {
            Selection::Skip | Selection::Duplicate => return none,
            Selection::AnalyseAfterGap => self.relearn(),
            Selection::Analyse => {}
        }
        let fp = fingerprint(f.jpeg);
        if self.last_fingerprint == Some(fp) {
            self.stats.duplicates += 1;
            self.duplicate_since.get_or_insert(f.mono_ns);
            // Never motion, but time passes for the event: a frozen camera ends an event.
            let transition = self.tracker.observe(f.mono_ns as f64 / 1e9, false);
            return Outcome {
                analysed: None,
                transition,
            };
        }
        self.last_fingerprint = Some(fp);
        if let Some(since) = self.duplicate_since.take() {
            if f.mono_ns.saturating_sub(since) >= RELEARN_AFTER_SILENCE_NS {
                // The camera was frozen: the scene may have changed unseen.
                self.relearn();
                self.last_fingerprint = Some(fp);
            }
        }
        let img = match self.decoder.decode(f.jpeg) {
            Ok(img) => img,
            Err(e) => {
                self.stats.corrupt += 1;
                self.last_error = Some(e.to_string());
                return none;
            }
        };
        let t = f.mono_ns as f64 / 1e9;
        let a = self.detector.analyse(img, t);
        let verdict = a.verdict;
        match verdict {
            Verdict::Grey => self.stats.grey += 1,
            Verdict::SceneChange => self.stats.scene_changes += 1,
            _ => {}
        }
        if verdict.is_motion() && a.score > self.peak.score {
            self.peak.score = a.score;
            self.peak.area_pct = a.area_pct;
            self.peak.boxes.clear();
            self.peak.boxes.extend(a.boxes.iter().map(|b| b.to_array()));
        }
        let (score, since) = (a.score, a.since);
        // Grey, scene change, learning: never motion; an event in progress just sees a quiet
        // frame.
        let transition = self
            .tracker
            .observe_since(t, since.filter(|_| verdict.is_motion()));
        if let Transition::Start { first_motion } = transition {
            self.track.restart(first_motion);
        }
        if self.tracker.active() && verdict.is_motion() {
            self.track.push(t, &a.boxes);
        }
        // The peak belongs to the event (and its build-up); it is cleared once idle again,
        // after the caller had the End transition to read it.
        if !self.tracker.active()
            && !matches!(transition, Transition::End { .. })
            && !verdict.is_motion()
        {
            self.peak.score = 0.0;
            self.peak.area_pct = 0.0;
            self.peak.boxes.clear();
        }
        Outcome {
            analysed: Some((verdict, score)),
            transition,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MotionConfig;
    use crate::test_jpeg::encode_gray;

    const W: usize = 320;
    const H: usize = 240;

    fn frame(bright: f32, object_x: Option<usize>) -> Vec<u8> {
        let mut px = vec![0u8; W * H];
        for y in 0..H {
            for x in 0..W {
                let base = 50.0 + 40.0 * (((x / 20) + (y / 20)) % 3) as f32 + x as f32 * 0.2;
                px[y * W + x] = (base * bright).min(255.0) as u8;
            }
        }
        if let Some(ox) = object_x {
            for y in 60..200 {
                for x in ox..(ox + 50).min(W) {
                    px[y * W + x] = 240;
                }
            }
        }
        encode_gray(W, H, &px, 80).unwrap()
    }

    fn analyzer() -> Analyzer {
        let c = MotionConfig {
            analysis_fps: 5.0,
            min_duration_s: 0.4,
            quiet_gap_s: 1.0,
            ..MotionConfig::default()
        };
        Analyzer::new(&c.validate().unwrap()).unwrap()
    }

    #[test]
    fn a_moving_object_starts_and_ends_an_event() {
        let mut a = analyzer();
        let mut transitions = Vec::new();
        for i in 0..60u64 {
            let obj = (20..40).contains(&i).then(|| ((i - 20) * 12) as usize);
            let jpeg = frame(1.0, obj);
            let o = a.offer(FrameInput {
                seq: i,
                mono_ns: i * 200_000_000,
                wall_ns: 0,
                jpeg: &jpeg,
            });
            if o.transition != Transition::None {
                transitions.push((i, o.transition));
            }
        }
        assert_eq!(transitions.len(), 2, "{transitions:?}");
        assert!(matches!(transitions[0].1, Transition::Start { .. }));
        assert!(matches!(transitions[1].1, Transition::End { .. }));
        assert!(a.peak().area_pct > 1.0);
        // Boxes for each analysed frame of the event, following the object rightwards.
        let track = a.track().frames();
        assert!(track.len() >= 5, "{track:?}");
        assert!(track.iter().all(|f| !f.boxes.is_empty()));
        assert!(
            track.last().unwrap().boxes[0][0] > track[0].boxes[0][0],
            "{track:?}"
        );
    }

    #[test]
    fn the_box_track_is_bounded_and_spans_the_whole_event() {
        let mut track = BoxTrack::new();
        track.restart(10.0);
        // More boxes than a frame keeps: the first (largest) ones stay.
        let b = [Rect {
            x: 0.1,
            y: 0.2,
            w: 0.3,
            h: 0.4,
        }; MAX_TRACK_BOXES + 3];
        let n = MAX_TRACK_FRAMES * 5 + 3;
        for k in 0..n {
            track.push(10.0 + k as f64 * 0.2, &b);
        }
        let frames = track.frames();
        assert!(frames.len() <= MAX_TRACK_FRAMES && frames.len() > MAX_TRACK_FRAMES / 2);
        assert_eq!(frames[0].t_ms, 0);
        let last_ms = ((n - 1) as f64 * 200.0) as u32;
        assert!(
            frames.last().unwrap().t_ms + 8 * 200 >= last_ms,
            "{:?}",
            frames.last()
        );
        assert!(frames.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
        assert_eq!(frames[1].boxes, vec![[0.1, 0.2, 0.3, 0.4]; MAX_TRACK_BOXES]);
        // A new event starts empty.
        track.restart(100.0);
        assert!(track.frames().is_empty());
    }

    #[test]
    fn duplicates_corrupt_and_grey_frames_are_never_motion() {
        let mut a = analyzer();
        let still = frame(1.0, None);
        for i in 0..10u64 {
            a.offer(FrameInput {
                seq: i,
                mono_ns: i * 200_000_000,
                wall_ns: 0,
                jpeg: &still,
            });
        }
        assert!(a.stats().duplicates >= 8);
        let o = a.offer(FrameInput {
            seq: 10,
            mono_ns: 2_000_000_000,
            wall_ns: 0,
            jpeg: b"garbage",
        });
        assert_eq!(o.analysed, None);
        assert_eq!(a.stats().corrupt, 1);
        assert!(a.take_error().unwrap().contains("JPEG"));
        let grey = encode_gray(W, H, &vec![128; W * H], 80).unwrap();
        for i in 11..30u64 {
            let o = a.offer(FrameInput {
                seq: i,
                mono_ns: i * 200_000_000,
                wall_ns: 0,
                jpeg: &grey,
            });
            assert_ne!(o.analysed.map(|v| v.0), Some(Verdict::Motion));
        }
        // Back to the scene with an object in it: re-learned, not motion.
        let with_object = frame(1.0, Some(100));
        for i in 30..40u64 {
            let o = a.offer(FrameInput {
                seq: i,
                mono_ns: i * 200_000_000,
                wall_ns: 0,
                jpeg: &with_object,
            });
            assert_eq!(o.transition, Transition::None);
        }
    }

    #[test]
    fn an_outage_ends_the_event_and_relearns() {
        let mut a = analyzer();
        for i in 0..10u64 {
            let jpeg = frame(1.0, (i >= 5).then_some(i as usize * 20));
            a.offer(FrameInput {
                seq: i,
                mono_ns: i * 200_000_000,
                wall_ns: 0,
                jpeg: &jpeg,
            });
        }
        assert!(a.event_active());
        assert!(matches!(a.camera_lost(), Transition::End { .. }));
        // After the camera comes back with a different scene: no event.
        let moved = frame(0.7, Some(200));
        for i in 0..10u64 {
            let o = a.offer(FrameInput {
                seq: i,
                mono_ns: 10_000_000_000 + i * 200_000_000,
                wall_ns: 0,
                jpeg: &moved,
            });
            assert_eq!(o.transition, Transition::None);
        }
    }
}
