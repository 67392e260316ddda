//! The capture loop: opens the source, splits its bytes into frames, publishes them into the
//! region and announces them; restarts the source on exit or stall with capped exponential
//! backoff, announcing every camera-state change with one log line.

mod backoff;
mod publisher;
mod session;
mod stats;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use ipc::announce::CameraState;
use tokio_util::sync::CancellationToken;

use crate::config::CaptureConfig;
use crate::logs;
use crate::source::SourceSpec;
use crate::splitter::Splitter;
use crate::synthetic::Scene;
use session::{End, end_session, open, pump};

pub use backoff::Backoff;
pub use publisher::Publisher;
pub use stats::{CaptureStats, RefusedFrames, SharedStats, attempt_bound};

/// A session that delivered frames for this long resets the restart backoff.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// After its stdout closes, a camera process gets this long to exit by itself before SIGTERM.
pub const EXIT_GRACE: Duration = Duration::from_millis(500);

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

/// True if shutdown came first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.cancelled() => {}
    }
    shutdown.is_cancelled()
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
