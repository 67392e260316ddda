//! mecam on the Pi's architectures, emulated: a Debian bookworm root file system for arm64 and
//! one for armhf ([`mecam_system_tests::pi`]), booted under its own systemd in nspawn, mecam
//! installed in it the way a Pi owner does, then, in one boot per architecture: the three
//! units active, a logged-in viewer receiving live frames from the synthetic source, a motion
//! event in the journal, each service's resident memory after a minute of streaming, a
//! SIGKILL of one unit restarting only that unit, and removal stopping everything (and purge
//! leaving nothing of the package behind).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mecam_system_tests::nspawn::{self, BootOptions, Container, UNITS};
use mecam_system_tests::pi::{self, Arch};
use mecam_system_tests::viewer::{Kind, Viewer};
use mecam_system_tests::{ADMIN_USER, MSG_MOTION_START, http, poll};

/// How long a boot, a unit start or a package step may take under an emulated CPU.
const EMULATED_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the viewer streams before resident memory is read.
const STREAMING: Duration = Duration::from_secs(60);

/// What a user writes in `/etc/mecam/mecam.toml` to try mecam without a camera: the synthetic
/// scene, small and slow (an emulated CPU runs it), short events, web on a loopback port.
fn config(addr: SocketAddr) -> String {
    format!(
        "[capture]\nsource = \"synthetic\"\nwidth = 320\nheight = 240\nfps = 2\n\
         [motion]\nquiet_gap_s = 1.0\npost_capture_s = 0.5\npre_capture_s = 0.5\n\
         [web]\nlisten = \"{addr}\"\n"
    )
}

