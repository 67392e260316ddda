//! Detection: background model, brightness/gain compensation, differencing, despeckle,
//! changed area and bounding boxes, over small luma images.
//!
//! Per analysed frame:
//! 1. A frame with almost no contrast (a grey or black frame from a camera that is starting
//!    or failing) is refused and the background is re-learned from the next good frame.
//! 2. A robust fit maps the current frame onto the background:
//!    `background ≈ gain * current + offset`. The first estimate matches the two images'
//!    quartiles, which an object covering less than a quarter of the frame cannot drag (a
//!    least-squares first fit can: a dark person on a low-contrast wall pulled the gain to a
//!    third and hid itself); pixels far from it (a moving object) are left out of a
//!    least-squares refit, so a light change is taken out while an object moving during it
//!    still stands out.
//! 3. The per-pixel threshold is the larger of `min_diff` and `noise_factor` times the noise
//!    sigma measured from the median residual of this frame (night gain raises it).
//! 4. A changed pixel survives despeckle when at least two of its eight neighbours changed;
//!    8-connected components give the boxes.
//! 5. Ghost suppression: a pixel that differs from the background only counts while it has
//!    also changed from one analysed frame to the next within the last
//!    [`MOTION_MEMORY_S`] seconds. An object that was in the frame when the background was
//!    (re-)learned leaves a "ghost" where it stood; the ghost never moves, so it stops
//!    counting after that memory instead of firing until the background absorbs it.
//! 6. The background follows unchanged pixels with time constant `background_s` and changed
//!    ones ten times slower, so slow changes (dusk, a parked car) are absorbed.
//!
//! All buffers are allocated when the geometry is first seen; analysing a frame allocates
//! nothing.

use crate::config::DetectSettings;
use crate::decode::LumaImage;
use crate::geometry::{Rect, rasterise};

/// At most this many boxes are reported per frame (the largest).
pub const MAX_BOXES: usize = 8;
/// A frame whose luma standard deviation is under this is grey/black: not analysable.
pub const GREY_STD: f64 = 2.0;
/// How long a pixel that moved keeps counting as moving, seconds.
pub const MOTION_MEMORY_S: f32 = 3.0;
/// Changed pixels adapt this many times slower than unchanged ones.
const FOREGROUND_SLOWDOWN: f32 = 10.0;
/// The noise-driven threshold never exceeds this many times `min_diff`.
const MAX_THRESHOLD_FACTOR: f32 = 3.0;
/// Adaptation rate while settling after a re-learn.
const SETTLE_ALPHA: f32 = 0.3;

/// What one analysed frame showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The background is being (re-)learned: nothing is reported.
    Learning,
    /// Nothing moved.
    Still,
    /// Something moved.
    Motion,
    /// A grey/black frame: never motion; the background is re-learned.
    Grey,
    /// Most of the frame changed in a way brightness compensation could not explain:
    /// never motion; the background is re-learned.
    SceneChange,
}

impl Verdict {
    /// Whether this counts as motion.
    pub fn is_motion(self) -> bool {
        self == Verdict::Motion
    }
}

/// The result of analysing one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The verdict.
    pub verdict: Verdict,
    /// Changed area, percent of the whole frame.
    pub area_pct: f32,
    /// Changed area weighted by how far over threshold each pixel was (capped at 4x).
    pub score: f32,
    /// Boxes of the largest changed regions, frame-relative.
    pub boxes: Vec<Rect>,
    /// Fitted gain (background / current).
    pub gain: f32,
    /// Fitted offset.
    pub offset: f32,
    /// Estimated noise sigma, luma levels.
    pub noise_sigma: f32,
    /// Per-pixel threshold used, luma levels.
    pub threshold: f32,
}

