//! Start-up under systemd's `Type=notify`: `READY=1` comes only after everything that can fail
//! at start (config, state directory, password file, TLS certificate and key, bind); a start
//! that fails exits with a clear error and never says ready.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Dirs, bin};

/// A fake systemd notify socket in `dir`.
fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    (sock, path.display().to_string())
}

/// Starts web-svc over `dirs` with `NOTIFY_SOCKET` and `listen`.
fn spawn(dirs: &Dirs, notify: &str, listen: &str) -> Child {
    Command::new(bin())
        .arg("--config")
        .arg(dirs.tmp.path().join("mecam.toml"))
        .arg("--runtime-dir")
        .arg(dirs.run())
        .args(["--listen", listen, "--log-target", "stderr", "--events-dir"])
        .arg(dirs.events())
        .arg("--state-dir")
        .arg(dirs.state())
        .env("NOTIFY_SOCKET", notify)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every notification until the child exits (bounded at 30 s; the child is killed then),
/// with its exit status and stderr.
fn until_exit(mut child: Child, sock: &UnixDatagram) -> (Vec<String>, bool, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
    };
    // What was sent just before the exit.
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let status = status.unwrap_or_else(|| panic!("web-svc did not exit:\n{stderr}"));
    (got, status.success(), stderr)
}

fn said_ready(got: &[String]) -> bool {
    got.iter().any(|m| m.lines().any(|l| l == "READY=1"))
}

#[test]
fn a_bad_tls_certificate_fails_the_start_before_ready() {
    let pre = tempfile::tempdir().unwrap();
    let (cert, key) = (pre.path().join("cert.pem"), pre.path().join("key.pem"));
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    std::fs::write(&key, "no key here\n").unwrap();
    let dirs = Dirs::new(&format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    ));
    let (sock, path) = notify_socket(dirs.tmp.path());
    let (got, ok, stderr) = until_exit(spawn(&dirs, &path, "127.0.0.1:0"), &sock);
    assert!(!ok, "web-svc started with a bad certificate:\n{stderr}");
    assert!(
        !said_ready(&got),
        "READY=1 before the certificate was loaded: {got:?}"
    );
    assert!(
        stderr.contains("tls_cert") && stderr.contains(&cert.display().to_string()),
        "the error does not name the certificate:\n{stderr}"
    );
}

#[test]
fn a_missing_state_dir_or_a_taken_port_fails_the_start_before_ready() {
    let dirs = Dirs::new("");
    let (sock, path) = notify_socket(dirs.tmp.path());
    std::fs::remove_dir(dirs.state()).unwrap();
    let (got, ok, stderr) = until_exit(spawn(&dirs, &path, "127.0.0.1:0"), &sock);
    assert!(!ok && !said_ready(&got), "{got:?}\n{stderr}");
    assert!(
        stderr.contains("state directory") && stderr.contains("create it"),
        "{stderr}"
    );
    std::fs::create_dir(dirs.state()).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (got, ok, stderr) = until_exit(spawn(&dirs, &path, &port), &sock);
    assert!(!ok && !said_ready(&got), "{got:?}\n{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[test]
fn a_good_start_says_ready_once_it_listens() {
    let dirs = Dirs::new("");
    let (sock, path) = notify_socket(dirs.tmp.path());
    let mut child = spawn(&dirs, &path, "127.0.0.1:0");
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while !said_ready(&got) {
        assert!(Instant::now() < deadline, "no READY=1: {got:?}");
        assert!(child.try_wait().unwrap().is_none(), "web-svc exited");
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (got, ok, stderr) = until_exit(child, &sock);
    assert!(ok, "{stderr}");
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
}
