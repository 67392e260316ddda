//! Integration tests: the real `motion-svc` binary against an in-test camera (a real frame
//! region and announce server from `ipc`, publishing JPEG frames in real time).

mod support;

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::EventState;
use motion_svc::event::EndReason;
use support::jpeg::encode_gray;
use testkit::camera::Stream;
use testkit::notify::{NotifySocket, StatusWatch};
use testkit::poll;
use testkit::service::{Service, fresh_log, log_text, with_own_watchdog_pid};

const W: usize = 320;
const H: usize = 240;
const FPS: u64 = 15;

/// The scene the camera shows: 0 = still, 1 = a box moving across.
#[derive(Clone)]
struct Script(Arc<AtomicU32>);

/// Frame `frame` of scene `scene` (a different scene shifts the tiles and their brightness).
fn render(frame: u64, scene: u64, moving: bool, box_x: &mut f32) -> Vec<u8> {
    let mut px = vec![0u8; W * H];
    let mut seed = frame.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for y in 0..H {
        for x in 0..W {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let tile = ((x / 16) + (y / 16) + scene as usize) % 3;
            let base = 60.0 + 40.0 * tile as f32 + x as f32 * 0.2 + 20.0 * (scene % 2) as f32;
            px[y * W + x] = (base + (seed % 5) as f32 - 2.0) as u8;
        }
    }
    if moving {
        *box_x = (*box_x + 6.0) % (W as f32 - 60.0);
        for y in 50..200 {
            for x in (*box_x as usize)..(*box_x as usize + 50) {
                px[y * W + x] = 235;
            }
        }
    }
    encode_gray(W, H, &px, 80).unwrap()
}

/// What a camera announces and how large its region's slots are.
#[derive(Clone, Copy)]
struct CameraSpec {
    /// Size in the hello.
    hello: (u32, u32),
    /// Region slot capacity.
    slot: usize,
    /// A seed for the rendered scene's texture: a different seed is a different scene.
    scene: u64,
}

const SMALL_CAMERA: CameraSpec = CameraSpec {
    hello: (W as u32, H as u32),
    slot: 256 * 1024,
    scene: 0,
};

/// A camera (testkit's) publishing the rendered scene at 15 fps from a thread.
/// Frames pushed to `inject` are published (each once) before the rendered scene resumes.
struct Camera {
    camera: testkit::camera::Camera,
    script: Script,
    inject: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl Camera {
    fn start(runtime_dir: &Path) -> Camera {
        Camera::start_spec(runtime_dir, SMALL_CAMERA)
    }

    fn start_spec(runtime_dir: &Path, spec: CameraSpec) -> Camera {
        let script = Script(Arc::new(AtomicU32::new(0)));
        let s2 = script.clone();
        let inject = Arc::new(Mutex::new(VecDeque::new()));
        let inject2 = Arc::clone(&inject);
        // The size it announces (the hello follows the frames' announced size).
        let (width, height) = spec.hello;
        let stream = Stream {
            width,
            height,
            fps: FPS as f64,
            slot: spec.slot,
            source: "test-camera",
        };
        let mut box_x = 0.0;
        let camera = testkit::camera::Camera::start(runtime_dir, stream, move |n, camera| {
            let injected = inject2.lock().unwrap().pop_front();
            let jpeg = injected.unwrap_or_else(|| {
                render(n, spec.scene, s2.0.load(Ordering::Relaxed) == 1, &mut box_x)
            });
            camera.publish(&jpeg);
        });
        Camera {
            camera,
            script,
            inject,
        }
    }

    /// Publishes `frames` next, in order, one per frame period.
    fn inject(&self, frames: impl IntoIterator<Item = Vec<u8>>) {
        self.inject.lock().unwrap().extend(frames);
    }

    /// Frames injected and not yet published.
    fn injected_pending(&self) -> usize {
        self.inject.lock().unwrap().len()
    }

    fn set_moving(&self, moving: bool) {
        self.script.0.store(u32::from(moving), Ordering::Relaxed);
    }

    fn stop(&mut self) {
        self.camera.stop();
    }
}

/// The real binary; killed on drop. Its stderr goes to a file the test can read while it runs.
struct Svc {
    svc: Service,
    log: PathBuf,
    /// The last STATUS line received on the notify socket (read by a thread: a notify socket
    /// nobody reads fills up and blocks the sender), unless the test passed its own socket.
    status: Option<StatusWatch>,
}

impl Svc {
    fn start(dir: &Path, extra: &[&str]) -> Svc {
        Svc::start_with_env(dir, extra, &[])
    }

    /// With extra environment; `WATCHDOG_PID` is set to the service's own pid (through a
    /// shell that execs it), as systemd does.
    fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Svc {
        let log = fresh_log(dir, "stderr");
        let mut cmd = with_own_watchdog_pid(Path::new(env!("CARGO_BIN_EXE_motion-svc")));
        cmd.envs(env.iter().copied());
        let status = if env.iter().any(|(k, _)| *k == "NOTIFY_SOCKET") {
            None
        } else {
            let sock = NotifySocket::bind(&log.with_extension("sock"));
            cmd.env("NOTIFY_SOCKET", sock.env());
            Some(sock.watch_status())
        };
        cmd.arg("--config")
            .arg(dir.join("none.toml"))
            .arg("--runtime-dir")
            .arg(dir.join("run"))
            .arg("--events-dir")
            .arg(dir.join("events"))
            .arg("--overrides-file")
            .arg(dir.join("overrides.toml"))
            .arg("--preview-socket")
            .arg(dir.join("run").join("preview.sock"))
            .args([
                "--log-target",
                "stderr",
                "--analysis-fps",
                "5",
                "--min-duration-s",
                "0.4",
                "--quiet-gap-s",
                "1",
                "--pre-capture-s",
                "1",
                "--post-capture-s",
                "0.5",
            ])
            .args(extra);
        // A test may have written its own configuration there.
        if !dir.join("none.toml").exists() {
            fs::write(dir.join("none.toml"), "[motion]\n").unwrap();
        }
        eprintln!("running {cmd:?}");
        let svc = Svc {
            svc: Service::start("motion-svc", cmd, &log).unwrap(),
            log,
            status,
        };
        svc.wait_log("motion-svc ready", Duration::from_secs(20));
        svc
    }

    /// The latest STATUS line it sent so far (empty before the first).
    fn status(&self) -> String {
        let status = self
            .status
            .as_ref()
            .expect("the test owns the notify socket");
        status.latest()
    }

