//! What the script says at a given time: where each object is, the light, the noise and the
//! JPEG quality.

use std::time::Duration;

use super::rng::Rng;
use super::script::{Object, Script, Wave};

impl Script {
    /// Script time for a wall time since start (applies `repeat`).
    pub(super) fn local(&self, t: Duration) -> f32 {
        let s = t.as_secs_f64();
        if self.repeat > 0.0 {
            (s % f64::from(self.repeat)) as f32
        } else {
            s as f32
        }
    }

    /// Object `o`'s centre (path plus sway) and whether it moves, at script time `s`.
    pub(super) fn centre_at(o: &Object, s: f32) -> Option<([f32; 2], bool)> {
        if s < o.start {
            None
        } else if s <= o.end {
            let k = if o.end > o.start {
                (s - o.start) / (o.end - o.start)
            } else {
                1.0
            };
            let wave = if o.sway_hz > 0.0 {
                (std::f32::consts::TAU * o.sway_hz * (s - o.start)).sin()
            } else {
                0.0
            };
            Some((
                [
                    o.from[0] + (o.to[0] - o.from[0]) * k + o.sway[0] * wave,
                    o.from[1] + (o.to[1] - o.from[1]) * k + o.sway[1] * wave,
                ],
                true,
            ))
        } else if o.hold {
            Some((o.to, false))
        } else {
            None
        }
    }

    /// Object `o`'s visible box and whether it moves, at script time `s`.
    pub(super) fn object_at(o: &Object, s: f32) -> Option<([f32; 4], bool)> {
        let (c, moving) = Script::centre_at(o, s)?;
        let x0 = (c[0] - o.size[0] / 2.0).max(0.0);
        let y0 = (c[1] - o.size[1] / 2.0).max(0.0);
        let x1 = (c[0] + o.size[0] / 2.0).min(1.0);
        let y1 = (c[1] + o.size[1] / 2.0).min(1.0);
        (x1 > x0 && y1 > y0).then_some(([x0, y0, x1 - x0, y1 - y0], moving))
    }

    /// When each object is moving and at least partly in view: `(name, from, to)`, found to
    /// 10 ms within the first play of the script.
    pub fn motion_intervals(&self) -> Vec<(String, Duration, Duration)> {
        let mut out = Vec::new();
        for o in &self.objects {
            let mut open: Option<f32> = None;
            let steps = (o.end * 100.0).ceil() as u32 + 1;
            for i in 0..=steps {
                let s = i as f32 / 100.0;
                let visible = matches!(Script::object_at(o, s), Some((_, true)));
                match (visible, open) {
                    (true, None) => open = Some(s),
                    (false, Some(a)) => {
                        out.push((
                            o.name.clone(),
                            Duration::from_secs_f32(a),
                            Duration::from_secs_f32(s),
                        ));
                        open = None;
                    }
                    _ => {}
                }
            }
            if let Some(a) = open {
                out.push((
                    o.name.clone(),
                    Duration::from_secs_f32(a),
                    Duration::from_secs_f32(o.end),
                ));
            }
        }
        out
    }

    /// The light level (without flicker) and the sensor noise at script time `s`.
    pub(super) fn exposure_at(&self, s: f32) -> (f32, f32) {
        let (mut level, mut noise) = (1.0f32, self.noise);
        for l in &self.lights {
            if s < l.at {
                break;
            }
            let target_noise = l.noise.unwrap_or(noise);
            if l.ramp > 0.0 && s < l.at + l.ramp {
                let k = (s - l.at) / l.ramp;
                level += (l.level - level) * k;
                noise += (target_noise - noise) * k;
                break;
            }
            level = l.level;
            noise = target_noise;
        }
        (level, noise)
    }

    /// The light level (with flicker) at script time `s`.
    pub(super) fn light_at(&self, s: f32) -> f32 {
        let mut level = self.exposure_at(s).0;
        let f = &self.flicker;
        if f.amplitude > 0.0 {
            let wave = match f.wave {
                Wave::Sine => (std::f32::consts::TAU * f.hz * s).sin(),
                Wave::Random if f.hz > 0.0 => {
                    // One level per 1/hz slot, from the seed and the slot: -1..1.
                    let slot = (f64::from(s) * f64::from(f.hz)).floor() as u64;
                    let r = Rng::new(self.seed ^ slot.wrapping_mul(0xD1B5_4A32_D192_ED03)).next();
                    (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                }
                Wave::Random => 0.0,
            };
            level *= 1.0 + f.amplitude * wave;
        }
        level.max(0.0)
    }

    /// The JPEG quality at script time `s`.
    pub(super) fn quality_at(&self, s: f32) -> u8 {
        self.quality_changes
            .iter()
            .take_while(|q| q.at <= s)
            .last()
            .map_or(self.quality, |q| q.quality)
    }
}
