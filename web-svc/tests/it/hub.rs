//! A hub that records several cameras (Frigate, go2rtc, an NVR) ingests the live stream the
//! way those tools call it: ffmpeg with the user and password in the URL
//! (`ffmpeg -i http://admin:pass@cam:8080/stream.mjpg`), which answers the Basic challenge.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{Camera, Dirs, Web, make_frames, set_password};

/// URL-safe, as a hub's configuration writes it.
const PW: &str = "hub-password-7";
/// Frames the hub takes before it stops.
const FRAMES: usize = 5;

/// `ffmpeg -i URL` as a hub runs it, giving up on a silent server after 10 s; the output's
/// arguments are the caller's.
fn ffmpeg_reading(url: &str) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-rw_timeout",
        "10000000",
        "-i",
        url,
    ]);
    c
}

#[test]
fn ffmpeg_ingests_the_mjpeg_stream_with_the_credentials_in_the_url_as_hubs_call_it() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = Arc::new(make_frames(8, 160, 120, 0));
    let _camera = Camera::start(&dirs.run(), frames, 160, 120, 15.0);
    let web = Web::start(&dirs);
    let url = format!("http://admin:{PW}@{}/stream.mjpg", web.addr);
    // Copied, not decoded and encoded again: the frames as the camera made them.
    let mut child = ffmpeg_reading(&url)
        .args([
            "-frames:v",
            &FRAMES.to_string(),
            "-c:v",
            "copy",
            "-f",
            "mjpeg",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg (apt-get install ffmpeg)");
    let mut out = Vec::new();
    let reader = {
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdout.read_to_end(&mut out);
            out
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ffmpeg did not finish within 30 s; web-svc log:\n{}",
                web.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "ffmpeg: {status}: {err}\n{}", web.log());
    let out = reader.join().unwrap();
    let jpegs = out.windows(3).filter(|w| *w == [0xff, 0xd8, 0xff]).count();
    assert!(jpegs >= FRAMES, "{jpegs} JPEG frames from ffmpeg: {err}");
    // A wrong password gets nothing.
    let bad = format!("http://admin:wrong@{}/stream.mjpg", web.addr);
    let out = ffmpeg_reading(&bad)
        .args(["-frames:v", "1", "-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