    /// Waits until the STATUS line satisfies `ok`; returns it.
    fn wait_status(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
        poll::until(what, limit, || {
            let s = self.status();
            Ok(ok(&s).then_some(s))
        })
        .unwrap_or_else(|e| {
            let s = self.status();
            panic!("{e}; last status {s:?}; log:\n{}", self.log())
        })
    }

    /// The `counter` of its STATUS line (the number before the word), 0 before any status.
    fn counter(&self, counter: &str) -> u64 {
        status_counter(&self.status(), counter)
    }

    /// Waits until `counter` has grown by `by` from now: proves frames are being processed.
    fn wait_counter_grows(&self, counter: &str, by: u64, limit: Duration) -> u64 {
        let from = self.counter(counter);
        let s = self.wait_status(&format!("{by} more {counter:?}"), limit, |s| {
            status_counter(s, counter) >= from + by
        });
        status_counter(&s, counter)
    }

    /// Waits until the still scene's background is learned: two seconds of frames analysed
    /// (the re-learn takes one).
    fn background_learned(&self) {
        self.wait_counter_grows("analysed", 10, Duration::from_secs(30));
    }

    /// Peak resident memory (VmHWM) of the process, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        testkit::procfs::status_kib(self.svc.pid(), "VmHWM")
    }

    /// The log so far, without terminal colour codes.
    fn log(&self) -> String {
        self.svc.log()
    }

