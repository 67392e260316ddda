//! The `[capture]` configuration: TOML keys, the flags that override them, and validation in
//! one place. A bad value is refused at start with the key's name.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which camera source to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The Raspberry Pi camera through `rpicam-vid` (or `libcamera-vid`).
    Rpicam,
    /// A USB webcam's MJPEG stream through V4L2 (driven by `ffmpeg`).
    V4l2,
    /// An MJPEG-over-HTTP network camera.
    Http,
    /// Any command printing JPEG frames back to back on stdout.
    Command,
    /// An MJPEG file or a folder of JPEGs, replayed at `fps`.
    File,
    /// The scripted synthetic scene.
    Synthetic,
}

/// The `[capture]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// The source, `rpicam`, `v4l2`, `http`, `command`, `file` or `synthetic`; absent = auto:
    /// rpicam if present, else the first camera /dev/video*, looked for before each attempt;
    /// with neither, the camera is failed ("no camera found") and looked for again. Never the
    /// synthetic scene unless configured.
    pub source: Option<SourceKind>,
    /// Frame width asked of the camera.
    pub width: u32,
    /// Frame height asked of the camera.
    pub height: u32,
    /// Frames per second asked of the camera (and the replay rate of `file`/`synthetic`).
    pub fps: u32,
    /// JPEG quality asked of the camera, 1..=100.
    pub quality: u8,
    /// Image rotation for `rpicam`: 0 or 180.
    pub rotation: u32,
    /// Mirror horizontally (`rpicam`).
    pub hflip: bool,
    /// Mirror vertically (`rpicam`).
    pub vflip: bool,
    /// The `rpicam-vid` program (name on PATH or path); `libcamera-vid` is tried when the
    /// default is not found.
    pub rpicam_program: String,
    /// V4L2 device for `v4l2` (absent = the first /dev/video*).
    pub device: Option<PathBuf>,
    /// The `ffmpeg` program used to read V4L2 devices.
    pub ffmpeg_program: String,
    /// Stream URL for `http`: `http://[user:pass@]host[:port]/path` (host may be `[v6 address]`).
    pub url: Option<String>,
    /// User for HTTP basic auth (overrides one in the URL).
    pub username: Option<String>,
    /// Password for HTTP basic auth.
    pub password: Option<String>,
    /// Program and arguments for `command`.
    pub command: Vec<String>,
    /// MJPEG file or folder of JPEGs for `file`.
    pub path: Option<PathBuf>,
    /// Replay `file` for ever.
    #[serde(rename = "loop")]
    pub loop_file: bool,
    /// Scene script for `synthetic` (absent = the demo scene).
    pub scene: Option<PathBuf>,
    /// Bytes per frame slot in the region; larger frames are dropped and counted.
    pub slot_capacity: usize,
    /// No frame for this long (ms): the source is stalled and restarted.
    pub stall_timeout_ms: u64,
    /// First restart delay (ms); doubles on each quick failure.
    pub backoff_min_ms: u64,
    /// Longest restart delay (ms).
    pub backoff_max_ms: u64,
    /// Announce subscribers served at once.
    pub max_subscribers: usize,
    /// A subscriber taking nothing for this long (ms) is disconnected.
    pub subscriber_idle_timeout_ms: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            source: None,
            width: 640,
            height: 480,
            fps: 15,
            quality: 80,
            rotation: 0,
            hflip: false,
            vflip: false,
            rpicam_program: DEFAULT_RPICAM.into(),
            device: None,
            ffmpeg_program: "ffmpeg".into(),
            url: None,
            username: None,
            password: None,
            command: Vec::new(),
            path: None,
            loop_file: false,
            scene: None,
            slot_capacity: 2 * 1024 * 1024,
            stall_timeout_ms: 5000,
            backoff_min_ms: 500,
            backoff_max_ms: 30_000,
            max_subscribers: 16,
            subscriber_idle_timeout_ms: 5000,
        }
    }
}

/// The default `rpicam_program`.
pub const DEFAULT_RPICAM: &str = "rpicam-vid";
/// The smallest `slot_capacity` accepted (64 KiB): below that even a small JPEG may not fit.
pub const MIN_SLOT_CAPACITY: usize = 64 * 1024;

