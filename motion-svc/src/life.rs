//! An event's life, told once: the journal's start and end records, the hooks and MQTT all
//! come from here, from what the recorder reports once it has acted.
//!
//! The recorder thread owns the event folder and the clip, so only it knows whether a clip
//! exists, why it failed and what the final `event.json` says. It reports
//! [`Report::Started`] once the folder and the clip are set up (or could not be) and
//! [`Report::Ended`] once the final `event.json` is in place (or kept to write when the disk
//! is back). [`Herald::tell`] turns each report into the journal record and the hooks, from
//! the same metadata, so they cannot disagree with each other or with the folder.

use std::path::{Path, PathBuf};

use crate::hooks::{HookKind, Hooks};
use crate::journal;
use crate::mqtt::Mqtt;
use events::EventMeta;

/// What the recorder reports about an event, in order: `Started`, then `Ended`.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The event's folder and clip are set up (`clip` set), or could not be (`clip` none,
    /// `clip_error` says why).
    Started(EventMeta),
    /// The event is closed: its final metadata, as in `event.json`.
    Ended(EventMeta),
}

/// Emits every event's start and end to the journal, the hooks and MQTT.
#[derive(Debug, Clone)]
pub struct Herald {
    events_dir: PathBuf,
    hooks: Hooks,
    mqtt: Option<Mqtt>,
}

impl Herald {
    /// Events are folders of `events_dir`; `hooks` run at start and end; `mqtt`, when on,
    /// sends both.
    pub fn new(events_dir: PathBuf, hooks: Hooks, mqtt: Option<Mqtt>) -> Herald {
        Herald {
            events_dir,
            hooks,
            mqtt,
        }
    }

    /// Tells the journal and the hooks what `report` says.
    pub fn tell(&self, report: &Report) {
        match report {
            Report::Started(meta) => {
                let dir = self.events_dir.join(&meta.id);
                journal::log_start(meta, clip_path(meta, &dir).as_deref());
                self.hooks.fire(HookKind::Start, meta, &dir);
                if let Some(m) = &self.mqtt {
                    m.event(HookKind::Start, meta);
                }
            }
            Report::Ended(meta) => {
                let dir = self.events_dir.join(&meta.id);
                journal::log_end(meta, clip_path(meta, &dir).as_deref());
                tracing::info!(event = %meta.id, frames = meta.frames, dropped = meta.dropped_frames, "event recorded");
                self.hooks.fire(HookKind::End, meta, &dir);
                if let Some(m) = &self.mqtt {
                    m.event(HookKind::End, meta);
                }
            }
        }
    }
}

/// The clip's full path, when the event has one.
pub fn clip_path(meta: &EventMeta, dir: &Path) -> Option<PathBuf> {
    meta.clip.as_ref().map(|c| dir.join(c))
}
