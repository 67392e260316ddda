//! The detection loop's state and its steps: a camera event in, a transition out, an event
//! started or ended in the recorder.

use ipc::announce::{CameraState, ClientEvent, FrameClient, Hello};
use ipc::region::FrameMeta;
use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};

use super::FrameGate;
use super::status::report_status;
use crate::analyzer::{Analyzer, FrameInput};
use crate::config::Settings;
use crate::event::Transition;
use crate::mqtt::Mqtt;
use crate::recorder::{EndInfo, FrameTag, Recorder, Retune};
use events::EventMeta;

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

/// What the loop knows between two camera events.
pub(super) struct Detection {
    pub(super) recorder: Recorder,
    pub(super) analyzer: Analyzer,
    pub(super) gate: FrameGate,
    /// The region generation of the last hello: a new one is a capture restart.
    generation: Option<u64>,
    pub(super) camera_ok: bool,
    /// The camera's state as MQTT reports it: `streaming`, capture's state name, or `away`.
    camera_state: &'static str,
    /// The event in progress: its id.
    current: Option<String>,
    frame_size: (u32, u32),
    /// The rate the camera announced (its hello), for the clip's header.
    camera_fps: f64,
    /// (monotonic ns, wall ns) of the last frame: converts event times to wall clock.
    clock: (u64, u64),
    /// Events started.
    pub(super) events: u64,
    /// The last event id's counter.
    counter: u32,
    /// Armed (the overrides' `detection`): disarmed, motion starts no event.
    pub(super) armed: bool,
    /// New recorder settings the control queue had no room for yet.
    pending_retune: Option<Retune>,
}

impl Detection {
    /// Ids continue after `counter`.
    pub(super) fn new(recorder: Recorder, analyzer: Analyzer, counter: u32) -> Detection {
        Detection {
            recorder,
            analyzer,
            gate: FrameGate::default(),
            generation: None,
            camera_ok: true,
            camera_state: "starting",
            current: None,
            frame_size: (0, 0),
            camera_fps: 0.0,
            clock: (0, 0),
            events: 0,
            counter,
            armed: true,
            pending_retune: None,
        }
    }

    /// New settings while running: the analyzer's at once (background kept), the
    /// recorder's from the next event, and armed or not.
    pub(super) fn retune(&mut self, s: &Settings, armed: bool) {
        self.analyzer.retune(s);
        self.pending_retune = Some(Retune {
            pre_capture_s: s.events.pre_capture_s,
            start_delay_s: crate::event::max_first_motion_age_s(
                s.events.min_duration_s,
                s.analysis_fps,
            ),
            post_capture_s: s.events.post_capture_s,
            limits: s.limits,
        });
        self.retry_retune();
        if armed && !self.armed && self.current.is_none() {
            // Motion seen while disarmed started nothing: what goes on now is a new event.
            self.analyzer.forget_event();
        }
        if armed != self.armed {
            tracing::info!(
                armed,
                "detection {}",
                if armed {
                    "armed: motion starts events again"
                } else {
                    "disarmed: no events, clips or hooks until armed again (the preview goes on)"
                }
            );
        }
        self.armed = armed;
    }

    /// Hands the recorder its new settings if they are still waiting.
    pub(super) fn retry_retune(&mut self) {
        if let Some(r) = self.pending_retune.take() {
            self.pending_retune = self.recorder.retune(r).err();
        }
    }

    /// What the live preview says besides the detector's picture.
    pub(super) fn preview_context(&self) -> crate::preview::Context {
        crate::preview::Context {
            wall_ms: self.clock.1 / 1_000_000,
            armed: self.armed,
            recording: self.current.is_some(),
        }
    }

    /// A tick without a camera event: the status line (and the log with `log`), and the
    /// counts of what the throttles held back.
    pub(super) fn on_tick(&self, client: &FrameClient, mqtt: Option<&Mqtt>, log: bool) {
        if let Some(m) = mqtt {
            m.tick(
                self.camera_state,
                self.analyzer.selection().analysed,
                self.armed,
            );
        }
        self.report(client, mqtt, log);
        for (throttle, what) in &THROTTLED {
            if let Some(n) = throttle.flush() {
                tracing::warn!(held_back = n, "{n} more {what} (not logged one by one)");
            }
        }
    }

    /// The counters, to systemd (and the log with `log`).
    pub(super) fn report(&self, client: &FrameClient, mqtt: Option<&Mqtt>, log: bool) {
        let disk = self.recorder.disk();
        let counts = (client.stats(), self.recorder.stats(), &self.gate, &disk);
        let mqtt = mqtt.map(Mqtt::describe);
        report_status(
            self.camera_ok,
            self.events,
            &self.analyzer,
            counts,
            mqtt,
            log,
        );
    }

    /// One camera event (`jpeg` holds a frame's bytes); what it changed.
    pub(super) fn on_event(&mut self, event: ClientEvent, jpeg: &[u8]) -> Transition {
        match event {
            ClientEvent::Connected(hello) => self.on_hello(&hello),
            ClientEvent::Frame(meta) => self.on_frame(&meta, jpeg),
            ClientEvent::State(state) => self.on_state(state),
            ClientEvent::Heartbeat(_) => Transition::None,
            ClientEvent::Gone { reason } => {
                if self.camera_ok {
                    if let Some(held_back) = CAMERA_OUTAGE_LOG.check() {
                        tracing::warn!(
                            held_back,
                            "camera outage: capture-svc unreachable ({reason}); not motion, waiting for it"
                        );
                    }
                }
                self.camera_ok = false;
                self.camera_state = "away";
                self.analyzer.camera_lost()
            }
        }
    }

