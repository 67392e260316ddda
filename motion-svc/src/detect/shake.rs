//! Shake: a camera on a wall or a pole moves a little in the wind, or is knocked, and every
//! edge in the picture then differs from the background by a few pixels' shift. The shift is
//! found before anything is compared, and the frame is compared where the scene now is.
//!
//! It is measured on profiles: the horizontal gradient summed down each column, the vertical
//! one along each row, of the frame and of the background, each scaled by its mean (so a light
//! change does not move it). The shift of up to [`MAX_SHIFT_FRAC`] of the size that matches
//! them best is taken when it explains at least [`MIN_GAIN`] of what no shift leaves, and when
//! each of the picture's [`BANDS`] bands (thirds: top to bottom for the sideways shift, left to
//! right for the vertical one) finds the same shift within a pixel: a camera moves all of the
//! picture, while a car, however big, moves only the band it drives through.

/// The largest shift looked for, as a share of the image's width (or height).
pub const MAX_SHIFT_FRAC: f32 = 0.05;
/// A shift is taken when its profile mismatch is at most this share of no shift's.
const MIN_GAIN: f32 = 0.5;
/// The picture is measured in this many bands, which must agree.
pub const BANDS: usize = 3;
/// The background changes slowly: its profiles are measured again every this many frames.
const BACKGROUND_EVERY: u32 = 5;

/// Profile buffers, allocated with the geometry: per band, the frame's and the background's.
#[derive(Debug, Default)]
pub struct Shake {
    cur_cols: Vec<f32>,
    bg_cols: Vec<f32>,
    cur_rows: Vec<f32>,
    bg_rows: Vec<f32>,
    /// Frames since the background's profiles were measured.
    bg_age: u32,
}

impl Shake {
    /// Buffers for a `width` x `height` image.
    pub fn configure(&mut self, width: usize, height: usize) {
        for (v, n) in [
            (&mut self.cur_cols, width),
            (&mut self.bg_cols, width),
            (&mut self.cur_rows, height),
            (&mut self.bg_rows, height),
        ] {
            v.clear();
            v.resize(n * BANDS, 0.0);
        }
        self.bg_age = BACKGROUND_EVERY;
    }

    /// The background was replaced: measure it again on the next frame.
    pub fn reset(&mut self) {
        self.bg_age = BACKGROUND_EVERY;
    }

    /// The shift `(sx, sy)` of the scene from the background to `pixels`: what was at `(x, y)`
    /// in the background is at `(x + sx, y + sy)` now.
    pub fn estimate(&mut self, pixels: &[u8], background: &[f32], width: usize) -> (isize, isize) {
        let height = pixels.len() / width.max(1);
        if width < 8 * BANDS || height < 8 * BANDS {
            return (0, 0);
        }
        profiles(
            width,
            height,
            |i| f32::from(pixels[i]),
            &mut self.cur_cols,
            &mut self.cur_rows,
        );
        profiles(
            width,
            height,
            |i| background[i],
            &mut self.bg_cols,
            &mut self.bg_rows,
        );
        let agreed = |cur: &[f32], bg: &[f32], len: usize| {
            let mut s = [0isize; BANDS];
            for (b, s) in s.iter_mut().enumerate() {
                let band = b * len..(b + 1) * len;
                *s = best_shift(&cur[band.clone()], &bg[band], len);
            }
            s.sort_unstable();
            if s[BANDS - 1] - s[0] <= 1 {
                s[BANDS / 2]
            } else {
                0
            }
        };
        let sx = agreed(&self.cur_cols, &self.bg_cols, width);
        let sy = agreed(&self.cur_rows, &self.bg_rows, height);
        (sx, sy)
    }
}

/// Per band: column sums of |horizontal gradient| over each third of the rows (`cols`, band
/// after band), row sums of |vertical gradient| over each third of the columns (`rows`); each
/// profile scaled to a mean of 1.
fn profiles(w: usize, h: usize, at: impl Fn(usize) -> f32, cols: &mut [f32], rows: &mut [f32]) {
    cols.fill(0.0);
    rows.fill(0.0);
    for y in 0..h {
        let row_band = y * BANDS / h;
        for col_band in 0..BANDS {
            for x in col_band * w / BANDS..(col_band + 1) * w / BANDS {
                let i = y * w + x;
                let v = at(i);
                if x + 1 < w {
                    cols[row_band * w + x] += (at(i + 1) - v).abs();
                }
                if y + 1 < h {
                    rows[col_band * h + y] += (at(i + w) - v).abs();
                }
            }
        }
    }
    for (p, len) in [(cols, w), (rows, h)] {
        for band in p.chunks_mut(len) {
            let mean = band.iter().sum::<f32>() / len as f32;
            if mean > 0.0 {
                band.iter_mut().for_each(|v| *v /= mean);
            }
        }
    }
}

/// The shift `s` (|s| up to [`MAX_SHIFT_FRAC`] of `len`) that makes `cur[x + s]` best match
/// `bg[x]`, or 0 when none is clearly better.
fn best_shift(cur: &[f32], bg: &[f32], len: usize) -> isize {
    let max = (len as f32 * MAX_SHIFT_FRAC) as isize;
    let cost = |s: isize| {
        let (mut sum, mut n) = (0.0f32, 0u32);
        // The last entry of a profile has no gradient: compare up to len - 1.
        for x in max..(len as isize - 1 - max) {
            sum += (cur[(x + s) as usize] - bg[x as usize]).abs();
            n += 1;
        }
        sum / n.max(1) as f32
    };
    let still = cost(0);
    let (mut best, mut at) = (still, 0);
    for s in -max..=max {
        let c = cost(s);
        if c < best {
            (best, at) = (c, s);
        }
    }
    if best <= MIN_GAIN * still { at } else { 0 }
}
