//! Test harness: an in-test camera (a real region and announce server publishing JPEGs), the
//! real `web-svc` binary on loopback (killed on drop), and small helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::camera::Stream;
use testkit::service::Service;

/// Published (seq, frame index) pairs remembered, oldest dropped first.
pub const PUBLISHED_KEPT: usize = 4096;

/// Makes `n` distinct grey JPEGs of `w`x`h`: a gradient, a moving bar and some noise
/// (`noise` 0..=255 controls the size).
pub fn make_frames(n: usize, w: u16, h: u16, noise: u8) -> Vec<Vec<u8>> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            let mut px = vec![0u8; w as usize * h as usize];
            for y in 0..h as usize {
                for x in 0..w as usize {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let n = if noise == 0 {
                        0
                    } else {
                        (seed % u64::from(noise)) as u8
                    };
                    let bar = (x + i * 37) % (w as usize) < 40;
                    px[y * w as usize + x] = if bar {
                        250
                    } else {
                        ((x + y) % 200) as u8 / 2 + n / 2
                    };
                }
            }
            let mut out = Vec::new();
            jpeg_encoder::Encoder::new(&mut out, 85)
                .encode(&px, w, h, jpeg_encoder::ColorType::Luma)
                .unwrap();
            out
        })
        .collect()
}

/// An in-test camera (testkit's) publishing `frames` in turn, remembering what it published.
pub struct Camera {
    camera: testkit::camera::Camera,
    /// (seq, index into frames, mono_ns of commit) of recent publications.
    pub published: Arc<Mutex<VecDeque<(u64, usize, u64)>>>,
    /// The frames.
    pub frames: Arc<Vec<Vec<u8>>>,
    /// Frames published.
    pub count: Arc<AtomicU64>,
}

impl Camera {
    /// Starts publishing into `runtime_dir` at `fps`.
    pub fn start(
        runtime_dir: &Path,
        frames: Arc<Vec<Vec<u8>>>,
        w: u32,
        h: u32,
        fps: f64,
    ) -> Camera {
        let published = Arc::new(Mutex::new(VecDeque::with_capacity(PUBLISHED_KEPT)));
        let count = Arc::new(AtomicU64::new(0));
        let (pb, fr, ct) = (published.clone(), frames.clone(), count.clone());
        let slot = fr
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(1024)
            .next_multiple_of(4096)
            + 4096;
        let stream = Stream {
            width: w,
            height: h,
            fps,
            slot,
            source: "test-camera",
        };
        let camera = testkit::camera::Camera::start(runtime_dir, stream, move |n, camera| {
            let idx = n as usize % fr.len();
            let meta = camera.commit(&fr[idx]).unwrap();
            let committed = ipc::service::monotonic_ns();
            {
                let mut p = pb.lock().unwrap();
                if p.len() >= PUBLISHED_KEPT {
                    p.pop_front();
                }
                p.push_back((meta.seq, idx, committed));
            }
            camera.handle.frame(&meta);
            ct.fetch_add(1, Ordering::Relaxed);
        });
        Camera {
            camera,
            published,
            frames,
            count,
        }
    }

    /// The frame published with `seq`, if still remembered, and its commit time.
    pub fn frame_for(&self, seq: u64) -> Option<(&[u8], u64)> {
        let p = self.published.lock().unwrap();
        let (_, idx, at) = *p.iter().find(|(s, _, _)| *s == seq)?;
        Some((&self.frames[idx], at))
    }

    /// Stops publishing and removes the socket and region (like capture-svc going away).
    pub fn stop(&mut self) {
        self.camera.stop();
    }
}

/// A temp tree for one test: runtime, events and state directories, and a config file.
pub struct Dirs {
    /// Owns the tree.
    pub tmp: tempfile::TempDir,
    /// Whether the config turns TLS on (readiness is then checked by the test itself).
    pub tls: bool,
}

