//! Crash recovery: closing the events a crash left `recording`, without ever destroying data
//! or blocking on a special file.

use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde_json::{Value, json};

use crate::avi;
use crate::folders::event_folders;
use crate::layout::{CLIP, CLIP_PART, META_TMP, POSTER, POSTER_TMP};
use crate::meta::{EndReason, EventMeta, EventState, MetaError, prepare_bytes, read_meta_map};
use crate::open::OpenError;
use crate::{FOLDER_LOG, StoreError, io_err};

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
    let folders = match event_folders(events_dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("cannot list", events_dir)(e)),
    };
    for (name, dir) in folders {
        let start_ms = crate::parse_id(&name).expect("event_folders yields ids");
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
    let mut meta = match read_meta_map(dir) {
        Ok(m) => m,
        Err(MetaError::Open(OpenError::Missing(_))) => {
            // No metadata at all (a crash right after the folder was made): one is written.
            let Value::Object(m) = json!(EventMeta::new(name.to_owned(), start_ms, 0, 0)) else {
                unreachable!("EventMeta is an object")
            };
            m
        }
        Err(e) => return Err(RecoverError::Skip(format!("{e}: left as it is"))),
    };
    if meta.get("state").and_then(Value::as_str) != Some(EventState::Recording.as_str()) {
        if is_regular(&dir.join(META_TMP)) {
            let _ = fs::remove_file(dir.join(META_TMP));
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
    for tmp in [META_TMP, POSTER_TMP] {
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
    // Compact, as prepare_meta writes: the patch adds a few short fields to a file that was
    // within MAX_META_BYTES.
    let text = serde_json::to_vec(&meta).expect("a JSON map serialises");
    prepare_bytes(dir, &text)
        .and_then(|p| p.commit())
        .map_err(RecoverError::Write)?;
    Ok(Some(Recovered {
        id: name.to_owned(),
        frames,
    }))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt as _;

    use super::*;
    use crate::limits::{Limits, enforce_limits};
    use crate::test_support::{jpeg, meta};
    use crate::{MAX_META_BYTES, META, create_event_dir, read_meta, write_meta};

    #[test]
    fn recovery_repairs_the_clip_and_marks_interrupted() {
        let d = tempfile::tempdir().unwrap();
        let mut c = 0;
        let (id, dir) = create_event_dir(d.path(), 1_700_000_000_000, &mut c).unwrap();
        write_meta(&dir, &meta(&id, EventState::Recording)).unwrap();
        let mut w = crate::avi::AviWriter::create(&dir.join(CLIP_PART), 64, 48, 10.0).unwrap();
        let jpeg = jpeg(9);
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
        assert_eq!(crate::avi::read_frames(&dir.join(CLIP)).unwrap().1.len(), 3);
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
        let mut w = crate::avi::AviWriter::create(&dir.join(CLIP_PART), 64, 48, 10.0).unwrap();
        let jpeg = jpeg(9);
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
        let v = read_meta_map(&dir).unwrap();
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
    fn recovery_does_not_read_through_a_symlinked_event_json() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("elsewhere.json");
        let text =
            serde_json::to_vec(&meta("20261124T182900Z-0001", EventState::Recording)).unwrap();
        fs::write(&target, &text).unwrap();
        let mut c = 0;
        let (id, dir) = create_event_dir(d.path(), 1_700_000_000_000, &mut c).unwrap();
        std::os::unix::fs::symlink(&target, dir.join(META)).unwrap();

        let r = recover(d.path()).unwrap();
        assert_eq!(r.recovered, vec![], "{r:?}");
        assert_eq!(r.skipped.len(), 1, "{r:?}");
        assert_eq!(r.skipped[0].id, id);
        assert!(r.skipped[0].why.contains("symlink"), "{r:?}");
        assert!(fs::symlink_metadata(dir.join(META)).unwrap().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), text, "the target is untouched");
    }
}
