//! Integration tests: the real `capture-svc` binary, each test in its own temp dir, readiness
//! by polling the socket, children killed on drop.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capture_svc::synthetic::{Scene, Script};
use ipc::announce::{CameraState, ClientConfig, ClientEvent, FrameClient, Hello};
use testkit::notify::NotifySocket;
use testkit::service::{Service, with_own_watchdog_pid};

const BIN: &str = env!("CARGO_BIN_EXE_capture-svc");
const READY: Duration = Duration::from_secs(20);

/// A running capture-svc, killed on drop.
struct Svc {
    svc: Service,
    dir: tempfile::TempDir,
}

impl Svc {
    fn start(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Svc {
        let log = dir.path().join("capture.log");
        let cfg = dir.path().join("mecam.toml");
        if !cfg.exists() {
            std::fs::write(&cfg, "").unwrap();
        }
        // WATCHDOG_PID must be the service's own pid: set it in a shell that then execs it.
        let self_pid = env
            .iter()
            .any(|(k, v)| *k == "WATCHDOG_PID" && *v == "self");
        let mut cmd = if self_pid {
            with_own_watchdog_pid(Path::new(BIN))
        } else {
            Command::new(BIN)
        };
        cmd.arg("--config")
            .arg(dir.path().join("mecam.toml"))
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .args(["--log-target", "stderr"])
            .args(args)
            .env("RUST_LOG", "info");
        for (k, v) in env.iter().filter(|(k, _)| *k != "WATCHDOG_PID") {
            cmd.env(k, v);
        }
        eprintln!("running {BIN} {args:?}");
        let svc = Service::start("capture-svc", cmd, &log).unwrap();
        let mut svc = Svc { svc, dir };
        svc.wait_ready();
        svc
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/capture.sock")
    }

    fn region(&self) -> PathBuf {
        self.dir.path().join("run/frames")
    }

    fn log_text(&self) -> String {
        self.svc.log()
    }

    fn wait_ready(&mut self) {
        let socket = self.socket();
        let svc = &mut self.svc;
        let ok = poll(READY, || {
            assert!(
                svc.try_wait().unwrap().is_none(),
                "capture-svc exited early"
            );
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        assert!(ok, "capture-svc not ready; log:\n{}", self.log_text());
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        self.svc.wait_log(needle, timeout).is_ok()
    }

    /// Asserts that `needle` shows in the log within `timeout`, printing the log if not.
    fn expect_log(&self, needle: &str, timeout: Duration) {
        assert!(self.wait_log(needle, timeout), "{}", self.log_text());
    }

    /// SIGTERM and wait for exit; returns the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let status = self.svc.stop(Duration::from_secs(15)).unwrap_or_else(|e| {
            panic!(
                "capture-svc did not exit on SIGTERM: {e}; log:\n{}",
                self.log_text()
            )
        });
        status.code()
    }
}

/// Whether `f` holds within `timeout`.
fn poll(timeout: Duration, f: impl FnMut() -> bool) -> bool {
    testkit::poll::until_true("the condition", timeout, f).is_ok()
}

fn jpeg(w: u32, h: u32, t: u64) -> Vec<u8> {
    let mut scene = Scene::new(Script::default(), w, h);
    let mut out = Vec::new();
    scene.render_jpeg(Duration::from_millis(t), &mut out);
    out
}

/// Subscribes and collects events until `until` says stop or the time is up.
fn watch(
    socket: &Path,
    timeout: Duration,
    mut until: impl FnMut(&ClientEvent) -> bool,
) -> Vec<ClientEvent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = FrameClient::new(ClientConfig::new(socket, "capture-test"));
        let mut buf = Vec::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(ev) = tokio::time::timeout_at(deadline, client.next(&mut buf)).await {
            if let ClientEvent::Frame(_) = &ev {
                assert_eq!(&buf[..2], &[0xFF, 0xD8], "a frame starts with SOI");
                assert_eq!(
                    &buf[buf.len() - 2..],
                    &[0xFF, 0xD9],
                    "a frame ends with EOI"
                );
            }
            let stop = until(&ev);
            events.push(ev);
            if stop {
                break;
            }
        }
        events
    })
}

fn frames(events: &[ClientEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Frame(_)))
        .count()
}

#[test]
fn synthetic_streams_and_sigterm_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Svc::start(dir, &["--source", "synthetic", "--fps", "20"], &[]);
    let mut n = 0;
    let ev = watch(&svc.socket(), Duration::from_secs(20), |e| {
        n += usize::from(matches!(e, ClientEvent::Frame(_)));
        n >= 10
    });
    assert!(frames(&ev) >= 10, "{ev:?}");
    let ClientEvent::Connected(hello) = &ev[0] else {
        panic!("hello first: {ev:?}")
    };
    assert_eq!(hello.source, "synthetic");
    assert_eq!((hello.width, hello.height), (640, 480));
    assert!(svc.log_text().contains("ready"));
    assert_eq!(svc.terminate(), Some(0));
    assert!(!svc.socket().exists(), "socket removed");
    assert!(!svc.region().exists(), "region removed");
}

/// The status record (`ipc::status`): streaming with frames and a rate while the camera runs,
/// and marked stopped after SIGTERM, so web-svc says "not running since" at once.
#[test]
fn the_status_record_follows_the_camera_and_says_stopped_at_exit() {
    use ipc::status::{CameraState as Cam, Detail, Service as S};
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Svc::start(dir, &["--source", "synthetic", "--fps", "20"], &[]);
    let run = svc.dir.path().join("run");
    let mut last = None;
    let streaming = poll(Duration::from_secs(20), || {
        last = ipc::status::read(&run, S::Capture).ok();
        last.as_ref().is_some_and(|r| {
            matches!(&r.record.detail, Detail::Capture(c)
                if c.camera == Cam::Streaming && c.frames_in > 0 && c.fps_in > 0.0)
        })
    });
    assert!(streaming, "{last:?}; log:\n{}", svc.log_text());
    let r = last.unwrap();
    assert!(r.running(), "{r:?}");
    assert_eq!(r.record.pid, svc.svc.pid());
    let Detail::Capture(c) = &r.record.detail else {
        unreachable!()
    };
    assert_eq!(c.source, "synthetic");
    assert_eq!(svc.terminate(), Some(0));
    let r = ipc::status::read(&run, S::Capture).unwrap();
    assert!(r.record.stopped && !r.running(), "{r:?}");
}

