//! Hooks: an optional command and an optional webhook run at event start and end.
//!
//! Each hook runs in its own tokio task, tracked by the service's `TaskTracker`;
//! [`Hooks::fire`] returns at once. At most [`MAX_HOOKS_IN_FLIGHT`] hooks run at a time; more
//! are skipped with a log line and counted, so a hook that hangs can never pile up tasks or
//! block detection. The command is killed after its timeout; the webhook gives up after a
//! bounded number of attempts. At shutdown (the service's `CancellationToken`) a running hook
//! gets [`HookConfig::shutdown_grace`] more to finish, then it is cut: the service drains the
//! tracker, so no hook is lost silently.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod command;
#[cfg(test)]
mod tests;
mod webhook;

pub use command::run_command;
pub use webhook::{HttpUrl, MAX_RESPONSE_BYTES, host_and_port, parse_http_url, post_with_retries};

use events::EventMeta;

/// Hook lines: a slow or failing webhook endpoint, or a busy scene, must not flood the
/// journal (one line per interval, then a count).
static HOOK_SKIPPED_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);
static HOOK_FAILED_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);

/// Pause before a webhook's first retry (it doubles each time).
pub const WEBHOOK_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// How long a hook still running at shutdown may go on before it is cut (within systemd's
/// `TimeoutStopSec=15s`, with room for the recorder to close its clip).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Hooks running at once, at most.
pub const MAX_HOOKS_IN_FLIGHT: usize = 4;
/// Start or end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// Event start.
    Start,
    /// Event end.
    End,
}

impl HookKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            HookKind::Start => "start",
            HookKind::End => "end",
        }
    }
}

/// Hook settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookConfig {
    /// Shell command.
    pub command: Option<String>,
    /// Command timeout.
    pub command_timeout: Duration,
    /// Webhook.
    pub webhook: Option<HttpUrl>,
    /// Attempts per delivery.
    pub attempts: u32,
    /// Timeout per attempt.
    pub attempt_timeout: Duration,
    /// Pause before the first retry (doubles each time).
    pub retry_backoff: Duration,
    /// At shutdown, how long a running hook may go on before it is cut.
    pub shutdown_grace: Duration,
}

/// Why a hook failed (logged, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The command could not be started.
    #[error("hook command could not start: {0}")]
    Spawn(std::io::Error),
    /// The command ran past its timeout and was killed.
    #[error("hook command ran over {0:?} and was killed")]
    Timeout(Duration),
    /// The command exited with a failure.
    #[error("hook command failed: {0}")]
    Failed(std::process::ExitStatus),
    /// Still running `shutdown_grace` after shutdown began: cut (a command is killed with its
    /// process group).
    #[error("still running {0:?} after shutdown began: cut")]
    Cut(Duration),
    /// The webhook could not be delivered.
    #[error("webhook gave up after {attempts} attempts: {last}")]
    Webhook {
        /// Attempts made.
        attempts: u32,
        /// Last error.
        last: String,
    },
}

/// Runs hooks without ever blocking the caller.
#[derive(Debug, Clone)]
pub struct Hooks {
    config: Arc<HookConfig>,
    slots: Arc<Semaphore>,
    skipped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Hooks {
    /// Hooks with this configuration; their tasks are spawned on `tasks` (the caller closes
    /// and waits for it at shutdown), and `shutdown` starts their grace time.
    pub fn new(config: HookConfig, tasks: TaskTracker, shutdown: CancellationToken) -> Hooks {
        Hooks {
            config: Arc::new(config),
            slots: Arc::new(Semaphore::new(MAX_HOOKS_IN_FLIGHT)),
            skipped: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            tasks,
            shutdown,
        }
    }

    /// Hooks skipped because [`MAX_HOOKS_IN_FLIGHT`] were already running.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Hooks that failed (timeout, exit status, undeliverable webhook).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Starts the configured hooks for `meta` in the background (must be called inside a
    /// tokio runtime). Returns at once.
    pub fn fire(&self, kind: HookKind, meta: &EventMeta, event_dir: &Path) {
        let json = serde_json::to_vec(meta).expect("EventMeta serialises");
        if let Some(cmd) = self.config.command.clone() {
            let env = env_for(kind, meta, event_dir, &json);
            self.spawn(kind, "command", move |cfg| async move {
                run_command(&cmd, &env, cfg.command_timeout).await
            });
        }
        if self.config.webhook.is_some() {
            self.spawn(kind, "webhook", move |cfg| async move {
                let url = cfg.webhook.as_ref().expect("checked");
                post_with_retries(
                    url,
                    kind,
                    &json,
                    cfg.attempts,
                    cfg.attempt_timeout,
                    cfg.retry_backoff,
                )
                .await
            });
        }
    }

    fn spawn<F, Fut>(&self, kind: HookKind, what: &'static str, f: F)
    where
        F: FnOnce(Arc<HookConfig>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), HookError>> + Send,
    {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = HOOK_SKIPPED_LOG.check() {
                tracing::warn!(
                    held_back,
                    "{what} hook for event {} skipped: {MAX_HOOKS_IN_FLIGHT} hooks still running",
                    kind.as_str()
                );
            }
            return;
        };
        let cfg = Arc::clone(&self.config);
        let failed = Arc::clone(&self.failed);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let grace = cfg.shutdown_grace;
            let cut = async {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            let result = tokio::select! {
                r = f(cfg) => r,
                () = cut => Err(HookError::Cut(grace)),
            };
            if let Err(e) = result {
                failed.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = HOOK_FAILED_LOG.check() {
                    tracing::warn!(held_back, "{what} hook ({}): {e}", kind.as_str());
                }
            }
            drop(permit);
        });
    }
}

fn env_for(kind: HookKind, meta: &EventMeta, dir: &Path, json: &[u8]) -> Vec<(String, String)> {
    let clip = meta
        .clip
        .as_ref()
        .map(|c| dir.join(c).display().to_string())
        .unwrap_or_default();
    vec![
        ("MECAM_EVENT_KIND".into(), kind.as_str().into()),
        ("MECAM_EVENT_ID".into(), meta.id.clone()),
        ("MECAM_EVENT_DIR".into(), dir.display().to_string()),
        ("MECAM_SCORE".into(), format!("{:.2}", meta.peak_score)),
        (
            "MECAM_AREA_PCT".into(),
            format!("{:.2}", meta.peak_area_pct),
        ),
        (
            "MECAM_BOXES".into(),
            serde_json::to_string(&meta.boxes).expect("boxes serialise"),
        ),
        ("MECAM_CLIP".into(), clip),
        (
            "MECAM_END_REASON".into(),
            meta.end_reason.map(|r| r.as_str()).unwrap_or("").into(),
        ),
        (
            "MECAM_EVENT_JSON".into(),
            String::from_utf8_lossy(json).into_owned(),
        ),
    ]
}
