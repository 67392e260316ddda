//! The status record each service publishes: up since, rates, counters, last error.
//!
//! Each service replaces one small JSON file, `<runtime-dir>/status/<service>.json`, about
//! once a second ([`WRITE_EVERY`]): [`StatusWriter`] serialises into a buffer it keeps, writes
//! a temporary file beside the record and renames it over the old one, so a reader sees the
//! old record or the new one, never half of one. web-svc reads all three ([`read`]) to show
//! each service's health and to serve `/metrics`; anything else on the box (MQTT, a script,
//! `cat`) can read them the same way.
//!
//! A reader never trusts a record: one larger than [`MAX_RECORD_BYTES`], one that is not JSON
//! of this [`SCHEMA`], or one naming another service is refused with a [`StatusError`] saying
//! which file and why. A record says how old it is ([`Reading::age`]); one older than
//! [`STALE_AFTER`], or written by a service as it stopped ([`StatusRecord::stopped`]), means
//! the service is not running, since [`StatusRecord::updated_unix_ms`].
//!
//! Under systemd the directory is `/run/mecam/status`, made at boot by `tmpfiles.conf` as
//! `mecam-capture:mecam` mode `1770`: capture-svc (user `mecam-capture`) and motion-svc and
//! web-svc (user `mecam`, `ReadWritePaths=` in their units) can each create their own file,
//! and the sticky bit keeps `mecam` from replacing capture's.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The status directory's name inside the runtime directory.
pub const STATUS_DIR: &str = "status";
/// The record's version; a reader refuses any other.
pub const SCHEMA: u32 = 1;
/// The largest record a reader accepts, and a writer writes, in bytes.
pub const MAX_RECORD_BYTES: usize = 4096;
/// The longest text field (an error, a camera source, an event id) a writer keeps, in bytes;
/// longer text is cut at a character boundary.
pub const MAX_TEXT_BYTES: usize = 256;
/// How often each service replaces its record.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);
/// A record this old says its service is not running (a loaded Pi may be a few seconds late).
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// The mode of the status directory when a writer has to create it (tmpfiles makes it under
/// systemd): writable by the group, sticky so nobody replaces a file they do not own.
pub const DIR_MODE: u32 = 0o1770;
/// The mode of a record: readable by the group (web-svc reads capture's).
pub const RECORD_MODE: u32 = 0o640;

/// The three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// capture-svc.
    Capture,
    /// motion-svc.
    Motion,
    /// web-svc.
    Web,
}

impl Service {
    /// All three, in the order pages show them.
    pub const ALL: [Service; 3] = [Service::Capture, Service::Motion, Service::Web];

    /// The short name: `capture`, `motion`, `web` (the file is `<name>.json`).
    pub fn name(self) -> &'static str {
        match self {
            Service::Capture => "capture",
            Service::Motion => "motion",
            Service::Web => "web",
        }
    }

    /// What a user calls it: "camera", "motion detector", "web server".
    pub fn label(self) -> &'static str {
        match self {
            Service::Capture => "camera",
            Service::Motion => "motion detector",
            Service::Web => "web server",
        }
    }

    /// The record's path for a runtime directory.
    pub fn path(self, runtime_dir: &Path) -> PathBuf {
        runtime_dir
            .join(STATUS_DIR)
            .join(format!("{}.json", self.name()))
    }
}

/// What the camera is doing, as capture-svc sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Looking for or starting a camera.
    #[default]
    Starting,
    /// Frames are flowing.
    Streaming,
    /// The camera is open but sends nothing.
    Stalled,
    /// The camera is being restarted.
    Restarting,
    /// The camera failed (see the record's `last_error`); capture-svc retries.
    Failed,
}

impl CameraState {
    /// The word a page shows.
    pub fn word(self) -> &'static str {
        match self {
            CameraState::Starting => "starting",
            CameraState::Streaming => "streaming",
            CameraState::Stalled => "stalled",
            CameraState::Restarting => "restarting",
            CameraState::Failed => "failed",
        }
    }
}

/// capture-svc's part of the record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureStatus {
    /// The camera's state.
    pub camera: CameraState,
    /// The camera source's name (cut to [`MAX_TEXT_BYTES`]).
    pub source: String,
    /// Frames published into the region since start.
    pub frames_in: u64,
    /// Frames published per second, over the last write interval.
    pub fps_in: f64,
    /// Bytes the JPEG splitter threw away (garbage between or inside frames).
    pub splitter_garbage_bytes: u64,
    /// Frames the splitter dropped (too large, truncated).
    pub splitter_dropped: u64,
    /// Frames refused at publishing (bad headers, larger than a slot).
    pub frames_refused: u64,
    /// Camera (re)starts after the first.
    pub camera_restarts: u64,
}

