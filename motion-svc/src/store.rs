//! The event store: event folders under the events directory, their `event.json`, crash
//! recovery on start, and the storage limits.
//!
//! Layout (shared with `web-svc`): `<events-dir>/<id>/` with `event.json` (always written to
//! `event.json.tmp` and renamed), `clip.avi` (written as `clip.avi.part`) and `poster.jpg`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::avi;
use crate::event::EndReason;

/// Metadata file name.
pub const META: &str = "event.json";
/// Clip file name when complete.
pub const CLIP: &str = "clip.avi";
/// Clip file name while being written.
pub const CLIP_PART: &str = "clip.avi.part";
/// Poster file name.
pub const POSTER: &str = "poster.jpg";
/// At most this many event folders are looked at by one storage pass (oldest first).
pub const MAX_SCAN: usize = 100_000;

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
}

/// The contents of `event.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMeta {
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
    /// Highest score seen.
    pub peak_score: f32,
    /// Changed area at the peak, percent.
    pub peak_area_pct: f32,
    /// Boxes at the peak, `[x, y, w, h]` frame-relative.
    pub boxes: Vec<[f32; 4]>,
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
}

impl EventMeta {
    /// A new event, state `recording`, nothing measured yet.
    pub fn new(id: String, start_unix_ms: u64, width: u32, height: u32) -> EventMeta {
        EventMeta {
            id,
            state: EventState::Recording,
            start_unix_ms,
            end_unix_ms: None,
            duration_s: 0.0,
            peak_score: 0.0,
            peak_area_pct: 0.0,
            boxes: Vec::new(),
            frames: 0,
            dropped_frames: 0,
            clip: None,
            poster: None,
            width,
            height,
            end_reason: None,
            clip_error: None,
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{what} {path}: {source}; check the events directory exists and is writable")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Milliseconds since the epoch now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `(year, month, day)` of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDDTHHMMSSZ` of a time in ms since the epoch.
pub fn utc_stamp(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The start time encoded in an event id, ms since the epoch; `None` if it is not an id.
pub fn parse_id(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    if b.len() < 17
        || b[8] != b'T'
        || b[15] != b'Z'
        || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| id.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// Creates a fresh event folder for an event starting at `start_unix_ms`: id = UTC stamp and
/// the first free counter.
///
/// # Errors
/// The folder cannot be created.
pub fn create_event_dir(
    events_dir: &Path,
    start_unix_ms: u64,
    counter: &mut u32,
) -> Result<(String, PathBuf), StoreError> {
    fs::create_dir_all(events_dir).map_err(io_err("cannot create", events_dir))?;
    let stamp = utc_stamp(start_unix_ms);
    for _ in 0..10_000 {
        *counter = counter.wrapping_add(1) % 10_000;
        let id = format!("{stamp}-{:04}", *counter);
        let dir = events_dir.join(&id);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok((id, dir)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("cannot create", &dir)(e)),
        }
    }
    Err(io_err("no free id in", events_dir)(io::Error::other(
        "10000 events in one second",
    )))
}

/// Writes `event.json` atomically (tmp, fsync, rename).
///
/// # Errors
/// A write or rename error.
pub fn write_meta(dir: &Path, meta: &EventMeta) -> Result<(), StoreError> {
    use std::io::Write as _;
    let tmp = dir.join("event.json.tmp");
    let text = serde_json::to_vec_pretty(meta).expect("EventMeta serialises");
    let mut f = fs::File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(io_err("cannot write", &tmp))?;
    fs::rename(&tmp, dir.join(META)).map_err(io_err("cannot rename", &tmp))
}

/// Reads `event.json`.
///
/// # Errors
/// Missing or unreadable file; `InvalidData` for bad JSON.
pub fn read_meta(dir: &Path) -> io::Result<EventMeta> {
    let text = fs::read(dir.join(META))?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What recovery did to one folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// The event id.
    pub id: String,
    /// Frames kept in the repaired clip (0 if none).
    pub frames: usize,
}

/// Closes every event left `recording` (or without metadata) by a crash: repairs the clip
/// when possible, marks the event `interrupted`, removes temporary files.
///
/// # Errors
/// The events directory cannot be listed. Problems with one folder are logged and skipped.
pub fn recover(events_dir: &Path) -> Result<Vec<Recovered>, StoreError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(events_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("cannot list", events_dir)(e)),
    };
    for entry in entries.flatten().take(MAX_SCAN) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(start_ms) = parse_id(&name) else {
            continue;
        };
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let meta = read_meta(&dir).ok();
        if matches!(&meta, Some(m) if m.state != EventState::Recording) {
            let _ = fs::remove_file(dir.join("event.json.tmp"));
            continue;
        }
        let mut meta = meta.unwrap_or_else(|| EventMeta::new(name.clone(), start_ms, 0, 0));
        let part = dir.join(CLIP_PART);
        let mut frames = 0;
        let mut end_ms = None;
        if part.exists() {
            end_ms = fs::metadata(&part)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64);
            match avi::repair(&part) {
                Ok(n) => {
                    frames = n;
                    if fs::rename(&part, dir.join(CLIP)).is_ok() {
                        meta.clip = Some(CLIP.into());
                    }
                }
                Err(avi::RepairError::Empty) => {
                    let _ = fs::remove_file(&part);
                    meta.clip = None;
                }
                Err(e) => {
                    tracing::warn!(event = %name, "clip of interrupted event left as {}: {e}", CLIP_PART);
                    meta.clip = None;
                }
            }
        } else if dir.join(CLIP).exists() {
            frames = meta.frames as usize;
        } else {
            meta.clip = None;
        }
        for tmp in ["event.json.tmp", "poster.jpg.tmp"] {
            let _ = fs::remove_file(dir.join(tmp));
        }
        meta.poster = dir.join(POSTER).exists().then(|| POSTER.into());
        meta.state = EventState::Interrupted;
        meta.end_reason.get_or_insert(EndReason::Crash);
        meta.frames = frames as u64;
        let end = end_ms.unwrap_or(meta.start_unix_ms).max(meta.start_unix_ms);
        meta.end_unix_ms = Some(end);
        meta.duration_s = (end - meta.start_unix_ms) as f64 / 1000.0;
        write_meta(&dir, &meta)?;
        out.push(Recovered { id: name, frames });
    }
    Ok(out)
}

