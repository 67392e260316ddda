//! The event store: event folders under the events directory, their `event.json`, crash
//! recovery on start, and the storage limits.
//!
//! Layout (shared with `web-svc`): `<events-dir>/<id>/` with `event.json` (always written to
//! `event.json.tmp` and renamed), `clip.avi` (written as `clip.avi.part`) and `poster.jpg`.

use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
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
/// Lines about one event folder that a hostile or damaged file can repeat (a clip that cannot
/// be repaired, a folder that cannot be deleted): one per interval, then a count.
static FOLDER_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);

/// Largest `event.json` read (a real one is under 2 KB): a bigger file is not an event's.
pub const MAX_META_BYTES: u64 = 64 * 1024;

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
    write_bytes_atomic(
        dir,
        &serde_json::to_vec_pretty(meta).expect("EventMeta serialises"),
    )
}

/// Opens `path` for reading only if it is a regular file, without ever blocking: `O_NONBLOCK`
/// (a FIFO opens at once instead of waiting for a writer), then the opened file's type is
/// checked (a directory, FIFO or device is refused).
///
/// # Errors
/// The open error, or `InvalidData` naming the file's type.
pub fn open_regular(path: &Path) -> io::Result<fs::File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let kind = f.metadata()?.file_type();
    if kind.is_file() {
        return Ok(f);
    }
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is {what}", path.display()),
    ))
}

/// Reads a regular file of at most `max` bytes (see [`open_regular`]).
///
/// # Errors
/// As [`open_regular`], a read error, or `InvalidData` when the file is larger than `max`.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_regular(path)?.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(buf)
}

/// Reads `event.json` as the full schema.
///
/// # Errors
/// Missing, special or unreadable file; `InvalidData` for bad JSON or another schema.
pub fn read_meta(dir: &Path) -> io::Result<EventMeta> {
    let text = read_regular(&dir.join(META), MAX_META_BYTES)?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads `event.json` as any JSON object (older or partial schemas included).
///
/// # Errors
/// As [`read_regular`]; `InvalidData` when it is not a JSON object.
pub fn read_meta_value(dir: &Path) -> io::Result<serde_json::Map<String, serde_json::Value>> {
    let text = read_regular(&dir.join(META), MAX_META_BYTES)?;
    match serde_json::from_slice(&text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "event.json is not a JSON object",
        )),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

/// The `state` of the event in `dir`, as written, if its `event.json` can be read at all.
pub fn read_state(dir: &Path) -> Option<String> {
    read_meta_value(dir)
        .ok()?
        .get("state")?
        .as_str()
        .map(str::to_owned)
}

fn write_bytes_atomic(dir: &Path, text: &[u8]) -> Result<(), StoreError> {
    prepare_bytes(dir, text)?.commit()
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

fn prepare_bytes(dir: &Path, text: &[u8]) -> Result<PreparedMeta, StoreError> {
    use std::io::Write as _;
    let tmp = dir.join("event.json.tmp");
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
/// # Errors
/// A create or write error (a full disk shows here).
pub fn prepare_meta(dir: &Path, meta: &EventMeta) -> Result<PreparedMeta, StoreError> {
    prepare_bytes(
        dir,
        &serde_json::to_vec_pretty(meta).expect("EventMeta serialises"),
    )
}

/// What recovery did to one folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// The event id.
    pub id: String,
    /// Frames kept in the repaired clip (0 if none).
    pub frames: usize,
}

/// A folder recovery left as it was, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The event id.
    pub id: String,
    /// Why (an unreadable or unparseable `event.json`, a special file, a write error).
    pub why: String,
}

/// What one recovery pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Events closed as `interrupted`.
    pub recovered: Vec<Recovered>,
    /// Folders left exactly as they were (their data is never destroyed).
    pub skipped: Vec<Skipped>,
    /// Skipped because of a write error (full or read-only disk): worth another pass when
    /// the disk comes back.
    pub write_errors: usize,
}

