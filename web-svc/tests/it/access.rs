//! Users and access: every route needs a login, sessions, Basic, rate limiting, Origin, bad
//! requests.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mecam_system_tests::http;

use crate::harness::{Dirs, Web, metric, print_setup_code, set_password};

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

/// web-svc started with `web_config` and the password [`PW`] set; the directories outlive it
/// (dropped after it).
fn with_password(web_config: &str) -> (Dirs, Web) {
    let dirs = Dirs::new(web_config);
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    (dirs, web)
}

/// `/metrics` read with `session`.
fn metrics(web: &Web, session: &str) -> String {
    http::get(web.addr, "/metrics", Some(session))
        .unwrap()
        .text()
}

/// The origin a browser sends for pages of `web`.
fn origin(web: &Web) -> String {
    format!("http://{}", web.addr)
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// One request (`Connection: close`) from the local address `from`: all of 127/8 is loopback
/// on Linux, so each of 127.0.0.2, 127.0.0.3, ... is another client to the server.
fn request_from(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> http::Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let mut s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(from, 0))?;
            sock.connect(to).await?.into_std()
        })
        .unwrap_or_else(|e| panic!("connecting from {from} to {to}: {e}"));
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(http::IO_TIMEOUT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path} from {from}: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path} from {from}: no response head in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    http::Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
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
    let (_dirs, web) = with_password("");
    // Same-origin, so that state changes meet the login rule (not the same-origin one).
    let o = origin(&web);
    // The router is built from this table, so no route can be missed here.
    for (method, pattern) in web_svc::routes::PROTECTED_ROUTES {
        let path = &pattern
            .replace("{id}", "20261124T182900Z-0001")
            .replace("{n}", "0");
        assert!(
            !path.contains('{'),
            "{pattern}: a parameter the walk cannot fill"
        );
        let r = http::request(web.addr, method, path, &[("Origin", &o)], b"").unwrap();
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
        let r = http::request(
            web.addr,
            method,
            path,
            &[("Authorization", &auth), ("Origin", &o)],
            b"",
        )
        .unwrap();
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
    let code = print_setup_code(&dirs).1.expect("a setup code");
    let form = format!("code={code}&password=first+pass+123&confirm=first+pass+123");
    let o = origin(&web);
    let ct = [FORM, ("Origin", o.as_str())];
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
    let form2 = format!("code={code}&password=attacker+pass&confirm=attacker+pass");
    let r = http::request(web.addr, "POST", "/setup", &ct, form2.as_bytes()).unwrap();
    assert_eq!(r.status, 409);
    assert!(http::login(web.addr, "admin", "attacker pass").is_err());
    let session = http::login(web.addr, "admin", "first pass 123").unwrap();
    let r = http::get(web.addr, "/api/status", Some(&session)).unwrap();
    assert_eq!(r.status, 200);
    let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(status["camera"]["state"].is_string());
    // Logout ends the session on the server: the old cookie no longer works.
    let r = http::request(
        web.addr,
        "POST",
        "/logout",
        &[("Cookie", &session), ("Origin", &o)],
        b"",
    )
    .unwrap();
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

/// A setup form post from `from` with this server's Origin; `code` `None` sends no code.
fn setup_from(web: &Web, from: IpAddr, code: Option<&str>, password: &str) -> http::Response {
    let pw = password.replace(' ', "+");
    let form = match code {
        Some(c) => format!("code={c}&password={pw}&confirm={pw}"),
        None => format!("password={pw}&confirm={pw}"),
    };
    let o = origin(web);
    request_from(
        from,
        web.addr,
        "POST",
        "/setup",
        &[FORM, ("Origin", &o)],
        form.as_bytes(),
    )
}

#[test]
fn setup_needs_the_one_time_code_which_stops_working_once_a_password_is_set() {
    let dirs = Dirs::new("");
    let web = Web::start(&dirs);
    let (owner, guesser) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
    let (text, code) = print_setup_code(&dirs);
    let code = code.unwrap_or_else(|| panic!("no setup code in:\n{text}"));
    // The config's address (every address, port 8080): this machine's name.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let url = format!("http://{}:8080/", host.trim());
    assert!(text.contains(&url), "the URL to open, {url}:\n{text}");
    // The running service logs the code with the URL it really serves.
    let log = web.log();
    let served = format!("http://127.0.0.1:{}/", web.addr.port());
    assert!(
        log.lines()
            .any(|l| l.contains(&code) && l.contains(&served)),
        "the code and {served} are in the service log:\n{log}"
    );
    assert_eq!(
        print_setup_code(&dirs).1.as_deref(),
        Some(code.as_str()),
        "an unused code is kept"
    );
    let file = dirs.state().join("setup-code");
    let mode = std::fs::metadata(&file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let page = http::get(web.addr, "/setup", None).unwrap();
    assert!(page.text().contains("name=\"code\""), "{}", page.text());

    let no_password = || !dirs.state().join("admin.argon2").exists();
    let r = setup_from(&web, guesser, None, "attacker pass");
    assert_eq!(r.status, 403, "no code: {}", r.text());
    assert!(no_password());
    let mut wrong = code.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    for bad in [wrong.as_str(), "", "x", &code[..code.len() - 1]] {
        let r = setup_from(&web, guesser, Some(bad), "attacker pass");
        assert_eq!(r.status, 403, "code {bad:?}: {}", r.text());
        assert!(r.text().contains("print-setup-code"), "{}", r.text());
        assert!(no_password(), "code {bad:?}");
    }
    // Case and dashes do not matter: people type what they read.
    let typed = code.to_lowercase().replace('-', " ");
    let r = setup_from(&web, owner, Some(&typed), "first pass 123");
    assert_eq!(r.status, 303, "the right code: {}", r.text());
    assert!(r.header("set-cookie").is_some());
    assert!(!file.exists(), "the code is removed with its use");
    http::login(web.addr, "admin", "first pass 123").unwrap();
    // Once a password is set, the code no longer sets one.
    let r = setup_from(&web, guesser, Some(&code), "attacker pass");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(http::login(web.addr, "admin", "attacker pass").is_err());
    let (text, none) = print_setup_code(&dirs);
    assert_eq!(none, None, "{text}");
    assert!(text.contains("password is set"), "{text}");
    assert!(
        !file.exists(),
        "--print-setup-code made no code once a password is set"
    );
}

#[test]
fn wrong_setup_codes_are_limited_per_address_and_the_right_one_still_works_elsewhere() {
    // A long first wait, so the guesser is still limited at the end however slow the machine.
    let dirs = Dirs::new("login_backoff_first_s = 600\nlogin_free_failures = 3");
    let web = Web::start(&dirs);
    let code = print_setup_code(&dirs).1.expect("a setup code");
    let guesser = IpAddr::from([127, 0, 0, 2]);
    let mut answers = Vec::new();
    for i in 0..20 {
        let r = setup_from(
            &web,
            guesser,
            Some(&format!("AAAA-AAAA-{i:04}")),
            "attacker pass",
        );
        answers.push(r.status);
        if r.status == 429 {
            assert!(r.header("retry-after").is_some());
        }
    }
    assert_eq!(&answers[..3], &[403, 403, 403], "{answers:?}");
    assert!(
        answers[3..].iter().all(|s| *s == 429),
        "after 3 wrong codes the guesser is refused: {answers:?}"
    );
    // Limited, the guesser learns nothing, not even with the right code.
    let r = setup_from(&web, guesser, Some(&code), "attacker pass");
    assert_eq!(r.status, 429);
    assert!(!dirs.state().join("admin.argon2").exists());
    // The owner, at another address, still gets in.
    let owner = IpAddr::from([127, 0, 0, 3]);
    let r = setup_from(&web, owner, Some(&code), "owner pass 123");
    assert_eq!(r.status, 303, "{}", r.text());
    let session = http::login(web.addr, "admin", "owner pass 123").unwrap();
    let m = metrics(&web, &session);
    assert_eq!(
        metric(&m, "mecam_web_login_failures_total"),
        Some(3.0),
        "{m}"
    );
}

#[test]
fn a_thousand_wrong_passwords_change_nothing_but_the_log() {
    let (_dirs, web) = with_password("login_free_failures = 5\nlogin_backoff_first_s = 30");
    let session = http::login(web.addr, "admin", PW).unwrap();
    let rss_before = web.rss_kib();
    let o = origin(&web);
    let (mut wrong, mut limited) = (0u32, 0u32);
    let start = Instant::now();
    for i in 0..1000 {
        let form = format!("username=admin&password=guess{i}");
        let r = http::request(
            web.addr,
            "POST",
            "/login",
            &[FORM, ("Origin", &o)],
            form.as_bytes(),
        )
        .unwrap();
        match r.status {
            401 => wrong += 1,
            429 => {
                assert!(r.header("retry-after").is_some());
                limited += 1;
            }
            s => panic!("wrong password answered {s}"),
        }
    }
    let took = start.elapsed();
    println!("1000 guesses in {took:?}: {wrong} checked, {limited} limited");
    // Five free, then one more per backoff (30 s, 60 s, ...) that ran out during the loop.
    assert!(wrong >= 5, "{wrong} checked");
    assert!(
        u64::from(wrong) <= 5 + took.as_secs() / 30 + 1,
        "{wrong} checked in {took:?}"
    );
    let m = metrics(&web, &session);
    assert_eq!(
        metric(&m, "mecam_web_login_failures_total"),
        Some(f64::from(wrong))
    );
    assert_eq!(
        metric(&m, "mecam_web_login_rate_limited_total"),
        Some(f64::from(limited))
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
    // One line per interval, then a count: not a thousand lines.
    let log = web.log();
    let lines = |what: &str| log.lines().filter(|l| l.contains(what)).count() as u64;
    let most = took.as_secs() / 10 + 2;
    assert!(
        (1..=most).contains(&lines("failed login")),
        "{} failed-login lines in {took:?}",
        lines("failed login")
    );
    assert!(
        (1..=most).contains(&lines("refused by the rate limiter")),
        "{log}"
    );
}

#[test]
fn cross_site_state_changes_are_refused() {
    let (_dirs, web) = with_password("");
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
    let (_dirs, web) = with_password("max_body_bytes = 4096");
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
    let o = origin(&web);
    let r = http::request(web.addr, "POST", "/login", &[FORM, ("Origin", &o)], &big).unwrap();
    assert_eq!(r.status, 413);
    let r = http::request(
        web.addr,
        "POST",
        "/login",
        &[("Content-Type", "text/plain"), ("Origin", &o)],
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
        "-H",
        &format!("Origin: {base}"),
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
    let (dirs, web) = with_password("");
    let session = http::login(web.addr, "admin", PW).unwrap();
    assert_eq!(
        http::get(web.addr, "/api/status", Some(&session))
            .unwrap()
            .status,
        200
    );
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
    for (bad, key) in [
        ("login_free_failures = 0", "login_free_failures"),
        ("login_backoff_first_s = 0.5", "login_backoff_first_s"),
        (
            "login_backoff_first_s = 60\nlogin_backoff_max_s = 30",
            "login_backoff_max_s",
        ),
        (
            "login_slow_after_failures_per_min = 0",
            "login_slow_after_failures_per_min",
        ),
        ("max_tracked_clients = 1000000", "max_tracked_clients"),
        // The keys of the old one-counter limiter are refused by name.
        ("login_attempts_per_min = 30", "login_attempts_per_min"),
    ] {
        let (ok, err) = run(&format!("[web]\n{bad}\n"));
        assert!(!ok && err.contains(key), "{bad}: {err}");
    }
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
    let (_dirs, web) = with_password("max_connections = 4\nmax_streams = 2\nrequest_timeout_s = 2");
    no_other_connection(&web);
    let mut stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(web.addr).unwrap();
            s.write_all(
                b"POST /login HTTP/1.1\r\nHost: x\r\nOrigin: http://x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\npassword=",
            )
            .unwrap();
            s
        })
        .collect();
    // A normal client is served again once the stalled ones are closed.
    crate::harness::poll(Duration::from_secs(60), "a normal client served", || {
        http::get(web.addr, "/healthz", None).is_ok_and(|r| r.status == 200)
    });
    // Each stalled connection is closed by the server: answered 408 after the request
    // timeout, or closed earlier to make room for the probe above (a connection waiting on
    // its client's body gives way to a newcomer at the bound), or refused at accept while
    // the probe's own slot was not free yet.
    let (mut timed_out, mut closed) = (0, 0);
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
        let text = String::from_utf8_lossy(&got);
        if text.is_empty() {
            closed += 1;
        } else {
            assert!(
                text.starts_with("HTTP/1.1 408"),
                "a stalled request got {text:?}, not 408"
            );
            timed_out += 1;
        }
    }
    println!("{timed_out} stalled requests answered 408, {closed} closed without an answer");
    let log = web.log();
    assert!(
        timed_out == 0 || log.contains("request timed out"),
        "{timed_out} answered 408 but no line says so: {log}"
    );
    assert!(
        closed == 0 || log.contains("evicted") || log.contains("refused"),
        "{closed} closed without an answer and no line says why: {log}"
    );
}

#[test]
fn a_client_that_reads_none_of_its_answers_is_dropped_after_the_request_timeout() {
    // Pipelined requests that are never read: the answers fill the socket.
    let (_dirs, web) = with_password("request_timeout_s = 2");
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
        let o = origin(&web);
        let r = http::request(
            web.addr,
            "POST",
            "/setup",
            &with(ct[0], &[("Origin", &o)]),
            form.as_bytes(),
        )
        .unwrap();
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

/// A login form post of `password` from `from`, with this server's Origin.
fn login_from(web: &Web, from: IpAddr, password: &str) -> http::Response {
    let form = format!("username=admin&password={}", password.replace(' ', "+"));
    let o = origin(web);
    request_from(
        from,
        web.addr,
        "POST",
        "/login",
        &[FORM, ("Origin", &o)],
        form.as_bytes(),
    )
}

#[test]
fn a_limited_client_learns_nothing_even_while_basic_is_cached() {
    // A long first wait, so that the client is still limited at the end however slow the
    // machine.
    let (_dirs, web) = with_password("login_backoff_first_s = 600");
    let ha: IpAddr = [127, 0, 0, 2].into();
    let attacker: IpAddr = [127, 0, 0, 3].into();
    let right = basic("admin", PW);
    let status = |from, auth: &str| {
        request_from(
            from,
            web.addr,
            "GET",
            "/api/status",
            &[("Authorization", auth)],
            b"",
        )
    };
    // Home Assistant polls with the right password: the credential is remembered.
    assert_eq!(status(ha, &right).status, 200);
    let mut limited = None;
    for i in 0..50 {
        let r = status(attacker, &basic("admin", &format!("guess {i}")));
        match r.status {
            401 => {}
            429 => {
                limited = Some(r);
                break;
            }
            s => panic!("a wrong guess answered {s}"),
        }
        assert_eq!(status(ha, &right).status, 200, "Home Assistant polls on");
    }
    let limited = limited.expect("50 wrong guesses from one address were never limited");
    let checks = |from| {
        let r = request_from(
            from,
            web.addr,
            "GET",
            "/metrics",
            &[("Authorization", &right)],
            b"",
        );
        assert_eq!(r.status, 200);
        metric(&r.text(), "mecam_web_login_password_checks_total")
    };
    let checks_before = checks(ha);
    let form_limited = login_from(&web, attacker, "yet another guess");
    assert_eq!(form_limited.status, 429);
    for round in 0..20 {
        // The right password gets exactly what a wrong one gets, with the cache warm.
        let r = status(attacker, &right);
        assert_eq!(
            (r.status, r.text()),
            (429, limited.text()),
            "round {round}: the right password over Basic while limited"
        );
        let r = status(attacker, &basic("admin", &format!("more {round}")));
        assert_eq!((r.status, r.text()), (429, limited.text()));
        let r = login_from(&web, attacker, PW);
        assert_eq!(
            (r.status, r.text()),
            (429, form_limited.text()),
            "round {round}: the right password in the form while limited"
        );
        assert!(r.header("set-cookie").is_none());
        assert_eq!(status(ha, &right).status, 200, "Home Assistant polls on");
    }
    assert_eq!(
        checks(ha),
        checks_before,
        "no password was checked for a limited client"
    );
    assert!(checks_before.is_some());
}

#[test]
fn many_addresses_failing_do_not_lock_the_owner_out_of_a_fresh_address() {
    // Slowing from ten failures a minute: the ten addresses' first guesses reach it.
    let dirs = Dirs::new("login_slow_after_failures_per_min = 10");
    set_password(&dirs, PW);
    let web = Arc::new(Web::start(&dirs));
    let session = http::login(web.addr, "admin", PW).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Ten addresses guess at once, eight guesses each: more failures than the global ceiling
    // allows in a minute, so the global slowing is on.
    let attackers: Vec<_> = (2..12u8)
        .map(|i| {
            let (web, stop) = (web.clone(), stop.clone());
            std::thread::spawn(move || {
                let from: IpAddr = [127, 0, 0, i].into();
                let mut answers = Vec::new();
                for g in 0..8 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    answers.push(login_from(&web, from, &format!("guess {i} {g}")).status);
                }
                answers
            })
        })
        .collect();
    // Until the global slowing is on (or, without one, many attempts were refused).
    let mut m = String::new();
    crate::harness::poll(Duration::from_secs(120), "the global slowing", || {
        m = http::get(web.addr, "/metrics", Some(&session))
            .unwrap()
            .text();
        metric(&m, "mecam_web_login_global_slowing") == Some(1.0)
            || metric(&m, "mecam_web_login_rate_limited_total").unwrap_or(0.0) >= 30.0
    });
    println!(
        "failures {:?}, limited {:?}",
        metric(&m, "mecam_web_login_failures_total"),
        metric(&m, "mecam_web_login_rate_limited_total")
    );
    // The owner, from an address that never failed, logs in while the attack goes on.
    let start = Instant::now();
    let r = login_from(&web, [127, 0, 0, 200].into(), PW);
    println!(
        "the owner logged in after {:?} under attack",
        start.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(r.status, 303, "the owner was refused: {}", r.text());
    assert!(r.header("set-cookie").is_some());
    for a in attackers {
        let answers = a.join().unwrap();
        // 408: a guess that waited in the global slowing past the request timeout; like 401
        // and 429 it tells the attacker nothing.
        assert!(
            answers.iter().all(|s| matches!(s, 401 | 408 | 429)),
            "{answers:?}"
        );
    }
    // And again from another fresh address (Home Assistant's, say) over Basic.
    let r = request_from(
        [127, 0, 0, 201].into(),
        web.addr,
        "GET",
        "/api/status",
        &[("Authorization", &basic("admin", PW))],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        metric(&m, "mecam_web_login_global_slowing"),
        Some(1.0),
        "the global ceiling was not reached; the test proves nothing"
    );
}

/// `first` followed by `rest`.
fn with<'a>(first: (&'a str, &'a str), rest: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![first];
    h.extend_from_slice(rest);
    h
}

#[test]
fn state_changes_need_a_same_origin_origin_or_referer() {
    let (_dirs, web) = with_password("");
    let here = origin(&web);
    let foreign = "http://evil.example";
    let same_referer = format!("{here}/events?page=1");
    let foreign_referer = format!("{foreign}/{}/", web.addr);
    let bad: [&[(&str, &str)]; 6] = [
        &[],
        &[("Origin", foreign)],
        &[("Origin", "null")],
        &[("Referer", &foreign_referer)],
        &[("Origin", foreign), ("Referer", &same_referer)],
        &[("Origin", &here.replace("http:", "https:"))],
    ];
    let good: [&[(&str, &str)]; 2] = [&[("Origin", &here)], &[("Referer", &same_referer)]];

    // Cookie: logout.
    let session = http::login(web.addr, "admin", PW).unwrap();
    for extra in bad {
        let r = http::request(
            web.addr,
            "POST",
            "/logout",
            &with(("Cookie", &session), extra),
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 403, "logout with {extra:?}");
        assert!(r.text().contains("Origin"), "{}", r.text());
        assert_eq!(
            http::get(web.addr, "/api/status", Some(&session))
                .unwrap()
                .status,
            200,
            "the session survived {extra:?}"
        );
    }
    for extra in good {
        let session = http::login(web.addr, "admin", PW).unwrap();
        let r = http::request(
            web.addr,
            "POST",
            "/logout",
            &with(("Cookie", &session), extra),
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 303, "logout with {extra:?}");
        assert_eq!(
            http::get(web.addr, "/api/status", Some(&session))
                .unwrap()
                .status,
            401
        );
    }

    // Basic: delete (of an event that does not exist: past the rule it is a 404).
    let auth = basic("admin", PW);
    let path = "/api/events/20261124T182900Z-0001";
    let delete = |extra: &[(&str, &str)]| {
        http::request(
            web.addr,
            "DELETE",
            path,
            &with(("Authorization", &auth), extra),
            b"",
        )
        .unwrap()
    };
    for extra in bad {
        let r = delete(extra);
        assert_eq!(r.status, 403, "Basic delete with {extra:?}");
    }
    for extra in good {
        let r = delete(extra);
        assert_eq!(r.status, 404, "Basic delete with {extra:?}");
    }

    // The login form itself: the right password without a same origin gets no session.
    let form = format!("username=admin&password={}", PW.replace(' ', "+"));
    let login = |extra: &[(&str, &str)]| {
        http::request(
            web.addr,
            "POST",
            "/login",
            &with(FORM, extra),
            form.as_bytes(),
        )
        .unwrap()
    };
    for extra in bad {
        let r = login(extra);
        assert_eq!(r.status, 403, "login with {extra:?}");
        assert!(r.header("set-cookie").is_none());
    }
    for extra in good {
        let r = login(extra);
        assert_eq!(r.status, 303, "login with {extra:?}");
    }
    assert!(web.log().contains("cross-site"), "{}", web.log());

    // First-visit setup, on a camera without a password.
    let fresh = Dirs::new("");
    let web = Web::start(&fresh);
    let code = print_setup_code(&fresh).1.expect("a setup code");
    let form = format!("code={code}&password=first+pass+123&confirm=first+pass+123");
    let form = form.as_str();
    for extra in bad {
        let r = http::request(
            web.addr,
            "POST",
            "/setup",
            &with(FORM, extra),
            form.as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 403, "setup with {extra:?}");
        assert!(!fresh.state().join("admin.argon2").exists());
    }
    // With this server's Origin (as `http::setup` sends it), the same setup is taken.
    let session = http::setup(web.addr, &code, "first pass 123").unwrap();
    let r = http::get(web.addr, "/api/status", Some(&session)).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_new_password_with_the_same_file_time_still_ends_sessions_and_basic() {
    let (dirs, web) = with_password("");
    let session = http::login(web.addr, "admin", PW).unwrap();
    let old = basic("admin", PW);
    let status = |auth: &str| {
        http::request(
            web.addr,
            "GET",
            "/api/status",
            &[("Authorization", auth)],
            b"",
        )
        .unwrap()
        .status
    };
    assert_eq!(status(&old), 200, "Basic is remembered");
    let file = dirs.state().join("admin.argon2");
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    set_password(&dirs, "a brand new password");
    // A change within the same file-time tick, or a restored time (a backup put back).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    assert_eq!(
        http::get(web.addr, "/api/status", Some(&session))
            .unwrap()
            .status,
        401,
        "the session outlived the password"
    );
    assert_eq!(
        status(&old),
        401,
        "the remembered Basic password still works"
    );
    assert_eq!(status(&basic("admin", "a brand new password")), 200);
}
