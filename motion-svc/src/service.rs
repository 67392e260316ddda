//! The service: reads frames from `capture-svc` through `ipc`, runs the analyzer, feeds the
//! recorder, logs events to the journal, fires hooks, and talks to systemd.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ipc::announce::{CameraState, ClientConfig, ClientEvent, FrameClient};
use ipc::service::Notifier;

use crate::analyzer::{Analyzer, FrameInput};
use crate::config::{MotionConfig, Settings};
use crate::event::Transition;
use crate::hooks::{HookConfig, HookKind, Hooks, parse_http_url};
use crate::journal;
use crate::recorder::{EndInfo, FrameTag, Recorder, RecorderConfig, next_counter};
use crate::store::{self, CLIP, EventMeta, EventState, Limits};

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The announce socket of capture-svc.
    pub socket_path: PathBuf,
    /// The `[motion]` section with flags applied.
    pub config: MotionConfig,
    /// The same, validated.
    pub settings: Settings,
}

fn limits(c: &MotionConfig) -> Limits {
    Limits {
        max_total_bytes: (c.max_total_mib * 1024.0 * 1024.0) as u64,
        max_age_ms: (c.max_age_days * 86_400_000.0) as u64,
        min_free_bytes: (c.min_free_mib * 1024.0 * 1024.0) as u64,
    }
}

/// Wall-clock ms of monotonic time `mono_ns`, using the last frame's pair of timestamps.
fn to_wall_ms(clock: (u64, u64), mono_ns: u64) -> u64 {
    let (ref_mono, ref_wall) = clock;
    if ref_wall == 0 {
        return store::now_unix_ms();
    }
    let wall = if mono_ns <= ref_mono {
        ref_wall.saturating_sub(ref_mono - mono_ns)
    } else {
        ref_wall + (mono_ns - ref_mono)
    };
    wall / 1_000_000
}

