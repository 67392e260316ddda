//! Users and access: every route needs a login, sessions, Basic, rate limiting, Origin, bad
//! requests.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use mecam_system_tests::http;

use crate::harness::{Dirs, Web, metric, set_password};

const PW: &str = "correct horse battery";

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// Sends raw bytes and returns the status line's code (0 if the server just closed).
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Waits until the only open connection is the probe's own (the readiness probe's has
/// finished closing).
fn no_other_connection(web: &Web) {
    crate::harness::poll(Duration::from_secs(10), "no other connection", || {
        metric(&metrics_with_basic(web), "mecam_web_connections") == Some(1.0)
    });
}

/// `/metrics`, read with HTTP Basic as the admin.
fn metrics_with_basic(web: &Web) -> String {
    let auth = basic("admin", PW);
    http::request(
        web.addr,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap()
    .text()
}

#[test]
fn every_route_but_login_and_healthz_needs_a_login() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    // The router is built from this table, so no route can be missed here.
    for (method, pattern) in web_svc::web::PROTECTED_ROUTES {
        let path = &pattern.replace("{id}", "20261124T182900Z-0001");
        assert!(
            !path.contains('{'),
            "{pattern}: a parameter the walk cannot fill"
        );
        let r = http::request(web.addr, method, path, &[], b"").unwrap();
        match r.status {
            401 => assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Basic")),
                "{method} {path}: 401 without WWW-Authenticate"
            ),
            303 => assert_eq!(r.header("location"), Some("/login"), "{method} {path}"),
            s => panic!("{method} {path} answered {s} without a login"),
        }
        // A wrong Basic password is refused the same way.
        let auth = basic("admin", "wrong password");
        let r = http::request(web.addr, method, path, &[("Authorization", &auth)], b"").unwrap();
        assert!(
            matches!(r.status, 401 | 429),
            "{method} {path} with a wrong password: {}",
            r.status
        );
    }
    assert_eq!(http::get(web.addr, "/healthz", None).unwrap().status, 200);
    assert_eq!(http::get(web.addr, "/login", None).unwrap().status, 200);
}

