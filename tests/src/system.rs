//! The three services started directly, side by side, in their own temporary directories:
//! what the demo runs and what tests that need no systemd use.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::service::Service;
use crate::{bins, http, poll};

/// How long a service gets to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service gets to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Port `web-svc` listens on at 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Admin password to set; empty picks a random one.
    pub password: String,
    /// Contents of the TOML config file all three read (empty sections when `None`).
    /// `{dir}` is replaced by the system's temporary directory.
    pub config: Option<String>,
    /// More files to write into the temporary directory first: `(name, contents)`.
    pub files: Vec<(String, String)>,
    /// Extra flags for `capture-svc` (after `--source synthetic`, which is left out when these
    /// have a `--source` of their own).
    pub capture_args: Vec<String>,
    /// Extra flags for `motion-svc`.
    pub motion_args: Vec<String>,
    /// Extra flags for `web-svc`.
    pub web_args: Vec<String>,
    /// Parent of the temporary directory (the system default when `None`).
    pub temp_parent: Option<PathBuf>,
    /// Give each service its own notify socket (`NOTIFY_SOCKET`) and keep its latest
    /// `STATUS=` line ([`LocalSystem::status`]): the counters and live heap it reports.
    pub notify: bool,
}

/// A running mecam: capture on the synthetic camera, motion, web on loopback.
#[derive(Debug)]
pub struct LocalSystem {
    /// `capture-svc`.
    pub capture: Service,
    /// `motion-svc`.
    pub motion: Service,
    /// `web-svc`.
    pub web: Service,
    /// Where `web-svc` listens.
    pub addr: SocketAddr,
    /// The admin password.
    pub password: String,
    opts: Options,
    /// With [`Options::notify`]: each service's latest STATUS line, in [`bins::SERVICES`] order.
    statuses: Vec<testkit::notify::StatusWatch>,
    dir: tempfile::TempDir,
}

