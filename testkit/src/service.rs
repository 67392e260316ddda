//! One service process started directly (no systemd): its stdout and stderr go to a log file
//! the test reads while it runs, it is stopped with SIGTERM on request and SIGKILLed on drop,
//! and its log is printed when the test that owns it fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::poll;

/// A running service process, killed on drop.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Start `bin` with `args`, its stdout and stderr appended to `log_dir/<name>.log`, without
    /// the journal's or systemd's notify socket of the test's own environment.
    ///
    /// # Errors
    /// The binary cannot be spawned or the log file cannot be created.
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> anyhow::Result<Service> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("RUST_BACKTRACE", "1")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET");
        Service::start(name, cmd, &log_dir.join(format!("{name}.log")))
    }

    /// Start `cmd` as it is (arguments, environment, user), with stdin closed and its stdout
    /// and stderr appended to `log`.
    ///
    /// # Errors
    /// The command cannot be spawned or the log file cannot be created.
    pub fn start(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Service> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawning {:?}: {e}", cmd.get_program()))?;
        Ok(Service {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process printed so far, without terminal colour codes.
    pub fn log(&self) -> String {
        log_text(&self.log)
    }

    /// Wait until the log contains `needle`.
    ///
    /// # Errors
    /// `timeout` passed first; the error names the needle.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        poll::until_true(
            &format!("{needle:?} in {}'s log", self.name),
            timeout,
            || self.log().contains(needle),
        )
    }

    /// `Some(status)` once the process has exited.
    ///
    /// # Errors
    /// `waitpid` failed.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Send `signal` to the process.
    ///
    /// # Errors
    /// The process is gone.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(i32::try_from(self.pid())?), signal)?;
        Ok(())
    }

    /// SIGTERM, then wait up to `timeout` for the exit status (SIGKILL after that, and an error).
    ///
    /// # Errors
    /// The process did not exit within `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        let child = &mut self.child;
        let res = poll::until(
            &format!("{} to exit after SIGTERM", self.name),
            timeout,
            || child.try_wait().map_err(|e| e.to_string()),
        );
        match res {
            Ok(status) => Ok(status),
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(e)
            }
        }
    }

    /// SIGKILL, and wait for the exit status.
    ///
    /// # Errors
    /// `kill` or `waitpid` failed.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// Fail unless the process is still running, with its log in the message.
    ///
    /// # Errors
    /// The process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                anyhow::bail!("{} exited ({status}); its log:\n{}", self.name, self.log())
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}",
                self.name,
                self.log.display(),
                self.log()
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Most services one test starts over one directory (each with its own log file).
pub const STARTS_PER_DIR: usize = 100;

/// `dir/{stem}-{n}.log` for the first `n` not taken yet: a fresh log file for each start of a
/// service over the same directory.
///
/// # Panics
/// [`STARTS_PER_DIR`] log files are there already.
pub fn fresh_log(dir: &Path, stem: &str) -> PathBuf {
    (1..=STARTS_PER_DIR)
        .map(|n| dir.join(format!("{stem}-{n}.log")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| panic!("more than {STARTS_PER_DIR} starts over {}", dir.display()))
}

/// A command that runs `bin` with `WATCHDOG_PID` set to `bin`'s own pid, as systemd sets it:
/// through a shell that sets it to its own pid and then execs `bin`. Add arguments as usual.
pub fn with_own_watchdog_pid(bin: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(bin);
    cmd
}

/// A log file's text without terminal colour codes (empty while the file does not exist).
pub fn log_text(path: &Path) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