#[test]
fn a_second_instance_on_the_same_runtime_dir_refuses_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Svc::start(dir, &["--source", "synthetic", "--fps", "20"], &[]);
    let first = watch(&svc.socket(), Duration::from_secs(20), |e| {
        matches!(e, ClientEvent::Frame(_))
    });
    let Some(ClientEvent::Connected(hello)) = first.first() else {
        panic!("{first:?}")
    };
    let generation = hello.generation;
    let mut second = Command::new(BIN)
        .arg("--config")
        .arg(svc.dir.path().join("mecam.toml"))
        .arg("--runtime-dir")
        .arg(svc.dir.path().join("run"))
        .args(["--log-target", "stderr", "--source", "synthetic"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = poll(Duration::from_secs(20), || {
        second.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = second.kill();
    }
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "the second instance kept running: {err}");
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("another running capture-svc") && err.contains("--runtime-dir"),
        "a clear message: {err}"
    );
    // The live region was not replaced: a new viewer of the first instance maps it and gets
    // frames (with the old bug it looped on a generation mismatch).
    let region = ipc::region::RegionReader::open(&svc.region()).unwrap();
    assert_eq!(region.generation(), generation);
    let ev = watch(&svc.socket(), Duration::from_secs(20), |e| {
        matches!(e, ClientEvent::Frame(_))
    });
    assert!(
        matches!(ev.first(), Some(ClientEvent::Connected(h)) if h.generation == generation),
        "{ev:?}"
    );
    assert!(frames(&ev) >= 1, "{ev:?}");
}

#[test]
fn print_config_shows_flags_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mecam.toml");
    std::fs::write(
        &cfg,
        "[capture]\nfps = 12\nwidth = 320\npassword = \"hunter2\"\nurl = \"http://admin:hunter3@cam.local/video\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["--width", "800", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[capture]"), "{text}");
    assert!(text.contains("fps = 12"), "{text}");
    assert!(text.contains("width = 800"), "{text}");
    assert!(!text.contains("hunter2"), "password not printed: {text}");
    assert!(!text.contains("hunter3"), "nor the URL's: {text}");
    assert!(text.contains("http://admin:***@cam.local/video"), "{text}");
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mecam.toml");
    for (text, key) in [
        ("[capture]\nfps = 0\n", "fps"),
        ("[capture]\nframerate = 3\n", "framerate"),
        ("[capture]\nsource = \"http\"\nurl = \"nope\"\n", "url"),
        ("[capture]\nsource = \"webcam\"\n", "capture.source"),
        ("[capture]\nfps = \"fast\"\n", "capture.fps"),
        ("[capture]\nslot_capacity = 10\n", "slot_capacity"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(key), "{key}: {err}");
    }
    // A bad scene script is refused by key too.
    let scene = dir.path().join("scene.toml");
    std::fs::write(&scene, "quality = 300\n").unwrap();
    std::fs::write(&cfg, "").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .args(["--source", "synthetic", "--scene"])
        .arg(&scene)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("quality"));
}

/// A temp dir with the fake rpicam-vid (named `rpicam-vid`), its control file and frame.
fn fake_camera() -> (tempfile::TempDir, PathBuf, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("rpicam-vid");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-rpicam-vid"),
        &fake,
    )
    .unwrap();
    let ctl = dir.path().join("ctl");
    std::fs::write(&ctl, "stream").unwrap();
    let frame = dir.path().join("frame.jpg");
    std::fs::write(&frame, jpeg(320, 240, 0)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = vec![
        ("FAKE_RPICAM_CTL".to_owned(), ctl.display().to_string()),
        ("FAKE_RPICAM_FRAME".to_owned(), frame.display().to_string()),
        ("PATH".to_owned(), path),
    ];
    (dir, ctl, env)
}

fn set_mode(ctl: &Path, mode: &str) {
    let tmp = ctl.with_extension("tmp");
    std::fs::write(&tmp, mode).unwrap();
    std::fs::rename(tmp, ctl).unwrap();
}

