//! Camera processes: spawned in their own process group, tied to `capture-svc`'s life, stopped
//! as a group, always reaped, with the last lines of their stderr kept (bounded) for the log.
//!
//! Dying with `capture-svc` even on SIGKILL needs `PR_SET_PDEATHSIG` in the child, which would
//! take an unsafe `pre_exec`. Instead the child is started through `capture-svc` itself
//! ([`SHIM_ARG`]): the shim sets the death signal (a safe `nix` call on itself), checks that
//! its parent is still the one that spawned it (closing the race with a parent that died
//! before `prctl`), and `exec`s the camera program, which keeps the death signal and the pid.
//! The death signal fires when the spawning *thread* exits, so the service spawns children
//! from its main thread (a current-thread runtime).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, ChildStdout, Command};

/// The first argument that makes the `capture-svc` binary act as the exec shim.
pub const SHIM_ARG: &str = "__mecam-supervised-exec";
/// What the pipe from a camera process to capture-svc is asked to hold: a whole frame of any
/// camera (1 MiB, the unprivileged `pipe-max-size` default).
pub const PIPE_SIZE: i32 = 1 << 20;
/// Lines of a child's stderr kept for the log.
pub const STDERR_LINES: usize = 8;
/// Longest stderr line kept (longer ones are cut).
pub const STDERR_LINE_MAX: usize = 240;
/// Time a child has to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The shim: called by `main` when `args[1] == SHIM_ARG`; never returns on success.
/// `args` are what follows `SHIM_ARG`: the parent's pid, the program, its arguments.
pub fn shim_main(args: Vec<OsString>) -> ! {
    use std::os::unix::process::CommandExt as _;
    let mut it = args.into_iter();
    let parent: Option<i32> = it.next().and_then(|p| p.to_str()?.parse().ok());
    let Some(program) = it.next() else {
        eprintln!("capture-svc shim: usage: {SHIM_ARG} PARENT_PID PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("capture-svc shim: cannot set the parent-death signal: {e}");
        std::process::exit(2);
    }
    if parent != Some(nix::unistd::getppid().as_raw()) {
        // The parent died before the death signal was armed.
        std::process::exit(2);
    }
    let err = std::process::Command::new(&program).args(it).exec();
    eprintln!(
        "capture-svc: cannot start {}: {err}",
        PathBuf::from(&program).display()
    );
    std::process::exit(127);
}

/// The last lines a child wrote to stderr, bounded in count and length.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    pub(crate) fn push(&self, line: &[u8]) {
        let line = &line[..line.len().min(STDERR_LINE_MAX)];
        let text = String::from_utf8_lossy(line).trim_end().to_owned();
        if text.is_empty() {
            return;
        }
        let mut q = self.0.lock().expect("stderr tail lock");
        if q.len() == STDERR_LINES {
            q.pop_front();
        }
        q.push_back(text);
    }

    /// The kept lines joined with " | " (empty when none).
    pub fn joined(&self) -> String {
        let q = self.0.lock().expect("stderr tail lock");
        q.iter().map(String::as_str).collect::<Vec<_>>().join(" | ")
    }

    /// Number of lines kept now.
    pub fn len(&self) -> usize {
        self.0.lock().expect("stderr tail lock").len()
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A running camera process.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    pgid: Pid,
    stderr: StderrTail,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    /// Name for logs.
    pub name: String,
}

/// How to start a camera process.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// The `capture-svc` binary to use as the exec shim; `None` = no death signal (process
    /// group only), for library users that are not the `capture-svc` binary.
    pub shim: Option<PathBuf>,
}

