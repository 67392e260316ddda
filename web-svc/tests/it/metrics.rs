//! `/metrics` as Prometheus's own tools read it, and as the README documents it.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mecam_system_tests::http;

use crate::harness::{Camera, Dirs, Web, make_frames, metric, poll, set_password};

const PW: &str = "metrics test password";

/// A running web-svc with a live camera and a session, and its `/metrics` text once frames
/// have flowed (so counters are not all zero).
fn scrape() -> (String, Option<String>) {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = Arc::new(make_frames(4, 160, 120, 0));
    let _camera = Camera::start(&dirs.run(), frames, 160, 120, 30.0);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    poll(Duration::from_secs(20), "a live snapshot", || {
        http::get(web.addr, "/snapshot.jpg", Some(&cookie)).is_ok_and(|r| r.status == 200)
    });
    write_records(&dirs.run());
    let r = http::get(web.addr, "/metrics", Some(&cookie)).unwrap();
    assert_eq!(r.status, 200);
    (r.text(), r.header("content-type").map(str::to_owned))
}

/// Fresh status records of capture-svc and motion-svc (the test camera writes none), so that
/// `/metrics` serves all three services' families.
pub(crate) fn write_records(run: &std::path::Path) {
    use ipc::status::{CameraState, CaptureStatus, Detail, MotionStatus, Service, StatusWriter};
    let capture = Detail::Capture(CaptureStatus {
        camera: CameraState::Streaming,
        source: "test".into(),
        frames_in: 1200,
        fps_in: 14.97,
        camera_restarts: 1,
        ..CaptureStatus::default()
    });
    let motion = Detail::Motion(MotionStatus {
        camera_ok: true,
        frames_in: 1200,
        frames_analysed: 400,
        analysed_fps: 5.0,
        events_total: 2,
        last_event_unix_ms: Some(1_764_000_000_000),
        clip_bytes: 123_456,
        disk_used_bytes: 1 << 30,
        disk_free_bytes: 3 << 30,
        ..MotionStatus::default()
    });
    for (service, detail) in [(Service::Capture, capture), (Service::Motion, motion)] {
        StatusWriter::new(run, service)
            .unwrap()
            .write(&detail)
            .unwrap();
    }
}

#[test]
fn a_service_that_stopped_is_up_0_with_nothing_else() {
    let (text, _) = scrape();
    assert_eq!(metric(&text, "mecam_motion_up"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "mecam_capture_fps"), Some(14.97), "{text}");
    assert_eq!(
        metric(&text, "mecam_motion_events_total"),
        Some(2.0),
        "{text}"
    );
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    write_records(&dirs.run());
    let mut w = ipc::status::StatusWriter::new(&dirs.run(), ipc::status::Service::Motion).unwrap();
    w.write_stopped(&ipc::status::Detail::Motion(Default::default()))
        .unwrap();
    let text = http::get(web.addr, "/metrics", Some(&cookie))
        .unwrap()
        .text();
    assert_eq!(metric(&text, "mecam_motion_up"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "mecam_motion_events_total"), None, "{text}");
    assert_eq!(metric(&text, "mecam_capture_up"), Some(1.0), "{text}");
}

/// The metric families of a Prometheus text exposition, from its `# TYPE` lines.
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let (text, content_type) = scrape();
    assert_eq!(
        content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "the Prometheus text format's content type"
    );
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            mecam_system_tests::skip(
                "metrics_pass_promtool_check_metrics",
                &format!("promtool: {e}; apt-get install -y prometheus"),
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {} {said}\non:\n{text}",
        out.status
    );
    println!(
        "promtool check metrics: clean on {} families",
        families(&text).len()
    );
}

#[test]
fn every_metric_served_is_in_the_readme_with_its_type_and_back() {
    let (text, _) = scrape();
    let served = families(&text);
    let readme = include_str!("../../README.md");
    // The README's metrics tables: "| `mecam_SERVICE_NAME` | TYPE | help |".
    let documented: Vec<(String, String)> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `mecam_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once("` | ")?;
            let kind = rest.split(" |").next()?;
            Some((format!("mecam_{name}"), kind.trim().to_owned()))
        })
        .collect();
    assert_eq!(
        served, documented,
        "/metrics serves (left) what the README's metrics table lists (right), in order"
    );
    for (name, kind) in &served {
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: counters, and only counters, end in _total"
        );
        assert!(
            text.lines().any(|l| l
                .strip_prefix(name.as_str())
                .is_some_and(|r| r.starts_with(' '))),
            "{name} has no sample in\n{text}"
        );
    }
}

#[test]
fn the_heap_is_counted_by_the_binary_s_allocator() {
    let (text, _) = scrape();
    let read = |name| metric(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    let live = read("mecam_web_heap_live_bytes");
    let peak = read("mecam_web_heap_peak_bytes");
    let allocs = read("mecam_web_heap_allocations_total");
    assert!(
        live > 0.0 && allocs > 0.0,
        "web-svc counts no heap:\n{text}"
    );
    assert!(peak >= live, "peak {peak} below live {live}");
}