/// A regular file (not followed if a symlink) at `path`.
fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// Closes every event left `recording` by a crash: repairs the clip when possible and marks
/// the event `interrupted` by patching those fields into what was read (unknown and missing
/// fields stay as they were). A folder without `event.json` gets one. Anything else is never
/// rewritten: an `event.json` that cannot be read or parsed, or that is a directory or FIFO,
/// is left exactly as it is and reported in [`Recovery::skipped`]; nothing blocks (special
/// files are never opened for a blocking read).
///
/// # Errors
/// The events directory cannot be listed.
pub fn recover(events_dir: &Path) -> Result<Recovery, StoreError> {
    let mut out = Recovery::default();
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
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        match recover_one(&dir, &name, start_ms) {
            Ok(Some(r)) => out.recovered.push(r),
            Ok(None) => {}
            Err(RecoverError::Skip(why)) => out.skipped.push(Skipped { id: name, why }),
            Err(RecoverError::Write(e)) => {
                out.write_errors += 1;
                out.skipped.push(Skipped {
                    id: name,
                    why: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

enum RecoverError {
    Skip(String),
    Write(StoreError),
}

fn recover_one(dir: &Path, name: &str, start_ms: u64) -> Result<Option<Recovered>, RecoverError> {
    use serde_json::{Value, json};
    let mut meta = match read_meta_value(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.join(META).exists() => {
            // No metadata at all (a crash right after the folder was made): one is written.
            let Value::Object(m) = json!(EventMeta::new(name.to_owned(), start_ms, 0, 0)) else {
                unreachable!("EventMeta is an object")
            };
            m
        }
        Err(e) => {
            return Err(RecoverError::Skip(format!(
                "{META} cannot be read ({e}): left as it is"
            )));
        }
    };
    if meta.get("state").and_then(Value::as_str) != Some("recording") {
        if is_regular(&dir.join("event.json.tmp")) {
            let _ = fs::remove_file(dir.join("event.json.tmp"));
        }
        return Ok(None);
    }
    let start_ms = meta
        .get("start_unix_ms")
        .and_then(Value::as_u64)
        .unwrap_or(start_ms);
    let part = dir.join(CLIP_PART);
    let mut frames = meta.get("frames").and_then(Value::as_u64).unwrap_or(0) as usize;
    let mut end_ms = None;
    let mut clip = None;
    if is_regular(&part) {
        end_ms = fs::metadata(&part)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        frames = 0;
        match avi::repair(&part) {
            Ok(n) => {
                frames = n;
                fs::rename(&part, dir.join(CLIP))
                    .map_err(|e| RecoverError::Write(io_err("cannot rename", &part)(e)))?;
                clip = Some(CLIP);
            }
            Err(avi::RepairError::Empty) => {
                let _ = fs::remove_file(&part);
            }
            Err(e) => {
                if let Some(held_back) = FOLDER_LOG.check() {
                    tracing::warn!(event = %name, held_back, "clip of interrupted event left as {CLIP_PART}: {e}");
                }
            }
        }
    } else if is_regular(&dir.join(CLIP)) {
        clip = Some(CLIP);
    } else {
        frames = 0;
    }
    for tmp in ["event.json.tmp", "poster.jpg.tmp"] {
        if is_regular(&dir.join(tmp)) {
            let _ = fs::remove_file(dir.join(tmp));
        }
    }
    let end = end_ms.unwrap_or(start_ms).max(start_ms);
    meta.insert("state".into(), json!(EventState::Interrupted));
    if meta.get("end_reason").is_none_or(Value::is_null) {
        meta.insert("end_reason".into(), json!(EndReason::Crash));
    }
    meta.insert("frames".into(), json!(frames));
    meta.insert("clip".into(), json!(clip));
    meta.insert(
        "poster".into(),
        json!(is_regular(&dir.join(POSTER)).then_some(POSTER)),
    );
    meta.insert("end_unix_ms".into(), json!(end));
    meta.insert("duration_s".into(), json!((end - start_ms) as f64 / 1000.0));
    let text = serde_json::to_vec_pretty(&meta).expect("a JSON map serialises");
    write_bytes_atomic(dir, &text).map_err(RecoverError::Write)?;
    Ok(Some(Recovered {
        id: name.to_owned(),
        frames,
    }))
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
    let free_at_start = if limits.min_free_bytes > 0 {
        free()
    } else {
        None
    };
    for (id, start, size) in events {
        let too_old = limits.max_age_ms > 0 && now_ms.saturating_sub(start) > limits.max_age_ms;
        let too_big = limits.max_total_bytes > 0 && total > limits.max_total_bytes;
        // Measured again after each deletion (a file system frees at once); the estimate
        // from the sizes deleted counts when the measure lags behind.
        let too_full = free_at_start.is_some_and(|at_start| {
            free().unwrap_or(0).max(at_start + freed) < limits.min_free_bytes
        });
        if !(too_old || too_big || too_full) {
            // Oldest first: once the oldest fits every limit, newer ones do too (except age,
            // which is monotonic in the same order).
            break;
        }
        let dir = events_dir.join(&id);
        if keep == Some(id.as_str()) || read_state(&dir).as_deref() == Some("recording") {
            continue;
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => {
                total -= size;
                freed += size;
                deleted.push(id);
            }
            Err(e) => {
                if let Some(held_back) = FOLDER_LOG.check() {
                    tracing::warn!(event = %id, held_back, "cannot delete old event: {e}");
                }
            }
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
        let jpeg = crate::test_jpeg::encode_gray(64, 48, &[9; 64 * 48], 70).unwrap();
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

        let mut rec = recover(d.path()).unwrap().recovered;
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
        assert_eq!(recover(d.path()).unwrap(), Recovery::default());
    }

    /// Runs `f` on another thread and fails if it does not return within 20 s (a blocking
    /// open of a FIFO would hang for ever).
    fn without_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("blocked on a special file")
    }

    #[test]
    fn recovery_patches_only_the_fields_of_a_recording_event_and_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let mut c = 0;
        // An older schema: no boxes, frames, clip, poster, width, end_reason...; and a field
        // this version does not know.
        let (id, dir) = create_event_dir(d.path(), 1_700_000_000_000, &mut c).unwrap();
        let old = format!(
            r#"{{"id":"{id}","state":"recording","start_unix_ms":1700000000000,"peak_score":4.5,"note":"kept by a newer version"}}"#
        );
        fs::write(dir.join(META), &old).unwrap();
        let mut w = avi::AviWriter::create(&dir.join(CLIP_PART), 64, 48, 10.0).unwrap();
        let jpeg = crate::test_jpeg::encode_gray(64, 48, &[9; 64 * 48], 70).unwrap();
        for i in 0..2 {
            w.push(&jpeg, i).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        // A partial file of a finished event: not recording, so never rewritten.
        let (_, done_dir) = create_event_dir(d.path(), 1_700_000_000_000, &mut c).unwrap();
        let partial = br#"{"state":"complete","peak_score":1}"#;
        fs::write(done_dir.join(META), partial).unwrap();

        let r = recover(d.path()).unwrap();
        assert_eq!(
            r.recovered,
            vec![Recovered {
                id: id.clone(),
                frames: 2
            }]
        );
        assert!(r.skipped.is_empty(), "{r:?}");
        let v = read_meta_value(&dir).unwrap();
        assert_eq!(v["state"], "interrupted");
        assert_eq!(v["end_reason"], "crash");
        assert_eq!(v["note"], "kept by a newer version");
        assert_eq!(v["peak_score"], 4.5);
        assert_eq!(v["frames"], 2);
        assert_eq!(v["clip"], CLIP);
        assert!(
            v.get("boxes").is_none(),
            "a missing field is not invented: {v:?}"
        );
        assert_eq!(fs::read(done_dir.join(META)).unwrap(), partial);
    }

    #[test]
    fn recovery_leaves_garbage_and_special_files_exactly_as_they_are_and_never_blocks() {
        let d = tempfile::tempdir().unwrap();
        let mut c = 0;
        let mut folder = || create_event_dir(d.path(), 1_700_000_000_000, &mut c).unwrap();
        let (garbage_id, garbage) = folder();
        let junk = b"{\"state\": \"recording\", \x00\xff not json";
        fs::write(garbage.join(META), junk).unwrap();
        fs::write(garbage.join(CLIP_PART), b"RIFF....").unwrap();
        let (not_object_id, not_object) = folder();
        fs::write(not_object.join(META), b"[\"recording\"]").unwrap();
        let (dir_id, with_dir) = folder();
        fs::create_dir(with_dir.join(META)).unwrap();
        let (fifo_id, with_fifo) = folder();
        nix::unistd::mkfifo(&with_fifo.join(META), nix::sys::stat::Mode::S_IRWXU).unwrap();
        // A recording event whose clip is a FIFO: the event is closed, the FIFO left alone.
        let (fifo_clip_id, fifo_clip) = folder();
        write_meta(&fifo_clip, &meta(&fifo_clip_id, EventState::Recording)).unwrap();
        nix::unistd::mkfifo(&fifo_clip.join(CLIP_PART), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (huge_id, huge) = folder();
        fs::write(huge.join(META), vec![b' '; MAX_META_BYTES as usize + 1]).unwrap();

        let root = d.path().to_owned();
        let r = without_blocking(move || recover(&root).unwrap());
        let mut skipped: Vec<&str> = r.skipped.iter().map(|s| s.id.as_str()).collect();
        skipped.sort_unstable();
        let mut expected = vec![
            garbage_id.as_str(),
            not_object_id.as_str(),
            dir_id.as_str(),
            fifo_id.as_str(),
            huge_id.as_str(),
        ];
        expected.sort_unstable();
        assert_eq!(skipped, expected, "{r:?}");
        assert_eq!(r.write_errors, 0);
        assert_eq!(fs::read(garbage.join(META)).unwrap(), junk);
        assert!(garbage.join(CLIP_PART).exists(), "its clip is kept too");
        assert!(with_dir.join(META).is_dir());
        assert!(
            fs::symlink_metadata(with_fifo.join(META))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(r.recovered.len(), 1, "{r:?}");
        let m = read_meta(&fifo_clip).unwrap();
        assert_eq!((m.state, m.clip), (EventState::Interrupted, None));
        // The storage pass does not block on them either.
        let root = d.path().to_owned();
        let limits = Limits {
            max_total_bytes: 1,
            max_age_ms: 0,
            min_free_bytes: 0,
        };
        without_blocking(move || enforce_limits(&root, limits, None, 0, &|| None).unwrap());
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
        // A file system that reports the freed space at once: the same two, not more (the
        // freed bytes are not counted twice) and not fewer.
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
        let root = d.path().to_owned();
        let free = move || {
            let used: u64 = fs::read_dir(&root)
                .unwrap()
                .flatten()
                .map(|e| dir_size(&e.path()))
                .sum();
            Some(460_000u64.saturating_sub(used))
        };
        let limits = Limits {
            min_free_bytes: 250_000,
            ..limits
        };
        let deleted = enforce_limits(d.path(), limits, None, 1_700_000_010_000, &free).unwrap();
        assert_eq!(deleted, vec![ids[0].clone(), ids[1].clone()]);
        assert!(free_bytes(d.path()).is_some());
    }
}
