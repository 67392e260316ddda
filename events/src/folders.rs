//! The events directory as a set of folders: the next id, making a new folder,
//! listing the newest, and deleting one.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::layout::{MAX_COUNTER, format_id, id_counter, parse_id, utc_stamp};
use crate::{StoreError, io_err};

/// At most this many entries of the events directory are looked at by one pass (recovery,
/// the storage limits, the next counter).
pub const MAX_SCAN: usize = 100_000;

/// The event folders of `events_dir`: `(id, path)` of each real directory (not a symlink)
/// whose name is an id, at most [`MAX_SCAN`] entries looked at. Empty when the directory
/// cannot be listed.
pub fn event_folders(events_dir: &Path) -> io::Result<impl Iterator<Item = (String, PathBuf)>> {
    Ok(fs::read_dir(events_dir)?
        .flatten()
        .take(MAX_SCAN)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            parse_id(&name)?;
            e.file_type()
                .is_ok_and(|t| t.is_dir())
                .then(|| (name, e.path()))
        }))
}

/// Ids, newest first (ids start with their UTC time), at most `max`: memory bounded whatever
/// the number of folders.
pub fn newest_ids(events_dir: &Path, max: usize) -> Vec<String> {
    let Ok(folders) = event_folders(events_dir) else {
        return Vec::new();
    };
    let mut heap: BinaryHeap<Reverse<String>> = BinaryHeap::with_capacity(max + 1);
    for (id, _) in folders {
        heap.push(Reverse(id));
        if heap.len() > max {
            heap.pop();
        }
    }
    let mut ids: Vec<String> = heap.into_iter().map(|Reverse(s)| s).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

/// The highest counter among the existing folders' ids (0 when there is none): a process that
/// starts counts on from it with [`next_id`].
pub fn last_counter(events_dir: &Path) -> u32 {
    event_folders(events_dir)
        .map(|f| f.filter_map(|(id, _)| id_counter(&id)).max().unwrap_or(0))
        .unwrap_or(0)
}

/// The id of the next event, starting at `start_unix_ms`: `counter` moves on by one (from
/// [`MAX_COUNTER`] back to 1).
pub fn next_id(start_unix_ms: u64, counter: &mut u32) -> String {
    *counter = *counter % MAX_COUNTER + 1;
    format_id(start_unix_ms, *counter)
}

/// Creates a fresh event folder for an event starting at `start_unix_ms`: id = UTC stamp and
/// the first free counter after `counter` (updated).
///
/// # Errors
/// The folder cannot be created.
pub fn create_event_dir(
    events_dir: &Path,
    start_unix_ms: u64,
    counter: &mut u32,
) -> Result<(String, PathBuf), StoreError> {
    fs::create_dir_all(events_dir).map_err(io_err("cannot create", events_dir))?;
    for _ in 0..MAX_COUNTER {
        let id = next_id(start_unix_ms, counter);
        let dir = events_dir.join(&id);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok((id, dir)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("cannot create", &dir)(e)),
        }
    }
    Err(io_err("no free id in", events_dir)(io::Error::other(
        format!(
            "{MAX_COUNTER} events started at {}",
            utc_stamp(start_unix_ms)
        ),
    )))
}

/// Deletes the event folder `folder` and everything in it, if it is a real directory (a
/// symlink is refused with `NotFound`, and never followed). The caller checks first that it
/// is not being recorded ([`crate::says_recording`]).
///
/// # Errors
/// Not a directory, or the removal failed.
pub fn delete_folder(folder: &Path) -> io::Result<()> {
    if !fs::symlink_metadata(folder)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not an event folder", folder.display()),
        ));
    }
    fs::remove_dir_all(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_within_a_second() {
        let d = tempfile::tempdir().unwrap();
        let mut c = 0;
        let (a, _) = create_event_dir(d.path(), 1000, &mut c).unwrap();
        let mut c2 = 0; // a restarted process starts counting again
        let (b, _) = create_event_dir(d.path(), 1000, &mut c2).unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with("-0001") && b.ends_with("-0002"));
        assert_eq!(last_counter(d.path()), 2);
    }

    #[test]
    fn listing_is_bounded_newest_first_and_skips_what_is_not_an_event_folder() {
        let d = tempfile::tempdir().unwrap();
        for id in [
            "20261124T000000Z-0001",
            "20261124T000000Z-0002",
            "20261124T000000Z-0003",
        ] {
            fs::create_dir(d.path().join(id)).unwrap();
        }
        fs::write(d.path().join("20261124T000000Z-0009"), b"a file").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("20261124T000000Z-0008")).unwrap();
        fs::create_dir(d.path().join("lost+found")).unwrap();
        assert_eq!(
            newest_ids(d.path(), 2),
            ["20261124T000000Z-0003", "20261124T000000Z-0002"]
        );
        assert_eq!(last_counter(d.path()), 3);
        assert_eq!(
            delete_folder(&d.path().join("20261124T000000Z-0008"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        assert!(Path::new("/etc").is_dir());
        delete_folder(&d.path().join("20261124T000000Z-0003")).unwrap();
        assert_eq!(newest_ids(d.path(), 5).len(), 2);
    }
}