/// Storage limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Total bytes of all events (0 = no limit).
    pub max_total_bytes: u64,
    /// Maximum age, ms (0 = keep).
    pub max_age_ms: u64,
    /// Minimum free bytes on the file system (0 = off).
    pub min_free_bytes: u64,
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Free bytes for unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Deletes the oldest events until the limits hold. Never deletes `keep` (the event in
/// progress) nor any folder whose state is `recording`. `free` reports free bytes (a
/// parameter so tests can simulate a full disk). Returns the deleted ids.
///
/// # Errors
/// The events directory cannot be listed.
pub fn enforce_limits(
    events_dir: &Path,
    limits: Limits,
    keep: Option<&str>,
    now_ms: u64,
    free: &dyn Fn() -> Option<u64>,
) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(events_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot list", events_dir)(e)),
    };
    let mut events: Vec<(String, u64, u64)> = entries
        .flatten()
        .take(MAX_SCAN)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let start = parse_id(&name)?;
            e.path()
                .is_dir()
                .then(|| (name, start, dir_size(&e.path())))
        })
        .collect();
    events.sort();
    let mut total: u64 = events.iter().map(|e| e.2).sum();
    let mut deleted = Vec::new();
    let mut freed = 0u64;
    for (id, start, size) in events {
        let too_old = limits.max_age_ms > 0 && now_ms.saturating_sub(start) > limits.max_age_ms;
        let too_big = limits.max_total_bytes > 0 && total > limits.max_total_bytes;
        let too_full =
            limits.min_free_bytes > 0 && free().is_some_and(|f| f + freed < limits.min_free_bytes);
        if !(too_old || too_big || too_full) {
            // Oldest first: once the oldest fits every limit, newer ones do too (except age,
            // which is monotonic in the same order).
            break;
        }
        let dir = events_dir.join(&id);
        if keep == Some(id.as_str())
            || read_meta(&dir).is_ok_and(|m| m.state == EventState::Recording)
        {
            continue;
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => {
                total -= size;
                freed += size;
                deleted.push(id);
            }
            Err(e) => tracing::warn!(event = %id, "cannot delete old event: {e}"),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, state: EventState) -> EventMeta {
        EventMeta {
            state,
            peak_score: 1.0,
            peak_area_pct: 1.0,
            boxes: vec![[0.1, 0.1, 0.2, 0.2]],
            ..EventMeta::new(id.into(), parse_id(id).unwrap(), 640, 480)
        }
    }

    #[test]
    fn event_json_without_the_newer_fields_still_reads() {
        let mut v =
            serde_json::to_value(meta("20261124T182900Z-0001", EventState::Complete)).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("end_reason");
        obj.remove("clip_error");
        let m: EventMeta = serde_json::from_value(v).unwrap();
        assert_eq!(m.end_reason, None);
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
    fn ids_round_trip_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        let ms = 1_795_977_340_000; // 2026-11-28T...
        let s = utc_stamp(ms);
        assert_eq!(parse_id(&format!("{s}-0001")), Some(ms));
        assert_eq!(utc_stamp(951_782_400_000), "20000229T000000Z");
        assert_eq!(parse_id("../etc"), None);
        assert_eq!(parse_id("20261324T000000Z-0001"), None);
    }

    #[test]
    fn ids_are_unique_within_a_second() {
        let d = tempfile::tempdir().unwrap();
        let mut c = 0;
        let (a, _) = create_event_dir(d.path(), 1000, &mut c).unwrap();
        let mut c2 = 0; // a restarted process starts counting again
        let (b, _) = create_event_dir(d.path(), 1000, &mut c2).unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with("-0001") && b.ends_with("-0002"));
    }

    #[test]
    fn recovery_repairs_the_clip_and_marks_interrupted() {
        let d = tempfile::tempdir().unwrap();
        let mut c = 0;
        let (id, dir) = create_event_dir(d.path(), 1_700_000_000_000, &mut c).unwrap();
        write_meta(&dir, &meta(&id, EventState::Recording)).unwrap();
        let mut w = avi::AviWriter::create(&dir.join(CLIP_PART), 64, 48, 10.0).unwrap();
        let jpeg = crate::decode::encode_gray(64, 48, &[9; 64 * 48], 70).unwrap();
        for i in 0..3 {
            w.push(&jpeg, i).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        fs::write(dir.join("event.json.tmp"), b"{half").unwrap();
        // A complete event is left alone; a folder with only garbage is marked too.
        let (id2, dir2) = create_event_dir(d.path(), 1_700_000_000_000, &mut c).unwrap();
        write_meta(
            &dir2,
            &EventMeta {
                state: EventState::Complete,
                ..meta(&id2, EventState::Complete)
            },
        )
        .unwrap();
        let (id3, _) = create_event_dir(d.path(), 1_700_000_000_000, &mut c).unwrap();

        let mut rec = recover(d.path()).unwrap();
        rec.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            rec,
            vec![
                Recovered {
                    id: id.clone(),
                    frames: 3
                },
                Recovered {
                    id: id3.clone(),
                    frames: 0
                }
            ]
        );
        let m = read_meta(&dir).unwrap();
        assert_eq!(m.state, EventState::Interrupted);
        assert_eq!(m.end_reason, Some(EndReason::Crash));
        assert_eq!(m.clip.as_deref(), Some(CLIP));
        assert_eq!(m.frames, 3);
        assert!(m.end_unix_ms.is_some());
        assert_eq!(avi::read_frames(&dir.join(CLIP)).unwrap().1.len(), 3);
        assert!(!dir.join("event.json.tmp").exists());
        assert_eq!(read_meta(&dir2).unwrap().state, EventState::Complete);
        assert_eq!(
            read_meta(&d.path().join(&id3)).unwrap().state,
            EventState::Interrupted
        );
        // Idempotent.
        assert!(recover(d.path()).unwrap().is_empty());
    }

    #[test]
    fn limits_delete_oldest_first_but_never_the_event_in_progress() {
        let d = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for k in 0..6u64 {
            let mut c = 0;
            let (id, dir) =
                create_event_dir(d.path(), 1_700_000_000_000 + k * 60_000, &mut c).unwrap();
            let state = if k == 0 {
                EventState::Recording
            } else {
                EventState::Complete
            };
            write_meta(&dir, &meta(&id, state)).unwrap();
            fs::write(dir.join(CLIP), vec![0u8; 10_000]).unwrap();
            ids.push(id);
        }
        let per = dir_size(&d.path().join(&ids[1]));
        let limits = Limits {
            max_total_bytes: per * 3 + 100,
            max_age_ms: 0,
            min_free_bytes: 0,
        };
        let now = 1_700_000_000_000 + 3_600_000;
        let deleted = enforce_limits(d.path(), limits, Some(&ids[1]), now, &|| None).unwrap();
        // ids[0] is recording, ids[1] is the one in progress: 2, 3 and 4 go... until 3 remain.
        assert_eq!(
            deleted,
            vec![ids[2].clone(), ids[3].clone(), ids[4].clone()]
        );
        assert!(
            d.path().join(&ids[0]).exists()
                && d.path().join(&ids[1]).exists()
                && d.path().join(&ids[5]).exists()
        );
        // Age: everything older than 30 minutes except the protected ones.
        let limits = Limits {
            max_total_bytes: 0,
            max_age_ms: 1_800_000,
            min_free_bytes: 0,
        };
        let deleted = enforce_limits(d.path(), limits, None, now, &|| None).unwrap();
        assert_eq!(deleted, vec![ids[1].clone(), ids[5].clone()]);
        assert!(d.path().join(&ids[0]).exists());
    }

    #[test]
    fn low_free_disk_deletes_until_enough_is_free() {
        let d = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for k in 0..4u64 {
            let mut c = 0;
            let (id, dir) =
                create_event_dir(d.path(), 1_700_000_000_000 + k * 1000, &mut c).unwrap();
            write_meta(&dir, &meta(&id, EventState::Complete)).unwrap();
            fs::write(dir.join(CLIP), vec![0u8; 100_000]).unwrap();
            ids.push(id);
        }
        let limits = Limits {
            max_total_bytes: 0,
            max_age_ms: 0,
            min_free_bytes: 150_000,
        };
        let deleted =
            enforce_limits(d.path(), limits, None, 1_700_000_010_000, &|| Some(0)).unwrap();
        assert_eq!(deleted, vec![ids[0].clone(), ids[1].clone()]);
        assert!(free_bytes(d.path()).is_some());
    }
}