    fn wait_log(&self, needle: &str, limit: Duration) {
        if let Err(e) = self.svc.wait_log(needle, limit) {
            panic!("{e}; the log:\n{}", self.log());
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        self.svc
            .stop(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("motion-svc did not stop on SIGTERM: {e}\n{}", self.log()))
    }
}

/// The number just before ` {counter}` in a STATUS line (0 when absent).
fn status_counter(status: &str, counter: &str) -> u64 {
    let Some(i) = status.find(&format!(" {counter}")) else {
        return 0;
    };
    status[..i]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn events(dir: &Path) -> Vec<(String, events::EventMeta)> {
    let mut v: Vec<_> = fs::read_dir(dir.join("events"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let id = e.file_name().to_string_lossy().into_owned();
                    events::read_meta(&e.path()).ok().map(|m| (id, m))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn wait_for(what: &str, limit: Duration, ok: impl FnMut() -> bool, log: &dyn Fn() -> String) {
    if let Err(e) = poll::until_true(what, limit, ok) {
        panic!("{e}; log:\n{}", log());
    }
}

/// Waits (`limit` at most) until an event in `dir`'s events folder is in `state`.
fn wait_event_state(svc: &Svc, dir: &Path, what: &str, limit: Duration, state: EventState) {
    wait_for(
        what,
        limit,
        || events(dir).iter().any(|(_, m)| m.state == state),
        &|| svc.log(),
    );
}

/// Waits until an event in `dir`'s events folder is recording.
fn wait_recording(svc: &Svc, dir: &Path) {
    wait_event_state(
        svc,
        dir,
        "an event recording",
        Duration::from_secs(30),
        EventState::Recording,
    );
}

fn setup() -> (tempfile::TempDir, Camera) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("run")).unwrap();
    let cam = Camera::start(&dir.path().join("run"));
    (dir, cam)
}

#[test]
fn motion_makes_one_complete_event_with_clip_poster_and_journal_records() {
    let (dir, cam) = setup();
    let svc = Svc::start(dir.path(), &[]);
    svc.background_learned();
    cam.set_moving(true);
    wait_for(
        "an event to start",
        Duration::from_secs(20),
        || !events(dir.path()).is_empty(),
        &|| svc.log(),
    );
    // Two seconds of motion (at 5 frames analysed a second).
    svc.wait_counter_grows("analysed", 10, Duration::from_secs(30));
    cam.set_moving(false);
    wait_event_state(
        &svc,
        dir.path(),
        "the event to complete",
        Duration::from_secs(20),
        EventState::Complete,
    );
    // The end record follows once the recorder has closed the event.
    svc.wait_log("3a9e5b7c1d2f4a6b8c0e1f2a3b4c5d6e", Duration::from_secs(20));
    let ev = events(dir.path());
    assert_eq!(ev.len(), 1, "{ev:?}");
    let (id, m) = &ev[0];
    assert_eq!(m.width, W as u32);
    assert!(m.peak_area_pct > 3.0, "{m:?}");
    assert!(!m.boxes.is_empty());
    assert!(m.end_unix_ms.unwrap() > m.start_unix_ms);
    let edir = dir.path().join("events").join(id);
    let (_, frames) = events::avi::read_frames(&edir.join("clip.avi")).unwrap();
    // At least the 2 s of motion and 1 s of pre-capture at 15 fps, minus slack.
    assert!(
        frames.len() as u64 >= 3 * FPS - 10,
        "{} frames",
        frames.len()
    );
    assert_eq!(m.frames as usize, frames.len());
    assert!(
        fs::read(edir.join("poster.jpg"))
            .unwrap()
            .starts_with(&[0xff, 0xd8])
    );
    let log = svc.log();
    assert!(
        log.contains("8d6f2c1e4b7a4e0f9c3d5a1b2e6f7081")
            && log.contains("3a9e5b7c1d2f4a6b8c0e1f2a3b4c5d6e"),
        "{log}"
    );
    assert!(
        log.contains(&format!("mecam_event_id=\"{id}\""))
            || log.contains(&format!("mecam_event_id={id}")),
        "{log}"
    );
    assert!(log.contains("mecam_clip="), "{log}");
    let status = svc.terminate();
    assert!(status.success(), "{status:?}");
}

/// motion-svc's status record (`ipc::status`), read as web-svc reads it.
fn motion_record(dir: &Path) -> Option<(ipc::status::Reading, ipc::status::MotionStatus)> {
    let r = ipc::status::read(&dir.join("run"), ipc::status::Service::Motion).ok()?;
    match &r.record.detail {
        ipc::status::Detail::Motion(m) => Some((r.clone(), m.clone())),
        _ => None,
    }
}

/// Waits until motion-svc's record passes `ok`; returns it.
fn wait_record(
    svc: &Svc,
    dir: &Path,
    what: &str,
    ok: impl Fn(&ipc::status::Reading, &ipc::status::MotionStatus) -> bool,
) -> ipc::status::MotionStatus {
    let last = std::cell::RefCell::new(None);
    wait_for(
        what,
        Duration::from_secs(30),
        || {
            let r = motion_record(dir);
            let hit = r.as_ref().is_some_and(|(r, m)| ok(r, m));
            *last.borrow_mut() = r;
            hit
        },
        &|| format!("{:?}\n{}", last.borrow(), svc.log()),
    );
    last.into_inner().unwrap().1
}

/// The status record says what the loop does: frames analysed and their rate, recording during
/// an event and its id, the clip's bytes after it, the disk; and "stopped" after SIGTERM.
#[test]
fn the_status_record_follows_detection_recording_and_shutdown() {
    let (dir, cam) = setup();
    let svc = Svc::start(dir.path(), &[]);
    svc.background_learned();
    let m = wait_record(&svc, dir.path(), "frames analysed", |r, m| {
        r.running() && m.camera_ok && m.frames_analysed > 0 && m.analysed_fps > 0.0
    });
    assert!(m.disk_free_bytes > 0 && m.disk_used_bytes > 0, "{m:?}");
    assert!(!m.recording && m.last_event_id.is_none(), "{m:?}");
    cam.set_moving(true);
    let m = wait_record(&svc, dir.path(), "recording", |_, m| m.recording);
    let id = events(dir.path())[0].0.clone();
    assert_eq!(m.last_event_id.as_deref(), Some(id.as_str()));
    assert_eq!(m.events_total, 1);
    cam.set_moving(false);
    let m = wait_record(&svc, dir.path(), "the finished clip", |_, m| {
        !m.recording && m.clip_bytes > 0
    });
    let clip = fs::metadata(dir.path().join("events").join(&id).join("clip.avi")).unwrap();
    assert_eq!(m.clip_bytes, clip.len());
    assert_eq!(m.clip_errors, 0);
    assert!(svc.terminate().success());
    let (r, _) = motion_record(dir.path()).unwrap();
    assert!(r.record.stopped && !r.running(), "{r:?}");
}

#[test]
fn sigkill_mid_event_leaves_an_event_that_the_next_start_marks_interrupted() {
    let (dir, cam) = setup();
    let svc = Svc::start(dir.path(), &[]);
    svc.background_learned();
    cam.set_moving(true);
    wait_event_state(
        &svc,
        dir.path(),
        "an event recording",
        Duration::from_secs(20),
        EventState::Recording,
    );
    // Frames reach the clip being written (pre-capture and more) before the kill.
    let id = events(dir.path())[0].0.clone();
    let part_path = dir.path().join("events").join(&id).join("clip.avi.part");
    wait_for(
        "frames in the clip being written",
        Duration::from_secs(20),
        || fs::metadata(&part_path).is_ok_and(|m| m.len() > 64 * 1024),
        &|| svc.log(),
    );
    drop(svc); // SIGKILL
    let ev = events(dir.path());
    assert_eq!(ev[0].1.state, EventState::Recording);
    let part = dir
        .path()
        .join("events")
        .join(&ev[0].0)
        .join("clip.avi.part");
    assert!(part.exists());
    cam.set_moving(false);
    let svc = Svc::start(dir.path(), &[]);
    let ev = events(dir.path());
    assert_eq!(
        ev[0].1.state,
        EventState::Interrupted,
        "{ev:?}\n{}",
        svc.log()
    );
    let clip = dir.path().join("events").join(&ev[0].0).join("clip.avi");
    let (_, frames) = events::avi::read_frames(&clip).unwrap();
    assert!(!frames.is_empty());
    assert_eq!(ev[0].1.frames as usize, frames.len());
    assert!(!part.exists());
    assert!(svc.log().contains("interrupted"));
}

#[test]
fn a_camera_outage_is_logged_once_and_is_never_motion() {
    let (dir, mut cam) = setup();
    let svc = Svc::start(dir.path(), &[]);
    svc.background_learned();
    cam.stop();
    svc.wait_log("camera outage", Duration::from_secs(10));
    svc.wait_status("the outage in the status", Duration::from_secs(10), |s| {
        s.starts_with("camera away")
    });
    // A new camera (new generation) showing a different scene: motion-svc reconnects,
    // re-learns and analyses it, and the different scene is not motion.
    let cam2 = Camera::start_spec(
        &dir.path().join("run"),
        CameraSpec {
            scene: 1,
            ..SMALL_CAMERA
        },
    );
    cam2.set_moving(false);
    svc.wait_log("camera back", Duration::from_secs(20));
    svc.wait_status("the camera streaming again", Duration::from_secs(20), |s| {
        s.starts_with("camera streaming")
    });
    // Four seconds of the new scene analysed: past the re-learn, long enough for an event.
    svc.wait_counter_grows("analysed", 20, Duration::from_secs(60));
    let log = svc.log();
    assert_eq!(log.matches("camera outage").count(), 1, "{log}");
    assert!(log.contains("background re-learned"), "{log}");
    assert!(
        events(dir.path()).is_empty(),
        "{:?}\n{log}",
        events(dir.path())
    );
    assert!(svc.terminate().success());
}

#[test]
fn an_event_cut_by_an_outage_or_sigterm_says_so() {
    let (dir, mut cam) = setup();
    let svc = Svc::start(dir.path(), &[]);
    let root = dir.path().to_owned();
    let recording = |n: usize| {
        let root = root.clone();
        move || {
            let ev = events(&root);
            ev.len() == n && ev[n - 1].1.state == EventState::Recording
        }
    };
    svc.background_learned();
    cam.set_moving(true);
    wait_for(
        "an event recording",
        Duration::from_secs(20),
        recording(1),
        &|| svc.log(),
    );
    cam.stop();
    wait_for(
        "the event to be closed",
        Duration::from_secs(20),
        || events(dir.path())[0].1.state != EventState::Recording,
        &|| svc.log(),
    );
    let first = &events(dir.path())[0].1;
    assert_eq!(first.state, EventState::Complete, "{first:?}");
    assert_eq!(first.end_reason, Some(EndReason::Interrupted), "{first:?}");

    let cam = Camera::start(&dir.path().join("run"));
    svc.wait_log("camera back", Duration::from_secs(20));
    svc.background_learned();
    cam.set_moving(true);
    wait_for(
        "a second event",
        Duration::from_secs(20),
        recording(2),
        &|| svc.log(),
    );
    let log = svc.log.clone();
    assert!(svc.terminate().success());
    let second = &events(dir.path())[1].1;
    assert_eq!(second.state, EventState::Complete, "{second:?}");
    assert_eq!(second.end_reason, Some(EndReason::Shutdown), "{second:?}");
    let text = log_text(&log);
    assert!(text.contains("mecam_end_reason=\"shutdown\""), "{text}");
}

#[test]
fn the_watchdog_is_pinged_while_the_loop_turns_even_with_the_camera_away() {
    // No camera at all: the loop still turns (its tick), so the service is healthy.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("run")).unwrap();
    let sock = NotifySocket::bind(&dir.path().join("notify.sock"));
    let path_s = sock.env();
    let svc = Svc::start_with_env(
        dir.path(),
        &[],
        &[("NOTIFY_SOCKET", &path_s), ("WATCHDOG_USEC", "2000000")],
    );
    let pings = |got: &[String]| got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let got = sock.until(Duration::from_secs(20), |g| {
        pings(g) >= 4 && g.iter().any(|m| m.contains("STATUS=camera away"))
    });
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    assert!(pings(&got) >= 4, "{got:?}\n{}", svc.log());
    let status = got.iter().find(|m| m.contains("STATUS=")).unwrap();
    assert!(
        status.contains("gaps") && status.contains("corrupt"),
        "{status}"
    );
    let log = svc.log.clone();
    assert!(svc.terminate().success());
    // The counters are logged on the way out too.
    let text = log_text(&log);
    assert!(
        text.contains("status: camera away") && text.contains("gaps="),
        "{text}"
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_key_and_print_config_works() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    fs::write(&cfg, "[motion]\nquiet_gap_s = -1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_motion-svc"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("motion.quiet_gap_s"), "{err}");
    fs::write(&cfg, "[motion]\nquiet_gap = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_motion-svc"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("quiet_gap"));
    fs::write(&cfg, "[motion]\nsensitivity = \"high\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_motion-svc"))
        .arg("--config")
        .arg(&cfg)
        .args(["--print-config", "--min-object-pct", "25"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sensitivity = \"high\"") && text.contains("min_object_pct = 25.0"),
        "{text}"
    );
}

/// A real progressive JPEG of `side` x `side` grey pixels: a decoder must buffer every
/// coefficient of it (2 bytes a pixel) whatever the output scale.
fn progressive_jpeg(side: u16) -> Vec<u8> {
    let side_px = usize::from(side);
    // Large smooth tiles: a small file (the attacker's is 787 KB) that still claims the size.
    let pixels: Vec<u8> = (0..side_px * side_px)
        .map(|i| ((i / side_px / 256 + i % side_px / 256) % 2) as u8 * 100 + 50)
        .collect();
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 50);
    enc.set_progressive(true);
    enc.encode(&pixels, side, side, jpeg_encoder::ColorType::Luma)
        .unwrap();
    out
}

/// A real sequential (baseline) JPEG of `side` x `side` with three components each in its own
/// scan (multi-scan): a decoder must buffer the whole image like a progressive one. Every
/// block is flat (DC difference 0, then end of block), two bits per block with one-symbol
/// Huffman tables.
fn multi_scan_jpeg(side: u16) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    // Quantisation table 0: all ones.
    j.extend_from_slice(&[0xFF, 0xDB, 0, 67, 0]);
    j.extend_from_slice(&[1; 64]);
    // Baseline frame header: 8 bits, side x side, three components sampled 1x1, table 0.
    j.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
    j.extend_from_slice(&side.to_be_bytes());
    j.extend_from_slice(&side.to_be_bytes());
    j.push(3);
    for c in 1..=3u8 {
        j.extend_from_slice(&[c, 0x11, 0]);
    }
    // DC table 0 and AC table 0, one code each ("0"): category 0, and end of block.
    for class in [0x00u8, 0x10] {
        j.extend_from_slice(&[0xFF, 0xC4, 0, 20, class, 1]);
        j.extend_from_slice(&[0; 15]);
        j.push(0);
    }
    let blocks = usize::from(side).div_ceil(8).pow(2);
    for c in 1..=3u8 {
        // One scan per component: Ns = 1, DC/AC tables 0, Ss 0, Se 63, Ah/Al 0.
        j.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, c, 0x00, 0, 63, 0]);
        j.extend(std::iter::repeat_n(0u8, blocks * 2 / 8));
    }
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

