//! The metadata schema: `event.json`, its version, and reading and writing it.
//!
//! motion-svc writes [`EventMeta`]; web-svc reads the same struct, so a schema change is a
//! compile error in both. A file of another [`SCHEMA_VERSION`], or one that does not parse as
//! the whole schema, is refused with [`MetaError`] (web-svc shows it as `corrupt`, saying
//! why); [`says_recording`] alone looks at any JSON object, so that nobody deletes an event
//! whose file says it is being recorded, whatever else is wrong with it.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::{META, META_TMP};
use crate::open::{EventFile, OpenError, read_event_file};
use crate::{StoreError, io_err};

/// The version of the `event.json` schema written by this build. A file without the field is
/// version 1 (the schema before the field existed is version 1 unchanged). A field added with
/// a default (`end_reason`, `clip_error`, `track`, `clip_lead_ms`) keeps the version: older files still read.
pub const SCHEMA_VERSION: u32 = 1;

fn schema_v1() -> u32 {
    1
}

/// At most this many analysed frames of an event keep their boxes in `event.json` (a minute at
/// 5 analysed frames a second; a longer event keeps them at a lower rate).
pub const MAX_TRACK_FRAMES: usize = 300;
/// At most this many boxes (the largest) of one analysed frame are kept in `track`.
pub const MAX_TRACK_BOXES: usize = 4;

/// The moving objects' boxes at one analysed frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackFrame {
    /// Milliseconds after the event's start (its first motion).
    pub t_ms: u32,
    /// `[x, y, w, h]` frame-relative, largest first; written to a thousandth (a pixel of a
    /// 1000-wide frame), so that a full track stays a small file.
    #[serde(serialize_with = "thousandths")]
    pub boxes: Vec<[f32; 4]>,
}

/// Serialises boxes rounded to a thousandth.
fn thousandths<S: serde::Serializer>(boxes: &[[f32; 4]], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq as _;
    let mut seq = s.serialize_seq(Some(boxes.len()))?;
    for b in boxes {
        seq.serialize_element(&b.map(|v| (v * 1000.0).round() / 1000.0))?;
    }
    seq.end()
}

/// Event state in `event.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    /// In progress: may not be deleted.
    Recording,
    /// Finished normally.
    Complete,
    /// Cut off by a crash or power loss, closed on the next start.
    Interrupted,
    /// The recording could not be written (full, read-only or failing disk): `end_reason` is
    /// `write-failed` and `clip_error` says what failed; the clip, if any, holds what was
    /// written before.
    Failed,
}

impl EventState {
    /// The word in `event.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Recording => "recording",
            EventState::Complete => "complete",
            EventState::Interrupted => "interrupted",
            EventState::Failed => "failed",
        }
    }
}

/// Why an event ended: in the end record in the journal and `end_reason` in `event.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// The quiet gap passed.
    Quiet,
    /// The event reached `max_event_s`.
    MaxDuration,
    /// The camera went away (outage, restart): the event is closed at once.
    #[serde(rename = "camera-interrupted")]
    Interrupted,
    /// motion-svc was stopped (SIGTERM) during the event: the clip is closed as it is.
    Shutdown,
    /// motion-svc died during the event (SIGKILL, power loss): closed on the next start.
    Crash,
    /// The recording could not be written (full, read-only or failing events disk): the
    /// event's state is `failed`.
    WriteFailed,
}

impl EndReason {
    /// For logs: the same words as in `event.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Quiet => "quiet",
            EndReason::MaxDuration => "max-duration",
            EndReason::Interrupted => "camera-interrupted",
            EndReason::Shutdown => "shutdown",
            EndReason::Crash => "crash",
            EndReason::WriteFailed => "write-failed",
        }
    }
}

/// The contents of `event.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMeta {
    /// Schema version, [`SCHEMA_VERSION`] when written by this build (1 when absent).
    #[serde(default = "schema_v1")]
    pub schema: u32,
    /// Folder name, e.g. `20261124T182900Z-0001`.
    pub id: String,
    /// State.
    pub state: EventState,
    /// Start (first motion, wall clock), ms since the epoch.
    pub start_unix_ms: u64,
    /// End, or null while recording.
    pub end_unix_ms: Option<u64>,
    /// Seconds from start to end (0 while recording).
    pub duration_s: f64,
    /// The largest moving object's box at the peak, percent of the frame.
    pub peak_score: f32,
    /// The moving objects' changed pixels at the peak, percent of the frame.
    pub peak_area_pct: f32,
    /// Boxes at the peak, `[x, y, w, h]` frame-relative.
    pub boxes: Vec<[f32; 4]>,
    /// The moving objects' boxes at each analysed frame of the event, at most
    /// [`MAX_TRACK_FRAMES`] entries (a long event keeps every second one, then every fourth...).
    #[serde(default)]
    pub track: Vec<TrackFrame>,
    /// Frames in the clip.
    pub frames: u64,
    /// Frames dropped from the clip (slow disk, full queue).
    pub dropped_frames: u64,
    /// Clip file name, when there is one.
    pub clip: Option<String>,
    /// Poster file name, when there is one.
    pub poster: Option<String>,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Why the event ended; `None` while recording, and in files written before this field.
    #[serde(default)]
    pub end_reason: Option<EndReason>,
    /// Why the clip stops short of the event (a write error): the clip keeps the frames
    /// written before it and the state is `interrupted`. `None` when nothing went wrong.
    #[serde(default)]
    pub clip_error: Option<String>,
    /// Milliseconds of the clip before the event's start (its pre-capture): a `track` entry's
    /// `t_ms` plus this is its time in the clip. `None` while unknown and in files written
    /// before this field.
    #[serde(default)]
    pub clip_lead_ms: Option<u32>,
}

