//! The events disk as the writer sees it: usable, full, read-only or broken, and what crash
//! recovery did.

use std::path::Path;

use events::Recovery;

/// Changes of the events disk's state are logged once per change, and at most once per
/// interval if it flaps (then with a count).
pub(super) static DISK_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);

/// What the events disk allows, as the writer last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DiskState {
    /// Writable, with room.
    #[default]
    Ok,
    /// No space left (after the storage limits deleted what they may).
    Full,
    /// Mounted read-only.
    ReadOnly,
    /// Anything else: missing, not a directory, no permission, I/O errors.
    Broken(String),
}

impl DiskState {
    /// The state an I/O error on the events disk shows.
    pub fn from_io(e: &std::io::Error) -> DiskState {
        match e.raw_os_error() {
            Some(n) if n == nix::errno::Errno::ENOSPC as i32 => DiskState::Full,
            Some(n) if n == nix::errno::Errno::EDQUOT as i32 => DiskState::Full,
            Some(n) if n == nix::errno::Errno::EROFS as i32 => DiskState::ReadOnly,
            _ => DiskState::Broken(e.to_string()),
        }
    }

    /// For the status line and the journal.
    pub fn describe(&self) -> String {
        match self {
            DiskState::Ok => "ok".into(),
            DiskState::Full => "full".into(),
            DiskState::ReadOnly => "read-only".into(),
            DiskState::Broken(why) => format!("unusable ({why})"),
        }
    }
}

/// Looks at the events disk without writing to it: the directory exists (it is created if
/// not), the file system is not read-only, has `min_free` bytes free, and the directory is
/// writable.
pub fn probe_disk(events_dir: &Path, min_free: u64) -> DiskState {
    if let Err(e) = std::fs::create_dir_all(events_dir) {
        return DiskState::from_io(&e);
    }
    match nix::sys::statvfs::statvfs(events_dir) {
        Err(e) => return DiskState::Broken(e.to_string()),
        Ok(s) if s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) => {
            return DiskState::ReadOnly;
        }
        Ok(_) if events::free_bytes(events_dir).is_some_and(|f| f < min_free) => {
            return DiskState::Full;
        }
        Ok(_) => {}
    }
    match nix::unistd::access(events_dir, nix::unistd::AccessFlags::W_OK) {
        Ok(()) => DiskState::Ok,
        Err(e) => DiskState::from_io(&std::io::Error::from(e)),
    }
}

/// Event folders that recovery skipped (a hostile or damaged file can make thousands).
static RECOVERY_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);

/// Logs what a crash-recovery pass did: each closed event, and each folder left as it was
/// (throttled: one line per interval, then a count).
pub fn log_recovery(r: &Recovery) {
    for e in &r.recovered {
        if let Some(held_back) = RECOVERY_LOG.check() {
            tracing::warn!(event = %e.id, frames = e.frames, held_back, "closed an event interrupted by a crash (state interrupted)");
        }
    }
    for s in &r.skipped {
        if let Some(held_back) = RECOVERY_LOG.check() {
            tracing::warn!(event = %s.id, held_back, "crash recovery skipped event folder {}: {}", s.id, s.why);
        }
    }
    if !r.recovered.is_empty() || !r.skipped.is_empty() {
        tracing::warn!(
            closed = r.recovered.len(),
            skipped = r.skipped.len(),
            "crash recovery: {} interrupted event(s) closed, {} folder(s) left as they were{}",
            r.recovered.len(),
            r.skipped.len(),
            if r.write_errors > 0 {
                " (some for a write error: tried again when the events disk is writable)"
            } else {
                ""
            }
        );
    }
}