/// Runs until `shutdown` resolves: recovers interrupted events, then detects and records.
///
/// # Errors
/// The events directory cannot be used, or the writer thread cannot start.
pub async fn run(rc: RunConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let c = &rc.config;
    let events_dir = c.events_dir.clone();
    std::fs::create_dir_all(&events_dir).with_context(|| {
        format!(
            "cannot create the events directory {}; create it or pass --events-dir",
            events_dir.display()
        )
    })?;
    for r in store::recover(&events_dir)? {
        tracing::warn!(event = %r.id, frames = r.frames, "closed an event interrupted by a crash (state interrupted)");
    }
    let mut counter = next_counter(&events_dir);
    let mut recorder = Recorder::start(RecorderConfig {
        events_dir: events_dir.clone(),
        pre_capture_s: rc.settings.events.pre_capture_s,
        start_delay_s: crate::event::max_start_delay_s(
            rc.settings.events.min_duration_s,
            rc.settings.analysis_fps,
        ),
        post_capture_s: rc.settings.events.post_capture_s.max(0.0),
        pre_capture_bytes: rc.settings.pre_capture_bytes,
        queue_frames: rc.settings.writer_queue_frames,
        limits: limits(c),
        nominal_fps: 15.0,
        slow_disk: Duration::ZERO,
    })
    .context("cannot start the writer thread")?;
    let hooks = Hooks::new(HookConfig {
        command: c.hook_command.clone(),
        command_timeout: Duration::from_secs_f64(c.hook_timeout_s),
        webhook: c
            .webhook_url
            .as_deref()
            .map(parse_http_url)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        attempts: c.webhook_attempts,
        attempt_timeout: Duration::from_secs_f64(c.webhook_timeout_s),
        retry_backoff: Duration::from_millis(500),
    });
    let mut analyzer = Analyzer::new(&rc.settings)?;
    let mut client = FrameClient::new(ClientConfig::new(rc.socket_path.clone(), "motion-svc"));
    let notifier = Notifier;
    let watchdog = notifier.watchdog_interval().map(|iv| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(iv / 2);
            loop {
                tick.tick().await;
                Notifier.watchdog();
            }
        })
    });
    notifier.ready();
    tracing::info!(events_dir = %events_dir.display(), socket = %rc.socket_path.display(), "motion-svc ready");

    let mut buf = Vec::new();
    let mut generation: Option<u64> = None;
    let mut camera_ok = true;
    let mut current: Option<(String, u64)> = None; // id, start wall ms
    let mut frame_size = (0u32, 0u32);
    // (monotonic ns, wall ns) of the last frame: converts event times to wall clock.
    let mut clock = (0u64, 0u64);
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            () = &mut shutdown => break,
            ev = client.next(&mut buf) => ev,
        };
        let transition = match event {
            ClientEvent::Connected(hello) => {
                if generation.is_some_and(|g| g != hello.generation) {
                    tracing::info!(
                        generation = hello.generation,
                        "capture restarted (new region generation): background re-learned"
                    );
                    recorder.reset();
                }
                generation = Some(hello.generation);
                frame_size = (hello.width, hello.height);
                if !camera_ok {
                    tracing::info!(source = %hello.source, "camera back");
                    camera_ok = true;
                }
                analyzer.camera_lost()
            }
            ClientEvent::Frame(meta) => {
                frame_size = (meta.width, meta.height);
                let out = analyzer.offer(FrameInput {
                    seq: meta.seq,
                    mono_ns: meta.mono_ns,
                    wall_ns: meta.wall_ns,
                    jpeg: &buf,
                });
                if let Some(e) = analyzer.take_error() {
                    tracing::debug!("frame {} skipped: {e}", meta.seq);
                }
                recorder.frame(
                    &buf,
                    FrameTag {
                        mono_ns: meta.mono_ns,
                        wall_ns: meta.wall_ns,
                        width: meta.width,
                        height: meta.height,
                        score: out.analysed.map(|a| a.1),
                    },
                );
                clock = (meta.mono_ns, meta.wall_ns);
                out.transition
            }
            ClientEvent::State(state) => {
                if state == CameraState::Streaming {
                    if !camera_ok {
                        tracing::info!("camera streaming again");
                        camera_ok = true;
                    }
                    Transition::None
                } else {
                    if camera_ok || !matches!(state, CameraState::Starting) {
                        tracing::warn!(
                            state = state.name(),
                            "camera not streaming ({state:?}): not motion, background will be re-learned"
                        );
                    }
                    camera_ok = false;
                    analyzer.camera_lost()
                }
            }
            ClientEvent::Heartbeat(_) => Transition::None,
            ClientEvent::Gone { reason } => {
                if camera_ok {
                    tracing::warn!(
                        "camera outage: capture-svc unreachable ({reason}); not motion, waiting for it"
                    );
                }
                camera_ok = false;
                analyzer.camera_lost()
            }
        };
        match transition {
            Transition::None => {}
            Transition::Start { first_motion } => {
                let first_ns = (first_motion * 1e9) as u64;
                let start_ms = to_wall_ms(clock, first_ns);
                counter = counter % 9999 + 1;
                let id = format!("{}-{counter:04}", store::utc_stamp(start_ms));
                let peak = analyzer.peak().clone();
                let meta = EventMeta {
                    id: id.clone(),
                    state: EventState::Recording,
                    start_unix_ms: start_ms,
                    end_unix_ms: None,
                    duration_s: 0.0,
                    peak_score: peak.score,
                    peak_area_pct: peak.area_pct,
                    boxes: peak.boxes.clone(),
                    frames: 0,
                    dropped_frames: 0,
                    clip: Some(CLIP.into()),
                    poster: None,
                    width: frame_size.0,
                    height: frame_size.1,
                };
                recorder.start_event(meta.clone(), first_ns);
                let dir = events_dir.join(&id);
                journal::log_start(&id, peak.score, peak.area_pct, &peak.boxes, &dir.join(CLIP));
                hooks.fire(HookKind::Start, &meta, &dir);
                current = Some((id, start_ms));
            }
            Transition::End {
                last_motion,
                reason,
            } => {
                if let Some((id, _)) = current.take() {
                    let peak = analyzer.peak().clone();
                    let last_ns = (last_motion * 1e9) as u64;
                    recorder.end_event(EndInfo {
                        end_unix_ms: to_wall_ms(clock, last_ns),
                        last_motion_ns: last_ns,
                        peak_score: peak.score,
                        peak_area_pct: peak.area_pct,
                        boxes: peak.boxes.clone(),
                        dropped_frames: 0,
                    });
                    journal::log_end(
                        &id,
                        peak.score,
                        peak.area_pct,
                        &peak.boxes,
                        &events_dir.join(&id).join(CLIP),
                        reason.as_str(),
                    );
                }
            }
        }
        while let Some(done) = recorder.completed() {
            tracing::info!(event = %done.id, frames = done.frames, dropped = done.dropped_frames, "event recorded");
            hooks.fire(HookKind::End, &done, &events_dir.join(&done.id));
        }
    }
    notifier.stopping();
    if let Some((id, _)) = current.take() {
        tracing::info!(event = %id, "shutting down during an event: the clip is closed");
    }
    tokio::task::spawn_blocking(move || recorder.shutdown())
        .await
        .ok();
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("motion-svc stopped");
    Ok(())
}
