//! Rendering a script's frames: the background texture once, then each frame's objects, light
//! and noise, RGB and JPEG.

use std::time::Duration;

use super::rng::Rng;
use super::script::{ObjectTruth, Script, Shape, Texture};

/// A scene of a given size: renders frames of its script. Holds its buffers, so rendering
/// allocates nothing once warm (the JPEG encoder's own tables aside).
#[derive(Debug)]
pub struct Scene {
    script: Script,
    width: u32,
    height: u32,
    /// The background texture, grey.
    base: Vec<u8>,
    /// The frame being rendered, RGB.
    rgb: Vec<u8>,
}

impl Scene {
    /// A scene rendering `script` at `width` x `height` (each clamped to 16..=4096).
    pub fn new(script: Script, width: u32, height: u32) -> Scene {
        let width = width.clamp(16, 4096);
        let height = height.clamp(16, 4096);
        let base = background(&script, width, height);
        Scene {
            rgb: vec![0; base.len() * 3],
            base,
            script,
            width,
            height,
        }
    }

    /// The script.
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// Frame width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Frame height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The objects in view at `t` (after `repeat`), in drawing order.
    pub fn objects_in_view(&self, t: Duration) -> Vec<ObjectTruth> {
        let s = self.script.local(t);
        self.script
            .objects
            .iter()
            .filter_map(|o| {
                Script::object_at(o, s).map(|(bbox, moving)| ObjectTruth {
                    name: o.name.clone(),
                    bbox,
                    moving,
                })
            })
            .collect()
    }

    /// The global light level at `t` (after `repeat`; 1.0 = as the background is scripted),
    /// flicker included: the truth for tests of light changes.
    pub fn light(&self, t: Duration) -> f32 {
        self.script.light_at(self.script.local(t))
    }

    /// The sensor noise (standard deviation, grey levels) at `t`, after `light` changes.
    pub fn noise(&self, t: Duration) -> f32 {
        self.script.exposure_at(self.script.local(t)).1
    }

    /// The JPEG quality of the frame at `t`, after `quality_change`s.
    pub fn quality(&self, t: Duration) -> u8 {
        self.script.quality_at(self.script.local(t))
    }

