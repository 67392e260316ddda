//! The services' health on the pages (from the status records), the banner, and the small
//! things users noticed: the login form's user name, `/favicon.ico`, the recording card.

use std::sync::Arc;
use std::time::Duration;

use ipc::status::{Detail, MotionStatus, Service, StatusWriter};
use mecam_system_tests::http;

use crate::events::write_event;
use crate::harness::{Camera, Dirs, Web, make_frames, poll, set_password};
use crate::metrics::write_records;

const PW: &str = "health test password";

fn logged_in(config: &str) -> (Dirs, Web, String) {
    let dirs = Dirs::new(config);
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    (dirs, web, cookie)
}

/// The dashboard's health item of `service` (`<li ... data-service="motion">...</li>`).
fn item<'a>(html: &'a str, service: &str) -> &'a str {
    let start = html
        .find(&format!("data-service=\"{service}\""))
        .unwrap_or_else(|| panic!("no {service} in {html}"));
    let end = html[start..].find("</li>").unwrap() + start;
    &html[start..end]
}

#[test]
fn the_dashboard_says_which_service_runs_and_since_when_one_stopped() {
    let (dirs, web, cookie) = logged_in("");
    // No records yet: capture and motion are down, never "fine".
    let page = http::get(web.addr, "/", Some(&cookie)).unwrap().text();
    assert!(
        page.contains("<li class=\"h-down\" data-service=\"capture\">"),
        "{page}"
    );
    assert!(
        page.contains(
            "<li class=\"h-down\" data-service=\"motion\"><b>motion detector</b>: not running"
        ),
        "{page}"
    );
    assert!(
        page.contains("<li class=\"h-ok\" data-service=\"web\">"),
        "{page}"
    );
    // The banner, on every logged-in page.
    for path in ["/", "/events"] {
        poll(Duration::from_secs(10), "the banner", || {
            http::get(web.addr, path, Some(&cookie))
                .unwrap()
                .text()
                .contains("id=\"banner\" role=\"alert\">The camera is not running. The motion detector is not running.")
        });
    }
    // Both running: green, up since; no banner.
    write_records(&dirs.run());
    let page = http::get(web.addr, "/", Some(&cookie)).unwrap().text();
    assert!(page.contains("<li class=\"h-ok\" data-service=\"capture\"><b>camera</b>: streaming, 15.0 fps, up since <time datetime=\""), "{page}");
    assert!(
        page.contains("<li class=\"h-ok\" data-service=\"motion\">"),
        "{page}"
    );
    poll(Duration::from_secs(10), "the banner to go", || {
        write_records(&dirs.run());
        !http::get(web.addr, "/events", Some(&cookie))
            .unwrap()
            .text()
            .contains("id=\"banner\"")
    });
    // Motion stops: down since its last record, in UTC for the script to localise.
    let mut w = StatusWriter::new(&dirs.run(), Service::Motion).unwrap();
    w.write_stopped(&Detail::Motion(MotionStatus::default()))
        .unwrap();
    let page = http::get(web.addr, "/", Some(&cookie)).unwrap().text();
    assert!(
        page.contains("<li class=\"h-down\" data-service=\"motion\">"),
        "{page}"
    );
    let motion = item(&page, "motion");
    assert!(
        motion.contains("not running since <time datetime=\"20"),
        "{motion}"
    );
    let status: serde_json::Value = serde_json::from_slice(
        &http::get(web.addr, "/api/status", Some(&cookie))
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(status["services"][1]["level"], "down", "{status}");
    assert!(
        status["banner"]
            .as_str()
            .unwrap()
            .contains("motion detector is not running")
    );
}

#[test]
fn a_garbage_or_oversize_record_is_shown_as_unknown_and_survived() {
    let (dirs, web, cookie) = logged_in("");
    std::fs::create_dir_all(dirs.run().join("status")).unwrap();
    std::fs::write(
        Service::Motion.path(&dirs.run()),
        b"<script>alert(1)</script>",
    )
    .unwrap();
    std::fs::write(
        Service::Capture.path(&dirs.run()),
        vec![b'{'; ipc::status::MAX_RECORD_BYTES * 100],
    )
    .unwrap();
    let page = http::get(web.addr, "/", Some(&cookie)).unwrap().text();
    assert!(
        page.contains("<li class=\"h-unknown\" data-service=\"motion\">"),
        "{page}"
    );
    assert!(
        page.contains("<li class=\"h-unknown\" data-service=\"capture\">"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains("larger than 4096 bytes"), "{page}");
    let r = http::get(web.addr, "/metrics", Some(&cookie)).unwrap();
    assert!(r.text().contains("mecam_motion_up 0"), "{}", r.text());
}

#[test]
fn the_favicon_needs_no_login() {
    let (_dirs, web, _cookie) = logged_in("");
    let r = http::get(web.addr, "/favicon.ico", None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/x-icon"));
    // An ICO header with one image.
    assert_eq!(&r.body[..6], &[0, 0, 1, 0, 1, 0]);
}

#[test]
fn the_login_form_has_the_user_name_its_error_speaks_of() {
    let (_dirs, web, _cookie) = logged_in("");
    let form = http::get(web.addr, "/login", None).unwrap().text();
    assert!(
        form.contains("name=\"username\" value=\"admin\" autocomplete=\"username\""),
        "{form}"
    );
    assert!(
        !form.contains("type=\"hidden\" name=\"username\""),
        "{form}"
    );
    let r = http::request(
        web.addr,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &format!("http://{}", web.addr)),
        ],
        b"username=admin&password=wrong",
    )
    .unwrap();
    assert_eq!(r.status, 401);
    let page = r.text();
    assert!(
        page.contains("Wrong user name or password.") && page.contains("name=\"username\""),
        "{page}"
    );
}

#[test]
fn a_recording_card_shows_the_picture_of_now_and_the_time_so_far() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(3, 160, 120, 0);
    write_event(
        &dirs.events(),
        "20261124T183000Z-0002",
        "recording",
        &frames,
    );
    std::fs::remove_file(dirs.events().join("20261124T183000Z-0002/poster.jpg")).unwrap();
    let _camera = Camera::start(&dirs.run(), Arc::new(frames), 160, 120, 10.0);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    for path in ["/", "/events"] {
        let page = http::get(web.addr, path, Some(&cookie)).unwrap().text();
        assert!(!page.contains("(no poster)"), "{path}: {page}");
        assert!(!page.contains("<div>0.0 s,"), "{path}: {page}");
        assert!(page.contains("src=\"/snapshot.jpg\""), "{path}: {page}");
        assert!(page.contains("recording for "), "{path}: {page}");
    }
}