/// motion-svc's part of the record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionStatus {
    /// Frames are arriving from capture-svc.
    pub camera_ok: bool,
    /// Frames received since start.
    pub frames_in: u64,
    /// Frames analysed since start.
    pub frames_analysed: u64,
    /// Frames analysed per second, over the last write interval.
    pub analysed_fps: f64,
    /// Events started since start.
    pub events_total: u64,
    /// The last event's id (cut to [`MAX_TEXT_BYTES`]), if any since start.
    pub last_event_id: Option<String>,
    /// When the last event started, ms since the Unix epoch.
    pub last_event_unix_ms: Option<u64>,
    /// An event is being recorded now.
    pub recording: bool,
    /// Frames the clip writer's queue dropped.
    pub queue_dropped: u64,
    /// Clips that failed (write errors, disk full).
    pub clip_errors: u64,
    /// Clip bytes written since start.
    pub clip_bytes: u64,
    /// Events deleted by retention since start.
    pub retention_deletions: u64,
    /// Bytes used on the events' file system.
    pub disk_used_bytes: u64,
    /// Bytes free on the events' file system (for an unprivileged user).
    pub disk_free_bytes: u64,
    /// The MQTT link, when `[mqtt]` is on (absent in records written without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttStatus>,
}

/// motion-svc's MQTT link, in its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttStatus {
    /// Connected to the broker now.
    pub connected: bool,
    /// Event messages waiting for the broker.
    pub queued: u64,
    /// Event messages dropped because the queue was full (oldest first), since start.
    pub dropped: u64,
    /// Messages the broker acknowledged, since start.
    pub delivered: u64,
}

/// web-svc's part of the record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebStatus {
    /// Live streams open.
    pub viewers: u64,
    /// HTTP connections open.
    pub connections: u64,
    /// Browser sessions.
    pub sessions: u64,
    /// Frame parts handed to viewers since start.
    pub frames_sent: u64,
    /// Failed logins since start.
    pub login_failures: u64,
}

/// The service-specific part of a record, tagged with its service (`"kind"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    /// capture-svc's.
    Capture(CaptureStatus),
    /// motion-svc's.
    Motion(MotionStatus),
    /// web-svc's.
    Web(WebStatus),
}

impl Detail {
    /// The service this detail belongs to.
    pub fn service(&self) -> Service {
        match self {
            Detail::Capture(_) => Service::Capture,
            Detail::Motion(_) => Service::Motion,
            Detail::Web(_) => Service::Web,
        }
    }
}

/// One service's status record as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRecord {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Which service wrote it.
    pub service: Service,
    /// Its process id.
    pub pid: u32,
    /// When it started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// When it wrote this record, ms since the Unix epoch.
    pub updated_unix_ms: u64,
    /// Written as the service stopped: it is not running since `updated_unix_ms`.
    pub stopped: bool,
    /// The last error it hit (cut to [`MAX_TEXT_BYTES`]), if any.
    pub last_error: Option<String>,
    /// The service's own figures.
    pub detail: Detail,
}

/// What the writer serialises: the record's fields, borrowed (nothing cloned per write).
#[derive(Serialize)]
struct RecordRef<'a> {
    schema: u32,
    service: Service,
    pid: u32,
    started_unix_ms: u64,
    updated_unix_ms: u64,
    stopped: bool,
    last_error: Option<&'a str>,
    detail: &'a Detail,
}

/// Why a record could not be written or read. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No record: the service has not run since boot, or the runtime directory is another.
    #[error("status record {path}: missing (the service has not started since boot?)")]
    Missing {
        /// The record's path.
        path: PathBuf,
    },
    /// Larger than [`MAX_RECORD_BYTES`].
    #[error(
        "status record {path}: larger than {MAX_RECORD_BYTES} bytes, refused (not written by a mecam service?)"
    )]
    Oversize {
        /// The record's path.
        path: PathBuf,
    },
    /// Not JSON of the record's shape.
    #[error("status record {path}: not a status record ({reason})")]
    Garbage {
        /// The record's path.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// Another schema version (services of different releases side by side).
    #[error(
        "status record {path}: schema {found}, this build reads {SCHEMA}; restart every mecam service after an upgrade"
    )]
    Schema {
        /// The record's path.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// The file of one service holds another's record.
    #[error("status record {path}: holds {found:?}'s record, expected {expected:?}'s")]
    WrongService {
        /// The record's path.
        path: PathBuf,
        /// The service the record names.
        found: Service,
        /// The service the file is named for.
        expected: Service,
    },
    /// Reading or writing failed.
    #[error(
        "status record {path}: {source} (is the status directory there and writable? systemd-tmpfiles --create makes it)"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    crate::service::wall_ns() / 1_000_000
}