fn fake_pids(ctl: &Path) -> Vec<i32> {
    std::fs::read_to_string(ctl.with_extension("log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie still has /proc/PID; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok()
}

fn state_seen(events: &[ClientEvent], name: &str) -> bool {
    events
        .iter()
        .any(|e| matches!(e, ClientEvent::State(s) if s.name() == name))
}

#[test]
fn fake_rpicam_stall_crash_garbage_refuse_all_recovered() {
    let (dir, ctl, env) = fake_camera();
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // No --source: auto selection finds rpicam-vid on PATH.
    let svc = Svc::start(
        dir,
        &[
            "--fps",
            "30",
            "--stall-timeout-ms",
            "700",
            "--backoff-min-ms",
            "50",
            "--backoff-max-ms",
            "400",
        ],
        &env,
    );
    let socket = svc.socket();
    // Streaming first.
    let ev = watch(&socket, Duration::from_secs(20), |e| {
        matches!(e, ClientEvent::Frame(_))
    });
    let ClientEvent::Connected(hello) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(hello.source, "rpicam");
    assert!(frames(&ev) >= 1);
    let args = std::fs::read_to_string(ctl.with_extension("log")).unwrap();
    assert!(
        args.contains("-t 0 --codec mjpeg -o - --nopreview"),
        "{args}"
    );

    // Stall: killed and restarted. The fake stays in "stall" at restart, so switch back once
    // the stall is seen.
    {
        set_mode(&ctl, "stall");
        let ev = watch(&socket, Duration::from_secs(20), |e| match e {
            ClientEvent::State(CameraState::Stalled) => true,
            // States are latest-only per subscriber: Stalled may be overtaken by Restarting.
            ClientEvent::State(CameraState::Restarting { reason }) => reason.contains("no frame"),
            _ => false,
        });
        assert!(
            state_seen(&ev, "stalled") || state_seen(&ev, "restarting"),
            "{ev:?}"
        );
        assert!(svc.wait_log("camera stalled", Duration::from_secs(5)));
        set_mode(&ctl, "stream");
        let ev = watch(&socket, Duration::from_secs(20), |e| {
            matches!(e, ClientEvent::Frame(_))
        });
        assert!(frames(&ev) >= 1);
    }
    let before = fake_pids(&ctl).len();
    assert!(before >= 2, "respawned after the stall");
    assert!(
        fake_pids(&ctl).iter().rev().skip(1).all(|p| !alive(*p)),
        "stalled child killed and reaped"
    );

    // Crash: respawned, the log line carries the child's stderr.
    {
        set_mode(&ctl, "crash");
        let ev = watch(&socket, Duration::from_secs(20), |e| {
            matches!(e, ClientEvent::State(CameraState::Restarting { .. }))
        });
        assert!(state_seen(&ev, "restarting"), "{ev:?}");
        set_mode(&ctl, "stream");
        let ev = watch(&socket, Duration::from_secs(20), |e| {
            matches!(e, ClientEvent::Frame(_))
        });
        assert!(frames(&ev) >= 1);
        // State lines are throttled per kind (one restarting line per 10 s, then the
        // latest held back): the crash may follow the stall's restart within that interval.
        assert!(
            svc.wait_log("fake camera crashed", Duration::from_secs(20)),
            "stderr tail in the log"
        );
    }

    // Garbage between frames: frames keep coming, garbage counted in the log.
    {
        set_mode(&ctl, "garbage");
        let ev = watch(
            &socket,
            Duration::from_secs(20),
            |e| matches!(e, ClientEvent::Frame(m) if m.width == 320),
        );
        assert!(frames(&ev) >= 1);
        assert!(
            svc.wait_log("garbage bytes", Duration::from_secs(15)),
            "garbage counted and logged"
        );
        set_mode(&ctl, "stream");
    }

    // Refuse to start: restarted with backoff, the reason logged, then back when it works.
    {
        set_mode(&ctl, "refuse");
        let n0 = fake_pids(&ctl).len();
        assert!(
            poll(Duration::from_secs(20), || fake_pids(&ctl).len() >= n0 + 3),
            "kept retrying"
        );
        assert!(
            svc.wait_log("no cameras available", Duration::from_secs(20)),
            "refusal reason logged"
        );
        set_mode(&ctl, "stream");
        let ev = watch(&socket, Duration::from_secs(20), |e| {
            matches!(e, ClientEvent::Frame(_))
        });
        assert!(frames(&ev) >= 1, "streaming again after refusals: {ev:?}");
    }

    // No zombies: every earlier fake is gone.
    let pids = fake_pids(&ctl);
    let last = *pids.last().unwrap();
    for p in &pids[..pids.len() - 1] {
        assert!(!alive(*p), "old child {p} left behind (zombie or running)");
    }
    assert!(alive(last));
}

#[test]
fn sigkill_of_capture_svc_leaves_no_child() {
    let (dir, ctl, env) = fake_camera();
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut svc = Svc::start(dir, &["--source", "rpicam"], &env);
    assert!(poll(Duration::from_secs(20), || !fake_pids(&ctl).is_empty()));
    // The fake stalls, so it is not killed by a broken pipe, only by the death signal.
    set_mode(&ctl, "stall");
    let pid = fake_pids(&ctl)[0];
    assert!(alive(pid));
    svc.svc.kill().unwrap();
    assert!(
        poll(Duration::from_secs(10), || !alive(pid)),
        "camera process {pid} survived SIGKILL of capture-svc"
    );
}

#[test]
fn sigterm_stops_the_camera_process() {
    let (dir, ctl, env) = fake_camera();
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut svc = Svc::start(dir, &["--source", "rpicam"], &env);
    assert!(poll(Duration::from_secs(20), || !fake_pids(&ctl).is_empty()));
    let pid = fake_pids(&ctl)[0];
    assert_eq!(svc.terminate(), Some(0));
    assert!(!alive(pid), "camera process stopped and reaped before exit");
    assert!(!svc.socket().exists() && !svc.region().exists());
}

#[test]
fn file_source_loops_a_mjpeg_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clip.mjpeg");
    let mut data = b"leading junk".to_vec();
    for t in 0..3 {
        data.extend_from_slice(&jpeg(160, 120, t * 100));
    }
    std::fs::write(&file, &data).unwrap();
    let file_s = file.display().to_string();
    let svc = Svc::start(
        dir,
        &[
            "--source", "file", "--path", &file_s, "--loop", "--fps", "30",
        ],
        &[],
    );
    let mut n = 0;
    let ev = watch(&svc.socket(), Duration::from_secs(20), |e| {
        n += usize::from(matches!(e, ClientEvent::Frame(m) if m.width == 160 && m.height == 120));
        n >= 8
    });
    assert!(n >= 8, "looped past the 3 frames of the file: {ev:?}");
}

#[test]
fn a_looping_file_without_a_valid_frame_backs_off_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = notify_socket(dir.path());
    let path_s = path.display().to_string();
    let file = dir.path().join("garbage.mjpeg");
    // Garbage with a frame start but never a whole frame.
    let mut data = vec![0x55u8; 4096];
    data.extend_from_slice(&jpeg(160, 120, 0)[..300]);
    std::fs::write(&file, &data).unwrap();
    let file_s = file.display().to_string();
    let svc = Svc::start(
        dir,
        &[
            "--source",
            "file",
            "--path",
            &file_s,
            "--loop",
            "--backoff-min-ms",
            "200",
            "--backoff-max-ms",
            "400",
        ],
        &[("NOTIFY_SOCKET", &path_s)],
    );
    // The first STATUS comes after STATUS_PERIOD (5 s) and counts the restarts so far.
    let mut status = None;
    let got = sock.collect(Duration::from_secs(8));
    for m in &got {
        if let Some(line) = m.strip_prefix("STATUS=") {
            status.get_or_insert(line.trim().to_owned());
        }
    }
    let status = status.unwrap_or_else(|| panic!("no STATUS: {got:?}"));
    let restarts: u64 = status
        .split(", ")
        .find_map(|p| p.strip_suffix(" restarts")?.parse().ok())
        .unwrap_or_else(|| panic!("no restart count in {status:?}"));
    // With a 200 ms minimum backoff, 5 s hold at most 25 replays; a spinning loop makes
    // thousands. And it does keep retrying.
    assert!((2..=30).contains(&restarts), "{status}");
    assert!(status.starts_with("restarting"), "{status}");
    assert!(status.contains(" B live, "), "no heap figures in {status}");
    assert!(
        svc.log_text().contains("holds no valid JPEG frame"),
        "{}",
        svc.log_text()
    );
    assert!(
        std::os::unix::net::UnixStream::connect(svc.socket()).is_ok(),
        "still serving"
    );
}

