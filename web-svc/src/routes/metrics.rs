//! `/metrics`: the service's counters and gauges in the Prometheus text format (version
//! 0.0.4), encoded by `prometheus-client`, and capture-svc's and motion-svc's from their
//! status records (`crate::health::metrics`).
//!
//! The values live where they change (the fan-out hub's atomics, the login limiter, the
//! password checker, the session table): one table (`METRICS`) names each one, its help, its
//! type and where to read it, and a [`Collector`] reads them all at scrape time. Nothing here
//! counts.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::WebError;
use crate::state::{AppState, Inner};

/// The prefix of every metric name.
pub const PREFIX: &str = "mecam_web";

/// One metric of `/metrics`.
struct Spec {
    /// The name after [`PREFIX`]; a counter's without `_total`, which the encoder adds.
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: fn(&Inner) -> u64,
}

const fn counter(name: &'static str, help: &'static str, read: fn(&Inner) -> u64) -> Spec {
    Spec {
        name,
        help,
        kind: MetricType::Counter,
        read,
    }
}

const fn gauge(name: &'static str, help: &'static str, read: fn(&Inner) -> u64) -> Spec {
    Spec {
        name,
        help,
        kind: MetricType::Gauge,
        read,
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Every metric `/metrics` serves, in the order served.
const METRICS: &[Spec] = &[
    counter(
        "frames_received",
        "Live frames announced by capture-svc.",
        |s| load(&s.hub.metrics.frames_in),
    ),
    counter(
        "frames_copied",
        "Live frames copied out of the region (only when a viewer or a snapshot wants one).",
        |s| load(&s.hub.metrics.frames_copied),
    ),
    counter(
        "frames_skipped_source",
        "Frames whose copy out of the region failed (overwritten, torn, corrupt).",
        |s| load(&s.hub.metrics.frames_skipped_source),
    ),
    counter(
        "offline_frames",
        "Camera-offline placeholder frames published.",
        |s| load(&s.hub.metrics.offline_frames),
    ),
    counter("frames_sent", "Frame parts handed to viewers.", |s| {
        load(&s.hub.metrics.frames_sent)
    }),
    counter(
        "frames_skipped_viewers",
        "Frames slow viewers skipped.",
        |s| load(&s.hub.metrics.frames_skipped_viewers),
    ),
    counter("bytes_sent", "Stream body bytes handed to viewers.", |s| {
        load(&s.hub.metrics.bytes_sent)
    }),
    gauge("viewers", "Live streams open.", |s| {
        s.hub.metrics.viewers.load(Ordering::Relaxed) as u64
    }),
    counter("streams_refused", "Streams refused with 503.", |s| {
        load(&s.hub.metrics.streams_refused)
    }),
    counter(
        "viewers_dropped_stalled",
        "Connections dropped because their socket took nothing.",
        |s| load(&s.hub.metrics.viewers_dropped_stalled),
    ),
    gauge("connections", "Open connections.", |s| {
        s.hub.metrics.connections.load(Ordering::Relaxed) as u64
    }),
    counter(
        "connections_refused",
        "Connections refused at accept (every one busy).",
        |s| load(&s.hub.metrics.connections_refused),
    ),
    counter(
        "connections_evicted",
        "Idle connections closed to make room for a new client.",
        |s| load(&s.hub.metrics.connections_evicted),
    ),
    counter("login_failures", "Failed logins.", |s| {
        load(&s.hub.metrics.login_failures)
    }),
    counter(
        "login_rate_limited",
        "Logins refused by the rate limiter.",
        |s| load(&s.hub.metrics.login_limited),
    ),
    counter(
        "login_password_checks",
        "Password hashes computed (logins and Basic credentials not remembered).",
        |s| s.checker.checks(),
    ),
    gauge(
        "login_global_slowing",
        "1 while failed logins come faster than the global ceiling: addresses that already failed are slowed.",
        |s| u64::from(s.limiter.slowing()),
    ),
    gauge(
        "login_tracked_clients",
        "Client addresses (IPv6: /64s) the login limiter remembers.",
        |s| s.limiter.tracked() as u64,
    ),
    counter(
        "cross_site_refused",
        "State changes refused because their Origin or Referer was missing or foreign.",
        |s| load(&s.cross_site_refused),
    ),
    counter(
        "frame_pool_misses",
        "Frame buffers allocated outside the pool.",
        |s| load(&s.hub.metrics.pool_misses),
    ),
    gauge("sessions", "Browser sessions.", |s| s.sessions.len() as u64),
    gauge(
        "resident_memory_bytes",
        "Resident memory of web-svc.",
        |_| ipc::service::resident_bytes(),
    ),
    gauge(
        "heap_live_bytes",
        "Heap bytes allocated and not yet freed (ipc::heap's counting allocator; 0 without it).",
        |_| ipc::heap::stats().live as u64,
    ),
    gauge(
        "heap_peak_bytes",
        "The highest heap_live_bytes since start.",
        |_| ipc::heap::stats().peak as u64,
    ),
    counter(
        "heap_allocations",
        "Heap allocations since start, reallocations included.",
        |_| ipc::heap::stats().allocs,
    ),
];

/// Reads [`METRICS`] from the shared state at each scrape.
#[derive(Debug)]
struct Snapshot(AppState);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for m in METRICS {
            let value = (m.read)(&self.0.0);
            let metric = encoder.encode_descriptor(m.name, m.help, None, m.kind)?;
            match m.kind {
                MetricType::Counter => ConstCounter::new(value).encode(metric)?,
                _ => ConstGauge::new(value).encode(metric)?,
            }
        }
        Ok(())
    }
}

/// The whole `/metrics` text for `state`.
///
/// # Errors
/// The encoder failed (it writes to a `String`, so only on a bug in it).
pub fn render(state: &AppState) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry
        .sub_registry_with_prefix(PREFIX)
        .register_collector(Box::new(Snapshot(state.clone())));
    // capture-svc's and motion-svc's, from their status records.
    for (prefix, service) in [
        ("mecam_capture", ipc::status::Service::Capture),
        ("mecam_motion", ipc::status::Service::Motion),
    ] {
        registry
            .sub_registry_with_prefix(prefix)
            .register_collector(Box::new(crate::health::metrics::ServiceMetrics {
                runtime_dir: state.0.runtime_dir.clone(),
                service,
            }));
    }
    let mut out = String::with_capacity(4096);
    prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    match render(&state) {
        Ok(text) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => WebError::Internal(format!("encoding /metrics: {e}")).into_response(),
    }
}
