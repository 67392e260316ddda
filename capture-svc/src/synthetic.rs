//! The synthetic camera: a deterministic scripted scene, rendered and JPEG-encoded.
//!
//! A [`Script`] (TOML) describes a textured background, objects that move along straight
//! paths at scripted times (and may sway about them), global light steps and ramps (with the
//! sensor noise the camera's gain brings), flicker, sensor noise, the JPEG quality and its
//! changes, and a seed. The same script, size and time always give the same bytes, so tests of
//! other services can render frames in-process, faster than real time, and know the truth:
//! [`Scene::objects_in_view`] and [`Script::motion_intervals`].
//!
//! # Script format
//!
//! Every key is optional; times are seconds from the start of the script, positions and sizes
//! are fractions of the frame (0..1; outside that range is out of view).
//!
//! ```toml
//! seed = 7            # noise and texture seed
//! noise = 3.0         # sensor noise, standard deviation in grey levels (0 = none)
//! quality = 80        # JPEG quality, 1..=100
//! repeat = 60.0       # the script repeats every 60 s (0 = plays once, then holds)
//!
//! [background]
//! texture = "bricks"  # "bricks" | "checker" | "noise" | "plain"
//! scale = 0.05        # feature size, fraction of the frame width
//! brightness = 0.55   # mean level, 0..1
//! contrast = 0.25     # texture contrast, 0..1
//!
//! # An object crosses from t=10 s to t=20 s: it appears at `from` at 10 s, moves in a
//! # straight line and reaches `to` at 20 s, then is gone (unless `hold = true`).
//! [[object]]
//! name = "person"
//! shape = "rect"      # "rect" | "ellipse"
//! size = [0.1, 0.3]  # width, height
//! color = [180, 60, 50]
//! start = 10.0
//! end = 20.0
//! from = [-0.05, 0.6] # centre at start: just out of view on the left
//! to = [1.05, 0.6]    # centre at end: just out of view on the right
//! hold = false        # true: stays at `to` after `end` (a parked car)
//! sway = [0.0, 0.0]   # oscillation about the path, amplitude x, y (0..=1); a branch in
//! sway_hz = 0.0       # the wind: from = to, sway = [0.04, 0.01], sway_hz = 0.4 (0..=60)
//!
//! # Global light: from `at`, move to `level` (1.0 = as scripted) over `ramp` seconds
//! # (0 = a step, like a lamp switched on).
//! [[light]]
//! at = 30.0
//! level = 0.6
//! ramp = 0.0
//! noise = 8.0         # optional: the sensor noise reached with it, over the same ramp (a
//!                     # camera raising its gain at dusk), 0..=100; absent = unchanged
//!
//! [flicker]           # mains flicker / fluorescent light: level * (1 + amplitude*wave)
//! amplitude = 0.02
//! hz = 7.0
//! wave = "sine"       # "sine" | "random": a new random level in ±amplitude `hz` times a
//!                     # second (a failing tube; irregular, so any frame rate sees it)
//!
//! # The JPEG quality from `at` on (1..=100), in time order; before the first: `quality`.
//! [[quality_change]]
//! at = 40.0
//! quality = 30
//! ```
//!
//! In-process use (what motion-svc's accuracy tests do):
//!
//! ```
//! use std::time::Duration;
//! use capture_svc::synthetic::{Scene, Script};
//! let script = Script::from_toml(r#"
//!     [[object]]
//!     name = "walker"
//!     start = 10.0
//!     end = 20.0
//!     from = [-0.1, 0.5]
//!     to = [1.1, 0.5]
//! "#).unwrap();
//! let mut scene = Scene::new(script, 320, 240);
//! let mut jpeg = Vec::new();
//! scene.render_jpeg(Duration::from_secs(15), &mut jpeg);
//! assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
//! assert_eq!(scene.objects_in_view(Duration::from_secs(15)).len(), 1);
//! assert!(scene.objects_in_view(Duration::from_secs(5)).is_empty());
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A script could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// Not valid TOML, or a key of the wrong type or an unknown key.
    #[error("scene script is not valid: {0}")]
    Toml(toml::de::Error),
    /// A value out of its range.
    #[error("scene script: {key} = {value} is out of range ({expected})")]
    Range {
        /// The key.
        key: String,
        /// The value found.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// The script file could not be read.
    #[error("cannot read scene script {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

/// The background texture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Texture {
    /// Rows of bricks with mortar lines.
    Bricks,
    /// A checkerboard.
    Checker,
    /// Smooth value noise (foliage-like).
    Noise,
    /// One flat level.
    Plain,
}

