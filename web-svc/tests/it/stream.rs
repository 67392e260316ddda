//! The live stream and snapshot against the real binary and an in-test camera.

use std::io::Write as _;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mecam_system_tests::http::{self, MjpegStream, Part};
use mecam_system_tests::viewer::{Kind, Viewer};

use crate::harness::{Camera, Dirs, Web, is_jpeg, make_frames, metric, poll, set_password};

const PW: &str = "stream test password";

struct Setup {
    dirs: Dirs,
    web: Web,
    camera: Camera,
    cookie: String,
}

/// A viewer of `s`'s stream once it has shown a live frame (10 s at most).
fn live_viewer(s: &Setup) -> Viewer {
    let viewer = Viewer::start(s.web.addr, &s.cookie).unwrap();
    viewer
        .wait_for(
            Kind::Live,
            Instant::now() - Duration::from_secs(60),
            Duration::from_secs(10),
        )
        .unwrap();
    viewer
}

fn setup(config: &str, w: u16, h: u16, noise: u8, fps: f64) -> Setup {
    let dirs = Dirs::new(config);
    set_password(&dirs, PW);
    let frames = Arc::new(make_frames(8, w, h, noise));
    let camera = Camera::start(&dirs.run(), frames, u32::from(w), u32::from(h), fps);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    // Wait until web-svc has a live frame.
    poll(Duration::from_secs(20), "a live snapshot", || {
        http::get(web.addr, "/snapshot.jpg", Some(&cookie)).is_ok_and(|r| r.status == 200)
    });
    Setup {
        dirs,
        web,
        camera,
        cookie,
    }
}

fn seq(part: &Part) -> u64 {
    part.header("x-mecam-seq")
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn is_live(part: &Part) -> bool {
    part.header("x-mecam-camera") == Some("live")
}

/// Reads `n` live parts, checking each against what the camera published.
fn read_live(s: &mut MjpegStream, camera: &Camera, n: usize) {
    let mut last = 0;
    let mut got = 0;
    let mut parts = 0;
    while got < n {
        let part = s.next_part().unwrap();
        parts += 1;
        assert!(parts < n * 10, "too many non-live parts");
        if !is_live(&part) {
            continue;
        }
        let sq = seq(&part);
        assert!(sq >= last, "sequence went back: {last} -> {sq}");
        last = sq;
        let (expected, _) = camera.frame_for(sq).expect("a published sequence number");
        // The part's Content-Length is the frame's length (the reader reads that many bytes
        // and then requires the next boundary, so nothing more or less was sent).
        assert_eq!(
            part.header("content-length").and_then(|v| v.parse().ok()),
            Some(expected.len()),
            "frame {sq}: Content-Length"
        );
        assert_eq!(part.body.len(), expected.len());
        assert!(
            part.body == expected,
            "frame {sq} differs from what was published"
        );
        assert!(part.header("x-timestamp").is_some());
        got += 1;
    }
}

#[test]
fn a_viewer_reads_100_frames_each_the_published_jpeg() {
    let s = setup("", 320, 240, 40, 30.0);
    let mut stream = MjpegStream::open(s.web.addr, "/stream.mjpg", Some(&s.cookie)).unwrap();
    read_live(&mut stream, &s.camera, 100);
    // And the bytes are valid JPEGs (checked once per distinct frame).
    for f in s.camera.frames.iter() {
        assert!(is_jpeg(f));
    }
    let mut stream = MjpegStream::open(s.web.addr, "/video_feed", Some(&s.cookie)).unwrap();
    let part = stream.next_part().unwrap();
    assert!(is_jpeg(&part.body));
    let snap = http::get(s.web.addr, "/snapshot.jpg", Some(&s.cookie)).unwrap();
    assert_eq!(snap.header("x-mecam-camera"), Some("live"));
    let sq: u64 = snap.header("x-mecam-seq").unwrap().parse().unwrap();
    assert!(snap.body == s.camera.frame_for(sq).unwrap().0);
}

#[test]
fn two_hundred_viewers_at_once() {
    let s = setup(
        "max_streams = 220\nmax_connections = 300\nmax_connections_per_client = 300",
        320,
        240,
        20,
        15.0,
    );
    let addr = s.web.addr;
    let camera = Arc::new(s.camera);
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let (cookie, camera) = (s.cookie.clone(), camera.clone());
            std::thread::spawn(move || {
                let mut stream = MjpegStream::open(addr, "/stream.mjpg", Some(&cookie)).unwrap();
                read_live(&mut stream, &camera, 15);
                stream
            })
        })
        .collect();
    let streams: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let m = http::get(addr, "/metrics", Some(&s.cookie)).unwrap().text();
    assert_eq!(metric(&m, "mecam_web_viewers"), Some(200.0));
    drop(streams);
    poll(Duration::from_secs(20), "viewers to go", || {
        let m = http::get(addr, "/metrics", Some(&s.cookie)).unwrap().text();
        metric(&m, "mecam_web_viewers") == Some(0.0)
    });
}

