//! "Save as MP4": an event's `clip.avi` turned into H.264 in MP4 (which phones play and
//! share) by `ffmpeg`, on demand, in the background, one job at a time.
//!
//! The job runs ffmpeg in its own process group, reads its `-progress` output (frames done, of
//! the clip's frames), writes `clip.mp4.part` in the event folder and renames it to `clip.mp4`
//! when ffmpeg succeeds; the file then stays as a cache beside the clip and goes with the
//! folder (the events crate's retention and delete remove the folder whole). The encoder is
//! the Pi's hardware one (`h264_v4l2m2m`) when ffmpeg has it and the kernel shows a V4L2
//! memory-to-memory encoder, with `libx264 -preset ultrafast` as the fallback (also when the
//! hardware one fails). Output: `yuv420p`, `+faststart`, no audio. A job is killed (its whole
//! process group) on shutdown, when its event is deleted, and after [`EXPORT_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::events::{CLIP, CLIP_MP4, CLIP_MP4_PART};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// MP4 jobs running at once: encoding takes a core of a Pi Zero 2 W for about as long as the
/// clip lasts, so a second request waits (`409`) instead of sharing it.
pub const MAX_EXPORT_JOBS: usize = 1;
/// A job still running after this long is killed (a clip is at most an hour; ultrafast x264
/// on a Pi Zero 2 W does a 640x480 clip at several times real time).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest line of ffmpeg's `-progress` output read (real ones are under 40 bytes).
const MAX_PROGRESS_LINE: u64 = 1024;
/// The end of ffmpeg's error output kept for the message of a failed job.
const STDERR_TAIL: usize = 600;
/// How long deleting an event waits for its job to be killed and gone.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Runs ffmpeg at a lower priority than the camera and detection (coreutils; ffmpeg runs as
/// it is when it is missing).
const NICE: &str = "/usr/bin/nice";

/// The hardware encoder of the Raspberry Pi's kernel (V4L2 memory-to-memory).
pub const HW_ENCODER: &str = "h264_v4l2m2m";
/// The software encoder.
pub const SW_ENCODER: &str = "libx264";

/// What is known of an event's MP4, as `GET /events/<id>/mp4` says it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mp4Status {
    /// `none` (not made), `running`, `done`, `failed`, `busy` (another event's is being
    /// made) or `unavailable` (no ffmpeg).
    pub state: &'static str,
    /// Share of the frames encoded, 0 to 1 (1 when done).
    pub progress: f64,
    /// The encoder of the running or last job.
    pub encoder: Option<&'static str>,
    /// Size of `clip.mp4` when done.
    pub bytes: Option<u64>,
    /// What to tell the user (why it failed, whose MP4 is being made, how to install ffmpeg).
    pub message: Option<String>,
}

impl Mp4Status {
    fn new(state: &'static str) -> Mp4Status {
        Mp4Status {
            state,
            progress: 0.0,
            encoder: None,
            bytes: None,
            message: None,
        }
    }
}

/// Why a job was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another job is running ([`MAX_EXPORT_JOBS`]).
    #[error(
        "busy: the MP4 of event {id} is being made ({pct} % done); one is made at a time, so try again when it is finished"
    )]
    Busy {
        /// The event whose job runs.
        id: String,
        /// Its progress in percent.
        pct: u32,
    },
    /// ffmpeg is not installed.
    #[error("{NO_FFMPEG}")]
    NoFfmpeg,
}

/// Said when there is no `ffmpeg` on the `PATH`.
pub const NO_FFMPEG: &str = "MP4 export needs ffmpeg, which is not installed on the camera: install it (sudo apt install ffmpeg) and try again; the AVI download works without it";

/// The job running now, if any.
#[derive(Debug)]
struct Running {
    id: String,
    frames_done: Arc<AtomicU64>,
    total: u64,
    encoder: Arc<Mutex<&'static str>>,
    cancel: CancellationToken,
}

