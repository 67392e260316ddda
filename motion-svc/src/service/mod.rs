//! The service: reads frames from `capture-svc` through `ipc`, runs the analyzer, feeds the
//! recorder, and talks to systemd; what the recorder reports about events goes to the
//! [`Herald`] (journal, hooks, MQTT).
//!
//! Here: `run`, as its steps (recovery, the recorder, the loop, shutdown). `detection.rs`
//! holds the loop's state and what each camera event does; `gate.rs` checks frames before
//! anything reads them; `status.rs` is the status line; `watchdog.rs` pings systemd.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use ipc::announce::{ClientConfig, FrameClient, MOTION_SVC};
use ipc::service::{Notifier, monotonic_ns};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::analyzer::Analyzer;
use crate::config::{MotionConfig, Settings};
use crate::event::Transition;
use crate::hooks::Hooks;
use crate::life::Herald;
use crate::mqtt::{Mqtt, MqttPaths, MqttSettings};
use crate::preview::PreviewSocket;
use crate::recorder::{Recorder, RecorderConfig, log_recovery};

mod detection;
mod gate;
mod health;
mod overrides;
mod status;
#[cfg(test)]
mod tests;
mod watchdog;

use detection::Detection;
pub use gate::FrameGate;
use health::Health;
use overrides::Tuner;
pub use watchdog::Progress;
use watchdog::spawn_watchdog;

/// The detection loop turns at least this often, frames or not (a camera outage included):
/// it refreshes the systemd status and proves to the watchdog that it is alive.
pub const TICK: Duration = Duration::from_secs(1);
/// How often the counters also go to the log.
pub const STATUS_LOG_EVERY: Duration = Duration::from_secs(600);

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The announce socket of capture-svc.
    pub socket_path: PathBuf,
    /// The runtime directory, whose `status/` gets this service's status record.
    pub runtime_dir: PathBuf,
    /// The `[motion]` section with flags applied, validated.
    pub settings: Settings,
    /// The `[mqtt]` section, validated; `None` (MQTT off): nothing of MQTT runs.
    pub mqtt: Option<MqttSettings>,
    /// That section as written (with the flags): the overrides file's keys replace its own.
    pub base: MotionConfig,
}

/// Runs until `shutdown` resolves: recovers interrupted events, then detects and records.
///
/// # Errors
/// The writer thread cannot start, or the analyzer cannot be set up.
pub async fn run(rc: RunConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // The overrides file as it is at start; refused, the section alone.
    let mut tuner = Tuner::new(rc.base.clone());
    let start = tuner.poll();
    let armed = start.as_ref().is_none_or(|c| c.armed);
    let settings = &start.map_or_else(|| rc.settings.clone(), |c| c.settings);
    let preview = match PreviewSocket::bind(&settings.preview_socket) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(
                "no live preview: cannot listen on {}: {e}; detection goes on (create the directory, or set [motion] preview_socket)",
                settings.preview_socket.display()
            );
            None
        }
    };
    let recovery_pending = recover_at_start(&settings.events_dir);
    let counter = events::last_counter(&settings.events_dir);
    let recorder = start_recorder(settings, recovery_pending)?;
    // Every task of the service (hooks, the watchdog) is tracked, and drained at shutdown.
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    let hooks = Hooks::new(settings.hooks.clone(), tasks.clone(), stop.clone());
    let mqtt = rc
        .mqtt
        .clone()
        .map(|m| {
            let paths = MqttPaths {
                events_dir: settings.events_dir.clone(),
                overrides_file: rc.base.overrides_file.clone(),
                runtime_dir: rc.runtime_dir.clone(),
            };
            Mqtt::start(m, paths, &tasks, &stop)
        })
        .transpose()?;
    let herald = Herald::new(settings.events_dir.clone(), hooks, mqtt.clone());
    let mut det = Detection::new(recorder, Analyzer::new(settings)?, counter);
    det.armed = armed;
    let mut client = FrameClient::new(ClientConfig::new(rc.socket_path.clone(), MOTION_SVC));
    let progress = Progress::default();
    progress.beat_at(monotonic_ns());
    // `iv` is half of WatchdogSec; the loop turns every TICK even without frames.
    if let Some(iv) = Notifier.watchdog_interval() {
        let ping = || Notifier.watchdog();
        spawn_watchdog(
            (&tasks, &stop),
            iv,
            iv.max(3 * TICK),
            progress.clone(),
            ping,
        );
    }
    Notifier.ready();
    tracing::info!(events_dir = %settings.events_dir.display(), socket = %rc.socket_path.display(), "motion-svc ready");

    let mqtt = mqtt.as_ref();
    let mut ends = Ends { tuner, preview };
    let mut health = Health::new(&rc.runtime_dir, &settings.events_dir);
    detect(
        &mut det,
        &mut health,
        &mut client,
        (&herald, mqtt),
        &progress,
        &mut ends,
        shutdown,
    )
    .await;

    Notifier.stopping();
    if let Some(id) = det.take_current() {
        tracing::info!(event = %id, "shutting down during an event: the clip is closed");
    }
    det.report(&client, mqtt, true);
    close_recorder(det.recorder, &herald).await;
    health.write_stopped();
    drain(&tasks, &stop, settings.hooks.shutdown_grace).await;
    tracing::info!("motion-svc stopped");
    Ok(())
}

