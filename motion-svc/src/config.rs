//! Configuration: the `[motion]` section of the mecam TOML file, command-line overrides, and
//! validation into [`Settings`], everything the service uses: the raw section goes no further
//! than [`MotionConfig::validate`].
//!
//! People set areas in percent of the frame and times in seconds; a sensitivity preset gives
//! the detection numbers, and any raw number set beside it wins over the preset.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::EventSettings;
use crate::geometry::Polygon;
use crate::hooks::{HookConfig, SHUTDOWN_GRACE, WEBHOOK_RETRY_BACKOFF, parse_http_url};
use events::Limits;
use tuning::{Overrides, bounds};

pub use tuning::Sensitivity;

/// The `[motion]` section, as written in the file (every key optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Where event folders go, read by web-svc too; the units write only below /var/lib/mecam
    /// (elsewhere: `ReadWritePaths=` for both units, see systemd/README.md).
    pub events_dir: PathBuf,
    /// Frames analysed per second (the newest frame each time).
    pub analysis_fps: f64,
    /// Preset for the three detection numbers below: `low`, `medium` or `high`.
    pub sensitivity: Sensitivity,
    /// The smallest object to catch, as a share of the frame height in percent: a person at
    /// the far end of the garden is about 10 (overrides the preset).
    pub min_object_pct: Option<f64>,
    /// Replaced by `min_object_pct`; refused with a message saying so.
    #[serde(skip_serializing)]
    pub area_pct: Option<f64>,
    /// Minimum luma difference (0..255) for a pixel to count as changed (overrides preset).
    pub min_diff: Option<f64>,
    /// A pixel changes when its difference exceeds this many noise sigmas (overrides preset).
    pub noise_factor: Option<f64>,
    /// Changed area above this percent of the watched area (the frame less masks, within
    /// zones) is a scene change (camera moved, lights with shadows everywhere): not motion,
    /// the background is re-learned.
    pub max_area_pct: f64,
    /// Time constant of the background model, seconds: slower changes are absorbed.
    pub background_s: f64,
    /// After a re-learn, seconds during which nothing is reported.
    pub relearn_s: f64,
    /// Motion must last this long before an event starts, seconds.
    pub min_duration_s: f64,
    /// An event ends after this long without motion, seconds.
    pub quiet_gap_s: f64,
    /// Longest event; a longer one is ended and a new one may start, seconds.
    pub max_event_s: f64,
    /// Seconds of video kept before motion starts.
    pub pre_capture_s: f64,
    /// Seconds of video kept after the last motion (the clip ends at the later of this and
    /// the quiet gap).
    pub post_capture_s: f64,
    /// The most the pre-capture ring may grow to, MiB: a bound, not an allocation (the ring is
    /// sized by the seconds it keeps and the frames seen).
    pub pre_capture_max_mib: f64,
    /// Frames the writer thread may have queued; more are dropped from the clip and counted.
    pub writer_queue_frames: usize,
    /// Mask polygons (frame-relative): nothing inside counts.
    pub masks: Vec<Polygon>,
    /// Zone polygons: when any is given, only inside them counts.
    pub zones: Vec<Polygon>,
    /// Storage limit: total size of all events, MiB (0 = no limit).
    pub max_total_mib: f64,
    /// Storage limit: events older than this many days are deleted (0 = keep).
    pub max_age_days: f64,
    /// Storage limit: delete oldest events while free disk is under this, MiB (0 = off).
    pub min_free_mib: f64,
    /// Command run at event start and end (via `/bin/sh -c`), event data in `MECAM_*` env.
    pub hook_command: Option<String>,
    /// Seconds before the hook command is killed.
    pub hook_timeout_s: f64,
    /// `http://host:port/path` that receives a POST of event.json at start and end.
    pub webhook_url: Option<String>,
    /// Attempts per webhook delivery (at least 1).
    pub webhook_attempts: u32,
    /// Seconds per webhook attempt.
    pub webhook_timeout_s: f64,
    /// The file of settings changed from the web UI, whose keys replace this section's:
    /// web-svc writes it, motion-svc reads it again within a second of a change.
    pub overrides_file: PathBuf,
    /// Unix socket on which the live preview of detection is served to web-svc, which reads
    /// this key too.
    pub preview_socket: PathBuf,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            events_dir: PathBuf::from(ipc::service::DEFAULT_EVENTS_DIR),
            analysis_fps: bounds::ANALYSIS_FPS.default,
            sensitivity: Sensitivity::Medium,
            min_object_pct: None,
            area_pct: None,
            min_diff: None,
            noise_factor: None,
            max_area_pct: 50.0,
            background_s: 10.0,
            relearn_s: 1.0,
            min_duration_s: 0.4,
            quiet_gap_s: 4.0,
            max_event_s: 300.0,
            pre_capture_s: bounds::PRE_CAPTURE_S.default,
            post_capture_s: bounds::POST_CAPTURE_S.default,
            pre_capture_max_mib: 24.0,
            writer_queue_frames: 16,
            masks: Vec::new(),
            zones: Vec::new(),
            max_total_mib: bounds::MAX_TOTAL_MIB.default,
            max_age_days: bounds::MAX_AGE_DAYS.default,
            min_free_mib: 256.0,
            hook_command: None,
            hook_timeout_s: 10.0,
            webhook_url: None,
            webhook_attempts: 3,
            webhook_timeout_s: 5.0,
            overrides_file: PathBuf::from(tuning::DEFAULT_OVERRIDES_FILE),
            preview_socket: PathBuf::from(crate::preview::DEFAULT_PREVIEW_SOCKET),
        }
    }
}

