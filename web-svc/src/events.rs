//! The event folders `motion-svc` writes: listing (newest first, bounded), reading
//! `event.json` tolerantly (a half-written or corrupt event is reported as such), resolving
//! files without ever leaving the events directory, deleting, and reading the JPEG frames of
//! an MJPEG AVI clip for in-browser replay.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest event id accepted.
pub const MAX_ID_LEN: usize = 64;
/// Largest `event.json` read.
pub const MAX_EVENT_JSON: u64 = 64 * 1024;
/// Largest JPEG chunk read from a clip; a bigger one ends the replay as corrupt.
pub const MAX_CLIP_FRAME: u32 = 8 * 1024 * 1024;

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
    #[error("the event is still being recorded; delete it when it is complete")]
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
    /// `recording`, `complete` or `interrupted` (not re-serialized: see [`EventInfo::state`]).
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
    /// `recording`, `complete`, `interrupted`, or `corrupt`/`incomplete` when `event.json` is
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

    /// A regular file (`name` is one of ours, never from the request) of event `id`.
    ///
    /// # Errors
    /// Bad id, no such event or file, or a symlink.
    pub fn file(&self, id: &str, name: &'static str) -> Result<PathBuf, EventError> {
        let path = self.folder(id)?.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(path),
            _ => Err(EventError::NotFound),
        }
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
        let (state, problem, json) = match read_json(&folder.join("event.json")) {
            Ok(j) => {
                let state = j.state.clone().unwrap_or_else(|| "corrupt".into());
                let problem = match state.as_str() {
                    "recording" | "complete" | "interrupted" => None,
                    _ => Some("event.json has no valid state".into()),
                };
                let state = if problem.is_some() {
                    "corrupt".into()
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

fn read_json(path: &Path) -> Result<EventJson, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("event.json unreadable: {e}"))?;
    let mut text = String::new();
    f.take(MAX_EVENT_JSON)
        .read_to_string(&mut text)
        .map_err(|e| format!("event.json unreadable: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("event.json is corrupt: {e}"))
}

/// Reads the JPEG frames of an MJPEG AVI one by one, without an index: RIFF chunks are walked
/// in order, `LIST`s entered, `..dc`/`..db` chunks returned, everything else skipped.
#[derive(Debug)]
pub struct AviFrames<R> {
    r: R,
    /// Microseconds per frame from the `avih` header (0 until seen).
    pub us_per_frame: u32,
    done: bool,
}

impl<R: Read + Seek> AviFrames<R> {
    /// Checks the RIFF/AVI header.
    ///
    /// # Errors
    /// Not an AVI file.
    pub fn new(mut r: R) -> std::io::Result<AviFrames<R>> {
        let mut head = [0u8; 12];
        r.read_exact(&mut head)?;
        if &head[0..4] != b"RIFF" || &head[8..12] != b"AVI " {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not an AVI file",
            ));
        }
        Ok(AviFrames {
            r,
            us_per_frame: 0,
            done: false,
        })
    }

    /// The next JPEG into `out` (cleared); `Ok(false)` at the end or on a damaged chunk (a
    /// cut-off clip plays up to where it was cut).
    ///
    /// # Errors
    /// A read error.
    pub fn next_frame(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        while !self.done {
            let mut h = [0u8; 8];
            if self.r.read_exact(&mut h).is_err() {
                self.done = true;
                break;
            }
            let id = [h[0], h[1], h[2], h[3]];
            let size = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let padded = i64::from(size) + i64::from(size & 1);
            match &id {
                b"LIST" => {
                    let mut kind = [0u8; 4];
                    if self.r.read_exact(&mut kind).is_err() {
                        self.done = true;
                    }
                }
                b"avih" => {
                    let mut us = [0u8; 4];
                    self.r.read_exact(&mut us)?;
                    self.us_per_frame = u32::from_le_bytes(us);
                    self.r.seek(SeekFrom::Current(padded - 4))?;
                }
                b"idx1" => self.done = true,
                _ if &id[2..4] == b"dc" || &id[2..4] == b"db" => {
                    if size > MAX_CLIP_FRAME {
                        self.done = true;
                        break;
                    }
                    out.clear();
                    out.resize(size as usize, 0);
                    if self.r.read_exact(out).is_err() {
                        self.done = true;
                        break;
                    }
                    if size & 1 == 1 {
                        let _ = self.r.seek(SeekFrom::Current(1));
                    }
                    if out.starts_with(&[0xFF, 0xD8]) {
                        return Ok(true);
                    }
                }
                _ => {
                    self.r.seek(SeekFrom::Current(padded))?;
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avi(frames: &[&[u8]]) -> Vec<u8> {
        let mut movi = b"movi".to_vec();
        for f in frames {
            movi.extend_from_slice(b"00dc");
            movi.extend_from_slice(&(f.len() as u32).to_le_bytes());
            movi.extend_from_slice(f);
            if f.len() % 2 == 1 {
                movi.push(0);
            }
        }
        let mut avih = b"avih".to_vec();
        avih.extend_from_slice(&56u32.to_le_bytes());
        avih.extend_from_slice(&100_000u32.to_le_bytes());
        avih.extend_from_slice(&[0; 52]);
        let mut hdrl = b"hdrl".to_vec();
        hdrl.extend_from_slice(&avih);
        let mut body = b"AVI ".to_vec();
        for l in [hdrl, movi] {
            body.extend_from_slice(b"LIST");
            body.extend_from_slice(&(l.len() as u32).to_le_bytes());
            body.extend_from_slice(&l);
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn reads_frames_and_survives_truncation() {
        let f1: &[u8] = &[0xFF, 0xD8, 1, 2, 0xFF, 0xD9];
        let f2: &[u8] = &[0xFF, 0xD8, 3, 0xFF, 0xD9];
        let data = avi(&[f1, f2]);
        let mut r = AviFrames::new(std::io::Cursor::new(&data)).unwrap();
        let mut buf = Vec::new();
        assert!(r.next_frame(&mut buf).unwrap());
        assert_eq!(buf, f1);
        assert_eq!(r.us_per_frame, 100_000);
        assert!(r.next_frame(&mut buf).unwrap());
        assert_eq!(buf, f2);
        assert!(!r.next_frame(&mut buf).unwrap());
        let cut = &data[..data.len() - 3];
        let mut r = AviFrames::new(std::io::Cursor::new(cut)).unwrap();
        assert!(r.next_frame(&mut buf).unwrap());
        assert!(
            !r.next_frame(&mut buf).unwrap(),
            "a cut frame is not returned"
        );
        assert!(AviFrames::new(std::io::Cursor::new(b"garbage garbage")).is_err());
    }

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
