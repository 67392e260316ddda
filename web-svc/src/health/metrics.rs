//! `/metrics` of capture-svc and motion-svc, from their status records: `mecam_capture_*` and
//! `mecam_motion_*` beside web-svc's own `mecam_web_*`. A service that is not running has
//! `up 0` and nothing else (its last counters belong to a process that is gone).

use std::path::PathBuf;

use ipc::status::{CameraState, CaptureStatus, Detail, MotionStatus, Service};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A value of one metric.
enum Num {
    Int(u64),
    Float(f64),
}

/// One metric read from a service's record.
struct Spec<D> {
    /// The name after the service's prefix; a counter's without `_total`.
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: fn(&D) -> Num,
}

const fn counter<D>(name: &'static str, help: &'static str, read: fn(&D) -> Num) -> Spec<D> {
    Spec {
        name,
        help,
        kind: MetricType::Counter,
        read,
    }
}

const fn gauge<D>(name: &'static str, help: &'static str, read: fn(&D) -> Num) -> Spec<D> {
    Spec {
        name,
        help,
        kind: MetricType::Gauge,
        read,
    }
}

/// capture-svc's metrics (prefix `mecam_capture`).
const CAPTURE: &[Spec<CaptureStatus>] = &[
    gauge("camera_up", "1 while the camera streams frames.", |c| {
        Num::Int(u64::from(c.camera == CameraState::Streaming))
    }),
    gauge("fps", "Frames published per second (last second).", |c| {
        Num::Float(c.fps_in)
    }),
    counter("frames", "Frames published into the region.", |c| {
        Num::Int(c.frames_in)
    }),
    counter(
        "splitter_garbage_bytes",
        "Bytes the JPEG splitter threw away.",
        |c| Num::Int(c.splitter_garbage_bytes),
    ),
    counter(
        "splitter_errors",
        "Frames the splitter or the region dropped (truncated, oversized, corrupt).",
        |c| Num::Int(c.splitter_dropped),
    ),
    counter(
        "frames_refused",
        "Frames refused before publishing (bad headers, too large).",
        |c| Num::Int(c.frames_refused),
    ),
    counter("camera_restarts", "Camera restarts.", |c| {
        Num::Int(c.camera_restarts)
    }),
];

/// motion-svc's metrics (prefix `mecam_motion`).
const MOTION: &[Spec<MotionStatus>] = &[
    gauge(
        "camera_up",
        "1 while frames arrive from capture-svc.",
        |m| Num::Int(u64::from(m.camera_ok)),
    ),
    counter("frames", "Frames received.", |m| Num::Int(m.frames_in)),
    counter("frames_analysed", "Frames analysed for motion.", |m| {
        Num::Int(m.frames_analysed)
    }),
    gauge(
        "analysed_fps",
        "Frames analysed per second (last second).",
        |m| Num::Float(m.analysed_fps),
    ),
    counter("events", "Motion events started.", |m| {
        Num::Int(m.events_total)
    }),
    gauge("recording", "1 while an event is being recorded.", |m| {
        Num::Int(u64::from(m.recording))
    }),
    counter(
        "queue_dropped_frames",
        "Frames the clip writer's queue dropped (slow disk).",
        |m| Num::Int(m.queue_dropped),
    ),
    counter("clip_errors", "Clips that failed to be written.", |m| {
        Num::Int(m.clip_errors)
    }),
    counter("clip_bytes", "Clip bytes written.", |m| {
        Num::Int(m.clip_bytes)
    }),
    counter(
        "retention_deletions",
        "Events deleted by the storage limits.",
        |m| Num::Int(m.retention_deletions),
    ),
    gauge(
        "disk_used_bytes",
        "Bytes used on the events' file system.",
        |m| Num::Int(m.disk_used_bytes),
    ),
    gauge(
        "disk_free_bytes",
        "Bytes free on the events' file system.",
        |m| Num::Int(m.disk_free_bytes),
    ),
    gauge(
        "last_event_timestamp_seconds",
        "When the last event started (Unix time; 0 if none since start).",
        |m| Num::Int(m.last_event_unix_ms.unwrap_or(0) / 1000),
    ),
    gauge(
        "mqtt_connected",
        "1 while connected to the MQTT broker (0 too with MQTT off).",
        |m| Num::Int(u64::from(m.mqtt.is_some_and(|q| q.connected))),
    ),
    gauge(
        "mqtt_queued_messages",
        "MQTT event messages waiting for the broker.",
        |m| Num::Int(m.mqtt.map_or(0, |q| q.queued)),
    ),
    counter(
        "mqtt_dropped_messages",
        "MQTT event messages dropped, oldest first, while the broker was away.",
        |m| Num::Int(m.mqtt.map_or(0, |q| q.dropped)),
    ),
    counter(
        "mqtt_delivered_messages",
        "MQTT messages the broker acknowledged.",
        |m| Num::Int(m.mqtt.map_or(0, |q| q.delivered)),
    ),
];

/// Reads the records of capture-svc and motion-svc at each scrape.
#[derive(Debug)]
pub struct ServiceMetrics {
    /// The runtime directory holding `status/`.
    pub runtime_dir: PathBuf,
    /// `Service::Capture` or `Service::Motion`.
    pub service: Service,
}

fn encode_one(
    encoder: &mut DescriptorEncoder<'_>,
    spec: (&str, &str, MetricType),
    value: Num,
) -> Result<(), std::fmt::Error> {
    let (name, help, kind) = spec;
    let metric = encoder.encode_descriptor(name, help, None, kind)?;
    match (kind, value) {
        (MetricType::Counter, Num::Int(v)) => ConstCounter::new(v).encode(metric),
        (MetricType::Counter, Num::Float(v)) => ConstCounter::new(v).encode(metric),
        (_, Num::Int(v)) => ConstGauge::new(v as i64).encode(metric),
        (_, Num::Float(v)) => ConstGauge::new(v).encode(metric),
    }
}

impl Collector for ServiceMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let reading = ipc::status::read(&self.runtime_dir, self.service)
            .ok()
            .filter(|r| r.running());
        let up = (
            "up",
            "1 while the service runs (its status record is fresh).",
            MetricType::Gauge,
        );
        encode_one(&mut encoder, up, Num::Int(u64::from(reading.is_some())))?;
        let Some(r) = reading else {
            return Ok(());
        };
        let started = (
            "start_time_seconds",
            "When the service started (Unix time).",
            MetricType::Gauge,
        );
        encode_one(
            &mut encoder,
            started,
            Num::Int(r.record.started_unix_ms / 1000),
        )?;
        match &r.record.detail {
            Detail::Capture(c) => {
                for s in CAPTURE {
                    encode_one(&mut encoder, (s.name, s.help, s.kind), (s.read)(c))?;
                }
            }
            Detail::Motion(m) => {
                for s in MOTION {
                    encode_one(&mut encoder, (s.name, s.help, s.kind), (s.read)(m))?;
                }
            }
            Detail::Web(_) => {}
        }
        Ok(())
    }
}