/// `Ok` when `ok`, else an error naming the `[capture]` key and what it must be.
fn check(ok: bool, key: &str, msg: &str) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        anyhow::bail!("[capture] {key}: {msg}")
    }
}

impl CaptureConfig {
    /// Checks every value; the error names the key and says what is accepted.
    ///
    /// # Errors
    /// The first bad key.
    pub fn validate(&self) -> anyhow::Result<()> {
        check(
            (16..=4096).contains(&self.width),
            "width",
            "must be 16..=4096",
        )?;
        check(
            (16..=4096).contains(&self.height),
            "height",
            "must be 16..=4096",
        )?;
        check((1..=120).contains(&self.fps), "fps", "must be 1..=120")?;
        check(
            (1..=100).contains(&self.quality),
            "quality",
            "must be 1..=100",
        )?;
        check(
            self.rotation == 0 || self.rotation == 180,
            "rotation",
            "must be 0 or 180",
        )?;
        check(
            (MIN_SLOT_CAPACITY..=ipc::region::MAX_SLOT_CAPACITY).contains(&self.slot_capacity),
            "slot_capacity",
            &format!(
                "must be {MIN_SLOT_CAPACITY}..={} bytes",
                ipc::region::MAX_SLOT_CAPACITY
            ),
        )?;
        check(
            self.stall_timeout_ms >= 200,
            "stall_timeout_ms",
            "must be >= 200",
        )?;
        check(self.backoff_min_ms >= 10, "backoff_min_ms", "must be >= 10")?;
        check(
            self.backoff_max_ms >= self.backoff_min_ms,
            "backoff_max_ms",
            "must be >= backoff_min_ms",
        )?;
        check(
            (1..=1024).contains(&self.max_subscribers),
            "max_subscribers",
            "must be 1..=1024",
        )?;
        check(
            self.subscriber_idle_timeout_ms >= 100,
            "subscriber_idle_timeout_ms",
            "must be >= 100",
        )?;
        self.check_source_keys()
    }

    /// The key the configured source needs: `url`, `command` or `path`.
    fn check_source_keys(&self) -> anyhow::Result<()> {
        match self.source {
            Some(SourceKind::Http) => {
                let url = self.url.as_deref().unwrap_or("");
                check(
                    crate::http::CameraUrl::parse(url).is_ok(),
                    "url",
                    "source = \"http\" needs url = \"http://host[:port]/path\"",
                )?;
            }
            Some(SourceKind::Command) => check(
                !self.command.is_empty(),
                "command",
                "source = \"command\" needs command = [\"program\", \"arg\", ...]",
            )?,
            Some(SourceKind::File) => check(
                self.path.is_some(),
                "path",
                "source = \"file\" needs path = an MJPEG file or a folder of JPEGs",
            )?,
            _ => {}
        }
        Ok(())
    }

    /// The stall timeout.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        CaptureConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: [(&str, CaptureConfig); 4] = [
            (
                "fps",
                CaptureConfig {
                    fps: 0,
                    ..Default::default()
                },
            ),
            (
                "rotation",
                CaptureConfig {
                    rotation: 90,
                    ..Default::default()
                },
            ),
            (
                "url",
                CaptureConfig {
                    source: Some(SourceKind::Http),
                    url: Some("ftp://x".into()),
                    ..Default::default()
                },
            ),
            (
                "command",
                CaptureConfig {
                    source: Some(SourceKind::Command),
                    ..Default::default()
                },
            ),
        ];
        for (key, c) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn slot_capacity_bounds_are_refused_with_the_numbers() {
        let max = ipc::region::MAX_SLOT_CAPACITY;
        for bad in [MIN_SLOT_CAPACITY - 1, max + 1] {
            let c = CaptureConfig {
                slot_capacity: bad,
                ..Default::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains("slot_capacity") && e.contains(&format!("65536..={max} bytes")),
                "{e}"
            );
        }
        for good in [MIN_SLOT_CAPACITY, max] {
            let c = CaptureConfig {
                slot_capacity: good,
                ..Default::default()
            };
            c.validate().unwrap();
        }
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = ipc::service::parse_section::<CaptureConfig>("[capture]\nwidht = 3\n", "capture")
            .unwrap_err();
        assert!(format!("{e:#}").contains("widht"), "{e:#}");
    }
}