impl EventMeta {
    /// A new event, state `recording`, nothing measured yet.
    pub fn new(id: String, start_unix_ms: u64, width: u32, height: u32) -> EventMeta {
        EventMeta {
            schema: SCHEMA_VERSION,
            id,
            state: EventState::Recording,
            start_unix_ms,
            end_unix_ms: None,
            duration_s: 0.0,
            peak_score: 0.0,
            peak_area_pct: 0.0,
            boxes: Vec::new(),
            track: Vec::new(),
            frames: 0,
            dropped_frames: 0,
            clip: None,
            poster: None,
            width,
            height,
            end_reason: None,
            clip_error: None,
            clip_lead_ms: None,
        }
    }
}

/// Why `event.json` could not be read as an [`EventMeta`]. The message is what a user sees.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Missing, not a regular file, too big or unreadable.
    #[error("event.json unreadable: {0}")]
    Open(#[from] OpenError),
    /// Not JSON, not an object, or not the schema it says it is.
    #[error("event.json is corrupt: {0}")]
    Corrupt(String),
    /// Written with another schema version (by another mecam version).
    #[error(
        "event.json is corrupt: it has schema version {found}, and this mecam reads version {SCHEMA_VERSION}; it was written by another version of mecam (update mecam on this camera to read it)"
    )]
    OtherSchema {
        /// The version in the file.
        found: u64,
    },
}

/// Reads `event.json` of `dir` as any JSON object (another schema, or a partial one).
///
/// # Errors
/// See [`MetaError`] (never `OtherSchema`).
pub fn read_meta_map(dir: &Path) -> Result<serde_json::Map<String, serde_json::Value>, MetaError> {
    let text = read_event_file(dir, EventFile::Json)?;
    match serde_json::from_slice(&text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(MetaError::Corrupt("not a JSON object".into())),
        Err(e) => Err(MetaError::Corrupt(e.to_string())),
    }
}

/// Reads `event.json` of `dir` as this build's schema.
///
/// # Errors
/// See [`MetaError`].
pub fn read_meta(dir: &Path) -> Result<EventMeta, MetaError> {
    let map = read_meta_map(dir)?;
    let found = match map.get("schema") {
        None => 1,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| MetaError::Corrupt(format!("schema {v} is not a version")))?,
    };
    if found != u64::from(SCHEMA_VERSION) {
        return Err(MetaError::OtherSchema { found });
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| MetaError::Corrupt(e.to_string()))
}

/// Whether `event.json` of `dir` is a JSON object whose `state` is `recording`, whatever its
/// schema: such an event is never deleted.
pub fn says_recording(dir: &Path) -> bool {
    read_meta_map(dir).is_ok_and(|m| {
        m.get("state").and_then(serde_json::Value::as_str) == Some(EventState::Recording.as_str())
    })
}

/// An `event.json` written and synced under its temporary name, not yet renamed into place.
#[derive(Debug)]
#[must_use = "commit() puts it in place"]
pub struct PreparedMeta {
    tmp: PathBuf,
    dest: PathBuf,
}

impl PreparedMeta {
    /// Renames it into place.
    ///
    /// # Errors
    /// The rename failed (the temporary file is left for recovery to remove).
    pub fn commit(self) -> Result<(), StoreError> {
        fs::rename(&self.tmp, &self.dest).map_err(io_err("cannot rename", &self.tmp))
    }
}

pub(crate) fn prepare_bytes(dir: &Path, text: &[u8]) -> Result<PreparedMeta, StoreError> {
    use std::io::Write as _;
    let tmp = dir.join(META_TMP);
    let mut f = fs::File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
    f.write_all(text)
        .and_then(|()| f.sync_all())
        .map_err(io_err("cannot write", &tmp))?;
    Ok(PreparedMeta {
        tmp,
        dest: dir.join(META),
    })
}

