//! The service: reads frames from `capture-svc` through `ipc`, runs the analyzer, feeds the
//! recorder, logs events to the journal, fires hooks, and talks to systemd.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use ipc::announce::{CameraState, ClientConfig, ClientEvent, ClientStats, FrameClient, MOTION_SVC};
use ipc::jpeg::{FrameLimits, FrameRejected};
use ipc::service::{Notifier, monotonic_ns};
use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::analyzer::{Analyzer, FrameInput};
use crate::config::Settings;
use crate::event::Transition;
use crate::hooks::Hooks;
use crate::life::Herald;
use crate::recorder::{
    DiskState, EndInfo, FrameTag, Recorder, RecorderConfig, RecorderStats, log_recovery,
    next_counter,
};
use crate::store::{self, EventMeta};

/// The detection loop turns at least this often, frames or not (a camera outage included):
/// it refreshes the systemd status and proves to the watchdog that it is alive.
pub const TICK: Duration = Duration::from_secs(1);
/// How often the counters also go to the log.
pub const STATUS_LOG_EVERY: Duration = Duration::from_secs(600);

/// When the detection loop last made progress (monotonic ns), shared with the watchdog task:
/// systemd's watchdog is pinged only while this is fresh, so a loop that hangs gets the
/// service restarted, while a camera outage (the loop still turning) does not.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    /// The loop made progress at `now_ns`.
    pub fn beat_at(&self, now_ns: u64) {
        // Relaxed: a lone timestamp; the watchdog needs no other memory to be visible.
        self.0.store(now_ns, Ordering::Relaxed);
    }

    /// Whether the last progress is at most `within` before `now_ns`.
    pub fn fresh_at(&self, now_ns: u64, within: Duration) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        now_ns.saturating_sub(last) <= within.as_nanos() as u64
    }
}

/// Calls `ping` (systemd's watchdog) every half `interval` while `progress` is at most
/// `stall_after` old; a stall is logged once. The task is spawned on `tasks` and ends when
/// `shutdown` is cancelled.
fn spawn_watchdog(
    (tasks, shutdown): (&TaskTracker, &CancellationToken),
    interval: Duration,
    stall_after: Duration,
    progress: Progress,
    ping: impl Fn() + Send + 'static,
) {
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        let mut stalled = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if progress.fresh_at(monotonic_ns(), stall_after) {
                ping();
                stalled = false;
            } else if !stalled {
                stalled = true;
                tracing::error!(
                    "the detection loop made no progress for {stall_after:?}: not pinging the watchdog, systemd will restart motion-svc"
                );
            }
        }
    });
}

/// Frames refused before decoding (hostile or broken headers) are logged at most once per
/// interval, with a count of the others.
static REJECTED_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
/// Frames that failed to decode, likewise.
static CORRUPT_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// Camera state changes a peer on the announce socket can repeat at will (a flapping or
/// fake capture-svc): each kind of line at most once per interval, then a count.
static CAMERA_RESTART_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static CAMERA_BACK_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static CAMERA_STATE_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);
static CAMERA_OUTAGE_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// Every throttled line of the detection loop and what it is about, for the summary lines.
static THROTTLED: [(&LogThrottle, &str); 6] = [
    (&REJECTED_LOG, "frames refused before decoding"),
    (&CORRUPT_LOG, "undecodable frames skipped"),
    (&CAMERA_RESTART_LOG, "capture restarts"),
    (&CAMERA_BACK_LOG, "camera returns"),
    (&CAMERA_STATE_LOG, "camera not-streaming states"),
    (&CAMERA_OUTAGE_LOG, "camera outages"),
];

/// Every [`FrameRejected`] kind, in the order the status line names them.
const REJECT_KINDS: [&str; 5] = [
    "too_large",
    "too_much_memory",
    "not_jpeg",
    "truncated",
    "unsupported",
];

/// The gate every frame passes before it is decoded or recorded: [`ipc::jpeg::check`]
/// against the camera's announced geometry ([`FrameLimits::for_camera`]) and the decode
/// memory budget, with a count per reason.
#[derive(Debug, Clone)]
pub struct FrameGate {
    limits: FrameLimits,
    rejected: [u64; REJECT_KINDS.len()],
}

impl Default for FrameGate {
    fn default() -> Self {
        FrameGate {
            limits: FrameLimits::default(),
            rejected: [0; REJECT_KINDS.len()],
        }
    }
}

impl FrameGate {
    /// The camera announced `width` x `height` (0 when unknown). Returns whether that changed
    /// the limits.
    pub fn set_camera(&mut self, width: u32, height: u32) -> bool {
        let limits = FrameLimits::for_camera(width, height);
        let changed = limits != self.limits;
        self.limits = limits;
        changed
    }

