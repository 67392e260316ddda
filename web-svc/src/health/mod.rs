//! The health of the three services, from their status records ([`ipc::status`]): web-svc
//! writes its own record once a second ([`run_health`]), reads capture-svc's and motion-svc's,
//! and says in words whether each runs ("motion detector: not running since 21:04"). The
//! dashboard, the page frame's banner, `/api/status` and `/metrics` show what this module
//! reads; [`metrics`] turns capture's and motion's records into `/metrics`.

pub mod metrics;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use ipc::status::{
    CameraState, Detail, Reading, Service, StatusError, StatusRecord, StatusWriter, WebStatus,
};
use serde::Serialize;

use crate::pages::esc;
use crate::state::AppState;

/// The events disk is "nearly full" from this share of its file system used, in percent: the
/// banner says so before recording stops.
pub const DISK_NEARLY_FULL_PCT: f64 = 90.0;

/// The status area's and the banner's style (in every page's `<style>`).
pub const CSS: &str = include_str!("../../assets/health.css");
/// The dashboard's status script: polls `/api/status`, shows times in the viewer's zone.
pub const JS: &str = include_str!("../../assets/health.js");

/// One service's health, as pages and `/api/status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceHealth {
    /// `capture`, `motion` or `web`.
    pub service: &'static str,
    /// What a user calls it: `camera`, `motion detector`, `web server`.
    pub label: &'static str,
    /// `ok` (running and well), `warn` (running, but something is wrong: a stalled camera, a
    /// full disk), `down` (not running) or `unknown` (no readable record).
    pub level: &'static str,
    /// What it is doing, in words: "streaming, 15.0 fps", "not running", ...
    pub words: String,
    /// Up since (`ok`, `warn`) or down since (`down`), ms since the Unix epoch.
    pub since_unix_ms: Option<u64>,
    /// The record as read, for `/metrics`.
    #[serde(skip)]
    pub record: Option<StatusRecord>,
}

impl ServiceHealth {
    /// Whether the service runs.
    pub fn running(&self) -> bool {
        matches!(self.level, "ok" | "warn")
    }

    /// "motion detector: not running since <time>" as HTML, the time a `<time>` element in UTC
    /// that the page's script shows in the viewer's time zone.
    pub fn html(&self) -> String {
        let since = self.since_unix_ms.map_or(String::new(), |ms| {
            let word = if self.running() {
                ", up since"
            } else {
                " since"
            };
            format!("{word} {}", time_html(ms))
        });
        format!(
            "<li class=\"h-{level}\" data-service=\"{svc}\"><b>{label}</b>: {words}{since}</li>",
            level = self.level,
            svc = self.service,
            label = self.label,
            words = esc(&self.words),
        )
    }
}

/// `<time datetime="2026-12-02T21:04:05Z">21:04 UTC</time>`.
pub fn time_html(unix_ms: u64) -> String {
    let utc = crate::offline::format_utc(unix_ms / 1000);
    let iso = utc.replacen(' ', "T", 1).replace(" UTC", "Z");
    // "YYYY-MM-DD HH:MM:SS UTC": the hour and minute.
    let hhmm = utc.get(11..16).unwrap_or("?");
    format!("<time datetime=\"{iso}\">{hhmm} UTC</time>")
}

/// All three services' health, and the banner.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// capture, motion, web, in that order.
    pub services: Vec<ServiceHealth>,
    /// Share of the events' file system used, in percent, from motion-svc's record.
    pub disk_used_pct: Option<f64>,
    /// What the banner says (plain text), when a service is down or the disk nearly full.
    pub banner: Option<String>,
}

