//! Finding a camera: where to look ([`Probe`]), the `rpicam` program and its arguments, and
//! the first V4L2 node that is a camera.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{NON_CAMERA_NODES, SourceSpec};
use crate::config::{CaptureConfig, DEFAULT_RPICAM};
use crate::supervise::find_program_in;

/// Where [`SourceSpec::resolve_in`] looks for cameras: the real system, or a test's own dirs.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `PATH`-style list searched for `rpicam-vid`/`libcamera-vid`.
    pub search_path: Option<OsString>,
    /// Where the `video*` device nodes are (`/dev`).
    pub dev_dir: PathBuf,
    /// Where their sysfs entries are (`/sys/class/video4linux`).
    pub sysfs_dir: PathBuf,
}

impl Probe {
    /// This machine: `$PATH`, `/dev`, `/sys/class/video4linux`.
    pub fn system() -> Probe {
        Probe {
            search_path: std::env::var_os("PATH"),
            dev_dir: PathBuf::from("/dev"),
            sysfs_dir: PathBuf::from("/sys/class/video4linux"),
        }
    }
}

/// The `rpicam` source.
pub(super) fn rpicam(cfg: &CaptureConfig, probe: &Probe) -> SourceSpec {
    let program = rpicam_program(cfg, probe).unwrap_or_else(|| cfg.rpicam_program.clone().into());
    let mut argv: Vec<OsString> = vec![program.into()];
    for a in ["-t", "0", "--codec", "mjpeg", "-o", "-", "--nopreview"] {
        argv.push(a.into());
    }
    for (flag, value) in [
        ("--width", cfg.width),
        ("--height", cfg.height),
        ("--framerate", cfg.fps),
        ("--quality", u32::from(cfg.quality)),
    ] {
        argv.push(flag.into());
        argv.push(value.to_string().into());
    }
    if cfg.rotation != 0 {
        argv.push("--rotation".into());
        argv.push(cfg.rotation.to_string().into());
    }
    if cfg.hflip {
        argv.push("--hflip".into());
    }
    if cfg.vflip {
        argv.push("--vflip".into());
    }
    SourceSpec::Process {
        label: "rpicam".into(),
        argv,
        known_size: Some((cfg.width, cfg.height)),
    }
}

/// The `v4l2` source: ffmpeg copies the camera's own MJPEG (no re-encode) to stdout; see the
/// README for why this is not an in-process V4L2 crate.
pub(super) fn v4l2(cfg: &CaptureConfig, probe: &Probe) -> SourceSpec {
    let dev = cfg
        .device
        .clone()
        .or_else(|| first_video_device(probe))
        .unwrap_or_else(|| PathBuf::from("/dev/video0"));
    let argv: Vec<OsString> = vec![
        cfg.ffmpeg_program.clone().into(),
        "-hide_banner".into(),
        "-nostdin".into(),
        "-loglevel".into(),
        "error".into(),
        "-f".into(),
        "v4l2".into(),
        "-input_format".into(),
        "mjpeg".into(),
        "-video_size".into(),
        format!("{}x{}", cfg.width, cfg.height).into(),
        "-framerate".into(),
        cfg.fps.to_string().into(),
        "-i".into(),
        dev.clone().into(),
        "-c:v".into(),
        "copy".into(),
        "-f".into(),
        "mjpeg".into(),
        "-".into(),
    ];
    SourceSpec::Process {
        label: format!("v4l2:{}", dev.display()),
        argv,
        // The driver may round the asked size to one the camera has, larger or smaller.
        known_size: None,
    }
}

/// The rpicam program to run: the configured one if found, else `libcamera-vid` when the
/// default was asked for.
pub(super) fn rpicam_program(cfg: &CaptureConfig, probe: &Probe) -> Option<PathBuf> {
    let path = probe.search_path.as_deref();
    find_program_in(&cfg.rpicam_program, path).or_else(|| {
        (cfg.rpicam_program == DEFAULT_RPICAM)
            .then(|| find_program_in("libcamera-vid", path))
            .flatten()
    })
}

/// The lowest-numbered `videoN` node that is a camera: numeric order (`video2` before
/// `video10`), skipping the nodes [`NON_CAMERA_NODES`] names. Runs once at start; the list
/// holds one number per node of the device directory.
pub(super) fn first_video_device(probe: &Probe) -> Option<PathBuf> {
    let mut nodes: Vec<u32> = std::fs::read_dir(&probe.dev_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("video")?.parse().ok())
        .collect();
    nodes.sort_unstable();
    nodes
        .into_iter()
        .find(|n| {
            let name = std::fs::read_to_string(probe.sysfs_dir.join(format!("video{n}/name")))
                .unwrap_or_default()
                .to_ascii_lowercase();
            let skip = NON_CAMERA_NODES.iter().any(|k| name.contains(k));
            if skip {
                // Trace, not debug: with no camera found this runs at every look.
                tracing::trace!(node = n, name = name.trim(), "not a camera, skipped");
            }
            !skip
        })
        .map(|n| probe.dev_dir.join(format!("video{n}")))
}
