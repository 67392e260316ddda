//! Reviewing events: the clip's frames by number from the AVI's index (hostile numbers, ids
//! and damaged clips refused clearly and survived), `frames.json`, and "Save as MP4" (made by
//! the real ffmpeg, one job at a time, killed with its event, a clear answer without ffmpeg).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use mecam_system_tests::http::{self, Response};
use serde_json::Value;

use crate::harness::{Dirs, Web, make_frames, poll, set_password};
use crate::page_weight::MAX_PAGE_BYTES;

const PW: &str = "review test password";
/// A start time: 2026-11-24 18:29:00 UTC.
const START_MS: u64 = 1_795_544_940_000;

/// A finished event of `frames` at 10 fps with a track and a 200 ms pre-capture.
pub(crate) fn write_event(events: &Path, id: &str, frames: &[Vec<u8>], w: u32, h: u32) {
    let dir = events.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut avi = ::events::avi::AviWriter::create(&dir.join("clip.avi"), w, h, 10.0).unwrap();
    for (i, f) in frames.iter().enumerate() {
        avi.push(f, i as u64 * 100_000_000).unwrap();
    }
    avi.finish().unwrap();
    std::fs::write(dir.join("poster.jpg"), &frames[frames.len() / 2]).unwrap();
    let meta = ::events::EventMeta {
        state: ::events::EventState::Complete,
        end_unix_ms: Some(START_MS + 1500),
        duration_s: 1.5,
        peak_score: 12.5,
        peak_area_pct: 6.0,
        boxes: vec![[0.05, 0.6, 0.3, 0.35]],
        track: vec![
            ::events::TrackFrame {
                t_ms: 0,
                boxes: vec![[0.1, 0.1, 0.2, 0.2]],
            },
            ::events::TrackFrame {
                t_ms: 300,
                boxes: vec![[0.05, 0.6, 0.3, 0.35]],
            },
        ],
        frames: frames.len() as u64,
        clip: Some("clip.avi".into()),
        poster: Some("poster.jpg".into()),
        end_reason: Some(::events::EndReason::Quiet),
        clip_lead_ms: Some(200),
        ..::events::EventMeta::new(id.into(), ::events::parse_id(id).unwrap_or(START_MS), w, h)
    };
    ::events::write_meta(&dir, &meta).unwrap();
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// A POST from this server's page (its Origin), asking for JSON.
fn post(web: &Web, path: &str, cookie: &str) -> Response {
    let origin = format!("http://{}", web.addr);
    http::request(
        web.addr,
        "POST",
        path,
        &[
            ("Cookie", cookie),
            ("Origin", &origin),
            ("Accept", "application/json"),
        ],
        b"",
    )
    .unwrap()
}

#[test]
fn frames_are_served_by_number_and_hostile_requests_are_refused() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(6, 160, 120, 10);
    let ev = dirs.events();
    let id = "20261124T182900Z-0001";
    write_event(&ev, id, &frames, 160, 120);
    // Damaged clips: garbage, cut off before the index, an index entry pointing elsewhere.
    let (garbage, cut, hostile) = (
        "20261124T183000Z-0002",
        "20261124T183100Z-0003",
        "20261124T183200Z-0004",
    );
    for other in [garbage, cut, hostile] {
        write_event(&ev, other, &frames, 160, 120);
    }
    std::fs::write(ev.join(garbage).join("clip.avi"), vec![0x55u8; 4096]).unwrap();
    let whole = std::fs::read(ev.join(id).join("clip.avi")).unwrap();
    let index_at = whole.len() - 8 - 16 * frames.len();
    std::fs::write(ev.join(cut).join("clip.avi"), &whole[..index_at]).unwrap();
    let mut bad = whole.clone();
    let entry = index_at + 8 + 16 * 2;
    bad[entry + 8..entry + 12].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    std::fs::write(ev.join(hostile).join("clip.avi"), &bad).unwrap();

    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let c = Some(cookie.as_str());

    let info = json(&http::get(web.addr, &format!("/events/{id}/frames.json"), c).unwrap());
    assert_eq!(info["frames"], 6, "{info}");
    assert_eq!(info["ms_per_frame"], 100.0, "{info}");
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(160), Some(120))
    );
    assert_eq!(info["first_frame_unix_ms"], START_MS - 200, "{info}");
    assert_eq!(
        info["track"][1]["t_ms"], 500,
        "track times are clip times: {info}"
    );
    for n in [5, 0, 3] {
        let r = http::get(web.addr, &format!("/events/{id}/frames/{n}"), c).unwrap();
        assert_eq!(
            (r.status, r.header("content-type")),
            (200, Some("image/jpeg"))
        );
        assert!(
            r.body == frames[n],
            "frame {n} is the recorded JPEG, byte for byte"
        );
    }
    let r = http::get(web.addr, &format!("/events/{id}/frames/6"), c).unwrap();
    assert_eq!(r.status, 404);
    assert!(r.text().contains("has 6 frames"), "{}", r.text());
    for n in ["-1", "abc", "1.5", "99999999999999999999999", "0x1", "%00"] {
        let r = http::get(web.addr, &format!("/events/{id}/frames/{n}"), c).unwrap();
        assert_eq!(r.status, 400, "{n}: {}", r.text());
        assert!(r.text().contains("not a frame number"), "{}", r.text());
    }
    for (path, status) in [
        ("/events/..%2f..%2fetc/frames/0", 400),
        ("/events/20991124T182900Z-0001/frames/0", 404),
        ("/events/20991124T182900Z-0001/frames.json", 404),
        (&format!("/events/{}/frames/0", "a".repeat(300)), 400),
    ] {
        assert_eq!(
            http::get(web.addr, path, c).unwrap().status,
            status,
            "{path}"
        );
    }
    for damaged in [garbage, cut, hostile] {
        let n = if damaged == hostile { 2 } else { 0 };
        for path in [
            format!("/events/{damaged}/frames/{n}"),
            format!("/events/{damaged}/frames.json"),
        ] {
            let r = http::get(web.addr, &path, c).unwrap();
            if damaged == hostile && path.ends_with(".json") {
                assert_eq!(r.status, 200, "{path}: the index itself is whole");
                continue;
            }
            assert_eq!(r.status, 422, "{path}: {}", r.text());
            assert!(
                r.text().contains("AVI"),
                "says what still works: {}",
                r.text()
            );
        }
    }
    // The hostile clip's other frames still play, and the service is alive and well.
    let r = http::get(web.addr, &format!("/events/{hostile}/frames/1"), c).unwrap();
    assert!(r.status == 200 && r.body == frames[1]);
    assert_eq!(http::get(web.addr, "/healthz", None).unwrap().status, 200);
}