#[test]
fn hostile_frames_are_rejected_before_decoding_counted_and_never_recorded() {
    // The hostile frames first (the 8192x8192 encode takes a while): then the camera, so
    // that they arrive once the service runs.
    let progressive = progressive_jpeg(8192);
    let multi_scan = multi_scan_jpeg(4096);
    let (h, m) = (
        ipc::jpeg::inspect(&progressive).unwrap(),
        ipc::jpeg::inspect(&multi_scan).unwrap(),
    );
    assert!(
        h.buffers_whole_image() && h.coefficient_bytes >= 128 << 20,
        "{h:?}"
    );
    assert!(m.multi_scan && m.coefficient_bytes >= 96 << 20, "{m:?}");
    let camera = ipc::jpeg::FrameLimits::for_camera(4096, 4096);
    assert_eq!(
        ipc::jpeg::check(&multi_scan, &camera).unwrap_err().kind(),
        "too_much_memory"
    );
    eprintln!(
        "progressive 8192x8192: {} KB; multi-scan 4096x4096: {} KB",
        progressive.len() / 1024,
        multi_scan.len() / 1024
    );
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("run")).unwrap();
    // A camera that announces 4096x4096 (so the multi-scan frame fits its geometry and only
    // the memory budget stands in its way) and publishes 320x240 frames.
    let cam = Camera::start_spec(
        &dir.path().join("run"),
        CameraSpec {
            hello: (4096, 4096),
            slot: 2 << 20,
            scene: 0,
        },
    );
    let svc = Svc::start(dir.path(), &[]);
    svc.wait_counter_grows("analysed", 10, Duration::from_secs(30));
    let before_kib = svc.peak_rss_kib();
    // Moving: an event is recording while the hostile frames come, so they would be recorded.
    cam.set_moving(true);
    wait_for(
        "an event recording",
        Duration::from_secs(20),
        || !events(dir.path()).is_empty(),
        &|| svc.log(),
    );
    const COPIES: usize = 10;
    for _ in 0..COPIES {
        cam.inject([
            progressive.clone(),
            multi_scan.clone(),
            b"\xff\xd8 this is no JPEG at all".to_vec(),
        ]);
    }
    wait_for(
        "the hostile frames to be published",
        Duration::from_secs(30),
        || cam.injected_pending() == 0,
        &|| svc.log(),
    );
    cam.set_moving(false);
    // It goes on analysing the camera's frames, and says why it skipped the others.
    svc.wait_counter_grows("analysed", 10, Duration::from_secs(30));
    let peak_kib = svc.peak_rss_kib();
    eprintln!("peak RSS: {before_kib} KiB before the hostile frames, {peak_kib} KiB after");
    // Decoding either frame would need 96 MiB or more of coefficients alone.
    assert!(
        peak_kib < before_kib + 32 * 1024,
        "peak RSS grew from {before_kib} to {peak_kib} KiB"
    );
    let status = svc.status();
    let too_large = status_counter(&status, "too large");
    let too_much_memory = status_counter(&status, "too much memory");
    let not_jpeg = status_counter(&status, "not jpeg");
    assert!(
        too_large > 0
            && too_much_memory > 0
            && not_jpeg > 0
            && status_counter(&status, "rejected") == too_large + too_much_memory + not_jpeg,
        "{status}\n{}",
        svc.log()
    );
    let log = svc.log();
    // Logged, but not once per frame: one line per interval, then a count.
    let lines = log.matches("refused before decoding").count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} lines for {} frames:\n{log}",
        3 * COPIES
    );
    // Never restarted: the same process, and one "ready" line.
    assert_eq!(log.matches("motion-svc ready").count(), 1, "{log}");
    wait_for(
        "the event to complete",
        Duration::from_secs(30),
        || {
            events(dir.path())
                .iter()
                .all(|e| e.1.state != EventState::Recording)
        },
        &|| svc.log(),
    );
    // No hostile frame in any clip or poster.
    for (id, _) in events(dir.path()) {
        let edir = dir.path().join("events").join(&id);
        let (_, frames) = events::avi::read_frames(&edir.join("clip.avi")).unwrap();
        assert!(!frames.is_empty());
        for f in frames
            .iter()
            .chain([&fs::read(edir.join("poster.jpg")).unwrap()])
        {
            let h = ipc::jpeg::inspect(f).unwrap();
            assert_eq!((h.width, h.height), (W as u32, H as u32), "{id}");
        }
    }
    assert!(svc.terminate().success());
}

