//! motion-svc's event folders as a test sees them: `event.json`, the clip, and whether a clip
//! that looks whole (`clip.avi`, not `clip.avi.part`) really is.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

/// Clip file name while motion-svc writes it (the design contract in ARCHITECTURE.md: never left looking whole).
pub const CLIP_PART: &str = "clip.avi.part";

/// `<events>/<id>/event.json` parsed, if it is there and whole.
pub fn read(events_dir: &Path, id: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(events_dir.join(id).join("event.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The event's `state` (`recording`, `complete`, `interrupted`), if its event.json reads.
pub fn state(events_dir: &Path, id: &str) -> Option<String> {
    read(events_dir, id).and_then(|v| v["state"].as_str().map(str::to_owned))
}

/// Frames `ffprobe` decodes from `clip`, failing on any error it reports: a clip that only
/// looks whole fails here. `None` (with a skip notice) when ffprobe is not installed.
///
/// # Errors
/// ffprobe reported an error or no frame count.
///
/// # Panics
/// Under CI when ffprobe is missing.
pub fn probe_frames(clip: &Path) -> anyhow::Result<Option<u64>> {
    let Some(line) = probe_stream(clip, "nb_read_frames")? else {
        return Ok(None);
    };
    let frames = line
        .trim_end_matches(',')
        .parse()
        .with_context(|| format!("ffprobe {}: no frame count", clip.display()))?;
    Ok(Some(frames))
}

/// What `ffprobe` says of `clip`'s first video stream, decoding every frame: the values of
/// `entries` (e.g. `codec_name,pix_fmt,nb_read_frames`) as one comma-separated line, failing
/// on any error it reports. `None` (with a skip notice) when ffprobe is not installed.
///
/// # Errors
/// ffprobe reported an error.
///
/// # Panics
/// Under CI when ffprobe is missing.
pub fn probe_stream(clip: &Path, entries: &str) -> anyhow::Result<Option<String>> {
    let out = match Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            &format!("stream={entries}"),
            "-of",
            "csv=p=0",
        ])
        .arg(clip)
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            crate::skip(
                "clip cross-check",
                "ffprobe not installed (apt-get install ffmpeg)",
            );
            return Ok(None);
        }
    };
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success() && err.trim().is_empty(),
        "ffprobe {} ({}): {err}",
        clip.display(),
        out.status
    );
    Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// A finished event (`complete` or `interrupted`) is consistent: no `clip.avi.part` is left
/// beside a named clip, the named clip exists, and ffprobe reads exactly the frames
/// event.json counts. Returns the frame count of the clip (0 without one).
///
/// # Errors
/// The folder is not consistent (what is wrong in the message).
pub fn check_closed(events_dir: &Path, id: &str) -> anyhow::Result<u64> {
    let dir = events_dir.join(id);
    let v = read(events_dir, id).with_context(|| format!("{id}: no readable event.json"))?;
    let state = v["state"].as_str().unwrap_or_default();
    anyhow::ensure!(
        state == "complete" || state == "interrupted",
        "{id}: state {state}, not closed"
    );
    let Some(clip) = v["clip"].as_str() else {
        anyhow::ensure!(
            !dir.join("clip.avi").exists(),
            "{id}: a clip.avi that event.json does not name"
        );
        return Ok(0);
    };
    let path = dir.join(clip);
    anyhow::ensure!(
        path.is_file(),
        "{id}: {state} event without its clip {clip}"
    );
    anyhow::ensure!(
        !dir.join(CLIP_PART).exists(),
        "{id}: {CLIP_PART} left beside {clip}"
    );
    let counted = v["frames"].as_u64().unwrap_or_default();
    if let Some(read) = probe_frames(&path)? {
        anyhow::ensure!(
            read == counted,
            "{id}: ffprobe reads {read} frames, event.json says {counted}"
        );
        anyhow::ensure!(read > 0, "{id}: an empty clip named in event.json");
    }
    Ok(counted)
}

/// Every event folder's event.json parses, with a known state; every closed one passes
/// [`check_closed`].
///
/// # Panics
/// On the first inconsistency.
pub fn check_all(events_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(events_dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let id = e.file_name().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(p.join("event.json")) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{}: {err}: {text}", p.display()));
        let state = v["state"].as_str().unwrap_or_default();
        match state {
            "recording" => {}
            "complete" | "interrupted" => {
                check_closed(events_dir, &id).unwrap_or_else(|e| panic!("{e:#}"));
            }
            other => panic!("{}: state {other}", p.display()),
        }
    }
}
