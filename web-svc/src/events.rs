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

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

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

/// Event files skipped because they are not regular files, too big or symlinks: a hostile
/// or broken file can be hit by every request, so one line per interval.
static SKIPPED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// The files web-svc reads from an event folder, each with its size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFile {
    /// `event.json`.
    Json,
    /// `poster.jpg`.
    Poster,
    /// `clip.avi`.
    Clip,
}

impl EventFile {
    /// The file name in the folder.
    pub fn name(self) -> &'static str {
        match self {
            EventFile::Json => "event.json",
            EventFile::Poster => "poster.jpg",
            EventFile::Clip => "clip.avi",
        }
    }

    /// The largest size read.
    pub fn max_bytes(self) -> u64 {
        match self {
            EventFile::Json => MAX_EVENT_JSON,
            EventFile::Poster => MAX_POSTER_BYTES,
            EventFile::Clip => MAX_CLIP_BYTES,
        }
    }
}

/// Why an event file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// There is no such file (or folder).
    #[error("{0} is missing")]
    Missing(&'static str),
    /// Something other than a regular file is in its place.
    #[error("{name} is not a regular file (a {kind}); skipped")]
    NotRegular {
        /// The file name.
        name: &'static str,
        /// What it is.
        kind: &'static str,
    },
    /// It is larger than its bound.
    #[error("{name} is {len} bytes, more than the {max} read; skipped")]
    TooBig {
        /// The file name.
        name: &'static str,
        /// Its size.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// Another error opening it.
    #[error("{name} cannot be opened: {source}")]
    Io {
        /// The file name.
        name: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// Opens `file` in `folder` without following a symlink (neither the folder nor the file)
/// and without blocking (`O_NONBLOCK`: a FIFO opens at once), then checks on the descriptor
/// that it is a regular file within its size bound. Returns it with its size.
///
/// # Errors
/// See [`OpenError`].
pub fn open_event_file(folder: &Path, file: EventFile) -> Result<(File, u64), OpenError> {
    let name = file.name();
    let io = |e: nix::errno::Errno| match e {
        nix::errno::Errno::ENOENT => OpenError::Missing(name),
        nix::errno::Errno::ELOOP => OpenError::NotRegular {
            name,
            kind: "symlink",
        },
        nix::errno::Errno::ENOTDIR => OpenError::Missing(name),
        e => OpenError::Io {
            name,
            source: e.into(),
        },
    };
    let common = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let dir = nix::fcntl::open(folder, common | OFlag::O_DIRECTORY, Mode::empty()).map_err(io)?;
    let fd = nix::fcntl::openat(&dir, name, common | OFlag::O_NOCTTY, Mode::empty()).map_err(io)?;
    let f = File::from(fd);
    let meta = f
        .metadata()
        .map_err(|source| OpenError::Io { name, source })?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular {
            name,
            kind: file_kind(meta.file_type()),
        });
    }
    if meta.len() > file.max_bytes() {
        return Err(OpenError::TooBig {
            name,
            len: meta.len(),
            max: file.max_bytes(),
        });
    }
    Ok((f, meta.len()))
}

/// Logs (throttled) an event file that was skipped for what it is, not for being missing.
fn log_skipped(folder: &Path, e: &OpenError) {
    if matches!(e, OpenError::Missing(_)) {
        return;
    }
    if let Some(held_back) = SKIPPED.check() {
        tracing::warn!(folder = %folder.display(), held_back, "event file skipped: {e}");
    }
}

/// Sums up skipped event files held back by the throttle (call periodically).
pub fn flush_skipped_log() {
    if let Some(n) = SKIPPED.flush() {
        tracing::warn!(
            held_back = n,
            "{n} more event files skipped in the last interval"
        );
    }
}
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

/// Whether motion-svc can record into the events directory, as far as web-svc can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskState {
    /// `ok`, `missing`, `not-a-directory`, `read-only`, `not-writable`, `full` or `error`.
    pub state: &'static str,
    /// Bytes free for unprivileged users on its file system, when known.
    pub free_bytes: Option<u64>,
    /// What is wrong and what to do, for the dashboard; `None` when `ok`.
    pub problem: Option<String>,
}

