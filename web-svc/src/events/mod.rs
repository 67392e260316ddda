//! The event folders as web-svc shows them: the list (newest first, bounded), one event with
//! the state shown for it (a damaged or foreign `event.json` is reported, never fatal),
//! opening its files, deleting it, and the state of the events disk.
//!
//! The folder itself (names, `event.json` schema, the clip, safe opening and deleting) is
//! the `events` crate's, shared with motion-svc. Every file read from an event folder is
//! opened by it with `O_NONBLOCK | O_NOFOLLOW` relative to the folder's own descriptor,
//! checked to be a regular file on the opened descriptor, and read up to a size bound: a
//! FIFO, device, socket or directory in its place, or a symlink, is skipped as if absent
//! (with a throttled log line), never waited on.
//!
//! What is shown for an `event.json` that is not this build's schema: missing, unreadable or
//! a special file: `incomplete` when a `clip.avi.part` is beside it (a recording cut off
//! before its metadata), else `corrupt`; not JSON, missing fields, an unknown state, or
//! another schema version (written by another mecam version): `corrupt`. `problem` says
//! which. Such an event can be deleted unless its file, whatever its schema, says
//! `recording` and it is still being written to.

mod disk;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ::events::{CLIP, CLIP_PART, EventMeta, EventState, META, MetaError};
use serde::Serialize;

pub use ::events::avi::AviFrames;
pub use ::events::{EventFile, flush_skipped_log};
pub use disk::{DiskState, disk_state};

/// A `recording` event whose files have not changed for this long is not being recorded
/// (motion-svc writes every frame as it comes, and ends an event whose camera is gone): it
/// is shown as `stalled` and can be deleted.
pub const RECORDING_STALE_AFTER: Duration = Duration::from_secs(120);

/// Why an event request failed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The id has characters or a length ids never have.
    #[error(
        "not an event id (only letters, digits and '-', at most {} characters)",
        ::events::MAX_ID_LEN
    )]
    BadId,
    /// No such event or file.
    #[error("no such event or file")]
    NotFound,
    /// Deleting an event still being recorded.
    #[error(
        "the event is being recorded now (motion-svc is still writing it), so it cannot be deleted yet; it can be once motion-svc ends it (when the motion stops, at the latest after [motion] max_event_s); to end it now, stop motion-svc (sudo systemctl stop mecam-motion), which closes it, then delete it"
    )]
    Recording,
    /// A file system error.
    #[error("events directory: {0}")]
    Io(#[from] std::io::Error),
}

/// The state shown for an event: its `event.json` state, or what is wrong with the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shown {
    /// Being recorded now.
    Recording,
    /// Finished normally.
    Complete,
    /// Closed after a crash.
    Interrupted,
    /// motion-svc could not write it (e.g. the disk was full).
    Failed,
    /// It says recording, but nothing has been written to it for [`RECORDING_STALE_AFTER`].
    Stalled,
    /// `event.json` is unreadable, not the schema, or of another schema version.
    Corrupt,
    /// No usable `event.json`, but a `clip.avi.part`: cut off before its metadata.
    Incomplete,
}

impl Shown {
    /// The word shown (the same as in the JSON API).
    pub fn as_str(self) -> &'static str {
        match self {
            Shown::Recording => EventState::Recording.as_str(),
            Shown::Complete => EventState::Complete.as_str(),
            Shown::Interrupted => EventState::Interrupted.as_str(),
            Shown::Failed => EventState::Failed.as_str(),
            Shown::Stalled => "stalled",
            Shown::Corrupt => "corrupt",
            Shown::Incomplete => "incomplete",
        }
    }
}

impl From<EventState> for Shown {
    fn from(s: EventState) -> Shown {
        match s {
            EventState::Recording => Shown::Recording,
            EventState::Complete => Shown::Complete,
            EventState::Interrupted => Shown::Interrupted,
            EventState::Failed => Shown::Failed,
        }
    }
}

/// One event as shown. In JSON: `id`, `state`, `problem`, every field of `event.json` but
/// `id` and `state` (all `null` when it cannot be read), `has_clip`, `has_poster`.
#[derive(Debug, Clone, Serialize)]
pub struct EventInfo {
    /// The folder name.
    pub id: String,
    /// What is shown.
    pub state: Shown,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
    /// `event.json`, when it is this build's schema.
    #[serde(skip)]
    pub meta: Option<EventMeta>,
    /// `meta` for the JSON API.
    #[serde(flatten)]
    meta_fields: serde_json::Map<String, serde_json::Value>,
    /// Whether `clip.avi` exists.
    pub has_clip: bool,
    /// Whether `poster.jpg` exists.
    pub has_poster: bool,
}

