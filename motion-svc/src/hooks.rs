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

use hyper::Uri;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::EventMeta;

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
/// Bytes of a webhook response head that are read at most (hyper's smallest read buffer): a
/// longer head is an error. The response body is never read.
pub const MAX_RESPONSE_BYTES: usize = 8192;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address to connect to (an IPv6 address without its brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The `Host` header: the URL's authority as written.
    pub authority: String,
}

/// Parses `http://host[:port][/path]` with `http::Uri` (IPv6 literals included:
/// `http://[::1]:8123/hook`).
///
/// # Errors
/// A message saying what is wrong (https is not supported: put a local proxy in front).
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?}: {e}; expected http://host[:port]/path"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{url:?}: only http:// URLs are supported (use a local proxy for https)"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?}: no host; expected http://host[:port]/path"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?}: user names in the URL are not supported; expected http://host[:port]/path"
        ));
    }
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let has_port = authority.as_str().len() > authority.host().len();
    if has_port && authority.port_u16().is_none() {
        return Err(format!(
            "{url:?}: bad port; expected http://host[:port]/path"
        ));
    }
    Ok(HttpUrl {
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(80),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        authority: authority.as_str().to_string(),
    })
}

/// Start or end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// Event start.
    Start,
    /// Event end.
    End,
}

impl HookKind {
    fn as_str(self) -> &'static str {
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

/// One POST with hyper's HTTP/1 client over a fresh connection; the status code.
async fn post_once(url: &HttpUrl, kind: HookKind, body: &[u8]) -> Result<u16, String> {
    use hyper::header;
    let stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_BYTES)
        .handshake::<_, String>(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let body = String::from_utf8(body.to_vec()).map_err(|e| format!("body: {e}"))?;
    let req = hyper::Request::post(url.path.as_str())
        .header(header::HOST, url.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "mecam-motion-svc")
        .header(header::CONNECTION, "close")
        .header("x-mecam-event", kind.as_str())
        .body(body)
        .map_err(|e| format!("request: {e}"))?;
    // The connection is driven here, not in a task of its own: when the caller's timeout
    // drops this future, the socket goes with it.
    tokio::pin!(conn);
    let response = sender.send_request(req);
    tokio::pin!(response);
    let response = tokio::select! {
        biased;
        r = &mut response => r,
        c = &mut conn => match c {
            // The connection is done (the server closed it): the response, if any, is there.
            Ok(()) => response.await,
            Err(e) => return Err(format!("receive: {e}")),
        },
    }
    .map_err(|e| format!("send: {e}"))?;
    // The body is never read: the status is all a hook needs.
    Ok(response.status().as_u16())
}

/// POSTs `body` to `url`, retrying failures up to `attempts` times in all.
///
/// # Errors
/// [`HookError::Webhook`] with the last failure.
pub async fn post_with_retries(
    url: &HttpUrl,
    kind: HookKind,
    body: &[u8],
    attempts: u32,
    timeout: Duration,
    backoff: Duration,
) -> Result<(), HookError> {
    let mut last = String::new();
    let mut pause = backoff;
    for attempt in 1..=attempts.max(1) {
        match tokio::time::timeout(timeout, post_once(url, kind, body)).await {
            Ok(Ok(code)) if (200..300).contains(&code) => return Ok(()),
            Ok(Ok(code)) => last = format!("HTTP status {code}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {timeout:?}"),
        }
        if attempt < attempts {
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2);
        }
    }
    Err(HookError::Webhook {
        attempts: attempts.max(1),
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn meta() -> EventMeta {
        EventMeta {
            peak_score: 3.5,
            peak_area_pct: 2.25,
            boxes: vec![[0.1, 0.2, 0.3, 0.4]],
            clip: Some("clip.avi".into()),
            ..EventMeta::new("20261124T182900Z-0001".into(), 1, 640, 480)
        }
    }

    #[test]
    fn ipv6_and_other_valid_urls_parse() {
        let u = parse_http_url("http://[::1]/hook").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 80, "/hook")
        );
        let u = parse_http_url("http://[::1]:8123/api/webhook/x?y=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8123, "/api/webhook/x?y=1")
        );
        assert!(parse_http_url("http://[::1/").is_err());
        assert!(parse_http_url("http://h/a b").is_err());
    }

