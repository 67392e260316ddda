//! Detection: background model, brightness compensation (global, then per cell),
//! differencing, despeckle, regions, and tracks that decide what is motion, over small luma
//! images.
//!
//! Per analysed frame:
//! 1. A frame with almost no contrast (a grey or black frame from a camera that is starting
//!    or failing) is refused and the background is re-learned from the next good frame.
//!    A camera that shook or was knocked by a few pixels is followed ([`shake`]): the frame is
//!    compared with the background where the scene now is.
//! 2. A robust fit maps the current frame onto the background:
//!    `background ≈ gain * current + offset`. The first estimate matches the two images'
//!    quartiles, which an object covering less than a quarter of the frame cannot drag (a
//!    least-squares first fit can: a dark person on a low-contrast wall pulled the gain to a
//!    third and hid itself); pixels far from it (a moving object) are left out of a
//!    least-squares refit, so a light change is taken out while an object moving during it
//!    still stands out. Clipped pixels (crushed black, blown white, on either side) carry no
//!    evidence and are left out of every fit.
//! 3. What the global fit leaves is corrected per cell ([`light`]): unevenly lit scenes, tone
//!    curves, shadows lifted out of black.
//! 4. While the camera is seen to sway (a shift found in the last [`SWAY_MEMORY_S`] seconds),
//!    each pixel is compared with the nearest value the background takes in its 3x3
//!    neighbourhood, so an edge that moved by less than a pixel is still background; a still
//!    camera keeps full sensitivity (behind a fence, every pixel's neighbours span black to
//!    white). The per-pixel threshold is the larger of `min_diff` and `noise_factor` times the noise
//!    sigma measured from the median residual of this frame (night gain raises it), and of
//!    [`UNREST_FACTOR`] times the pixel's own unrest: the running spread of its difference
//!    over [`UNREST_S`] seconds, not counted inside the boxes of the objects that were moving
//!    in the last frame. Where leaves, water or a flag move all the time, or an edge of a
//!    shaking camera's picture comes and goes, the threshold rises to what that place always
//!    does; a busy path keeps its threshold for the next person. A clipped pixel only counts
//!    in the direction it is not clipped.
//! 5. A changed pixel survives despeckle when at least two of its eight neighbours changed;
//!    8-connected components, merged when close, give the regions ([`regions`]).
//! 6. Ghost suppression: a pixel that differs from the background only counts while it has
//!    also changed from one analysed frame to the next within the last
//!    [`MOTION_MEMORY_S`] seconds. An object that was in the frame when the background was
//!    (re-)learned leaves a "ghost" where it stood; the ghost never moves, so it stops
//!    counting after that memory instead of firing until the background absorbs it.
//! 7. Regions are followed from frame to frame ([`tracks`]); one is motion when it is at
//!    least the smallest object's size and keeps moving away from where it appeared. Light,
//!    ghosts and foliage change in place and never are.
//! 8. The background follows unchanged pixels with time constant `background_s` and changed
//!    ones ten times slower, so slow changes (dusk, a parked car) are absorbed.
//!
//! All buffers are allocated when the geometry is first seen; analysing a frame allocates
//! nothing.

use crate::config::DetectSettings;
use crate::decode::LumaImage;
use crate::geometry::{Rect, rasterise};

mod fit;
mod light;
mod regions;
mod shake;
#[cfg(test)]
mod tests;
mod tracks;

use fit::{CLIP_HI, CLIP_LO, Fit, unclipped};
use light::LocalLight;
use regions::Labeller;
use shake::Shake;
use tracks::Tracker;
pub use tracks::{CONFIRM_FRAMES, DISPLACE_FRAC, MAX_TRACKS};

