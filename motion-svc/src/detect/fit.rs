//! The brightness fit: `background ≈ gain * current + offset`, from the quartiles first, then
//! a least-squares refit on the pixels near it; the noise and the threshold from the residual.

use super::{Detector, MAX_THRESHOLD_FACTOR};
use crate::decode::LumaImage;

/// Pixels at or below this level are crushed black: how dark they really are is unknown.
pub(super) const CLIP_LO: f32 = 10.0;
/// Pixels at or above this level are blown white.
pub(super) const CLIP_HI: f32 = 245.0;

/// Images with more pixels than this are fitted on every [`FIT_STRIDE`]th pixel: the fit is
/// four numbers, and a sample of thousands estimates them as well as all of them.
const FIT_SAMPLE_ABOVE: usize = 8192;
/// The sampling stride (odd, so that it does not beat with a texture's period).
const FIT_STRIDE: usize = 3;

/// The pixels the fit looks at.
fn sampled(n: usize) -> std::iter::StepBy<std::ops::Range<usize>> {
    (0..n).step_by(if n > FIT_SAMPLE_ABOVE { FIT_STRIDE } else { 1 })
}

/// Whether a pixel (current `x`, background `bg`) carries evidence about the light: neither
/// side clipped. Crushed shadows that a light brings out, or highlights it blows, would
/// otherwise pull the fit away from what the rest of the frame says.
pub(super) fn unclipped(x: f32, bg: f32) -> bool {
    x > CLIP_LO && x < CLIP_HI && bg > CLIP_LO && bg < CLIP_HI
}

/// How the current frame maps onto the background, and the per-pixel threshold.
pub(super) struct Fit {
    pub(super) gain: f32,
    pub(super) offset: f32,
    /// Noise sigma, from the median residual.
    pub(super) sigma: f32,
    /// A pixel differing by more changed.
    pub(super) threshold: f32,
}

impl Detector {
    /// The robust fit of `img` onto the background, and the threshold it gives.
    ///
    /// The first estimate is the one of three that leaves the smallest median residual (least
    /// median): the quartile match (a light change), no change at all, and the last frame's
    /// fit. An object over more than a quarter of the picture (someone close to the camera)
    /// drags the quartiles, but not the median residual of "no change", which most of the
    /// picture still agrees with.
    pub(super) fn fit_brightness(&self) -> Fit {
        let img = &self.aligned;
        let (mut gain, mut offset, mut med1) = (1.0, 0.0, f32::MAX);
        for (g, o) in [self.quartile_fit(img), (1.0, 0.0), self.last_fit] {
            let med = self.median_abs_residual(img, g, o);
            if med < med1 {
                (gain, offset, med1) = (g, o, med);
            }
        }
        let inlier = (3.0 * 1.4826 * med1).max(4.0);
        (gain, offset) = self.fit(img, gain, offset, inlier);
        let med2 = self.median_abs_residual(img, gain, offset);
        let sigma = 1.4826 * med2.max(0.5);
        // Capped so that a frame that changed everywhere cannot hide itself by inflating its
        // own noise estimate.
        let min_diff = self.settings.min_diff as f32;
        let threshold = (self.settings.noise_factor as f32 * sigma)
            .clamp(min_diff, MAX_THRESHOLD_FACTOR * min_diff);
        Fit {
            gain,
            offset,
            sigma,
            threshold,
        }
    }

    /// `(gain, offset)` that map the current frame's quartiles onto the background's: a
    /// first estimate that an object on less than a quarter of the watched pixels cannot
    /// drag, whatever the contrast between it and the scene.
    fn quartile_fit(&self, img: &LumaImage) -> (f32, f32) {
        let (mut cur, mut bg) = ([0u32; 256], [0u32; 256]);
        let mut n = 0u32;
        for i in sampled(img.pixels.len()) {
            if self.valid[i] == 0 || !unclipped(f32::from(img.pixels[i]), self.background[i]) {
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
        for i in sampled(img.pixels.len()) {
            if self.valid[i] == 0 {
                continue;
            }
            let x = f32::from(img.pixels[i]);
            let y = self.background[i];
            if !unclipped(x, y) || (y - (g * x + o)).abs() > limit {
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
        for i in sampled(img.pixels.len()) {
            let (x, bg) = (f32::from(img.pixels[i]), self.background[i]);
            if self.valid[i] == 0 || !unclipped(x, bg) {
                continue;
            }
            let r = (bg - (gain * x + offset)).abs();
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
