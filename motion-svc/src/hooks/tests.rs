//! The hooks' tests: URLs, the command, the webhook, bounds and shutdown.

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