/// `text`'s first [`MAX_TEXT_BYTES`] at most, cut at a character boundary.
pub fn cut_text(text: &str) -> &str {
    let mut end = text.len().min(MAX_TEXT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Cuts `text` to at most [`MAX_TEXT_BYTES`] at a character boundary, in place.
pub fn clamp_text(text: &mut String) {
    let end = cut_text(text).len();
    text.truncate(end);
}

/// Replaces one service's record, atomically, from a buffer it keeps.
#[derive(Debug)]
pub struct StatusWriter {
    path: PathBuf,
    tmp: PathBuf,
    buf: Vec<u8>,
    pid: u32,
    started_unix_ms: u64,
    last_error: String,
    /// Failed writes, logged once per interval.
    failures: crate::throttle::LogThrottle,
}

impl StatusWriter {
    /// A writer of `service`'s record in `runtime_dir`'s status directory, which it creates
    /// (mode [`DIR_MODE`]) if missing. Nothing is written until [`StatusWriter::write`].
    ///
    /// # Errors
    /// The status directory is missing and cannot be created.
    pub fn new(runtime_dir: &Path, service: Service) -> Result<StatusWriter, StatusError> {
        let dir = runtime_dir.join(STATUS_DIR);
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Ok(()) => {
                // The umask took bits off: set the mode asked for.
                use std::os::unix::fs::PermissionsExt as _;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(DIR_MODE));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StatusError::Io { path: dir, source }),
        }
        let path = service.path(runtime_dir);
        let tmp = dir.join(format!(".{}.json.tmp", service.name()));
        Ok(StatusWriter {
            path,
            tmp,
            buf: Vec::with_capacity(MAX_RECORD_BYTES),
            pid: std::process::id(),
            started_unix_ms: now_unix_ms(),
            last_error: String::with_capacity(MAX_TEXT_BYTES),
            failures: crate::throttle::LogThrottle::new(crate::throttle::OUTSIDER_LOG_INTERVAL),
        })
    }

    /// [`StatusWriter::new`], or `None` after a warning: a service runs without its record
    /// rather than not at all.
    pub fn open_or_warn(runtime_dir: &Path, service: Service) -> Option<StatusWriter> {
        StatusWriter::new(runtime_dir, service)
            .inspect_err(|e| tracing::warn!("no status record: {e}"))
            .ok()
    }

    /// Writes the record (`stopped`: the last one, as the service stops); a failure is
    /// logged, at most once per [`crate::throttle::OUTSIDER_LOG_INTERVAL`], and survived.
    pub fn publish(&mut self, detail: &Detail, stopped: bool) {
        if let Err(e) = self.write_as(detail, stopped) {
            if let Some(held_back) = self.failures.check() {
                tracing::warn!(held_back, "{e}");
            }
        }
    }

    /// The record's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remembers `error` as the record's `last_error` (cut to [`MAX_TEXT_BYTES`]) from the
    /// next write on.
    pub fn set_last_error(&mut self, error: &str) {
        self.last_error.clear();
        self.last_error.push_str(cut_text(error));
    }

    /// Writes the record with `detail`, replacing the previous one atomically.
    ///
    /// # Errors
    /// The record would exceed [`MAX_RECORD_BYTES`] (nothing is written), or the file could
    /// not be written or renamed. The caller logs it (throttled) and carries on.
    pub fn write(&mut self, detail: &Detail) -> Result<(), StatusError> {
        self.write_as(detail, false)
    }

    /// Writes the last record, saying the service stopped (on a clean shutdown).
    ///
    /// # Errors
    /// As [`StatusWriter::write`].
    pub fn write_stopped(&mut self, detail: &Detail) -> Result<(), StatusError> {
        self.write_as(detail, true)
    }

    fn write_as(&mut self, detail: &Detail, stopped: bool) -> Result<(), StatusError> {
        let record = RecordRef {
            schema: SCHEMA,
            service: detail.service(),
            pid: self.pid,
            started_unix_ms: self.started_unix_ms,
            updated_unix_ms: now_unix_ms(),
            stopped,
            last_error: (!self.last_error.is_empty()).then_some(self.last_error.as_str()),
            detail,
        };
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, &record).map_err(|e| StatusError::Garbage {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        self.buf.push(b'\n');
        if self.buf.len() > MAX_RECORD_BYTES {
            return Err(StatusError::Oversize {
                path: self.path.clone(),
            });
        }
        let io = |source| StatusError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(RECORD_MODE)
            .open(&self.tmp)
            .map_err(io)?;
        file.write_all(&self.buf).map_err(io)?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io)
    }
}