impl Analysis {
    fn empty() -> Analysis {
        Analysis {
            verdict: Verdict::Learning,
            area_pct: 0.0,
            score: 0.0,
            boxes: Vec::with_capacity(MAX_BOXES),
            gain: 1.0,
            offset: 0.0,
            noise_sigma: 0.0,
            threshold: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Component {
    count: u32,
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

/// The detector: one per camera stream.
#[derive(Debug)]
pub struct Detector {
    settings: DetectSettings,
    width: usize,
    height: usize,
    background: Vec<f32>,
    counted: Vec<u8>,
    counted_px: usize,
    changed: Vec<u8>,
    clean: Vec<u8>,
    previous: Vec<f32>,
    moved_at: Vec<f32>,
    seed_t: f64,
    stack: Vec<u32>,
    comps: Vec<Component>,
    needs_seed: bool,
    learning_until: f64,
    last_t: Option<f64>,
    result: Analysis,
}

impl Detector {
    /// A detector with these settings; buffers are sized on the first frame.
    pub fn new(settings: DetectSettings) -> Detector {
        Detector {
            settings,
            width: 0,
            height: 0,
            background: Vec::new(),
            counted: Vec::new(),
            counted_px: 0,
            changed: Vec::new(),
            clean: Vec::new(),
            previous: Vec::new(),
            moved_at: Vec::new(),
            seed_t: 0.0,
            stack: Vec::new(),
            comps: Vec::with_capacity(MAX_BOXES + 1),
            needs_seed: true,
            learning_until: 0.0,
            last_t: None,
            result: Analysis::empty(),
        }
    }

    /// Forget the background: the next good frame seeds it and a settle period follows.
    pub fn relearn(&mut self) {
        self.needs_seed = true;
    }

    /// The settings in use.
    pub fn settings(&self) -> &DetectSettings {
        &self.settings
    }

    fn configure(&mut self, width: usize, height: usize) {
        let n = width * height;
        self.width = width;
        self.height = height;
        self.background.clear();
        self.background.resize(n, 0.0);
        rasterise(
            width,
            height,
            &self.settings.zones,
            &self.settings.masks,
            &mut self.counted,
        );
        self.counted_px = self.counted.iter().filter(|&&c| c != 0).count();
        self.changed.clear();
        self.changed.resize(n, 0);
        self.clean.clear();
        self.clean.resize(n, 0);
        self.previous.clear();
        self.previous.resize(n, 0.0);
        self.moved_at.clear();
        self.moved_at.resize(n, f32::NEG_INFINITY);
        self.stack.clear();
        self.stack.reserve(n);
        self.needs_seed = true;
    }

    fn seed(&mut self, img: &LumaImage, t: f64) {
        for (b, &x) in self.background.iter_mut().zip(&img.pixels) {
            *b = f32::from(x);
        }
        self.previous.copy_from_slice(&self.background);
        self.moved_at.fill(f32::NEG_INFINITY);
        self.seed_t = t;
        self.needs_seed = false;
        self.learning_until = t + self.settings.relearn_s;
        self.last_t = Some(t);
    }

    fn set_verdict(&mut self, verdict: Verdict) -> &Analysis {
        let r = &mut self.result;
        r.verdict = verdict;
        r.area_pct = 0.0;
        r.score = 0.0;
        r.boxes.clear();
        &self.result
    }

    /// Analyses one luma frame captured at `t` seconds (monotonic).
    pub fn analyse(&mut self, img: &LumaImage, t: f64) -> &Analysis {
        if img.width != self.width
            || img.height != self.height
            || self.background.len() != img.pixels.len()
        {
            self.configure(img.width, img.height);
        }
        // 1. Grey / black frames.
        let n = img.pixels.len().max(1) as f64;
        let (mut s, mut ss) = (0u64, 0u64);
        for &x in &img.pixels {
            s += u64::from(x);
            ss += u64::from(x) * u64::from(x);
        }
        let mean = s as f64 / n;
        let var = (ss as f64 / n - mean * mean).max(0.0);
        if var.sqrt() < GREY_STD {
            self.needs_seed = true;
            return self.set_verdict(Verdict::Grey);
        }
        if self.needs_seed {
            self.seed(img, t);
            return self.set_verdict(Verdict::Learning);
        }
        let dt = (t - self.last_t.unwrap_or(t)).clamp(0.0, 1.0);
        self.last_t = Some(t);
        let learning = t < self.learning_until;
        let mut alpha = (dt / self.settings.background_s) as f32;
        if learning {
            alpha = alpha.max(SETTLE_ALPHA);
        }

        // 2. Robust fit background ≈ gain * current + offset.
        let (mut gain, mut offset) = self.quartile_fit(img);
        let med1 = self.median_abs_residual(img, gain, offset);
        let inlier = (3.0 * 1.4826 * med1).max(4.0);
        (gain, offset) = self.fit(img, gain, offset, inlier);
        let med2 = self.median_abs_residual(img, gain, offset);
        let sigma = 1.4826 * med2.max(0.5);
        // Capped so that a frame that changed everywhere cannot hide itself by inflating its
        // own noise estimate.
        let min_diff = self.settings.min_diff as f32;
        let threshold = (self.settings.noise_factor as f32 * sigma)
            .clamp(min_diff, MAX_THRESHOLD_FACTOR * min_diff);

        // 3. Difference, and background update.
        let w = self.width;
        let now = (t - self.seed_t) as f32;
        for i in 0..img.pixels.len() {
            let x = img.pixels[i];
            let bg = self.background[i];
            let predicted = gain * f32::from(x) + offset;
            let mut d = bg - predicted;
            // A clipped pixel can only be trusted in the direction it is not clipped.
            if (x >= 250 && d > 0.0) || (x <= 5 && d < 0.0) {
                d = 0.0;
            }
            let d = d.abs();
            // Frame-to-frame change, both frames in background brightness.
            if (predicted - self.previous[i]).abs() > threshold
                && !((x >= 250 || x <= 5) && d == 0.0)
            {
                self.moved_at[i] = now;
            }
            self.previous[i] = predicted;
            let hit =
                self.counted[i] != 0 && d > threshold && now - self.moved_at[i] <= MOTION_MEMORY_S;
            self.changed[i] = if hit { (d.min(255.0)) as u8 } else { 0 };
            let a = if hit && !learning {
                alpha / FOREGROUND_SLOWDOWN
            } else {
                alpha
            };
            self.background[i] = bg + a * (f32::from(x) - bg);
        }

        // 4. Despeckle: keep changed pixels with >= 2 changed neighbours.
        let h = self.height;
        let mut score = 0.0f32;
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                self.clean[i] = 0;
                if self.changed[i] == 0 {
                    continue;
                }
                let mut nb = 0;
                for dy in [-1isize, 0, 1] {
                    for dx in [-1isize, 0, 1] {
                        if dx == 0 && dy == 0 {
                            continue;
                        }
                        let (nx, ny) = (x as isize + dx, y as isize + dy);
                        if nx >= 0
                            && ny >= 0
                            && (nx as usize) < w
                            && (ny as usize) < h
                            && self.changed[ny as usize * w + nx as usize] != 0
                        {
                            nb += 1;
                        }
                    }
                }
                if nb >= 2 {
                    self.clean[i] = 1;
                    score += (f32::from(self.changed[i]) / threshold).min(4.0);
                }
            }
        }

        // 5. Components and boxes.
        let total = self.components();
        let counted = self.counted_px.max(1) as f32;
        // Motion is measured against the whole frame (the units people set: "a person is
        // about 3 % of the picture", whatever the zones); a scene change against what is
        // watched (lights going on across a small zone are a scene change there).
        let area_pct = total as f32 * 100.0 / (w * h).max(1) as f32;
        let watched_pct = total as f32 * 100.0 / counted;
        let r = &mut self.result;
        r.gain = gain;
        r.offset = offset;
        r.noise_sigma = sigma;
        r.threshold = threshold;
        r.area_pct = area_pct;
        r.score = score * 100.0 / counted;
        r.boxes.clear();
        for c in &self.comps {
            r.boxes.push(Rect {
                x: c.x0 as f32 / w as f32,
                y: c.y0 as f32 / h as f32,
                w: (c.x1 - c.x0 + 1) as f32 / w as f32,
                h: (c.y1 - c.y0 + 1) as f32 / h as f32,
            });
        }
        r.verdict = if self.counted_px == 0 {
            Verdict::Still
        } else if f64::from(watched_pct) > self.settings.max_area_pct {
            Verdict::SceneChange
        } else if learning {
            Verdict::Learning
        } else if f64::from(area_pct) >= self.settings.area_pct {
            Verdict::Motion
        } else {
            Verdict::Still
        };
        if r.verdict == Verdict::SceneChange {
            self.seed(img, t);
        }
        &self.result
    }

    /// `(gain, offset)` that map the current frame's quartiles onto the background's: a
    /// first estimate that an object on less than a quarter of the watched pixels cannot
    /// drag, whatever the contrast between it and the scene.
    fn quartile_fit(&self, img: &LumaImage) -> (f32, f32) {
        let (mut cur, mut bg) = ([0u32; 256], [0u32; 256]);
        let mut n = 0u32;
        for i in 0..img.pixels.len() {
            if self.counted[i] == 0 {
                continue;
            }
            cur[usize::from(img.pixels[i])] += 1;
            bg[self.background[i].round().clamp(0.0, 255.0) as usize] += 1;
            n += 1;
        }
        if n < 8 {
            return (1.0, 0.0);
        }
        let [c25, c50, c75] = quartiles(&cur, n);
        let [b25, b50, b75] = quartiles(&bg, n);
        if c75 - c25 < 2.0 {
            // Too flat to fit a gain: compensate the offset only.
            return (1.0, b50 - c50);
        }
        let gain = ((b75 - b25) / (c75 - c25)).clamp(0.2, 5.0);
        (gain, b50 - gain * c50)
    }

    /// Least-squares `(gain, offset)` over the pixels within `limit` of `g * x + o`.
    fn fit(&self, img: &LumaImage, g: f32, o: f32, limit: f32) -> (f32, f32) {
        let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for i in 0..img.pixels.len() {
            if self.counted[i] == 0 {
                continue;
            }
            let x = f32::from(img.pixels[i]);
            let y = self.background[i];
            if (y - (g * x + o)).abs() > limit {
                continue;
            }
            let (x, y) = (f64::from(x), f64::from(y));
            n += 1.0;
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
        }
        if n < 8.0 {
            return (1.0, 0.0);
        }
        let var = sxx / n - (sx / n).powi(2);
        let cov = sxy / n - (sx / n) * (sy / n);
        if var < 4.0 {
            // Too flat to fit a gain: compensate the offset only.
            return (1.0, ((sy - sx) / n) as f32);
        }
        let gain = (cov / var).clamp(0.2, 5.0);
        let offset = sy / n - gain * sx / n;
        (gain as f32, offset as f32)
    }

    fn median_abs_residual(&self, img: &LumaImage, gain: f32, offset: f32) -> f32 {
        let mut hist = [0u32; 256];
        let mut n = 0u32;
        for i in 0..img.pixels.len() {
            if self.counted[i] == 0 {
                continue;
            }
            let r = (self.background[i] - (gain * f32::from(img.pixels[i]) + offset)).abs();
            hist[(r * 2.0).min(255.0) as usize] += 1;
            n += 1;
        }
        let half = n / 2;
        let mut acc = 0;
        for (bin, &c) in hist.iter().enumerate() {
            acc += c;
            if acc > half {
                return (bin as f32 + 0.5) / 2.0;
            }
        }
        0.0
    }

    /// Labels 8-connected components of `clean`, keeps the largest MAX_BOXES, returns the
    /// total number of changed pixels.
    fn components(&mut self) -> usize {
        let (w, h) = (self.width, self.height);
        self.comps.clear();
        let mut total = 0usize;
        for start in 0..self.clean.len() {
            if self.clean[start] == 0 {
                continue;
            }
            self.clean[start] = 0;
            self.stack.clear();
            self.stack.push(start as u32);
            let mut c = Component {
                count: 0,
                x0: u32::MAX,
                y0: u32::MAX,
                x1: 0,
                y1: 0,
            };
            while let Some(i) = self.stack.pop() {
                let (x, y) = (i as usize % w, i as usize / w);
                c.count += 1;
                c.x0 = c.x0.min(x as u32);
                c.x1 = c.x1.max(x as u32);
                c.y0 = c.y0.min(y as u32);
                c.y1 = c.y1.max(y as u32);
                for dy in [-1isize, 0, 1] {
                    for dx in [-1isize, 0, 1] {
                        let (nx, ny) = (x as isize + dx, y as isize + dy);
                        if nx < 0 || ny < 0 || nx as usize >= w || ny as usize >= h {
                            continue;
                        }
                        let j = ny as usize * w + nx as usize;
                        if self.clean[j] != 0 {
                            self.clean[j] = 0;
                            self.stack.push(j as u32);
                        }
                    }
                }
            }
            total += c.count as usize;
            // Keep the MAX_BOXES largest, sorted by size, without allocating.
            if self.comps.len() < MAX_BOXES {
                self.comps.push(c);
            } else if let Some(last) = self.comps.last_mut() {
                if c.count > last.count {
                    *last = c;
                }
            }
            self.comps
                .sort_unstable_by_key(|c| std::cmp::Reverse(c.count));
        }
        total
    }
}

/// The 25th, 50th and 75th percentiles of a histogram of `n` values, interpolated within
/// a bin (each bin spread evenly over its level's width of 1).
fn quartiles(hist: &[u32; 256], n: u32) -> [f32; 3] {
    let mut out = [0.0f32; 3];
    let targets = [0.25, 0.5, 0.75].map(|q| q * n as f32);
    let (mut k, mut below) = (0, 0u32);
    for (level, &count) in hist.iter().enumerate() {
        while k < 3 && (below + count) as f32 >= targets[k] && count > 0 {
            out[k] = level as f32 - 0.5 + (targets[k] - below as f32) / count as f32;
            k += 1;
        }
        below += count;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Polygon;

    const W: usize = 80;
    const H: usize = 60;

    /// A textured scene so that gain fitting has something to work with.
    fn scene(brightness: f32) -> LumaImage {
        let mut img = LumaImage::filled(W, H, 0);
        for y in 0..H {
            for x in 0..W {
                let base = 60.0 + 60.0 * ((x / 8 + y / 6) % 3) as f32 + (x as f32 * 0.5);
                img.pixels[y * W + x] = (base * brightness).clamp(0.0, 255.0) as u8;
            }
        }
        img
    }

    fn with_box(
        mut img: LumaImage,
        x0: usize,
        y0: usize,
        bw: usize,
        bh: usize,
        v: u8,
    ) -> LumaImage {
        for y in y0..(y0 + bh).min(H) {
            for x in x0..(x0 + bw).min(W) {
                img.pixels[y * W + x] = v;
            }
        }
        img
    }

    fn warmed(settings: DetectSettings) -> (Detector, f64) {
        let mut d = Detector::new(settings);
        let mut t = 0.0;
        for _ in 0..10 {
            d.analyse(&scene(1.0), t);
            t += 0.2;
        }
        assert_eq!(d.analyse(&scene(1.0), t).verdict, Verdict::Still);
        (d, t + 0.2)
    }

    #[test]
    fn a_box_is_motion_with_its_bounding_box() {
        let (mut d, t) = warmed(DetectSettings::default());
        let a = d
            .analyse(&with_box(scene(1.0), 20, 10, 10, 20, 250), t)
            .clone();
        assert_eq!(a.verdict, Verdict::Motion);
        let expected = 10.0 * 20.0 * 100.0 / (W * H) as f32;
        assert!(
            (a.area_pct - expected).abs() < 1.5,
            "{} vs {expected}",
            a.area_pct
        );
        let b = a.boxes[0];
        assert!(
            (b.x - 0.25).abs() < 0.03 && (b.y - 1.0 / 6.0).abs() < 0.03,
            "{b:?}"
        );
        assert!(
            (b.w - 0.125).abs() < 0.03 && (b.h - 1.0 / 3.0).abs() < 0.03,
            "{b:?}"
        );
    }

    #[test]
    fn a_light_step_is_not_motion_but_motion_during_it_is() {
        let (mut d, t) = warmed(DetectSettings::default());
        let a = d.analyse(&scene(1.1), t);
        assert_eq!(a.verdict, Verdict::Still, "{a:?}");
        assert!((a.gain - 1.0 / 1.1).abs() < 0.05, "{a:?}");
        // A strong step that clips the highlights.
        let a = d.analyse(&scene(1.6), t + 0.2);
        assert_eq!(a.verdict, Verdict::Still, "{a:?}");
        let a = d.analyse(&with_box(scene(0.6), 40, 20, 12, 20, 250), t + 0.4);
        assert_eq!(a.verdict, Verdict::Motion, "{a:?}");
    }

    /// A low-contrast wall (std ~8 levels) and a dark person on 4.5% of it: a least-squares
    /// first fit let the person drag the gain to a third and hide itself.
    #[test]
    fn a_dark_object_on_a_low_contrast_scene_is_motion_also_during_a_light_change() {
        let wall = |brightness: f32| {
            let mut img = LumaImage::filled(W, H, 0);
            for y in 0..H {
                for x in 0..W {
                    let v = 140.0 + if (x / 4 + y / 3) % 2 == 0 { 8.0 } else { -8.0 };
                    img.pixels[y * W + x] = (v * brightness) as u8;
                }
            }
            img
        };
        let mut d = Detector::new(DetectSettings::default());
        let mut t = 0.0;
        for _ in 0..10 {
            d.analyse(&wall(1.0), t);
            t += 0.2;
        }
        for (x0, brightness) in [(10, 1.0), (20, 1.0), (30, 0.8), (40, 0.6)] {
            let a = d.analyse(&with_box(wall(brightness), x0, 20, 8, 27, 55), t);
            assert_eq!(
                a.verdict,
                Verdict::Motion,
                "at x {x0}, light {brightness}: {a:?}"
            );
            let person = 8.0 * 27.0 * 100.0 / (W * H) as f32;
            assert!(
                (a.area_pct - person).abs() < 1.0,
                "at x {x0}, light {brightness}: {a:?}"
            );
            t += 0.2;
        }
    }

    #[test]
    fn single_pixel_speckle_is_removed() {
        let (mut d, t) = warmed(DetectSettings {
            area_pct: 0.01,
            ..DetectSettings::default()
        });
        let mut img = scene(1.0);
        for i in (0..W * H).step_by(97) {
            img.pixels[i] = 255 - img.pixels[i];
        }
        let a = d.analyse(&img, t);
        assert_eq!(a.verdict, Verdict::Still, "{a:?}");
        assert_eq!(a.area_pct, 0.0);
    }

    #[test]
    fn grey_frames_are_never_motion_and_force_a_relearn() {
        let (mut d, t) = warmed(DetectSettings::default());
        assert_eq!(
            d.analyse(&LumaImage::filled(W, H, 128), t).verdict,
            Verdict::Grey
        );
        // The next frame (with a new object) seeds the background rather than firing.
        assert_eq!(
            d.analyse(&with_box(scene(1.0), 0, 0, 30, 30, 250), t + 0.2)
                .verdict,
            Verdict::Learning
        );
    }

    #[test]
    fn masked_motion_is_ignored_and_zones_limit_the_area() {
        let mask = Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]);
        let (mut d, t) = warmed(DetectSettings {
            masks: vec![mask],
            ..DetectSettings::default()
        });
        assert_eq!(
            d.analyse(&with_box(scene(1.0), 5, 5, 20, 20, 250), t)
                .verdict,
            Verdict::Still
        );
        assert_eq!(
            d.analyse(&with_box(scene(1.0), 50, 5, 20, 20, 250), t + 0.2)
                .verdict,
            Verdict::Motion
        );
    }

    #[test]
    fn area_is_a_share_of_the_frame_and_a_scene_change_a_share_of_what_is_watched() {
        let left_half = Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]);
        let (mut d, t) = warmed(DetectSettings {
            masks: vec![left_half],
            ..DetectSettings::default()
        });
        // A box in the watched right half: its share of the frame, not of the half.
        let a = d
            .analyse(&with_box(scene(1.0), 50, 10, 10, 20, 250), t)
            .clone();
        assert_eq!(a.verdict, Verdict::Motion);
        let of_frame = 10.0 * 20.0 * 100.0 / (W * H) as f32;
        assert!(
            (a.area_pct - of_frame).abs() < 1.5,
            "{} vs {of_frame} (twice that would be the share of the watched half)",
            a.area_pct
        );
        // The whole watched half changes: 50 % of the frame is not over max_area_pct (50),
        // but all of what is watched is, so it is a scene change.
        let mut img = scene(1.0);
        for y in 0..H {
            for x in W / 2..W {
                img.pixels[y * W + x] = 255 - img.pixels[y * W + x];
            }
        }
        assert_eq!(d.analyse(&img, t + 0.2).verdict, Verdict::SceneChange);
    }

    #[test]
    fn slow_change_is_absorbed() {
        let (mut d, mut t) = warmed(DetectSettings::default());
        // A parked object: motion at first, absorbed after many background time constants.
        let parked = with_box(scene(1.0), 20, 10, 10, 20, 250);
        assert_eq!(d.analyse(&parked, t).verdict, Verdict::Motion);
        let mut last = Verdict::Motion;
        for _ in 0..2000 {
            t += 0.2;
            last = d.analyse(&parked, t).verdict;
        }
        assert_eq!(last, Verdict::Still);
    }

    #[test]
    fn whole_frame_change_is_a_scene_change_not_motion() {
        let (mut d, t) = warmed(DetectSettings::default());
        let mut img = scene(1.0);
        // The camera was turned: the texture is somewhere else entirely.
        for p in img.pixels.iter_mut() {
            *p = 255 - *p;
        }
        let a = d.analyse(&img, t);
        assert_eq!(a.verdict, Verdict::SceneChange, "{a:?}");
    }

    #[test]
    fn boxes_are_bounded() {
        let (mut d, t) = warmed(DetectSettings {
            max_area_pct: 100.0,
            ..DetectSettings::default()
        });
        let mut img = scene(1.0);
        for k in 0..30 {
            img = with_box(img, (k % 10) * 8, (k / 10) * 20, 4, 4, 255);
        }
        let a = d.analyse(&img, t);
        assert_eq!(a.boxes.len(), MAX_BOXES);
    }
}
