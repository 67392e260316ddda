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

mod render;
mod rng;
mod script;
mod timeline;
mod validate;

#[cfg(test)]
mod tests;

pub use render::Scene;
pub use script::{
    Background, Flicker, Light, Object, ObjectTruth, QualityChange, Script, ScriptError, Shape,
    Texture, Wave,
};
