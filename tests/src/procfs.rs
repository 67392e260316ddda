//! Resident memory, open file descriptors and threads of a process, read from `/proc`.

use std::path::{Path, PathBuf};

/// One sample of a process's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    /// Resident set size in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Open file descriptors (entries of `fd/`).
    pub fds: usize,
    /// Threads (`Threads`).
    pub threads: usize,
}

impl ProcStats {
    /// Read the stats of `pid` from the host's `/proc`.
    ///
    /// # Errors
    /// The process is gone or `/proc` is unreadable.
    pub fn of(pid: u32) -> anyhow::Result<ProcStats> {
        ProcStats::read(&PathBuf::from(format!("/proc/{pid}")))
    }

    /// Read the stats from a `/proc/<pid>` directory (possibly another pid namespace's
    /// procfs, reached through `/proc/<leader>/root/proc/<pid>`).
    ///
    /// # Errors
    /// The process is gone or the directory is unreadable.
    pub fn read(dir: &Path) -> anyhow::Result<ProcStats> {
        let status = std::fs::read_to_string(dir.join("status"))
            .map_err(|e| anyhow::anyhow!("reading {}/status: {e}", dir.display()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("no {name} in {}/status", dir.display()))
        };
        let fds = std::fs::read_dir(dir.join("fd"))
            .map_err(|e| anyhow::anyhow!("reading {}/fd: {e}", dir.display()))?
            .count();
        Ok(ProcStats {
            rss_kib: field("VmRSS:")?,
            fds,
            threads: usize::try_from(field("Threads:")?)?,
        })
    }
}