#[test]
fn file_source_replays_a_folder_of_jpegs_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("shots");
    std::fs::create_dir(&folder).unwrap();
    for (name, w, h) in [
        ("1.jpg", 160, 120),
        ("2.jpeg", 200, 100),
        ("3.JPG", 120, 80),
    ] {
        std::fs::write(folder.join(name), jpeg(w, h, 0)).unwrap();
    }
    std::fs::write(folder.join("README.txt"), "not a frame").unwrap();
    let folder_s = folder.display().to_string();
    let svc = Svc::start(
        dir,
        &[
            "--source", "file", "--path", &folder_s, "--loop", "--fps", "10",
        ],
        &[],
    );
    let mut sizes = Vec::new();
    let ev = watch(&svc.socket(), Duration::from_secs(20), |e| {
        if let ClientEvent::Frame(m) = e {
            sizes.push((m.width, m.height));
        }
        sizes.len() >= 9
    });
    assert!(sizes.len() >= 9, "{ev:?}");
    // Only the three JPEGs, in name order (a loaded machine may skip a frame now and then,
    // so look for one unbroken run of the three).
    let cycle = [(160, 120), (200, 100), (120, 80)];
    assert!(sizes.iter().all(|s| cycle.contains(s)), "{sizes:?}");
    assert!(sizes.windows(3).any(|w| w == cycle), "{sizes:?}");
}

#[test]
fn command_source_with_truncated_frames() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("frames.bin");
    let f = jpeg(160, 120, 0);
    let mut data = Vec::new();
    for _ in 0..5 {
        data.extend_from_slice(&f);
        data.extend_from_slice(&f[..f.len() / 2]); // cut off by the next SOI
    }
    std::fs::write(&file, &data).unwrap();
    let cmd = format!("cat {}", file.display());
    let svc = Svc::start(
        dir,
        &[
            "--source",
            "command",
            "--command",
            &cmd,
            "--backoff-min-ms",
            "1000",
        ],
        &[],
    );
    // The command prints its 5 frames in a burst and exits; it is run again after the backoff.
    // Subscribers get the latest frame only, so count restarts rather than frames.
    let mut restarts = 0;
    let ev = watch(&svc.socket(), Duration::from_secs(20), |e| {
        restarts += usize::from(matches!(
            e,
            ClientEvent::State(CameraState::Restarting { .. })
        ));
        restarts >= 2
    });
    assert!(frames(&ev) >= 1, "{ev:?}");
    assert!(restarts >= 2, "{ev:?}");
    assert!(
        svc.wait_log(
            "command:cat exited (exit status: 0) after 5 frames",
            Duration::from_secs(10)
        ),
        "exit noticed with the frame count"
    );
    assert!(
        svc.wait_log("truncated", Duration::from_secs(15)),
        "truncated frames counted and logged"
    );
}

/// How a test HTTP camera answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpMode {
    /// HTTP/1.0, a close-delimited multipart body.
    Mjpeg10,
    /// HTTP/1.1 with a chunked multipart body.
    Chunked11,
    /// Bytes that are not HTTP at all.
    Garbage,
    /// A response head far over any bound.
    HugeHead,
}

/// A one-connection-at-a-time MJPEG HTTP camera on `bind` (`127.0.0.1:0`, `[::1]:0`) needing
/// basic auth (admin:secret); it serves at most 6 connections, so its thread ends.
fn http_camera(
    bind: &str,
    mode: HttpMode,
    frame: Vec<u8>,
    frames: usize,
) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for _ in 0..6 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut req = vec![0u8; 4096];
            let n = s.read(&mut req).unwrap_or(0);
            // admin:secret; header names are case-insensitive.
            let authorized = String::from_utf8_lossy(&req[..n]).lines().any(|l| {
                l.split_once(':').is_some_and(|(name, value)| {
                    name.eq_ignore_ascii_case("authorization")
                        && value.trim() == "Basic YWRtaW46c2VjcmV0"
                })
            });
            match mode {
                HttpMode::Garbage => {
                    let _ = s.write_all(b"\x00\x01SSH-2.0-nonsense\r\n\r\n\xff\xd8");
                    continue;
                }
                HttpMode::HugeHead => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
                    for i in 0..20_000 {
                        if s.write_all(format!("X-Pad-{i}: {}\r\n", "a".repeat(20)).as_bytes())
                            .is_err()
                        {
                            break;
                        }
                    }
                    continue;
                }
                HttpMode::Mjpeg10 | HttpMode::Chunked11 => {}
            }
            if !authorized {
                let _ = s.write_all(b"HTTP/1.0 401 Unauthorized\r\n\r\n");
                continue;
            }
            let chunked = mode == HttpMode::Chunked11;
            let head: &[u8] = if chunked {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
            } else {
                b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
            };
            let _ = s.write_all(head);
            for _ in 0..frames {
                let mut part = format!(
                    "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    frame.len()
                )
                .into_bytes();
                part.extend_from_slice(&frame);
                part.extend_from_slice(b"\r\n");
                if chunked {
                    // Two chunks per part, so a frame spans chunk boundaries.
                    let (a, b) = part.split_at(part.len() / 3);
                    let mut out = Vec::new();
                    for c in [a, b] {
                        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        out.extend_from_slice(c);
                        out.extend_from_slice(b"\r\n");
                    }
                    part = out;
                }
                if s.write_all(&part).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            if chunked {
                let _ = s.write_all(b"0\r\n\r\n");
            }
        }
    });
    (addr, h)
}

