//! MQTT and Home Assistant: each camera announces itself with Home Assistant's MQTT
//! discovery, reports motion, events, a poster and its state, and says `offline` through the
//! broker's last will when it dies.
//!
//! Off unless `[mqtt]` has a `url`: then [`Mqtt::start`] is never called, and no task,
//! socket or buffer of MQTT exists. On, the service's side of it never waits: [`Mqtt::event`],
//! [`Mqtt::poster_frame`] and [`Mqtt::tick`] take a short lock on the [`Outbox`] and return;
//! two tasks (in `link`) do the network: one drives the connection (reconnecting with backoff
//! and jitter), one sends what the outbox holds, one QoS 1 message at a time. A broker away
//! for a week costs at most `queue_messages` event messages and one value per retained topic.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hooks::HookKind;
use events::EventMeta;

pub mod config;
mod link;
pub mod localday;
pub mod outbox;
pub mod payload;

pub use config::{MqttConfig, MqttSettings};
use localday::Zone;
pub use outbox::{Message, Outbox, OutboxStats};
use payload::Topics;

/// Largest poster sent (bytes of JPEG); a larger frame is not sent, and counted.
pub const MAX_POSTER_BYTES: usize = 512 * 1024;

/// The retained slots of the outbox, in the order they are sent after a connect: discovery
/// configs (their count follows), then these.
const AVAILABILITY: usize = 0;
const ATTRIBUTES: usize = 1;
const MOTION: usize = 2;
const STATE: usize = 3;
const POSTER: usize = 4;
const DETECTION: usize = 5;
const DISCOVERY: usize = 6;

/// The files MQTT reads or writes besides the network.
#[derive(Debug, Clone)]
pub struct MqttPaths {
    /// Where the disk free is measured (the events folder).
    pub events_dir: PathBuf,
    /// Where `<prefix>/set/detection` writes (the web UI's overrides file).
    pub overrides_file: PathBuf,
    /// Holds `status/`: the other services' status records, for their health.
    pub runtime_dir: PathBuf,
}

/// The service's handle: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Mqtt {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: MqttSettings,
    topics: Topics,
    paths: MqttPaths,
    outbox: Mutex<Outbox>,
    /// Wakes the sender: something to send, or the link state changed.
    wake: Notify,
    facts: Mutex<Facts>,
}

/// What the state message is made of between two messages.
#[derive(Debug)]
struct Facts {
    last_sent: Option<Instant>,
    last_analysed: u64,
    camera: &'static str,
    armed: Option<bool>,
    /// The system's time zone, for the local day.
    zone: Zone,
    /// Event starts on a local day: `(day, count)`.
    today: (i64, u64),
    posters_too_big: u64,
}

impl Mqtt {
    /// Starts the link's tasks on `tasks`; they stop when `stop` is cancelled (after saying
    /// `offline`).
    ///
    /// # Errors
    /// The TLS setup failed (a CA file that cannot be read or holds no certificate).
    pub fn start(
        settings: MqttSettings,
        paths: MqttPaths,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> anyhow::Result<Mqtt> {
        let topics = Topics::new(&settings);
        let discovery = payload::discovery(&settings, &topics);
        let mut outbox = Outbox::new(DISCOVERY + discovery.len(), settings.queue_messages);
        let retained = |topic: &str, payload: Vec<u8>| Message {
            topic: topic.to_owned(),
            payload,
            retain: true,
        };
        for (i, (topic, payload)) in discovery.into_iter().enumerate() {
            outbox.set(DISCOVERY + i, retained(&topic, payload));
        }
        outbox.set(
            AVAILABILITY,
            retained(&topics.availability, b"online".to_vec()),
        );
        outbox.set(
            ATTRIBUTES,
            retained(&topics.attributes, payload::attributes(&settings)),
        );
        outbox.set(MOTION, retained(&topics.motion, b"OFF".to_vec()));
        let mqtt = Mqtt {
            shared: Arc::new(Shared {
                settings,
                topics,
                paths,
                outbox: Mutex::new(outbox),
                wake: Notify::new(),
                facts: Mutex::new(Facts {
                    last_sent: None,
                    last_analysed: 0,
                    camera: "starting",
                    armed: None,
                    zone: Zone::system(),
                    today: (i64::MIN, 0),
                    posters_too_big: 0,
                }),
            }),
        };
        link::spawn(&mqtt.shared, tasks, stop)?;
        Ok(mqtt)
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.shared.outbox)
    }

