//! The settings page end to end in headless Chromium, with all three services (synthetic
//! camera, motion-svc, web-svc): something keeps moving in the left half of the picture; at
//! phone size a mask is drawn over it with a finger and saved, and motion-svc stops reporting
//! motion there without a restart; at laptop size the mask is deleted and motion comes back.
//! Screenshots of each step go to `target/screenshots/` (the phone ones are in
//! `docs/screenshots/` and the README).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mecam_system_tests::bins;
use mecam_system_tests::scenes;
use mecam_system_tests::system::{LocalSystem, Options};
use serde_json::json;

use crate::browser::{Cdp, chromium_or_skip, launch};
use crate::harness::poll;

/// Crossings in the left half only, on four rows in turn, every 1.2 s, repeating every 4.8 s.
const LEFT_CROSSINGS: &str = r#"
repeat = 4.8
noise = 2.0
[background]
texture = "bricks"
[[object]]
name = "a"
size = [0.12, 0.22]
color = [230, 40, 40]
start = 0.0
end = 0.9
from = [0.06, 0.2]
to = [0.4, 0.2]
[[object]]
name = "b"
size = [0.12, 0.22]
color = [40, 40, 230]
start = 1.2
end = 2.1
from = [0.4, 0.45]
to = [0.06, 0.45]
[[object]]
name = "c"
size = [0.12, 0.22]
color = [230, 230, 40]
start = 2.4
end = 3.3
from = [0.06, 0.7]
to = [0.4, 0.7]
[[object]]
name = "d"
size = [0.12, 0.22]
color = [40, 230, 40]
start = 3.6
end = 4.5
from = [0.4, 0.85]
to = [0.06, 0.85]
"#;

const PHONE: (u32, u32) = (390, 844);
const LAPTOP: (u32, u32) = (1366, 900);

/// Where the screenshots go: `target/screenshots/`.
fn screenshot_dir() -> PathBuf {
    let dir = bins::bin_dir().join("../screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page (`full`) or what the viewport shows, as `target/screenshots/<name>.png`.
fn screenshot(cdp: &mut Cdp, name: &str, full: bool) {
    let (top, height) = if full {
        (
            0.0,
            cdp.eval("document.documentElement.scrollHeight")
                .as_f64()
                .unwrap_or(900.0),
        )
    } else {
        (
            cdp.eval("window.scrollY").as_f64().unwrap_or(0.0),
            cdp.eval("window.innerHeight").as_f64().unwrap_or(900.0),
        )
    };
    let width = cdp.eval("window.innerWidth").as_u64().unwrap_or(400);
    let shot = cdp.call(
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true,
               "clip": {"x": 0, "y": top, "width": width, "height": height, "scale": 1}}),
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot {}", path.display());
}

fn size(cdp: &mut Cdp, (width, height): (u32, u32), mobile: bool) {
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
    );
    cdp.call(
        "Emulation.setTouchEmulationEnabled",
        json!({"enabled": mobile, "maxTouchPoints": 1}),
    );
}

fn open(cdp: &mut Cdp, sys: &LocalSystem, path: &str, ready: &str) {
    cdp.call(
        "Page.navigate",
        json!({"url": format!("{}{}", sys.url(), &path[1..])}),
    );
    poll(Duration::from_secs(30), path, || {
        cdp.eval(&format!("document.readyState === 'complete' && ({ready})")) == json!(true)
    });
}

/// Viewport coordinates of frame point `(fx, fy)` on the picture (kept a pixel inside it).
fn on_picture(cdp: &mut Cdp, fx: f64, fy: f64) -> (f64, f64) {
    let r = cdp.eval(
        "(() => { const b = document.getElementById('ov').getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; })()",
    );
    let n = |i: usize| r[i].as_f64().unwrap();
    let x = n(0) + (fx * n(2)).clamp(1.0, n(2) - 1.0);
    let y = n(1) + (fy * n(3)).clamp(1.0, n(3) - 1.0);
    (x, y)
}