impl Running {
    /// Relaxed loads and stores of `frames_done` throughout: a figure to show, through which
    /// nothing else is published.
    fn progress(&self) -> f64 {
        let done = self.frames_done.load(Ordering::Relaxed);
        (done as f64 / self.total.max(1) as f64).min(1.0)
    }
}

#[derive(Debug, Default)]
struct Jobs {
    running: Option<Running>,
    /// The last job that failed: its event and why (one kept; a success leaves `clip.mp4`).
    failed: Option<(String, String, &'static str)>,
}

/// The MP4 jobs of the service: at most [`MAX_EXPORT_JOBS`] running, the last failure kept.
#[derive(Debug)]
pub struct Exporter {
    jobs: Mutex<Jobs>,
    tasks: TaskTracker,
}

impl Default for Exporter {
    fn default() -> Self {
        Exporter {
            jobs: Mutex::new(Jobs::default()),
            tasks: TaskTracker::new(),
        }
    }
}

/// The `ffmpeg` on the `PATH`, if there is one.
pub fn find_ffmpeg() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("ffmpeg"))
        .find(|p| p.is_file())
}

impl Exporter {
    /// The state of the MP4 of the event in `folder`.
    pub fn status(&self, id: &str, folder: &Path) -> Mp4Status {
        let jobs = self.jobs.lock().expect("mp4 jobs lock");
        if let Some(r) = jobs.running.as_ref().filter(|r| r.id == id) {
            return Mp4Status {
                progress: r.progress(),
                encoder: Some(*r.encoder.lock().expect("encoder lock")),
                ..Mp4Status::new("running")
            };
        }
        if let Some(bytes) = mp4_size(folder) {
            return Mp4Status {
                progress: 1.0,
                bytes: Some(bytes),
                ..Mp4Status::new("done")
            };
        }
        if find_ffmpeg().is_none() {
            return Mp4Status {
                message: Some(NO_FFMPEG.into()),
                ..Mp4Status::new("unavailable")
            };
        }
        if let Some(r) = &jobs.running {
            return Mp4Status {
                message: Some(
                    StartError::Busy {
                        id: r.id.clone(),
                        pct: (r.progress() * 100.0) as u32,
                    }
                    .to_string(),
                ),
                ..Mp4Status::new("busy")
            };
        }
        match &jobs.failed {
            Some((fid, why, enc)) if fid == id => Mp4Status {
                message: Some(why.clone()),
                encoder: Some(enc),
                ..Mp4Status::new("failed")
            },
            _ => Mp4Status::new("none"),
        }
    }

    /// Starts making the MP4 of the event `id` in `folder`, whose clip has `frames` frames;
    /// a job already running for it, or an MP4 already made, is not started again.
    ///
    /// # Errors
    /// Another event's job runs ([`StartError::Busy`]), or ffmpeg is missing.
    pub fn start(
        self: &Arc<Self>,
        id: &str,
        folder: &Path,
        frames: u64,
        shutdown: &CancellationToken,
    ) -> Result<Mp4Status, StartError> {
        let ffmpeg = find_ffmpeg().ok_or(StartError::NoFfmpeg)?;
        {
            let mut jobs = self.jobs.lock().expect("mp4 jobs lock");
            match &jobs.running {
                Some(r) if r.id == id => {}
                Some(r) => {
                    return Err(StartError::Busy {
                        id: r.id.clone(),
                        pct: (r.progress() * 100.0) as u32,
                    });
                }
                None if mp4_size(folder).is_some() => {}
                None => {
                    let running = Running {
                        id: id.to_owned(),
                        frames_done: Arc::new(AtomicU64::new(0)),
                        total: frames,
                        encoder: Arc::new(Mutex::new(SW_ENCODER)),
                        cancel: shutdown.child_token(),
                    };
                    let job = Job {
                        ffmpeg,
                        folder: folder.to_owned(),
                        frames_done: running.frames_done.clone(),
                        encoder: running.encoder.clone(),
                        cancel: running.cancel.clone(),
                    };
                    jobs.failed = None;
                    jobs.running = Some(running);
                    let me = self.clone();
                    let id = id.to_owned();
                    self.tasks.spawn(async move {
                        let encoder = job.encoder.clone();
                        let result = job.run().await;
                        let enc = *encoder.lock().expect("encoder lock");
                        let mut jobs = me.jobs.lock().expect("mp4 jobs lock");
                        jobs.running = None;
                        match result {
                            Ok(bytes) => {
                                tracing::info!(event = %id, bytes, encoder = enc, "MP4 made")
                            }
                            Err(why) => {
                                tracing::warn!(event = %id, encoder = enc, "MP4 not made: {why}");
                                jobs.failed = Some((id, why, enc));
                            }
                        }
                    });
                }
            }
        }
        Ok(self.status(id, folder))
    }