/// Runs the calling test `name` again in a private mount namespace (`unshare --mount`), where
/// it may mount and remount file systems that vanish with it. Returns true there; in the
/// caller, false once the test passed in the namespace. Without the means (not root, no
/// `unshare`) the test is skipped, except under CI where it fails.
fn in_private_mount_namespace(name: &str) -> bool {
    const VAR: &str = "MOTION_SVC_TEST_IN_MOUNT_NAMESPACE";
    if std::env::var(VAR).as_deref() == Ok(name) {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(VAR, name)
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{name}: cannot run unshare ({e}); install util-linux"
            );
            eprintln!("SKIPPED {name}: cannot run unshare: {e}");
            return false;
        }
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if !out.status.success() && stderr.contains("unshare failed") {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name}: no private mount namespace (run the tests as root): {stderr}"
        );
        eprintln!("SKIPPED {name}: no private mount namespace (not root?): {stderr}");
        return false;
    }
    eprintln!("--- in a private mount namespace ---\n{stdout}\n{stderr}");
    assert!(out.status.success(), "{name} failed in its mount namespace");
    assert!(stdout.contains("1 passed"), "{name} did not run: {stdout}");
    false
}

/// Runs `mount` with `args` (inside a private mount namespace).
fn mount(args: &[&str], target: &Path) {
    let st = Command::new("mount")
        .args(args)
        .arg(target)
        .status()
        .unwrap();
    assert!(st.success(), "mount {args:?} {}", target.display());
}

/// Unmounts its path when dropped (before the test's temporary directory is removed).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `dir/events` on a tmpfs of `size` (`mount -o size=` syntax), unmounted when the guard drops.
fn events_on_tmpfs(dir: &Path, size: &str) -> (PathBuf, Mounted) {
    let edir = dir.join("events");
    fs::create_dir_all(&edir).unwrap();
    mount(
        &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
        &edir,
    );
    let mounted = Mounted(edir.clone());
    (edir, mounted)
}

/// Fills the file system holding `dir` with `dir/filler`; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    for _ in 0..100_000 {
        if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
            break;
        }
    }
    // The last partial pages too.
    for _ in 0..1000 {
        if f.write_all(&chunk[..512])
            .and_then(|()| f.sync_all())
            .is_err()
        {
            break;
        }
    }
    path
}

/// An event left `recording` by a crash, with a clip of `frames` frames being written.
fn crashed_event(events: &Path, id: &str, frames: u64) {
    let dir = events.join(id);
    fs::create_dir_all(&dir).unwrap();
    events::write_meta(
        &dir,
        &events::EventMeta::new(id.into(), events::parse_id(id).unwrap(), W as u32, H as u32),
    )
    .unwrap();
    let mut w =
        events::avi::AviWriter::create(&dir.join("clip.avi.part"), W as u32, H as u32, 15.0)
            .unwrap();
    let mut x = 0.0;
    for i in 0..frames {
        w.push(&render(i, 0, false, &mut x), i * 66_000_000)
            .unwrap();
    }
    w.flush().unwrap();
}