#[test]
fn first_visit_sets_the_password_once_then_sessions_and_logout_work() {
    let dirs = Dirs::new("");
    let web = Web::start(&dirs);
    let r = http::get(web.addr, "/", None).unwrap();
    assert_eq!((r.status, r.header("location")), (303, Some("/setup")));
    let form = format!("password={}&confirm={}", "first+pass+123", "first+pass+123");
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = http::request(web.addr, "POST", "/setup", &ct, form.as_bytes()).unwrap();
    assert_eq!(r.status, 303);
    let cookie = r.header("set-cookie").unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "no Secure flag without TLS");
    let mode = std::fs::metadata(dirs.state().join("admin.argon2")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // Setup again is refused, and the password did not change.
    let form2 = "password=attacker+pass&confirm=attacker+pass";
    let r = http::request(web.addr, "POST", "/setup", &ct, form2.as_bytes()).unwrap();
    assert_eq!(r.status, 409);
    assert!(http::login(web.addr, "admin", "attacker pass").is_err());
    let session = http::login(web.addr, "admin", "first pass 123").unwrap();
    let r = http::get(web.addr, "/api/status", Some(&session)).unwrap();
    assert_eq!(r.status, 200);
    let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(status["camera"]["state"].is_string());
    // Logout ends the session on the server: the old cookie no longer works.
    let r = http::request(web.addr, "POST", "/logout", &[("Cookie", &session)], b"").unwrap();
    assert_eq!(r.status, 303);
    assert_eq!(
        http::get(web.addr, "/api/status", Some(&session))
            .unwrap()
            .status,
        401
    );
    // Basic works for API clients.
    let auth = basic("admin", "first pass 123");
    let r = http::request(
        web.addr,
        "GET",
        "/api/status",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_thousand_wrong_passwords_change_nothing_but_the_log() {
    let dirs = Dirs::new("login_failures_per_client_per_min = 5\nlogin_attempts_per_min = 30");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let session = http::login(web.addr, "admin", PW).unwrap();
    let rss_before = web.rss_kib();
    let mut limited = 0;
    for i in 0..1000 {
        let form = format!("username=admin&password=guess{i}");
        let r = http::request(
            web.addr,
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
        .unwrap();
        assert!(
            matches!(r.status, 401 | 429),
            "wrong password answered {}",
            r.status
        );
        if r.status == 429 {
            assert!(r.header("retry-after").is_some());
            limited += 1;
        }
    }
    assert_eq!(limited, 995, "only the per-client allowance was checked");
    let m = http::get(web.addr, "/metrics", Some(&session))
        .unwrap()
        .text();
    assert_eq!(metric(&m, "mecam_web_login_failures_total"), Some(5.0));
    assert_eq!(
        metric(&m, "mecam_web_login_rate_limited_total"),
        Some(995.0)
    );
    // The session from before still works, the service is alive, memory did not grow much.
    assert_eq!(
        http::get(web.addr, "/api/status", Some(&session))
            .unwrap()
            .status,
        200
    );
    assert!(
        web.rss_kib() < rss_before + 4096,
        "RSS {} -> {}",
        rss_before,
        web.rss_kib()
    );
    assert!(web.log().contains("failed login"));
}

#[test]
fn cross_site_state_changes_are_refused() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let session = http::login(web.addr, "admin", PW).unwrap();
    let host = web.addr.to_string();
    let evil = [
        ("Cookie", session.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let r = http::request(web.addr, "POST", "/logout", &evil, b"").unwrap();
    assert_eq!(r.status, 403);
    let r = http::request(
        web.addr,
        "POST",
        "/login",
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"password=x",
    )
    .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        http::get(web.addr, "/api/status", Some(&session))
            .unwrap()
            .status,
        200,
        "session survived"
    );
    let origin = format!("http://{host}");
    let ok = [("Cookie", session.as_str()), ("Origin", origin.as_str())];
    assert_eq!(
        http::request(web.addr, "POST", "/logout", &ok, b"")
            .unwrap()
            .status,
        303
    );
}

#[test]
fn malformed_requests_get_clear_4xx_and_are_survived() {
    let dirs = Dirs::new("max_body_bytes = 4096");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let session = http::login(web.addr, "admin", PW).unwrap();
    assert_eq!(raw(web.addr, b"GARBAGE\r\n\r\n") / 100, 4);
    assert_eq!(
        raw(
            web.addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n"
        ) / 100,
        4
    );
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(raw(web.addr, huge_header.as_bytes()) / 100, 4);
    let big = vec![b'a'; 100_000];
    let r = http::request(
        web.addr,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &big,
    )
    .unwrap();
    assert_eq!(r.status, 413);
    let r = http::request(
        web.addr,
        "POST",
        "/login",
        &[("Content-Type", "text/plain")],
        b"x",
    )
    .unwrap();
    assert_eq!(r.status / 100, 4);
    for path in [
        "/events/..%2F..%2Fetc%2Fpasswd",
        "/events/..%2F..%2Fetc/clip.avi",
        "/events/a.b/poster.jpg",
        "/api/events/%00",
        "/events/x%2Fy/clip.avi",
        "/stream.mjpg?fps=abc",
        "/stream.mjpg?fps=-1",
        "/api/events?page=-3",
    ] {
        let r = http::get(web.addr, path, Some(&session)).unwrap();
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
        assert!(!r.text().contains("root:"), "{path} leaked a file");
    }
    assert_eq!(http::get(web.addr, "/healthz", None).unwrap().status, 200);
}

#[test]
fn tls_from_the_config_serves_https_with_secure_cookies() {
    let ok = |c: &str, a: &str| {
        std::process::Command::new(c)
            .arg(a)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok("openssl", "version") || !ok("curl", "--version") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install openssl and curl"
        );
        eprintln!(
            "\n!!!!! SKIPPED tls test: needs the openssl and curl commands (apt-get install -y openssl curl)\n"
        );
        return;
    }
    let pre = tempfile::tempdir().unwrap();
    let (cert, key) = (pre.path().join("cert.pem"), pre.path().join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let dirs = Dirs::new(&format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    ));
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let curl = |args: &[&str]| {
        let o = std::process::Command::new("curl")
            .args(["-sk", "--max-time", "10", "-i"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let base = format!("https://{}", web.addr);
    let mut healthy = String::new();
    crate::harness::poll(Duration::from_secs(10), "https healthz", || {
        healthy = curl(&[&format!("{base}/healthz")]);
        healthy.starts_with("HTTP/1.1 200")
    });
    let login = curl(&[
        "-d",
        &format!("username=admin&password={}", PW.replace(' ', "+")),
        &format!("{base}/login"),
    ]);
    let cookie_line = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
        .unwrap_or_default();
    assert!(
        cookie_line.contains("Secure") && cookie_line.contains("HttpOnly"),
        "{login}"
    );
    // Plain HTTP on the TLS port gets no page.
    assert!(
        http::get(web.addr, "/healthz", None).is_ok_and(|r| r.status != 200)
            || http::get(web.addr, "/healthz", None).is_err()
    );
}

#[test]
fn set_password_while_running_ends_every_session() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let session = http::login(web.addr, "admin", PW).unwrap();
    assert_eq!(
        http::get(web.addr, "/api/status", Some(&session))
            .unwrap()
            .status,
        200
    );
    std::thread::sleep(Duration::from_millis(20)); // a distinct file time
    set_password(&dirs, "a brand new password");
    assert_eq!(
        http::get(web.addr, "/api/status", Some(&session))
            .unwrap()
            .status,
        401
    );
    assert!(http::login(web.addr, "admin", PW).is_err());
    let fresh = http::login(web.addr, "admin", "a brand new password").unwrap();
    assert_eq!(
        http::get(web.addr, "/api/status", Some(&fresh))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn bad_config_and_bad_passwords_are_refused_at_start_naming_the_problem() {
    let dirs = Dirs::new("");
    let run = |config: &str| {
        let path = dirs.tmp.path().join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(crate::harness::bin())
            .arg("--config")
            .arg(&path)
            .args(["--print-config"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run("[web]\nmax_stream = 3\n");
    assert!(!ok && err.contains("max_stream"), "{err}");
    let (ok, err) = run("[web]\nviewer_timeout_s = -1\n");
    assert!(!ok && err.contains("viewer_timeout_s"), "{err}");
    // Below two seconds a healthy viewer (one part a second) would be dropped.
    let (ok, err) = run("[web]\nviewer_timeout_s = 1.5\n");
    assert!(!ok && err.contains("viewer_timeout_s"), "{err}");
    let (ok, _) = run("[web]\nviewer_timeout_s = 2.0\n");
    assert!(ok, "the lowest viewer_timeout_s is accepted");
    let (ok, err) = run("[web]\nrequest_timeout_s = 0.5\n");
    assert!(!ok && err.contains("request_timeout_s"), "{err}");
    let (ok, err) = run("[web]\ntls_cert = \"/x.pem\"\n");
    assert!(!ok && err.contains("tls_key"), "{err}");
    let (ok, _) = run("[web]\nmax_streams = 3\n");
    assert!(ok);
    let mut c = std::process::Command::new(crate::harness::bin())
        .args(["set-password", "--state-dir"])
        .arg(dirs.state())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least")
            || String::from_utf8_lossy(&out.stderr).contains("8 to")
    );
    assert!(!dirs.state().join("admin.argon2").exists());
}

#[test]
fn stalled_request_bodies_are_closed_after_the_request_timeout() {
    // Every connection slot taken by a POST that announces a body and never sends it.
    let dirs = Dirs::new("max_connections = 4\nmax_streams = 2\nrequest_timeout_s = 2");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    no_other_connection(&web);
    let mut stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(web.addr).unwrap();
            s.write_all(
                b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\npassword=",
            )
            .unwrap();
            s
        })
        .collect();
    // A normal client is served again once the stalled ones are closed.
    crate::harness::poll(Duration::from_secs(60), "a normal client served", || {
        http::get(web.addr, "/healthz", None).is_ok_and(|r| r.status == 200)
    });
    let mut timed_out = 0;
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "a stalled connection was not closed by the server: {r:?}"
        );
        // Empty (EOF or reset): refused at accept because the probe's slot was not free yet
        // (a race the test tolerates once); otherwise the answer is 408.
        let text = String::from_utf8_lossy(&got);
        if !text.is_empty() {
            assert!(
                text.starts_with("HTTP/1.1 408"),
                "a stalled request got {text:?}, not 408"
            );
            timed_out += 1;
        }
    }
    assert!(
        timed_out >= 3,
        "only {timed_out} stalled requests were accepted"
    );
    assert!(web.log().contains("request timed out"), "{}", web.log());
}

#[test]
fn a_client_that_reads_none_of_its_answers_is_dropped_after_the_request_timeout() {
    // Pipelined requests that are never read: the answers fill the socket.
    let dirs = Dirs::new("request_timeout_s = 2");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let deaf = TcpStream::connect(web.addr).unwrap();
    let mut w = deaf.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
        let mut sent = 0usize;
        // Until the server stops reading (its answers have nowhere to go) or closes.
        while sent < 64 << 20 && w.write_all(&req).is_ok() {
            sent += req.len();
        }
        sent
    });
    crate::harness::poll(Duration::from_secs(60), "the deaf client dropped", || {
        web.log().contains("reads nothing of its answer")
    });
    let sent = writer.join().unwrap();
    let total = crate::harness::drain_until_closed(&mut deaf.try_clone().unwrap(), "deaf client");
    assert!(sent > 0 && total > 0, "sent {sent}, got {total}");
    assert_eq!(http::get(web.addr, "/healthz", None).unwrap().status, 200);
}

#[test]
fn a_password_file_that_cannot_be_used_is_a_clear_error_and_never_reopens_setup() {
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    // A directory in its place (unreadable as a file), bytes that are not UTF-8, and text
    // that is not an argon2 hash. (Mode 000 would not do: tests may run as root.)
    for broken in ["directory", "not utf-8", "not a hash"] {
        let dirs = Dirs::new("");
        let file = dirs.state().join("admin.argon2");
        match broken {
            "directory" => std::fs::create_dir(&file).unwrap(),
            "not utf-8" => std::fs::write(&file, [0xff, 0xfe, 0x00, 0x9c, b'\n']).unwrap(),
            _ => std::fs::write(&file, "hello\n").unwrap(),
        }
        let web = Web::start(&dirs);
        crate::harness::poll(Duration::from_secs(10), "the error logged", || {
            let log = web.log();
            log.contains("password file") && log.contains("set-password")
        });
        // No first-visit setup: anyone on the network could claim the camera.
        let r = http::get(web.addr, "/", None).unwrap();
        assert_eq!(
            r.header("location"),
            Some("/login"),
            "{broken}: / answered {}",
            r.status
        );
        let r = http::get(web.addr, "/setup", None).unwrap();
        assert_ne!(r.status, 200, "{broken}: the setup form is offered");
        let form = "password=attacker+pass&confirm=attacker+pass";
        let r = http::request(web.addr, "POST", "/setup", &ct, form.as_bytes()).unwrap();
        assert!(r.status >= 400, "{broken}: setup answered {}", r.status);
        assert!(http::login(web.addr, "admin", "attacker pass").is_err());
        // The login page and Basic clients are told what is wrong.
        let r = http::get(web.addr, "/login", None).unwrap();
        assert_eq!(r.status, 503, "{broken}: /login");
        assert!(r.text().contains("set-password"), "{}", r.text());
        let auth = basic("admin", "attacker pass");
        let r = http::request(
            web.addr,
            "GET",
            "/snapshot.jpg",
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 503, "{broken}: Basic");
        assert!(r.text().contains("password file"), "{}", r.text());
        match broken {
            "directory" => assert!(file.is_dir()),
            "not utf-8" => assert_eq!(
                std::fs::read(&file).unwrap(),
                [0xff, 0xfe, 0x00, 0x9c, b'\n']
            ),
            _ => assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello\n"),
        }
    }
}
