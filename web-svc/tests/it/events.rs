//! Events: list, page, poster, download, in-browser replay, delete, damaged events, path
//! tricks. Clips are written with the AVI writer motion-svc uses (the `events` crate).

use std::path::Path;

use mecam_system_tests::http::{self, MjpegStream};

use crate::harness::{Dirs, Web, make_frames, set_password};

const PW: &str = "events test password";

pub(crate) fn write_event(events: &Path, id: &str, state: &str, frames: &[Vec<u8>]) {
    let dir = events.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut avi = ::events::avi::AviWriter::create(&dir.join("clip.avi"), 160, 120, 10.0).unwrap();
    for (i, f) in frames.iter().enumerate() {
        avi.push(f, i as u64 * 100_000_000).unwrap();
    }
    avi.finish().unwrap();
    std::fs::write(dir.join("poster.jpg"), &frames[0]).unwrap();
    let json = serde_json::json!({
        "id": id, "state": state, "start_unix_ms": 1_795_545_000_000u64, "end_unix_ms": null,
        "duration_s": 1.5, "peak_score": 0.42, "peak_area_pct": 3.5, "boxes": [[0.1, 0.1, 0.2, 0.2]],
        "frames": frames.len(), "dropped_frames": 0, "clip": "clip.avi", "poster": "poster.jpg",
        "width": 160, "height": 120, "end_reason": if state == "interrupted" { "crash" } else { "quiet" },
    });
    std::fs::write(dir.join("event.json"), json.to_string()).unwrap();
}