/// The fields of `meta` but `id` and `state` (shown apart), or all of them `null`.
fn meta_fields(meta: Option<&EventMeta>) -> serde_json::Map<String, serde_json::Value> {
    let shown = meta
        .cloned()
        .unwrap_or_else(|| EventMeta::new(String::new(), 0, 0, 0));
    let serde_json::Value::Object(mut fields) =
        serde_json::to_value(shown).expect("EventMeta serialises")
    else {
        unreachable!("EventMeta is an object")
    };
    fields.remove("id");
    fields.remove("state");
    if meta.is_none() {
        fields
            .values_mut()
            .for_each(|v| *v = serde_json::Value::Null);
    }
    fields
}

/// The events directory.
#[derive(Debug, Clone)]
pub struct EventStore {
    dir: PathBuf,
    max_listed: usize,
}

impl EventStore {
    /// The store at `dir`, listing at most `max_listed` newest events.
    pub fn new(dir: &Path, max_listed: usize) -> EventStore {
        EventStore {
            dir: dir.to_owned(),
            max_listed,
        }
    }

    /// Ids, newest first (ids start with their UTC time), at most `max_listed`.
    pub fn ids(&self) -> Vec<String> {
        ::events::newest_ids(&self.dir, self.max_listed)
    }

    /// The folder of `id`, checked to be a real directory inside the events directory.
    ///
    /// # Errors
    /// Bad id, or no such folder (a symlink out of the directory counts as none).
    pub fn folder(&self, id: &str) -> Result<PathBuf, EventError> {
        if !::events::valid_id(id) {
            return Err(EventError::BadId);
        }
        let path = self.dir.join(id);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => Ok(path),
            _ => Err(EventError::NotFound),
        }
    }

    /// Opens `file` of event `id` for reading: a regular file within its size bound, opened
    /// without blocking or following a symlink (see [`::events::open_event_file`]); anything
    /// else in its place counts as absent, with a throttled log line.
    ///
    /// # Errors
    /// Bad id, no such event, or no usable file.
    pub fn open(&self, id: &str, file: EventFile) -> Result<(File, u64), EventError> {
        let folder = self.folder(id)?;
        ::events::open_event_file(&folder, file).map_err(|e| {
            ::events::log_skipped(&folder, &e);
            EventError::NotFound
        })
    }

    /// Reads one event; never fails for a damaged event, it is reported in the result.
    ///
    /// # Errors
    /// Bad id or no such event.
    pub fn info(&self, id: &str) -> Result<EventInfo, EventError> {
        let folder = self.folder(id)?;
        let is_file = |n: &str| {
            std::fs::symlink_metadata(folder.join(n)).is_ok_and(|m| m.is_file() && m.len() > 0)
        };
        let (state, problem, meta) = match ::events::read_meta(&folder) {
            Ok(m) if m.state == EventState::Recording && is_stale(&folder) => (
                Shown::Stalled,
                Some(format!(
                    "event.json says recording, but nothing has been written to this event for over {} minutes: motion-svc is stopped or stuck (see journalctl -u mecam-motion); it can be deleted",
                    RECORDING_STALE_AFTER.as_secs() / 60
                )),
                Some(m),
            ),
            Ok(m) => (m.state.into(), None, Some(m)),
            Err(e) => {
                if let MetaError::Open(open) = &e {
                    ::events::log_skipped(&folder, open);
                }
                let state = if is_file(CLIP_PART) {
                    Shown::Incomplete
                } else {
                    Shown::Corrupt
                };
                (state, Some(e.to_string()), None)
            }
        };
        Ok(EventInfo {
            id: id.to_owned(),
            state,
            problem,
            meta_fields: meta_fields(meta.as_ref()),
            meta,
            has_clip: is_file(CLIP),
            has_poster: is_file(::events::POSTER),
        })
    }

    /// Deletes an event unless it is being recorded: its `event.json`, whatever its schema,
    /// says `recording` and it is not stalled.
    ///
    /// # Errors
    /// Bad id, no such event, [`EventError::Recording`], or the removal failed.
    pub fn delete(&self, id: &str) -> Result<(), EventError> {
        let folder = self.folder(id)?;
        if ::events::says_recording(&folder) && !is_stale(&folder) {
            return Err(EventError::Recording);
        }
        ::events::delete_folder(&folder)?;
        Ok(())
    }

    /// The event being recorded now, if any (looks at the newest few).
    pub fn recording_now(&self) -> Option<String> {
        self.ids()
            .into_iter()
            .take(3)
            .find(|id| self.info(id).is_ok_and(|i| i.state == Shown::Recording))
    }
}

