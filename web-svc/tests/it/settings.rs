//! The settings page over HTTP: the values in effect, saving into the overrides file, each
//! bad field's message next to it with nothing written, the same-origin rule, reset, a broken
//! file, and motion-svc's live preview (a stand-in socket here; the real one in
//! `tests/tests/tune_browser.rs`).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixListener;

use mecam_system_tests::http::{self, urlencode};

use crate::harness::{Dirs, Web, set_password};

const PW: &str = "settings test password";

/// A tree whose `[motion]` sets some tunables, a password, and web-svc on it; the session.
fn start(motion: &str) -> (Dirs, Web, String) {
    let dirs = Dirs::new("");
    let conf = dirs.tmp.path().join("mecam.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{text}[motion]\n{motion}\n")).unwrap();
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let session = http::login(web.addr, "admin", PW).unwrap();
    (dirs, web, session)
}

fn post(web: &Web, session: &str, path: &str, fields: &[(&str, &str)]) -> http::Response {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    let origin = format!("http://{}", web.addr);
    http::request(
        web.addr,
        "POST",
        path,
        &[
            ("Cookie", session),
            ("Origin", &origin),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body.join("&").as_bytes(),
    )
    .unwrap()
}

/// The form as the page fills it for the default values, with `changes` over it.
fn form<'a>(changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![
        ("detection", "armed"),
        ("sensitivity", "medium"),
        ("min_object_pct", ""),
        ("analysis_fps", "2"),
        ("pre_capture_s", "3"),
        ("post_capture_s", "3"),
        ("max_total_mib", "2048"),
        ("max_age_days", "30"),
        ("masks", ""),
        ("zones", ""),
    ];
    for (k, v) in changes {
        f.retain(|(fk, _)| fk != k);
        f.push((k, v));
    }
    f
}

#[test]
fn the_page_shows_the_values_in_effect_and_saves_only_what_differs() {
    let (dirs, web, session) = start("analysis_fps = 2.0\nevents_dir = \"/nowhere\"");
    let page = http::get(web.addr, "/settings", Some(&session)).unwrap();
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.len() < crate::page_weight::MAX_PAGE_BYTES,
        "the page is {} bytes",
        html.len()
    );
    assert!(html.contains("href=\"/settings\""), "menu entry");
    assert!(
        html.contains("name=\"analysis_fps\" type=\"number\""),
        "{html}"
    );
    assert!(html.contains("value=\"2\""), "the administrator's 2 fps");

    let r = post(
        &web,
        &session,
        "/settings",
        &form(&[
            ("analysis_fps", "4"),
            ("detection", "disarmed"),
            ("masks", "0,0 0.5,0 0.5,0.5"),
        ]),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/settings?saved=1"));
    let o = tuning::store::read(&dirs.overrides()).unwrap();
    assert_eq!(
        o,
        tuning::Overrides {
            detection: Some(false),
            analysis_fps: Some(4.0),
            masks: Some(vec![tuning::Polygon(vec![
                [0.0, 0.0],
                [0.5, 0.0],
                [0.5, 0.5]
            ])]),
            ..Default::default()
        }
    );
    let html = http::get(web.addr, "/settings?saved=1", Some(&session))
        .unwrap()
        .text();
    assert!(html.contains("Saved."), "{html}");
    assert!(html.contains("value=\"4\""), "{html}");
    assert!(html.contains("id=\"disarmed\" checked"), "{html}");
    assert!(html.contains("0,0 0.5,0 0.5,0.5"), "{html}");
}

#[test]
fn bad_values_get_their_message_next_to_the_field_and_nothing_is_written() {
    let (dirs, web, session) = start("");
    let good = form(&[("pre_capture_s", "5")]);
    assert_eq!(post(&web, &session, "/settings", &good).status, 303);
    let before = std::fs::read(dirs.overrides()).unwrap();
    for (field, value, says) in [
        ("analysis_fps", "100", "0.2 to 60"),
        ("analysis_fps", "NaN", "not a number"),
        ("post_capture_s", "fast", "not a number"),
        ("min_object_pct", "-3", "1 to 100"),
        ("sensitivity", "extreme", "low, medium or high"),
        ("detection", "maybe", "neither armed"),
        ("masks", "0,0 2,0 0,1", "outside the frame"),
        ("zones", "0,0 1,0", "at least 3 points"),
        ("zones", "<script>alert(1)</script>", "is not a point"),
    ] {
        let r = post(&web, &session, "/settings", &form(&[(field, value)]));
        assert_eq!(r.status, 400, "{field}={value}");
        let html = r.text();
        let at = html
            .find(&format!("id=\"err-{field}\""))
            .unwrap_or_else(|| panic!("no message for {field}: {html}"));
        assert!(html[at..].contains(says), "{field}={value}: {html}");
        // The field keeps what was typed, escaped.
        assert!(!html.contains("<script>alert"), "{html}");
        assert_eq!(std::fs::read(dirs.overrides()).unwrap(), before);
    }
    // Past the body limit: refused, nothing written.
    let huge = "0.1,0.1 ".repeat(5000);
    let r = post(&web, &session, "/settings", &form(&[("masks", &huge)]));
    assert_eq!(r.status, 413);
    assert_eq!(std::fs::read(dirs.overrides()).unwrap(), before);
}