    /// Kills the job of event `id`, if one runs, and waits (bounded) until it is gone, so
    /// that its folder can be deleted.
    pub async fn cancel(&self, id: &str) {
        let token = {
            let jobs = self.jobs.lock().expect("mp4 jobs lock");
            match jobs.running.as_ref().filter(|r| r.id == id) {
                Some(r) => r.cancel.clone(),
                None => return,
            }
        };
        token.cancel();
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        while tokio::time::Instant::now() < deadline {
            if self
                .jobs
                .lock()
                .expect("mp4 jobs lock")
                .running
                .as_ref()
                .is_none_or(|r| r.id != id)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every job has ended (they end on shutdown: their token is a child of it).
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The size of `clip.mp4` in `folder` when it is a regular file (never following a link).
fn mp4_size(folder: &Path) -> Option<u64> {
    std::fs::symlink_metadata(folder.join(CLIP_MP4))
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
}

/// Where the kernel lists its video devices, and where their nodes are.
const V4L2_SYSFS: &str = "/sys/class/video4linux";
const DEV: &str = "/dev";

/// Whether the kernel shows a V4L2 memory-to-memory encoder in `sysfs` with its node in `dev`
/// (the Pi's is `bcm2835-codec-encode`, `/dev/video11`).
fn kernel_has_m2m_encoder(sysfs: &Path, dev: &Path) -> bool {
    std::fs::read_dir(sysfs).is_ok_and(|rd| {
        rd.flatten().take(64).any(|e| {
            std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.contains("encode"))
                && dev.join(e.file_name()).exists()
        })
    })
}

/// The encoders to try, best first: the hardware one when the kernel has an encoder and
/// ffmpeg's list (`-encoders`, text `listed` gives) names it, then the software one.
fn choose_encoders(kernel_has_one: bool, listed: Option<&str>) -> Vec<&'static str> {
    let mut list = Vec::with_capacity(2);
    if kernel_has_one && listed.is_some_and(|l| l.contains(HW_ENCODER)) {
        list.push(HW_ENCODER);
    }
    list.push(SW_ENCODER);
    list
}

/// The encoders to try with `ffmpeg` on this machine, best first.
async fn encoders(ffmpeg: &Path) -> Vec<&'static str> {
    if !kernel_has_m2m_encoder(Path::new(V4L2_SYSFS), Path::new(DEV)) {
        return choose_encoders(false, None);
    }
    let out = tokio::process::Command::new(ffmpeg)
        .args(["-hide_banner", "-encoders"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let listed = match tokio::time::timeout(Duration::from_secs(10), out).await {
        Ok(Ok(out)) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        _ => None,
    };
    choose_encoders(true, listed.as_deref())
}

/// ffmpeg's arguments for `encoder` from `input` to `output`, progress on stdout.
pub fn ffmpeg_args(encoder: &str, input: &Path, output: &Path) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-progress",
        "pipe:1",
        "-y",
        "-i",
    ]
    .iter()
    .map(Into::into)
    .collect();
    a.push(input.into());
    let codec: &[&str] = if encoder == HW_ENCODER {
        &["-c:v", HW_ENCODER, "-b:v", "4M"]
    } else {
        // One thread: 31 MiB of its own at 1280x720 against 37 with two, so the job fits
        // web-svc's unit (`MemoryMax=64M`) beside the service; the Pi's other cores stay
        // with capture and detection.
        &["-c:v", SW_ENCODER, "-preset", "ultrafast", "-threads", "1"]
    };
    a.extend(codec.iter().map(Into::into));
    a.extend(
        [
            "-an",
            // Even dimensions, as yuv420p needs; the camera's are already.
            "-vf",
            "scale=trunc(iw/2)*2:trunc(ih/2)*2",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ]
        .iter()
        .map(Into::into),
    );
    a.push(output.into());
    a
}

