//! The state of the events disk, from `statvfs` and the directory's own metadata: whether
//! motion-svc can record into it, and if not, why and what to do.

use std::path::Path;

use serde::Serialize;

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
    match is_directory(dir).and_then(|()| room_to_record(dir, min_free)) {
        Ok(free) => DiskState {
            state: "ok",
            free_bytes: Some(free),
            problem: None,
        },
        Err(bad) => bad,
    }
}

/// Whether `dir` exists and is a directory.
fn is_directory(dir: &Path) -> Result<(), DiskState> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DiskState::bad(
            "not-a-directory",
            None,
            format!(
                "the events directory {shown} is not a directory; point [web] and [motion] events_dir at one"
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DiskState::bad(
            "missing",
            None,
            format!(
                "the events directory {shown} does not exist; is its disk mounted? create it, owned by the service user"
            ),
        )),
        Err(e) => Err(DiskState::bad(
            "error",
            None,
            format!("the events directory {shown} cannot be checked: {e}"),
        )),
    }
}

/// The bytes free for recording in the directory `dir`, if its file system is writable, the
/// service may write in it, and at least `min_free` bytes are free.
fn room_to_record(dir: &Path, min_free: u64) -> Result<u64, DiskState> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let shown = dir.display();
    let vfs = statvfs(dir).map_err(|e| {
        DiskState::bad(
            "error",
            None,
            format!("the events disk of {shown} cannot be checked: {e}"),
        )
    })?;
    // The counts are `c_ulong` on 32-bit targets and u64 here: widen without a lint.
    let free = (vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64);
    if vfs.flags().contains(FsFlags::ST_RDONLY) {
        return Err(DiskState::bad(
            "read-only",
            Some(free),
            format!(
                "the events disk ({shown}) is read-only; it may have been remounted read-only after errors: check `dmesg` and the card or disk"
            ),
        ));
    }
    if let Err(e) = nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    ) {
        return Err(DiskState::bad(
            "not-writable",
            Some(free),
            format!(
                "the events directory {shown} is not writable ({e}); give it to the service user"
            ),
        ));
    }
    if free < min_free {
        return Err(DiskState::bad(
            "full",
            Some(free),
            format!(
                "the events disk is full ({} MiB free); delete old events, or raise [motion] min_free_mib so that older events make room",
                free / (1024 * 1024)
            ),
        ));
    }
    Ok(free)
}