#[test]
fn cross_site_posts_are_refused_and_reset_goes_back_to_the_administrators_values() {
    let (dirs, web, session) = start("sensitivity = \"high\"");
    let r = post(
        &web,
        &session,
        "/settings",
        &form(&[("sensitivity", "low"), ("detection", "disarmed")]),
    );
    assert_eq!(r.status, 303);
    let before = std::fs::read(dirs.overrides()).unwrap();
    for path in ["/settings", "/settings/reset"] {
        let r = http::request(
            web.addr,
            "POST",
            path,
            &[
                ("Cookie", &session),
                ("Origin", "http://evil.example"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"analysis_fps=1",
        )
        .unwrap();
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(std::fs::read(dirs.overrides()).unwrap(), before);
    }
    // Without a login: the login page, nothing written.
    let r = http::request(web.addr, "POST", "/settings/reset", &[], b"").unwrap();
    assert_ne!(r.status, 303);
    assert_eq!(std::fs::read(dirs.overrides()).unwrap(), before);

    let r = post(&web, &session, "/settings/reset", &[]);
    assert_eq!(r.status, 303);
    let o = tuning::store::read(&dirs.overrides()).unwrap();
    // Back to the administrator's sensitivity; disarmed stays disarmed.
    assert_eq!(
        o,
        tuning::Overrides {
            detection: Some(false),
            ..Default::default()
        }
    );
    let html = http::get(web.addr, "/settings?reset=1", Some(&session))
        .unwrap()
        .text();
    assert!(html.contains("value=\"high\" selected"), "{html}");
}

#[test]
fn a_broken_overrides_file_is_shown_never_half_updated_and_reset_replaces_it() {
    let (dirs, web, session) = start("");
    std::fs::write(dirs.overrides(), "analysis_fps = [").unwrap();
    let html = http::get(web.addr, "/settings", Some(&session))
        .unwrap()
        .text();
    assert!(html.contains("is not valid: line 1"), "{html}");
    let r = post(&web, &session, "/settings", &form(&[("analysis_fps", "3")]));
    assert_eq!(r.status, 409);
    assert!(r.text().contains("Not saved"), "{}", r.text());
    assert_eq!(
        std::fs::read_to_string(dirs.overrides()).unwrap(),
        "analysis_fps = ["
    );
    assert_eq!(post(&web, &session, "/settings/reset", &[]).status, 303);
    assert!(tuning::store::read(&dirs.overrides()).unwrap().is_empty());
}

/// A stand-in for motion-svc's preview socket: answers each connection with `answer` (or
/// nothing, holding it, with `None`).
fn fake_preview(dirs: &Dirs, answer: Option<Vec<u8>>) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(dirs.run().join("preview.sock")).unwrap();
    std::thread::spawn(move || {
        for _ in 0..3 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            match &answer {
                Some(a) => {
                    let _ = s.write_all(a);
                }
                None => {
                    let mut b = [0u8; 1];
                    let _ = s.read(&mut b); // until web-svc gives up
                }
            }
        }
    })
}

#[test]
fn the_preview_comes_from_motion_svcs_socket_and_a_missing_or_hostile_one_is_503() {
    let (dirs, web, session) = start("");
    let r = http::get(web.addr, "/api/preview", Some(&session)).unwrap();
    assert_eq!(r.status, 503);
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(j["error"].as_str().unwrap().contains("mecam-motion"), "{j}");

    let doc = br#"{"t_ms":1,"armed":true,"recording":false,"verdict":"motion","score":4.1,"boxes":[[0.1,0.2,0.3,0.4]],"cols":4,"rows":2,"cells":"f0"}"#;
    let t = fake_preview(&dirs, Some(doc.to_vec()));
    let r = http::get(web.addr, "/api/preview", Some(&session)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, doc);
    // Logged out: no preview.
    assert_ne!(
        http::get(web.addr, "/api/preview", None).unwrap().status,
        200
    );
    drop(t);
    std::fs::remove_file(dirs.run().join("preview.sock")).unwrap();

    // Too large, or silent: refused with a reason, never passed on or waited for.
    let _t = fake_preview(&dirs, Some(vec![b' '; 64 * 1024]));
    std::thread::sleep(web_svc::settings::preview::PREVIEW_MAX_AGE);
    let r = http::get(web.addr, "/api/preview", Some(&session)).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("over"), "{}", r.text());
    std::fs::remove_file(dirs.run().join("preview.sock")).unwrap();
    let _t = fake_preview(&dirs, None);
    let r = http::get(web.addr, "/api/preview", Some(&session)).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("in time"), "{}", r.text());
}
