//! The storage limits: total size, age and free space, kept by deleting the oldest folders
//! (never one being recorded).

use std::fs;
use std::path::Path;

use crate::folders::{delete_folder, event_folders};
use crate::meta::says_recording;
use crate::{FOLDER_LOG, StoreError, io_err};

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

/// Bytes of the files directly in `dir` (an event folder has no sub-folders).
pub fn dir_size(dir: &Path) -> u64 {
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
    disk_usage(path).map(|(_, free)| free)
}

/// `(used, free for unprivileged users)` bytes of the file system holding `path`.
pub fn disk_usage(path: &Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    // The counts are `c_ulong` on 32-bit targets and u64 here: widen without a lint.
    let frag = s.fragment_size() as u64;
    let used = (s.blocks() as u64).saturating_sub(s.blocks_free() as u64);
    Some((
        used.saturating_mul(frag),
        (s.blocks_available() as u64).saturating_mul(frag),
    ))
}

/// Deletes the oldest events until the limits hold. Never deletes `keep` (the event in
/// progress) nor any folder whose `event.json` says `recording` ([`says_recording`]). `free`
/// reports free bytes (a parameter so tests can simulate a full disk). Returns the deleted
/// ids.
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
    let folders = match event_folders(events_dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot list", events_dir)(e)),
    };
    let mut events: Vec<(String, u64, u64)> = folders
        .map(|(id, dir)| {
            let start = crate::parse_id(&id).expect("event_folders yields ids");
            (id, start, dir_size(&dir))
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
        if keep == Some(id.as_str()) || says_recording(&dir) {
            continue;
        }
        match delete_folder(&dir) {
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
    use crate::test_support::meta;
    use crate::{CLIP, EventState, create_event_dir, write_meta};

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

    /// web-svc's `clip.mp4` (and a `clip.mp4.part` being written) count in the folder's size,
    /// and go with the folder when the limits delete it.
    #[test]
    fn the_mp4_beside_a_clip_counts_and_goes_with_it() {
        let d = tempfile::tempdir().unwrap();
        let mut c = 0;
        let (id, dir) = create_event_dir(d.path(), 1_700_000_000_000, &mut c).unwrap();
        write_meta(&dir, &meta(&id, EventState::Complete)).unwrap();
        fs::write(dir.join(CLIP), vec![0u8; 10_000]).unwrap();
        let without = dir_size(&dir);
        fs::write(dir.join(crate::CLIP_MP4), vec![0u8; 5_000]).unwrap();
        fs::write(dir.join(crate::CLIP_MP4_PART), vec![0u8; 700]).unwrap();
        assert_eq!(dir_size(&dir), without + 5_700);
        let limits = Limits {
            max_total_bytes: without,
            max_age_ms: 0,
            min_free_bytes: 0,
        };
        let deleted = enforce_limits(d.path(), limits, None, 1_700_000_001_000, &|| None).unwrap();
        assert_eq!(deleted, [id]);
        assert!(!dir.exists());
    }

    /// Four complete events of 100 kB, a second apart, oldest first.
    fn four_complete_events() -> (tempfile::TempDir, Vec<String>) {
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
        (d, ids)
    }

    #[test]
    fn low_free_disk_deletes_until_enough_is_free() {
        let (d, ids) = four_complete_events();
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
        let (d, ids) = four_complete_events();
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

    #[test]
    fn disk_usage_reads_the_file_system_and_none_for_a_missing_path() {
        let d = tempfile::tempdir().unwrap();
        let (used, free) = disk_usage(d.path()).unwrap();
        // Two reads of a file system other tests write to differ: no equality between them.
        assert!(used > 0, "a mounted file system holds something");
        assert!(free > 0, "the test's own file system has room");
        assert_eq!(disk_usage(&d.path().join("missing")), None);
    }
}