    /// The limits frames are checked against.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Checks one frame's headers; a refused frame is counted.
    ///
    /// # Errors
    /// Why the frame must be neither decoded nor recorded.
    pub fn check(&mut self, jpeg: &[u8]) -> Result<(), FrameRejected> {
        let r = match ipc::jpeg::check(jpeg, &self.limits) {
            Ok(_) => return Ok(()),
            Err(r) => r,
        };
        if let Some(i) = REJECT_KINDS.iter().position(|k| *k == r.kind()) {
            self.rejected[i] += 1;
        }
        Err(r)
    }

    /// Frames refused in all.
    pub fn rejected(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// `N rejected`, and the count of each reason seen, e.g.
    /// `3 rejected (2 too large, 1 too much memory)`.
    fn describe(&self) -> String {
        let mut s = format!("{} rejected", self.rejected());
        let parts: Vec<String> = REJECT_KINDS
            .iter()
            .zip(self.rejected)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
            .collect();
        if !parts.is_empty() {
            s.push_str(&format!(" ({})", parts.join(", ")));
        }
        s
    }
}

/// The counters, for `systemctl status` and the periodic log line.
fn status_text(
    camera_ok: bool,
    events: u64,
    a: &Analyzer,
    (c, r, gate, disk): (ClientStats, RecorderStats, &FrameGate, &DiskState),
) -> String {
    let (sel, st) = (a.selection(), a.stats());
    let disk = match disk {
        DiskState::Ok => "events disk ok".to_owned(),
        bad => format!("events disk {}: recording nothing", bad.describe()),
    };
    format!(
        "camera {}; {disk}; {} frames, {} analysed, {} not due, {} gaps, {} repeated seq, {} duplicate, {} corrupt, {}, {} grey, {} re-learns, {} torn; {events} events, {} clip frames dropped",
        if camera_ok { "streaming" } else { "away" },
        c.frames,
        sel.analysed,
        sel.skipped,
        sel.gaps,
        sel.duplicates,
        st.duplicates,
        st.corrupt + c.corrupt,
        gate.describe(),
        st.grey,
        st.relearns,
        c.torn,
        r.dropped,
    )
}

/// Sets the systemd status line to the counters and, with `log`, logs them with a field each.
fn report_status(
    camera_ok: bool,
    events: u64,
    a: &Analyzer,
    (c, r, gate, disk): (ClientStats, RecorderStats, &FrameGate, &DiskState),
    log: bool,
) {
    let text = status_text(camera_ok, events, a, (c, r, gate, disk));
    Notifier.status(&text);
    if !log {
        return;
    }
    let (sel, st) = (a.selection(), a.stats());
    tracing::info!(
        frames = c.frames,
        analysed = sel.analysed,
        skipped = sel.skipped,
        gaps = sel.gaps,
        seq_duplicates = sel.duplicates,
        duplicates = st.duplicates,
        corrupt = st.corrupt + c.corrupt,
        rejected = gate.rejected(),
        grey = st.grey,
        scene_changes = st.scene_changes,
        relearns = st.relearns,
        torn = c.torn,
        clip_dropped = r.dropped,
        "status: {text}"
    );
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The announce socket of capture-svc.
    pub socket_path: PathBuf,
    /// The `[motion]` section with flags applied, validated.
    pub settings: Settings,
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
    let events_dir = rc.settings.events_dir.clone();
    // A full, read-only or broken events disk never stops detection: the recorder says what
    // is wrong (status line, journal), records nothing, and retries.
    let recovery_pending = match std::fs::create_dir_all(&events_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| store::recover(&events_dir).map_err(|e| e.to_string()))
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
    };
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
        limits: rc.settings.limits,
        recovery_pending,
    })
    .context("cannot start the writer thread")?;
    // Every task of the service (hooks, the watchdog) is tracked, and drained at shutdown.
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    let hooks = Hooks::new(rc.settings.hooks.clone(), tasks.clone(), stop.clone());
    let herald = Herald::new(events_dir.clone(), hooks);
    let mut analyzer = Analyzer::new(&rc.settings)?;
    let mut client = FrameClient::new(ClientConfig::new(rc.socket_path.clone(), MOTION_SVC));
    let notifier = Notifier;
    let progress = Progress::default();
    progress.beat_at(monotonic_ns());
    // `iv` is half of WatchdogSec; the loop turns every TICK even without frames.
    if let Some(iv) = notifier.watchdog_interval() {
        let ping = || Notifier.watchdog();
        spawn_watchdog(
            (&tasks, &stop),
            iv,
            iv.max(3 * TICK),
            progress.clone(),
            ping,
        );
    }
    notifier.ready();
    tracing::info!(events_dir = %events_dir.display(), socket = %rc.socket_path.display(), "motion-svc ready");

    let mut buf = Vec::new();
    let mut gate = FrameGate::default();
    let mut generation: Option<u64> = None;
    let mut camera_ok = true;
    let mut current: Option<(String, u64)> = None; // id, start wall ms
    let mut frame_size = (0u32, 0u32);
    // The rate the camera announced (its hello), for the clip's header.
    let mut camera_fps = 0.0f64;
    // (monotonic ns, wall ns) of the last frame: converts event times to wall clock.
    let mut clock = (0u64, 0u64);
    let mut events = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status_log = tokio::time::Instant::now();
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            () = &mut shutdown => break,
            Some(report) = recorder.next_report() => {
                herald.tell(&report);
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
            let disk = recorder.disk();
            let counts = (client.stats(), recorder.stats(), &gate, &disk);
            report_status(camera_ok, events, &analyzer, counts, log);
            for (throttle, what) in &THROTTLED {
                if let Some(n) = throttle.flush() {
                    tracing::warn!(held_back = n, "{n} more {what} (not logged one by one)");
                }
            }
            continue;
        };
        let transition = match event {
            ClientEvent::Connected(hello) => {
                if generation.is_some_and(|g| g != hello.generation) {
                    if let Some(held_back) = CAMERA_RESTART_LOG.check() {
                        tracing::info!(
                            generation = hello.generation,
                            held_back,
                            "capture restarted (new region generation): background re-learned"
                        );
                    }
                    recorder.reset();
                }
                generation = Some(hello.generation);
                frame_size = (hello.width, hello.height);
                camera_fps = f64::from(hello.nominal_fps);
                gate.set_camera(hello.width, hello.height);
                analyzer.set_frame_limits(gate.limits());
                if !camera_ok {
                    if let Some(held_back) = CAMERA_BACK_LOG.check() {
                        tracing::info!(source = %hello.source, held_back, "camera back");
                    }
                    camera_ok = true;
                }
                analyzer.camera_lost()
            }
            ClientEvent::Frame(meta) => 'frame: {
                // capture-svc announces each frame's size as well as the hello's (a camera may
                // change resolution): the JPEG may be no larger than what was announced.
                if gate.set_camera(meta.width, meta.height) {
                    analyzer.set_frame_limits(gate.limits());
                }
                // Before anything reads the frame: a hostile header must cost nothing, and a
                // refused frame goes neither to the analyzer nor into a recording.
                if let Err(r) = gate.check(&buf) {
                    if let Some(held_back) = REJECTED_LOG.check() {
                        tracing::warn!(
                            seq = meta.seq,
                            reason = r.kind(),
                            held_back,
                            "frame {} refused before decoding: {r}; skipped and counted in the status (is capture-svc the real camera?)",
                            meta.seq
                        );
                    }
                    break 'frame Transition::None;
                }
                frame_size = (meta.width, meta.height);
                let out = analyzer.offer(FrameInput {
                    seq: meta.seq,
                    mono_ns: meta.mono_ns,
                    wall_ns: meta.wall_ns,
                    jpeg: &buf,
                });
                if let Some(e) = analyzer.take_error() {
                    if let Some(held_back) = CORRUPT_LOG.check() {
                        tracing::warn!(
                            seq = meta.seq,
                            held_back,
                            "frame {} skipped: {e}",
                            meta.seq
                        );
                    }
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
                        if let Some(held_back) = CAMERA_BACK_LOG.check() {
                            tracing::info!(held_back, "camera streaming again");
                        }
                        camera_ok = true;
                    }
                    Transition::None
                } else {
                    if camera_ok || !matches!(state, CameraState::Starting) {
                        if let Some(held_back) = CAMERA_STATE_LOG.check() {
                            tracing::warn!(
                                state = state.name(),
                                held_back,
                                "camera not streaming ({state:?}): not motion, background will be re-learned"
                            );
                        }
                    }
                    camera_ok = false;
                    analyzer.camera_lost()
                }
            }
            ClientEvent::Heartbeat(_) => Transition::None,
            ClientEvent::Gone { reason } => {
                if camera_ok {
                    if let Some(held_back) = CAMERA_OUTAGE_LOG.check() {
                        tracing::warn!(
                            held_back,
                            "camera outage: capture-svc unreachable ({reason}); not motion, waiting for it"
                        );
                    }
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
                    peak_score: peak.score,
                    peak_area_pct: peak.area_pct,
                    boxes: peak.boxes.clone(),
                    ..EventMeta::new(id.clone(), start_ms, frame_size.0, frame_size.1)
                };
                events += 1;
                // The recorder reports the start once it has set up (or failed to set up)
                // the folder and the clip: the herald tells the journal and the hooks then.
                recorder.start_event(meta, first_ns, camera_fps);
                current = Some((id, start_ms));
            }
            Transition::End {
                last_motion,
                reason,
            } => {
                if current.take().is_some() {
                    let peak = analyzer.peak().clone();
                    let last_ns = (last_motion * 1e9) as u64;
                    recorder.end_event(EndInfo {
                        end_unix_ms: to_wall_ms(clock, last_ns),
                        last_motion_ns: last_ns,
                        peak_score: peak.score,
                        peak_area_pct: peak.area_pct,
                        boxes: peak.boxes.clone(),
                        reason,
                    });
                }
            }
        }
    }
    notifier.stopping();
    if let Some((id, _)) = current.take() {
        tracing::info!(event = %id, "shutting down during an event: the clip is closed");
    }
    let disk = recorder.disk();
    let counts = (client.stats(), recorder.stats(), &gate, &disk);
    report_status(camera_ok, events, &analyzer, counts, true);
    // The writer closes the event in progress; its end record and end hook follow.
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
    // The end hook of an event cut by the shutdown has just started: every hook still running
    // gets its grace time, then is cut (logged); nothing is left behind.
    stop.cancel();
    tasks.close();
    if !tasks.is_empty() {
        tracing::info!(
            tasks = tasks.len(),
            "waiting for {} hook(s) still running (at most {:?})",
            tasks.len(),
            rc.settings.hooks.shutdown_grace
        );
    }
    tasks.wait().await;
    tracing::info!("motion-svc stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_fresh_only_within_its_window() {
        let p = Progress::default();
        let s = 1_000_000_000;
        p.beat_at(10 * s);
        assert!(p.fresh_at(10 * s, Duration::from_secs(3)));
        assert!(p.fresh_at(13 * s, Duration::from_secs(3)));
        assert!(!p.fresh_at(13 * s + 1, Duration::from_secs(3)));
        p.beat_at(20 * s);
        assert!(p.fresh_at(21 * s, Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn the_watchdog_stops_pinging_when_the_loop_stalls_and_resumes_after() {
        let pings = Arc::new(AtomicU64::new(0));
        let count = pings.clone();
        let p = Progress::default();
        p.beat_at(monotonic_ns());
        let stall = Duration::from_millis(200);
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let ping = move || {
            count.fetch_add(1, Ordering::Relaxed);
        };
        let interval = Duration::from_millis(40);
        spawn_watchdog((&tasks, &stop), interval, stall, p.clone(), ping);
        // The loop turns: pings.
        for _ in 0..10 {
            p.beat_at(monotonic_ns());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(pings.load(Ordering::Relaxed) > 0);
        // The loop stalls: once the last beat is older than `stall`, no ping at all.
        tokio::time::sleep(stall + Duration::from_millis(50)).await;
        let at_stall = pings.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pings.load(Ordering::Relaxed), at_stall);
        // It turns again: pings again.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while pings.load(Ordering::Relaxed) == at_stall {
            assert!(
                std::time::Instant::now() < end,
                "no ping after the loop came back"
            );
            p.beat_at(monotonic_ns());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[test]
    fn status_names_every_counter() {
        let a = Analyzer::new(&crate::config::MotionConfig::default().validate().unwrap()).unwrap();
        let c = ClientStats {
            frames: 7,
            torn: 2,
            ..ClientStats::default()
        };
        let r = RecorderStats {
            dropped: 3,
            ..RecorderStats::default()
        };
        let mut gate = FrameGate::default();
        gate.set_camera(320, 240);
        let big = crate::test_jpeg::encode_gray(640, 480, &vec![9; 640 * 480], 80).unwrap();
        assert!(matches!(
            gate.check(&big),
            Err(FrameRejected::TooLarge { .. })
        ));
        assert!(gate.check(b"garbage").is_err());
        let t = status_text(false, 4, &a, (c, r, &gate, &DiskState::Full));
        for word in [
            "camera away",
            "events disk full: recording nothing",
            "7 frames",
            "analysed",
            "not due",
            "gaps",
            "duplicate",
            "corrupt",
            "2 rejected (1 too large, 1 not jpeg)",
            "grey",
            "re-learns",
            "2 torn",
            "4 events",
            "3 clip frames dropped",
        ] {
            assert!(t.contains(word), "{word:?} missing in {t:?}");
        }
    }
}