/// Viewport coordinates of the middle of element `id`, scrolled into view first.
fn centre_of(cdp: &mut Cdp, id: &str) -> (f64, f64) {
    let r = cdp.eval(&format!(
        "(() => {{ const e = document.getElementById('{id}'); e.scrollIntoView({{block: 'center'}});
           const b = e.getBoundingClientRect(); return [b.left + b.width / 2, b.top + b.height / 2]; }})()"
    ));
    (r[0].as_f64().unwrap(), r[1].as_f64().unwrap())
}

/// A finger's tap at `(x, y)` (touch start and end, as a phone's browser gets them).
fn tap(cdp: &mut Cdp, (x, y): (f64, f64)) {
    let point = json!([{"x": x, "y": y, "id": 1}]);
    cdp.call(
        "Input.dispatchTouchEvent",
        json!({"type": "touchStart", "touchPoints": point}),
    );
    std::thread::sleep(Duration::from_millis(60));
    cdp.call(
        "Input.dispatchTouchEvent",
        json!({"type": "touchEnd", "touchPoints": []}),
    );
}

/// A mouse click at `(x, y)`.
fn click(cdp: &mut Cdp, (x, y): (f64, f64)) {
    for kind in ["mousePressed", "mouseReleased"] {
        cdp.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
        );
    }
}