/// A directory holding a `ffmpeg` that is a shell script (`body`), for a `PATH`.
fn fake_ffmpeg(dir: &Path, body: &str) {
    let p = dir.join("ffmpeg");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn status_of(web: &Web, id: &str, c: &str) -> Value {
    json(&http::get(web.addr, &format!("/events/{id}/mp4"), Some(c)).unwrap())
}

#[test]
fn one_mp4_job_at_a_time_killed_with_its_event_and_a_clear_answer_without_ffmpeg() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(4, 160, 120, 10);
    let ev = dirs.events();
    let (a, b) = ("20261124T182900Z-0001", "20261124T183000Z-0002");
    write_event(&ev, a, &frames, 160, 120);
    write_event(&ev, b, &frames, 160, 120);
    // An ffmpeg that reports a frame and then hangs, writing its pid where the test sees it.
    let bin = dirs.tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let pidfile = dirs.tmp.path().join("ffmpeg.pid");
    fake_ffmpeg(
        &bin,
        &format!(
            "case \"$*\" in *-encoders*) exit 0;; esac\necho $$ > {}\necho frame=2\nexec /bin/sleep 600",
            pidfile.display()
        ),
    );
    let web = Web::start_with(&dirs, |c| {
        c.env("PATH", &bin);
    });
    let cookie = http::login(web.addr, "admin", PW).unwrap();

    assert_eq!(status_of(&web, a, &cookie)["state"], "none");
    let r = post(&web, &format!("/events/{a}/mp4"), &cookie);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(json(&r)["state"], "running");
    poll(Duration::from_secs(10), "the job's progress", || {
        status_of(&web, a, &cookie)["progress"] == 0.5
    });
    // A second event's job: refused while the first runs, saying why.
    let r = post(&web, &format!("/events/{b}/mp4"), &cookie);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("busy") && r.text().contains(a),
        "{}",
        r.text()
    );
    assert_eq!(status_of(&web, b, &cookie)["state"], "busy");
    // The same event again: the running job, not a second one.
    assert_eq!(post(&web, &format!("/events/{a}/mp4"), &cookie).status, 202);
    // Deleting the event kills its job (the whole process group) and the folder goes.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let origin = format!("http://{}", web.addr);
    let r = http::request(
        web.addr,
        "DELETE",
        &format!("/api/events/{a}"),
        &[("Cookie", &cookie), ("Origin", &origin)],
        b"",
    )
    .unwrap();
    assert!(r.status < 300, "{} {}", r.status, r.text());
    assert!(!ev.join(a).exists());
    poll(
        Duration::from_secs(10),
        "the killed ffmpeg to be gone",
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
    );
    // Now the other event's job may start; shutdown kills it.
    std::fs::remove_file(&pidfile).unwrap();
    assert_eq!(post(&web, &format!("/events/{b}/mp4"), &cookie).status, 202);
    poll(Duration::from_secs(10), "the second job", || {
        pidfile.exists()
    });
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut web = web;
    assert!(web.terminate(), "a clean exit with a job running");
    poll(Duration::from_secs(10), "ffmpeg killed at shutdown", || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
    });
    assert!(!ev.join(b).join("clip.mp4.part").exists());
    assert!(!ev.join(b).join("clip.mp4").exists());

    // An ffmpeg that fails: the job ends as failed with ffmpeg's last words, nothing is left
    // behind, and the page says it.
    let failing = dirs.tmp.path().join("failing");
    std::fs::create_dir(&failing).unwrap();
    fake_ffmpeg(
        &failing,
        "case \"$*\" in *-encoders*) exit 0;; esac\necho 'clip.avi: Invalid data found' >&2\nexit 1",
    );
    let mut web = Web::start_with(&dirs, |c| {
        c.env("PATH", &failing);
    });
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    assert_eq!(post(&web, &format!("/events/{b}/mp4"), &cookie).status, 202);
    let mut st = Value::Null;
    poll(Duration::from_secs(10), "the job to fail", || {
        st = status_of(&web, b, &cookie);
        st["state"] == "failed"
    });
    let why = st["message"].as_str().unwrap();
    assert!(
        why.contains("Invalid data found") && why.contains("libx264"),
        "{st}"
    );
    assert!(!ev.join(b).join("clip.mp4.part").exists());
    let page = http::get(web.addr, &format!("/events/{b}"), Some(&cookie))
        .unwrap()
        .text();
    assert!(
        page.contains("could not be made") && page.contains("Invalid data found"),
        "{page}"
    );
    assert!(web.terminate());

    // No ffmpeg at all: a clear answer, the page says so, the AVI still downloads.
    let empty = dirs.tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let web = Web::start_with(&dirs, |c| {
        c.env("PATH", &empty);
    });
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let r = post(&web, &format!("/events/{b}/mp4"), &cookie);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("apt install ffmpeg"), "{}", r.text());
    assert_eq!(status_of(&web, b, &cookie)["state"], "unavailable");
    let page = http::get(web.addr, &format!("/events/{b}"), Some(&cookie))
        .unwrap()
        .text();
    assert!(page.contains("apt install ffmpeg"), "{page}");
    let avi = http::get(web.addr, &format!("/events/{b}/clip.avi"), Some(&cookie)).unwrap();
    assert_eq!(avi.status, 200);
}