fn end_records(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("3a9e5b7c1d2f4a6b8c0e1f2a3b4c5d6e"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_full_or_read_only_events_disk_never_stops_detection_says_so_and_is_retried() {
    const NAME: &str =
        "a_full_or_read_only_events_disk_never_stops_detection_says_so_and_is_retried";
    if !in_private_mount_namespace(NAME) {
        return;
    }
    let (dir, cam) = setup();
    let (edir, _mounted) = events_on_tmpfs(dir.path(), "2m");
    // What a crash and a hostile hand left behind: an event still "recording", and folders
    // whose event.json is a FIFO (a blocking open hangs) or a directory.
    let crashed = "20261124T182900Z-0001";
    crashed_event(&edir, crashed, 5);
    let fifo = edir.join("20261124T182901Z-0002");
    fs::create_dir(&fifo).unwrap();
    nix::unistd::mkfifo(&fifo.join("event.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let with_dir = edir.join("20261124T182902Z-0003");
    fs::create_dir_all(with_dir.join("event.json")).unwrap();
    let filler = fill(&edir);
    // No storage limits: nothing here is deleted to make room.
    fs::write(
        dir.path().join("none.toml"),
        "[motion]\nmin_free_mib = 0\nmax_total_mib = 0\nmax_age_days = 0\n",
    )
    .unwrap();

    // Full: it starts, detects, records nothing and says so.
    let svc = Svc::start(dir.path(), &[]);
    svc.wait_status(
        "the full disk in the status",
        Duration::from_secs(20),
        |s| s.contains("events disk full: recording nothing"),
    );
    let log = svc.log();
    assert!(
        log.contains("events disk") && log.contains("is full"),
        "{log}"
    );
    // One line (throttled) and a summary: the crashed event could not be closed (no room), the
    // FIFO and the directory are left as they are.
    assert!(log.contains("crash recovery skipped event folder"), "{log}");
    assert!(log.contains("3 folder(s) left as they were"), "{log}");
    svc.wait_counter_grows("analysed", 10, Duration::from_secs(30));
    cam.set_moving(true);
    svc.wait_log("motion start", Duration::from_secs(20));
    cam.set_moving(false);
    wait_for(
        "the end record",
        Duration::from_secs(30),
        || !end_records(&svc.log()).is_empty(),
        &|| svc.log(),
    );
    let end = end_records(&svc.log()).remove(0);
    assert!(
        end.contains("mecam_state=\"failed\"") || end.contains("mecam_state=failed"),
        "{end}"
    );
    assert!(end.contains("write-failed"), "{end}");
    let ids: Vec<String> = events(dir.path()).into_iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        vec![crashed.to_string()],
        "nothing recorded (and the crashed event cannot be closed yet)"
    );
    assert_eq!(
        events::read_meta(&edir.join(crashed)).unwrap().state,
        EventState::Recording
    );

    // Room again: noticed, recovery finishes its work, recording resumes.
    fs::remove_file(&filler).unwrap();
    svc.wait_status("the disk back", Duration::from_secs(20), |s| {
        s.contains("events disk ok")
    });
    wait_for(
        "the crashed event to be closed",
        Duration::from_secs(20),
        || events::read_meta(&edir.join(crashed)).is_ok_and(|m| m.state == EventState::Interrupted),
        &|| svc.log(),
    );
    assert!(svc.log().contains("writable again"), "{}", svc.log());
    // What it could not repair is left as it was.
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::symlink_metadata(fifo.join("event.json"))
            .unwrap()
            .file_type()
    ));
    assert!(with_dir.join("event.json").is_dir());
    svc.wait_counter_grows("analysed", 5, Duration::from_secs(30));
    cam.set_moving(true);
    wait_for(
        "a recorded event",
        Duration::from_secs(30),
        || events(dir.path()).iter().any(|(id, _)| id != crashed),
        &|| svc.log(),
    );
    cam.set_moving(false);
    wait_for(
        "the event to complete",
        Duration::from_secs(30),
        || {
            events(dir.path())
                .iter()
                .any(|(id, m)| id != crashed && m.state == EventState::Complete)
        },
        &|| svc.log(),
    );

    // Read-only: the same.
    mount(&["-o", "remount,ro"], &edir);
    svc.wait_status(
        "the read-only disk in the status",
        Duration::from_secs(20),
        |s| s.contains("events disk read-only: recording nothing"),
    );
    svc.wait_counter_grows("analysed", 5, Duration::from_secs(30));
    mount(&["-o", "remount,rw"], &edir);
    svc.wait_status("the disk back", Duration::from_secs(20), |s| {
        s.contains("events disk ok")
    });
    assert!(svc.terminate().success());
}

#[test]
fn a_disk_that_fills_during_a_recording_ends_it_failed_and_retention_makes_room_first() {
    const NAME: &str =
        "a_disk_that_fills_during_a_recording_ends_it_failed_and_retention_makes_room_first";
    if !in_private_mount_namespace(NAME) {
        return;
    }
    let (dir, cam) = setup();
    let (edir, _mounted) = events_on_tmpfs(dir.path(), "8m");
    // Four old complete events of 1.5 MiB: 2 MiB free, under the 3 MiB minimum.
    let old: Vec<String> = (1..=4)
        .map(|k| format!("2020010{k}T000000Z-0001"))
        .collect();
    for id in &old {
        let d = edir.join(id);
        fs::create_dir(&d).unwrap();
        let mut m = events::EventMeta::new(id.clone(), events::parse_id(id).unwrap(), 1, 1);
        m.state = EventState::Complete;
        events::write_meta(&d, &m).unwrap();
        fs::write(d.join("clip.avi"), vec![1u8; 1536 * 1024]).unwrap();
    }
    let free_before = events::free_bytes(&edir).unwrap();
    assert!(free_before < 3 << 20, "{free_before}");
    fs::write(
        dir.path().join("none.toml"),
        "[motion]\nmin_free_mib = 3\nmax_total_mib = 0\nmax_age_days = 0\n",
    )
    .unwrap();
    let svc = Svc::start(dir.path(), &[]);
    svc.wait_counter_grows("analysed", 10, Duration::from_secs(30));
    cam.set_moving(true);
    wait_recording(&svc, dir.path());
    // Room was made before it started: the oldest went, and only as many as needed.
    let left: Vec<String> = events(dir.path())
        .into_iter()
        .filter(|(_, m)| m.state == EventState::Complete)
        .map(|(id, _)| id)
        .collect();
    assert!(
        !left.contains(&old[0]),
        "the oldest is kept: {left:?}\n{}",
        svc.log()
    );
    assert!(
        left.contains(&old[3]),
        "the newest old event went too: {left:?}"
    );
    assert!(events::free_bytes(&edir).unwrap() > free_before);
    // Now the disk fills under the recording.
    let filler = fill(&edir);
    wait_for(
        "the event to end",
        Duration::from_secs(60),
        || !end_records(&svc.log()).is_empty(),
        &|| svc.log(),
    );
    cam.set_moving(false);
    let end = end_records(&svc.log()).remove(0);
    assert!(end.contains("write-failed"), "{end}");
    // Never left "recording": failed, in event.json too (retention made room for it).
    let rec: Vec<_> = events(dir.path())
        .into_iter()
        .filter(|(id, _)| !old.contains(id))
        .collect();
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0].1.state, EventState::Failed, "{rec:?}");
    assert_eq!(rec[0].1.end_reason, Some(EndReason::WriteFailed), "{rec:?}");
    assert!(rec[0].1.clip_error.is_some(), "{rec:?}");
    fs::remove_file(&filler).unwrap();
    assert!(svc.terminate().success());
}

