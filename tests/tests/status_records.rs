//! The status records under the real units (systemd booted in a throwaway container): each
//! service writes its record in `/run/mecam/status` as its own user, web-svc reads all three,
//! and a unit stopped with `systemctl stop` is shown as not running, in `/api/status` and in
//! `/metrics`, while the others carry on.

use std::time::Duration;

use mecam_system_tests::nspawn::{self, Mecam, MecamOptions};
use mecam_system_tests::{http, poll};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn api_status(m: &Mecam, cookie: &str) -> Value {
    let r = http::get(m.addr, "/api/status", Some(cookie)).unwrap();
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

fn levels(status: &Value) -> Vec<String> {
    status["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}={}",
                        s["service"].as_str().unwrap_or("?"),
                        s["level"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn each_unit_writes_its_record_and_web_shows_a_stopped_one() {
    if !nspawn::available_or_skip("status records under systemd", true) {
        return;
    }
    let m = Mecam::start(MecamOptions::default()).expect("mecam under systemd");
    m.wait_healthz().unwrap();
    let cookie = m.login().unwrap();
    let mut last = Value::Null;
    let healthy = poll::until_true("all three services ok", WAIT, || {
        last = api_status(&m, &cookie);
        levels(&last) == ["capture=ok", "motion=ok", "web=ok"]
    });
    assert!(healthy.is_ok(), "{last}");

    // Who wrote what: capture as mecam-capture, motion and web as mecam; the directory as
    // tmpfiles.conf makes it.
    let listing =
        m.ct.run(&[
            "stat",
            "-c",
            "%n %U:%G %a",
            "/run/mecam/status",
            "/run/mecam/status/capture.json",
            "/run/mecam/status/motion.json",
            "/run/mecam/status/web.json",
        ])
        .unwrap();
    println!("{listing}");
    for line in [
        "/run/mecam/status mecam-capture:mecam 1770",
        "/run/mecam/status/capture.json mecam-capture:mecam 640",
        "/run/mecam/status/motion.json mecam:mecam 640",
        "/run/mecam/status/web.json mecam:mecam 640",
    ] {
        assert!(listing.contains(line), "no `{line}` in\n{listing}");
    }

    m.ct.run(&["systemctl", "stop", "mecam-motion.service"])
        .unwrap();
    let down = poll::until_true("motion shown down", WAIT, || {
        last = api_status(&m, &cookie);
        levels(&last) == ["capture=ok", "motion=down", "web=ok"]
    });
    assert!(down.is_ok(), "{last}");
    assert!(
        last["banner"]
            .as_str()
            .is_some_and(|b| b.contains("motion detector is not running")),
        "{last}"
    );
    let metrics = http::get(m.addr, "/metrics", Some(&cookie)).unwrap().text();
    assert!(metrics.contains("\nmecam_motion_up 0\n"), "{metrics}");
    assert!(metrics.contains("\nmecam_capture_up 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nmecam_capture_camera_up 1\n"),
        "{metrics}"
    );
}