/// Whether the newest change to `folder`'s recording files is older than
/// [`RECORDING_STALE_AFTER`] (metadata only: nothing is opened).
fn is_stale(folder: &Path) -> bool {
    let newest = ["", META, CLIP_PART, CLIP]
        .iter()
        .filter_map(|n| std::fs::symlink_metadata(folder.join(n)).ok())
        .filter_map(|m| m.modified().ok())
        .max();
    newest.is_some_and(|t| {
        SystemTime::now()
            .duration_since(t)
            .is_ok_and(|age| age > RECORDING_STALE_AFTER)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_events_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::new(dir.path(), 2);
        for id in [
            "20261124T000000Z-0001",
            "20261124T000000Z-0002",
            "20261124T000000Z-0003",
        ] {
            std::fs::create_dir(dir.path().join(id)).unwrap();
        }
        std::fs::write(
            dir.path().join("20261124T000000Z-0003/event.json"),
            "{\"state\":",
        )
        .unwrap();
        std::fs::write(dir.path().join("20261124T000000Z-0002/clip.avi.part"), "x").unwrap();
        assert_eq!(
            store.ids(),
            ["20261124T000000Z-0003", "20261124T000000Z-0002"],
            "bounded, newest first"
        );
        assert_eq!(
            store.info("20261124T000000Z-0003").unwrap().state,
            Shown::Corrupt
        );
        assert_eq!(
            store.info("20261124T000000Z-0002").unwrap().state,
            Shown::Incomplete
        );
        assert!(matches!(store.info("../x"), Err(EventError::BadId)));
        std::fs::write(
            dir.path().join("20261124T000000Z-0001/event.json"),
            r#"{"state":"recording"}"#,
        )
        .unwrap();
        assert!(matches!(
            store.delete("20261124T000000Z-0001"),
            Err(EventError::Recording)
        ));
        store.delete("20261124T000000Z-0003").unwrap();
        assert!(!dir.path().join("20261124T000000Z-0003").exists());
    }

    #[test]
    fn another_schema_version_shows_corrupt_and_the_api_keeps_one_id_and_null_fields() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::new(dir.path(), 10);
        let (good, other) = ("20261124T000000Z-0001", "20261124T000000Z-0002");
        for id in [good, other] {
            let folder = dir.path().join(id);
            std::fs::create_dir(&folder).unwrap();
            let m = EventMeta {
                state: EventState::Complete,
                duration_s: 1.5,
                ..EventMeta::new(id.into(), ::events::parse_id(id).unwrap(), 64, 48)
            };
            ::events::write_meta(&folder, &m).unwrap();
        }
        let path = dir.path().join(other).join(META);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["schema"] = 2.into();
        std::fs::write(&path, v.to_string()).unwrap();

        let shown = store.info(other).unwrap();
        assert_eq!(shown.state, Shown::Corrupt);
        assert!(
            shown
                .problem
                .as_deref()
                .unwrap()
                .contains("schema version 2"),
            "{shown:?}"
        );
        let api = serde_json::to_string(&shown).unwrap();
        assert_eq!(api.matches("\"id\"").count(), 1, "{api}");
        let api: serde_json::Value = serde_json::from_str(&api).unwrap();
        assert_eq!(api["state"], "corrupt");
        assert!(
            api["duration_s"].is_null() && api["start_unix_ms"].is_null(),
            "{api}"
        );
        store.delete(other).unwrap();

        let shown = serde_json::to_string(&store.info(good).unwrap()).unwrap();
        assert_eq!(shown.matches("\"state\"").count(), 1, "{shown}");
        let api: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(
            (api["id"].as_str(), api["state"].as_str()),
            (Some(good), Some("complete"))
        );
        assert_eq!(api["duration_s"], 1.5);
    }
}
