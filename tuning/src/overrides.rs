//! The overrides file's schema and the values in effect.
//!
//! The file holds only what was changed from the web UI (or MQTT): every key is optional, and
//! a key present replaces the administrator's `[motion]` value of the same name. One key is
//! not in `[motion]`: `detection`, armed (`true`, the default) or disarmed (`false`: frames
//! are still analysed, for the live preview, but nothing becomes an event: no clip, no
//! journal event, no hook).
//!
//! ```toml
//! detection = true
//! sensitivity = "high"
//! min_object_pct = 8.0
//! analysis_fps = 4.0
//! pre_capture_s = 2.0
//! post_capture_s = 5.0
//! max_total_mib = 4096.0
//! max_age_days = 14.0
//! masks = [[[0.0, 0.0], [0.3, 0.0], [0.3, 0.2]]]
//! zones = []
//! ```

use serde::{Deserialize, Serialize};

use crate::bounds::{
    ANALYSIS_FPS, Bound, KeyError, MAX_AGE_DAYS, MAX_TOTAL_MIB, MIN_OBJECT_PCT, POST_CAPTURE_S,
    PRE_CAPTURE_S, Sensitivity,
};
use crate::polygon::{Polygon, check_list};

/// The overrides file (every key optional; an unknown key is refused by name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overrides {
    /// Armed (`true`) or disarmed (`false`: no events, no clips, no hooks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<bool>,
    /// Sensitivity preset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<Sensitivity>,
    /// The smallest object to catch, percent of the frame height.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_object_pct: Option<f64>,
    /// Frames analysed per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis_fps: Option<f64>,
    /// Seconds kept before motion (from the next event on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_capture_s: Option<f64>,
    /// Seconds kept after motion (from the next event on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_capture_s: Option<f64>,
    /// Retention: total size of all events, MiB (0 = no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_total_mib: Option<f64>,
    /// Retention: days events are kept (0 = keep).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<f64>,
    /// Mask polygons: nothing inside counts. `[]` removes the administrator's masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masks: Option<Vec<Polygon>>,
    /// Zone polygons: when any, only inside them counts. `[]` removes the administrator's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<Polygon>>,
}

/// Sets each field of `$target` whose key `$o` (an [`Overrides`]) sets, by name: for any
/// struct with the `[motion]` keys of [`Overrides::MOTION_KEYS`] as fields of the same types
/// ([`Tunables`], motion-svc's `MotionConfig`).
#[macro_export]
macro_rules! apply_overrides {
    ($target:expr, $o:expr) => {{
        let (t, o) = (&mut $target, &$o);
        if let Some(v) = o.sensitivity {
            t.sensitivity = v;
        }
        if let Some(v) = o.min_object_pct {
            t.min_object_pct = Some(v);
        }
        if let Some(v) = o.analysis_fps {
            t.analysis_fps = v;
        }
        if let Some(v) = o.pre_capture_s {
            t.pre_capture_s = v;
        }
        if let Some(v) = o.post_capture_s {
            t.post_capture_s = v;
        }
        if let Some(v) = o.max_total_mib {
            t.max_total_mib = v;
        }
        if let Some(v) = o.max_age_days {
            t.max_age_days = v;
        }
        if let Some(v) = &o.masks {
            t.masks.clone_from(v);
        }
        if let Some(v) = &o.zones {
            t.zones.clone_from(v);
        }
    }};
}

/// Calls `$m!(field, ...)` with the numeric fields and their bounds.
macro_rules! numbers {
    ($m:ident) => {
        $m!(
            (min_object_pct, MIN_OBJECT_PCT),
            (analysis_fps, ANALYSIS_FPS),
            (pre_capture_s, PRE_CAPTURE_S),
            (post_capture_s, POST_CAPTURE_S),
            (max_total_mib, MAX_TOTAL_MIB),
            (max_age_days, MAX_AGE_DAYS)
        )
    };
}

impl Overrides {
    /// The keys of `[motion]` that may be overridden (all the file's keys but `detection`).
    pub const MOTION_KEYS: [&'static str; 9] = [
        "sensitivity",
        "min_object_pct",
        "analysis_fps",
        "pre_capture_s",
        "post_capture_s",
        "max_total_mib",
        "max_age_days",
        "masks",
        "zones",
    ];

