//! The event folders `motion-svc` writes: listing (newest first, bounded), reading
//! `event.json` tolerantly (a half-written or corrupt event is reported as such), opening
//! files without ever leaving the events directory or blocking on one that is not a regular
//! file, deleting, the state of the events disk, and reading the JPEG frames of an MJPEG AVI
//! clip for in-browser replay.
//!
//! Every file read from an event folder is opened with `O_NONBLOCK | O_NOFOLLOW` relative to
//! the folder's own descriptor (itself opened with `O_NOFOLLOW`), checked to be a regular file
//! on the opened descriptor, and read up to a size bound: a FIFO, device, socket or directory
//! in its place, or a symlink, is skipped as if absent (with a throttled log line), never
//! waited on.

mod avi;
mod disk;
mod open;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use avi::{AviFrames, MAX_CLIP_FRAME};
pub use disk::{DiskState, disk_state};
use open::log_skipped;
pub use open::{EventFile, OpenError, flush_skipped_log, open_event_file};

/// Longest event id accepted.
pub const MAX_ID_LEN: usize = 64;
/// Largest `event.json` read.
pub const MAX_EVENT_JSON: u64 = 64 * 1024;
/// Largest `poster.jpg` served.
pub const MAX_POSTER_BYTES: u64 = 16 * 1024 * 1024;
/// Largest `clip.avi` served or replayed (an AVI 1.0 file is under 4 GiB).
pub const MAX_CLIP_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// A `recording` event whose files have not changed for this long is not being recorded
/// (motion-svc writes every frame as it comes, and ends an event whose camera is gone): it
/// is shown as `stalled` and can be deleted.
pub const RECORDING_STALE_AFTER: Duration = Duration::from_secs(120);

/// Why an event request failed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The id has characters or a length ids never have.
    #[error("not an event id (only letters, digits and '-', at most {MAX_ID_LEN})")]
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

/// `event.json` as `motion-svc` writes it; every field optional so a partial file still shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventJson {
    /// The id (not re-serialized: [`EventInfo::id`] is the folder's name).
    #[serde(skip_serializing)]
    pub id: Option<String>,
    /// `recording`, `complete`, `interrupted` or `failed` (not re-serialized: see
    /// [`EventInfo::state`]).
    #[serde(skip_serializing)]
    pub state: Option<String>,
    /// Start, ms since the Unix epoch.
    pub start_unix_ms: Option<u64>,
    /// End, ms since the Unix epoch.
    pub end_unix_ms: Option<u64>,
    /// Duration in seconds.
    pub duration_s: Option<f64>,
    /// Highest motion score.
    pub peak_score: Option<f64>,
    /// Highest moving area, percent.
    pub peak_area_pct: Option<f64>,
    /// Boxes of motion, frame-relative.
    pub boxes: Option<Vec<[f64; 4]>>,
    /// Frames recorded.
    pub frames: Option<u64>,
    /// Frames dropped while recording.
    pub dropped_frames: Option<u64>,
    /// Why the event ended: `quiet`, `max-duration`, `camera-interrupted`, `shutdown` or
    /// `crash` (absent in files from before motion-svc wrote it).
    pub end_reason: Option<String>,
    /// Why the clip could not be written in full, if it could not.
    pub clip_error: Option<String>,
    /// Clip file name.
    pub clip: Option<String>,
    /// Poster file name.
    pub poster: Option<String>,
    /// Geometry.
    pub width: Option<u32>,
    /// Geometry.
    pub height: Option<u32>,
}

/// One event as shown.
#[derive(Debug, Clone, Serialize)]
pub struct EventInfo {
    /// The folder name.
    pub id: String,
    /// `recording`, `complete`, `interrupted`, `failed` (motion-svc could not write it, e.g.
    /// the disk was full), `stalled` (it says recording, but nothing has been written to it
    /// for [`RECORDING_STALE_AFTER`]), or `corrupt`/`incomplete` when `event.json` is
    /// unreadable or missing.
    pub state: String,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
    /// The parsed `event.json` (defaults when unreadable).
    #[serde(flatten)]
    pub json: EventJson,
    /// Whether `clip.avi` exists.
    pub has_clip: bool,
    /// Whether `poster.jpg` exists.
    pub has_poster: bool,
}