/// A port on 127.0.0.1 that was free a moment ago.
///
/// # Errors
/// Binding port 0 failed.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalSystem {
    /// Make the directories, set the password, start the three services and wait until each
    /// is ready.
    ///
    /// # Errors
    /// A binary is missing, or a service failed to start or become ready (its log is in the
    /// error).
    pub fn start(mut opts: Options) -> anyhow::Result<LocalSystem> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("mecam-");
        let dir = match &opts.temp_parent {
            Some(p) => builder.tempdir_in(p)?,
            None => builder.tempdir()?,
        };
        for sub in ["run", "events", "web", "logs"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        for (name, text) in &opts.files {
            std::fs::write(dir.path().join(name), text)?;
        }
        let config = opts
            .config
            .clone()
            .unwrap_or_else(|| "[capture]\n[motion]\n[web]\n".into())
            .replace("{dir}", &path_str(dir.path()));
        std::fs::write(dir.path().join("mecam.toml"), config)?;
        if opts.password.is_empty() {
            opts.password = crate::random_password();
        }
        if opts.port == 0 {
            opts.port = free_port()?;
        }
        set_password(
            &bins::bin("web-svc")?,
            &dir.path().join("web"),
            &opts.password,
        )?;

        let addr: SocketAddr = ([127, 0, 0, 1], opts.port).into();
        let statuses = if opts.notify {
            bins::SERVICES
                .iter()
                .map(|n| {
                    testkit::notify::NotifySocket::bind(&notify_path(dir.path(), n)).watch_status()
                })
                .collect()
        } else {
            Vec::new()
        };
        let [capture, motion, web] =
            bins::SERVICES.map(|name| spawn_service(name, dir.path(), &opts, addr));
        let password = opts.password.clone();
        let mut sys = LocalSystem {
            capture: capture?,
            motion: motion?,
            web: web?,
            addr,
            password,
            opts,
            statuses,
            dir,
        };
        sys.wait_ready()?;
        Ok(sys)
    }

    /// The runtime directory (region and announce socket).
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The events directory.
    pub fn events_dir(&self) -> PathBuf {
        self.dir.path().join("events")
    }

    /// The overrides file (the settings page writes it, motion-svc reads it).
    pub fn overrides_file(&self) -> PathBuf {
        self.dir.path().join("overrides.toml")
    }

    /// `web-svc`'s state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("web")
    }

    /// The login page URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Wait until all three are ready: the announce socket accepts, `motion-svc` logged its
    /// ready line, `GET /healthz` answers 200.
    ///
    /// # Errors
    /// A service exited or was not ready within [`READY_TIMEOUT`].
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let sock = self.runtime_dir().join("capture.sock");
        let capture = &mut self.capture;
        poll::until("capture-svc's announce socket", READY_TIMEOUT, || {
            capture.check_alive().map_err(|e| e.to_string())?;
            Ok(UnixStream::connect(&sock).is_ok().then_some(()))
        })?;
        let motion = &mut self.motion;
        poll::until("motion-svc's ready line", READY_TIMEOUT, || {
            motion.check_alive().map_err(|e| e.to_string())?;
            Ok(motion.log().contains("ready").then_some(()))
        })?;
        let (web, addr) = (&mut self.web, self.addr);
        poll::until("web-svc's /healthz", READY_TIMEOUT, || {
            web.check_alive().map_err(|e| e.to_string())?;
            Ok(http::get(addr, "/healthz", None)
                .is_ok_and(|r| r.status == 200)
                .then_some(()))
        })?;
        Ok(())
    }

    /// Start `capture-svc` again (after it was killed), and wait until its socket accepts.
    ///
    /// # Errors
    /// It failed to start or become ready.
    pub fn restart_capture(&mut self) -> anyhow::Result<()> {
        let _ = self.capture.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.capture.stop(STOP_TIMEOUT);
        self.capture = spawn_service("capture-svc", self.dir.path(), &self.opts, self.addr)?;
        let sock = self.runtime_dir().join("capture.sock");
        let capture = &mut self.capture;
        poll::until(
            "capture-svc's announce socket after restart",
            READY_TIMEOUT,
            || {
                capture.check_alive().map_err(|e| e.to_string())?;
                Ok(UnixStream::connect(&sock).is_ok().then_some(()))
            },
        )
    }

    /// The latest `STATUS=` line `service` sent (empty before its first), with
    /// [`Options::notify`]; `None` without.
    pub fn status(&self, service: &str) -> Option<String> {
        let i = bins::SERVICES.iter().position(|n| *n == service)?;
        self.statuses
            .get(i)
            .map(testkit::notify::StatusWatch::latest)
    }

    /// Stops `service` with `signal` (SIGKILL, or SIGTERM and a wait for its exit), starts it
    /// again and waits until it is ready as [`LocalSystem::wait_ready`] does: the others are
    /// left to notice on their own. Returns how it exited.
    ///
    /// # Errors
    /// It did not exit, or failed to start or become ready again.
    pub fn restart(
        &mut self,
        service: &str,
        signal: nix::sys::signal::Signal,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let (dir, addr) = (self.dir.path().to_owned(), self.addr);
        let svc = match service {
            "capture-svc" => &mut self.capture,
            "motion-svc" => &mut self.motion,
            "web-svc" => &mut self.web,
            other => anyhow::bail!("no service {other:?}"),
        };
        // motion-svc's log is appended across restarts: its new ready line is one more.
        let readies = if service == "motion-svc" {
            svc.log().matches("motion-svc ready").count()
        } else {
            0
        };
        if signal != nix::sys::signal::Signal::SIGTERM {
            svc.signal(signal)?;
        }
        let status = svc.stop(STOP_TIMEOUT)?;
        *svc = spawn_service(service, &dir, &self.opts, addr)?;
        let sock = self.runtime_dir().join("capture.sock");
        let svc = match service {
            "capture-svc" => &mut self.capture,
            "motion-svc" => &mut self.motion,
            _ => &mut self.web,
        };
        poll::until(
            &format!("{service} ready after a restart"),
            READY_TIMEOUT,
            || {
                svc.check_alive().map_err(|e| e.to_string())?;
                Ok(match service {
                    "capture-svc" => UnixStream::connect(&sock).is_ok(),
                    "motion-svc" => svc.log().matches("motion-svc ready").count() > readies,
                    _ => http::get(addr, "/healthz", None).is_ok_and(|r| r.status == 200),
                }
                .then_some(()))
            },
        )?;
        Ok(status)
    }

    /// SIGTERM all three (web, motion, capture), check each exits cleanly, remove the
    /// directories.
    ///
    /// # Errors
    /// A service did not exit, or exited with a failure status (logs in the error).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        for svc in [&mut self.web, &mut self.motion, &mut self.capture] {
            match svc.stop(STOP_TIMEOUT) {
                Ok(status) if status.success() => {}
                Ok(status) => failures.push(format!(
                    "{} exited with {status}:\n{}",
                    svc.name(),
                    svc.log()
                )),
                Err(e) => failures.push(format!("{e}:\n{}", svc.log())),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(failures.join("\n"))
        }
    }
}