/// At most this many boxes are reported per frame (the largest).
pub const MAX_BOXES: usize = 8;
/// A frame whose luma standard deviation is under this is grey/black: not analysable.
pub const GREY_STD: f64 = 2.0;
/// How long a pixel that moved keeps counting as moving, seconds.
pub const MOTION_MEMORY_S: f32 = 3.0;
/// An event's first motion is dated back to when its object was first seen, by at most this
/// many seconds (the object was followed that long before it counted).
pub const MAX_BACKDATE_S: f64 = 1.5;
/// The smallest object's changed pixels, as a share of its height squared: a person is about
/// 0.4 of their height wide, and half of them must differ from what is behind.
pub const OBJECT_FILL: f32 = 0.2;
/// ... and never fewer than this many pixels at analysis scale.
pub const MIN_OBJECT_PX: u32 = 4;
/// After a shake is seen, edges are compared with their neighbourhood for this long, seconds.
pub const SWAY_MEMORY_S: f64 = 10.0;
/// Time constant of each pixel's unrest (the running mean of its squared difference), seconds.
pub const UNREST_S: f32 = 10.0;
/// A pixel changes only when it differs by more than this many times its unrest's root.
pub const UNREST_FACTOR: f32 = 2.0;
/// A difference counts into the unrest up to this many times the threshold (one person
/// passing raises it a little, not for good).
const UNREST_CLAMP: f32 = 6.0;
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
    /// Area of the moving objects' changed pixels, percent of the whole frame.
    pub area_pct: f32,
    /// The largest moving object's box, percent of the whole frame.
    pub score: f32,
    /// Boxes of the moving objects, largest first, frame-relative.
    pub boxes: Vec<Rect>,
    /// All changed pixels (moving or not), percent of the whole frame.
    pub changed_pct: f32,
    /// When the oldest moving object was first seen (at most [`MAX_BACKDATE_S`] ago), seconds.
    pub since: Option<f64>,
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
            changed_pct: 0.0,
            since: None,
            gain: 1.0,
            offset: 0.0,
            noise_sigma: 0.0,
            threshold: 0.0,
        }
    }
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
    /// The frame, moved onto the background by the camera's shake.
    aligned: LumaImage,
    /// The shake, and the background's pixels that the shaken frame covers.
    shift: (isize, isize),
    view: [usize; 4],
    /// Counted and in view.
    valid: Vec<u8>,
    shake: Shake,
    /// Until when the camera counts as swaying (monotonic seconds).
    swaying_until: f64,
    changed: Vec<u8>,
    clean: Vec<u8>,
    previous: Vec<f32>,
    moved_at: Vec<f32>,
    /// Per pixel: running mean of the squared difference.
    unrest: Vec<f32>,
    /// Per pixel: inside a moving object's box in the last frame.
    foreground: Vec<u8>,
    /// Per pixel: the background's range over its 3x3 neighbourhood (and the row pass).
    bg_lo: Vec<f32>,
    bg_hi: Vec<f32>,
    row_lo: Vec<f32>,
    row_hi: Vec<f32>,
    light: LocalLight,
    labeller: Labeller,
    tracker: Tracker,
    min_px: u32,
    /// The last frame's `(gain, offset)`.
    last_fit: (f32, f32),
    seed_t: f64,
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
            aligned: LumaImage::default(),
            shift: (0, 0),
            view: [0; 4],
            valid: Vec::new(),
            shake: Shake::default(),
            swaying_until: f64::NEG_INFINITY,
            changed: Vec::new(),
            clean: Vec::new(),
            previous: Vec::new(),
            moved_at: Vec::new(),
            unrest: Vec::new(),
            foreground: Vec::new(),
            bg_lo: Vec::new(),
            bg_hi: Vec::new(),
            row_lo: Vec::new(),
            row_hi: Vec::new(),
            light: LocalLight::default(),
            labeller: Labeller::default(),
            tracker: Tracker::default(),
            min_px: MIN_OBJECT_PX,
            last_fit: (1.0, 0.0),
            seed_t: 0.0,
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

    /// The smallest object, in changed pixels at analysis scale, for the last geometry.
    pub fn min_object_px(&self) -> u32 {
        self.min_px
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
        self.aligned = LumaImage::filled(width, height, 0);
        self.valid.clone_from(&self.counted);
        self.shift = (0, 0);
        self.view = [0, 0, width, height];
        self.shake.configure(width, height);
        self.changed.clear();
        self.changed.resize(n, 0);
        self.clean.clear();
        self.clean.resize(n, 0);
        self.previous.clear();
        self.previous.resize(n, 0.0);
        self.moved_at.clear();
        self.moved_at.resize(n, f32::NEG_INFINITY);
        for v in [
            &mut self.unrest,
            &mut self.bg_lo,
            &mut self.bg_hi,
            &mut self.row_lo,
            &mut self.row_hi,
        ] {
            v.clear();
            v.resize(n, 0.0);
        }
        self.foreground.clear();
        self.foreground.resize(n, 0);
        self.light.configure(width, height);
        self.labeller.configure(width, height);
        self.size_min_object();
        self.needs_seed = true;
    }

    fn seed(&mut self, img: &LumaImage, t: f64) {
        for (b, &x) in self.background.iter_mut().zip(&img.pixels) {
            *b = f32::from(x);
        }
        self.previous.copy_from_slice(&self.background);
        self.moved_at.fill(f32::NEG_INFINITY);
        self.unrest.fill(0.0);
        self.shake.reset();
        self.last_fit = (1.0, 0.0);
        self.swaying_until = f64::NEG_INFINITY;
        self.tracker.clear();
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
        r.changed_pct = 0.0;
        r.since = None;
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
        self.align(img);
        if self.shift != (0, 0) {
            self.swaying_until = t + SWAY_MEMORY_S;
        }
        let swaying = t < self.swaying_until;
        let dt = (t - self.last_t.unwrap_or(t)).clamp(0.0, 1.0);
        self.last_t = Some(t);
        let learning = t < self.learning_until;
        let mut alpha = (dt / self.settings.background_s) as f32;
        if learning {
            alpha = alpha.max(SETTLE_ALPHA);
        }
        // 2. Robust fit background ≈ gain * current + offset, and the threshold.
        let fit = self.fit_brightness();
        self.last_fit = (fit.gain, fit.offset);
        // 3. What is left, per cell.
        self.light.estimate(
            &self.aligned.pixels,
            &self.background,
            &self.valid,
            self.width,
            fit.gain,
            fit.offset,
            fit.threshold,
        );
        // 4. Difference, and background update.
        let beta = dt as f32 / UNREST_S;
        self.difference(
            &fit,
            (t - self.seed_t) as f32,
            alpha,
            beta,
            learning,
            swaying,
        );
        // 5. Despeckle, regions.
        self.despeckle();
        let changed = self
            .labeller
            .label(&mut self.clean, self.width, self.height);
        // 7. Tracks, and the verdict.
        self.conclude(&fit, changed, t, learning);
        if self.result.verdict == Verdict::SceneChange {
            self.seed(img, t);
        }
        &self.result
    }

    /// Moves `img` onto the background by the camera's shake, into `aligned`, and marks what
    /// it covers (`view`, `valid`).
    fn align(&mut self, img: &LumaImage) {
        let (w, h) = (self.width, self.height);
        let shift = self.shake.estimate(&img.pixels, &self.background, w);
        let (sx, sy) = shift;
        for y in 0..h {
            let src_y = (y as isize + sy).clamp(0, h as isize - 1) as usize;
            for x in 0..w {
                let src_x = (x as isize + sx).clamp(0, w as isize - 1) as usize;
                self.aligned.pixels[y * w + x] = img.pixels[src_y * w + src_x];
            }
        }
        if shift != self.shift {
            self.shift = shift;
            let span = |s: isize, len: usize| {
                let lo = (-s).max(0) as usize;
                (
                    lo.min(len),
                    (len as isize - s.max(0)).max(lo as isize) as usize,
                )
            };
            let ((x0, x1), (y0, y1)) = (span(sx, w), span(sy, h));
            self.view = [x0, y0, x1, y1];
            self.mark_valid();
        }
    }

    /// `valid`: counted and in view.
    fn mark_valid(&mut self) {
        let [x0, y0, x1, y1] = self.view;
        let w = self.width;
        for (i, v) in self.valid.iter_mut().enumerate() {
            let (x, y) = (i % w, i / w);
            let inside = x >= x0 && x < x1 && y >= y0 && y < y1;
            *v = u8::from(inside && self.counted[i] != 0);
        }
    }

    /// The smallest object in changed pixels for the current geometry and settings.
    fn size_min_object(&mut self) {
        let object_h = self.settings.min_object_pct as f32 / 100.0 * self.height as f32;
        self.min_px = ((OBJECT_FILL * object_h * object_h) as u32).max(MIN_OBJECT_PX);
    }

    /// New settings while running (the overrides file changed), keeping the background: it
    /// is learned under masks and outside zones too, so a mask or zone that moves needs no
    /// re-learn. Masks and zones are rasterised again; the thresholds apply from the next
    /// frame. Allocates only when the area changes (the raster is rebuilt in place).
    pub fn retune(&mut self, settings: DetectSettings) {
        let area = settings.masks != self.settings.masks || settings.zones != self.settings.zones;
        self.settings = settings;
        if self.width == 0 {
            return; // sized and rasterised on the first frame
        }
        if area {
            rasterise(
                self.width,
                self.height,
                &self.settings.zones,
                &self.settings.masks,
                &mut self.counted,
            );
            self.counted_px = self.counted.iter().filter(|&&c| c != 0).count();
            self.mark_valid();
        }
        self.size_min_object();
    }

    /// The last analysed frame's changed pixels (1 = changed and counted), row-major at the
    /// analysis scale, with its width and height: what the live preview shows.
    pub fn changed(&self) -> (&[u8], usize, usize) {
        (&self.changed, self.width, self.height)
    }

    /// The last analysis.
    pub fn last(&self) -> &Analysis {
        &self.result
    }

    /// Each pixel against the background predicted from it (`fit` and the local field), at
    /// `now` s since the seed: `changed` holds the differences that count (over the
    /// threshold, and moved within [`MOTION_MEMORY_S`]); the background follows with `alpha`
    /// (slower where something changed, unless `learning`), the unrest with `beta`. What the
    /// shaken frame does not cover is neither compared nor learned; while `swaying`, each
    /// pixel is compared with its background neighbourhood.
    #[allow(clippy::too_many_arguments)]
    fn difference(
        &mut self,
        fit: &Fit,
        now: f32,
        alpha: f32,
        beta: f32,
        learning: bool,
        swaying: bool,
    ) {
        let (gain, offset, threshold) = (fit.gain, fit.offset, fit.threshold);
        self.mark_foreground();
        if swaying {
            self.neighbourhood_range();
        }
        let [x0, y0, x1, y1] = self.view;
        let (w, shaken) = (self.width, self.shift != (0, 0));
        for i in 0..self.aligned.pixels.len() {
            // The hottest loop there is: the view is only looked up when the camera shook.
            if shaken {
                let (px, py) = (i % w, i / w);
                if px < x0 || px >= x1 || py < y0 || py >= y1 {
                    self.changed[i] = 0;
                    continue;
                }
            }
            let x = f32::from(self.aligned.pixels[i]);
            let bg = self.background[i];
            let predicted = gain * x + offset + self.light.field[i];
            // Compared with the nearest value of the background around it: an edge that moved
            // by less than a pixel (a camera's sway, shimmer) is still the background.
            let near = if swaying {
                predicted.clamp(self.bg_lo[i], self.bg_hi[i])
            } else {
                bg
            };
            // A clipped pixel, now or in the background, is only evidence in the direction
            // it is not clipped (a crushed shadow could have been any darker).
            let clipped = !unclipped(x, near);
            let d = clipped_difference(x, near, predicted);
            // Frame-to-frame change, both frames in background brightness.
            if (predicted - self.previous[i]).abs() > threshold && !(clipped && d == 0.0) {
                self.moved_at[i] = now;
            }
            self.previous[i] = predicted;
            let u = &mut self.unrest[i];
            let own = UNREST_FACTOR * u.sqrt();
            // Where a moving object was in the last frame, its passing is not the place's
            // unrest: a busy path keeps its threshold for the next person.
            if self.foreground[i] == 0 {
                let counted = d.min(UNREST_CLAMP * threshold);
                *u += beta * (counted * counted - *u);
            }
            let hit = self.valid[i] != 0
                && d > threshold.max(own)
                && now - self.moved_at[i] <= MOTION_MEMORY_S;
            self.changed[i] = u8::from(hit);
            let a = if hit && !learning {
                alpha / FOREGROUND_SLOWDOWN
            } else {
                alpha
            };
            self.background[i] = bg + a * (x - bg);
        }
    }

    /// `foreground`: the boxes of the objects that were moving in the last frame.
    fn mark_foreground(&mut self) {
        let (w, h) = (self.width as f32, self.height as f32);
        self.foreground.fill(0);
        for b in &self.result.boxes {
            let x0 = (b.x * w) as usize;
            let x1 = (((b.x + b.w) * w).ceil() as usize).min(self.width);
            let y0 = (b.y * h) as usize;
            let y1 = (((b.y + b.h) * h).ceil() as usize).min(self.height);
            for y in y0..y1 {
                self.foreground[y * self.width + x0..y * self.width + x1].fill(1);
            }
        }
    }

    /// `bg_lo`/`bg_hi`: the least and greatest background value in each pixel's 3x3
    /// neighbourhood (separable: across, then down).
    fn neighbourhood_range(&mut self) {
        let (w, h) = (self.width, self.height);
        for y in 0..h {
            let row = &self.background[y * w..(y + 1) * w];
            for x in 0..w {
                let (a, b) = (x.saturating_sub(1), (x + 1).min(w - 1));
                let (mut lo, mut hi) = (row[x], row[x]);
                for &v in &row[a..=b] {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
                self.row_lo[y * w + x] = lo;
                self.row_hi[y * w + x] = hi;
            }
        }
        for y in 0..h {
            let (a, b) = (y.saturating_sub(1), (y + 1).min(h - 1));
            for x in 0..w {
                let (mut lo, mut hi) = (f32::MAX, f32::MIN);
                for ny in a..=b {
                    lo = lo.min(self.row_lo[ny * w + x]);
                    hi = hi.max(self.row_hi[ny * w + x]);
                }
                self.bg_lo[y * w + x] = lo;
                self.bg_hi[y * w + x] = hi;
            }
        }
    }

    /// Keeps (in `clean`) the changed pixels with at least two changed neighbours.
    fn despeckle(&mut self) {
        let (w, h) = (self.width, self.height);
        for y in 0..h {
            let (y0, y1) = (y.saturating_sub(1), (y + 1).min(h - 1));
            for x in 0..w {
                let i = y * w + x;
                self.clean[i] = 0;
                if self.changed[i] == 0 {
                    continue;
                }
                let (x0, x1) = (x.saturating_sub(1), (x + 1).min(w - 1));
                let mut nb = 0u32;
                for ny in y0..=y1 {
                    let row = &self.changed[ny * w + x0..=ny * w + x1];
                    nb += row.iter().map(|&c| u32::from(c)).sum::<u32>();
                }
                // The pixel itself is in the sum.
                if nb > 2 {
                    self.clean[i] = 1;
                }
            }
        }
    }

    /// Tracks, boxes, areas and the verdict, into `result`, from `changed` pixels.
    fn conclude(&mut self, fit: &Fit, changed: usize, t: f64, learning: bool) {
        let (w, h) = (self.width, self.height);
        let frame = (w * h).max(1) as f32;
        let watched_pct = changed as f32 * 100.0 / self.counted_px.max(1) as f32;
        let scene_change = f64::from(watched_pct) > self.settings.max_area_pct;
        if scene_change || learning {
            self.tracker.clear();
        } else {
            self.tracker.update(self.labeller.regions(), t, self.min_px);
        }
        let r = &mut self.result;
        r.gain = fit.gain;
        r.offset = fit.offset;
        r.noise_sigma = fit.sigma;
        r.threshold = fit.threshold;
        r.changed_pct = changed as f32 * 100.0 / frame;
        r.area_pct = 0.0;
        r.score = 0.0;
        r.since = None;
        r.boxes.clear();
        for tr in self.tracker.moving() {
            let g = &tr.region;
            let (bw, bh) = g.size();
            r.area_pct += g.px as f32 * 100.0 / frame;
            r.score = r.score.max(bw * bh * 100.0 / frame);
            let born = tr.born.max(t - MAX_BACKDATE_S);
            r.since = Some(r.since.map_or(born, |s: f64| s.min(born)));
            if r.boxes.len() < MAX_BOXES {
                r.boxes.push(Rect {
                    x: g.x0 as f32 / w as f32,
                    y: g.y0 as f32 / h as f32,
                    w: bw / w as f32,
                    h: bh / h as f32,
                });
            }
        }
        r.boxes
            .sort_unstable_by(|a, b| (b.w * b.h).total_cmp(&(a.w * a.h)));
        r.verdict = if self.counted_px == 0 {
            Verdict::Still
        } else if scene_change {
            Verdict::SceneChange
        } else if learning {
            Verdict::Learning
        } else if r.since.is_some() {
            Verdict::Motion
        } else {
            Verdict::Still
        };
    }
}

/// How far `predicted` is from the background `bg`, zero where the difference points into a
/// clipped side: a crushed black pixel (now `x`, or in the background) could have been any
/// darker, a blown white one any brighter.
fn clipped_difference(x: f32, bg: f32, predicted: f32) -> f32 {
    // Anything at or beyond a clip level looks the same on the camera: a prediction of -20
    // and a background of 15 in crushed shadows are both "black".
    let d = bg.clamp(CLIP_LO, CLIP_HI) - predicted.clamp(CLIP_LO, CLIP_HI);
    // d > 0: the background is brighter than the prediction.
    if (d > 0.0 && (x >= CLIP_HI || bg <= CLIP_LO)) || (d < 0.0 && (x <= CLIP_LO || bg >= CLIP_HI))
    {
        0.0
    } else {
        d.abs()
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
