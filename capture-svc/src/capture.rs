//! The capture loop: opens the source, splits its bytes into frames, publishes them into the
//! region and announces them; restarts the source on exit or stall with capped exponential
//! backoff, announcing every camera-state change with one log line.

mod backoff;
mod publisher;
mod stats;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use ipc::announce::CameraState;
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::CaptureConfig;
use crate::logs;
use crate::source::{FileInput, SourceSpec};
use crate::splitter::Splitter;
use crate::supervise::{Spawn, Supervised};
use crate::synthetic::Scene;

pub use backoff::Backoff;
pub use publisher::Publisher;
pub use stats::{CaptureStats, RefusedFrames, SharedStats, attempt_bound};

/// A session that delivered frames for this long resets the restart backoff.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// After its stdout closes, a camera process gets this long to exit by itself before SIGTERM.
pub const EXIT_GRACE: Duration = Duration::from_millis(500);

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

/// Runs the source until `shutdown` is cancelled. Children are stopped and reaped before
/// return.
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
    shutdown: CancellationToken,
) {
    if let SourceSpec::Synthetic { script, .. } = &configured {
        publisher.use_source(&configured);
        run_synthetic(
            Scene::new((**script).clone(), cfg.width, cfg.height),
            cfg.fps,
            publisher,
            &shutdown,
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
    while !shutdown.is_cancelled() {
        let spec = match find_source(&configured, cfg, publisher, &mut backoff) {
            Ok(spec) => spec,
            Err(delay) => {
                if sleep_or_shutdown(delay, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        // Looking for a camera is not a restart; every attempt at one after the first is.
        begin_session(&configured, &spec, publisher, !first);
        first = false;
        let label = spec.label();
        let (mut input, child) = match open(&spec, shim.clone(), &mut splitter).await {
            Ok(x) => x,
            Err(reason) => {
                let delay = publisher.schedule_retry(&mut backoff, Duration::MAX);
                publisher.set_state(CameraState::Failed { reason }, "");
                if sleep_or_shutdown(delay, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let started = Instant::now();
        let before = publisher.stats.lock().expect("stats lock").published;
        let end = pump(&mut input, &mut splitter, publisher, stall, pace, &shutdown).await;
        drop(input);
        let (status, stderr) = end_session(&end, child, &mut splitter, publisher).await;
        let frames = publisher.stats.lock().expect("stats lock").published - before;
        let reason = match next_step(&spec, &label, end, status, frames, stall, publisher) {
            Next::Replay => continue,
            Next::Stop => return,
            Next::Finished => {
                shutdown.cancelled().await;
                return;
            }
            Next::Restart(reason) => reason,
        };
        if frames > 0 && started.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        let delay = publisher.schedule_retry(&mut backoff, Duration::MAX);
        publisher.set_state(CameraState::Restarting { reason }, &stderr);
        if sleep_or_shutdown(delay, &shutdown).await {
            return;
        }
    }
}

/// The source of the next session: the configured one, or with [`SourceSpec::Auto`] the camera
/// found now. With none found the state is Failed and the retry scheduled: `Err(delay)`.
fn find_source<'a>(
    configured: &'a SourceSpec,
    cfg: &CaptureConfig,
    publisher: &mut Publisher,
    backoff: &mut Backoff,
) -> Result<Cow<'a, SourceSpec>, Duration> {
    let SourceSpec::Auto { probe } = configured else {
        return Ok(Cow::Borrowed(configured));
    };
    match SourceSpec::detect(cfg, probe) {
        Ok(found) => Ok(Cow::Owned(found)),
        Err(no_camera) => {
            let delay = publisher.schedule_retry(backoff, crate::source::NO_CAMERA_RECHECK_MAX);
            publisher.set_state(
                CameraState::Failed {
                    reason: no_camera.to_string(),
                },
                "",
            );
            Err(delay)
        }
    }
}

/// Counts a restart, says which camera was found, and points the publisher at `spec`.
fn begin_session(
    configured: &SourceSpec,
    spec: &SourceSpec,
    publisher: &mut Publisher,
    restart: bool,
) {
    if restart {
        publisher.stats.lock().expect("stats lock").restarts += 1;
    }
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
}

/// Ends a session: the splitter's last counts, a stall announced, the camera process stopped.
/// Its exit status and its last stderr lines.
async fn end_session(
    end: &End,
    child: Option<Supervised>,
    splitter: &mut Splitter,
    publisher: &mut Publisher,
) -> (Option<String>, String) {
    splitter.finish();
    merge_split_stats(publisher, splitter);
    if matches!(end, End::Stalled) {
        // Announce before the (possibly slow) stop, so subscribers see it.
        let tail = child
            .as_ref()
            .map(|c| c.stderr().joined())
            .unwrap_or_default();
        publisher.set_state(CameraState::Stalled, &tail);
    }
    stop_child(child, end).await
}

/// Stops the session's camera process, if any: its exit status and its last stderr lines.
async fn stop_child(child: Option<Supervised>, end: &End) -> (Option<String>, String) {
    let Some(mut c) = child else {
        return (None, String::new());
    };
    if matches!(end, End::Eof) {
        // Stdout closed: give the process a moment to exit by itself, so its own exit status
        // is what gets logged.
        let deadline = Instant::now() + EXIT_GRACE;
        while c.try_exited().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let tail = c.stderr().clone();
    let status = c.stop().await;
    (status.map(|s| s.to_string()), tail.joined())
}

/// What the capture loop does after a session.
enum Next {
    /// Play the file again at once: no backoff, no state change.
    Replay,
    /// Shutting down.
    Stop,
    /// A file that does not loop has ended: wait for shutdown.
    Finished,
    /// Restart the source after the backoff, for this reason.
    Restart(String),
}

/// Decides, from how the session ended, whether and why the source is restarted.
fn next_step(
    spec: &SourceSpec,
    label: &str,
    end: End,
    status: Option<String>,
    frames: u64,
    stall: Duration,
    publisher: &mut Publisher,
) -> Next {
    let reason = match end {
        End::Shutdown => return Next::Stop,
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
            (SourceSpec::File { looping: true, .. }, _) if frames > 0 => return Next::Replay,
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
                return Next::Finished;
            }
            (_, Some(st)) => format!("{label} exited ({st}) after {frames} frames"),
            (_, None) => format!("{label} closed the stream after {frames} frames"),
        },
        End::Error(e) => format!("{label}: read error: {e}"),
    };
    Next::Restart(reason)
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
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.cancelled() => {}
    }
    shutdown.is_cancelled()
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
    shutdown: &CancellationToken,
) -> End {
    let mut last_frame = Instant::now();
    let mut next_tick = tokio::time::Instant::now();
    let stop = shutdown.cancelled();
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
    shutdown: &CancellationToken,
) {
    let period = Duration::from_secs_f64(1.0 / f64::from(fps));
    let start = tokio::time::Instant::now();
    let mut next = start;
    let mut scene = Some(scene);
    let mut buf = Some(Vec::with_capacity(256 * 1024));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.cancelled() => return,
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
            shutdown.cancelled().await;
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
