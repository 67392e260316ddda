//! Camera sources: which one runs (including the automatic choice), how each is opened, and
//! the byte stream it yields. Process sources (`rpicam`, `v4l2`, `command`) run under
//! [`crate::supervise`]; `http` is a TCP stream; `file` reads a file or a folder; `synthetic`
//! renders frames itself (see [`crate::capture`]).

mod detect;
mod file;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::PathBuf;

use ipc::jpeg::FrameLimits;

use crate::config::{CaptureConfig, DEFAULT_RPICAM, SourceKind};
use crate::http::CameraUrl;
use crate::synthetic::Script;
pub use detect::Probe;
use detect::{first_video_device, rpicam, rpicam_program, v4l2};
pub use file::{FileInput, MAX_FOLDER_FILES};

/// V4L2 nodes whose sysfs `name` contains one of these are not cameras with an MJPEG stream:
/// the Pi's hardware codecs and ISPs (`bcm2835-codec-*`, `bcm2835-isp`, `pispbe`), its HEVC
/// decoder (`rpivid`) and its raw CSI receivers (`unicam`, `rp1-cfe`, used through rpicam).
pub const NON_CAMERA_NODES: [&str; 5] = ["codec", "isp", "rpivid", "unicam", "rp1-cfe"];

/// A camera known to deliver exactly the configured size (`rpicam`, `synthetic`) may send
/// frames up to that size rounded up to this many pixels (libcamera may align an odd size).
pub const KNOWN_SIZE_ALIGN: u32 = 64;
/// With no source configured and no camera found, the longest wait before looking again:
/// looking is cheap (a `PATH` search and a directory listing), and a USB camera plugged in
/// later should be picked up soon.
pub const NO_CAMERA_RECHECK_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// A resolved source, ready to open.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A long-running program writing JPEGs to stdout.
    Process {
        /// Label for logs and the hello (`rpicam`, `v4l2:/dev/video0`, `command:ffmpeg`).
        label: String,
        /// Program and arguments.
        argv: Vec<OsString>,
        /// The frame size the program delivers exactly (`rpicam`); `None` when the camera
        /// may deliver another size (a V4L2 driver rounds to a size the camera has).
        known_size: Option<(u32, u32)>,
    },
    /// An MJPEG-over-HTTP camera.
    Http {
        /// Where.
        url: CameraUrl,
        /// Basic auth user (overrides the URL's).
        user: Option<String>,
        /// Basic auth password.
        password: Option<String>,
    },
    /// An MJPEG file or folder of JPEGs.
    File {
        /// File or folder.
        path: PathBuf,
        /// Replay for ever.
        looping: bool,
    },
    /// The synthetic scene.
    Synthetic {
        /// Its script.
        script: Box<Script>,
        /// The size it renders.
        size: (u32, u32),
    },
    /// No source configured: look for a camera before each attempt ([`SourceSpec::detect`]),
    /// and while there is none, fail loudly and keep looking. Never the synthetic scene.
    Auto {
        /// Where to look.
        probe: Probe,
    },
}

/// No source configured and no camera found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no camera found: no {program} on PATH and no camera among {dev}/video* \
     (check the camera's cable or USB connection, `rpicam-hello --list-cameras` or \
     `v4l2-ctl --list-devices`, and that the service user is in the video group; \
     or set [capture] source); still looking"
)]
pub struct NoCamera {
    /// The rpicam program looked for.
    pub program: String,
    /// The device directory looked in.
    pub dev: String,
}

impl SourceSpec {
    /// Turns the configuration into a source: the configured one, or with none configured
    /// [`SourceSpec::Auto`], which looks for a camera on this machine ([`Probe::system`])
    /// before each attempt.
    ///
    /// # Errors
    /// A scene script that cannot be read, a bad URL.
    pub fn resolve(cfg: &CaptureConfig) -> anyhow::Result<SourceSpec> {
        SourceSpec::resolve_in(cfg, &Probe::system())
    }

    /// [`SourceSpec::resolve`], looking for programs and devices where `probe` says.
    ///
    /// # Errors
    /// As [`SourceSpec::resolve`].
    pub fn resolve_in(cfg: &CaptureConfig, probe: &Probe) -> anyhow::Result<SourceSpec> {
        Ok(match cfg.source {
            None => SourceSpec::Auto {
                probe: probe.clone(),
            },
            Some(SourceKind::Rpicam) => rpicam(cfg, probe),
            Some(SourceKind::V4l2) => v4l2(cfg, probe),
            Some(SourceKind::Command) => SourceSpec::Process {
                label: format!(
                    "command:{}",
                    cfg.command.first().map(String::as_str).unwrap_or("")
                ),
                argv: cfg.command.iter().map(OsString::from).collect(),
                known_size: None,
            },
            Some(SourceKind::Http) => SourceSpec::Http {
                url: CameraUrl::parse(cfg.url.as_deref().unwrap_or(""))?,
                user: cfg.username.clone(),
                password: cfg.password.clone(),
            },
            Some(SourceKind::File) => SourceSpec::File {
                path: cfg.path.clone().unwrap_or_default(),
                looping: cfg.loop_file,
            },
            Some(SourceKind::Synthetic) => SourceSpec::Synthetic {
                script: Box::new(match &cfg.scene {
                    Some(p) => Script::from_file(p)?,
                    None => Script::default_demo(),
                }),
                size: (cfg.width, cfg.height),
            },
        })
    }

    /// Looks for a camera now: `rpicam` if the program is on the probe's search path, else
    /// the lowest-numbered `/dev/video*` node that is a camera.
    ///
    /// # Errors
    /// [`NoCamera`], saying what was looked for and what to check.
    pub fn detect(cfg: &CaptureConfig, probe: &Probe) -> Result<SourceSpec, NoCamera> {
        if rpicam_program(cfg, probe).is_some() {
            Ok(rpicam(cfg, probe))
        } else if first_video_device(probe).is_some() {
            Ok(v4l2(cfg, probe))
        } else {
            let program = if cfg.rpicam_program == DEFAULT_RPICAM {
                format!("{DEFAULT_RPICAM} or libcamera-vid")
            } else {
                cfg.rpicam_program.clone()
            };
            Err(NoCamera {
                program,
                dev: probe.dev_dir.display().to_string(),
            })
        }
    }

    /// What a frame from this source may be, for [`ipc::jpeg::check`]: no larger than the
    /// size it is known to deliver (rounded up to [`KNOWN_SIZE_ALIGN`]), else the ceiling for
    /// any camera; within the decode-memory budget either way.
    pub fn frame_limits(&self) -> FrameLimits {
        let known = match self {
            SourceSpec::Process { known_size, .. } => *known_size,
            SourceSpec::Synthetic { size, .. } => Some(*size),
            SourceSpec::Http { .. } | SourceSpec::File { .. } | SourceSpec::Auto { .. } => None,
        };
        match known {
            Some((w, h)) => FrameLimits::for_camera(
                w.next_multiple_of(KNOWN_SIZE_ALIGN),
                h.next_multiple_of(KNOWN_SIZE_ALIGN),
            ),
            None => FrameLimits::default(),
        }
    }

    /// The label for logs and the hello.
    pub fn label(&self) -> String {
        match self {
            SourceSpec::Process { label, .. } => label.clone(),
            SourceSpec::Http { url, .. } => url.label(),
            SourceSpec::File { path, .. } => format!("file:{}", path.display()),
            SourceSpec::Synthetic { .. } => "synthetic".into(),
            SourceSpec::Auto { .. } => "auto".into(),
        }
    }
}