#[test]
fn past_max_streams_is_503_with_retry_after() {
    let s = setup("max_streams = 2", 160, 120, 0, 15.0);
    let _a = MjpegStream::open(s.web.addr, "/stream.mjpg", Some(&s.cookie)).unwrap();
    let _b = MjpegStream::open(s.web.addr, "/stream", Some(&s.cookie)).unwrap();
    let r = http::get(s.web.addr, "/stream.mjpg", Some(&s.cookie)).unwrap();
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    drop(_a);
    poll(Duration::from_secs(10), "a free stream slot", || {
        MjpegStream::open(s.web.addr, "/stream.mjpg", Some(&s.cookie)).is_ok()
    });
}

#[test]
fn fps_cap_limits_a_viewer() {
    let s = setup("", 160, 120, 0, 30.0);
    let mut stream = MjpegStream::open(s.web.addr, "/stream.mjpg?fps=2", Some(&s.cookie)).unwrap();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(3) {
        stream.next_part().unwrap();
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(
        f64::from(n) <= secs * 2.0 + 2.0,
        "{n} parts in {secs:.1} s at fps=2"
    );
    assert!(n >= 3);
}

#[test]
fn the_last_frame_is_resent_after_a_second_without_a_new_one() {
    // A frame every 1.6 s: between two, web-svc re-sends the last one once.
    let s = setup("", 160, 120, 0, 0.625);
    let mut stream = MjpegStream::open(s.web.addr, "/stream.mjpg", Some(&s.cookie)).unwrap();
    let mut last = None;
    for _ in 0..20 {
        let part = stream.next_part().unwrap();
        if !is_live(&part) {
            continue;
        }
        let sq = seq(&part);
        if last == Some(sq) {
            return;
        }
        last = Some(sq);
    }
    panic!("no live frame was sent twice in 20 parts");
}

/// Opens a stream and never reads it.
fn deaf_viewer(addr: std::net::SocketAddr, cookie: &str) -> TcpStream {
    let mut deaf = TcpStream::connect(addr).unwrap();
    write!(
        deaf,
        "GET /stream.mjpg HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    deaf
}

#[test]
fn a_viewer_that_never_reads_is_dropped_while_others_keep_their_rate() {
    // Big noisy frames fill the socket buffers quickly.
    let s = setup("viewer_timeout_s = 2.0", 640, 480, 255, 30.0);
    let addr = s.web.addr;
    let mut deaf = deaf_viewer(addr, &s.cookie);
    let mut reader = MjpegStream::open(addr, "/stream.mjpg", Some(&s.cookie)).unwrap();
    let start = Instant::now();
    let published_before = s.camera.count.load(std::sync::atomic::Ordering::Relaxed);
    let mut received = 0u64;
    let dropped = |cookie: &str| {
        let m = http::get(addr, "/metrics", Some(cookie)).unwrap().text();
        metric(&m, "mecam_web_viewers_dropped_stalled_total").unwrap_or(0.0) >= 1.0
    };
    while !dropped(&s.cookie) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the deaf viewer was never dropped"
        );
        for _ in 0..5 {
            reader.next_part().unwrap();
            received += 1;
        }
    }
    let published = s.camera.count.load(std::sync::atomic::Ordering::Relaxed) - published_before;
    assert!(
        received * 2 >= published,
        "the reading viewer got {received} of {published} frames while the deaf one hung"
    );
    // The deaf connection is closed by the server: reading it drains to EOF.
    crate::harness::drain_until_closed(&mut deaf, "deaf viewer");
    let m = http::get(addr, "/metrics", Some(&s.cookie)).unwrap().text();
    assert_eq!(
        metric(&m, "mecam_web_viewers"),
        Some(1.0),
        "only the reader is left"
    );
    reader.next_part().unwrap();
}

