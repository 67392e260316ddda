//! The demo runner starts the three services, prints the URL and login, and on SIGINT stops
//! them all and removes its directories.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use mecam_system_tests::{bins, http, poll};

#[test]
fn demo_prints_a_working_login_and_stops_cleanly_on_sigint() {
    if !bins::all_present_or_skip("demo") {
        return;
    }
    let port = mecam_system_tests::system::free_port().unwrap();
    // Its own process group, as a shell gives a foreground job: Ctrl-C signals the group.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mecam-demo"))
        .process_group(0)
        .args(["--port", &port.to_string()])
        .env("MECAM_BIN_DIR", bins::bin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut url = None;
    let mut login = None;
    let mut files = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo printed its login");
        println!("demo: {line}");
        let l = line.trim();
        if let Some(u) = l.strip_prefix("open:") {
            url = Some(u.trim().to_owned());
        } else if let Some(f) = l.strip_prefix("files:") {
            files = Some(f.trim().split(' ').next().unwrap().to_owned());
        } else if let Some(x) = l.strip_prefix("login:") {
            login = Some(x.trim().to_owned());
        } else if l.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert_eq!(url.unwrap(), format!("http://127.0.0.1:{port}/"));
    let (user, password) = login
        .unwrap()
        .split_once(" / ")
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let addr = ([127, 0, 0, 1], port).into();
    http::login(addr, &user, &password).expect("the printed login works");
    assert!(
        http::login(addr, &user, "wrong-password").is_err(),
        "a wrong password was accepted"
    );

    // What Ctrl-C in a terminal does: SIGINT to every process of the foreground group, the
    // demo and the three services it started.
    let pgid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    let group = in_group(pgid);
    assert!(
        group.len() >= 4,
        "the demo and its three services should share its process group: {group:?}"
    );
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = poll::until(
        "the demo to exit after SIGINT",
        Duration::from_secs(30),
        || child.0.try_wait().map_err(|e| e.to_string()),
    )
    .unwrap();
    assert!(status.success(), "demo exited with {status}");
    poll::until_true(
        "every process of the demo's group to be gone",
        Duration::from_secs(15),
        || in_group(pgid).is_empty(),
    )
    .unwrap_or_else(|e| panic!("{e:#}: left: {:?}", in_group(pgid)));
    let files = std::path::PathBuf::from(files.expect("the demo printed its directory"));
    assert!(!files.exists(), "{} left behind", files.display());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "web-svc still listening after the demo stopped"
    );
}

/// `(pid, command name)` of every live process in process group `pgid` (zombies excluded).
fn in_group(pgid: nix::unistd::Pid) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            // After the command name: state, ppid, pgrp.
            let f: Vec<&str> = rest.split_whitespace().collect();
            (f.first() != Some(&"Z") && f.get(2)?.parse::<i32>().ok()? == pgid.as_raw())
                .then_some((pid, comm))
        })
        .collect()
}