    /// The numeric keys and their bounds, in the order of the settings page.
    pub const BOUNDS: [Bound; 6] = [
        MIN_OBJECT_PCT,
        ANALYSIS_FPS,
        PRE_CAPTURE_S,
        POST_CAPTURE_S,
        MAX_TOTAL_MIB,
        MAX_AGE_DAYS,
    ];

    /// Every problem of every key (empty when all are good), so a form can show each one next
    /// to its field.
    pub fn problems(&self) -> Vec<KeyError> {
        let mut out = Vec::new();
        macro_rules! check {
            ($(($f:ident, $b:ident)),*) => {
                $( if let Some(v) = self.$f { if let Err(e) = $b.check(v) { out.push(e); } } )*
            };
        }
        numbers!(check);
        for (key, list) in [("masks", &self.masks), ("zones", &self.zones)] {
            if let Some(Err(e)) = list.as_deref().map(|l| check_list(key, l)) {
                out.push(e);
            }
        }
        out
    }

    /// The first problem, if any.
    ///
    /// # Errors
    /// A [`KeyError`] naming the key.
    pub fn validate(&self) -> Result<(), KeyError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The keys whose value differs between `self` and `new` (for a journal line per change).
    pub fn changed_keys(&self, new: &Overrides) -> Vec<&'static str> {
        let mut out = Vec::new();
        macro_rules! diff {
            ($($f:ident),*) => { $( if self.$f != new.$f { out.push(stringify!($f)); } )* };
        }
        diff!(
            detection,
            sensitivity,
            min_object_pct,
            analysis_fps,
            pre_capture_s,
            post_capture_s,
            max_total_mib,
            max_age_days,
            masks,
            zones
        );
        out
    }

    /// Whether no key is set (the file may as well not exist).
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }
}

/// The tunable values in effect: the built-in defaults, then the administrator's `[motion]`
/// keys, then the overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Tunables {
    /// Armed or disarmed.
    pub detection: bool,
    /// Sensitivity preset.
    pub sensitivity: Sensitivity,
    /// The smallest object, percent of the frame height; `None`: the preset's.
    pub min_object_pct: Option<f64>,
    /// Frames analysed per second.
    pub analysis_fps: f64,
    /// Seconds kept before motion.
    pub pre_capture_s: f64,
    /// Seconds kept after motion.
    pub post_capture_s: f64,
    /// Retention: MiB of events kept.
    pub max_total_mib: f64,
    /// Retention: days events are kept.
    pub max_age_days: f64,
    /// Masks.
    pub masks: Vec<Polygon>,
    /// Zones.
    pub zones: Vec<Polygon>,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            detection: true,
            sensitivity: Sensitivity::default(),
            min_object_pct: None,
            analysis_fps: ANALYSIS_FPS.default,
            pre_capture_s: PRE_CAPTURE_S.default,
            post_capture_s: POST_CAPTURE_S.default,
            max_total_mib: MAX_TOTAL_MIB.default,
            max_age_days: MAX_AGE_DAYS.default,
            masks: Vec::new(),
            zones: Vec::new(),
        }
    }
}