/// A configuration value that was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("motion.{key}: {problem}")]
pub struct ConfigError {
    /// The key, as written in the `[motion]` section.
    pub key: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

impl From<tuning::KeyError> for ConfigError {
    fn from(e: tuning::KeyError) -> Self {
        ConfigError {
            key: e.key,
            problem: e.problem,
        }
    }
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn range(key: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(bad(
            key,
            format!("{v} is out of range; use a number from {lo} to {hi}"),
        ))
    }
}

/// Detection numbers, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectSettings {
    /// The smallest object, percent of the frame height.
    pub min_object_pct: f64,
    /// Minimum per-pixel luma difference.
    pub min_diff: f64,
    /// Noise sigmas per changed pixel.
    pub noise_factor: f64,
    /// Scene-change area, percent of the watched area.
    pub max_area_pct: f64,
    /// Background time constant, seconds.
    pub background_s: f64,
    /// Settle time after a re-learn, seconds.
    pub relearn_s: f64,
    /// Masks.
    pub masks: Vec<Polygon>,
    /// Zones.
    pub zones: Vec<Polygon>,
}

impl Default for DetectSettings {
    fn default() -> Self {
        MotionConfig::default()
            .validate()
            .expect("defaults are valid")
            .detect
    }
}

/// Everything validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Analysis rate.
    pub analysis_fps: f64,
    /// Detection.
    pub detect: DetectSettings,
    /// Events.
    pub events: EventSettings,
    /// Pre-capture ring bytes.
    pub pre_capture_bytes: usize,
    /// Writer queue length.
    pub writer_queue_frames: usize,
    /// Where event folders go.
    pub events_dir: PathBuf,
    /// The overrides file.
    pub overrides_file: PathBuf,
    /// The preview socket.
    pub preview_socket: PathBuf,
    /// Storage limits.
    pub limits: Limits,
    /// The hook command and the webhook.
    pub hooks: HookConfig,
}

/// Upper bound of the writer queue.
pub const MAX_WRITER_QUEUE: usize = 256;