fn run(arch: Arch) {
    let test = format!("pi_{}", arch.debian());
    if !nspawn::available_or_skip(&test, false) {
        return;
    }
    if let Some(why) = pi::unavailable(arch) {
        mecam_system_tests::skip(&test, &why);
        return;
    }
    let deb = match pi::deb(arch) {
        Ok(d) => d,
        Err(why) => {
            mecam_system_tests::skip(&test, &why);
            return;
        }
    };
    let started = Instant::now();
    let root = pi::rootfs(arch).unwrap();
    let rootfs_took = started.elapsed();

    let binds = vec![(deb.clone(), "/mecam.deb".to_owned())];
    let ct = Container::boot_with(
        &Vec::new(),
        &BootOptions {
            root: Some(root),
            binds,
            boot_timeout: Some(EMULATED_TIMEOUT),
            ..BootOptions::default()
        },
    )
    .unwrap();
    let booted = started.elapsed();

    // Install as a Pi owner does (README: the Pi path); the root's apt lists are fresh from
    // its build ([`pi::rootfs`]).
    let install_out = ct
        .run(&[
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "/mecam.deb",
        ])
        .unwrap();
    // The package printed the URL and the one-time setup code the first visit needs.
    let code = mecam_system_tests::setup_code_in(&install_out)
        .unwrap_or_else(|| panic!("installing printed no setup code:\n{install_out}"));
    let installed = started.elapsed();

    // Configure as a user would: edit the config file, restart the target.
    let addr: SocketAddr = (
        [127, 0, 0, 1],
        mecam_system_tests::system::free_port().unwrap(),
    )
        .into();
    let out = ct
        .exec_stdin(
            &["sh", "-c", "cat > /etc/mecam/mecam.toml"],
            config(addr).as_bytes(),
        )
        .unwrap();
    assert!(out.status.success(), "writing mecam.toml: {out:?}");
    ct.run(&["systemctl", "restart", "mecam.target"]).unwrap();
    let mut pids = [0u32; 3];
    for (unit, pid) in UNITS.iter().zip(&mut pids) {
        *pid = ct.wait_active(unit, 0, EMULATED_TIMEOUT).unwrap();
    }
    poll::until_true("web-svc /healthz", EMULATED_TIMEOUT, || {
        http::get(addr, "/healthz", None).is_ok_and(|r| r.status == 200)
    })
    .unwrap();

    // First visit: the printed code and a new password; then a viewer logged in with that
    // password sees live frames. The code is spent once the password is set.
    let password = mecam_system_tests::random_password();
    http::setup(addr, &code, &password).unwrap();
    assert!(
        http::setup(addr, &code, &password).is_err(),
        "the setup code still works after the password was set"
    );
    let cookie = http::login(addr, ADMIN_USER, &password).unwrap();
    let viewer = Viewer::start(addr, &cookie).unwrap();
    let streaming_since = Instant::now();
    viewer
        .wait_for(Kind::Live, streaming_since, EMULATED_TIMEOUT)
        .unwrap();

    // The synthetic scene moves: a motion event reaches the journal.
    let starts = poll::until(
        "a motion start record in the journal",
        EMULATED_TIMEOUT,
        || {
            let r = ct
                .journal_json(&[&format!("MESSAGE_ID={MSG_MOTION_START}")])
                .map_err(|e| e.to_string())?;
            Ok((!r.is_empty()).then_some(r))
        },
    )
    .unwrap();
    assert_eq!(starts[0]["_SYSTEMD_UNIT"], "mecam-motion.service");

    // Resident memory after a minute of streaming (the viewer is still reading).
    poll::until_true("a minute of streaming", STREAMING * 2, || {
        streaming_since.elapsed() >= STREAMING
    })
    .unwrap();
    assert!(
        viewer.ended().is_none(),
        "stream ended: {:?}",
        viewer.ended()
    );
    let live = viewer.count_since(Kind::Live, streaming_since);
    let mut rss = Vec::new();
    for (unit, pid) in UNITS.iter().zip(pids) {
        assert_eq!(
            ct.main_pid(unit).unwrap(),
            pid,
            "{unit} restarted while streaming"
        );
        rss.push(format!(
            "{unit} {} KiB",
            ct.proc_stats(pid).unwrap().rss_kib
        ));
    }
    // Under qemu-user a process's RSS counts the emulator too: a small program's is its floor.
    let floor = ct
        .run(&["grep", "VmRSS", "/proc/self/status"])
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    println!(
        "pi {}: RSS after {:.0?} of streaming ({live} live frames): {} (an emulated grep: {floor} KiB)",
        arch.debian(),
        streaming_since.elapsed(),
        rss.join(", ")
    );

    // SIGKILL of one unit restarts only that unit.
    let killed = ct.kill_main(UNITS[1], "KILL").unwrap();
    assert_eq!(killed, pids[1]);
    ct.wait_active(UNITS[1], killed, EMULATED_TIMEOUT).unwrap();
    for i in [0, 2] {
        assert_eq!(
            ct.main_pid(UNITS[i]).unwrap(),
            pids[i],
            "{} restarted when {} was killed",
            UNITS[i],
            UNITS[1]
        );
        assert_eq!(ct.n_restarts(UNITS[i]).unwrap(), 0, "{}", UNITS[i]);
    }
    assert_eq!(ct.n_restarts(UNITS[1]).unwrap(), 1);
    drop(viewer);

    // Removal stops everything; purge leaves nothing of the package.
    let apt = |verb: &str| {
        ct.run(&[
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            verb,
            "-y",
            "-q",
            "mecam",
        ])
        .unwrap();
    };
    apt("remove");
    assert_stopped(&ct);
    apt("purge");
    for user in ["mecam", "mecam-capture"] {
        let out = ct.exec(&["getent", "passwd", user]).unwrap();
        assert!(!out.status.success(), "user {user} left after purge");
    }
    let left = ct
        .run(&[
            "sh",
            "-c",
            "ls -d /etc/mecam /var/lib/mecam /run/mecam /usr/share/doc/mecam \
             /etc/tmpfiles.d/mecam.conf /usr/lib/tmpfiles.d/mecam.conf \
             /usr/lib/sysusers.d/mecam.conf /lib/systemd/system/mecam* \
             /usr/lib/systemd/system/mecam* /etc/systemd/system/mecam* \
             /etc/systemd/system/*/mecam* /usr/bin/*-svc 2>/dev/null || true",
        ])
        .unwrap();
    assert!(left.trim().is_empty(), "left after purge:\n{left}");
    println!(
        "pi {}: root file system ready after {rootfs_took:.0?}, booted at {booted:.0?}, \
         installed at {installed:.0?}, done at {:.0?} ({})",
        arch.debian(),
        started.elapsed(),
        deb.display()
    );
}

/// No mecam unit active and no process of the mecam users left.
fn assert_stopped(ct: &Container) {
    for unit in UNITS.iter().chain(&["mecam.target"]) {
        let state = ct.prop(unit, "ActiveState").unwrap();
        assert!(
            state == "inactive" || state == "failed",
            "{unit} is {state} after removal"
        );
    }
    let out = ct.exec(&["pgrep", "-u", "mecam,mecam-capture"]).unwrap();
    assert!(
        !out.status.success(),
        "mecam processes left: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn pi_arm64_installs_boots_streams_detects_restarts_and_removes() {
    run(Arch::Arm64);
}

#[test]
fn pi_armhf_installs_boots_streams_detects_restarts_and_removes() {
    run(Arch::Armhf);
}
