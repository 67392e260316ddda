//! The capture loop: opens the source, splits its bytes into frames, publishes them into the
//! region and announces them; restarts the source on exit or stall with capped exponential
//! backoff, announcing every camera-state change with one log line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipc::announce::{AnnounceHandle, CameraState};
use ipc::jpeg::{FrameLimits, FrameRejected};
use ipc::region::{FrameFormat, FrameInfo, PublishError, RegionWriter};
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;

use crate::config::CaptureConfig;
use crate::logs;
use crate::source::{FileInput, SourceSpec};
use crate::splitter::{SplitStats, Splitter};
use crate::supervise::{Spawn, Supervised};
use crate::synthetic::Scene;

/// A session that delivered frames for this long resets the restart backoff.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// After its stdout closes, a camera process gets this long to exit by itself before SIGTERM.
pub const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Capped exponential restart delay.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles per failure, never above `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt; the one after is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `min` (after a healthy session).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Frames refused by [`ipc::jpeg::check`] before publishing, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedFrames {
    /// No SOI, or a malformed marker segment.
    pub not_jpeg: u64,
    /// The bytes end before the first scan.
    pub truncated: u64,
    /// A frame header no camera sends (zero size, hierarchical).
    pub unsupported: u64,
    /// Larger than the camera's frames (or the ceiling for any camera).
    pub too_large: u64,
    /// Progressive or multi-scan with a coefficient buffer over the memory budget.
    pub too_much_memory: u64,
}

impl RefusedFrames {
    /// Counts one refusal.
    pub fn count(&mut self, r: &FrameRejected) {
        *match r {
            FrameRejected::NotJpeg => &mut self.not_jpeg,
            FrameRejected::Truncated => &mut self.truncated,
            FrameRejected::Unsupported => &mut self.unsupported,
            FrameRejected::TooLarge { .. } => &mut self.too_large,
            FrameRejected::TooMuchMemory { .. } => &mut self.too_much_memory,
        } += 1;
    }

    /// Each reason's stable name ([`FrameRejected::kind`]) and count.
    pub fn by_reason(&self) -> [(&'static str, u64); 5] {
        [
            ("not_jpeg", self.not_jpeg),
            ("truncated", self.truncated),
            ("unsupported", self.unsupported),
            ("too_large", self.too_large),
            ("too_much_memory", self.too_much_memory),
        ]
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }

    /// `"3 refused"`, with the non-zero reasons: `"3 refused (too_large 1, too_much_memory 2)"`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} refused", self.total());
        let mut first = true;
        for (name, n) in self.by_reason() {
            if n > 0 {
                s.push_str(if first { " (" } else { ", " });
                s.push_str(&format!("{name} {n}"));
                first = false;
            }
        }
        if !first {
            s.push(')');
        }
        s
    }
}

/// Counters the status task reads.
#[derive(Debug, Clone, Default)]
pub struct CaptureStats {
    /// Frames published.
    pub published: u64,
    /// Frames dropped by the region: larger than the slot capacity.
    pub over_capacity: u64,
    /// Splitter counters, summed over sessions.
    pub split: SplitStats,
    /// Frames refused by the JPEG check (size, decode memory) before publishing.
    pub refused: RefusedFrames,
    /// The latest refusal.
    pub last_refused: Option<FrameRejected>,
    /// Frames refused since the last one published (a stall with only these says so).
    pub refused_since_frame: u64,
    /// When the last frame was published.
    pub last_frame: Option<Instant>,
    /// The current state.
    pub state: Option<CameraState>,
    /// The current source's label (as in the hello).
    pub source: String,
    /// Source restarts.
    pub restarts: u64,
    /// When the capture loop, after a failure, is due to try the source again (the latest such
    /// time; it stays set during the attempt). `None` before any failure and once the loop has
    /// stopped retrying (a file source that ended).
    pub retry_at: Option<Instant>,
}

impl CaptureStats {
    /// Whether the capture loop is legitimately between frames: starting, or restarting or
    /// failed with a retry that is pending or in progress (within `attempt` of its time).
    /// The watchdog is pinged only then or while frames flow, so a loop that stopped turning
    /// is left to systemd.
    pub fn restarting(&self, now: Instant, attempt: Duration) -> bool {
        match self.state {
            None | Some(CameraState::Starting) => true,
            Some(CameraState::Restarting { .. } | CameraState::Failed { .. }) => {
                self.retry_at.is_some_and(|at| now < at + attempt)
            }
            Some(CameraState::Streaming | CameraState::Stalled) => false,
        }
    }
}

/// The longest one attempt at the source takes before the capture loop turns again: an HTTP
/// connect, a stall timeout without a frame, then stopping the camera process.
pub fn attempt_bound(cfg: &CaptureConfig) -> Duration {
    crate::http::CONNECT_TIMEOUT
        + cfg.stall_timeout()
        + EXIT_GRACE
        + crate::supervise::STOP_GRACE
        + Duration::from_secs(1)
}

/// Shared view of [`CaptureStats`].
pub type SharedStats = Arc<Mutex<CaptureStats>>;

/// Writes frames and states out.
pub struct Publisher {
    region: RegionWriter,
    announce: AnnounceHandle,
    state: CameraState,
    stats: SharedStats,
    size: (u32, u32),
    source: String,
    /// What a frame from the current source may be (see [`SourceSpec::frame_limits`]).
    limits: FrameLimits,
    /// Bytes outside frames are normal from the current source (HTTP multipart headers).
    garbage_expected: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("state", &self.state)
            .finish()
    }
}

impl Publisher {
    /// A publisher over the region and announce handle.
    pub fn new(
        region: RegionWriter,
        announce: AnnounceHandle,
        stats: SharedStats,
        size: (u32, u32),
        source: String,
    ) -> Publisher {
        stats.lock().expect("stats lock").source = source.clone();
        Publisher {
            region,
            announce,
            state: CameraState::Starting,
            stats,
            size,
            source,
            limits: FrameLimits::default(),
            garbage_expected: false,
        }
    }

    /// A (new) source is about to be opened: its label goes into the hello, its known frame
    /// size into the frame check.
    pub fn use_source(&mut self, spec: &SourceSpec) {
        self.limits = spec.frame_limits();
        self.garbage_expected = matches!(spec, SourceSpec::Http { .. });
        let label = spec.label();
        if label != self.source {
            self.announce.update_hello(|h| h.source = label.clone());
            self.stats.lock().expect("stats lock").source = label.clone();
            self.source = label;
        }
    }

    /// Gives the region back (for removal at shutdown).
    pub fn into_region(self) -> RegionWriter {
        self.region
    }

    /// Publishes one JPEG, after [`ipc::jpeg::check`] against the source's limits: a frame
    /// that fails it (too large for the camera, too much memory to decode, not a JPEG) is
    /// counted by reason, logged (throttled) and never published. True if published.
    pub fn publish(&mut self, jpeg: &[u8]) -> bool {
        // Reads only the marker segments up to the first scan, jumping by their lengths: a
        // dozen steps per frame whatever its size.
        let header = match ipc::jpeg::check(jpeg, &self.limits) {
            Ok(h) => h,
            Err(e) => {
                self.refuse(e, jpeg.len());
                return false;
            }
        };
        let (width, height) = (header.width, header.height);
        if (width, height) != self.size {
            self.size = (width, height);
            self.announce.update_hello(|h| {
                h.width = width;
                h.height = height;
            });
            if let Some(held_back) = logs::SIZE_CHANGED.check() {
                tracing::info!(
                    width,
                    height,
                    held_back,
                    "frame size is now {width}x{height}"
                );
            }
        }
        let info = FrameInfo {
            width,
            height,
            format: FrameFormat::Jpeg,
            mono_ns: ipc::service::monotonic_ns(),
            wall_ns: ipc::service::wall_ns(),
        };
        match self.region.publish(&info, jpeg) {
            Ok(meta) => {
                self.announce.frame(&meta);
                {
                    let mut s = self.stats.lock().expect("stats lock");
                    s.published += 1;
                    s.refused_since_frame = 0;
                    s.last_frame = Some(Instant::now());
                }
                if self.state != CameraState::Streaming {
                    self.set_state(CameraState::Streaming, "");
                }
                true
            }
            Err(PublishError::TooLarge { .. }) => {
                let n = {
                    let mut s = self.stats.lock().expect("stats lock");
                    s.over_capacity += 1;
                    s.over_capacity
                };
                if let Some(held_back) = logs::DROPPED.check() {
                    tracing::warn!(
                        len = jpeg.len(),
                        capacity = self.region.slot_capacity(),
                        dropped = n,
                        held_back,
                        "frame larger than the slot capacity dropped ({n} so far); raise [capture] slot_capacity or lower quality"
                    );
                }
                false
            }
        }
    }

    /// Counts and logs (throttled) a frame refused by the check.
    fn refuse(&mut self, e: FrameRejected, len: usize) {
        let summary = {
            let mut s = self.stats.lock().expect("stats lock");
            s.refused.count(&e);
            s.last_refused = Some(e);
            s.refused_since_frame += 1;
            // Formatted only when a line is due (below); the counters stay exact regardless.
            s.refused
        };
        if let Some(held_back) = logs::REFUSED.check() {
            tracing::warn!(
                source = %self.source,
                reason = e.kind(),
                len,
                held_back,
                "frame refused before publishing, never shown or recorded: {e} ({len} bytes; limits {}x{}, {} MiB to decode); {held_back} more refused since the last such line; totals: {}",
                self.limits.max_width,
                self.limits.max_height,
                self.limits.max_buffered_bytes >> 20,
                summary.summary()
            );
        }
    }

    /// Takes the next backoff delay (at most `cap`) and records when the retry is due (for
    /// the watchdog).
    fn schedule_retry(&mut self, backoff: &mut Backoff, cap: Duration) -> Duration {
        let delay = backoff.next_delay().min(cap);
        self.stats.lock().expect("stats lock").retry_at = Some(Instant::now() + delay);
        delay
    }

    /// Announces a state change with one log line (`detail` = e.g. the child's stderr tail).
    pub fn set_state(&mut self, state: CameraState, detail: &str) {
        if state == self.state {
            return;
        }
        logs::state_change(&state, &self.source, state_message(&state, detail));
        self.announce.state(state.clone());
        self.state = state.clone();
        self.stats.lock().expect("stats lock").state = Some(state);
    }
}

/// The log line of a state change. The child's stderr tail (`detail`, already bounded by
/// [`crate::supervise::StderrTail`]) goes into the text itself: journald keeps extra fields
/// apart from MESSAGE, so `journalctl -u mecam-capture` would not show them.
fn state_message(state: &CameraState, detail: &str) -> String {
    let mut message = match state {
        CameraState::Streaming => "camera streaming".to_owned(),
        CameraState::Starting => "camera starting".to_owned(),
        CameraState::Stalled => {
            "camera stalled: no frame within the stall timeout; restarting it".to_owned()
        }
        CameraState::Restarting { reason } => format!("camera restarting: {reason}"),
        CameraState::Failed { reason } => format!("camera failed: {reason}"),
    };
    if !detail.is_empty() {
        message.push_str("; its last stderr lines: ");
        message.push_str(detail);
    }
    message
}

/// How a session ended.
enum End {
    Eof,
    Stalled,
    Error(std::io::Error),
    Shutdown,
}

/// The byte stream of an open session.
enum Input {
    Child(tokio::process::ChildStdout),
    Http(crate::http::HttpStream),
    File(FileInput),
}

impl Input {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::Child(c) => c.read(buf).await,
            Input::Http(h) => h.read(buf).await,
            Input::File(f) => f.read(buf).await,
        }
    }
}

/// Runs the source until `shutdown` turns true. Children are stopped and reaped before return.
///
/// With [`SourceSpec::Auto`] (no source configured) it looks for a camera before each
/// attempt; while there is none the state is Failed ("no camera found", said once), the
/// look is repeated with backoff (at most [`crate::source::NO_CAMERA_RECHECK_MAX`] apart),
/// and the watchdog keeps being pinged. Never the synthetic scene.
pub async fn run_capture(
    configured: SourceSpec,
    cfg: &CaptureConfig,
    shim: Option<std::path::PathBuf>,
    publisher: &mut Publisher,
    mut shutdown: watch::Receiver<bool>,
) {
    if let SourceSpec::Synthetic { script, .. } = &configured {
        publisher.use_source(&configured);
        run_synthetic(
            Scene::new((**script).clone(), cfg.width, cfg.height),
            cfg.fps,
            publisher,
            shutdown,
        )
        .await;
        return;
    }
    let mut splitter = Splitter::new(publisher.region.slot_capacity());
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.backoff_min_ms),
        Duration::from_millis(cfg.backoff_max_ms),
    );
    let stall = cfg.stall_timeout();
    let pace = matches!(configured, SourceSpec::File { .. })
        .then(|| Duration::from_secs_f64(1.0 / f64::from(cfg.fps)));
    let mut first = true;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let found;
        let spec = match &configured {
            SourceSpec::Auto { probe } => match SourceSpec::detect(cfg, probe) {
                Ok(s) => {
                    found = s;
                    &found
                }
                Err(no_camera) => {
                    let delay = publisher
                        .schedule_retry(&mut backoff, crate::source::NO_CAMERA_RECHECK_MAX);
                    publisher.set_state(
                        CameraState::Failed {
                            reason: no_camera.to_string(),
                        },
                        "",
                    );
                    if sleep_or_shutdown(delay, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            },
            other => other,
        };
        // Looking for a camera is not a restart; every attempt at one after the first is.
        if !first {
            publisher.stats.lock().expect("stats lock").restarts += 1;
        }
        first = false;
        let label = spec.label();
        if matches!(configured, SourceSpec::Auto { .. }) && label != publisher.source {
            if let Some(held_back) = logs::CAMERA_FOUND.check() {
                tracing::info!(source = %label, held_back, "no source configured: found a camera, using {label}");
            }
        }
        publisher.use_source(spec);
        // Refusals of an earlier session say nothing about why this one stalls.
        publisher
            .stats
            .lock()
            .expect("stats lock")
            .refused_since_frame = 0;
        let opened = open(spec, shim.clone(), &mut splitter).await;
        let (mut input, child) = match opened {
            Ok(x) => x,
            Err(reason) => {
                let delay = publisher.schedule_retry(&mut backoff, Duration::MAX);
                publisher.set_state(CameraState::Failed { reason }, "");
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        let started = Instant::now();
        let before = publisher.stats.lock().expect("stats lock").published;
        let end = pump(
            &mut input,
            &mut splitter,
            publisher,
            stall,
            pace,
            &mut shutdown,
        )
        .await;
        drop(input);
        splitter.finish();
        merge_split_stats(publisher, &mut splitter);
        let frames = publisher.stats.lock().expect("stats lock").published - before;
        if matches!(end, End::Stalled) {
            // Announce before the (possibly slow) stop, so subscribers see it.
            let tail = child
                .as_ref()
                .map(|c| c.stderr().joined())
                .unwrap_or_default();
            publisher.set_state(CameraState::Stalled, &tail);
        }
        let (status, stderr) = match child {
            Some(mut c) => {
                if matches!(end, End::Eof) {
                    // Stdout closed: give the process a moment to exit by itself, so its own
                    // exit status is what gets logged.
                    let deadline = Instant::now() + EXIT_GRACE;
                    while c.try_exited().is_none() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let tail = c.stderr().clone();
                let status = c.stop().await;
                (status.map(|s| s.to_string()), tail.joined())
            }
            None => (None, String::new()),
        };
        let reason = match end {
            End::Shutdown => return,
            End::Stalled => {
                let (refused, last) = {
                    let s = publisher.stats.lock().expect("stats lock");
                    (s.refused_since_frame, s.last_refused)
                };
                match last {
                    Some(last) if refused > 0 => format!(
                        "{label}: no frame that passed the frame check for {stall:?} ({refused} refused, the latest: {last}); killed and restarted"
                    ),
                    _ => format!("{label}: no frame for {stall:?}; killed and restarted"),
                }
            }
            End::Eof => match (spec, status) {
                (SourceSpec::File { looping: true, .. }, _) if frames > 0 => {
                    // Loop the file: no backoff, no state change.
                    continue;
                }
                (SourceSpec::File { looping: true, .. }, _) => {
                    // A pass without a single frame would spin: back off like a failed camera.
                    format!("{label} holds no valid JPEG frame; replaying it after a backoff")
                }
                (SourceSpec::File { .. }, _) => {
                    // Nothing more will come: no retry, so no watchdog pings either.
                    publisher.stats.lock().expect("stats lock").retry_at = None;
                    publisher.set_state(
                        CameraState::Failed {
                            reason: format!("{label} ended (loop = false)"),
                        },
                        "",
                    );
                    let _ = shutdown.wait_for(|s| *s).await;
                    return;
                }
                (_, Some(st)) => format!("{label} exited ({st}) after {frames} frames"),
                (_, None) => format!("{label} closed the stream after {frames} frames"),
            },
            End::Error(e) => format!("{label}: read error: {e}"),
        };
        if frames > 0 && started.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        let delay = publisher.schedule_retry(&mut backoff, Duration::MAX);
        publisher.set_state(CameraState::Restarting { reason }, &stderr);
        if sleep_or_shutdown(delay, &mut shutdown).await {
            return;
        }
    }
}

/// Takes the splitter's counters, logging (throttled) the frames it dropped and the garbage
/// it skipped since the last call.
fn merge_split_stats(publisher: &mut Publisher, splitter: &mut Splitter) {
    let new = splitter.stats();
    let (old, over_capacity) = {
        let mut s = publisher.stats.lock().expect("stats lock");
        (std::mem::replace(&mut s.split, new), s.over_capacity)
    };
    if old == new {
        return;
    }
    if let Some(held_back) = logs::check_n(&logs::DROPPED, new.dropped() - old.dropped()) {
        tracing::warn!(
            source = %publisher.source,
            truncated = new.truncated,
            oversized = new.oversized,
            corrupt = new.corrupt,
            held_back,
            "camera stream had bad data, frames dropped; {held_back} more drops held back since the last such line; totals: {}",
            logs::drop_totals(&new, over_capacity)
        );
    }
    if new.garbage_bytes > old.garbage_bytes {
        if let Some(held_back) = logs::GARBAGE.check() {
            logs::garbage_line(new.garbage_bytes, held_back, publisher.garbage_expected);
        }
    }
}

/// Opens a session. The error is the reason, for the Failed state.
async fn open(
    spec: &SourceSpec,
    shim: Option<std::path::PathBuf>,
    splitter: &mut Splitter,
) -> Result<(Input, Option<Supervised>), String> {
    splitter.reset_stream();
    match spec {
        SourceSpec::Process { label, argv, .. } => {
            let program = argv
                .first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default();
            if crate::supervise::find_program(&program).is_none() {
                return Err(format!(
                    "cannot start {label}: program {program:?} not found (install it or set the path in [capture])"
                ));
            }
            let (child, out) = Supervised::spawn(&Spawn {
                argv: argv.clone(),
                shim,
            })
            .map_err(|e| {
                format!(
                    "cannot start {label} ({}): {e}",
                    argv.first()
                        .map(|a| a.to_string_lossy())
                        .unwrap_or_default()
                )
            })?;
            if let Some(held_back) = logs::PROCESS_STARTED.check() {
                tracing::info!(source = %label, pid = child.pid(), held_back, "camera process started");
            }
            Ok((Input::Child(out), Some(child)))
        }
        SourceSpec::Http {
            url,
            user,
            password,
        } => {
            let stream = crate::http::open(url, user.as_deref(), password.as_deref())
                .await
                .map_err(|e| format!("{}: {e}", spec.label()))?;
            Ok((Input::Http(stream), None))
        }
        SourceSpec::File { path, .. } => {
            let f = FileInput::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((Input::File(f), None))
        }
        SourceSpec::Synthetic { .. } | SourceSpec::Auto { .. } => {
            unreachable!("synthetic runs its own loop; auto is detected before opening")
        }
    }
}

/// True if shutdown came first.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
    *shutdown.borrow()
}

/// Reads the session's bytes and publishes its frames until it ends.
///
/// The hot path: per read, one `read(2)` into the splitter's free room (a whole frame when
/// the camera writes frames whole), the frames it completes, and no allocation, formatting
/// or tracing unless something is dropped or refused. The stall timer and the shutdown
/// future live for the whole session instead of being made again per read: the timer is
/// moved only when it fires with a frame seen since it was set, so a frame costs no timer
/// work, and the session still stalls exactly `stall` after its last frame.
async fn pump(
    input: &mut Input,
    splitter: &mut Splitter,
    publisher: &mut Publisher,
    stall: Duration,
    pace: Option<Duration>,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let mut last_frame = Instant::now();
    let mut next_tick = tokio::time::Instant::now();
    let stop = shutdown.wait_for(|s| *s);
    tokio::pin!(stop);
    let stalled = tokio::time::sleep_until(tokio::time::Instant::from_std(last_frame + stall));
    tokio::pin!(stalled);
    loop {
        while let Some(frame) = splitter.next_frame() {
            if let Some(p) = pace {
                next_tick += p;
                let now = tokio::time::Instant::now();
                if next_tick < now {
                    next_tick = now;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next_tick) => {}
                    _ = &mut stop => return End::Shutdown,
                }
            }
            if publisher.publish(frame) {
                last_frame = Instant::now();
            }
        }
        merge_split_stats(publisher, splitter);
        tokio::select! {
            _ = &mut stop => return End::Shutdown,
            () = &mut stalled => {
                let deadline = tokio::time::Instant::from_std(last_frame + stall);
                if deadline <= tokio::time::Instant::now() {
                    return End::Stalled;
                }
                stalled.as_mut().reset(deadline);
            }
            r = input.read(splitter.spare()) => match r {
                Ok(0) => return End::Eof,
                Ok(n) => splitter.commit(n),
                Err(e) => return End::Error(e),
            },
        }
    }
}

/// The synthetic source: renders at `fps` (skipping frames when behind) on a blocking thread.
async fn run_synthetic(
    scene: Scene,
    fps: u32,
    publisher: &mut Publisher,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = Duration::from_secs_f64(1.0 / f64::from(fps));
    let start = tokio::time::Instant::now();
    let mut next = start;
    let mut scene = Some(scene);
    let mut buf = Some(Vec::with_capacity(256 * 1024));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let t = next - start;
        let (mut sc, mut b) = (scene.take().expect("scene"), buf.take().expect("buf"));
        let rendered = tokio::task::spawn_blocking(move || {
            sc.render_jpeg(t, &mut b);
            (sc, b)
        })
        .await;
        let Ok((sc, b)) = rendered else {
            publisher.set_state(
                CameraState::Failed {
                    reason: "synthetic renderer panicked".into(),
                },
                "",
            );
            let _ = shutdown.wait_for(|s| *s).await;
            return;
        };
        publisher.publish(&b);
        scene = Some(sc);
        buf = Some(b);
        next += period;
        let now = tokio::time::Instant::now();
        if next + period < now {
            // Behind (slow machine): skip, do not burst.
            next = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stderr_tail_is_in_the_log_message_itself() {
        let tail = crate::supervise::StderrTail::default();
        for i in 0..100 {
            tail.push(format!("err {i} {}", "x".repeat(1000)).as_bytes());
        }
        let detail = tail.joined();
        let m = state_message(
            &CameraState::Restarting {
                reason: "rpicam exited (exit status: 1)".into(),
            },
            &detail,
        );
        assert!(m.starts_with("camera restarting: rpicam exited"), "{m}");
        assert!(
            m.contains("last stderr lines: ") && m.contains("err 99 "),
            "{m}"
        );
        // Bounded: the tail's line count and length limits hold in the message.
        assert!(
            m.len()
                < 200 + crate::supervise::STDERR_LINES * (crate::supervise::STDERR_LINE_MAX + 3)
        );
        assert!(state_message(&CameraState::Stalled, "").ends_with("restarting it"));
    }

    #[test]
    fn failed_with_a_retry_pending_counts_as_restarting_for_the_watchdog() {
        let now = Instant::now();
        let attempt = Duration::from_secs(10);
        let failed = |retry_at| CaptureStats {
            state: Some(CameraState::Failed {
                reason: "camera offline".into(),
            }),
            retry_at,
            ..Default::default()
        };
        assert!(CaptureStats::default().restarting(now, attempt), "starting");
        assert!(failed(Some(now + Duration::from_secs(30))).restarting(now, attempt));
        // The retry's time has come: the attempt itself may take up to `attempt`.
        assert!(failed(Some(now - Duration::from_secs(9))).restarting(now, attempt));
        // Long past its retry: the loop stopped turning.
        assert!(!failed(Some(now - Duration::from_secs(11))).restarting(now, attempt));
        // Failed for good (no retry).
        assert!(!failed(None).restarting(now, attempt));
        let streaming = CaptureStats {
            state: Some(CameraState::Streaming),
            retry_at: Some(now),
            ..Default::default()
        };
        assert!(
            !streaming.restarting(now, attempt),
            "frames decide while streaming"
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let got: Vec<_> = (0..7).map(|_| b.next_delay()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000, 1000].map(ms).to_vec());
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
    }
}
