//! Opening a file of an event folder safely: relative to the folder's descriptor, with
//! `O_NONBLOCK | O_NOFOLLOW`, checked to be a regular file on the opened descriptor and within
//! its size bound; anything else counts as absent, with a throttled log line. Both services
//! read event files only through here.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::layout::{CLIP, CLIP_MP4, META, POSTER};

/// Largest `event.json` read (a real one is under 2 KB): a bigger file is not an event's.
pub const MAX_META_BYTES: u64 = 64 * 1024;
/// Largest `poster.jpg` served.
pub const MAX_POSTER_BYTES: u64 = 16 * 1024 * 1024;
/// Largest `clip.avi` served or replayed (an AVI 1.0 file is under 4 GiB).
pub const MAX_CLIP_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Event files skipped because they are not regular files, too big or symlinks: a hostile
/// or broken file can be hit by every request, so one line per interval.
static SKIPPED: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// The files read from an event folder, each with its size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFile {
    /// `event.json`.
    Json,
    /// `poster.jpg`.
    Poster,
    /// `clip.avi`.
    Clip,
    /// `clip.mp4` (made by web-svc on demand).
    Mp4,
}

impl EventFile {
    /// The file name in the folder.
    pub fn name(self) -> &'static str {
        match self {
            EventFile::Json => META,
            EventFile::Poster => POSTER,
            EventFile::Clip => CLIP,
            EventFile::Mp4 => CLIP_MP4,
        }
    }

    /// The largest size read.
    pub fn max_bytes(self) -> u64 {
        match self {
            EventFile::Json => MAX_META_BYTES,
            EventFile::Poster => MAX_POSTER_BYTES,
            EventFile::Clip | EventFile::Mp4 => MAX_CLIP_BYTES,
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
    /// Another error opening or reading it.
    #[error("{name} cannot be read: {source}")]
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
        nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => OpenError::Missing(name),
        nix::errno::Errno::ELOOP => OpenError::NotRegular {
            name,
            kind: "symlink",
        },
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

/// Reads `file` of `folder` whole, opened as [`open_event_file`] does; a file that grew past
/// its bound since it was opened is refused too.
///
/// # Errors
/// See [`OpenError`].
pub fn read_event_file(folder: &Path, file: EventFile) -> Result<Vec<u8>, OpenError> {
    let (f, len) = open_event_file(folder, file)?;
    let name = file.name();
    let max = file.max_bytes();
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|source| OpenError::Io { name, source })?;
    if buf.len() as u64 > max {
        return Err(OpenError::TooBig {
            name,
            len: buf.len() as u64,
            max,
        });
    }
    Ok(buf)
}

/// Logs (throttled) an event file that was skipped for what it is, not for being missing.
pub fn log_skipped(folder: &Path, e: &OpenError) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(
            read_event_file(folder, EventFile::Json),
            Err(OpenError::TooBig { .. })
        ));
        std::fs::write(folder.join("event.json"), vec![b' '; max]).unwrap();
        assert_eq!(
            open_event_file(folder, EventFile::Json).unwrap().1,
            max as u64
        );
        assert_eq!(read_event_file(folder, EventFile::Json).unwrap().len(), max);
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
}