#[test]
fn events_are_listed_played_downloaded_and_deleted() {
    let dirs = Dirs::new("events_per_page = 2");
    set_password(&dirs, PW);
    let frames = make_frames(5, 160, 120, 10);
    let ev = dirs.events();
    write_event(&ev, "20261124T182900Z-0001", "complete", &frames);
    write_event(&ev, "20261124T183000Z-0002", "complete", &frames);
    write_event(&ev, "20261124T183100Z-0003", "recording", &frames);
    // Damaged ones: corrupt json; half-written (no json, clip.avi.part).
    std::fs::create_dir(ev.join("20261124T183200Z-0004")).unwrap();
    std::fs::write(
        ev.join("20261124T183200Z-0004/event.json"),
        "{\"state\": \"compl",
    )
    .unwrap();
    std::fs::create_dir(ev.join("20261124T183300Z-0005")).unwrap();
    std::fs::write(ev.join("20261124T183300Z-0005/clip.avi.part"), b"RIFF").unwrap();
    // A symlink trying to lead out of the events directory.
    std::os::unix::fs::symlink("/etc", ev.join("20261124T183400Z-0006")).unwrap();

    let web = Web::start(&dirs);
    let session = http::login(web.addr, "admin", PW).unwrap();
    let c = Some(session.as_str());

    let page0: serde_json::Value =
        serde_json::from_slice(&http::get(web.addr, "/api/events", c).unwrap().body).unwrap();
    let ids: Vec<&str> = page0["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["20261124T183300Z-0005", "20261124T183200Z-0004"],
        "newest first, paged"
    );
    assert_eq!(page0["events"][0]["state"], "incomplete");
    assert_eq!(page0["events"][1]["state"], "corrupt");
    assert_eq!(page0["more"], true);
    let page2: serde_json::Value =
        serde_json::from_slice(&http::get(web.addr, "/api/events?page=2", c).unwrap().body)
            .unwrap();
    assert_eq!(page2["events"][0]["id"], "20261124T182900Z-0001");
    assert_eq!(page2["more"], false);

    for path in [
        "/",
        "/events",
        "/events?page=1",
        "/events/20261124T183200Z-0004",
        "/events/20261124T183300Z-0005",
    ] {
        let r = http::get(web.addr, path, c).unwrap();
        assert_eq!(r.status, 200, "{path}");
    }
    // An event's page says why it ended and what its clip lost.
    let one = http::get(web.addr, "/events/20261124T182900Z-0001", c)
        .unwrap()
        .text();
    assert!(
        one.contains("<td>ended</td><td>motion stopped</td>"),
        "{one}"
    );
    assert!(one.contains("<td>dropped frames</td><td>0</td>"), "{one}");
    // The dashboard shows the latest events as cards, newest first: a link, the poster when
    // there is one, the start time, duration and peak score, and damaged ones as such.
    let dash = http::get(web.addr, "/", c).unwrap().text();
    let at = |id: &str| {
        dash.find(&format!("<a href=\"/events/{id}\">"))
            .unwrap_or_else(|| panic!("no card for {id} on the dashboard:\n{dash}"))
    };
    let order: Vec<usize> = [
        "20261124T183300Z-0005",
        "20261124T183200Z-0004",
        "20261124T183100Z-0003",
        "20261124T183000Z-0002",
        "20261124T182900Z-0001",
    ]
    .iter()
    .map(|id| at(id))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "cards newest first");
    assert!(dash.contains("src=\"/events/20261124T182900Z-0001/poster.jpg\""));
    assert!(
        dash.contains("(no poster)"),
        "the half-written event has no poster"
    );
    assert!(
        dash.contains("1.5 s, largest object 0.4 % of the frame"),
        "duration and largest object:\n{dash}"
    );
    assert!(dash.contains("2026-"), "start time shown:\n{dash}");
    assert!(dash.contains("motion now") && dash.contains("corrupt") && dash.contains("incomplete"));
    let list = http::get(web.addr, "/events?page=1", c).unwrap().text();
    assert!(
        list.contains("motion now"),
        "the recording event is shown as motion now"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&http::get(web.addr, "/api/status", c).unwrap().body).unwrap();
    assert_eq!(status["motion"]["active"], true);

    let id = "20261124T182900Z-0001";
    let poster = http::get(web.addr, &format!("/events/{id}/poster.jpg"), c).unwrap();
    assert_eq!(
        (poster.status, poster.header("content-type")),
        (200, Some("image/jpeg"))
    );
    assert_eq!(poster.body, frames[0]);
    let clip = http::get(web.addr, &format!("/events/{id}/clip.avi"), c).unwrap();
    assert_eq!(clip.status, 200);
    assert!(
        clip.header("content-disposition")
            .unwrap()
            .contains("attachment")
    );
    assert_eq!(
        clip.body,
        std::fs::read(ev.join(id).join("clip.avi")).unwrap()
    );
    // Replay as MJPEG: the clip's own JPEGs, in order.
    let mut play = MjpegStream::open(web.addr, &format!("/events/{id}/play.mjpg"), c).unwrap();
    for f in &frames {
        assert!(play.next_part().unwrap().body == *f);
    }
    assert!(play.next_part().is_err(), "the replay ends with the clip");
    // A damaged clip is refused clearly.
    let r = http::get(web.addr, "/events/20261124T183300Z-0005/play.mjpg", c).unwrap();
    assert_eq!(r.status, 404);

    // The symlink leads nowhere.
    for p in [
        "/events/20261124T183400Z-0006",
        "/events/20261124T183400Z-0006/poster.jpg",
        "/api/events/20261124T183400Z-0006",
    ] {
        assert_eq!(http::get(web.addr, p, c).unwrap().status, 404, "{p}");
    }

    // Delete: refused while recording, works otherwise (form and API).
    let origin = format!("http://{}", web.addr);
    let cookie = [("Cookie", session.as_str()), ("Origin", origin.as_str())];
    let r = http::request(
        web.addr,
        "DELETE",
        "/api/events/20261124T183100Z-0003",
        &cookie,
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 409);
    assert!(ev.join("20261124T183100Z-0003").exists());
    let r = http::request(
        web.addr,
        "POST",
        &format!("/events/{id}/delete"),
        &cookie,
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 303);
    assert!(!ev.join(id).exists());
    let r = http::request(
        web.addr,
        "DELETE",
        "/api/events/20261124T183200Z-0004",
        &cookie,
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(
        http::get(web.addr, &format!("/api/events/{id}"), c)
            .unwrap()
            .status,
        404
    );
    assert!(
        Path::new("/etc/passwd").exists(),
        "nothing outside was touched"
    );
    let r = http::request(
        web.addr,
        "DELETE",
        "/api/events/20261124T183400Z-0006",
        &cookie,
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert!(ev.join("20261124T183400Z-0006").symlink_metadata().is_ok());
}

#[test]
fn a_download_client_that_stops_reading_is_dropped() {
    use std::io::Write as _;
    let dirs = Dirs::new("viewer_timeout_s = 2.0");
    set_password(&dirs, PW);
    let id = "20261124T182900Z-0001";
    std::fs::create_dir(dirs.events().join(id)).unwrap();
    let size = 48 << 20;
    std::fs::write(dirs.events().join(id).join("clip.avi"), vec![7u8; size]).unwrap();
    std::fs::write(
        dirs.events().join(id).join("event.json"),
        r#"{"state":"complete"}"#,
    )
    .unwrap();
    let web = Web::start(&dirs);
    let session = http::login(web.addr, "admin", PW).unwrap();
    let mut deaf = std::net::TcpStream::connect(web.addr).unwrap();
    write!(
        deaf,
        "GET /events/{id}/clip.avi HTTP/1.1\r\nHost: x\r\nCookie: {session}\r\n\r\n"
    )
    .unwrap();
    crate::harness::poll(
        std::time::Duration::from_secs(60),
        "the stalled download to be dropped",
        || {
            let m = http::get(web.addr, "/metrics", Some(&session))
                .unwrap()
                .text();
            crate::harness::metric(&m, "mecam_web_viewers_dropped_stalled_total").unwrap_or(0.0)
                >= 1.0
        },
    );
    let total = crate::harness::drain_until_closed(&mut deaf, "stalled download");
    assert!(
        total < size,
        "the whole file came through ({total} bytes) although the client stalled"
    );
}

/// Deletes event `id` with the API as a same-origin browser would; the status and body.
fn delete(web: &Web, cookie: &str, id: &str) -> (u16, String) {
    let origin = format!("http://{}", web.addr);
    let r = http::request(
        web.addr,
        "DELETE",
        &format!("/api/events/{id}"),
        &[("Cookie", cookie), ("Origin", &origin)],
        b"",
    )
    .unwrap();
    (r.status, r.text())
}

#[test]
fn fifos_and_directories_in_event_folders_never_hang_listing_pages_login_or_shutdown() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(3, 160, 120, 10);
    let ev = dirs.events();
    let fine = "20261124T182900Z-0001";
    write_event(&ev, fine, "complete", &frames);
    // Every file web-svc reads, as a FIFO nobody writes to (an open for reading would wait
    // for a writer for ever).
    let fifos = "20261124T183000Z-0002";
    std::fs::create_dir(ev.join(fifos)).unwrap();
    for name in ["event.json", "poster.jpg", "clip.avi"] {
        nix::unistd::mkfifo(
            &ev.join(fifos).join(name),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
    }
    // And as directories.
    let dirs_in = "20261124T183100Z-0003";
    for name in ["event.json", "poster.jpg", "clip.avi"] {
        std::fs::create_dir_all(ev.join(dirs_in).join(name)).unwrap();
    }
    let mut web = Web::start(&dirs);
    let session = http::login(web.addr, "admin", PW).unwrap();
    let c = Some(session.as_str());
    // More requests than web-svc has blocking threads: none may be left waiting on a FIFO.
    for round in 0..3 {
        for path in [
            "/",
            "/events",
            "/api/events",
            "/api/status",
            &format!("/events/{fifos}"),
            &format!("/events/{dirs_in}"),
            &format!("/api/events/{fifos}"),
        ] {
            let r = http::get(web.addr, path, c)
                .unwrap_or_else(|e| panic!("round {round}: {path}: {e}\n{}", web.log()));
            assert_eq!(r.status, 200, "{path}: {}", r.text());
        }
        for id in [fifos, dirs_in] {
            for file in ["poster.jpg", "clip.avi", "play.mjpg"] {
                let path = format!("/events/{id}/{file}");
                let r = http::get(web.addr, &path, c)
                    .unwrap_or_else(|e| panic!("round {round}: {path}: {e}"));
                assert_eq!(r.status, 404, "{path}");
            }
        }
    }
    let listed: serde_json::Value =
        serde_json::from_slice(&http::get(web.addr, "/api/events", c).unwrap().body).unwrap();
    let state = |id: &str| {
        listed["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .map(|e| (e["state"].clone(), e["problem"].clone()))
            .unwrap()
    };
    let (st, problem) = state(fifos);
    assert_eq!(st, "corrupt");
    assert!(
        problem
            .as_str()
            .unwrap()
            .contains("not a regular file (a FIFO)"),
        "{problem}"
    );
    let (st, problem) = state(dirs_in);
    assert_eq!(st, "corrupt");
    assert!(
        problem.as_str().unwrap().contains("a directory"),
        "{problem}"
    );
    assert_eq!(state(fine).0, "complete");
    // The good event is still served whole.
    let poster = http::get(web.addr, &format!("/events/{fine}/poster.jpg"), c).unwrap();
    assert_eq!(poster.body, frames[0]);
    // Logins still work (they need a blocking thread for argon2).
    http::login(web.addr, "admin", PW).unwrap();
    // The skipped files are logged, but not once per request.
    let log = web.log();
    let skipped = log
        .lines()
        .filter(|l| l.contains("event file skipped"))
        .count();
    assert!((1..=3).contains(&skipped), "{skipped} lines:\n{log}");
    // Deleting them works, and shutdown is clean and prompt.
    assert_eq!(delete(&web, &session, fifos).0, 204);
    assert_eq!(delete(&web, &session, dirs_in).0, 204);
    assert!(web.terminate(), "web-svc did not exit cleanly on SIGTERM");
}

#[test]
fn failed_interrupted_and_stalled_events_can_be_deleted_and_a_recording_one_says_why_not() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(2, 160, 120, 10);
    let ev = dirs.events();
    let (failed, interrupted, stalled, recording) = (
        "20261124T182900Z-0001",
        "20261124T183000Z-0002",
        "20261124T183100Z-0003",
        "20261124T183200Z-0004",
    );
    write_event(&ev, failed, "failed", &frames);
    write_event(&ev, interrupted, "interrupted", &frames);
    write_event(&ev, stalled, "recording", &frames);
    write_event(&ev, recording, "recording", &frames);
    // "recording", but nothing written to it for ten minutes (motion-svc stopped or stuck).
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    for name in ["", "event.json", "clip.avi", "poster.jpg"] {
        std::fs::File::options()
            .read(true)
            .open(ev.join(stalled).join(name))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let web = Web::start(&dirs);
    let session = http::login(web.addr, "admin", PW).unwrap();
    let c = Some(session.as_str());
    let info = |id: &str| -> serde_json::Value {
        serde_json::from_slice(
            &http::get(web.addr, &format!("/api/events/{id}"), c)
                .unwrap()
                .body,
        )
        .unwrap()
    };
    assert_eq!(info(failed)["state"], "failed");
    assert_eq!(info(stalled)["state"], "stalled");
    assert!(
        info(stalled)["problem"]
            .as_str()
            .unwrap()
            .contains("motion-svc is stopped or stuck")
    );
    assert_eq!(info(recording)["state"], "recording");
    // Only the event being recorded now counts as motion.
    let status: serde_json::Value =
        serde_json::from_slice(&http::get(web.addr, "/api/status", c).unwrap().body).unwrap();
    assert_eq!(status["motion"]["event"], recording);
    // Each page offers a delete button but the recording one, which says why.
    for id in [failed, interrupted, stalled] {
        let page = http::get(web.addr, &format!("/events/{id}"), c)
            .unwrap()
            .text();
        assert!(page.contains("<button>Delete</button>"), "{id}: {page}");
    }
    let page = http::get(web.addr, &format!("/events/{recording}"), c)
        .unwrap()
        .text();
    assert!(!page.contains("<button>Delete</button>"));
    assert!(page.contains("systemctl stop mecam-motion"), "{page}");
    let (status, why) = delete(&web, &session, recording);
    assert_eq!(status, 409);
    assert!(
        why.contains("being recorded now") && why.contains("systemctl stop mecam-motion"),
        "{why}"
    );
    assert!(ev.join(recording).exists());
    for id in [failed, interrupted, stalled] {
        assert_eq!(delete(&web, &session, id), (204, String::new()), "{id}");
        assert!(!ev.join(id).exists(), "{id}");
    }
}