#[test]
fn http_source_with_basic_auth_and_reconnect() {
    let (addr, _server) = http_camera("127.0.0.1:0", HttpMode::Mjpeg10, jpeg(200, 100, 0), 5);
    let url = format!("http://admin:secret@{addr}/stream");
    let svc = http_svc(&url, &["--backoff-min-ms", "50"], &[]);
    let (n, ev) = frames_of_width(&svc, 200, 8);
    assert!(
        n >= 8,
        "more than one connection's frames: reconnected: {ev:?}"
    );
}

#[test]
fn a_healthy_http_camera_logs_no_warning_about_its_multipart_headers() {
    // 250 frames 30 ms apart: one connection streams past a STATUS_PERIOD (5 s).
    let (addr, _server) = http_camera("127.0.0.1:0", HttpMode::Mjpeg10, jpeg(200, 100, 0), 250);
    let url = format!("http://admin:secret@{addr}/stream");
    let svc = http_svc(&url, &[], &[("RUST_LOG", "info,capture_svc=debug")]);
    // The status check ran (its debug line counts the multipart headers) ...
    svc.expect_log("(multipart headers)", Duration::from_secs(20));
    // ... and found nothing to warn about.
    let log = svc.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && !l.contains("not on tmpfs"))
        .collect();
    assert!(warnings.is_empty(), "{log}");
    assert!(log.contains("camera streaming"), "{log}");
}

#[test]
fn http_source_wrong_password_says_so() {
    let (addr, _server) = http_camera("127.0.0.1:0", HttpMode::Mjpeg10, jpeg(200, 100, 0), 5);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://admin:wrong@{addr}/stream");
    let svc = Svc::start(dir, &["--source", "http", "--url", &url], &[]);
    svc.expect_log("check username and password", Duration::from_secs(15));
}

/// Collects sd_notify datagrams sent to a socket in `dir`.
fn notify_socket(dir: &Path) -> (NotifySocket, PathBuf) {
    let sock = NotifySocket::bind(&dir.join("notify.sock"));
    let path = sock.path().to_owned();
    (sock, path)
}

/// The environment systemd gives a `Type=notify` service with `WatchdogSec=0.6s`.
fn watchdog_env(notify_socket: &str) -> [(&str, &str); 3] {
    [
        ("NOTIFY_SOCKET", notify_socket),
        ("WATCHDOG_USEC", "600000"),
        ("WATCHDOG_PID", "self"),
    ]
}

#[test]
fn sd_notify_ready_status_and_watchdog_while_frames_flow_or_the_source_retries() {
    // Frames flow: READY, then WATCHDOG pings and a STATUS with the fps.
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = notify_socket(dir.path());
    let path_s = path.display().to_string();
    let svc = Svc::start(
        dir,
        &["--source", "synthetic", "--fps", "10"],
        &watchdog_env(&path_s),
    );
    let got = sock.collect(Duration::from_secs(7));
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    assert!(
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|m| m.contains("STATUS=streaming") && m.contains("fps")),
        "{got:?}"
    );
    drop(svc);

    // The camera program cannot be started at all: READY (socket and region exist), and the
    // WATCHDOG pings go on, because capture keeps retrying with backoff (Failed with a retry
    // pending is restarting): systemd must not abort the service every WatchdogSec for it.
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = notify_socket(dir.path());
    let path_s = path.display().to_string();
    let svc = Svc::start(
        dir,
        &[
            "--source",
            "rpicam",
            "--rpicam-program",
            "/nonexistent/rpicam-vid",
            "--backoff-min-ms",
            "200",
            "--backoff-max-ms",
            "1000",
        ],
        &watchdog_env(&path_s),
    );
    svc.expect_log("cannot start rpicam", Duration::from_secs(10));
    // Long enough for a STATUS line (every 5 s), which shows the state the pings came in.
    let got = sock.collect(Duration::from_secs(6));
    assert!(
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "pings while failed and retrying: {got:?}"
    );
    assert!(got.iter().any(|m| m.contains("STATUS=failed")), "{got:?}");
    drop(svc);

    // A file source that ended (loop = false) is never retried: READY, then no pings once it
    // has failed for good, so systemd's watchdog acts.
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = notify_socket(dir.path());
    let path_s = path.display().to_string();
    let file = dir.path().join("one.mjpeg");
    std::fs::write(&file, jpeg(160, 120, 0)).unwrap();
    let file_s = file.display().to_string();
    let svc = Svc::start(
        dir,
        &[
            "--source",
            "file",
            "--path",
            &file_s,
            "--stall-timeout-ms",
            "500",
        ],
        &watchdog_env(&path_s),
    );
    svc.expect_log("loop = false", Duration::from_secs(10));
    // Past the stall timeout the one frame no longer counts as flowing.
    let before = sock.collect(Duration::from_secs(1));
    assert!(before.iter().any(|m| m.contains("READY=1")), "{before:?}");
    let got = sock.collect(Duration::from_secs(2));
    assert!(
        !got.iter().any(|m| m.contains("WATCHDOG=1")),
        "no pings once the source is done for good: {got:?}"
    );
}