/// Whether the real ffmpeg and ffprobe are installed (CI must have them).
pub(crate) fn have_ffmpeg(test: &str) -> bool {
    let ok = ["ffmpeg", "ffprobe"].iter().all(|b| {
        std::process::Command::new(b)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "ffmpeg missing: CI must install it"
        );
        eprintln!(
            "\n!!!!! SKIPPED {test}: ffmpeg/ffprobe not installed (apt-get install -y ffmpeg).\n"
        );
    }
    ok
}

/// What ffprobe says of `path`'s video stream: `codec,pix_fmt,frames`.
pub(crate) fn probe(path: &Path) -> String {
    mecam_system_tests::events::probe_stream(path, "codec_name,pix_fmt,nb_read_frames")
        .unwrap()
        .expect("ffprobe (the callers checked have_ffmpeg)")
}

#[test]
fn save_as_mp4_makes_h264_that_phones_play_and_it_goes_with_the_event() {
    if !have_ffmpeg("save_as_mp4_makes_h264_that_phones_play_and_it_goes_with_the_event") {
        return;
    }
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(12, 160, 120, 10);
    let ev = dirs.events();
    let id = "20261124T182900Z-0001";
    write_event(&ev, id, &frames, 160, 120);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let r = post(&web, &format!("/events/{id}/mp4"), &cookie);
    assert_eq!(r.status, 202, "{}", r.text());
    let mut st = Value::Null;
    poll(Duration::from_secs(60), "the MP4", || {
        st = status_of(&web, id, &cookie);
        assert_ne!(st["state"], "failed", "{st}");
        st["state"] == "done"
    });
    assert_eq!(st["progress"], 1.0);
    let mp4 = http::get(web.addr, &format!("/events/{id}/clip.mp4"), Some(&cookie)).unwrap();
    assert_eq!(mp4.status, 200);
    assert_eq!(mp4.header("content-type"), Some("video/mp4"));
    assert_eq!(Some(mp4.body.len() as u64), st["bytes"].as_u64());
    let got = dirs.tmp.path().join("got.mp4");
    std::fs::write(&got, &mp4.body).unwrap();
    assert_eq!(probe(&got), "h264,yuv420p,12");
    // faststart: the index (moov) comes before the frames (mdat).
    let at = |tag: &[u8]| mp4.body.windows(4).position(|w| w == tag).unwrap();
    assert!(
        at(b"moov") < at(b"mdat"),
        "moov first, so phones start at once"
    );
    // A second request serves the cached file; the page offers it.
    assert_eq!(
        post(&web, &format!("/events/{id}/mp4"), &cookie).status,
        202
    );
    let page = http::get(web.addr, &format!("/events/{id}"), Some(&cookie))
        .unwrap()
        .text();
    assert!(page.contains(&format!("/events/{id}/clip.mp4")), "{page}");
    // Deleting the event deletes the MP4 with it.
    let origin = format!("http://{}", web.addr);
    let r = http::request(
        web.addr,
        "POST",
        &format!("/events/{id}/delete"),
        &[("Cookie", &cookie), ("Origin", &origin)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 303);
    assert!(!ev.join(id).exists());
}

/// Each review page, HTML, CSS and script together, stays under 50 KB with a full page of
/// events (the default 20 cards) and the day filter full (events on 25 days, 14 offered);
/// the sizes are printed for the README's page-weight table.
#[test]
fn review_pages_stay_under_50_kb() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(3, 160, 120, 10);
    let ids: Vec<String> = (0..25u64)
        .map(|k| ::events::format_id(START_MS - k * 86_400_000, 1))
        .collect();
    for id in &ids {
        write_event(&dirs.events(), id, &frames, 160, 120);
    }
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    // The first event's day, 2026-11-24 (UTC: the test sends no time-zone cookie).
    for path in [
        "/events".to_owned(),
        "/events?day=2026-11-24".to_owned(),
        format!("/events/{}", ids[1]),
    ] {
        let r = http::get(web.addr, &path, Some(&cookie)).unwrap();
        assert_eq!(r.status, 200, "{path}");
        eprintln!("page weight: {path}: {} bytes", r.body.len());
        assert!(
            r.body.len() < MAX_PAGE_BYTES,
            "{path}: {} bytes",
            r.body.len()
        );
    }
    let list = http::get(web.addr, "/events", Some(&cookie))
        .unwrap()
        .text();
    assert_eq!(list.matches("class=\"card\"").count(), 20, "a full page");
    assert_eq!(
        list.matches("class=\"chip").count(),
        1 + web_svc::review::MAX_FILTER_DAYS,
        "All and the newest days with events, no more"
    );
    let one_day = http::get(web.addr, "/events?day=2026-11-20", Some(&cookie))
        .unwrap()
        .text();
    assert_eq!(one_day.matches("class=\"card\"").count(), 1, "{one_day}");
    assert!(one_day.contains("/events/20261120T"), "{one_day}");
    let r = http::get(web.addr, "/events?day=2026-13-45", Some(&cookie)).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
}