/// One job: its inputs and what it reports.
struct Job {
    ffmpeg: PathBuf,
    folder: PathBuf,
    frames_done: Arc<AtomicU64>,
    encoder: Arc<Mutex<&'static str>>,
    cancel: CancellationToken,
}

impl Job {
    /// Makes `clip.mp4`, trying each encoder in turn; its size, or why it failed.
    async fn run(self) -> Result<u64, String> {
        let part = self.folder.join(CLIP_MP4_PART);
        let mut why = String::new();
        for enc in encoders(&self.ffmpeg).await {
            *self.encoder.lock().expect("encoder lock") = enc;
            self.frames_done.store(0, Ordering::Relaxed);
            // remove_file takes a symlink away, never its target.
            let _ = std::fs::remove_file(&part);
            match self.encode(enc, &part).await {
                Ok(()) => {
                    let dest = self.folder.join(CLIP_MP4);
                    std::fs::rename(&part, &dest)
                        .map_err(|e| format!("cannot rename {}: {e}", part.display()))?;
                    return mp4_size(&self.folder).ok_or_else(|| "clip.mp4 vanished".into());
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    if self.cancel.is_cancelled() {
                        return Err(e);
                    }
                    why = e;
                }
            }
        }
        Err(why)
    }

    /// Runs ffmpeg once with `enc`.
    async fn encode(&self, enc: &'static str, part: &Path) -> Result<(), String> {
        // Below capture and detection: `nice` execs ffmpeg, so the group and pid stay its.
        let mut cmd = if Path::new(NICE).is_file() {
            let mut c = tokio::process::Command::new(NICE);
            c.args(["-n", "10"]).arg(&self.ffmpeg);
            c
        } else {
            tokio::process::Command::new(&self.ffmpeg)
        };
        let mut child = cmd
            .args(ffmpeg_args(enc, &self.folder.join(CLIP), part))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.ffmpeg.display()))?;
        let pgid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let progress = read_progress(stdout, &self.frames_done);
        let tail = read_tail(stderr);
        let ended = async {
            let (status, (), tail) = tokio::join!(child.wait(), progress, tail);
            (status, tail)
        };
        let outcome = tokio::select! {
            r = ended => Some(r),
            () = self.cancel.cancelled() => None,
            () = tokio::time::sleep(EXPORT_TIMEOUT) => None,
        };
        let Some((status, tail)) = outcome else {
            if let Some(pg) = pgid {
                let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
            }
            // `child` is dropped here (kill_on_drop reaps it); the group is already killed.
            return Err(if self.cancel.is_cancelled() {
                "stopped (the service is stopping or the event was deleted)".into()
            } else {
                format!(
                    "ffmpeg ({enc}) took longer than {} minutes and was stopped",
                    EXPORT_TIMEOUT.as_secs() / 60
                )
            });
        };
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!(
                "ffmpeg ({enc}) failed ({s}): {}",
                tail.trim().lines().last().unwrap_or("no message")
            )),
            Err(e) => Err(format!("ffmpeg ({enc}): {e}")),
        }
    }
}