/// Run `web-svc set-password --state-dir DIR` with `password` on stdin.
///
/// # Errors
/// The command failed (its output is in the error).
pub fn set_password(web_svc: &Path, state_dir: &Path, password: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(web_svc)
        .args(["set-password", "--state-dir"])
        .arg(state_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("spawning web-svc set-password")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "web-svc set-password failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Where `service`'s notify socket is, with [`Options::notify`].
fn notify_path(dir: &Path, service: &str) -> PathBuf {
    dir.join("run").join(format!("notify-{service}.sock"))
}

/// Starts one of the three with its flags (capture on the synthetic camera unless
/// `opts.capture_args` has a `--source`), logging to `logs/<name>.log` (appended across
/// restarts).
fn spawn_service(
    name: &str,
    dir: &Path,
    opts: &Options,
    addr: SocketAddr,
) -> anyhow::Result<Service> {
    let events = path_str(&dir.join("events"));
    // The settings page's overrides file and motion-svc's preview socket, shared by both.
    let tuning = [
        "--overrides-file".into(),
        path_str(&dir.join("overrides.toml")),
        "--preview-socket".into(),
        path_str(&dir.join("run").join("preview.sock")),
    ];
    let (mut own, extra): (Vec<String>, &[String]) = match name {
        // The synthetic camera, unless the caller's flags choose the source.
        "capture-svc" if opts.capture_args.iter().any(|a| a == "--source") => {
            (Vec::new(), &opts.capture_args)
        }
        "capture-svc" => (
            vec!["--source".into(), "synthetic".into()],
            &opts.capture_args,
        ),
        "motion-svc" => (vec!["--events-dir".into(), events], &opts.motion_args),
        _ => (
            vec![
                "--listen".into(),
                addr.to_string(),
                "--events-dir".into(),
                events,
                "--state-dir".into(),
                path_str(&dir.join("web")),
            ],
            &opts.web_args,
        ),
    };
    if name != "capture-svc" {
        own.extend(tuning);
    }
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    let args = args(dir, &own, extra);
    let logs = dir.join("logs");
    if !opts.notify {
        return Service::spawn(name, &bins::bin(name)?, &args, &logs);
    }
    let mut cmd = std::process::Command::new(bins::bin(name)?);
    cmd.args(&args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("JOURNAL_STREAM")
        .env("NOTIFY_SOCKET", notify_path(dir, name));
    Service::start(name, cmd, &logs.join(format!("{name}.log")))
}

fn args(dir: &Path, own: &[&str], extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--config".into(),
        path_str(&dir.join("mecam.toml")),
        "--runtime-dir".into(),
        path_str(&dir.join("run")),
        "--log-target".into(),
        "stderr".into(),
    ];
    v.extend(own.iter().map(|s| (*s).to_owned()));
    v.extend(extra.iter().cloned());
    v
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