fn event_ids(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

fn log_in(cdp: &mut Cdp, sys: &LocalSystem) {
    open(cdp, sys, "/login", "!!document.getElementById('password')");
    cdp.eval(&format!(
        "document.getElementById('password').value = {}; document.querySelector('form').submit(); true",
        json!(sys.password)
    ));
    poll(Duration::from_secs(30), "the dashboard", || {
        cdp.eval("location.pathname === '/' && !!document.getElementById('live')") == json!(true)
    });
}

#[test]
fn a_mask_drawn_with_a_finger_is_obeyed_by_motion_svc_without_a_restart() {
    let Some(chromium) = chromium_or_skip("the settings page browser test") else {
        return;
    };
    if !bins::all_present_or_skip("the settings page browser test") {
        return;
    }
    let sys = LocalSystem::start(Options {
        config: Some(scenes::config(
            "{dir}/scene.toml",
            "fps = 10\n",
            scenes::MOTION_FAST,
        )),
        files: vec![("scene.toml".into(), LEFT_CROSSINGS.into())],
        ..Options::default()
    })
    .unwrap();
    let motion_pid = sys.motion.pid();
    let events = sys.events_dir();
    // The crossings are motion to begin with.
    poll(Duration::from_secs(30), "a first event", || {
        !event_ids(&events).is_empty()
    });

    let mut cdp = launch(chromium);
    log_in(&mut cdp, &sys);

    // Phone: draw a mask over the left half with a finger, save.
    size(&mut cdp, PHONE, true);
    open(
        &mut cdp,
        &sys,
        "/settings",
        "!document.getElementById('tools').hidden",
    );
    poll(Duration::from_secs(30), "the snapshot", || {
        cdp.eval("document.getElementById('pic').naturalWidth > 0") == json!(true)
    });
    screenshot(&mut cdp, "settings-phone", true);
    let c = centre_of(&mut cdp, "draw-mask");
    tap(&mut cdp, c);
    assert_eq!(
        cdp.eval("document.getElementById('draw-mask').classList.contains('on')"),
        json!(true),
        "drawing a mask"
    );
    cdp.eval("document.getElementById('view').scrollIntoView(); true");
    for (fx, fy) in [(0.0, 0.0), (0.55, 0.0), (0.55, 1.0), (0.0, 1.0)] {
        let p = on_picture(&mut cdp, fx, fy);
        tap(&mut cdp, p);
    }
    let c = centre_of(&mut cdp, "done");
    tap(&mut cdp, c);
    let masks = cdp.eval("document.getElementById('masks').value");
    let line = masks.as_str().unwrap().trim().to_owned();
    assert_eq!(line.split_whitespace().count(), 4, "{masks}");
    assert_eq!(
        cdp.eval("document.querySelectorAll('#ov polygon.masks').length"),
        json!(1)
    );
    cdp.eval("window.scrollTo(0, 0); true");
    screenshot(&mut cdp, "mask-editor-phone", false);
    let c = centre_of(&mut cdp, "save");
    tap(&mut cdp, c);
    poll(Duration::from_secs(30), "saved", || {
        cdp.eval("location.search === '?saved=1' && !!document.getElementById('notice')")
            == json!(true)
    });
    let saved = tuning::store::read(&sys.overrides_file()).unwrap();
    let mask = &saved.masks.as_ref().expect("a mask saved")[0];
    assert!(
        mask.contains(0.25, 0.5) && !mask.contains(0.75, 0.5),
        "{mask:?}"
    );
    // Corners tapped a pixel inside the picture went onto its edges.
    assert_eq!(mask.0[0], [0.0, 0.0], "{mask:?}");

    // motion-svc applies it without a restart, and reports no motion there any more.
    sys.motion
        .wait_log("settings changed (masks)", Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500)); // an event ending as the mask came
    let before = event_ids(&events);
    let c = centre_of(&mut cdp, "preview");
    tap(&mut cdp, c);
    poll(Duration::from_secs(30), "the preview", || {
        cdp.eval(
            "document.getElementById('preview-state').textContent.startsWith('motion-svc sees')",
        ) == json!(true)
    });
    // Two rounds of the scene (every crossing twice) under the mask: nothing.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        assert_eq!(
            event_ids(&events),
            before,
            "an event under the mask:\n{}",
            sys.motion.log()
        );
        assert_eq!(
            cdp.eval("document.querySelectorAll('#ov rect.box').length"),
            json!(0)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    cdp.eval("window.scrollTo(0, 0); true");
    screenshot(&mut cdp, "preview-phone", false);
    assert_eq!(sys.motion.pid(), motion_pid);

    // Laptop: the mask is there; tap it, delete it, save: the motion counts again.
    size(&mut cdp, LAPTOP, false);
    open(
        &mut cdp,
        &sys,
        "/settings",
        "!document.getElementById('tools').hidden",
    );
    assert_eq!(
        cdp.eval("document.querySelectorAll('#ov polygon.masks').length"),
        json!(1)
    );
    screenshot(&mut cdp, "settings-laptop", true);
    cdp.eval("document.getElementById('view').scrollIntoView(); true");
    let p = on_picture(&mut cdp, 0.25, 0.5);
    click(&mut cdp, p);
    assert_eq!(
        cdp.eval("document.querySelectorAll('#ov polygon.sel').length"),
        json!(1)
    );
    let c = centre_of(&mut cdp, "del");
    click(&mut cdp, c);
    assert_eq!(
        cdp.eval("document.getElementById('masks').value"),
        json!("")
    );
    let c = centre_of(&mut cdp, "save");
    click(&mut cdp, c);
    poll(Duration::from_secs(30), "saved", || {
        cdp.eval("location.search === '?saved=1'") == json!(true)
    });
    poll(Duration::from_secs(30), "an event once unmasked", || {
        event_ids(&events).len() > before.len()
    });
    let c = centre_of(&mut cdp, "preview");
    click(&mut cdp, c);
    poll(
        Duration::from_secs(30),
        "moving boxes in the preview",
        || cdp.eval("document.querySelectorAll('#ov rect.box').length > 0") == json!(true),
    );
    cdp.eval("window.scrollTo(0, 0); true");
    screenshot(&mut cdp, "preview-laptop", false);
    assert_eq!(sys.motion.pid(), motion_pid);
    drop(cdp);
    sys.stop().unwrap();
}
