//! The JSON API as the README documents it: the fields of `/api/status` and `/api/events` are
//! exactly the README's tables, and every error under `/api/` is `{"error": ...}` with its
//! status.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mecam_system_tests::http;
use serde_json::Value;

use crate::events::write_event;
use crate::harness::{Camera, Dirs, Web, make_frames, poll, set_password};
use crate::metrics::write_records;

const PW: &str = "api test password";

/// Every key path of `v`: `camera.state`; an array of objects adds `events[].id`.
fn paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        Value::Array(a) => {
            for x in a.iter().filter(|x| x.is_object()) {
                paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// The first column of the README's field table under the heading `heading`.
fn documented(heading: &str) -> BTreeSet<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("the README has no heading {heading}"));
    readme[start + heading.len()..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(f, _)| f.to_owned()))
        .collect()
}

fn json(r: &http::Response) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

/// A web-svc with a live camera, the other services' records and two events (one recording).
fn serving() -> (Dirs, Web, Camera, String) {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(4, 160, 120, 0);
    write_event(&dirs.events(), "20261124T182900Z-0001", "complete", &frames);
    write_event(
        &dirs.events(),
        "20261124T183000Z-0002",
        "recording",
        &frames,
    );
    let camera = Camera::start(&dirs.run(), Arc::new(frames), 160, 120, 10.0);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    poll(Duration::from_secs(20), "a live snapshot", || {
        http::get(web.addr, "/snapshot.jpg", Some(&cookie)).is_ok_and(|r| r.status == 200)
    });
    (dirs, web, camera, cookie)
}

#[test]
fn the_fields_served_are_the_fields_the_readme_documents() {
    let (dirs, web, _camera, cookie) = serving();
    write_records(&dirs.run());
    for (path, heading) in [
        ("/api/status", "### `GET /api/status`"),
        ("/api/events", "### `GET /api/events?page=N`"),
    ] {
        let r = http::get(web.addr, path, Some(&cookie)).unwrap();
        assert_eq!(r.status, 200, "{path}");
        let mut served = BTreeSet::new();
        paths(&json(&r), "", &mut served);
        let documented = documented(heading);
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{path} serves fields the README does not document"
        );
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "the README documents fields {path} does not serve"
        );
    }
}

#[test]
fn api_errors_are_json_with_their_status() {
    let (_dirs, web, _camera, cookie) = serving();
    let c = Some(cookie.as_str());
    let cases: [(&str, &str, Option<&str>, u16, &str); 6] = [
        ("GET", "/api/status", None, 401, "log in"),
        ("GET", "/api/events/..%2Fetc", c, 400, ""),
        ("GET", "/api/events/20991231T000000Z-0001", c, 404, ""),
        ("GET", "/api/events?page=x", c, 400, "page"),
        ("GET", "/api/nothing-here", c, 404, ""),
        ("DELETE", "/api/events/20261124T183000Z-0002", c, 409, ""),
    ];
    for (method, path, cookie, status, says) in cases {
        // A same-origin request, as the dashboard's script sends it.
        let origin = format!("http://{}", web.addr);
        let mut headers = vec![("Origin", origin.as_str())];
        headers.extend(cookie.map(|c| ("Cookie", c)));
        let r = http::request(web.addr, method, path, &headers, b"").unwrap();
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
        let j = json(&r);
        let error = j["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: {j}"));
        assert!(
            !error.is_empty() && error.contains(says),
            "{method} {path}: {j}"
        );
        assert_eq!(j.as_object().unwrap().len(), 1, "only `error`: {j}");
    }
    // The login rule's answer keeps its challenge, so players still retry with credentials.
    let r = http::get(web.addr, "/api/status", None).unwrap();
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    // Pages are not JSON: a browser still gets the text.
    let r = http::get(web.addr, "/events/20991231T000000Z-0001", c).unwrap();
    assert_eq!(r.status, 404);
    assert_ne!(r.header("content-type"), Some("application/json"));
}
