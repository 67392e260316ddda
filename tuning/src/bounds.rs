//! The tunable numbers: each one's key, range and default, in one place that motion-svc's
//! config validation and web-svc's settings page both read; and the sensitivity presets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value that was refused, with the key it was given under.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{key}: {problem}")]
pub struct KeyError {
    /// The key, as written in the `[motion]` section or the overrides file (`masks[2]` for a
    /// polygon).
    pub key: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

impl KeyError {
    /// A refusal of `key`.
    pub fn new(key: &str, problem: impl Into<String>) -> Self {
        KeyError {
            key: key.to_string(),
            problem: problem.into(),
        }
    }
}

/// A number's key, its allowed range (inclusive) and its default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// The key in `[motion]` and in the overrides file.
    pub key: &'static str,
    /// Lowest allowed value.
    pub lo: f64,
    /// Highest allowed value.
    pub hi: f64,
    /// The value when nobody sets it.
    pub default: f64,
}

impl Bound {
    /// `v` if it is a finite number within the range.
    ///
    /// # Errors
    /// A [`KeyError`] naming the key and the range.
    pub fn check(&self, v: f64) -> Result<f64, KeyError> {
        if v.is_finite() && v >= self.lo && v <= self.hi {
            Ok(v)
        } else {
            Err(KeyError::new(
                self.key,
                format!(
                    "{v} is out of range; use a number from {} to {}",
                    self.lo, self.hi
                ),
            ))
        }
    }
}

/// The smallest object to catch, percent of the frame height (default: the preset's).
pub const MIN_OBJECT_PCT: Bound = Bound {
    key: "min_object_pct",
    lo: 1.0,
    hi: 100.0,
    default: 10.0,
};
/// Frames analysed per second.
pub const ANALYSIS_FPS: Bound = Bound {
    key: "analysis_fps",
    lo: 0.2,
    hi: 60.0,
    default: 5.0,
};
/// Seconds of video kept before motion starts.
pub const PRE_CAPTURE_S: Bound = Bound {
    key: "pre_capture_s",
    lo: 0.0,
    hi: 60.0,
    default: 3.0,
};
/// Seconds of video kept after the last motion.
pub const POST_CAPTURE_S: Bound = Bound {
    key: "post_capture_s",
    lo: 0.0,
    hi: 600.0,
    default: 3.0,
};
/// Retention: total size of all events, MiB (0 = no limit).
pub const MAX_TOTAL_MIB: Bound = Bound {
    key: "max_total_mib",
    lo: 0.0,
    hi: 1e9,
    default: 2048.0,
};
/// Retention: events older than this many days are deleted (0 = keep).
pub const MAX_AGE_DAYS: Bound = Bound {
    key: "max_age_days",
    lo: 0.0,
    hi: 1e6,
    default: 30.0,
};

/// Sensitivity presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Fewer events: bigger area, stronger change needed.
    Low,
    /// The default.
    #[default]
    Medium,
    /// More events: small objects count.
    High,
}

impl Sensitivity {
    /// Every preset, least sensitive first.
    pub const ALL: [Sensitivity; 3] = [Sensitivity::Low, Sensitivity::Medium, Sensitivity::High];

    /// `(min_object_pct, min_diff, noise_factor)` of this preset: the smallest object as a
    /// share of the frame height (a person about 20, 10 or 5 metres away with a usual lens),
    /// and how strong a change must be.
    pub fn numbers(self) -> (f64, f64, f64) {
        match self {
            Sensitivity::Low => (20.0, 18.0, 4.5),
            Sensitivity::Medium => (MIN_OBJECT_PCT.default, 14.0, 4.0),
            Sensitivity::High => (5.0, 10.0, 3.5),
        }
    }

    /// The name used in the files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Low => "low",
            Sensitivity::Medium => "medium",
            Sensitivity::High => "high",
        }
    }
}

impl fmt::Display for Sensitivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Sensitivity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Sensitivity::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown sensitivity {s:?}; use low, medium or high"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_outside_and_non_numbers() {
        assert_eq!(ANALYSIS_FPS.check(5.0), Ok(5.0));
        assert_eq!(ANALYSIS_FPS.check(0.2), Ok(0.2));
        for v in [0.0, 60.5, f64::NAN, f64::INFINITY] {
            let e = ANALYSIS_FPS.check(v).unwrap_err();
            assert_eq!(e.key, "analysis_fps");
            assert!(e.problem.contains("0.2 to 60"), "{e}");
        }
    }

    #[test]
    fn defaults_are_within_their_bounds() {
        for b in crate::Overrides::BOUNDS {
            assert_eq!(b.check(b.default), Ok(b.default), "{}", b.key);
        }
    }

    #[test]
    fn sensitivity_names_round_trip() {
        for p in Sensitivity::ALL {
            assert_eq!(p.as_str().parse::<Sensitivity>(), Ok(p));
        }
        assert!(
            "extreme"
                .parse::<Sensitivity>()
                .unwrap_err()
                .contains("low")
        );
    }
}
