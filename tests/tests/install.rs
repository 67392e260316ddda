//! `systemd/install.sh` in throwaway containers: on a fresh system (no mecam users) it creates
//! both users, installs binaries, units, config and tmpfiles entry, enables and starts
//! `mecam.target`, and runs again cleanly; over an older one-user install (user `mecam` for all
//! three, its region and socket left in `/run/mecam`) it moves capture-svc to its own user;
//! `--uninstall` stops and removes it all but the config and recordings.

use std::path::Path;
use std::time::Duration;

use mecam_system_tests::bins;
use mecam_system_tests::nspawn::{self, BootOptions, Container, UNITS, Users};

/// A miniature checkout in a temporary directory: `systemd/`, the README (installed where the
/// units' `Documentation=` points) and `target/release/` with the built binaries.
fn checkout() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let sd = repo.path().join("systemd");
    std::fs::create_dir_all(&sd).unwrap();
    for entry in std::fs::read_dir(bins::systemd_dir()).unwrap().flatten() {
        std::fs::copy(entry.path(), sd.join(entry.file_name())).unwrap();
    }
    std::fs::copy(
        bins::systemd_dir().join("../README.md"),
        repo.path().join("README.md"),
    )
    .unwrap();
    let rel = repo.path().join("target/release");
    std::fs::create_dir_all(&rel).unwrap();
    for b in bins::SERVICES {
        std::fs::copy(bins::bin(b).unwrap(), rel.join(b)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    repo
}

/// Boot a container with `users`, the checkout at `/repo`, its own network namespace
/// (web-svc's default 0.0.0.0:8080 must not meet the host's).
fn boot(repo: &Path, users: Users) -> Container {
    Container::boot_with(
        &Vec::new(),
        &BootOptions {
            users,
            binds: vec![(repo.to_path_buf(), "/repo".to_owned())],
            private_network: true,
            ..BootOptions::default()
        },
    )
    .unwrap()
}

/// `install.sh` (binaries under /opt/inst: /usr is the host's, read-only); what it printed.
fn install(ct: &Container) -> String {
    let out = ct
        .run(&["env", "PREFIX=/opt/inst", "sh", "/repo/systemd/install.sh"])
        .unwrap();
    println!("{out}");
    out
}

/// The one-time setup code `install.sh` printed (from `web-svc --print-setup-code`).
fn printed_setup_code(out: &str) -> String {
    mecam_system_tests::setup_code_in(out)
        .unwrap_or_else(|| panic!("install.sh printed no setup code:\n{out}"))
}

/// `stat -c '%U %G %a'` of a path in the container.
fn owner_mode(ct: &Container, path: &str) -> String {
    ct.run(&["stat", "-c", "%U %G %a", path])
        .unwrap()
        .trim()
        .to_owned()
}

/// The two users as install.sh makes them: capture-svc's own in `video`, motion's and web's
/// not; one group `mecam`.
fn check_users(ct: &Container) {
    for user in ["mecam", "mecam-capture"] {
        assert_eq!(
            ct.run(&["id", "-gn", user]).unwrap().trim(),
            "mecam",
            "{user}'s primary group"
        );
    }
    let groups = |u: &str| ct.run(&["id", "-Gn", u]).unwrap();
    assert!(
        groups("mecam-capture")
            .split_whitespace()
            .any(|g| g == "video"),
        "mecam-capture is not in video: it cannot open the camera"
    );
    assert!(
        !groups("mecam").split_whitespace().any(|g| g == "video"),
        "mecam (motion, web) is in video: web-svc could open the camera"
    );
    assert_ne!(
        ct.run(&["id", "-u", "mecam"]).unwrap(),
        ct.run(&["id", "-u", "mecam-capture"]).unwrap()
    );
}

/// The unit's `Documentation=` names the installed README.
fn check_documentation(ct: &Container, unit: &str) {
    let doc = ct.prop(unit, "Documentation").unwrap();
    assert_eq!(
        doc.trim(),
        "file:/opt/inst/share/doc/mecam/README.md",
        "{unit}: Documentation= does not name the installed README"
    );
    let path = doc.trim().trim_start_matches("file:");
    assert!(
        ct.host_path(path).is_file(),
        "{unit}: Documentation={doc} but {path} is not installed"
    );
}

/// Each unit started (or trying to: capture's default source is the real camera, which this
/// machine lacks; it must still be started and supervised, not refused by systemd), from the
/// installed binaries, and web-svc active.
fn check_started(ct: &Container) {
    for unit in UNITS {
        let state = mecam_system_tests::poll::until(
            &format!("{unit} started"),
            Duration::from_secs(60),
            || {
                let s = ct.prop(unit, "ActiveState").map_err(|e| e.to_string())?;
                Ok(["active", "activating", "failed"]
                    .contains(&s.as_str())
                    .then_some(s))
            },
        )
        .unwrap();
        println!("{unit}: {state}");
        assert_eq!(ct.prop(unit, "LoadState").unwrap(), "loaded");
        let exec = ct.prop(unit, "ExecStart").unwrap();
        assert!(exec.contains("/opt/inst/bin/"), "{unit}: {exec}");
        check_documentation(ct, unit);
    }
    ct.wait_active("mecam-web.service", 0, Duration::from_secs(60))
        .unwrap();
}

#[test]
fn install_script_installs_starts_and_uninstalls() {
    if !nspawn::available_or_skip("install_script", true) {
        return;
    }
    let repo = checkout();
    let ct = boot(repo.path(), Users::None);
    assert!(
        ct.exec(&["getent", "passwd", "mecam"])
            .unwrap()
            .stdout
            .is_empty(),
        "mecam user exists before install"
    );

    let out = install(&ct);
    check_users(&ct);
    // First run is no open door: the printed URL and code, the code private to web-svc's
    // user and in its journal.
    let code = printed_setup_code(&out);
    assert!(out.contains(":8080/"), "install.sh printed no URL:\n{out}");
    assert_eq!(
        owner_mode(&ct, "/var/lib/mecam/web/setup-code"),
        "mecam mecam 600"
    );
    mecam_system_tests::poll::until_true(
        "the setup code in mecam-web's journal",
        Duration::from_secs(60),
        || {
            ct.run(&["journalctl", "-u", "mecam-web", "--no-pager", "-o", "cat"])
                .is_ok_and(|j| j.contains(&code))
        },
    )
    .unwrap();
    assert!(ct.host_path("/etc/mecam/mecam.toml").is_file());
    assert!(ct.host_path("/opt/inst/bin/capture-svc").is_file());
    assert_eq!(owner_mode(&ct, "/run/mecam"), "mecam-capture mecam 750");
    assert_eq!(
        ct.run(&["systemctl", "is-enabled", "mecam.target"])
            .unwrap()
            .trim(),
        "enabled"
    );
    check_started(&ct);

    // Running it again (an upgrade) works and changes nothing about the users, nor the unused
    // setup code.
    let again = install(&ct);
    assert_eq!(printed_setup_code(&again), code);
    check_users(&ct);
    check_started(&ct);

    let out = ct
        .run(&[
            "env",
            "PREFIX=/opt/inst",
            "sh",
            "/repo/systemd/install.sh",
            "--uninstall",
        ])
        .unwrap();
    println!("{out}");
    for unit in UNITS {
        assert_eq!(
            ct.prop(unit, "LoadState").unwrap(),
            "not-found",
            "{unit} still installed"
        );
    }
    assert!(
        !ct.host_path("/opt/inst/bin/web-svc").exists(),
        "uninstall left the binaries"
    );
    assert!(
        !ct.host_path("/opt/inst/share/doc/mecam/README.md").exists(),
        "uninstall left the README"
    );
    assert!(
        ct.host_path("/etc/mecam/mecam.toml").is_file(),
        "uninstall removed the user's config"
    );
}

#[test]
fn install_script_moves_an_older_one_user_install_to_two_users() {
    if !nspawn::available_or_skip("install_script_over_one_user", true) {
        return;
    }
    let repo = checkout();
    let ct = boot(repo.path(), Users::OneUser);
    // What the older install left: user mecam (in video) owning /run/mecam, with its region
    // (0644) and socket there, and the administrator's config (the synthetic camera here, so
    // that capture-svc runs and makes its region).
    for cmd in [
        &[
            "install",
            "-d",
            "-o",
            "mecam",
            "-g",
            "mecam",
            "-m",
            "0750",
            "/run/mecam",
        ][..],
        &["install", "-d", "-m", "0755", "/etc/mecam"],
        &[
            "sh",
            "-c",
            "printf 'MECAMFRM' > /run/mecam/frames && : > /run/mecam/capture.sock",
        ],
        &[
            "chown",
            "mecam:mecam",
            "/run/mecam/frames",
            "/run/mecam/capture.sock",
        ],
        &["chmod", "0644", "/run/mecam/frames"],
        &[
            "sh",
            "-c",
            "printf '[capture]\\nsource = \"synthetic\"\\n[motion]\\n[web]\\n' > /etc/mecam/mecam.toml",
        ],
    ] {
        ct.run(cmd).unwrap();
    }

    install(&ct);
    check_users(&ct);
    assert!(
        ct.run(&["cat", "/etc/mecam/mecam.toml"])
            .unwrap()
            .contains("synthetic"),
        "the administrator's config was replaced"
    );
    check_started(&ct);
    let pid = ct
        .wait_active("mecam-capture.service", 0, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        ct.run(&["ps", "-o", "user=", "-p", &pid.to_string()])
            .unwrap()
            .trim(),
        "mecam-capture"
    );
    assert_eq!(owner_mode(&ct, "/run/mecam"), "mecam-capture mecam 750");
    // capture-svc made its region anew, as its own user, readable by the group only.
    let region = mecam_system_tests::poll::until(
        "capture-svc's region in /run/mecam",
        Duration::from_secs(60),
        || {
            let out = ct
                .exec(&["stat", "-c", "%U %G %a", "/run/mecam/frames"])
                .map_err(|e| e.to_string())?;
            let now = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Ok(now.starts_with("mecam-capture ").then_some(now))
        },
    )
    .unwrap();
    assert_eq!(region, "mecam-capture mecam 640");
}
