//! Regions: the changed pixels that survived despeckle, labelled into 8-connected components,
//! and the components close to each other merged into one region (the parts of one person
//! that differ from the background, split where their colours match it).
//!
//! Everything is bounded: at most [`MAX_COMPONENTS`] components are kept (the largest), so a
//! frame full of speckle costs the same as a quiet one; the stack and the lists are allocated
//! once with the geometry.

/// At most this many components of one frame are kept (the largest); smaller ones still count
/// in the changed area.
pub const MAX_COMPONENTS: usize = 48;
/// Components closer than this share of the analysis image's height belong to one region.
const MERGE_GAP_FRAC: f32 = 0.02;

/// A changed region at analysis scale: its pixel count, box and centroid.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Region {
    /// Changed pixels in it.
    pub px: u32,
    /// Box, inclusive pixel coordinates.
    pub x0: u32,
    /// Top.
    pub y0: u32,
    /// Right (inclusive).
    pub x1: u32,
    /// Bottom (inclusive).
    pub y1: u32,
    sum_x: u64,
    sum_y: u64,
}

impl Region {
    /// The centroid of its pixels.
    pub fn centre(&self) -> (f32, f32) {
        let n = self.px.max(1) as f32;
        (self.sum_x as f32 / n, self.sum_y as f32 / n)
    }

    /// Width and height of the box, pixels.
    pub fn size(&self) -> (f32, f32) {
        (
            (self.x1 - self.x0 + 1) as f32,
            (self.y1 - self.y0 + 1) as f32,
        )
    }

    fn near(&self, o: &Region, gap: u32) -> bool {
        self.x0 <= o.x1 + gap
            && o.x0 <= self.x1 + gap
            && self.y0 <= o.y1 + gap
            && o.y0 <= self.y1 + gap
    }

    fn absorb(&mut self, o: &Region) {
        self.px += o.px;
        self.sum_x += o.sum_x;
        self.sum_y += o.sum_y;
        self.x0 = self.x0.min(o.x0);
        self.y0 = self.y0.min(o.y0);
        self.x1 = self.x1.max(o.x1);
        self.y1 = self.y1.max(o.y1);
    }
}

/// The labeller's buffers.
#[derive(Debug, Default)]
pub struct Labeller {
    stack: Vec<u32>,
    regions: Vec<Region>,
}

impl Labeller {
    /// Buffers for a `width` x `height` image.
    pub fn configure(&mut self, width: usize, height: usize) {
        self.stack.clear();
        self.stack.reserve(width * height);
        self.regions.clear();
        self.regions.reserve(MAX_COMPONENTS + 1);
    }

    /// The regions of the last [`Labeller::label`], largest first.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Labels the non-zero pixels of `mask` (cleared on the way), merges near components, and
    /// returns the number of changed pixels.
    pub fn label(&mut self, mask: &mut [u8], width: usize, height: usize) -> usize {
        self.regions.clear();
        let mut total = 0usize;
        for start in 0..mask.len() {
            if mask[start] == 0 {
                continue;
            }
            mask[start] = 0;
            let c = self.flood(mask, width, height, start);
            total += c.px as usize;
            if self.regions.len() < MAX_COMPONENTS {
                self.regions.push(c);
            } else if let Some(smallest) = self.regions.iter_mut().min_by_key(|r| r.px) {
                if c.px > smallest.px {
                    *smallest = c;
                }
            }
        }
        self.merge(height);
        self.regions
            .sort_unstable_by_key(|r| std::cmp::Reverse(r.px));
        total
    }

    /// One 8-connected component from `start`.
    fn flood(&mut self, mask: &mut [u8], w: usize, h: usize, start: usize) -> Region {
        self.stack.clear();
        self.stack.push(start as u32);
        let mut c = Region {
            x0: u32::MAX,
            y0: u32::MAX,
            ..Region::default()
        };
        while let Some(i) = self.stack.pop() {
            let (x, y) = (i as usize % w, i as usize / w);
            c.px += 1;
            c.sum_x += x as u64;
            c.sum_y += y as u64;
            c.x0 = c.x0.min(x as u32);
            c.x1 = c.x1.max(x as u32);
            c.y0 = c.y0.min(y as u32);
            c.y1 = c.y1.max(y as u32);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if mask[j] != 0 {
                        mask[j] = 0;
                        self.stack.push(j as u32);
                    }
                }
            }
        }
        c
    }

    /// Merges regions whose boxes come within the gap of each other, until none do.
    fn merge(&mut self, height: usize) {
        let gap = ((height as f32 * MERGE_GAP_FRAC).round() as u32).max(1);
        let mut merged = true;
        while merged {
            merged = false;
            let mut i = 0;
            while i < self.regions.len() {
                let mut j = i + 1;
                while j < self.regions.len() {
                    if self.regions[i].near(&self.regions[j], gap) {
                        let o = self.regions.swap_remove(j);
                        self.regions[i].absorb(&o);
                        merged = true;
                    } else {
                        j += 1;
                    }
                }
                i += 1;
            }
        }
    }
}
