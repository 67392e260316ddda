//! Camera sources: which one runs (including the automatic choice), how each is opened, and
//! the byte stream it yields. Process sources (`rpicam`, `v4l2`, `command`) run under
//! [`crate::supervise`]; `http` is a TCP stream; `file` reads a file or a folder; `synthetic`
//! renders frames itself (see [`crate::capture`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt as _;

use crate::config::{CaptureConfig, DEFAULT_RPICAM, SourceKind};
use crate::http::Url;
use crate::supervise::find_program;
use crate::synthetic::Script;

/// Most JPEG files a folder source replays (their names are held in memory).
pub const MAX_FOLDER_FILES: usize = 100_000;

/// A resolved source, ready to open.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A long-running program writing JPEGs to stdout.
    Process {
        /// Label for logs and the hello (`rpicam`, `v4l2:/dev/video0`, `command:ffmpeg`).
        label: String,
        /// Program and arguments.
        argv: Vec<OsString>,
    },
    /// An MJPEG-over-HTTP camera.
    Http {
        /// Where.
        url: Url,
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
    },
}

impl SourceSpec {
    /// Turns the configuration into a source; with no source configured, picks `rpicam` if
    /// the program exists, else the first `/dev/video*`, else `synthetic` (with a warning).
    ///
    /// # Errors
    /// A scene script that cannot be read, a bad URL.
    pub fn resolve(cfg: &CaptureConfig) -> anyhow::Result<SourceSpec> {
        let kind = match cfg.source {
            Some(k) => k,
            None => {
                if rpicam_program(cfg).is_some() {
                    tracing::info!("no source configured: using rpicam (found on PATH)");
                    SourceKind::Rpicam
                } else if first_video_device().is_some() {
                    tracing::info!("no source configured: using the first /dev/video* device");
                    SourceKind::V4l2
                } else {
                    tracing::warn!(
                        "no source configured and no camera found (no rpicam-vid/libcamera-vid on PATH, no /dev/video*): \
                         running the SYNTHETIC demo scene; set [capture] source to use a real camera"
                    );
                    SourceKind::Synthetic
                }
            }
        };
        Ok(match kind {
            SourceKind::Rpicam => {
                let program =
                    rpicam_program(cfg).unwrap_or_else(|| cfg.rpicam_program.clone().into());
                let mut argv: Vec<OsString> = vec![program.into()];
                let s = |v: &mut Vec<OsString>, x: String| v.push(x.into());
                for a in ["-t", "0", "--codec", "mjpeg", "-o", "-", "--nopreview"] {
                    s(&mut argv, a.into());
                }
                s(&mut argv, "--width".into());
                s(&mut argv, cfg.width.to_string());
                s(&mut argv, "--height".into());
                s(&mut argv, cfg.height.to_string());
                s(&mut argv, "--framerate".into());
                s(&mut argv, cfg.fps.to_string());
                s(&mut argv, "--quality".into());
                s(&mut argv, cfg.quality.to_string());
                if cfg.rotation != 0 {
                    s(&mut argv, "--rotation".into());
                    s(&mut argv, cfg.rotation.to_string());
                }
                if cfg.hflip {
                    s(&mut argv, "--hflip".into());
                }
                if cfg.vflip {
                    s(&mut argv, "--vflip".into());
                }
                SourceSpec::Process {
                    label: "rpicam".into(),
                    argv,
                }
            }
            SourceKind::V4l2 => {
                // ffmpeg copies the camera's own MJPEG (no re-encode) to stdout; see README
                // for why this is not an in-process V4L2 crate.
                let dev = cfg
                    .device
                    .clone()
                    .or_else(first_video_device)
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
                }
            }
            SourceKind::Command => SourceSpec::Process {
                label: format!(
                    "command:{}",
                    cfg.command.first().map(String::as_str).unwrap_or("")
                ),
                argv: cfg.command.iter().map(OsString::from).collect(),
            },
            SourceKind::Http => SourceSpec::Http {
                url: Url::parse(cfg.url.as_deref().unwrap_or(""))?,
                user: cfg.username.clone(),
                password: cfg.password.clone(),
            },
            SourceKind::File => SourceSpec::File {
                path: cfg.path.clone().unwrap_or_default(),
                looping: cfg.loop_file,
            },
            SourceKind::Synthetic => SourceSpec::Synthetic {
                script: Box::new(match &cfg.scene {
                    Some(p) => Script::from_file(p)?,
                    None => Script::default_demo(),
                }),
            },
        })
    }

    /// The label for logs and the hello.
    pub fn label(&self) -> String {
        match self {
            SourceSpec::Process { label, .. } => label.clone(),
            SourceSpec::Http { url, .. } => format!("http:{}:{}{}", url.host, url.port, url.path),
            SourceSpec::File { path, .. } => format!("file:{}", path.display()),
            SourceSpec::Synthetic { .. } => "synthetic".into(),
        }
    }
}

/// The rpicam program to run: the configured one if found, else `libcamera-vid` when the
/// default was asked for.
fn rpicam_program(cfg: &CaptureConfig) -> Option<PathBuf> {
    find_program(&cfg.rpicam_program).or_else(|| {
        (cfg.rpicam_program == DEFAULT_RPICAM)
            .then(|| find_program("libcamera-vid"))
            .flatten()
    })
}

/// The first `/dev/video*` by name.
fn first_video_device() -> Option<PathBuf> {
    let mut devs: Vec<PathBuf> = std::fs::read_dir("/dev")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("video"))
        })
        .collect();
    devs.sort();
    devs.into_iter().next()
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

/// Width and height from a JPEG's SOF segment, walking the headers only.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return None;
        }
        let m = jpeg[i + 1];
        if m == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
            let s = jpeg.get(i + 5..i + 9)?;
            let h = u32::from(u16::from_be_bytes([s[0], s[1]]));
            let w = u32::from(u16::from_be_bytes([s[2], s[3]]));
            return Some((w, h));
        }
        if m == 0xDA {
            return None;
        }
        i += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_from_a_real_jpeg() {
        let mut scene = crate::synthetic::Scene::new(Script::default(), 200, 120);
        let mut out = Vec::new();
        scene.render_jpeg(std::time::Duration::ZERO, &mut out);
        assert_eq!(jpeg_size(&out), Some((200, 120)));
        assert_eq!(jpeg_size(&out[..20]), None);
        assert_eq!(jpeg_size(b"\xFF\xD8garbage"), None);
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