/// The background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Background {
    /// Texture kind.
    pub texture: Texture,
    /// Feature size, fraction of the frame width.
    pub scale: f32,
    /// Mean level, 0..1.
    pub brightness: f32,
    /// Texture contrast, 0..1.
    pub contrast: f32,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            texture: Texture::Bricks,
            scale: 0.05,
            brightness: 0.55,
            contrast: 0.25,
        }
    }
}

/// Object shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Axis-aligned rectangle.
    Rect,
    /// Ellipse inscribed in the size.
    Ellipse,
}

/// One scripted moving object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Object {
    /// Name given back in the ground truth.
    pub name: String,
    /// Shape.
    pub shape: Shape,
    /// Width and height, fractions of the frame.
    pub size: [f32; 2],
    /// RGB colour.
    pub color: [u8; 3],
    /// When it appears at `from` (s).
    pub start: f32,
    /// When it reaches `to` (s).
    pub end: f32,
    /// Centre at `start`.
    pub from: [f32; 2],
    /// Centre at `end`.
    pub to: [f32; 2],
    /// Stays at `to` after `end` instead of vanishing.
    pub hold: bool,
    /// Amplitude `[x, y]` of an oscillation about the path between `start` and `end`,
    /// fractions of the frame (a branch swaying in the wind).
    pub sway: [f32; 2],
    /// Frequency of the sway, Hz (0 = none).
    pub sway_hz: f32,
}

impl Default for Object {
    fn default() -> Self {
        Object {
            name: "object".into(),
            shape: Shape::Rect,
            size: [0.1, 0.3],
            color: [180, 60, 50],
            start: 0.0,
            end: 10.0,
            from: [-0.1, 0.6],
            to: [1.1, 0.6],
            hold: false,
            sway: [0.0, 0.0],
            sway_hz: 0.0,
        }
    }
}

/// A global light change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Light {
    /// When the change starts (s).
    pub at: f32,
    /// The level reached (1.0 = unchanged).
    pub level: f32,
    /// Seconds to reach it (0 = a step).
    pub ramp: f32,
    /// The sensor noise (standard deviation, grey levels) reached with it, over the same ramp
    /// (a camera raising its gain as the light falls); `None` = unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<f32>,
}

impl Default for Light {
    fn default() -> Self {
        Light {
            at: 0.0,
            level: 1.0,
            ramp: 0.0,
            noise: None,
        }
    }
}

/// The shape of the flicker over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wave {
    /// A sine of `hz`.
    #[default]
    Sine,
    /// A new random level within ±amplitude `hz` times a second (irregular).
    Random,
}

/// Flicker of the whole image.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Flicker {
    /// Relative amplitude (0.02 = ±2 %).
    pub amplitude: f32,
    /// Frequency in Hz (for `random`: new levels a second).
    pub hz: f32,
    /// Sine or random.
    pub wave: Wave,
}

/// A change of the JPEG quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityChange {
    /// From when (s).
    pub at: f32,
    /// The JPEG quality from then on, 1..=100.
    pub quality: u8,
}

impl Default for QualityChange {
    fn default() -> Self {
        QualityChange {
            at: 0.0,
            quality: 80,
        }
    }
}

