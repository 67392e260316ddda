//! The fan-out task: follows the announcements, keeps the camera's state and rate, and feeds
//! the hub live frames or the offline placeholder.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipc::announce::{Announcement, CameraState, ClientEvent, FrameAnnounce};

use super::hub::Hub;
use super::{FrameSource, IDLE_TICK, OFFLINE_AFTER, OFFLINE_PERIOD, TICK};

/// The fan-out's two periods: [`TICK`] while someone watches, [`IDLE_TICK`] while nobody does.
#[derive(Debug)]
struct Ticks {
    watched: tokio::time::Interval,
    idle: tokio::time::Interval,
}

/// The task that follows the announcements and feeds the hub.
#[derive(Debug)]
pub struct Feeder {
    hub: Arc<Hub>,
    connected: bool,
    streaming: bool,
    last_frame: Option<Instant>,
    /// Capture time of the newest frame announced (`CLOCK_MONOTONIC` ns), for the rate.
    last_mono_ns: Option<u64>,
    last_offline: Option<Instant>,
    /// The placeholder is rendered here (its allocation is reused).
    offline_jpeg: Vec<u8>,
}

impl Feeder {
    /// A feeder publishing into `hub`.
    pub fn new(hub: Arc<Hub>) -> Feeder {
        Feeder {
            hub,
            connected: false,
            streaming: false,
            last_frame: None,
            last_mono_ns: None,
            last_offline: None,
            offline_jpeg: Vec::new(),
        }
    }

    /// Runs until `shutdown` completes.
    pub async fn run<S: FrameSource>(mut self, mut source: S, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // Each interval is a timer only while it is awaited: while nobody watches only the
        // idle one runs.
        let mut ticks = Ticks {
            watched: tokio::time::interval(TICK),
            idle: tokio::time::interval(IDLE_TICK),
        };
        ticks
            .watched
            .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
            .idle
            .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(event) = self.wait(&mut source, &mut shutdown, &mut ticks).await else {
                self.hub.shut();
                return;
            };
            self.hub
                .metrics
                .feeder_alive_ms
                .store(ipc::service::monotonic_ns() / 1_000_000, Ordering::Relaxed);
            match event {
                Some(Announcement::Frame(announce)) => {
                    self.live_frame(announce);
                    continue;
                }
                Some(Announcement::Event(event)) => self.client_event(event),
                None => {}
            }
            self.maybe_offline();
        }
    }

    /// The next announcement, or `Some(None)` at a tick (or a viewer joining) with none;
    /// `None` on shutdown.
    async fn wait<S: FrameSource>(
        &self,
        source: &mut S,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        ticks: &mut Ticks,
    ) -> Option<Option<Announcement>> {
        let idle = self.hub.metrics.viewers.load(Ordering::Acquire) == 0;
        if idle && source.is_connected() {
            // Nobody watches: no wake-up per frame. What came since the last turn is taken
            // without waiting (the connection is parked in between, so announcements
            // arriving wake no thread), then the task sleeps until the idle tick or a viewer
            // joins (a snapshot reads the region's newest frame itself).
            if let Some(ev) = source.try_next() {
                return Some(Some(ev));
            }
            tokio::select! {
                () = shutdown => return None,
                _ = ticks.idle.tick() => {}
                () = self.hub.joined.notified() => {}
            }
            Some(None)
        } else {
            tokio::select! {
                () = shutdown => None,
                ev = source.next() => Some(Some(ev)),
                _ = ticks.watched.tick() => Some(None),
            }
        }
    }

    /// Connected, a camera state, or gone: the hub's region and status follow.
    fn client_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Connected(hello) => {
                tracing::info!(source = %hello.source, width = hello.width, height = hello.height, state = hello.state.name(), "connected to capture-svc");
                if let Err(why) = self.hub.attach(&hello) {
                    tracing::warn!(
                        region = %hello.region_path.display(),
                        "cannot map the frame region ({why}); viewers get the offline frame until capture-svc is reconnected (it is retried on each connection)"
                    );
                }
                self.connected = true;
                self.camera_state(&hello.state);
                self.hub.update_status(|s| {
                    s.source.clone_from(&hello.source);
                    s.width = hello.width;
                    s.height = hello.height;
                });
            }
            ClientEvent::State(state) => {
                tracing::info!(state = state.name(), "camera state changed");
                self.camera_state(&state);
            }
            ClientEvent::Gone { reason } => {
                tracing::warn!(%reason, "capture-svc is gone; viewers get the offline frame");
                self.connected = false;
                self.streaming = false;
                self.hub.not_live();
                self.hub.update_status(|s| {
                    s.state = "offline".into();
                    s.reason = Some(reason);
                    s.fps = 0.0;
                });
            }
            // `next_announcement` reports frames as announcements, never copied.
            ClientEvent::Heartbeat(_) | ClientEvent::Frame(_) => {}
        }
    }

    fn camera_state(&mut self, state: &CameraState) {
        self.streaming = *state == CameraState::Streaming;
        let reason = match state {
            CameraState::Restarting { reason } | CameraState::Failed { reason } => {
                Some(reason.clone())
            }
            _ => None,
        };
        self.hub.update_status(|s| {
            s.state = state.name().into();
            s.reason = reason;
        });
    }

    fn is_offline(&self, now: Instant) -> bool {
        !self.connected
            || !self.streaming
            || self
                .last_frame
                .is_none_or(|t| now.duration_since(t) > OFFLINE_AFTER)
    }

    fn maybe_offline(&mut self) {
        let now = Instant::now();
        if !self.is_offline(now)
            || self
                .last_offline
                .is_some_and(|t| now.duration_since(t) < OFFLINE_PERIOD)
        {
            return;
        }
        if self.connected && self.streaming {
            self.hub.update_status(|s| {
                s.state = "stalled".into();
                s.fps = 0.0;
            });
        }
        self.last_offline = Some(now);
        let wall_ns = ipc::service::wall_ns();
        crate::offline::render(wall_ns / 1_000_000_000, &mut self.offline_jpeg);
        self.hub.placeholder(&self.offline_jpeg, wall_ns);
    }

    /// A live frame was announced: the camera's state and rate are updated, and the frame is
    /// copied only if someone streams (no allocation or formatting here otherwise).
    fn live_frame(&mut self, announce: FrameAnnounce) {
        let now = Instant::now();
        self.hub.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
        // A frame is proof of a working camera, whatever state was last announced (a source
        // may still say `starting` while its first frames flow).
        self.streaming = true;
        self.last_frame = Some(now);
        self.last_offline = None;
        // Rate and age from the capture times (announcements read in a batch arrive together).
        let age =
            Duration::from_nanos(ipc::service::monotonic_ns().saturating_sub(announce.mono_ns));
        let captured = now.checked_sub(age).unwrap_or(now);
        let prev = self.last_mono_ns.replace(announce.mono_ns);
        self.hub.update_status(|s| {
            if let Some(p) = prev {
                let dt = announce.mono_ns.saturating_sub(p) as f64 / 1e9;
                if dt > 0.0 {
                    // The mean interval, not the mean of instantaneous rates: frames that
                    // arrive in a burst after a gap (a camera or a loaded machine catching up)
                    // average out with the gap instead of reading as a thousand fps.
                    let mean_dt = if s.fps > 0.0 { 1.0 / s.fps } else { dt };
                    s.fps = 1.0 / (mean_dt * 0.9 + dt * 0.1);
                }
            }
            s.last_frame = Some(captured);
            if s.state != "streaming" {
                s.state = "streaming".into();
            }
            s.reason = None;
        });
        self.hub.announced();
    }
}
