//! Camera sources: which one runs (including the automatic choice), how each is opened, and
//! the byte stream it yields. Process sources (`rpicam`, `v4l2`, `command`) run under
//! [`crate::supervise`]; `http` is a TCP stream; `file` reads a file or a folder; `synthetic`
//! renders frames itself (see [`crate::capture`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt as _;

use ipc::jpeg::FrameLimits;

use crate::config::{CaptureConfig, DEFAULT_RPICAM, SourceKind};
use crate::http::CameraUrl;
use crate::supervise::find_program_in;
use crate::synthetic::Script;

/// Most JPEG files a folder source replays (their names are held in memory).
pub const MAX_FOLDER_FILES: usize = 100_000;
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

/// The `rpicam` source.
fn rpicam(cfg: &CaptureConfig, probe: &Probe) -> SourceSpec {
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
fn v4l2(cfg: &CaptureConfig, probe: &Probe) -> SourceSpec {
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
fn rpicam_program(cfg: &CaptureConfig, probe: &Probe) -> Option<PathBuf> {
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
fn first_video_device(probe: &Probe) -> Option<PathBuf> {
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

/// A file or the files of a folder, read as one byte stream.
#[derive(Debug)]
pub struct FileInput {
    files: Vec<PathBuf>,
    next: usize,
    current: Option<tokio::fs::File>,
}

impl FileInput {
    /// Opens an MJPEG file, or lists the `*.jpg`/`*.jpeg` files of a folder in name order.
    ///
    /// # Errors
    /// Nothing to read, more than [`MAX_FOLDER_FILES`], or I/O errors.
    pub fn open(path: &Path) -> std::io::Result<FileInput> {
        let files = if path.is_dir() {
            let mut files = Vec::new();
            for e in std::fs::read_dir(path)? {
                let p = e?.path();
                let ext = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                if matches!(ext.as_deref(), Some("jpg" | "jpeg")) {
                    if files.len() == MAX_FOLDER_FILES {
                        return Err(std::io::Error::other(format!(
                            "{} holds more than {MAX_FOLDER_FILES} JPEGs",
                            path.display()
                        )));
                    }
                    files.push(p);
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{} holds no .jpg/.jpeg files",
                    path.display()
                )));
            }
            files
        } else {
            std::fs::metadata(path)?;
            vec![path.to_owned()]
        };
        Ok(FileInput {
            files,
            next: 0,
            current: None,
        })
    }

    /// Reads the next bytes; 0 at the end of the last file.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(f) = &mut self.current {
                let n = f.read(buf).await?;
                if n > 0 {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some(p) = self.files.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.current = Some(tokio::fs::File::open(p).await?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe over a test's own dirs: `bin` (the search path), `dev`, `sys`.
    fn probe(dir: &Path) -> Probe {
        for d in ["bin", "dev", "sys"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        Probe {
            search_path: Some(dir.join("bin").into_os_string()),
            dev_dir: dir.join("dev"),
            sysfs_dir: dir.join("sys"),
        }
    }

    /// A `videoN` node with its sysfs name.
    fn node(p: &Probe, n: u32, name: &str) {
        std::fs::write(p.dev_dir.join(format!("video{n}")), "").unwrap();
        let sys = p.sysfs_dir.join(format!("video{n}"));
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("name"), format!("{name}\n")).unwrap();
    }

    fn auto() -> CaptureConfig {
        CaptureConfig::default()
    }

    #[test]
    fn auto_falls_back_to_libcamera_vid_when_rpicam_vid_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(dir.path());
        node(&p, 0, "USB Camera");
        let fake = dir.path().join("bin/libcamera-vid");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        let spec = SourceSpec::detect(&auto(), &p).unwrap();
        let SourceSpec::Process { label, argv, .. } = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(label, "rpicam");
        assert_eq!(argv[0], fake.as_os_str());
        // rpicam-vid itself wins when both exist.
        std::fs::write(dir.path().join("bin/rpicam-vid"), "#!/bin/sh\n").unwrap();
        let SourceSpec::Process { argv, .. } = SourceSpec::detect(&auto(), &p).unwrap() else {
            panic!()
        };
        assert_eq!(argv[0], dir.path().join("bin/rpicam-vid").as_os_str());
    }

    #[test]
    fn a_named_rpicam_program_gets_no_libcamera_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(dir.path());
        std::fs::write(dir.path().join("bin/libcamera-vid"), "").unwrap();
        let cfg = CaptureConfig {
            rpicam_program: "my-rpicam".into(),
            ..auto()
        };
        let e = SourceSpec::detect(&cfg, &p).unwrap_err();
        assert!(e.to_string().contains("no my-rpicam on PATH"), "{e}");
    }

    #[test]
    fn auto_picks_the_lowest_numbered_camera_node_skipping_codecs_and_isps() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(dir.path());
        // A Pi: codec, ISP and HEVC nodes around a USB webcam's capture (video10) and
        // metadata (video11) nodes.
        node(&p, 0, "bcm2835-codec-decode");
        node(&p, 1, "bcm2835-codec-encode");
        node(&p, 12, "bcm2835-isp");
        node(&p, 13, "bcm2835-codec-isp");
        node(&p, 18, "rpivid");
        node(&p, 11, "HD Pro Webcam C920");
        node(&p, 10, "HD Pro Webcam C920");
        std::fs::write(p.dev_dir.join("video-not-a-number"), "").unwrap();
        std::fs::write(p.dev_dir.join("vchiq"), "").unwrap();
        let spec = SourceSpec::detect(&auto(), &p).unwrap();
        assert_eq!(
            spec.label(),
            format!("v4l2:{}", p.dev_dir.join("video10").display())
        );
        // Numeric, not text order: video2 before video10.
        node(&p, 2, "USB Camera");
        let spec = SourceSpec::detect(&auto(), &p).unwrap();
        assert_eq!(
            spec.label(),
            format!("v4l2:{}", p.dev_dir.join("video2").display())
        );
        // v4l2 without a device uses the same pick.
        let cfg = CaptureConfig {
            source: Some(SourceKind::V4l2),
            ..auto()
        };
        let SourceSpec::Process { argv, .. } = SourceSpec::resolve_in(&cfg, &p).unwrap() else {
            panic!()
        };
        assert!(
            argv.contains(&p.dev_dir.join("video2").into_os_string()),
            "{argv:?}"
        );
    }

    #[test]
    fn with_no_program_and_only_codec_nodes_no_camera_is_found_never_the_synthetic_scene() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(dir.path());
        // Nothing configured: look at every attempt, never pick a source once for good.
        assert!(matches!(
            SourceSpec::resolve_in(&auto(), &p).unwrap(),
            SourceSpec::Auto { .. }
        ));
        let e = SourceSpec::detect(&auto(), &p).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("no camera found"), "{text}");
        assert!(
            text.contains("rpicam-vid or libcamera-vid")
                && text.contains(&format!("{}/video*", p.dev_dir.display()))
                && text.contains("[capture] source"),
            "says what was looked for and what to do: {text}"
        );
        node(&p, 10, "bcm2835-codec-decode");
        node(&p, 31, "bcm2835-isp");
        assert!(SourceSpec::detect(&auto(), &p).is_err());
        // A USB camera plugged in later is found on the next look.
        node(&p, 0, "USB Camera");
        let spec = SourceSpec::detect(&auto(), &p).unwrap();
        assert_eq!(
            spec.label(),
            format!("v4l2:{}", p.dev_dir.join("video0").display())
        );
    }

    #[test]
    fn frame_limits_follow_the_size_the_source_is_known_to_deliver() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(dir.path());
        let cfg = |source| CaptureConfig {
            source: Some(source),
            width: 1366,
            height: 768,
            command: vec!["cat".into()],
            ..auto()
        };
        // rpicam and synthetic deliver the configured size (libcamera may align it).
        for kind in [SourceKind::Rpicam, SourceKind::Synthetic] {
            let l = SourceSpec::resolve_in(&cfg(kind), &p)
                .unwrap()
                .frame_limits();
            assert_eq!((l.max_width, l.max_height), (1408, 768), "{kind:?}");
        }
        // A V4L2 driver may round to another size; a command or a file is anything.
        for kind in [SourceKind::V4l2, SourceKind::Command] {
            let l = SourceSpec::resolve_in(&cfg(kind), &p)
                .unwrap()
                .frame_limits();
            assert_eq!(l, ipc::jpeg::FrameLimits::default(), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn a_folder_of_jpegs_is_read_in_name_order_skipping_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = |w, h| {
            let mut scene = crate::synthetic::Scene::new(Script::default(), w, h);
            let mut out = Vec::new();
            scene.render_jpeg(std::time::Duration::ZERO, &mut out);
            out
        };
        std::fs::write(dir.path().join("b.jpg"), jpeg(64, 48)).unwrap();
        std::fs::write(dir.path().join("a.jpeg"), jpeg(32, 24)).unwrap();
        std::fs::write(dir.path().join("c.JPG"), jpeg(96, 64)).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a frame").unwrap();
        let mut input = FileInput::open(dir.path()).unwrap();
        let mut splitter = crate::splitter::Splitter::new(1 << 20);
        loop {
            let n = input.read(splitter.spare()).await.unwrap();
            if n == 0 {
                break;
            }
            splitter.commit(n);
        }
        let mut sizes = Vec::new();
        while let Some(frame) = splitter.next_frame() {
            let h = ipc::jpeg::inspect(frame).unwrap();
            sizes.push((h.width, h.height));
        }
        assert_eq!(sizes, [(32, 24), (64, 48), (96, 64)]);
        assert_eq!(splitter.stats().garbage_bytes, 0, "notes.txt not read");
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("x.png"), "").unwrap();
        let err = FileInput::open(empty.path()).unwrap_err();
        assert!(err.to_string().contains("no .jpg/.jpeg"), "{err}");
    }

    #[test]
    fn rpicam_arguments_follow_the_config() {
        let cfg = CaptureConfig {
            source: Some(SourceKind::Rpicam),
            rpicam_program: "/nonexistent/rpicam-vid".into(),
            rotation: 180,
            hflip: true,
            ..Default::default()
        };
        let SourceSpec::Process { argv, .. } = SourceSpec::resolve(&cfg).unwrap() else {
            panic!("process expected")
        };
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = argv.join(" ");
        assert!(
            line.contains("-t 0 --codec mjpeg -o - --nopreview"),
            "{line}"
        );
        assert!(
            line.contains("--width 640 --height 480 --framerate 15 --quality 80"),
            "{line}"
        );
        assert!(line.contains("--rotation 180 --hflip"), "{line}");
        assert!(!line.contains("--vflip"), "{line}");
    }
}