/// A whole scene script; see the module docs for the TOML format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Script {
    /// Seed of texture and noise.
    pub seed: u64,
    /// Sensor noise, standard deviation in grey levels.
    pub noise: f32,
    /// JPEG quality 1..=100.
    pub quality: u8,
    /// Period after which the script repeats (0 = never).
    pub repeat: f32,
    /// The background.
    pub background: Background,
    /// Moving objects, drawn in order (later ones on top).
    #[serde(rename = "object")]
    pub objects: Vec<Object>,
    /// Light changes, in time order.
    #[serde(rename = "light")]
    pub lights: Vec<Light>,
    /// Flicker.
    pub flicker: Flicker,
    /// JPEG quality changes, in time order.
    #[serde(rename = "quality_change")]
    pub quality_changes: Vec<QualityChange>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            seed: 1,
            noise: 2.0,
            quality: 80,
            repeat: 0.0,
            background: Background::default(),
            objects: Vec::new(),
            lights: Vec::new(),
            flicker: Flicker::default(),
            quality_changes: Vec::new(),
        }
    }
}

/// One object's ground truth at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectTruth {
    /// The object's name from the script.
    pub name: String,
    /// Visible part `[x, y, w, h]`, fractions of the frame.
    pub bbox: [f32; 4],
    /// Whether it is moving now (false for a held object after its `end`).
    pub moving: bool,
}

impl Script {
    /// The demo scene the service plays when no script is given: a person crosses from
    /// 10 s to 20 s, a ball from 35 s to 38 s, a light step at 50 s; repeats every 60 s.
    pub fn default_demo() -> Script {
        Script {
            repeat: 60.0,
            objects: vec![
                Object {
                    name: "person".into(),
                    start: 10.0,
                    end: 20.0,
                    ..Object::default()
                },
                Object {
                    name: "ball".into(),
                    shape: Shape::Ellipse,
                    size: [0.08, 0.1],
                    color: [230, 220, 40],
                    start: 35.0,
                    end: 38.0,
                    from: [1.05, 0.3],
                    to: [-0.05, 0.8],
                    ..Object::default()
                },
            ],
            lights: vec![
                Light {
                    at: 50.0,
                    level: 0.7,
                    ramp: 0.0,
                    noise: None,
                },
                Light {
                    at: 55.0,
                    level: 1.0,
                    ramp: 4.0,
                    noise: None,
                },
            ],
            ..Script::default()
        }
    }

    /// Parses and checks a TOML script.
    ///
    /// # Errors
    /// Invalid TOML, an unknown key, or a value out of range (named).
    pub fn from_toml(text: &str) -> Result<Script, ScriptError> {
        let script: Script = toml::from_str(text).map_err(ScriptError::Toml)?;
        script.validate()?;
        Ok(script)
    }