/// Crash recovery of the events folder. Returns whether it must run again (the folder or the
/// disk is not usable yet). A full, read-only or broken events disk never stops detection:
/// the recorder says what is wrong (status line, journal), records nothing, and retries.
fn recover_at_start(events_dir: &Path) -> bool {
    match std::fs::create_dir_all(events_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| events::recover(events_dir).map_err(|e| e.to_string()))
    {
        Ok(r) => {
            log_recovery(&r);
            r.write_errors > 0
        }
        Err(e) => {
            tracing::error!(
                "events directory {}: {e}; crash recovery runs again once it is usable (create it, or pass --events-dir)",
                events_dir.display()
            );
            true
        }
    }
}

fn start_recorder(settings: &Settings, recovery_pending: bool) -> anyhow::Result<Recorder> {
    let events = &settings.events;
    Recorder::start(RecorderConfig {
        events_dir: settings.events_dir.clone(),
        pre_capture_s: events.pre_capture_s,
        start_delay_s: crate::event::max_first_motion_age_s(
            events.min_duration_s,
            settings.analysis_fps,
        ),
        post_capture_s: events.post_capture_s.max(0.0),
        max_event_s: events.max_event_s,
        pre_capture_bytes: settings.pre_capture_bytes,
        queue_frames: settings.writer_queue_frames,
        limits: settings.limits,
        recovery_pending,
    })
    .context("cannot start the writer thread")
}

/// What the loop looks after besides the camera and the recorder: the settings, the preview
/// socket.
struct Ends {
    tuner: Tuner,
    preview: Option<PreviewSocket>,
}

/// The next preview connection, or never without a socket.
async fn preview_conn(p: Option<&PreviewSocket>) -> Option<tokio::net::UnixStream> {
    match p {
        Some(p) => p.accept().await,
        None => std::future::pending().await,
    }
}

/// The loop, until `shutdown`: camera events through `det`, the recorder's reports to the
/// herald, preview requests, and a tick at least every [`TICK`] (which also looks at the
/// overrides file and writes the status record, `health`).
async fn detect(
    det: &mut Detection,
    health: &mut Health,
    client: &mut FrameClient,
    (herald, mqtt): (&Herald, Option<&Mqtt>),
    progress: &Progress,
    ends: &mut Ends,
    shutdown: impl Future<Output = ()>,
) {
    let mut buf = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status_log = tokio::time::Instant::now();
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            () = &mut shutdown => return,
            Some(report) = det.recorder.next_report() => {
                herald.tell(&report);
                health.on_report(&report);
                continue;
            }
            Some(conn) = preview_conn(ends.preview.as_ref()) => {
                if let Some(p) = ends.preview.as_mut() {
                    p.answer(conn, det.analyzer.detector(), det.preview_context());
                }
                continue;
            }
            ev = client.next(&mut buf) => Some(ev),
            _ = tick.tick() => None,
        };
        progress.beat_at(monotonic_ns());
        let Some(event) = event else {
            let log = last_status_log.elapsed() >= STATUS_LOG_EVERY;
            if log {
                last_status_log = tokio::time::Instant::now();
            }
            det.on_tick(client, mqtt, log);
            health.write(det, client, mqtt);
            if let Some(change) = ends.tuner.poll() {
                det.retune(&change.settings, change.armed);
            }
            det.retry_retune();
            continue;
        };
        let transition = det.on_event(event, &buf);
        if let (Some(m), Transition::Start { .. }) = (mqtt, &transition) {
            m.poster_frame(&buf);
        }
        det.on_transition(transition);
    }
}

/// The writer closes the event in progress; its end record and end hook follow.
async fn close_recorder(mut recorder: Recorder, herald: &Herald) {
    if let Ok(mut recorder) = tokio::task::spawn_blocking(move || {
        recorder.shutdown();
        recorder
    })
    .await
    {
        while let Some(report) = recorder.report() {
            herald.tell(&report);
        }
    }
}

/// Every task still running (the end hook of an event the shutdown ended has just started)
/// gets `grace` more, then is cut (logged): nothing is left behind.
async fn drain(tasks: &TaskTracker, stop: &CancellationToken, grace: Duration) {
    stop.cancel();
    tasks.close();
    if !tasks.is_empty() {
        tracing::info!(
            tasks = tasks.len(),
            "waiting for {} hook(s) still running (at most {grace:?})",
            tasks.len()
        );
    }
    tasks.wait().await;
}
