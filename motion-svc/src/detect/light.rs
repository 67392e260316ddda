//! Local light: what the global fit leaves where the scene is lit unevenly (a porch light on
//! the near half, a lamp in one corner) or the camera's curve is not a straight line (gamma,
//! a tone curve, shadows lifted out of black).
//!
//! The frame is cut into [`GRID`] x [`GRID`] cells; in each, the most common value of what the
//! global fit leaves over (background minus predicted, on unclipped pixels that it leaves
//! within [`RESIDUAL_LIMIT`] thresholds, smoothed over [`MODE_WINDOW`] levels) is that cell's
//! own offset. What the global fit leaves further out is an object, not the light. Light moves a cell's whole residual
//! together, so its peak moves; an object's pixels differ from the background by amounts
//! spread over its texture and the scene's, so they rarely make a peak of their own (a median
//! would follow an object over half of a cell). A peak away from zero must also hold
//! [`PEAK_OVER_ZERO`] times what the window around zero holds, or the cell keeps the global
//! fit: an object over most of a flat cell is still not taken for light. The
//! offsets are interpolated between cell centres, so the correction has no steps at cell
//! borders.

use super::fit::unclipped;

/// Cells per side.
pub const GRID: usize = 4;
/// Residual histogram bins per cell (one grey level each, -128..=127).
const BINS: usize = 256;
/// A cell with fewer unclipped pixels than this keeps the global fit (offset 0).
const MIN_CELL_PX: u32 = 16;
/// Pixels the global fit leaves further out than this many thresholds are not light.
pub const RESIDUAL_LIMIT: f32 = 3.0;
/// The residual's peak is found over windows of this many grey levels.
const MODE_WINDOW: usize = 7;
/// A cell's peak away from zero must hold this many times the pixels of the window at zero.
const PEAK_OVER_ZERO: u32 = 2;

/// The per-cell offsets and the per-pixel field interpolated from them.
#[derive(Debug, Default)]
pub struct LocalLight {
    hist: Vec<u32>,
    counts: [u32; GRID * GRID],
    offsets: [f32; GRID * GRID],
    /// Per pixel: the offset to add to the global prediction.
    pub field: Vec<f32>,
    /// Per column: the cell column to its left and how far towards the next it is.
    columns: Vec<(usize, f32)>,
}

impl LocalLight {
    /// Buffers for a `width` x `height` image.
    pub fn configure(&mut self, width: usize, height: usize) {
        self.hist.clear();
        self.hist.resize(GRID * GRID * BINS, 0);
        self.field.clear();
        self.field.resize(width * height, 0.0);
        self.columns.clear();
        self.columns
            .extend((0..width).map(|x| cell_coord(x, width)));
    }

    /// Estimates the field for `pixels` against `background` after the global
    /// `gain`/`offset` (and its `threshold`), over the `counted` pixels of a `width`-wide
    /// image.
    #[allow(clippy::too_many_arguments)]
    pub fn estimate(
        &mut self,
        pixels: &[u8],
        background: &[f32],
        counted: &[u8],
        width: usize,
        gain: f32,
        offset: f32,
        threshold: f32,
    ) {
        let limit = RESIDUAL_LIMIT * threshold;
        let height = pixels.len() / width.max(1);
        self.hist.fill(0);
        self.counts = [0; GRID * GRID];
        for y in 0..height {
            let cy = y * GRID / height;
            for (cx, x) in (0..GRID)
                .flat_map(|c| (c * width / GRID..(c + 1) * width / GRID).map(move |x| (c, x)))
            {
                let i = y * width + x;
                let (v, bg) = (f32::from(pixels[i]), background[i]);
                if counted[i] == 0 || !unclipped(v, bg) {
                    continue;
                }
                let r = bg - (gain * v + offset);
                if r.abs() > limit {
                    continue;
                }
                let cell = cy * GRID + cx;
                let r = r.clamp(-128.0, 127.0);
                self.hist[cell * BINS + (r + 128.0) as usize] += 1;
                self.counts[cell] += 1;
            }
        }
        for cell in 0..GRID * GRID {
            self.offsets[cell] = if self.counts[cell] < MIN_CELL_PX {
                0.0
            } else {
                mode(&self.hist[cell * BINS..(cell + 1) * BINS])
            };
        }
        self.interpolate(width, height);
    }

    /// Bilinear between cell centres, held flat beyond the outer ones: per row, the cells'
    /// offsets blended down once, then across per pixel.
    fn interpolate(&mut self, width: usize, height: usize) {
        let coord = |p: usize, len: usize| {
            let f =
                ((p as f32 + 0.5) * GRID as f32 / len as f32 - 0.5).clamp(0.0, (GRID - 1) as f32);
            let i = (f as usize).min(GRID - 2);
            (i, f - i as f32)
        };
        let mut across = [0.0f32; GRID];
        for y in 0..height {
            let (cy, fy) = coord(y, height);
            for (c, v) in across.iter_mut().enumerate() {
                let (top, bottom) = (
                    self.offsets[cy * GRID + c],
                    self.offsets[(cy + 1) * GRID + c],
                );
                *v = top + (bottom - top) * fy;
            }
            let row = &mut self.field[y * width..(y + 1) * width];
            for (out, &(cx, fx)) in row.iter_mut().zip(&self.columns) {
                *out = across[cx] + (across[cx + 1] - across[cx]) * fx;
            }
        }
    }
}

/// The cell to the left of (or above) pixel `p` of `len` and how far towards the next cell's
/// centre it is.
fn cell_coord(p: usize, len: usize) -> (usize, f32) {
    let f = ((p as f32 + 0.5) * GRID as f32 / len as f32 - 0.5).clamp(0.0, (GRID - 1) as f32);
    let i = (f as usize).min(GRID - 2);
    (i, f - i as f32)
}

/// The centre of the fullest [`MODE_WINDOW`]-level window of a cell's residual histogram
/// (the lowest on a tie).
fn mode(hist: &[u32]) -> f32 {
    let mut sum: u32 = hist[..MODE_WINDOW].iter().sum();
    let (mut best, mut at) = (sum, 0);
    for start in 1..=hist.len() - MODE_WINDOW {
        sum = sum + hist[start + MODE_WINDOW - 1] - hist[start - 1];
        if sum > best {
            (best, at) = (sum, start);
        }
    }
    let zero = BINS / 2 - MODE_WINDOW / 2;
    let at_zero: u32 = hist[zero..zero + MODE_WINDOW].iter().sum();
    if best < PEAK_OVER_ZERO * at_zero {
        (best, at) = (at_zero, zero);
    }
    // Mean of the window, so the offset is not quantised to whole levels.
    let window = &hist[at..at + MODE_WINDOW];
    let weighted: f32 = window
        .iter()
        .enumerate()
        .map(|(k, &c)| (at + k) as f32 * c as f32)
        .sum();
    weighted / best.max(1) as f32 - 128.0 + 0.5
}
