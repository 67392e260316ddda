//! Start-up under systemd's `Type=notify`: `READY=1` comes only after everything that can fail
//! at start (config, state directory, password file, TLS certificate and key, bind); a start
//! that fails exits with a clear error and never says ready.

use std::process::Command;
use std::time::Duration;

use testkit::notify::NotifySocket;
use testkit::service::Service;

use crate::harness::{Dirs, bin};

/// A fake systemd notify socket in `dir`.
fn notify_socket(dir: &std::path::Path) -> (NotifySocket, String) {
    let sock = NotifySocket::bind(&dir.join("notify.sock"));
    let path = sock.env();
    (sock, path)
}

/// Starts web-svc over `dirs` with `NOTIFY_SOCKET` and `listen`.
fn spawn(dirs: &Dirs, notify: &str, listen: &str) -> Service {
    let mut cmd = Command::new(bin());
    cmd.arg("--config")
        .arg(dirs.tmp.path().join("mecam.toml"))
        .arg("--runtime-dir")
        .arg(dirs.run())
        .args(["--listen", listen, "--log-target", "stderr", "--events-dir"])
        .arg(dirs.events())
        .arg("--state-dir")
        .arg(dirs.state())
        .env("NOTIFY_SOCKET", notify)
        .env("NO_COLOR", "1");
    Service::start("web-svc", cmd, &dirs.new_log()).unwrap()
}

/// Every notification until the service exits (bounded at 30 s; it is killed then), with its
/// exit status and log.
fn until_exit(mut svc: Service, sock: &NotifySocket) -> (Vec<String>, bool, String) {
    let mut status = None;
    let mut got = sock.until(Duration::from_secs(30), |_| {
        status = svc.try_wait().unwrap();
        status.is_some()
    });
    // What was sent just before the exit.
    got.extend(sock.drain());
    let stderr = svc.log();
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
    let mut svc = spawn(&dirs, &path, "127.0.0.1:0");
    let got = sock.until(Duration::from_secs(30), |got| {
        assert!(svc.try_wait().unwrap().is_none(), "web-svc exited");
        said_ready(got)
    });
    assert!(said_ready(&got), "no READY=1: {got:?}");
    svc.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let (got, ok, stderr) = until_exit(svc, &sock);
    assert!(ok, "{stderr}");
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
}