/// A record read back, with how old it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The record.
    pub record: StatusRecord,
    /// How long ago it was written (zero if the clock says it is from the future).
    pub age: Duration,
}

impl Reading {
    /// The service is running: the record is recent and was not written as it stopped.
    pub fn running(&self) -> bool {
        !self.record.stopped && self.age <= STALE_AFTER
    }
}

/// Reads `service`'s record from `runtime_dir`.
///
/// # Errors
/// See [`StatusError`]: missing, oversize, garbage, another schema or service, or unreadable.
pub fn read(runtime_dir: &Path, service: Service) -> Result<Reading, StatusError> {
    read_at(&service.path(runtime_dir), service, now_unix_ms())
}

/// Reads the record at `path`, expected to be `service`'s, with ages measured from `now_ms`.
///
/// # Errors
/// As [`read`].
pub fn read_at(path: &Path, service: Service, now_ms: u64) -> Result<Reading, StatusError> {
    let io = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            StatusError::Missing {
                path: path.to_owned(),
            }
        } else {
            StatusError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let file = File::open(path).map_err(io)?;
    let mut buf = Vec::with_capacity(MAX_RECORD_BYTES + 1);
    file.take(MAX_RECORD_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() > MAX_RECORD_BYTES {
        return Err(StatusError::Oversize {
            path: path.to_owned(),
        });
    }
    parse(path, service, &buf, now_ms)
}

/// The schema alone, read first so another version is named as such, not as garbage.
#[derive(Deserialize)]
struct SchemaOnly {
    schema: u32,
}

fn parse(path: &Path, service: Service, bytes: &[u8], now_ms: u64) -> Result<Reading, StatusError> {
    let garbage = |e: serde_json::Error| StatusError::Garbage {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let SchemaOnly { schema } = serde_json::from_slice(bytes).map_err(garbage)?;
    if schema != SCHEMA {
        return Err(StatusError::Schema {
            path: path.to_owned(),
            found: schema,
        });
    }
    let record: StatusRecord = serde_json::from_slice(bytes).map_err(garbage)?;
    if record.service != service || record.detail.service() != service {
        return Err(StatusError::WrongService {
            path: path.to_owned(),
            found: record.detail.service(),
            expected: service,
        });
    }
    let age = Duration::from_millis(now_ms.saturating_sub(record.updated_unix_ms));
    Ok(Reading { record, age })
}

/// A per-second rate from a counter, measured between two writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateMeter {
    last: Option<(u64, u64)>,
}

impl RateMeter {
    /// The rate of `count` since the last call, at monotonic time `now_ns`; 0 on the first.
    pub fn rate(&mut self, count: u64, now_ns: u64) -> f64 {
        let rate = match self.last {
            Some((c, t)) if now_ns > t => {
                count.saturating_sub(c) as f64 * 1e9 / now_ns.saturating_sub(t) as f64
            }
            _ => 0.0,
        };
        self.last = Some((count, now_ns));
        // Rounded to a hundredth: the record stays short and readable.
        (rate * 100.0).round() / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn motion() -> Detail {
        Detail::Motion(MotionStatus {
            camera_ok: true,
            frames_in: 1000,
            frames_analysed: 250,
            analysed_fps: 5.0,
            events_total: 3,
            last_event_id: Some("20261124T182900Z-0001".into()),
            last_event_unix_ms: Some(1_700_000_000_000),
            recording: true,
            disk_free_bytes: 1 << 30,
            ..MotionStatus::default()
        })
    }

    #[test]
    fn a_written_record_reads_back_whole_and_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StatusWriter::new(dir.path(), Service::Motion).unwrap();
        w.set_last_error("disk full");
        w.write(&motion()).unwrap();
        let r = read(dir.path(), Service::Motion).unwrap();
        assert_eq!(r.record.detail, motion());
        assert_eq!(r.record.schema, SCHEMA);
        assert_eq!(r.record.pid, std::process::id());
        assert_eq!(r.record.last_error.as_deref(), Some("disk full"));
        assert!(r.running(), "{r:?}");
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path().join(STATUS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["motion.json"]);
    }

    #[test]
    fn a_stopped_or_old_record_says_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StatusWriter::new(dir.path(), Service::Capture).unwrap();
        let d = Detail::Capture(CaptureStatus::default());
        w.write_stopped(&d).unwrap();
        assert!(!read(dir.path(), Service::Capture).unwrap().running());
        w.write(&d).unwrap();
        let path = Service::Capture.path(dir.path());
        let later = now_unix_ms() + STALE_AFTER.as_millis() as u64 + 1000;
        let r = read_at(&path, Service::Capture, later).unwrap();
        assert!(r.age > STALE_AFTER);
        assert!(!r.running());
    }

    #[test]
    fn a_missing_record_is_named_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path(), Service::Web).unwrap_err();
        assert!(matches!(e, StatusError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("web.json"), "{e}");
    }

    #[test]
    fn garbage_oversize_other_schema_and_other_service_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(STATUS_DIR)).unwrap();
        let path = Service::Motion.path(dir.path());
        let now = now_unix_ms();
        let put = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();

        put(b"\x00\xffnot json");
        let e = read_at(&path, Service::Motion, now).unwrap_err();
        assert!(matches!(e, StatusError::Garbage { .. }), "{e}");

        put(&vec![b' '; MAX_RECORD_BYTES + 1]);
        let e = read_at(&path, Service::Motion, now).unwrap_err();
        assert!(matches!(e, StatusError::Oversize { .. }), "{e}");
        // An endless file (a FIFO or /dev/zero linked there) is read no further than the bound.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let e = read_at(&path, Service::Motion, now).unwrap_err();
        assert!(matches!(e, StatusError::Oversize { .. }), "{e}");
        std::fs::remove_file(&path).unwrap();

        put(br#"{"schema": 99, "whatever": true}"#);
        let e = read_at(&path, Service::Motion, now).unwrap_err();
        assert!(matches!(e, StatusError::Schema { found: 99, .. }), "{e}");

        let mut w = StatusWriter::new(dir.path(), Service::Web).unwrap();
        w.write(&Detail::Web(WebStatus::default())).unwrap();
        std::fs::rename(Service::Web.path(dir.path()), &path).unwrap();
        let e = read_at(&path, Service::Motion, now).unwrap_err();
        assert!(matches!(e, StatusError::WrongService { .. }), "{e}");

        // A field of another shape is garbage too, not a default.
        put(br#"{"schema": 1, "service": "motion", "pid": "x"}"#);
        let e = read_at(&path, Service::Motion, now).unwrap_err();
        assert!(matches!(e, StatusError::Garbage { .. }), "{e}");
    }

    #[test]
    fn long_text_is_cut_so_the_record_stays_under_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StatusWriter::new(dir.path(), Service::Capture).unwrap();
        // Ten times the bound, in a character of several bytes, so the cut must find a boundary.
        let long = "é".repeat(MAX_TEXT_BYTES * 10);
        w.set_last_error(&long);
        let mut source = long.clone();
        clamp_text(&mut source);
        assert!(source.len() <= MAX_TEXT_BYTES);
        w.write(&Detail::Capture(CaptureStatus {
            source,
            ..CaptureStatus::default()
        }))
        .unwrap();
        let r = read(dir.path(), Service::Capture).unwrap();
        assert!(r.record.last_error.unwrap().len() <= MAX_TEXT_BYTES);
        assert!(std::fs::metadata(w.path()).unwrap().len() as usize <= MAX_RECORD_BYTES);
    }

    #[test]
    fn an_unclamped_detail_past_the_bound_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StatusWriter::new(dir.path(), Service::Capture).unwrap();
        let e = w
            .write(&Detail::Capture(CaptureStatus {
                source: "x".repeat(MAX_RECORD_BYTES),
                ..CaptureStatus::default()
            }))
            .unwrap_err();
        assert!(matches!(e, StatusError::Oversize { .. }), "{e}");
        assert!(!w.path().exists());
    }

    #[test]
    fn the_writer_buffer_does_not_grow_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StatusWriter::new(dir.path(), Service::Motion).unwrap();
        let cap = w.buf.capacity();
        for _ in 0..50 {
            w.write(&motion()).unwrap();
        }
        assert_eq!(w.buf.capacity(), cap);
    }

    #[test]
    fn rates_come_from_counter_deltas() {
        let mut m = RateMeter::default();
        assert_eq!(m.rate(100, 1_000_000_000), 0.0);
        assert_eq!(m.rate(130, 2_000_000_000), 30.0);
        assert_eq!(m.rate(145, 2_500_000_000), 30.0);
        // A counter that went back (a restart) gives 0, not a huge number.
        assert_eq!(m.rate(0, 3_500_000_000), 0.0);
    }
}