#[test]
fn a_thousand_connect_disconnect_cycles_leave_fds_and_memory_flat() {
    let s = setup("", 320, 240, 40, 30.0);
    let addr = s.web.addr;
    let cycle = |n: usize| {
        for _ in 0..n {
            let mut st = MjpegStream::open(addr, "/stream.mjpg", Some(&s.cookie)).unwrap();
            st.next_part().unwrap();
        }
    };
    let idle = || {
        poll(Duration::from_secs(20), "no viewers", || {
            let m = http::get(addr, "/metrics", Some(&s.cookie)).unwrap().text();
            metric(&m, "mecam_web_viewers") == Some(0.0)
                && metric(&m, "mecam_web_connections") == Some(1.0)
        });
    };
    cycle(100);
    idle();
    let (fds, rss) = (s.web.fds(), s.web.rss_kib());
    cycle(1000);
    idle();
    let (fds2, rss2) = (s.web.fds(), s.web.rss_kib());
    // +2: the metrics probe's own connection may still be closing at either reading.
    assert!(
        fds2 <= fds + 2,
        "open descriptors {fds} -> {fds2} after 1000 cycles"
    );
    assert!(
        rss2 <= rss + 1024,
        "resident memory {rss} KiB -> {rss2} KiB after 1000 cycles"
    );
}

#[test]
fn camera_away_and_back_under_a_connected_viewer() {
    let mut s = setup("", 320, 240, 20, 15.0);
    let viewer = live_viewer(&s);
    let frames = s.camera.frames.clone();
    s.camera.stop();
    let gone = Instant::now();
    viewer
        .wait_for(Kind::Offline, gone, Duration::from_secs(10))
        .unwrap();
    let snap = http::get(s.web.addr, "/snapshot.jpg", Some(&s.cookie)).unwrap();
    assert_eq!(snap.status, 503);
    assert_eq!(snap.header("x-mecam-camera"), Some("offline"));
    assert!(is_jpeg(&snap.body), "the placeholder is a JPEG");
    let status = http::get(s.web.addr, "/api/status", Some(&s.cookie)).unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(status["camera"]["state"], "offline");
    // While offline a viewer gets at most one placeholder a second: each offline part is a
    // new one (a re-send would repeat its time) and rendered a second after the one before.
    let mut raw = MjpegStream::open(s.web.addr, "/stream.mjpg", Some(&s.cookie)).unwrap();
    let mut times = Vec::new();
    while times.len() < 5 {
        let part = raw.next_part().unwrap();
        assert!(!is_live(&part), "a live part while the camera is gone");
        assert_eq!(
            part.header("content-length").and_then(|v| v.parse().ok()),
            Some(part.body.len())
        );
        let t: f64 = part.header("x-timestamp").unwrap().parse().unwrap();
        times.push(t);
    }
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= 0.99,
            "two offline parts {:.3} s apart: {times:?}",
            w[1] - w[0]
        );
    }
    let back = Instant::now();
    s.camera = Camera::start(&s.dirs.run(), frames, 320, 240, 15.0);
    viewer
        .wait_for(Kind::Live, back, Duration::from_secs(10))
        .unwrap();
    assert!(viewer.ended().is_none(), "same connection");
}

#[test]
fn sigterm_ends_streams_and_the_service_exits_cleanly() {
    let mut s = setup("", 160, 120, 0, 15.0);
    let viewer = live_viewer(&s);
    assert!(
        s.web.terminate(),
        "web-svc exited 0 on SIGTERM with a viewer connected"
    );
    poll(Duration::from_secs(10), "the stream to end", || {
        viewer.ended().is_some()
    });
}