impl Health {
    /// The health of the services whose records are in `runtime_dir`; web-svc (this process)
    /// is running whatever its record says.
    pub fn read(runtime_dir: &Path) -> Health {
        let now = ipc::status::now_unix_ms();
        let services: Vec<ServiceHealth> = Service::ALL
            .iter()
            .map(|&s| {
                let read = ipc::status::read_at(&s.path(runtime_dir), s, now);
                describe(s, read, now)
            })
            .collect();
        let disk_used_pct = services.iter().find_map(|h| match &h.record {
            Some(StatusRecord {
                detail: Detail::Motion(m),
                ..
            }) if m.disk_used_bytes + m.disk_free_bytes > 0 => Some(
                m.disk_used_bytes as f64 * 100.0 / (m.disk_used_bytes + m.disk_free_bytes) as f64,
            ),
            _ => None,
        });
        let mut banner: Vec<String> = services
            .iter()
            .filter(|h| !h.running())
            .map(|h| format!("The {} is not running.", h.label))
            .collect();
        if let Some(pct) = disk_used_pct.filter(|&p| p >= DISK_NEARLY_FULL_PCT) {
            banner.push(format!(
                "The events disk is {pct:.0} % full: old events will be deleted to make room."
            ));
        }
        Health {
            services,
            disk_used_pct,
            banner: (!banner.is_empty()).then(|| banner.join(" ")),
        }
    }

    /// The services as an HTML list.
    pub fn html(&self) -> String {
        let items: String = self.services.iter().map(ServiceHealth::html).collect();
        format!("<ul id=\"health\">{items}</ul>")
    }
}

/// One service's health from its record (or the error reading it).
fn describe(service: Service, read: Result<Reading, StatusError>, now_ms: u64) -> ServiceHealth {
    let mut h = ServiceHealth {
        service: service.name(),
        label: service.label(),
        level: "ok",
        words: String::new(),
        since_unix_ms: None,
        record: None,
    };
    match read {
        // This process serves the page: it runs, even if its record could not be written.
        Ok(r) if r.running() || service == Service::Web => {
            h.since_unix_ms = Some(r.record.started_unix_ms);
            (h.level, h.words) = running_words(&r.record);
            h.record = Some(r.record);
        }
        Ok(r) => {
            h.level = "down";
            h.words = "not running".into();
            h.since_unix_ms = Some(r.record.updated_unix_ms.min(now_ms));
            h.record = Some(r.record);
        }
        Err(_) if service == Service::Web => h.words = "running".into(),
        Err(StatusError::Missing { .. }) => {
            h.level = "down";
            h.words = "not running (no status record since boot)".into();
        }
        Err(e) => {
            h.level = "unknown";
            h.words = format!("unknown ({e})");
        }
    }
    h
}

/// The level and words of a running service.
fn running_words(r: &StatusRecord) -> (&'static str, String) {
    let error = r.last_error.as_deref().unwrap_or("no reason given");
    match &r.detail {
        Detail::Capture(c) => match c.camera {
            CameraState::Streaming => ("ok", format!("streaming, {:.1} fps", c.fps_in)),
            CameraState::Starting => ("warn", "starting the camera".into()),
            CameraState::Stalled => ("warn", "camera stalled: no frames".into()),
            CameraState::Restarting => ("warn", format!("restarting the camera: {error}")),
            CameraState::Failed => ("warn", format!("camera failed: {error}")),
        },
        Detail::Motion(m) if !m.camera_ok => ("warn", "waiting for the camera".into()),
        Detail::Motion(m) if m.recording => (
            "ok",
            format!("recording, {:.1} frames analysed/s", m.analysed_fps),
        ),
        Detail::Motion(m) => (
            "ok",
            format!("watching, {:.1} frames analysed/s", m.analysed_fps),
        ),
        Detail::Web(w) => ("ok", format!("running, {} live viewer(s)", w.viewers)),
    }
}

/// The banner every page shows (HTML), refreshed by [`run_health`]. A process-wide value
/// rather than state: the page frame ([`crate::pages::page`]) is a plain function every page
/// calls, and one web-svc runs per process.
static BANNER: Mutex<String> = Mutex::new(String::new());

/// The banner's HTML (empty when all is well).
pub fn banner_html() -> String {
    BANNER.lock().expect("banner lock").clone()
}

fn set_banner(health: &Health) {
    let html = health.banner.as_ref().map_or(String::new(), |b| {
        format!(
            "<p class=\"banner\" id=\"banner\" role=\"alert\">{}</p>",
            esc(b)
        )
    });
    let mut banner = BANNER.lock().expect("banner lock");
    if *banner != html {
        *banner = html;
    }
}

