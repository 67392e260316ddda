//! One service process started directly (no systemd): its output goes to a log file, it is
//! stopped with SIGTERM on request and SIGKILLed on drop, and its log is printed when the
//! test that owns it fails.

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
    /// Start `bin` with `args`, its stdout and stderr appended to `log_dir/<name>.log`.
    ///
    /// # Errors
    /// The binary cannot be spawned or the log file cannot be created.
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> anyhow::Result<Service> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::options().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawning {}: {e}", bin.display()))?;
        Ok(Service {
            name: name.to_owned(),
            child,
            log,
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

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
