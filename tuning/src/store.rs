//! The overrides file on disk: a reader that refuses a broken file with a clear error, an
//! atomic, size-bounded writer (temporary file, fsync, rename), a locked read-modify-write
//! for the services that write it, and [`Watcher`], which notices a change.
//!
//! A reader never sees half a file: a writer renames a complete file over the old one. Two
//! writers (web-svc's settings page, an MQTT command) serialise on a lock file beside it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

use crate::bounds::KeyError;
use crate::overrides::Overrides;

/// Largest overrides file read or written, bytes. Sixteen masks and sixteen zones of 64
/// points each come to under 40 KiB.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Why the overrides file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused.
    #[error("overrides file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Larger than [`MAX_FILE_BYTES`].
    #[error(
        "overrides file {path} is {len} bytes, over the {MAX_FILE_BYTES} allowed; remove it or reset the settings to defaults"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or the size it would have had).
        len: u64,
    },
    /// Not TOML, or a key unknown or of the wrong type.
    #[error(
        "overrides file {path} is not valid: {message}; fix it, or reset the settings to defaults"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with the key or line.
        message: String,
    },
    /// A value out of range.
    #[error("overrides file {path}: {error}; fix it, or reset the settings to defaults")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key and the problem.
        error: KeyError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and validates the overrides file; a missing file is no overrides.
///
/// # Errors
/// The file cannot be read, is too large, is not valid TOML of the schema, or has a value out
/// of range. The caller keeps its last good settings.
pub fn read(path: &Path) -> Result<Overrides, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Overrides::default()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            len: text.len() as u64,
        });
    }
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<Overrides, StoreError> {
    let o: Overrides = toml::from_str(text).map_err(|e| {
        // One line for the journal: the parser's message and where.
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        StoreError::Parse {
            path: path.to_path_buf(),
            message: match line {
                Some(n) => format!("line {n}: {}", e.message().trim()),
                None => e.message().trim().to_string(),
            },
        }
    })?;
    o.validate().map_err(|error| StoreError::Invalid {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(o)
}

/// Writes `o` to `path` atomically: validated, bounded, written to a temporary file beside
/// it, synced, and renamed over the old file. Readers see the old file or the new one.
///
/// # Errors
/// A value out of range (nothing is written), a file past [`MAX_FILE_BYTES`], or the file
/// system's refusal (the old file stays).
pub fn write(path: &Path, o: &Overrides) -> Result<(), StoreError> {
    o.validate().map_err(|error| StoreError::Invalid {
        path: path.to_path_buf(),
        error,
    })?;
    let text = toml::to_string(o).map_err(|e| StoreError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            len: text.len() as u64,
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Read-modify-write under an exclusive lock on `<path>.lock`: reads the file, lets `change`
/// edit it, writes it back. Returns what was written.
///
/// # Errors
/// As [`read`] (a broken file is not overwritten by a partial change: reset it with
/// [`write`] of the defaults) and [`write`].
pub fn update(path: &Path, change: impl FnOnce(&mut Overrides)) -> Result<Overrides, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .open(&lock_path)
        .map_err(io_err(path))?;
    let _lock =
        Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| io_err(path)(e.into()))?;
    let mut o = read(path)?;
    change(&mut o);
    write(path, &o)?;
    Ok(o)
}

/// Notices changes to the overrides file by its identity (inode, size, modification time),
/// which every rename-over changes. Poll it (once a second is plenty): reading happens only
/// when something changed.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    seen: Option<Option<(u64, u64, SystemTime)>>,
}

impl Watcher {
    /// Watches `path`; the first [`poll`](Watcher::poll) reports the file as it is.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Watcher {
            path: path.into(),
            seen: None,
        }
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `None` when nothing changed since the last poll; else the file read again (a removed
    /// file is no overrides).
    pub fn poll(&mut self) -> Option<Result<Overrides, StoreError>> {
        let now = std::fs::metadata(&self.path).ok().map(|m| {
            (
                m.ino(),
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            )
        });
        if self.seen == Some(now) {
            return None;
        }
        self.seen = Some(now);
        Some(read(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Polygon;

    #[test]
    fn missing_is_empty_and_write_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.toml");
        assert!(read(&path).unwrap().is_empty());
        let o = Overrides {
            detection: Some(false),
            analysis_fps: Some(2.5),
            masks: Some(vec![Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.25, 0.5]])]),
            ..Overrides::default()
        };
        write(&path, &o).unwrap();
        assert_eq!(read(&path).unwrap(), o);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_bad_value_is_not_written_and_the_old_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.toml");
        let good = Overrides {
            analysis_fps: Some(3.0),
            ..Overrides::default()
        };
        write(&path, &good).unwrap();
        let bad = Overrides {
            analysis_fps: Some(1000.0),
            ..Overrides::default()
        };
        assert!(matches!(
            write(&path, &bad),
            Err(StoreError::Invalid { .. })
        ));
        assert_eq!(read(&path).unwrap(), good);
    }

    #[test]
    fn broken_files_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.toml");
        for (text, key) in [
            ("analysis_fps = ", "line 1"),
            ("detecton = true", "detecton"),
            ("analysis_fps = 0.0", "analysis_fps"),
            ("\u{0}\u{1}garbage", "overrides"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = read(&path).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("reset"), "{text:?}: {e}");
        }
        // Past the bound: refused without reading it all.
        std::fs::write(&path, "#".repeat(MAX_FILE_BYTES as usize + 10)).unwrap();
        assert!(matches!(read(&path), Err(StoreError::TooLarge { .. })));
        // A broken file is not half-updated.
        assert!(update(&path, |o| o.detection = Some(false)).is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAX_FILE_BYTES + 10);
    }

    #[test]
    fn update_changes_one_key_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.toml");
        update(&path, |o| o.analysis_fps = Some(2.0)).unwrap();
        let o = update(&path, |o| o.detection = Some(false)).unwrap();
        assert_eq!(o.analysis_fps, Some(2.0));
        assert_eq!(read(&path).unwrap(), o);
    }

    #[test]
    fn watcher_reports_first_then_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.toml");
        let mut w = Watcher::new(&path);
        assert!(w.poll().unwrap().unwrap().is_empty());
        assert!(w.poll().is_none());
        update(&path, |o| o.detection = Some(false)).unwrap();
        assert_eq!(w.poll().unwrap().unwrap().detection, Some(false));
        assert!(w.poll().is_none());
        std::fs::write(&path, "detection = maybe").unwrap();
        assert!(w.poll().unwrap().is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(w.poll().unwrap().unwrap().is_empty());
    }
}