/// web-svc's own figures for its record.
fn web_status(state: &AppState, out: &mut WebStatus) {
    let s = &state.0;
    let m = &s.hub.metrics;
    out.viewers = m.viewers.load(Ordering::Relaxed) as u64;
    out.connections = m.connections.load(Ordering::Relaxed) as u64;
    out.sessions = s.sessions.len() as u64;
    out.frames_sent = m.frames_sent.load(Ordering::Relaxed);
    out.login_failures = m.login_failures.load(Ordering::Relaxed);
}

/// Every [`ipc::status::WRITE_EVERY`] until shutdown: writes web-svc's record and refreshes
/// the banner; at shutdown writes the last record, marked stopped.
pub async fn run_health(state: AppState, runtime_dir: std::path::PathBuf) {
    let mut writer = StatusWriter::open_or_warn(&runtime_dir, Service::Web);
    let mut detail = Detail::Web(WebStatus::default());
    let stop = state.shutdown_token();
    let mut tick = tokio::time::interval(ipc::status::WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopped = tokio::select! {
            () = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let (Detail::Web(w), Some(writer)) = (&mut detail, &mut writer) {
            web_status(&state, w);
            writer.publish(&detail, stopped);
        }
        if stopped {
            return;
        }
        let dir = runtime_dir.clone();
        if let Ok(health) = tokio::task::spawn_blocking(move || Health::read(&dir)).await {
            set_banner(&health);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::status::MotionStatus;

    fn record(detail: Detail, stopped: bool, updated: u64) -> Reading {
        Reading {
            record: StatusRecord {
                schema: ipc::status::SCHEMA,
                service: detail.service(),
                pid: 1,
                started_unix_ms: 1_000,
                updated_unix_ms: updated,
                stopped,
                last_error: None,
                detail,
            },
            age: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn a_stopped_motion_detector_is_down_since_its_last_record() {
        let r = record(Detail::Motion(MotionStatus::default()), true, 75_840_000);
        let h = describe(Service::Motion, Ok(r), 80_000_000);
        assert_eq!(h.level, "down");
        assert_eq!(h.since_unix_ms, Some(75_840_000));
        let html = h.html();
        assert!(
            html.contains("<b>motion detector</b>: not running since <time datetime=\"1970-01-01T21:04:00Z\">21:04 UTC</time>"),
            "{html}"
        );
    }

    #[test]
    fn a_missing_or_garbage_record_is_down_or_unknown_never_fine() {
        let missing = StatusError::Missing {
            path: "/run/mecam/status/capture.json".into(),
        };
        assert_eq!(describe(Service::Capture, Err(missing), 0).level, "down");
        let garbage = StatusError::Garbage {
            path: "/run/mecam/status/motion.json".into(),
            reason: "<script>".into(),
        };
        let h = describe(Service::Motion, Err(garbage), 0);
        assert_eq!(h.level, "unknown");
        assert!(h.html().contains("&lt;script&gt;"), "{}", h.html());
    }

    #[test]
    fn the_banner_names_what_is_down_and_a_nearly_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let h = Health::read(dir.path());
        let banner = h.banner.unwrap();
        assert!(banner.contains("camera is not running"), "{banner}");
        assert!(
            banner.contains("motion detector is not running"),
            "{banner}"
        );
        assert!(!banner.contains("web server"), "{banner}");
        let mut w = StatusWriter::new(dir.path(), Service::Motion).unwrap();
        w.write(&Detail::Motion(MotionStatus {
            disk_used_bytes: 95,
            disk_free_bytes: 5,
            camera_ok: true,
            ..MotionStatus::default()
        }))
        .unwrap();
        let h = Health::read(dir.path());
        assert_eq!(h.services[1].level, "ok");
        let banner = h.banner.unwrap();
        assert!(banner.contains("95 % full"), "{banner}");
        assert!(!banner.contains("motion detector"), "{banner}");
    }
}