impl MotionConfig {
    /// Checks every value and resolves the preset.
    ///
    /// # Errors
    /// The first bad value, as a [`ConfigError`] naming its key.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let (p_object, p_diff, p_noise) = self.sensitivity.numbers();
        if self.area_pct.is_some() {
            return Err(bad(
                "area_pct",
                "is replaced by min_object_pct, the smallest object to catch as a share of the \
                 frame height (10 catches a person at the far end of a garden); remove area_pct",
            ));
        }
        let min_object_pct =
            bounds::MIN_OBJECT_PCT.check(self.min_object_pct.unwrap_or(p_object))?;
        let min_diff = range("min_diff", self.min_diff.unwrap_or(p_diff), 1.0, 255.0)?;
        let noise_factor = range(
            "noise_factor",
            self.noise_factor.unwrap_or(p_noise),
            0.5,
            50.0,
        )?;
        let max_area_pct = range("max_area_pct", self.max_area_pct, 1.0, 100.0)?;
        let analysis_fps = bounds::ANALYSIS_FPS.check(self.analysis_fps)?;
        let background_s = range("background_s", self.background_s, 0.5, 3600.0)?;
        let relearn_s = range("relearn_s", self.relearn_s, 0.0, 60.0)?;
        let min_duration_s = range("min_duration_s", self.min_duration_s, 0.0, 60.0)?;
        let quiet_gap_s = range("quiet_gap_s", self.quiet_gap_s, 0.1, 600.0)?;
        let max_event_s = range("max_event_s", self.max_event_s, 1.0, 3600.0)?;
        let pre_capture_s = bounds::PRE_CAPTURE_S.check(self.pre_capture_s)?;
        let post_capture_s = bounds::POST_CAPTURE_S.check(self.post_capture_s)?;
        let pre_mib = range("pre_capture_max_mib", self.pre_capture_max_mib, 0.0, 1024.0)?;
        if self.writer_queue_frames == 0 || self.writer_queue_frames > MAX_WRITER_QUEUE {
            return Err(bad(
                "writer_queue_frames",
                format!(
                    "{} is out of range; use 1 to {MAX_WRITER_QUEUE}",
                    self.writer_queue_frames
                ),
            ));
        }
        self.check_polygons()?;
        let limits = self.storage_limits()?;
        let hooks = self.hook_settings()?;
        if self.events_dir.as_os_str().is_empty() {
            return Err(bad("events_dir", "is empty; give a directory"));
        }
        Ok(Settings {
            analysis_fps,
            detect: DetectSettings {
                min_object_pct,
                min_diff,
                noise_factor,
                max_area_pct,
                background_s,
                relearn_s,
                masks: self.masks.clone(),
                zones: self.zones.clone(),
            },
            events: EventSettings {
                min_duration_s,
                quiet_gap_s,
                max_event_s,
                pre_capture_s,
                post_capture_s,
            },
            pre_capture_bytes: (pre_mib * 1024.0 * 1024.0) as usize,
            writer_queue_frames: self.writer_queue_frames,
            events_dir: self.events_dir.clone(),
            overrides_file: self.overrides_file.clone(),
            preview_socket: self.preview_socket.clone(),
            limits,
            hooks,
        })
    }

    /// Masks and zones: at most [`MAX_POLYGONS`](crate::geometry::MAX_POLYGONS) each, every
    /// polygon valid (the same check as the overrides file's).
    fn check_polygons(&self) -> Result<(), ConfigError> {
        tuning::polygon::check_list("masks", &self.masks)?;
        tuning::polygon::check_list("zones", &self.zones)?;
        Ok(())
    }

    /// This section with the keys the overrides file sets replaced (its `detection` is no
    /// key of the section: the service reads it from the overrides themselves).
    pub fn with_overrides(&self, o: &Overrides) -> MotionConfig {
        let mut c = self.clone();
        tuning::apply_overrides!(c, o);
        c
    }

    /// The storage limits, in bytes and ms.
    fn storage_limits(&self) -> Result<Limits, ConfigError> {
        bounds::MAX_TOTAL_MIB.check(self.max_total_mib)?;
        bounds::MAX_AGE_DAYS.check(self.max_age_days)?;
        range("min_free_mib", self.min_free_mib, 0.0, 1e9)?;
        Ok(Limits {
            max_total_bytes: (self.max_total_mib * 1024.0 * 1024.0) as u64,
            max_age_ms: (self.max_age_days * 86_400_000.0) as u64,
            min_free_bytes: (self.min_free_mib * 1024.0 * 1024.0) as u64,
        })
    }

    /// The hook command and the webhook (its URL parsed).
    fn hook_settings(&self) -> Result<HookConfig, ConfigError> {
        range("hook_timeout_s", self.hook_timeout_s, 0.1, 3600.0)?;
        range("webhook_timeout_s", self.webhook_timeout_s, 0.1, 600.0)?;
        if self.webhook_attempts == 0 || self.webhook_attempts > 20 {
            return Err(bad(
                "webhook_attempts",
                format!("{} is out of range; use 1 to 20", self.webhook_attempts),
            ));
        }
        let webhook = self
            .webhook_url
            .as_deref()
            .map(parse_http_url)
            .transpose()
            .map_err(|e| bad("webhook_url", e))?;
        if let Some(cmd) = &self.hook_command {
            if cmd.trim().is_empty() {
                return Err(bad(
                    "hook_command",
                    "is empty; remove the key to run no command",
                ));
            }
        }
        Ok(HookConfig {
            command: self.hook_command.clone(),
            command_timeout: Duration::from_secs_f64(self.hook_timeout_s),
            webhook,
            attempts: self.webhook_attempts,
            attempt_timeout: Duration::from_secs_f64(self.webhook_timeout_s),
            retry_backoff: WEBHOOK_RETRY_BACKOFF,
            shutdown_grace: SHUTDOWN_GRACE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MotionConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn defaults_validate_and_empty_section_is_defaults() {
        assert_eq!(parse("").unwrap(), MotionConfig::default());
        MotionConfig::default().validate().unwrap();
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = parse("areapct = 3").unwrap_err().to_string();
        assert!(e.contains("areapct"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = parse("analysis_fps = 0").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "analysis_fps");
        let c = parse("min_object_pct = 0.5").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "min_object_pct");
        // The key it replaced is refused with the way out, not as unknown.
        let e = parse("area_pct = 0.8").unwrap().validate().unwrap_err();
        assert_eq!(e.key, "area_pct");
        assert!(e.to_string().contains("min_object_pct"), "{e}");
        let c = parse("masks = [[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]]").unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "masks[0]");
        assert!(e.to_string().contains("outside the frame"), "{e}");
        let c = parse("webhook_url = \"https://example.com/x\"").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "webhook_url");
        let c = parse("writer_queue_frames = 100000").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "writer_queue_frames");
        assert!(parse("sensitivity = \"extreme\"").is_err());
    }

    #[test]
    fn settings_carry_everything_the_service_uses() {
        let c = parse(
            "events_dir = \"/e\"\nmax_total_mib = 1\nwebhook_url = \"http://[::1]:8123/h\"\nhook_command = \"true\"",
        )
        .unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.events_dir, PathBuf::from("/e"));
        assert_eq!(s.limits.max_total_bytes, 1 << 20);
        assert_eq!(s.hooks.webhook.unwrap().port, 8123);
        assert_eq!(s.hooks.command.as_deref(), Some("true"));
    }

    #[test]
    fn raw_numbers_override_the_preset() {
        let c = parse("sensitivity = \"high\"\nmin_object_pct = 25.0").unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.detect.min_object_pct, 25.0);
        assert_eq!(s.detect.min_diff, Sensitivity::High.numbers().1);
    }
}