    #[tokio::test]
    async fn webhook_delivers_to_an_ipv6_loopback_address() {
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&req).contains("}") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        let url = parse_http_url(&format!("http://[::1]:{port}/hook")).unwrap();
        post_with_retries(
            &url,
            HookKind::End,
            b"{\"id\":1}",
            1,
            Duration::from_secs(5),
            Duration::from_millis(10),
        )
        .await
        .unwrap();
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /hook HTTP/1.1\r\n"), "{req}");
        assert!(
            req.to_ascii_lowercase()
                .contains(&format!("host: [::1]:{port}\r\n")),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase().contains("x-mecam-event: end"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn a_response_head_over_the_bound_is_an_error_not_a_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nX-Pad: ").await;
            // An endless header: the client must give up at its bound.
            let pad = vec![b'a'; 64 * 1024];
            for _ in 0..1024 {
                if s.write_all(&pad).await.is_err() {
                    break;
                }
            }
        });
        let url = parse_http_url(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = post_with_retries(
            &url,
            HookKind::End,
            b"{}",
            1,
            Duration::from_secs(20),
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
        assert!(!e.to_string().contains("no answer within"), "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/hook?x=1").unwrap(),
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/hook?x=1".into(),
                authority: "127.0.0.1:8080".into(),
            }
        );
        assert_eq!(parse_http_url("http://example.org").unwrap().port, 80);
        assert!(parse_http_url("https://example.org/").is_err());
        assert!(parse_http_url("http://:80/").is_err());
        assert!(parse_http_url("http://h:99999/").is_err());
        assert!(parse_http_url("http://u@h/").is_err());
    }

    async fn wait_for(path: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = std::fs::read_to_string(path) {
                if s.ends_with('\n') {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "hook never wrote {}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn command_gets_event_data_in_its_environment() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let hooks = Hooks::new(
            HookConfig {
                command: Some(format!(
                    "echo \"$MECAM_EVENT_KIND $MECAM_EVENT_ID $MECAM_AREA_PCT $MECAM_CLIP\" > {}",
                    out.display()
                )),
                command_timeout: Duration::from_secs(5),
                ..HookConfig::default()
            },
            TaskTracker::new(),
            CancellationToken::new(),
        );
        hooks.fire(HookKind::Start, &meta(), d.path());
        let text = wait_for(&out).await;
        assert_eq!(
            text.trim(),
            format!(
                "start 20261124T182900Z-0001 2.25 {}/clip.avi",
                d.path().display()
            )
        );
    }

    #[tokio::test]
    async fn a_timed_out_command_takes_everything_it_started_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let result = run_command(&cmd, &[], Duration::from_millis(300)).await;
        assert!(matches!(result, Err(HookError::Timeout(_))), "{result:?}");
        assert_gone(&pidfile).await;
    }

    /// Waits until the process whose pid is in `pidfile` is gone (or a zombie): SIGKILLed
    /// with its group, it is re-parented and reaped once its parent (the shell) is. Polls with
    /// a deadline rather than guess a sleep.
    async fn assert_gone(pidfile: &Path) {
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while nix::sys::signal::kill(pid, None).is_ok() {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true);
            if zombie {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the hook's process {pid} outlived its hook"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_and_hooks_in_flight_are_bounded() {
        assert!(matches!(
            run_command("sleep 30", &[], Duration::from_millis(100)).await,
            Err(HookError::Timeout(_))
        ));
        assert!(matches!(
            run_command("exit 3", &[], Duration::from_secs(5)).await,
            Err(HookError::Failed(_))
        ));
        let hooks = Hooks::new(
            HookConfig {
                command: Some("sleep 30".into()),
                command_timeout: Duration::from_secs(60),
                ..HookConfig::default()
            },
            TaskTracker::new(),
            CancellationToken::new(),
        );
        for _ in 0..MAX_HOOKS_IN_FLIGHT + 3 {
            hooks.fire(HookKind::End, &meta(), Path::new("/tmp"));
        }
        assert_eq!(hooks.skipped(), 3);
    }

    #[tokio::test]
    async fn at_shutdown_a_running_hook_is_drained_or_cut_at_its_grace_with_its_group() {
        let d = tempfile::tempdir().unwrap();
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let cmd = |name: &str, pause: &str| {
            let out = d.path().join(name);
            let cmd = format!(
                "sleep {pause} & echo $! > {o}.pid; wait; echo done > {o}",
                o = out.display()
            );
            (out, cmd)
        };
        let hooks = |command: String| {
            Hooks::new(
                HookConfig {
                    command: Some(command),
                    command_timeout: Duration::from_secs(60),
                    shutdown_grace: Duration::from_secs(5),
                    ..HookConfig::default()
                },
                tasks.clone(),
                shutdown.clone(),
            )
        };
        let (quick, quick_cmd) = cmd("quick", "1");
        let (slow, slow_cmd) = cmd("slow", "30");
        let slow_hooks = hooks(slow_cmd);
        hooks(quick_cmd).fire(HookKind::End, &meta(), d.path());
        slow_hooks.fire(HookKind::End, &meta(), d.path());
        let started = Instant::now();
        while !(quick.with_extension("pid").exists() && slow.with_extension("pid").exists()) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "hooks never ran"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!quick.exists(), "the quick hook was done before shutdown");
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        println!("drained in {:?}", started.elapsed());
        assert_eq!(
            std::fs::read_to_string(&quick).unwrap(),
            "done\n",
            "drained"
        );
        assert!(!slow.exists(), "the slow hook finished?");
        assert_eq!(slow_hooks.failed(), 1, "the cut is counted");
        assert_gone(&slow.with_extension("pid")).await;
    }

    #[tokio::test]
    async fn webhook_retries_then_delivers_the_json() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for status in ["500 Oops", "200 OK"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(str::to_owned)
                            })
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        if req.len() >= i + 4 + len {
                            bodies.push(text[i + 4..].to_string());
                            break;
                        }
                    }
                    assert!(n > 0);
                }
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
            bodies
        });
        let url = parse_http_url(&format!("http://127.0.0.1:{port}/hook")).unwrap();
        let body = serde_json::to_vec(&meta()).unwrap();
        post_with_retries(
            &url,
            HookKind::Start,
            &body,
            3,
            Duration::from_secs(5),
            Duration::from_millis(10),
        )
        .await
        .unwrap();
        let bodies = server.await.unwrap();
        assert_eq!(bodies.len(), 2);
        let m: EventMeta = serde_json::from_str(&bodies[1]).unwrap();
        assert_eq!(m, meta());
    }

    #[tokio::test]
    async fn an_unreachable_or_silent_webhook_gives_up_after_its_attempts() {
        // A listener that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(listener.accept().await.unwrap());
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let url = parse_http_url(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = post_with_retries(
            &url,
            HookKind::End,
            b"{}",
            2,
            Duration::from_millis(200),
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, HookError::Webhook { attempts: 2, .. }), "{e}");
        // Nothing listening at all.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = parse_http_url(&format!("http://127.0.0.1:{closed}/")).unwrap();
        assert!(
            post_with_retries(
                &url,
                HookKind::End,
                b"{}",
                2,
                Duration::from_secs(1),
                Duration::from_millis(10)
            )
            .await
            .is_err()
        );
    }
}