#[test]
fn an_unusable_events_directory_never_stops_detection_and_is_retried() {
    let (dir, cam) = setup();
    // A file where the events directory should be: it cannot be created.
    let edir = dir.path().join("events");
    fs::write(&edir, b"not a directory").unwrap();
    let svc = Svc::start(dir.path(), &[]);
    svc.wait_status(
        "the unusable disk in the status",
        Duration::from_secs(20),
        |s| s.contains("events disk unusable") && s.contains("recording nothing"),
    );
    svc.background_learned();
    cam.set_moving(true);
    svc.wait_log("motion start", Duration::from_secs(20));
    cam.set_moving(false);
    wait_for(
        "the end record",
        Duration::from_secs(30),
        || !end_records(&svc.log()).is_empty(),
        &|| svc.log(),
    );
    assert!(end_records(&svc.log())[0].contains("write-failed"));
    // Fixed: noticed, and recording works again.
    fs::remove_file(&edir).unwrap();
    svc.wait_status("the disk back", Duration::from_secs(20), |s| {
        s.contains("events disk ok")
    });
    svc.background_learned();
    cam.set_moving(true);
    wait_for(
        "a recorded event",
        Duration::from_secs(30),
        || !events(dir.path()).is_empty(),
        &|| svc.log(),
    );
    cam.set_moving(false);
    assert!(svc.terminate().success());
}

/// The value of `key` in a log line (`key=value`, or `key="value"` with Rust escapes), if the
/// line has it.
fn log_field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return Some(rest.split(' ').next().unwrap_or("").to_owned());
    };
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// The journal records (`message_id`) of event `id` in `log`.
fn record_of(log: &str, message_id: &str, id: &str) -> String {
    log.lines()
        .find(|l| l.contains(message_id) && log_field(l, "mecam_event_id").as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no {message_id} record of {id}:\n{log}"))
        .to_owned()
}

/// The event.json of every hook call so far, as `(kind, metadata)`, in call order.
fn hook_calls(path: &Path) -> Vec<(String, events::EventMeta)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (kind, json) = l.split_once(' ')?;
            Some((kind.to_owned(), serde_json::from_str(json).ok()?))
        })
        .collect()
}

/// The journal's start and end records of event `id`, its start and end hooks and, when it
/// has a folder, its final `event.json` all tell the same story: the same times, a clip named
/// only when there is one (and then on disk), the same state, end reason and clip error.
/// Returns the end hook's metadata.
fn assert_one_story(svc: &Svc, hooks: &Path, id: &str, edir: &Path) -> events::EventMeta {
    let log = svc.log();
    let start = record_of(&log, "8d6f2c1e4b7a4e0f9c3d5a1b2e6f7081", id);
    let end = record_of(&log, "3a9e5b7c1d2f4a6b8c0e1f2a3b4c5d6e", id);
    let calls = hook_calls(hooks);
    let hook = |kind: &str| {
        calls
            .iter()
            .find(|(k, m)| k == kind && m.id == id)
            .unwrap_or_else(|| panic!("no {kind} hook for {id}: {calls:?}"))
            .1
            .clone()
    };
    let (start_hook, end_hook) = (hook("start"), hook("end"));
    let clip_path = |m: &events::EventMeta| {
        m.clip
            .as_ref()
            .map(|c| edir.join(id).join(c).display().to_string())
    };
    for (record, meta) in [(&start, &start_hook), (&end, &end_hook)] {
        assert_eq!(
            log_field(record, "mecam_clip"),
            clip_path(meta),
            "the record names a clip only when its hook does:\n{record}\n{meta:?}"
        );
        assert_eq!(
            log_field(record, "mecam_start_unix_ms"),
            Some(start_hook.start_unix_ms.to_string()),
            "{record}"
        );
    }
    assert_eq!(start_hook.start_unix_ms, end_hook.start_unix_ms);
    let state = serde_json::to_value(end_hook.state).unwrap();
    let expected = [
        (
            "mecam_end_unix_ms",
            end_hook.end_unix_ms.map(|t| t.to_string()),
        ),
        (
            "mecam_end_reason",
            end_hook.end_reason.map(|r| r.as_str().to_owned()),
        ),
        ("mecam_state", state.as_str().map(str::to_owned)),
        ("mecam_error", end_hook.clip_error.clone()),
    ];
    for (key, want) in expected {
        assert_eq!(log_field(&end, key), want, "{key} in {end}\n{end_hook:?}");
    }
    let folder = edir.join(id);
    if folder.exists() {
        assert_eq!(events::read_meta(&folder).unwrap(), end_hook, "event.json");
    }
    if let Some(clip) = clip_path(&end_hook) {
        assert!(Path::new(&clip).is_file(), "{clip} named but missing");
    }
    // A clip named at the start is being written: its event has a folder.
    if start_hook.clip.is_some() {
        assert!(
            folder.is_dir(),
            "the start names a clip of no folder: {start_hook:?}"
        );
    }
    end_hook
}

#[test]
fn when_the_clip_fails_the_journal_the_hooks_and_event_json_tell_one_story() {
    const NAME: &str = "when_the_clip_fails_the_journal_the_hooks_and_event_json_tell_one_story";
    if !in_private_mount_namespace(NAME) {
        return;
    }
    let (dir, cam) = setup();
    let (edir, _mounted) = events_on_tmpfs(dir.path(), "4m");
    // No storage limits: nothing is deleted to make room.
    fs::write(
        dir.path().join("none.toml"),
        "[motion]\nmin_free_mib = 0\nmax_total_mib = 0\nmax_age_days = 0\n",
    )
    .unwrap();
    let hooks = dir.path().join("hooks.log");
    let cmd = format!(
        "printf '%s %s\\n' \"$MECAM_EVENT_KIND\" \"$MECAM_EVENT_JSON\" >> {}",
        hooks.display()
    );
    let ended = |svc: &Svc, n: usize| {
        wait_for(
            &format!("end record {n} and its hook"),
            Duration::from_secs(60),
            || {
                end_records(&svc.log()).len() >= n
                    && hook_calls(&hooks).iter().filter(|c| c.0 == "end").count() >= n
            },
            &|| svc.log(),
        );
        let end = end_records(&svc.log()).remove(n - 1);
        log_field(&end, "mecam_event_id").unwrap()
    };

    // A full disk from the start: the event has no folder and no clip.
    let filler = fill(&edir);
    let svc = Svc::start(dir.path(), &["--hook-command", &cmd]);
    svc.wait_status("the full disk", Duration::from_secs(20), |s| {
        s.contains("events disk full")
    });
    svc.background_learned();
    cam.set_moving(true);
    svc.wait_log("motion start", Duration::from_secs(20));
    cam.set_moving(false);
    let id = ended(&svc, 1);
    let m = assert_one_story(&svc, &hooks, &id, &edir);
    assert!(!edir.join(&id).exists());
    assert_eq!(m.clip, None, "{m:?}");
    assert_eq!(m.end_reason, Some(EndReason::WriteFailed), "{m:?}");

    // Room again, then the disk fills under a recording: the clip stops short.
    fs::remove_file(&filler).unwrap();
    svc.wait_status("the disk back", Duration::from_secs(20), |s| {
        s.contains("events disk ok")
    });
    svc.background_learned();
    cam.set_moving(true);
    wait_recording(&svc, dir.path());
    let filler = fill(&edir);
    let id = ended(&svc, 2);
    cam.set_moving(false);
    // Its final event.json waits for room: it is written once there is.
    fs::remove_file(&filler).unwrap();
    wait_for(
        "the final event.json",
        Duration::from_secs(30),
        || events::read_meta(&edir.join(&id)).is_ok_and(|m| m.state == EventState::Failed),
        &|| svc.log(),
    );
    let m = assert_one_story(&svc, &hooks, &id, &edir);
    assert_eq!(m.end_reason, Some(EndReason::WriteFailed), "{m:?}");
    assert!(m.clip_error.is_some(), "{m:?}");
    assert!(svc.terminate().success());
}