    /// Renders the frame at `t` as RGB (3 bytes a pixel, rows top to bottom).
    pub fn render_rgb(&mut self, t: Duration) -> &[u8] {
        let s = self.script.local(t);
        let light = (self.script.light_at(s) * 256.0) as u32;
        // Noise differs per frame but is the same for the same t.
        let mut rng =
            Rng::new(self.script.seed ^ (t.as_millis() as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let noise = (self.script.exposure_at(s).1 * 256.0 / 104.0) as i32;
        // The background is stored as grey (a third of the memory); a warm tint per channel.
        const TINT: [u32; 3] = [269, 256, 230];
        let lit = TINT.map(|t| t * light);
        for (dst, src) in self.rgb.chunks_exact_mut(12).zip(self.base.chunks_exact(4)) {
            // One random draw gives 4 pixels' noise (triangular, std ~ `noise`).
            let r = rng.next();
            for p in 0..4 {
                let n = if noise == 0 {
                    0
                } else {
                    let a = ((r >> (p * 16)) & 0xFF) as i32;
                    let b = ((r >> (p * 16 + 8)) & 0xFF) as i32;
                    ((a + b - 255) * noise) >> 8
                };
                for c in 0..3 {
                    let v = ((u32::from(src[p]) * lit[c]) >> 16) as i32 + n;
                    dst[p * 3 + c] = v.clamp(0, 255) as u8;
                }
            }
        }
        // Pixels past the last whole group of 4: light only.
        let tail = self.base.len() - self.base.len() % 4;
        for (d, s) in self.rgb[tail * 3..]
            .chunks_exact_mut(3)
            .zip(&self.base[tail..])
        {
            for c in 0..3 {
                d[c] = ((u32::from(*s) * lit[c]) >> 16).min(255) as u8;
            }
        }
        let (w, h) = (self.width as f32, self.height as f32);
        for o in &self.script.objects {
            let (Some(([x, y, bw, bh], _)), Some((c, _))) =
                (Script::object_at(o, s), Script::centre_at(o, s))
            else {
                continue;
            };
            let (x0, y0) = ((x * w) as usize, (y * h) as usize);
            let (x1, y1) = (((x + bw) * w) as usize, ((y + bh) * h) as usize);
            let (x1, y1) = (x1.min(self.width as usize), y1.min(self.height as usize));
            // Full (unclipped) geometry for the ellipse test.
            let (cx, cy) = (c[0] * w, c[1] * h);
            let (rx, ry) = (o.size[0] * w / 2.0, o.size[1] * h / 2.0);
            for py in y0..y1 {
                let row = py * self.width as usize * 3;
                for px in x0..x1 {
                    if o.shape == Shape::Ellipse {
                        let dx = (px as f32 + 0.5 - cx) / rx;
                        let dy = (py as f32 + 0.5 - cy) / ry;
                        if dx * dx + dy * dy > 1.0 {
                            continue;
                        }
                    }
                    // Faint stripes so the inside of an object has texture too.
                    let stripe = if (py / 4) % 2 == 0 { 256 } else { 224 };
                    let i = row + px * 3;
                    for c in 0..3 {
                        let v = (u32::from(o.color[c]) * light * stripe) >> 16;
                        self.rgb[i + c] = v.min(255) as u8;
                    }
                }
            }
        }
        &self.rgb
    }

    /// Renders the frame at `t` and JPEG-encodes it into `out` (cleared first, capacity
    /// reused).
    pub fn render_jpeg(&mut self, t: Duration, out: &mut Vec<u8>) {
        out.clear();
        self.render_rgb(t);
        let quality = self.quality(t);
        let encoder = jpeg_encoder::Encoder::new(&mut *out, quality);
        encoder
            .encode(
                &self.rgb,
                self.width as u16,
                self.height as u16,
                jpeg_encoder::ColorType::Rgb,
            )
            .expect("encoding into a Vec cannot fail for a size within 16..=4096");
    }
}

/// Renders the background texture once, as grey levels.
fn background(script: &Script, width: u32, height: u32) -> Vec<u8> {
    let b = &script.background;
    let (w, h) = (width as usize, height as usize);
    let cell = ((b.scale * width as f32) as usize).max(2);
    let mut rng = Rng::new(script.seed);
    // A small grid of random values for value noise and brick shades.
    let gw = w / cell + 2;
    let gh = h / cell + 2;
    let grid: Vec<f32> = (0..gw * gh)
        .map(|_| (rng.next() >> 40) as f32 / (1u64 << 24) as f32)
        .collect();
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let t = match b.texture {
                Texture::Plain => 0.5,
                Texture::Checker => {
                    if ((x / cell) + (y / cell)) % 2 == 0 {
                        1.0
                    } else {
                        0.0
                    }
                }
                Texture::Bricks => {
                    let bh = cell;
                    let bw = cell * 2;
                    let row = y / bh;
                    let off = if row % 2 == 0 { 0 } else { bw / 2 };
                    let col = (x + off) / bw;
                    let mortar = y % bh == 0 || (x + off) % bw == 0;
                    if mortar {
                        0.0
                    } else {
                        0.5 + 0.5 * grid[(row % gh) * gw + col % gw]
                    }
                }
                Texture::Noise => {
                    let fx = x as f32 / cell as f32;
                    let fy = y as f32 / cell as f32;
                    let (ix, iy) = (fx as usize, fy as usize);
                    let (tx, ty) = (fx - ix as f32, fy - iy as f32);
                    let g = |i: usize, j: usize| grid[(j % gh) * gw + i % gw];
                    let top = g(ix, iy) * (1.0 - tx) + g(ix + 1, iy) * tx;
                    let bot = g(ix, iy + 1) * (1.0 - tx) + g(ix + 1, iy + 1) * tx;
                    top * (1.0 - ty) + bot * ty
                }
            };
            let level = (b.brightness + b.contrast * (t - 0.5)) * 255.0;
            out[y * w + x] = level.clamp(0.0, 255.0) as u8;
        }
    }
    out
}