    fn on_hello(&mut self, hello: &Hello) -> Transition {
        if self.generation.is_some_and(|g| g != hello.generation) {
            if let Some(held_back) = CAMERA_RESTART_LOG.check() {
                tracing::info!(
                    generation = hello.generation,
                    held_back,
                    "capture restarted (new region generation): background re-learned"
                );
            }
            self.recorder.reset();
        }
        self.generation = Some(hello.generation);
        self.frame_size = (hello.width, hello.height);
        self.camera_fps = f64::from(hello.nominal_fps);
        self.gate.set_camera(hello.width, hello.height);
        self.camera_state = "streaming";
        self.analyzer.set_frame_limits(self.gate.limits());
        if !self.camera_ok {
            if let Some(held_back) = CAMERA_BACK_LOG.check() {
                tracing::info!(source = %hello.source, held_back, "camera back");
            }
            self.camera_ok = true;
        }
        self.analyzer.camera_lost()
    }

    fn on_frame(&mut self, meta: &FrameMeta, jpeg: &[u8]) -> Transition {
        // capture-svc announces each frame's size as well as the hello's (a camera may
        // change resolution): the JPEG may be no larger than what was announced.
        if self.gate.set_camera(meta.width, meta.height) {
            self.analyzer.set_frame_limits(self.gate.limits());
        }
        // Before anything reads the frame: a hostile header must cost nothing, and a
        // refused frame goes neither to the analyzer nor into a recording.
        if let Err(r) = self.gate.check(jpeg) {
            if let Some(held_back) = REJECTED_LOG.check() {
                tracing::warn!(
                    seq = meta.seq,
                    reason = r.kind(),
                    held_back,
                    "frame {} refused before decoding: {r}; skipped and counted in the status (is capture-svc the real camera?)",
                    meta.seq
                );
            }
            return Transition::None;
        }
        self.frame_size = (meta.width, meta.height);
        let out = self.analyzer.offer(FrameInput {
            seq: meta.seq,
            mono_ns: meta.mono_ns,
            wall_ns: meta.wall_ns,
            jpeg,
        });
        if let Some(e) = self.analyzer.take_error() {
            if let Some(held_back) = CORRUPT_LOG.check() {
                tracing::warn!(seq = meta.seq, held_back, "frame {} skipped: {e}", meta.seq);
            }
        }
        let tag = FrameTag {
            mono_ns: meta.mono_ns,
            wall_ns: meta.wall_ns,
            width: meta.width,
            height: meta.height,
            score: out.analysed.map(|a| a.1),
        };
        self.recorder.frame(jpeg, tag);
        self.clock = (meta.mono_ns, meta.wall_ns);
        out.transition
    }

    fn on_state(&mut self, state: CameraState) -> Transition {
        self.camera_state = state.name();
        if state == CameraState::Streaming {
            if !self.camera_ok {
                if let Some(held_back) = CAMERA_BACK_LOG.check() {
                    tracing::info!(held_back, "camera streaming again");
                }
                self.camera_ok = true;
            }
            return Transition::None;
        }
        if self.camera_ok || !matches!(state, CameraState::Starting) {
            if let Some(held_back) = CAMERA_STATE_LOG.check() {
                tracing::warn!(
                    state = state.name(),
                    held_back,
                    "camera not streaming ({state:?}): not motion, background will be re-learned"
                );
            }
        }
        self.camera_ok = false;
        self.analyzer.camera_lost()
    }

    /// Starts or ends an event in the recorder. The recorder reports what it did, and the
    /// herald tells the journal and the hooks from that.
    pub(super) fn on_transition(&mut self, transition: Transition) {
        match transition {
            Transition::None => {}
            Transition::Start { .. } if !self.armed => {}
            Transition::Start { first_motion } => self.start_event(first_motion),
            Transition::End {
                last_motion,
                reason,
            } => {
                if self.current.take().is_some() {
                    let peak = self.analyzer.peak();
                    let last_ns = (last_motion * 1e9) as u64;
                    self.recorder.end_event(EndInfo {
                        end_unix_ms: to_wall_ms(self.clock, last_ns),
                        last_motion_ns: last_ns,
                        peak_score: peak.score,
                        peak_area_pct: peak.area_pct,
                        boxes: peak.boxes.clone(),
                        track: self.analyzer.track().frames().to_vec(),
                        reason,
                    });
                }
            }
        }
    }

    /// Names the event that began with motion at `first_motion` s and hands it over.
    fn start_event(&mut self, first_motion: f64) {
        let first_ns = (first_motion * 1e9) as u64;
        let start_ms = to_wall_ms(self.clock, first_ns);
        let id = events::next_id(start_ms, &mut self.counter);
        let peak = self.analyzer.peak();
        let (width, height) = self.frame_size;
        let meta = EventMeta {
            peak_score: peak.score,
            peak_area_pct: peak.area_pct,
            boxes: peak.boxes.clone(),
            ..EventMeta::new(id.clone(), start_ms, width, height)
        };
        self.events += 1;
        self.recorder.start_event(meta, first_ns, self.camera_fps);
        self.current = Some(id);
    }

    /// The event in progress when the loop stops, if any (the recorder closes it).
    pub(super) fn take_current(&mut self) -> Option<String> {
        self.current.take()
    }
}

/// Wall-clock ms of monotonic time `mono_ns`, using the last frame's pair of timestamps.
fn to_wall_ms(clock: (u64, u64), mono_ns: u64) -> u64 {
    let (ref_mono, ref_wall) = clock;
    if ref_wall == 0 {
        return events::now_unix_ms();
    }
    let wall = if mono_ns <= ref_mono {
        ref_wall.saturating_sub(ref_mono - mono_ns)
    } else {
        ref_wall + (mono_ns - ref_mono)
    };
    wall / 1_000_000
}