impl Tunables {
    /// The defaults with the tunable keys of an administrator's `[motion]` section applied
    /// (its other keys are motion-svc's to check, and are ignored here).
    ///
    /// # Errors
    /// A tunable key of the wrong type or out of range, named.
    pub fn from_motion_section(section: &toml::Table) -> Result<Tunables, KeyError> {
        let picked: toml::Table = section
            .iter()
            .filter(|(k, _)| Overrides::MOTION_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let o: Overrides = toml::Value::Table(picked)
            .try_into()
            .map_err(|e: toml::de::Error| KeyError::new("motion", e.message().to_string()))?;
        o.validate()?;
        let mut t = Tunables::default();
        t.apply(&o);
        Ok(t)
    }

    /// Applies the keys `o` sets.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = o.detection {
            self.detection = v;
        }
        crate::apply_overrides!(*self, o);
    }

    /// The overrides that turn `base` (the administrator's values) into `self`: only the keys
    /// that differ, so a key left alone keeps following the administrator's file.
    pub fn overrides_from(&self, base: &Tunables) -> Overrides {
        fn differs<T: PartialEq + Clone>(want: &T, base: &T) -> Option<T> {
            (want != base).then(|| want.clone())
        }
        Overrides {
            detection: differs(&self.detection, &base.detection),
            sensitivity: differs(&self.sensitivity, &base.sensitivity),
            min_object_pct: differs(&self.min_object_pct, &base.min_object_pct).flatten(),
            analysis_fps: differs(&self.analysis_fps, &base.analysis_fps),
            pre_capture_s: differs(&self.pre_capture_s, &base.pre_capture_s),
            post_capture_s: differs(&self.post_capture_s, &base.post_capture_s),
            max_total_mib: differs(&self.max_total_mib, &base.max_total_mib),
            max_age_days: differs(&self.max_age_days, &base.max_age_days),
            masks: differs(&self.masks, &base.masks),
            zones: differs(&self.zones, &base.zones),
        }
    }

    /// The smallest object in effect: the raw number if set, else the preset's.
    pub fn effective_min_object_pct(&self) -> f64 {
        self.min_object_pct.unwrap_or(self.sensitivity.numbers().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Overrides, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn every_bad_key_is_named_once() {
        let o = parse(
            "analysis_fps = 0.0\npre_capture_s = 61.0\nmasks = [[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]]\nmin_object_pct = 5.0",
        )
        .unwrap();
        let keys: Vec<String> = o.problems().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["analysis_fps", "pre_capture_s", "masks[0]"]);
        assert_eq!(o.validate().unwrap_err().key, "analysis_fps");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        assert!(
            parse("detecton = false")
                .unwrap_err()
                .message()
                .contains("detecton")
        );
        assert!(parse("sensitivity = \"extreme\"").is_err());
        assert!(parse("analysis_fps = \"fast\"").is_err());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn effective_values_layer_defaults_admin_overrides() {
        let admin: toml::Table = toml::from_str(
            "events_dir = \"/e\"\nanalysis_fps = 2.0\nsensitivity = \"low\"\nmasks = [[[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]]]",
        )
        .unwrap();
        let mut t = Tunables::from_motion_section(&admin).unwrap();
        assert_eq!(t.analysis_fps, 2.0);
        assert_eq!(t.effective_min_object_pct(), 20.0);
        assert_eq!(t.masks.len(), 1);
        assert_eq!(t.pre_capture_s, PRE_CAPTURE_S.default);
        t.apply(&parse("sensitivity = \"high\"\nmasks = []\ndetection = false").unwrap());
        assert_eq!(t.effective_min_object_pct(), 5.0);
        assert!(t.masks.is_empty());
        assert!(!t.detection);
        assert_eq!(t.analysis_fps, 2.0);

        let bad: toml::Table = toml::from_str("analysis_fps = 100.0").unwrap();
        assert_eq!(
            Tunables::from_motion_section(&bad).unwrap_err().key,
            "analysis_fps"
        );
    }

    #[test]
    fn overrides_from_keep_only_what_differs_and_round_trip() {
        let admin: toml::Table = toml::from_str("analysis_fps = 2.0").unwrap();
        let base = Tunables::from_motion_section(&admin).unwrap();
        let mut want = base.clone();
        assert!(want.overrides_from(&base).is_empty());
        want.detection = false;
        want.pre_capture_s = 5.0;
        want.masks = vec![Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]])];
        let o = want.overrides_from(&base);
        assert_eq!(
            o.changed_keys(&Overrides::default()),
            ["detection", "pre_capture_s", "masks"]
        );
        let mut back = base.clone();
        back.apply(&o);
        assert_eq!(back, want);
    }

    #[test]
    fn changed_keys_name_what_moved() {
        let a = parse("analysis_fps = 2.0").unwrap();
        let b = parse("analysis_fps = 3.0\ndetection = false").unwrap();
        assert_eq!(a.changed_keys(&b), ["detection", "analysis_fps"]);
        assert!(a.changed_keys(&a).is_empty());
    }
}