/// Follows ffmpeg's `-progress` lines (`frame=N`) into `done`, each line bounded.
async fn read_progress(out: impl AsyncRead + Unpin, done: &AtomicU64) {
    let mut r = BufReader::new(out);
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        match (&mut r)
            .take(MAX_PROGRESS_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(n) = line
            .strip_prefix(b"frame=")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok())
        {
            done.store(n, Ordering::Relaxed);
        }
    }
}

/// The last [`STDERR_TAIL`] bytes of ffmpeg's error output.
async fn read_tail(mut err: impl AsyncRead + Unpin) -> String {
    let mut tail = Vec::with_capacity(2 * STDERR_TAIL);
    let mut buf = [0u8; 512];
    while let Ok(n) = err.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_lines_are_read_and_a_hostile_one_is_bounded() {
        let done = AtomicU64::new(0);
        let mut text = b"fps=3\nframe=7\nprogress=continue\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 10 * MAX_PROGRESS_LINE as usize));
        text.extend_from_slice(b"\nframe=12\n");
        read_progress(&text[..], &done).await;
        assert_eq!(done.load(Ordering::Relaxed), 12);
        let tail = read_tail(&vec![b'e'; 5000][..]).await;
        assert_eq!(tail.len(), STDERR_TAIL);
    }

    #[test]
    fn the_pi_hardware_encoder_is_used_only_when_the_kernel_and_ffmpeg_both_have_it() {
        let d = tempfile::tempdir().unwrap();
        let (sys, dev) = (d.path().join("sys"), d.path().join("dev"));
        std::fs::create_dir_all(sys.join("video0")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(sys.join("video0/name"), "unicam-image\n").unwrap();
        std::fs::write(dev.join("video0"), "").unwrap();
        assert!(
            !kernel_has_m2m_encoder(&sys, &dev),
            "a camera is no encoder"
        );
        std::fs::create_dir_all(sys.join("video11")).unwrap();
        std::fs::write(sys.join("video11/name"), "bcm2835-codec-encode\n").unwrap();
        assert!(
            !kernel_has_m2m_encoder(&sys, &dev),
            "no device node (PrivateDevices=yes)"
        );
        std::fs::write(dev.join("video11"), "").unwrap();
        assert!(kernel_has_m2m_encoder(&sys, &dev));
        assert!(!kernel_has_m2m_encoder(&d.path().join("none"), &dev));

        let listed =
            " V..... h264_v4l2m2m  V4L2 mem2mem H.264 encoder wrapper\n V....D libx264 ...";
        assert_eq!(
            choose_encoders(true, Some(listed)),
            [HW_ENCODER, SW_ENCODER]
        );
        assert_eq!(choose_encoders(true, Some(" V....D libx264")), [SW_ENCODER]);
        assert_eq!(choose_encoders(true, None), [SW_ENCODER]);
        assert_eq!(choose_encoders(false, Some(listed)), [SW_ENCODER]);
    }

    #[test]
    fn phones_get_yuv420p_h264_with_faststart() {
        let a = ffmpeg_args(SW_ENCODER, Path::new("/e/clip.avi"), Path::new("/e/p"));
        let a: Vec<_> = a.iter().map(|s| s.to_str().unwrap()).collect();
        let has = |k: &str, v: &str| a.windows(2).any(|w| w == [k, v]);
        assert!(
            has("-c:v", "libx264") && has("-preset", "ultrafast"),
            "{a:?}"
        );
        assert!(
            has("-pix_fmt", "yuv420p") && has("-movflags", "+faststart"),
            "{a:?}"
        );
        assert!(
            has("-i", "/e/clip.avi") && a.last() == Some(&"/e/p"),
            "{a:?}"
        );
        let hw = ffmpeg_args(HW_ENCODER, Path::new("i"), Path::new("o"));
        assert!(hw.iter().any(|s| s == HW_ENCODER));
    }
}
