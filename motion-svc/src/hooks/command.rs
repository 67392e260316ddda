//! The hook command: `/bin/sh -c` in its own process group, killed with the group after its
//! timeout or when the hook is cut.

use std::time::Duration;

use super::HookError;

/// Runs `/bin/sh -c cmd` with `env`, killing it after `timeout`.
///
/// # Errors
/// [`HookError::Spawn`], [`HookError::Timeout`] or [`HookError::Failed`].
pub async fn run_command(
    cmd: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<(), HookError> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Its own process group, so a timeout ends everything the command started, not only
        // the shell (a `sleep` or `curl` left behind would pile up, one per event).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(HookError::Spawn)?;
    // Kills the whole group unless the shell exited: on a timeout, and when this future is
    // dropped (the hook cut at shutdown).
    let mut group = GroupKiller(child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32)));
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(result) => {
            group.0 = None;
            match result {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => Err(HookError::Failed(status)),
                Err(e) => Err(HookError::Spawn(e)),
            }
        }
        Err(_) => {
            drop(group);
            let _ = child.kill().await;
            Err(HookError::Timeout(timeout))
        }
    }
}

/// A hook command's process group, SIGKILLed on drop while it is set.
struct GroupKiller(Option<nix::unistd::Pid>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // The group may already be empty but for the shell: ESRCH is not an error here.
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