    /// Reads and parses a script file.
    ///
    /// # Errors
    /// As [`Script::from_toml`], or the file cannot be read.
    pub fn from_file(path: &std::path::Path) -> Result<Script, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|error| ScriptError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Script::from_toml(&text)
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// The first value out of range, by key.
    pub fn validate(&self) -> Result<(), ScriptError> {
        fn range(key: &str, v: f32, ok: bool, expected: &'static str) -> Result<(), ScriptError> {
            if ok && v.is_finite() {
                Ok(())
            } else {
                Err(ScriptError::Range {
                    key: key.to_owned(),
                    value: v.to_string(),
                    expected,
                })
            }
        }
        range(
            "quality",
            f32::from(self.quality),
            (1..=100).contains(&self.quality),
            "1..=100",
        )?;
        range(
            "noise",
            self.noise,
            (0.0..=100.0).contains(&self.noise),
            "0..=100",
        )?;
        range("repeat", self.repeat, self.repeat >= 0.0, ">= 0")?;
        let b = &self.background;
        range(
            "background.scale",
            b.scale,
            b.scale > 0.0 && b.scale <= 1.0,
            "0 < scale <= 1",
        )?;
        range(
            "background.brightness",
            b.brightness,
            (0.0..=1.0).contains(&b.brightness),
            "0..=1",
        )?;
        range(
            "background.contrast",
            b.contrast,
            (0.0..=1.0).contains(&b.contrast),
            "0..=1",
        )?;
        for (i, o) in self.objects.iter().enumerate() {
            range(
                &format!("object[{i}].end"),
                o.end,
                o.end >= o.start,
                ">= start",
            )?;
            range(
                &format!("object[{i}].start"),
                o.start,
                o.start >= 0.0,
                ">= 0",
            )?;
            for (j, s) in o.size.iter().enumerate() {
                range(
                    &format!("object[{i}].size[{j}]"),
                    *s,
                    *s > 0.0 && *s <= 2.0,
                    "0 < size <= 2",
                )?;
            }
            for (j, a) in o.sway.iter().enumerate() {
                range(
                    &format!("object[{i}].sway[{j}]"),
                    *a,
                    (0.0..=1.0).contains(a),
                    "0..=1",
                )?;
            }
            range(
                &format!("object[{i}].sway_hz"),
                o.sway_hz,
                (0.0..=60.0).contains(&o.sway_hz),
                "0..=60",
            )?;
        }
        for (i, l) in self.lights.iter().enumerate() {
            range(
                &format!("light[{i}].level"),
                l.level,
                (0.0..=4.0).contains(&l.level),
                "0..=4",
            )?;
            range(&format!("light[{i}].ramp"), l.ramp, l.ramp >= 0.0, ">= 0")?;
            range(&format!("light[{i}].at"), l.at, l.at >= 0.0, ">= 0")?;
            if let Some(n) = l.noise {
                range(
                    &format!("light[{i}].noise"),
                    n,
                    (0.0..=100.0).contains(&n),
                    "0..=100",
                )?;
            }
        }
        range(
            "flicker.amplitude",
            self.flicker.amplitude,
            (0.0..=1.0).contains(&self.flicker.amplitude),
            "0..=1",
        )?;
        range(
            "flicker.hz",
            self.flicker.hz,
            self.flicker.hz >= 0.0,
            ">= 0",
        )?;
        let mut after = 0.0;
        for (i, q) in self.quality_changes.iter().enumerate() {
            range(
                &format!("quality_change[{i}].quality"),
                f32::from(q.quality),
                (1..=100).contains(&q.quality),
                "1..=100",
            )?;
            range(
                &format!("quality_change[{i}].at"),
                q.at,
                q.at >= after,
                ">= 0 and >= the previous change's at",
            )?;
            after = q.at;
        }
        Ok(())
    }

    /// Script time for a wall time since start (applies `repeat`).
    fn local(&self, t: Duration) -> f32 {
        let s = t.as_secs_f64();
        if self.repeat > 0.0 {
            (s % f64::from(self.repeat)) as f32
        } else {
            s as f32
        }
    }