#[test]
fn endless_garbage_from_the_camera_is_survived() {
    // A camera process that floods bytes with no JPEG in them: counted, stalled, restarted;
    // the service keeps answering.
    let dir = tempfile::tempdir().unwrap();
    let svc = Svc::start(
        dir,
        &[
            "--source",
            "command",
            "--command",
            "cat /dev/zero",
            "--stall-timeout-ms",
            "500",
            "--backoff-min-ms",
            "2000",
        ],
        &[],
    );
    assert!(svc.wait_log("camera stalled", Duration::from_secs(15)));
    assert!(svc.wait_log("garbage bytes", Duration::from_secs(15)));
    let ev = watch(&svc.socket(), Duration::from_secs(5), |e| {
        matches!(e, ClientEvent::Connected(_))
    });
    assert!(
        matches!(ev.first(), Some(ClientEvent::Connected(_))),
        "{ev:?}"
    );
    let rss_kib = testkit::procfs::status_kib(svc.svc.pid(), "VmRSS");
    // The splitter's buffer is slot capacity + 64 KiB; a growing buffer would be gigabytes.
    assert!(rss_kib < 64 * 1024, "RSS {rss_kib} KiB");
}

/// The headers of a JPEG claiming `width`x`height` (frame marker `sof`, one sampling byte per
/// component, `scan_components` in the first scan), a little entropy-coded data and EOI: what
/// a hostile camera sends to make a decoder allocate for the whole claimed image.
fn crafted_jpeg(sof: u8, width: u16, height: u16, sampling: &[u8], scan_components: u8) -> Vec<u8> {
    let mut b = testkit::jpeg::headers(sof, width, height, sampling, scan_components);
    b.extend_from_slice(&[0x12; 4000]);
    b.extend_from_slice(&[0xFF, 0xD9]);
    b
}

/// A real progressive JPEG (jpeg-encoder) of 3000x3000 grey: 9 Mpx, within every size limit,
/// but a decoder must buffer its 18 MB of coefficients whole.
fn real_progressive_jpeg() -> Vec<u8> {
    let (w, h) = (3000u16, 3000u16);
    let pixels: Vec<u8> = (0..usize::from(w) * usize::from(h))
        .map(|i| ((i % 3000) / 12 + (i / 3000) / 24) as u8)
        .collect();
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 50);
    enc.set_progressive(true);
    enc.encode(&pixels, w, h, jpeg_encoder::ColorType::Luma)
        .unwrap();
    let header = ipc::jpeg::inspect(&out).unwrap();
    assert_eq!(
        header.coding,
        ipc::jpeg::Coding::Progressive,
        "really progressive"
    );
    out
}

/// capture-svc in a new directory, streaming from the HTTP camera at `url`, `args` after the
/// source's.
fn http_svc(url: &str, args: &[&str], env: &[(&str, &str)]) -> Svc {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["--source", "http", "--url", url];
    all.extend_from_slice(args);
    Svc::start(dir, &all, env)
}

/// Watches `svc`'s socket (20 s at most) until `at_least` frames `width` pixels wide came:
/// how many came, and every event seen.
fn frames_of_width(svc: &Svc, width: u32, at_least: usize) -> (usize, Vec<ClientEvent>) {
    let mut n = 0;
    let ev = watch(&svc.socket(), Duration::from_secs(20), |e| {
        n += usize::from(matches!(e, ClientEvent::Frame(m) if m.width == width));
        n >= at_least
    });
    (n, ev)
}

/// Subscribes and collects frames (with their bytes) until `n` came or the time is up.
fn watch_frames(
    socket: &Path,
    timeout: Duration,
    n: usize,
) -> Vec<(ipc::region::FrameMeta, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = FrameClient::new(ClientConfig::new(socket, "capture-test"));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(ev) = tokio::time::timeout_at(deadline, client.next(&mut buf)).await {
            if let ClientEvent::Frame(m) = ev {
                got.push((m, buf.clone()));
                if got.len() >= n {
                    break;
                }
            }
        }
        got
    })
}

/// The `name N` counts of a STATUS line's `rejected (...)` part.
fn status_count(status: &str, name: &str) -> Option<u64> {
    let (_, rest) = status.split_once(&format!("{name} "))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The last STATUS line among `got`.
fn last_status(got: &[String]) -> Option<String> {
    got.iter()
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("STATUS=")))
        .next_back()
        .map(str::to_owned)
}