/// Writes `event.json.tmp` and syncs it; [`PreparedMeta::commit`] renames it into place.
///
/// The file is compact JSON (`jq .` indents it), and never larger than a reader takes
/// ([`crate::MAX_META_BYTES`]): a `track` that would make it so is thinned (every second entry
/// dropped, until it fits), never the file left unreadable.
///
/// # Errors
/// A create or write error (a full disk shows here).
pub fn prepare_meta(dir: &Path, meta: &EventMeta) -> Result<PreparedMeta, StoreError> {
    let text = |m: &EventMeta| serde_json::to_vec(m).expect("EventMeta serialises");
    let mut bytes = text(meta);
    if bytes.len() as u64 > crate::MAX_META_BYTES {
        let mut thin = meta.clone();
        while bytes.len() as u64 > crate::MAX_META_BYTES && !thin.track.is_empty() {
            let mut keep = false;
            thin.track.retain(|_| {
                keep = !keep;
                keep
            });
            bytes = text(&thin);
        }
    }
    prepare_bytes(dir, &bytes)
}

/// Writes `event.json` atomically (tmp, fsync, rename).
///
/// # Errors
/// A write or rename error.
pub fn write_meta(dir: &Path, meta: &EventMeta) -> Result<(), StoreError> {
    prepare_meta(dir, meta)?.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::meta;

    /// Boxes with as many digits as an `f32` prints.
    fn busy_frame(t_ms: u32, boxes: usize) -> TrackFrame {
        TrackFrame {
            t_ms,
            boxes: vec![[1.0 / 3.0, 2.0 / 3.0, 1.0 / 7.0, 5.0 / 7.0]; boxes],
        }
    }

    /// The longest, busiest event the recorder can describe reads back whole; whatever a
    /// writer puts in `track`, the file stays readable (under [`crate::MAX_META_BYTES`]), the
    /// track thinned to fit.
    #[test]
    fn a_long_busy_event_is_written_readable() {
        let d = tempfile::tempdir().unwrap();
        let mut m = meta("20261124T182900Z-0001", EventState::Complete);
        m.track = (0..MAX_TRACK_FRAMES)
            .map(|k| busy_frame(u32::MAX - k as u32, MAX_TRACK_BOXES))
            .collect();
        write_meta(d.path(), &m).unwrap();
        let size = fs::metadata(d.path().join(META)).unwrap().len();
        assert!(size <= crate::MAX_META_BYTES, "{size} bytes");
        assert_eq!(read_meta(d.path()).unwrap().track.len(), MAX_TRACK_FRAMES);
        // Far past the bounds: ten times the frames, twice the boxes.
        m.track = (0..10 * MAX_TRACK_FRAMES as u32)
            .map(|k| busy_frame(k, 2 * MAX_TRACK_BOXES))
            .collect();
        write_meta(d.path(), &m).unwrap();
        let size = fs::metadata(d.path().join(META)).unwrap().len();
        assert!(size <= crate::MAX_META_BYTES, "{size} bytes");
        let back = read_meta(d.path()).unwrap();
        assert!(!back.track.is_empty());
        assert!(back.track.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
        assert_eq!(back.track[0].t_ms, 0);
    }

    #[test]
    fn event_json_without_the_newer_fields_still_reads() {
        let mut v =
            serde_json::to_value(meta("20261124T182900Z-0001", EventState::Complete)).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("end_reason");
        obj.remove("clip_error");
        obj.remove("schema");
        let m: EventMeta = serde_json::from_value(v).unwrap();
        assert_eq!(m.end_reason, None);
        assert_eq!(m.schema, 1);
        let text = serde_json::to_string(&EventMeta {
            end_reason: Some(EndReason::Interrupted),
            ..m
        })
        .unwrap();
        assert!(
            text.contains(r#""end_reason":"camera-interrupted""#),
            "{text}"
        );
    }

    #[test]
    fn another_schema_version_or_a_partial_file_is_refused_but_recording_still_counts() {
        let d = tempfile::tempdir().unwrap();
        let m = meta("20261124T182900Z-0001", EventState::Recording);
        write_meta(d.path(), &m).unwrap();
        assert_eq!(read_meta(d.path()).unwrap(), m);
        assert!(says_recording(d.path()));
        let mut v = serde_json::to_value(&m).unwrap();
        v["schema"] = 2.into();
        fs::write(d.path().join(META), v.to_string()).unwrap();
        let e = read_meta(d.path()).unwrap_err();
        assert!(matches!(e, MetaError::OtherSchema { found: 2 }), "{e}");
        assert!(e.to_string().contains("schema version 2"), "{e}");
        assert!(says_recording(d.path()), "a newer file still protects it");
        fs::write(d.path().join(META), r#"{"state":"recording"}"#).unwrap();
        assert!(matches!(read_meta(d.path()), Err(MetaError::Corrupt(_))));
        assert!(says_recording(d.path()));
        fs::write(d.path().join(META), r#"{"state":"compl"#).unwrap();
        assert!(matches!(read_meta(d.path()), Err(MetaError::Corrupt(_))));
        assert!(!says_recording(d.path()));
        fs::remove_file(d.path().join(META)).unwrap();
        assert!(matches!(
            read_meta(d.path()),
            Err(MetaError::Open(OpenError::Missing(_)))
        ));
    }
}