impl Dirs {
    /// A fresh tree with `[web]` set to `web_config`.
    pub fn new(web_config: &str) -> Dirs {
        let tmp = tempfile::Builder::new()
            .prefix("web-svc-test-")
            .tempdir()
            .unwrap();
        for d in ["run", "events", "state"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        std::fs::write(
            tmp.path().join("mecam.toml"),
            format!("[web]\n{web_config}\n"),
        )
        .unwrap();
        Dirs {
            tmp,
            tls: web_config.contains("tls_cert"),
        }
    }
    /// The runtime directory.
    pub fn run(&self) -> PathBuf {
        self.tmp.path().join("run")
    }
    /// The events directory.
    pub fn events(&self) -> PathBuf {
        self.tmp.path().join("events")
    }
    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    /// The overrides file the settings page writes.
    pub fn overrides(&self) -> PathBuf {
        self.tmp.path().join("overrides.toml")
    }
    /// A log file for the next web-svc started over this tree.
    pub fn new_log(&self) -> PathBuf {
        testkit::service::fresh_log(self.tmp.path(), "web-svc")
    }
}

/// The real binary, on 127.0.0.1 with a port of its choosing; SIGTERM then SIGKILL on drop.
pub struct Web {
    svc: Option<Service>,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_web-svc")
}

/// Runs `web-svc set-password` with `password`.
pub fn set_password(dirs: &Dirs, password: &str) {
    let mut c = Command::new(bin())
        .args(["set-password", "--state-dir"])
        .arg(dirs.state())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(c.stdin.take().unwrap(), "{password}").unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "set-password: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `web-svc --print-setup-code` over `dirs`: its whole output, and the code it printed
/// (`None`: a password is set).
pub fn print_setup_code(dirs: &Dirs) -> (String, Option<String>) {
    let out = Command::new(bin())
        .arg("--config")
        .arg(dirs.tmp.path().join("mecam.toml"))
        .arg("--state-dir")
        .arg(dirs.state())
        .arg("--print-setup-code")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "--print-setup-code: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = mecam_system_tests::setup_code_in(&text);
    (text, code)
}

impl Web {
    /// Starts the service over `dirs` and waits until `/healthz` answers.
    pub fn start(dirs: &Dirs) -> Web {
        Web::start_with(dirs, |_| {})
    }

    /// [`Web::start`] as the user and group `uid`/`gid` (the test must run as root; std drops
    /// root's supplementary groups when it sets the uid).
    pub fn start_as(dirs: &Dirs, uid: u32, gid: u32) -> Web {
        use std::os::unix::process::CommandExt as _;
        Web::start_with(dirs, |c| {
            c.uid(uid).gid(gid);
        })
    }

    fn start_with(dirs: &Dirs, configure: impl FnOnce(&mut Command)) -> Web {
        let log = dirs.new_log();
        let mut cmd = Command::new(bin());
        configure(&mut cmd);
        cmd.arg("--config")
            .arg(dirs.tmp.path().join("mecam.toml"))
            .arg("--runtime-dir")
            .arg(dirs.run())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-target",
                "stderr",
                "--events-dir",
            ])
            .arg(dirs.events())
            .arg("--state-dir")
            .arg(dirs.state())
            .arg("--overrides-file")
            .arg(dirs.overrides())
            .arg("--preview-socket")
            .arg(dirs.run().join("preview.sock"))
            .env("NO_COLOR", "1");
        let mut svc = Service::start("web-svc", cmd, &log).unwrap();
        let addr = testkit::poll::until("web-svc's ready line", Duration::from_secs(30), || {
            let text = svc.log();
            if let Some(line) = text.lines().find(|l| l.contains("web-svc ready")) {
                let at = line.find("127.0.0.1:").unwrap();
                let port: String = line[at + 10..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let port = port.parse::<u16>().unwrap();
                return Ok(Some(SocketAddr::from(([127, 0, 0, 1], port))));
            }
            if let Ok(Some(st)) = svc.try_wait() {
                panic!("web-svc exited with {st}:\n{text}");
            }
            Ok(None)
        })
        .unwrap_or_else(|e| panic!("web-svc not ready: {e}:\n{}", svc.log()));
        let web = Web {
            svc: Some(svc),
            addr,
            log,
        };
        if dirs.tls {
            return web;
        }
        poll(Duration::from_secs(10), "healthz", || {
            mecam_system_tests::http::get(addr, "/healthz", None).is_ok_and(|r| r.status == 200)
        });
        web
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.svc.as_ref().unwrap().pid()
    }

    /// Everything logged so far (also after it stopped).
    pub fn log(&self) -> String {
        testkit::service::log_text(&self.log)
    }

    /// SIGTERM and wait (bounded, SIGKILL after); returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut svc) = self.svc.take() else {
            return false;
        };
        svc.stop(Duration::from_secs(10))
            .is_ok_and(|st| st.success())
    }

    /// Open file descriptors of the process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        testkit::procfs::status_kib(self.pid(), "VmRSS")
    }
}

/// Polls `f` until it is true; panics naming `what` after `timeout`.
pub fn poll(timeout: Duration, what: &str, f: impl FnMut() -> bool) {
    testkit::poll::wait(what, timeout, f);
}

/// A metric's value from `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `bytes` decode as a JPEG.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    zune_jpeg::JpegDecoder::new(bytes).decode().is_ok()
}

/// Reads `s` until the server closes it (EOF or reset) and returns the bytes read; panics
/// naming `what` if it stays open for 10 s without data, or sends more than 1 GiB.
pub fn drain_until_closed(s: &mut std::net::TcpStream, what: &str) -> usize {
    use std::io::Read as _;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("{what}: the socket was not closed by the server: {e}"),
        }
        assert!(
            total < 1 << 30,
            "{what}: endless data on a dropped connection"
        );
    }
}
