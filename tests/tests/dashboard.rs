//! The dashboard in a real browser with all three services running: each service's health in
//! words and colour, then motion-svc stopped and the dashboard saying "motion detector: not
//! running since HH:MM" in the viewer's time zone, with a banner; at a phone's and a laptop's
//! size, the status line above the fold, one viewer counted for one tab. Screenshots of each
//! page go to `target/screenshots` (the README shows the phone ones, from `docs/screenshots`).

use std::time::Duration;

use mecam_system_tests::browser::{self, Browser, LAPTOP, PHONE, Screen};
use mecam_system_tests::system::{LocalSystem, Options, STOP_TIMEOUT};
use mecam_system_tests::{bins, http};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// The health item of `service` says `words` with level `level`.
fn health_is(service: &str, level: &str, words: &str) -> String {
    format!(
        "(() => {{ const li = document.querySelector('#health li[data-service={service}]'); \
         return !!li && li.className === 'h-{level}' && li.textContent.includes({words}); }})()",
        words = json!(words)
    )
}

/// The status line and the services' health are inside the first screen.
const ABOVE_THE_FOLD: &str = "['status', 'health'].every(id => { \
    const r = document.getElementById(id).getBoundingClientRect(); \
    return r.top >= 0 && r.bottom <= window.innerHeight; })";

fn shot(b: &mut Browser, page: &str, screen: Screen) {
    let path = browser::screenshot_dir().join(format!("{page}-{}.png", screen.name));
    b.screenshot(&path).unwrap();
    eprintln!("screenshot {}", path.display());
}

#[test]
fn the_dashboard_shows_each_service_and_says_when_the_motion_detector_stops() {
    if !bins::all_present_or_skip("dashboard in chromium") {
        return;
    }
    let Some(chromium) = browser::chromium() else {
        mecam_system_tests::skip(
            "dashboard in chromium",
            "chromium is not installed (apt-get install -y chromium)",
        );
        return;
    };
    let mut sys = LocalSystem::start(Options::default()).unwrap();
    let base = format!("http://{}", sys.addr);
    let mut b = Browser::start(&chromium).unwrap();
    // Somewhere that is not UTC, to see the times shown in the viewer's zone.
    b.call(
        "Emulation.setTimezoneOverride",
        json!({"timezoneId": "Asia/Kolkata"}),
    )
    .unwrap();

    for screen in [PHONE, LAPTOP] {
        b.resize(screen).unwrap();
        b.open(&format!("{base}/login")).unwrap();
        shot(&mut b, "login", screen);
    }
    b.eval(&format!(
        "document.getElementById('password').value = {}; document.querySelector('form').submit(); true",
        json!(sys.password)
    ))
    .unwrap();
    b.wait_for(
        "the dashboard",
        WAIT,
        "location.pathname === '/' && !!document.getElementById('live')",
    )
    .unwrap();

    for screen in [PHONE, LAPTOP] {
        b.resize(screen).unwrap();
        b.open(&format!("{base}/")).unwrap();
        for (service, words) in [
            ("capture", "streaming"),
            ("motion", "watching"),
            ("web", "running"),
        ] {
            b.wait_for(
                &format!("{service} healthy at {}", screen.name),
                WAIT,
                &health_is(service, "ok", words),
            )
            .unwrap();
        }
        b.wait_for(
            "the status line",
            WAIT,
            "document.getElementById('cam').textContent === 'streaming'",
        )
        .unwrap();
        assert_eq!(
            b.eval(ABOVE_THE_FOLD).unwrap(),
            json!(true),
            "the status line and health are above the fold at {}x{}",
            screen.width,
            screen.height
        );
        assert_eq!(
            b.eval("!!document.getElementById('banner')").unwrap(),
            json!(false)
        );
        // One tab, one viewer, from the first poll on: the page left before (the login or
        // events page, the dashboard at the other size) must not hold a stream of its own.
        let mut seen = Vec::new();
        for _ in 0..15 {
            seen.push(
                b.eval("document.getElementById('viewers').textContent")
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            seen.iter().all(|v| v == "?" || v == "1"),
            "viewers shown for one tab at {}: {seen:?}",
            screen.name
        );
        b.wait_for(
            "one viewer",
            WAIT,
            "document.getElementById('viewers').textContent === '1'",
        )
        .unwrap();
        let status: serde_json::Value = serde_json::from_slice(
            &http::request(
                sys.addr,
                "GET",
                "/api/status",
                &[(
                    "Authorization",
                    &format!("Basic {}", base64_admin(&sys.password)),
                )],
                b"",
            )
            .unwrap()
            .body,
        )
        .unwrap();
        assert_eq!(status["viewers"], json!(1), "{status}");
        shot(&mut b, "dashboard", screen);
        b.open(&format!("{base}/events")).unwrap();
        shot(&mut b, "events", screen);
    }

    // motion-svc stops (SIGTERM, as systemctl stop does): the dashboard says so, in words, in
    // red, since when in the viewer's time zone, with a banner; the live view goes on.
    let status = sys.motion.stop(STOP_TIMEOUT).unwrap();
    assert!(status.success(), "{status}");
    for screen in [PHONE, LAPTOP] {
        b.resize(screen).unwrap();
        b.open(&format!("{base}/")).unwrap();
        b.wait_for(
            "the motion detector shown as not running",
            WAIT,
            &health_is("motion", "down", "motion detector: not running since "),
        )
        .unwrap();
        b.wait_for(
            "the banner",
            WAIT,
            "(document.getElementById('banner') || {}).textContent === 'The motion detector is not running.'",
        )
        .unwrap();
        // The time is the viewer's (UTC+5:30 here), not the server's UTC.
        let shown = b
            .eval(
                "(() => { const t = document.querySelector('#health li[data-service=motion] time'); \
                 const d = new Date(t.getAttribute('datetime')); \
                 return [t.textContent, d.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'}), \
                         d.toISOString().slice(11, 16)]; })()",
            )
            .unwrap();
        assert_eq!(shown[0], shown[1], "{shown}");
        assert_ne!(shown[0], shown[2], "shown in UTC: {shown}");
        assert!(b.eval(&health_is("capture", "ok", "streaming")).unwrap() == json!(true));
        assert_eq!(b.eval(ABOVE_THE_FOLD).unwrap(), json!(true));
        shot(&mut b, "dashboard-motion-stopped", screen);
    }
    drop(b);
    sys.stop().unwrap();
}

/// `admin:password` for HTTP Basic.
fn base64_admin(password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"))
}