    /// Object `o`'s centre (path plus sway) and whether it moves, at script time `s`.
    fn centre_at(o: &Object, s: f32) -> Option<([f32; 2], bool)> {
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
    fn object_at(o: &Object, s: f32) -> Option<([f32; 4], bool)> {
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
    fn exposure_at(&self, s: f32) -> (f32, f32) {
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
    fn light_at(&self, s: f32) -> f32 {
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
    fn quality_at(&self, s: f32) -> u8 {
        self.quality_changes
            .iter()
            .take_while(|q| q.at <= s)
            .last()
            .map_or(self.quality, |q| q.quality)
    }
}

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

/// A small fast PRNG (xorshift64*): deterministic noise, not for anything secret.
#[derive(Debug, Clone, Copy)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn crossing() -> Script {
        Script::from_toml(
            r#"
            seed = 3
            [[object]]
            name = "walker"
            start = 10.0
            end = 20.0
            size = [0.1, 0.3]
            from = [-0.05, 0.5]
            to = [1.05, 0.5]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn same_time_same_bytes() {
        let mut a = Scene::new(crossing(), 160, 120);
        let mut b = Scene::new(crossing(), 160, 120);
        let (mut ja, mut jb) = (Vec::new(), Vec::new());
        a.render_jpeg(Duration::from_millis(12_345), &mut ja);
        b.render_jpeg(Duration::from_millis(12_345), &mut jb);
        assert_eq!(ja, jb);
        b.render_jpeg(Duration::from_millis(12_380), &mut jb);
        assert_ne!(ja, jb, "noise and motion differ between frames");
    }

    #[test]
    fn truth_matches_the_script() {
        let script = crossing();
        let scene = Scene::new(script.clone(), 160, 120);
        assert!(scene.objects_in_view(Duration::from_secs(9)).is_empty());
        let mid = scene.objects_in_view(Duration::from_secs(15));
        assert_eq!(mid.len(), 1);
        assert!((mid[0].bbox[0] - 0.45).abs() < 0.01, "{mid:?}");
        assert!(scene.objects_in_view(Duration::from_secs(21)).is_empty());
        let iv = script.motion_intervals();
        assert_eq!(iv.len(), 1);
        let (_, a, b) = &iv[0];
        // Just out of view at start and end: in view from ~10.0 s to ~20.0 s.
        assert!(a.as_secs_f32() >= 10.0 && a.as_secs_f32() < 10.1, "{a:?}");
        assert!(b.as_secs_f32() > 19.9 && b.as_secs_f32() <= 20.01, "{b:?}");
    }

    #[test]
    fn object_changes_the_pixels_where_it_is() {
        let mut scene = Scene::new(
            Script {
                noise: 0.0,
                ..crossing()
            },
            160,
            120,
        );
        let before = scene.render_rgb(Duration::from_secs(5)).to_vec();
        let during = scene.render_rgb(Duration::from_secs(15)).to_vec();
        let at = |img: &[u8], x: usize, y: usize| img[(y * 160 + x) * 3];
        assert_ne!(at(&before, 80, 60), at(&during, 80, 60));
        assert_eq!(at(&before, 5, 5), at(&during, 5, 5));
    }

    #[test]
    fn light_step_and_ramp() {
        let s = Script::from_toml(
            "[[light]]\nat = 5.0\nlevel = 0.5\n[[light]]\nat = 10.0\nlevel = 1.0\nramp = 2.0\n",
        )
        .unwrap();
        assert_eq!(s.light_at(4.9), 1.0);
        assert_eq!(s.light_at(5.0), 0.5);
        assert!((s.light_at(11.0) - 0.75).abs() < 1e-4);
        assert_eq!(s.light_at(13.0), 1.0);
    }

    #[test]
    fn a_swaying_object_oscillates_about_its_path_and_is_motion() {
        let s = Script::from_toml(
            "[[object]]\nname = \"branch\"\nstart = 0.0\nend = 30.0\nsize = [0.2, 0.2]\n\
             from = [0.5, 0.5]\nto = [0.5, 0.5]\nsway = [0.04, 0.01]\nsway_hz = 0.5\n",
        )
        .unwrap();
        let scene = Scene::new(s.clone(), 160, 120);
        let x = |ms| scene.objects_in_view(Duration::from_millis(ms))[0].bbox[0];
        // sin(2π·0.5·t): 0 at 0 s, +1 at 0.5 s, -1 at 1.5 s.
        assert!((x(0) - 0.4).abs() < 1e-4);
        assert!((x(500) - 0.44).abs() < 1e-4, "{}", x(500));
        assert!((x(1500) - 0.36).abs() < 1e-4, "{}", x(1500));
        assert_eq!(s.motion_intervals().len(), 1);
        // Without sway it does not move.
        let still = Script::from_toml(
            "[[object]]\nstart = 0.0\nend = 30.0\nfrom = [0.5, 0.5]\nto = [0.5, 0.5]\n",
        )
        .unwrap();
        let scene = Scene::new(still, 160, 120);
        let b = |ms| scene.objects_in_view(Duration::from_millis(ms))[0].bbox;
        assert_eq!(b(0), b(500));
    }

    #[test]
    fn a_light_change_can_bring_sensor_noise_with_it() {
        let s = Script::from_toml(
            "noise = 2.0\n[[light]]\nat = 10.0\nlevel = 0.4\nramp = 10.0\nnoise = 12.0\n\
             [[light]]\nat = 30.0\nlevel = 1.0\n",
        )
        .unwrap();
        let scene = Scene::new(s, 32, 32);
        let at = |secs| Duration::from_secs(secs);
        assert_eq!(scene.noise(at(5)), 2.0);
        assert!((scene.noise(at(15)) - 7.0).abs() < 1e-4);
        assert!((scene.light(at(15)) - 0.7).abs() < 1e-4);
        assert_eq!(scene.noise(at(25)), 12.0);
        // A later light without `noise` keeps the noise reached.
        assert_eq!(scene.noise(at(35)), 12.0);
        assert_eq!(scene.light(at(35)), 1.0);
        // More noise shows in the pixels: frames at night differ more from each other.
        let mut scene = scene;
        let spread = |scene: &mut Scene, a: u64, b: u64| {
            let x = scene.render_rgb(Duration::from_millis(a)).to_vec();
            let y = scene.render_rgb(Duration::from_millis(b)).to_vec();
            x.iter()
                .zip(&y)
                .map(|(p, q)| p.abs_diff(*q) as u64)
                .sum::<u64>()
        };
        assert!(spread(&mut scene, 35_000, 35_100) > 3 * spread(&mut scene, 5_000, 5_100));
    }

    #[test]
    fn random_flicker_is_irregular_and_deterministic() {
        let text = "[flicker]\namplitude = 0.1\nhz = 10.0\nwave = \"random\"\n";
        let scene = Scene::new(Script::from_toml(text).unwrap(), 32, 32);
        let levels: Vec<f32> = (0..50)
            .map(|i| scene.light(Duration::from_millis(i * 100 + 50)))
            .collect();
        assert!(levels.iter().all(|l| (0.9..=1.1).contains(l)), "{levels:?}");
        // Every 5th slot (what 2 fps analysis of it would see) still changes.
        let fifths: Vec<f32> = levels.iter().step_by(5).copied().collect();
        assert!(fifths.windows(2).all(|w| w[0] != w[1]), "{fifths:?}");
        // Constant within a slot, the same for the same script.
        assert_eq!(
            scene.light(Duration::from_millis(110)),
            scene.light(Duration::from_millis(190))
        );
        let again = Scene::new(Script::from_toml(text).unwrap(), 32, 32);
        assert_eq!(
            again.light(Duration::from_millis(1234)),
            scene.light(Duration::from_millis(1234))
        );
    }

    #[test]
    fn quality_changes_apply_from_their_time() {
        let s = Script::from_toml(
            "quality = 85\n[[quality_change]]\nat = 10.0\nquality = 25\n\
             [[quality_change]]\nat = 20.0\nquality = 60\n",
        )
        .unwrap();
        let mut scene = Scene::new(s, 160, 120);
        let q = |scene: &Scene, secs| scene.quality(Duration::from_secs(secs));
        assert_eq!(
            (q(&scene, 5), q(&scene, 10), q(&scene, 15), q(&scene, 25)),
            (85, 25, 25, 60)
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        scene.render_jpeg(Duration::from_millis(9_990), &mut a);
        scene.render_jpeg(Duration::from_millis(10_000), &mut b);
        assert!(
            b.len() < a.len(),
            "quality 25 is smaller: {} vs {}",
            b.len(),
            a.len()
        );
    }

    #[test]
    fn bad_new_keys_are_refused_by_key() {
        for (text, key) in [
            ("[[object]]\nsway = [0.1, 1.5]", "object[0].sway[1]"),
            ("[[object]]\nsway = [-0.1, 0.0]", "object[0].sway[0]"),
            ("[[object]]\nsway_hz = 61.0", "object[0].sway_hz"),
            ("[[object]]\nsway_hz = -1.0", "object[0].sway_hz"),
            ("[[light]]\nnoise = 101.0", "light[0].noise"),
            ("[[light]]\nnoise = -1.0", "light[0].noise"),
            (
                "[[quality_change]]\nquality = 0",
                "quality_change[0].quality",
            ),
            (
                "[[quality_change]]\nat = -1.0\nquality = 50",
                "quality_change[0].at",
            ),
            (
                "[[quality_change]]\nat = 5.0\n[[quality_change]]\nat = 4.0",
                "quality_change[1].at",
            ),
            ("[flicker]\nwave = \"square\"", "wave"),
        ] {
            let e = Script::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn bad_scripts_are_refused_by_key() {
        let e = Script::from_toml("quality = 0").unwrap_err().to_string();
        assert!(e.contains("quality"), "{e}");
        let e = Script::from_toml("[[object]]\nstart = 5.0\nend = 1.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("object[0].end"), "{e}");
        let e = Script::from_toml("colour = 1").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
