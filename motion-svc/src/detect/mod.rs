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

mod fit;
#[cfg(test)]
mod tests;

use fit::Fit;

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
        if is_grey(img) {
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
        // 2. Robust fit background ≈ gain * current + offset, and the threshold.
        let fit = self.fit_brightness(img);
        // 3. Difference, and background update.
        self.difference(img, &fit, (t - self.seed_t) as f32, alpha, learning);
        // 4. Despeckle.
        let score = self.despeckle(fit.threshold);
        // 5. Components and boxes, and the verdict.
        self.conclude(&fit, score, learning);
        if self.result.verdict == Verdict::SceneChange {
            self.seed(img, t);
        }
        &self.result
    }

    /// Each pixel against the background predicted from it (`fit`), at `now` s since the
    /// seed: `changed` holds the differences that count (over the threshold, and moved
    /// within [`MOTION_MEMORY_S`]); the background follows with `alpha` (slower where
    /// something changed, unless `learning`).
    fn difference(&mut self, img: &LumaImage, fit: &Fit, now: f32, alpha: f32, learning: bool) {
        let (gain, offset, threshold) = (fit.gain, fit.offset, fit.threshold);
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
    }

    /// Keeps (in `clean`) the changed pixels with at least two changed neighbours; the score
    /// of what is kept.
    fn despeckle(&mut self, threshold: f32) -> f32 {
        let (w, h) = (self.width, self.height);
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
        score
    }

    /// The components of what despeckle kept, their boxes, the area and the verdict, into
    /// `result`.
    fn conclude(&mut self, fit: &Fit, score: f32, learning: bool) {
        let (w, h) = (self.width, self.height);
        let total = self.components();
        let counted = self.counted_px.max(1) as f32;
        // Motion is measured against the whole frame (the units people set: "a person is
        // about 3 % of the picture", whatever the zones); a scene change against what is
        // watched (lights going on across a small zone are a scene change there).
        let area_pct = total as f32 * 100.0 / (w * h).max(1) as f32;
        let watched_pct = total as f32 * 100.0 / counted;
        let r = &mut self.result;
        r.gain = fit.gain;
        r.offset = fit.offset;
        r.noise_sigma = fit.sigma;
        r.threshold = fit.threshold;
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

/// Whether `img` has almost no contrast (a grey or black frame from a camera that is starting
/// or failing).
fn is_grey(img: &LumaImage) -> bool {
    let n = img.pixels.len().max(1) as f64;
    let (mut s, mut ss) = (0u64, 0u64);
    for &x in &img.pixels {
        s += u64::from(x);
        ss += u64::from(x) * u64::from(x);
    }
    let mean = s as f64 / n;
    let var = (ss as f64 / n - mean * mean).max(0.0);
    var.sqrt() < GREY_STD
}
