//! The settings changed from the web UI: the overrides file, looked at on every tick of the
//! loop (once a second) and applied without a restart. A file that does not parse, or whose
//! values with the administrator's `[motion]` do not validate, is refused with a journal
//! line; the settings in effect stay.

use tuning::{Overrides, Watcher};

use crate::config::{MotionConfig, Settings};

/// A change to apply.
#[derive(Debug)]
pub(super) struct Change {
    /// The settings now in effect.
    pub(super) settings: Settings,
    /// Armed.
    pub(super) armed: bool,
}

/// The administrator's section and the overrides last applied.
#[derive(Debug)]
pub(super) struct Tuner {
    base: MotionConfig,
    watcher: Watcher,
    applied: Overrides,
}

impl Tuner {
    /// Watches `base.overrides_file`.
    pub(super) fn new(base: MotionConfig) -> Tuner {
        Tuner {
            watcher: Watcher::new(base.overrides_file.clone()),
            base,
            applied: Overrides::default(),
        }
    }

    /// What changed since the last poll, validated; `None` when nothing did or the file was
    /// refused (logged).
    pub(super) fn poll(&mut self) -> Option<Change> {
        let path = self.watcher.path().display().to_string();
        let read = self.watcher.poll()?;
        let result = read.map_err(|e| e.to_string()).and_then(|o| {
            self.base
                .with_overrides(&o)
                .validate()
                .map(|s| (o, s))
                .map_err(|e| {
                    format!("overrides file {path}: {e} (with the [motion] section); fix it, or reset the settings to defaults")
                })
        });
        let (o, settings) = match result {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(
                    overrides_file = %path,
                    "settings not changed: {e}; the settings in effect stay"
                );
                return None;
            }
        };
        let changed = self.applied.changed_keys(&o);
        if changed.is_empty() {
            return None;
        }
        let keys = changed.join(", ");
        let later = changed.iter().any(|k| {
            matches!(
                *k,
                "pre_capture_s" | "post_capture_s" | "max_total_mib" | "max_age_days"
            )
        });
        tracing::info!(
            overrides_file = %path,
            changed = %keys,
            "settings changed ({keys}) from {path}: applied without a restart, the background model kept{}",
            if later { "; capture times and retention apply from the next event" } else { "" }
        );
        let armed = o.detection.unwrap_or(true);
        self.applied = o;
        Some(Change { settings, armed })
    }
}