#[test]
fn hooks_still_running_at_sigterm_are_drained_and_the_cut_event_gets_its_end_hook() {
    let (dir, cam) = setup();
    let out = dir.path().join("hooks.log");
    // A hook that takes a while: it says when it begins and when it is done.
    let cmd = format!(
        "echo \"$MECAM_EVENT_KIND begin\" >> {o}; sleep 1; echo \"$MECAM_EVENT_KIND done\" >> {o}",
        o = out.display()
    );
    let svc = Svc::start(dir.path(), &["--hook-command", &cmd]);
    svc.background_learned();
    cam.set_moving(true);
    let said = || fs::read_to_string(&out).unwrap_or_default();
    wait_for(
        "the start hook running",
        Duration::from_secs(30),
        || said().contains("start begin"),
        &|| svc.log(),
    );
    assert!(!said().contains("start done"), "{}", said());
    let log = svc.log.clone();
    assert!(svc.terminate().success());
    let text = said();
    assert!(
        text.contains("start done"),
        "the start hook was lost:\n{text}\n{}",
        log_text(&log)
    );
    assert!(
        text.contains("end begin") && text.contains("end done"),
        "no end hook for the event the shutdown ended:\n{text}\n{}",
        log_text(&log)
    );
}

/// Writes the overrides file of the service in `dir` as web-svc does (atomically).
fn write_overrides(dir: &Path, o: &tuning::Overrides) {
    tuning::store::write(&dir.join("overrides.toml"), o).unwrap();
}

/// The whole frame, as a polygon.
fn whole_frame() -> tuning::Polygon {
    tuning::Polygon(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
}

/// The live preview, asked on its socket.
fn preview(dir: &Path) -> serde_json::Value {
    use std::io::Read as _;
    let mut s = std::os::unix::net::UnixStream::connect(dir.join("run/preview.sock")).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

#[test]
fn a_mask_in_the_overrides_file_applies_without_a_restart_and_keeps_the_background() {
    let (dir, cam) = setup();
    let svc = Svc::start(dir.path(), &[]);
    let pid = svc.svc.pid();
    svc.background_learned();
    let relearns = svc.counter("re-learns");
    // The moving box crosses the whole frame: mask all of it.
    write_overrides(
        dir.path(),
        &tuning::Overrides {
            masks: Some(vec![whole_frame()]),
            ..Default::default()
        },
    );
    svc.wait_log("settings changed (masks)", Duration::from_secs(10));
    cam.set_moving(true);
    // Three seconds of motion under the mask: no event, and the preview shows nothing changed.
    svc.wait_counter_grows("analysed", 15, Duration::from_secs(30));
    assert!(events(dir.path()).is_empty(), "{}", svc.log());
    let p = preview(dir.path());
    assert_eq!(p["boxes"], serde_json::json!([]), "{p}");
    assert!(
        p["cells"].as_str().unwrap().chars().all(|c| c == '0'),
        "{p}"
    );
    // The mask removed: the same motion starts an event, in the same process, and the
    // background was never re-learned for it.
    write_overrides(
        dir.path(),
        &tuning::Overrides {
            masks: Some(Vec::new()),
            ..Default::default()
        },
    );
    wait_recording(&svc, dir.path());
    let p = preview(dir.path());
    assert_eq!(p["armed"], true, "{p}");
    assert!(p["cols"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(svc.svc.pid(), pid);
    assert_eq!(svc.counter("re-learns"), relearns, "{}", svc.log());
    cam.set_moving(false);
    assert!(svc.terminate().success());
}

#[test]
fn a_broken_overrides_file_is_refused_with_a_journal_line_and_the_old_settings_stay() {
    let (dir, cam) = setup();
    let svc = Svc::start(dir.path(), &[]);
    svc.background_learned();
    write_overrides(
        dir.path(),
        &tuning::Overrides {
            detection: Some(false),
            ..Default::default()
        },
    );
    svc.wait_log("disarmed", Duration::from_secs(10));
    // Written by hand, badly: out of range, then not TOML at all.
    let path = dir.path().join("overrides.toml");
    fs::write(&path, "detection = true\nanalysis_fps = 1000.0\n").unwrap();
    svc.wait_log(
        "analysis_fps: 1000 is out of range",
        Duration::from_secs(10),
    );
    fs::write(&path, "detection = tru").unwrap();
    svc.wait_log("line 1", Duration::from_secs(10));
    assert!(
        svc.log().contains("the settings in effect stay"),
        "{}",
        svc.log()
    );
    // Still disarmed: motion makes no event.
    cam.set_moving(true);
    svc.wait_counter_grows("analysed", 15, Duration::from_secs(30));
    assert!(events(dir.path()).is_empty(), "{}", svc.log());
    // Fixed: armed again, the motion records.
    fs::write(&path, "detection = true\n").unwrap();
    svc.wait_log("detection armed", Duration::from_secs(10));
    wait_recording(&svc, dir.path());
    cam.set_moving(false);
    assert!(svc.terminate().success());
}