#[test]
fn hostile_frames_between_good_ones_are_never_published_and_are_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, notify) = notify_socket(dir.path());
    let notify_s = notify.display().to_string();
    let frames_dir = dir.path().join("frames");
    std::fs::create_dir(&frames_dir).unwrap();
    let good: Vec<Vec<u8>> = (0..5).map(|t| jpeg(160, 120, t * 1000)).collect();
    let yuv420 = [0x22, 0x11, 0x11];
    let hostile: [(&str, Vec<u8>); 5] = [
        // The 8192x8192 progressive frame that sent motion-svc to 390 MiB.
        ("too_large", crafted_jpeg(0xC2, 8192, 8192, &yuv420, 1)),
        // Sequential but in several scans: buffered whole, 72 MiB of coefficients.
        (
            "too_much_memory",
            crafted_jpeg(0xC0, 4096, 3072, &[0x11, 0x11, 0x11], 1),
        ),
        ("too_much_memory", real_progressive_jpeg()),
        ("not_jpeg", vec![0xFF, 0xD8, 0xFF, 0xD9]),
        ("unsupported", crafted_jpeg(0xC0, 0, 480, &yuv420, 3)),
    ];
    for (i, g) in good.iter().enumerate() {
        std::fs::write(frames_dir.join(format!("{i}a.jpg")), g).unwrap();
        std::fs::write(frames_dir.join(format!("{i}b.jpg")), &hostile[i].1).unwrap();
    }
    // A camera that never exits: every frame a little apart, so a subscriber sees them all.
    let script = dir.path().join("camera.sh");
    std::fs::write(
        &script,
        format!(
            "while :; do for f in {}/*.jpg; do cat \"$f\"; sleep 0.04; done; done\n",
            frames_dir.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mecam.toml"),
        format!(
            "[capture]\nsource = \"command\"\ncommand = [\"sh\", \"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    let svc = Svc::start(dir, &[], &[("NOTIFY_SOCKET", &notify_s)]);
    let seen = watch_frames(&svc.socket(), Duration::from_secs(30), 25);
    assert!(
        seen.len() >= 25,
        "good frames keep flowing: {} seen",
        seen.len()
    );
    for (m, bytes) in &seen {
        assert_eq!(
            (m.width, m.height),
            (160, 120),
            "a hostile frame was published: {m:?}"
        );
        assert!(good.contains(bytes), "only the good frames: {m:?}");
    }
    // Counted by reason, in STATUS (every 5 s), exact, and the camera never restarted.
    let mut status = String::new();
    let ok = poll(Duration::from_secs(20), || {
        if let Some(s) = last_status(&sock.collect(Duration::from_millis(200))) {
            status = s;
        }
        ["too_large", "too_much_memory", "not_jpeg", "unsupported"]
            .iter()
            .all(|k| status_count(&status, k).is_some_and(|n| n >= 1))
    });
    assert!(ok, "every reason counted in STATUS: {status:?}");
    assert!(status.contains(" 0 restarts"), "{status}");
    let tm = status_count(&status, "too_much_memory").unwrap();
    let tl = status_count(&status, "too_large").unwrap();
    // Two of the five hostile frames per pass need too much memory, one is too large.
    assert!(tm >= 2 * tl - 2 && tm <= 2 * tl + 2, "{status}");
    // The journal line names the reason, once per interval (not once per frame).
    let log = svc.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("frame refused"))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(lines.len() <= 3, "throttled: {lines:#?}");
    assert!(log.contains("8192x8192"), "{log}");
}

#[test]
fn a_frame_larger_than_the_configured_rpicam_size_is_refused() {
    // The fake camera sends 320x240 frames; rpicam was asked for 160x120.
    let (dir, _ctl, env) = fake_camera();
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let svc = Svc::start(
        dir,
        &[
            "--source",
            "rpicam",
            "--width",
            "160",
            "--height",
            "120",
            "--stall-timeout-ms",
            "1000",
        ],
        &env,
    );
    // Nothing is ever published; the stall that follows says why.
    let ev = watch(&svc.socket(), Duration::from_secs(20), |e| {
        matches!(e, ClientEvent::State(CameraState::Restarting { .. }))
    });
    assert_eq!(
        frames(&ev),
        0,
        "published: {:?}",
        ev.iter().take(5).collect::<Vec<_>>()
    );
    let reason = ev
        .iter()
        .find_map(|e| match e {
            ClientEvent::State(CameraState::Restarting { reason }) => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{ev:?}"));
    assert!(reason.contains("refused"), "{reason}");
    svc.expect_log("320x240 is larger than the camera", Duration::from_secs(10));
}

#[test]
fn http_camera_on_ipv6_loopback_with_basic_auth() {
    let (addr, _server) = http_camera("[::1]:0", HttpMode::Mjpeg10, jpeg(200, 100, 0), 5);
    assert!(addr.is_ipv6());
    let url = format!("http://admin:secret@[::1]:{}/stream", addr.port());
    let svc = http_svc(&url, &["--backoff-min-ms", "50"], &[]);
    let (n, ev) = frames_of_width(&svc, 200, 8);
    assert!(n >= 8, "frames from [::1], across reconnects: {ev:?}");
    let Some(ClientEvent::Connected(hello)) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(hello.source, format!("http:[::1]:{}/stream", addr.port()));
    assert!(!svc.log_text().contains("secret"), "{}", svc.log_text());
}

#[test]
fn http_camera_with_a_chunked_body_streams() {
    let (addr, _server) = http_camera("127.0.0.1:0", HttpMode::Chunked11, jpeg(200, 100, 0), 5);
    let url = format!("http://admin:secret@{addr}/stream");
    let svc = http_svc(&url, &["--backoff-min-ms", "50"], &[]);
    let (n, ev) = frames_of_width(&svc, 200, 3);
    assert!(n >= 3, "{ev:?}");
}

#[test]
fn an_http_camera_answering_garbage_or_a_huge_head_fails_with_the_reason_and_few_lines() {
    for (mode, says) in [
        (HttpMode::Garbage, "not usable HTTP"),
        (HttpMode::HugeHead, "response head over"),
    ] {
        let (addr, server) = http_camera("127.0.0.1:0", mode, Vec::new(), 0);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://admin:secret@{addr}/stream");
        let svc = Svc::start(
            dir,
            &[
                "--source",
                "http",
                "--url",
                &url,
                "--backoff-min-ms",
                "10",
                "--backoff-max-ms",
                "20",
            ],
            &[],
        );
        let ev = watch(&svc.socket(), Duration::from_secs(20), |e| {
            matches!(e, ClientEvent::State(CameraState::Failed { reason }) if reason.contains(says))
                || matches!(e, ClientEvent::Connected(h) if matches!(&h.state, CameraState::Failed { reason } if reason.contains(says)))
        });
        assert_eq!(frames(&ev), 0, "{mode:?}");
        assert!(
            svc.wait_log(says, Duration::from_secs(10)),
            "{mode:?}: {}",
            svc.log_text()
        );
        // The server answers 6 times, 10-20 ms apart, then refuses connections: each failure
        // changes the state's reason, yet the failed lines are throttled.
        assert!(
            poll(Duration::from_secs(20), || server.is_finished()),
            "{mode:?}: the camera was asked 6 times"
        );
        let log = svc.log_text();
        let failed = log.lines().filter(|l| l.contains("camera failed")).count();
        assert!(failed <= 2, "{mode:?}: {failed} lines:\n{log}");
    }
}

#[test]
fn with_no_camera_found_it_fails_loudly_keeps_looking_and_uses_a_camera_plugged_in_later() {
    // No source configured, and nothing where capture looks: no rpicam-vid on the search
    // path, no /dev/video* node. "ffmpeg" is the fake camera (it writes 320x240 JPEGs).
    let (dir, ctl, env) = fake_camera();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    for d in ["empty-bin", "dev", "sys"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let fake = dir.path().join("bin/rpicam-vid");
    std::fs::write(
        dir.path().join("mecam.toml"),
        format!("[capture]\nffmpeg_program = \"{}\"\n", fake.display()),
    )
    .unwrap();
    let (sock, notify) = notify_socket(dir.path());
    let notify_s = notify.display().to_string();
    env.extend(watchdog_env(&notify_s));
    let dev = dir.path().join("dev");
    let sys = dir.path().join("sys");
    let args = [
        "--camera-search-path".to_owned(),
        dir.path().join("empty-bin").display().to_string(),
        "--camera-dev-dir".to_owned(),
        dev.display().to_string(),
        "--camera-sysfs-dir".to_owned(),
        sys.display().to_string(),
        "--backoff-min-ms".to_owned(),
        "50".to_owned(),
        "--backoff-max-ms".to_owned(),
        "300".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let svc = Svc::start(dir, &args, &env);

    // Failed with the reason, never a made-up picture.
    let ev = watch(&svc.socket(), Duration::from_secs(3), |_| false);
    assert_eq!(frames(&ev), 0, "no frame without a camera: {ev:?}");
    let failed_reason = ev.iter().find_map(|e| match e {
        ClientEvent::Connected(Hello {
            state: CameraState::Failed { reason },
            ..
        })
        | ClientEvent::State(CameraState::Failed { reason }) => Some(reason.clone()),
        _ => None,
    });
    let reason = failed_reason.unwrap_or_else(|| panic!("failed state: {ev:?}"));
    assert!(
        reason.starts_with("no camera found") && reason.contains("[capture] source"),
        "{reason}"
    );
    // The watchdog keeps being pinged while it looks (every 50-300 ms), and STATUS says failed.
    let got = sock.collect(Duration::from_secs(6));
    assert!(
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "pings while looking: {got:?}"
    );
    assert!(got.iter().any(|m| m.contains("STATUS=failed")), "{got:?}");
    // One clear journal line for all those looks.
    let log = svc.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("no camera found"))
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("synthetic"), "{log}");
    assert!(fake_pids(&ctl).is_empty(), "no camera program started yet");

    // A USB camera is plugged in: found on a later look, and streams.
    std::fs::create_dir(sys.join("video0")).unwrap();
    std::fs::write(sys.join("video0/name"), "USB Camera\n").unwrap();
    std::fs::write(dev.join("video0"), "").unwrap();
    let ev = watch(
        &svc.socket(),
        Duration::from_secs(20),
        |e| matches!(e, ClientEvent::Frame(m) if m.width == 320),
    );
    assert!(frames(&ev) >= 1, "{ev:?}");
    let args = std::fs::read_to_string(ctl.with_extension("log")).unwrap();
    assert!(
        args.contains("-f v4l2") && args.contains(&dev.join("video0").display().to_string()),
        "{args}"
    );
    let ev = watch(&svc.socket(), Duration::from_secs(10), |e| {
        matches!(e, ClientEvent::Connected(_))
    });
    assert!(
        matches!(ev.first(), Some(ClientEvent::Connected(h)) if h.source.starts_with("v4l2:")),
        "{ev:?}"
    );
    assert!(svc.wait_log("found a camera", Duration::from_secs(5)));
}

#[test]
fn a_camera_flooding_bad_data_gets_a_few_log_lines_and_exact_counters() {
    // One burst: 100 times a 160x120 frame, junk, a frame cut off by the next one, and a
    // 120x160 frame (the size flips every frame). Then the command exits, and the long
    // backoff keeps it from running again during the test.
    let dir = tempfile::tempdir().unwrap();
    let (sock, notify) = notify_socket(dir.path());
    let notify_s = notify.display().to_string();
    let (a, b) = (jpeg(160, 120, 0), jpeg(120, 160, 0));
    let mut data = Vec::new();
    for _ in 0..100 {
        data.extend_from_slice(&a);
        data.extend_from_slice(b"junk");
        data.extend_from_slice(&a[..a.len() / 2]);
        data.extend_from_slice(&b);
    }
    let file = dir.path().join("burst.bin");
    std::fs::write(&file, &data).unwrap();
    let cmd = format!("cat {}", file.display());
    let svc = Svc::start(
        dir,
        &[
            "--source",
            "command",
            "--command",
            &cmd,
            "--backoff-min-ms",
            "60000",
            "--backoff-max-ms",
            "60000",
        ],
        &[("NOTIFY_SOCKET", &notify_s)],
    );
    let mut status = String::new();
    let ok = poll(Duration::from_secs(20), || {
        if let Some(s) = last_status(&sock.collect(Duration::from_millis(200))) {
            status = s;
        }
        status.contains("200 frames")
    });
    assert!(ok, "{status:?}");
    assert!(status.contains(" 100 dropped"), "exact: {status}");
    assert!(
        svc.wait_log("400 garbage bytes", Duration::from_secs(15)),
        "exact garbage count: {}",
        svc.log_text()
    );
    let log = svc.log_text();
    for (what, line) in [
        ("size changes", "frame size is now"),
        ("drops", "frames dropped"),
        ("garbage", "garbage bytes"),
    ] {
        let n = log.lines().filter(|l| l.contains(line)).count();
        assert!((1..=2).contains(&n), "{what}: {n} lines\n{log}");
    }
}

#[test]
fn an_http_camera_that_never_answers_times_out_and_its_connection_is_closed() {
    // Accepts, reads the request, never answers; tells when capture closes the connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let accepted = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut buf = [0u8; 4096];
        // Until EOF (capture closed it) or the 30 s read timeout.
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        let _ = tx.send((closed, accepted.elapsed()));
    });
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/stream");
    let svc = Svc::start(
        dir,
        &[
            "--source",
            "http",
            "--url",
            &url,
            "--backoff-min-ms",
            "60000",
            "--backoff-max-ms",
            "60000",
        ],
        &[],
    );
    let (closed, after) = rx.recv_timeout(Duration::from_secs(40)).unwrap();
    println!("capture closed the silent camera's connection after {after:?}");
    assert!(closed, "the connection was left open");
    svc.expect_log("no answer within 10s", Duration::from_secs(10));
    server.join().unwrap();
}