impl Supervised {
    /// Starts the process with stdout piped (the frames), stderr collected, stdin null.
    ///
    /// # Errors
    /// The program cannot be started.
    pub fn spawn(spec: &Spawn) -> std::io::Result<(Supervised, ChildStdout)> {
        let (first, rest) = spec
            .argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty command"))?;
        let mut cmd = match &spec.shim {
            Some(shim) => {
                let mut c = Command::new(shim);
                c.arg(SHIM_ARG)
                    .arg(std::process::id().to_string())
                    .arg(first);
                c
            }
            None => Command::new(first),
        };
        cmd.args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("child has no pid"))?;
        let stdout = child.stdout.take().expect("stdout piped");
        // Room for a whole frame in the pipe, so the camera writes it at once and it is read
        // with one read(2) (with the default 64 KiB a 90 KB frame takes two of each, and two
        // wakes). The kernel allocates pipe pages only for the bytes in flight. Refused above
        // /proc/sys/fs/pipe-max-size: the default size works, only with more wakes.
        if let Err(e) = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
            tracing::debug!(error = %e, size = PIPE_SIZE, "cannot enlarge the camera pipe; keeping the kernel's default");
        }
        let stderr = StderrTail::default();
        let stderr_task = child.stderr.take().map(|mut err| {
            let tail = stderr.clone();
            tokio::spawn(async move {
                // Fixed buffer: a child flooding stderr without newlines costs nothing more.
                let mut buf = vec![0u8; 4096];
                let mut filled = 0;
                loop {
                    match err.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => filled += n,
                    }
                    let mut start = 0;
                    while let Some(i) = buf[start..filled].iter().position(|b| *b == b'\n') {
                        tail.push(&buf[start..start + i]);
                        start += i + 1;
                    }
                    if start == 0 && filled == buf.len() {
                        tail.push(&buf[..filled]);
                        start = filled;
                    }
                    buf.copy_within(start..filled, 0);
                    filled -= start;
                }
                if filled > 0 {
                    tail.push(&buf[..filled]);
                }
            })
        });
        let name = PathBuf::from(first).display().to_string();
        Ok((
            Supervised {
                child,
                pgid: Pid::from_raw(pid as i32),
                stderr,
                stderr_task,
                name,
            },
            stdout,
        ))
    }

    /// The process (and group) id.
    pub fn pid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Its stderr tail.
    pub fn stderr(&self) -> &StderrTail {
        &self.stderr
    }

    /// Whether it has exited (reaping it if so).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the whole group: SIGTERM, then SIGKILL after [`STOP_GRACE`]; reaps the child and
    /// returns how it ended. Waits briefly for the stderr reader so the tail is complete.
    pub async fn stop(mut self) -> Option<ExitStatus> {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => Some(s),
            _ => {
                let _ = killpg(self.pgid, Signal::SIGTERM);
                match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
                    Ok(r) => r.ok(),
                    Err(_) => {
                        let _ = killpg(self.pgid, Signal::SIGKILL);
                        self.child.wait().await.ok()
                    }
                }
            }
        };
        // Anything else left in the group (a grandchild) goes too.
        let _ = killpg(self.pgid, Signal::SIGKILL);
        // The stderr reader ends at the pipe's EOF; one still held open (a grandchild that
        // escaped the group) is aborted, so no task outlives its camera process.
        if let Some(mut task) = self.stderr_task.take() {
            if tokio::time::timeout(Duration::from_millis(500), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        status
    }
}

/// Finds `program` on `PATH` (or checks it as a path when it contains a `/`).
pub fn find_program(program: &str) -> Option<PathBuf> {
    find_program_in(program, std::env::var_os("PATH").as_deref())
}

/// Finds `program` in the directories of `search_path` (a `PATH`-style list), or checks it as
/// a path when it contains a `/`. Tests pass their own list instead of changing `PATH`.
pub fn find_program_in(program: &str, search_path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(search_path?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_is_bounded() {
        let t = StderrTail::default();
        for i in 0..100 {
            t.push(format!("line {i} {}", "x".repeat(1000)).as_bytes());
        }
        assert_eq!(t.len(), STDERR_LINES);
        let j = t.joined();
        assert!(j.contains("line 99"));
        assert!(!j.contains("line 91 "));
        assert!(j.len() <= STDERR_LINES * (STDERR_LINE_MAX + 3));
    }

    #[tokio::test]
    async fn a_whole_large_frame_fits_in_the_camera_pipe_while_nobody_reads() {
        // 900 KB written at once, as a camera writes a frame: with the kernel's default 64 KiB
        // pipe the writer would block until capture-svc read it in pieces.
        let spec = Spawn {
            argv: [
                "sh",
                "-c",
                "head -c 900000 /dev/zero; echo written >&2; exec sleep 30",
            ]
            .iter()
            .map(OsString::from)
            .collect(),
            shim: None,
        };
        let (child, out) = Supervised::spawn(&spec).unwrap();
        let size = nix::fcntl::fcntl(&out, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
        assert!(size >= PIPE_SIZE, "pipe holds {size} bytes");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !child.stderr().joined().contains("written") && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tail = child.stderr().joined();
        child.stop().await;
        assert!(
            tail.contains("written"),
            "the frame did not fit in the pipe: {tail:?}"
        );
    }

    #[tokio::test]
    async fn child_is_stopped_and_reaped_with_its_stderr() {
        let spec = Spawn {
            argv: [
                "sh",
                "-c",
                "echo starting >&2; echo 'bad thing' >&2; exec sleep 30",
            ]
            .iter()
            .map(OsString::from)
            .collect(),
            shim: None,
        };
        let (child, _out) = Supervised::spawn(&spec).unwrap();
        let pid = child.pid();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while child.stderr().len() < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tail = child.stderr().clone();
        let status = child.stop().await.expect("reaped");
        assert!(!status.success());
        assert!(tail.joined().contains("bad thing"), "{}", tail.joined());
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "reaped, not a zombie"
        );
    }
}