#[test]
fn sigterm_closes_a_viewer_whose_socket_is_full_and_exits_cleanly() {
    // Big noisy frames fill the socket buffers; the viewer timeout is far away.
    let mut s = setup("viewer_timeout_s = 600", 640, 480, 255, 30.0);
    let addr = s.web.addr;
    let mut deaf = deaf_viewer(addr, &s.cookie);
    // Wait until web-svc can hand that viewer nothing more: bytes sent stop growing.
    let sent = || {
        let m = http::get(addr, "/metrics", Some(&s.cookie)).unwrap().text();
        metric(&m, "mecam_web_bytes_sent_total").unwrap_or(0.0)
    };
    let mut last = sent();
    let mut still = 0;
    poll(
        Duration::from_secs(60),
        "the deaf viewer's socket to fill",
        || {
            std::thread::sleep(Duration::from_millis(200));
            let now = sent();
            still = if now > 0.0 && now == last {
                still + 1
            } else {
                0
            };
            last = now;
            still >= 3
        },
    );
    assert!(s.web.terminate(), "web-svc exited 0 on SIGTERM");
    assert!(
        s.web
            .log()
            .contains("closing a connection whose socket is full"),
        "the full viewer was not closed at once:\n{}",
        s.web.log()
    );
    crate::harness::drain_until_closed(&mut deaf, "full viewer at shutdown");
}

#[test]
fn status_and_metrics_report_the_stream() {
    let s = setup("", 320, 240, 40, 30.0);
    let mut stream = MjpegStream::open(s.web.addr, "/stream.mjpg", Some(&s.cookie)).unwrap();
    let mut body_bytes = 0usize;
    for _ in 0..30 {
        body_bytes += stream.next_part().unwrap().body.len();
    }
    let r = http::get(s.web.addr, "/api/status", Some(&s.cookie)).unwrap();
    assert_eq!(r.header("content-type"), Some("application/json"));
    let st: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["camera"]["state"], "streaming");
    assert_eq!(st["camera"]["source"], "test-camera");
    assert_eq!(
        (
            st["camera"]["width"].as_u64(),
            st["camera"]["height"].as_u64()
        ),
        (Some(320), Some(240))
    );
    let fps = st["fps"].as_f64().unwrap();
    assert!((5.0..=60.0).contains(&fps), "fps {fps} for a 30 fps camera");
    let age = st["frame_age_ms"]
        .as_u64()
        .expect("frame_age_ms while streaming");
    assert!(age < 60_000, "frame_age_ms {age} while streaming");
    assert_eq!(st["viewers"], 1);
    assert!(st["drops"]["source"].is_u64() && st["drops"]["viewers"].is_u64());
    assert_eq!(st["motion"]["active"], false);

    let m = http::get(s.web.addr, "/metrics", Some(&s.cookie))
        .unwrap()
        .text();
    let get = |name: &str| metric(&m, name).unwrap_or_else(|| panic!("no {name} in\n{m}"));
    assert!(
        get("mecam_web_bytes_sent_total") >= body_bytes as f64,
        "bytes sent {} < the {body_bytes} body bytes one viewer read",
        get("mecam_web_bytes_sent_total")
    );
    assert!(get("mecam_web_frames_sent_total") >= 30.0);
    assert!(get("mecam_web_frames_received_total") >= 30.0);
    assert_eq!(get("mecam_web_viewers"), 1.0);
    assert!(get("mecam_web_sessions") >= 1.0);
    let rss = get("mecam_web_resident_memory_bytes");
    let proc_rss = s.web.rss_kib() as f64 * 1024.0;
    assert!(
        rss > 1e6 && (rss - proc_rss).abs() < proc_rss * 0.5,
        "resident memory {rss} bytes, /proc says {proc_rss}"
    );
    assert!(m.contains("# TYPE mecam_web_bytes_sent_total counter"));
}

#[test]
fn http_basic_works_on_the_stream_and_snapshot_as_home_assistant_uses_it() {
    use base64::Engine as _;
    let s = setup("", 160, 120, 0, 15.0);
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{PW}"))
    );
    // Without credentials first: 401 with a Basic challenge, as HA expects.
    let r = http::get(s.web.addr, "/snapshot.jpg", None).unwrap();
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    let r = http::request(
        s.web.addr,
        "GET",
        "/snapshot.jpg",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("image/jpeg"))
    );
    assert!(is_jpeg(&r.body));
    let mut raw = TcpStream::connect(s.web.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        raw,
        "GET /stream.mjpg HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("X-Mecam-Camera: live") {
        let n = std::io::Read::read(&mut raw, &mut buf).unwrap();
        assert!(
            n > 0 && got.len() < 1 << 20,
            "stream ended: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("multipart/x-mixed-replace"), "{text}");
}