/// Whether `id` could be an event id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
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
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        // A min-heap of the newest `max_listed`: memory bounded whatever the folder count.
        let mut heap: BinaryHeap<Reverse<String>> = BinaryHeap::with_capacity(self.max_listed + 1);
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !valid_id(&name) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            heap.push(Reverse(name));
            if heap.len() > self.max_listed {
                heap.pop();
            }
        }
        let mut ids: Vec<String> = heap.into_iter().map(|Reverse(s)| s).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    /// The folder of `id`, checked to be a real directory inside the events directory.
    ///
    /// # Errors
    /// Bad id, or no such folder (a symlink out of the directory counts as none).
    pub fn folder(&self, id: &str) -> Result<PathBuf, EventError> {
        if !valid_id(id) {
            return Err(EventError::BadId);
        }
        let path = self.dir.join(id);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => Ok(path),
            _ => Err(EventError::NotFound),
        }
    }

    /// Opens `file` of event `id` for reading: a regular file within its size bound, opened
    /// without blocking or following a symlink (see [`open_event_file`]); anything else in its
    /// place counts as absent, with a throttled log line.
    ///
    /// # Errors
    /// Bad id, no such event, or no usable file.
    pub fn open(&self, id: &str, file: EventFile) -> Result<(File, u64), EventError> {
        let folder = self.folder(id)?;
        open_event_file(&folder, file).map_err(|e| {
            log_skipped(&folder, &e);
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
        let (state, problem, json) = match read_json(&folder) {
            Ok(j) => {
                let state = j.state.clone().unwrap_or_else(|| "corrupt".into());
                let mut problem = match state.as_str() {
                    "recording" | "complete" | "interrupted" | "failed" => None,
                    _ => Some("event.json has no valid state".into()),
                };
                let state = if problem.is_some() {
                    "corrupt".into()
                } else if state == "recording" && is_stale(&folder) {
                    problem = Some(format!(
                        "event.json says recording, but nothing has been written to this event for over {} minutes: motion-svc is stopped or stuck (see journalctl -u mecam-motion); it can be deleted",
                        RECORDING_STALE_AFTER.as_secs() / 60
                    ));
                    "stalled".into()
                } else {
                    state
                };
                (state, problem, j)
            }
            Err(why) => {
                let state = if is_file("clip.avi.part") {
                    "incomplete"
                } else {
                    "corrupt"
                };
                (state.to_owned(), Some(why), EventJson::default())
            }
        };
        Ok(EventInfo {
            id: id.to_owned(),
            state,
            problem,
            json,
            has_clip: is_file("clip.avi"),
            has_poster: is_file("poster.jpg"),
        })
    }

    /// Deletes an event unless it is being recorded.
    ///
    /// # Errors
    /// Bad id, no such event, [`EventError::Recording`], or the removal failed.
    pub fn delete(&self, id: &str) -> Result<(), EventError> {
        let info = self.info(id)?;
        if info.state == "recording" {
            return Err(EventError::Recording);
        }
        std::fs::remove_dir_all(self.folder(id)?)?;
        Ok(())
    }

    /// The event being recorded now, if any (looks at the newest few).
    pub fn recording_now(&self) -> Option<String> {
        self.ids()
            .into_iter()
            .take(3)
            .find(|id| self.info(id).is_ok_and(|i| i.state == "recording"))
    }
}

/// Whether the newest change to `folder`'s recording files is older than
/// [`RECORDING_STALE_AFTER`] (metadata only: nothing is opened).
fn is_stale(folder: &Path) -> bool {
    let newest = ["", "event.json", "clip.avi.part", "clip.avi"]
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

fn read_json(folder: &Path) -> Result<EventJson, String> {
    let (f, _) = open_event_file(folder, EventFile::Json).map_err(|e| {
        log_skipped(folder, &e);
        format!("event.json unreadable: {e}")
    })?;
    let mut text = String::new();
    f.take(MAX_EVENT_JSON)
        .read_to_string(&mut text)
        .map_err(|e| format!("event.json unreadable: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("event.json is corrupt: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_path_tricks() {
        for bad in [
            "",
            "..",
            "a/b",
            "../etc",
            "a%2f",
            "x".repeat(65).as_str(),
            "a\0b",
            "é",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        assert!(valid_id("20261124T182900Z-0001"));
    }

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
            "corrupt"
        );
        assert_eq!(
            store.info("20261124T000000Z-0002").unwrap().state,
            "incomplete"
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
}