    /// An event started or ended (from the recorder's report): its message is queued, and
    /// motion is `ON` at the start, `OFF` at the end.
    pub fn event(&self, kind: HookKind, meta: &EventMeta) {
        let s = &self.shared;
        let json = payload::event(&s.settings, kind, meta);
        let on_off: &[u8] = if kind == HookKind::Start {
            b"ON"
        } else {
            b"OFF"
        };
        if kind == HookKind::Start {
            let mut f = lock(&s.facts);
            let day = f.zone.day(meta.start_unix_ms);
            match day.cmp(&f.today.0) {
                std::cmp::Ordering::Equal => f.today.1 += 1,
                std::cmp::Ordering::Greater => f.today = (day, 1),
                // The clock went back across midnight: not today's.
                std::cmp::Ordering::Less => {}
            }
        }
        let dropped = {
            let mut o = self.outbox();
            if let Some(p) = o.payload_mut(MOTION) {
                p.clear();
                p.extend_from_slice(on_off);
            }
            o.push(Message {
                topic: s.topics.events.clone(),
                payload: json,
                retain: false,
            })
        };
        if dropped {
            if let Some(held_back) = link::QUEUE_FULL_LOG.check() {
                tracing::warn!(
                    held_back,
                    "MQTT broker away: the queue of {} event messages is full, the oldest is dropped (counted in the status)",
                    s.settings.queue_messages
                );
            }
        }
        s.wake.notify_one();
    }

    /// The frame that started an event: the camera entity's picture (copied into the poster
    /// slot's buffer, reused from one event to the next).
    pub fn poster_frame(&self, jpeg: &[u8]) {
        if jpeg.len() > MAX_POSTER_BYTES {
            lock(&self.shared.facts).posters_too_big += 1;
            return;
        }
        {
            let mut o = self.outbox();
            match o.payload_mut(POSTER) {
                Some(p) => {
                    p.clear();
                    p.extend_from_slice(jpeg);
                }
                None => o.set(
                    POSTER,
                    Message {
                        topic: self.shared.topics.poster.clone(),
                        payload: jpeg.to_vec(),
                        retain: true,
                    },
                ),
            }
        }
        self.shared.wake.notify_one();
    }

    /// Called every second by the detection loop with the camera's state, the frames
    /// analysed so far and whether detection is armed: sends the state when the camera's
    /// state changed or every `state_interval`, and the detection switch when it changed.
    pub fn tick(&self, camera: &'static str, analysed: u64, armed: bool) {
        let s = &self.shared;
        let now = Instant::now();
        let mut f = lock(&s.facts);
        if f.armed != Some(armed) {
            f.armed = Some(armed);
            let on_off: &[u8] = if armed { b"ON" } else { b"OFF" };
            lock(&s.outbox).set(
                DETECTION,
                Message {
                    topic: s.topics.detection.clone(),
                    payload: on_off.to_vec(),
                    retain: true,
                },
            );
            s.wake.notify_one();
        }
        let due = f
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= s.settings.state_interval);
        if !due && f.camera == camera {
            return;
        }
        let fps = match f.last_sent {
            Some(t) => (analysed.saturating_sub(f.last_analysed)) as f64 / secs(now - t),
            None => 0.0,
        };
        let today = f.zone.day(events::now_unix_ms());
        let events_today = if f.today.0 == today { f.today.1 } else { 0 };
        (f.last_sent, f.last_analysed, f.camera) = (Some(now), analysed, camera);
        drop(f);
        let disk_free_mib = events::free_bytes(&s.paths.events_dir).map(|b| b >> 20);
        let health = |service| match ipc::status::read(&s.paths.runtime_dir, service) {
            Ok(r) if r.running() => "running",
            Ok(_) | Err(ipc::status::StatusError::Missing { .. }) => "not running",
            Err(_) => "unknown",
        };
        let (capture, web) = (
            health(ipc::status::Service::Capture),
            health(ipc::status::Service::Web),
        );
        let mut o = self.outbox();
        let st = payload::State {
            camera,
            analysed_fps: fps,
            events_today,
            disk_free_mib,
            mqtt_dropped: o.stats().dropped,
            capture,
            web,
        };
        o.set(
            STATE,
            Message {
                topic: s.topics.state.clone(),
                payload: payload::state(&st),
                retain: true,
            },
        );
        drop(o);
        s.wake.notify_one();
    }

    /// The outbox's counters (connected, queued, dropped, delivered).
    pub fn stats(&self) -> OutboxStats {
        self.outbox().stats()
    }

    /// For the status line: `mqtt connected, 0 queued, 0 dropped`.
    pub fn describe(&self) -> String {
        let s = self.stats();
        format!(
            "mqtt {}, {} queued, {} mqtt dropped",
            if s.connected { "connected" } else { "away" },
            s.queued,
            s.dropped
        )
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-3)
}

/// A lock that a panic elsewhere does not poison for good (the data stays consistent:
/// every critical section is a few assignments).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