impl DiskState {
    fn bad(state: &'static str, free_bytes: Option<u64>, problem: String) -> DiskState {
        DiskState {
            state,
            free_bytes,
            problem: Some(format!("Not recording: {problem}")),
        }
    }
}

/// The state of the events directory `dir`: missing, not a directory, on a read-only file
/// system, not writable, or with less than `min_free` bytes free (`statvfs`). Never opens
/// anything in it.
pub fn disk_state(dir: &Path, min_free: u64) -> DiskState {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return DiskState::bad(
                "not-a-directory",
                None,
                format!(
                    "the events directory {shown} is not a directory; point [web] and [motion] events_dir at one"
                ),
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return DiskState::bad(
                "missing",
                None,
                format!(
                    "the events directory {shown} does not exist; is its disk mounted? create it, owned by the service user"
                ),
            );
        }
        Err(e) => {
            return DiskState::bad(
                "error",
                None,
                format!("the events directory {shown} cannot be checked: {e}"),
            );
        }
    }
    let vfs = match statvfs(dir) {
        Ok(v) => v,
        Err(e) => {
            return DiskState::bad(
                "error",
                None,
                format!("the events disk of {shown} cannot be checked: {e}"),
            );
        }
    };
    // The counts are `c_ulong` on 32-bit targets and u64 here: widen without a lint.
    let free = (vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64);
    if vfs.flags().contains(FsFlags::ST_RDONLY) {
        return DiskState::bad(
            "read-only",
            Some(free),
            format!(
                "the events disk ({shown}) is read-only; it may have been remounted read-only after errors: check `dmesg` and the card or disk"
            ),
        );
    }
    if let Err(e) = nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    ) {
        return DiskState::bad(
            "not-writable",
            Some(free),
            format!(
                "the events directory {shown} is not writable ({e}); give it to the service user"
            ),
        );
    }
    if free < min_free {
        return DiskState::bad(
            "full",
            Some(free),
            format!(
                "the events disk is full ({} MiB free); delete old events, or raise [motion] min_free_mib so that older events make room",
                free / (1024 * 1024)
            ),
        );
    }
    DiskState {
        state: "ok",
        free_bytes: Some(free),
        problem: None,
    }
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
    fn event_files_are_opened_only_when_regular_unlinked_and_within_their_bound() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path();
        assert!(matches!(
            open_event_file(folder, EventFile::Json),
            Err(OpenError::Missing("event.json"))
        ));
        // One byte past the bound is refused; at the bound it is read.
        let max = EventFile::Json.max_bytes() as usize;
        std::fs::write(folder.join("event.json"), vec![b' '; max + 1]).unwrap();
        assert!(matches!(
            open_event_file(folder, EventFile::Json),
            Err(OpenError::TooBig { .. })
        ));
        std::fs::write(folder.join("event.json"), vec![b' '; max]).unwrap();
        assert_eq!(
            open_event_file(folder, EventFile::Json).unwrap().1,
            max as u64
        );
        // A symlink, even to a good file, a FIFO and a directory are not opened as files.
        std::fs::write(dir.path().join("real.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink("real.jpg", folder.join("poster.jpg")).unwrap();
        assert!(matches!(
            open_event_file(folder, EventFile::Poster),
            Err(OpenError::NotRegular {
                kind: "symlink",
                ..
            })
        ));
        nix::unistd::mkfifo(&folder.join("clip.avi"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            open_event_file(folder, EventFile::Clip),
            Err(OpenError::NotRegular { kind: "FIFO", .. })
        ));
        std::fs::remove_file(folder.join("event.json")).unwrap();
        std::fs::create_dir(folder.join("event.json")).unwrap();
        assert!(matches!(
            open_event_file(folder, EventFile::Json),
            Err(OpenError::NotRegular {
                kind: "directory",
                ..
            })
        ));
        // A folder that is a symlink is not entered.
        std::os::unix::fs::symlink(folder, dir.path().join("link")).unwrap();
        assert!(open_event_file(&dir.path().join("link"), EventFile::Json).is_err());
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
