//! The script's schema: what a scene script may say, with its defaults, and how it is read.

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
}
