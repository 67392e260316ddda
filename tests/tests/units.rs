//! The unit files in `systemd/`: `systemd-analyze verify` prints nothing at all, and each
//! service unit carries the settings the design contract (ARCHITECTURE.md) asks for.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use mecam_system_tests::unit_file::{self, values};
use mecam_system_tests::{bins, nspawn::UNITS};

/// Copy the units to `dir` with `ExecStart` pointing at the built binaries (or at stand-in
/// executables when they are not built: verify checks that the command exists).
/// `systemd-analyze verify FILES...`: how it exited, and what it printed (stdout, then stderr).
fn verify(files: &[PathBuf]) -> (ExitStatus, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(files)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, printed)
}

fn units_for_verify(dir: &Path) -> Vec<PathBuf> {
    let bin_dir = if bins::all_present() {
        bins::bin_dir()
    } else {
        let stub = dir.join("bin");
        std::fs::create_dir(&stub).unwrap();
        for b in bins::SERVICES {
            std::fs::write(stub.join(b), "#!/bin/sh\nexit 0\n").unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(stub.join(b), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert!(
            !mecam_system_tests::under_ci(),
            "service binaries not built: CI must run `cargo build --workspace --bins` first"
        );
        eprintln!("note: service binaries not built; verifying against stand-in executables");
        stub
    };
    UNITS
        .iter()
        .chain(&["mecam.target"])
        .map(|u| {
            let text = std::fs::read_to_string(bins::systemd_dir().join(u)).unwrap();
            let text = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
            let p = dir.join(u);
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect()
}

#[test]
fn systemd_analyze_verify_prints_nothing() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        mecam_system_tests::skip(
            "systemd_analyze_verify_prints_nothing",
            "systemd-analyze not found (apt-get install systemd)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = units_for_verify(dir.path());
    let (status, printed) = verify(&files);
    assert!(
        status.success(),
        "systemd-analyze verify failed ({status}):\n{printed}"
    );
    assert!(
        printed.trim().is_empty(),
        "systemd-analyze verify printed (any output is a failure):\n{printed}"
    );
}

#[test]
fn verify_catches_a_bad_key() {
    // Guard against a verify run that can never fail: an unknown key must produce output.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        mecam_system_tests::skip("verify_catches_a_bad_key", "systemd-analyze not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = units_for_verify(dir.path());
    let text = std::fs::read_to_string(&files[0])
        .unwrap()
        .replace("[Service]\n", "[Service]\nMemoryMaxx=1M\n");
    std::fs::write(&files[0], text).unwrap();
    let (_, printed) = verify(&files[..1]);
    assert!(
        printed.contains("MemoryMaxx"),
        "verify did not report the bad key:\n{printed}"
    );
}

fn unit(name: &str) -> String {
    unit_file::text(name).unwrap()
}

#[test]
fn every_service_unit_has_the_required_settings() {
    for name in UNITS {
        let t = unit(name);
        let user = if name == "mecam-capture.service" {
            "mecam-capture"
        } else {
            "mecam"
        };
        for (key, want) in [
            ("Type", "notify"),
            ("Restart", "on-failure"),
            ("User", user),
            ("Group", "mecam"),
            ("ProtectSystem", "strict"),
            ("NoNewPrivileges", "yes"),
            ("PrivateTmp", "yes"),
            ("ProtectHome", "yes"),
        ] {
            assert_eq!(values(&t, key), vec![want], "{name}: {key}");
        }
        assert_eq!(values(&t, "WatchdogSec").len(), 1, "{name}: WatchdogSec");
        assert_eq!(values(&t, "MemoryMax").len(), 1, "{name}: MemoryMax");
        for forbidden in ["Requires", "BindsTo", "Requisite", "PartOf=mecam-"] {
            assert!(
                !t.lines().any(|l| l.starts_with(forbidden)),
                "{name} uses {forbidden}: a restart would spread"
            );
        }
        assert!(
            t.contains("DevicePolicy=closed") || t.contains("PrivateDevices=yes"),
            "{name}: device access not restricted"
        );
    }
    // Only capture touches devices, and only the camera's.
    let capture = unit("mecam-capture.service");
    for dev in values(&capture, "DeviceAllow") {
        assert!(
            ["char-video4linux", "char-media", "char-dma_heap"]
                .iter()
                .any(|d| dev.starts_with(d)),
            "capture may open a non-camera device: {dev}"
        );
    }
    // web-svc deletes events: its unit must make the events directory writable.
    let web = unit("mecam-web.service");
    assert!(
        values(&web, "StateDirectory")
            .iter()
            .any(|v| v.split_whitespace().any(|d| d == "mecam/events"))
    );
    let motion = unit("mecam-motion.service");
    assert!(
        values(&motion, "StateDirectory")
            .iter()
            .any(|v| v.split_whitespace().any(|d| d == "mecam/events"))
    );
}

#[test]
fn the_units_pass_no_directory_flag_so_the_config_keys_take_effect() {
    for name in UNITS {
        let t = unit(name);
        let exec = values(&t, "ExecStart")[0];
        for flag in ["--events-dir", "--state-dir", "--runtime-dir"] {
            assert!(
                !exec.contains(flag),
                "{name}: {flag} would override mecam.toml: {exec}"
            );
        }
    }
}

/// web-svc's state directory, its password hash: the default of `--state-dir`, which the unit
/// does not pass (no key moves it), as the built binary's `--help` says.
fn web_state_dir() -> Option<String> {
    if !bins::all_present() {
        assert!(
            !mecam_system_tests::under_ci(),
            "service binaries not built: CI must run `cargo build --workspace --bins` first"
        );
        eprintln!("note: web-svc not built; cannot ask it for its state directory");
        return None;
    }
    let out = Command::new(bins::bin_dir().join("web-svc"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let after = help
        .split_once("--state-dir")
        .map(|(_, rest)| rest)
        .expect("web-svc --help lists --state-dir");
    let default = after
        .split_once("[default: ")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(d, _)| d.to_owned())
        .expect("--state-dir has a default");
    Some(default)
}

#[test]
fn only_web_can_reach_its_password_hash() {
    let Some(state) = web_state_dir() else {
        return;
    };
    let under = |dir: &str| state == dir || state.starts_with(&format!("{dir}/"));
    for name in ["mecam-capture.service", "mecam-motion.service"] {
        let t = unit(name);
        let hidden: Vec<&str> = values(&t, "InaccessiblePaths")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(|p| p.trim_start_matches(['-', '+']))
            .collect();
        assert!(
            hidden.iter().any(|d| under(d)),
            "{name}: InaccessiblePaths {hidden:?} does not cover web-svc's state {state}"
        );
    }
    let web = unit("mecam-web.service");
    assert!(
        values(&web, "InaccessiblePaths").is_empty(),
        "web-svc hides paths from itself"
    );
    // The hidden directory must exist before the units start (a path created later would
    // not be covered): tmpfiles.conf creates it at boot.
    let tmpfiles = std::fs::read_to_string(bins::systemd_dir().join("tmpfiles.conf")).unwrap();
    assert!(
        tmpfiles
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["d", state.as_str()])),
        "tmpfiles.conf does not create {state}"
    );
}

/// MemoryMax in bytes.
fn memory_max(name: &str) -> u64 {
    unit_file::memory_max(name).unwrap()
}

#[test]
fn memory_limits_fit_a_pi_zero_2w() {
    let total: u64 = UNITS.iter().map(|u| memory_max(u)).sum();
    // 512 MB board, ~430 MB left to user space after the GPU split and the kernel; keep the
    // three services under 300 MiB together so the OS and a shell still fit.
    assert!(
        total <= 300 * 1024 * 1024,
        "MemoryMax sum {total} too large for a Pi Zero 2 W"
    );
    for u in UNITS {
        assert!(
            memory_max(u) >= 32 * 1024 * 1024,
            "{u}: MemoryMax too small to run"
        );
    }
}

/// `(mode, user, group)` of `/run/mecam` in tmpfiles.conf.
fn tmpfiles_runtime_dir() -> (u32, String, String) {
    let tmpfiles = std::fs::read_to_string(bins::systemd_dir().join("tmpfiles.conf")).unwrap();
    let words: Vec<&str> = tmpfiles
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() >= 5 && w[..2] == ["d", "/run/mecam"])
        .expect("tmpfiles.conf creates /run/mecam");
    (
        u32::from_str_radix(words[2], 8).expect("octal mode"),
        words[3].to_owned(),
        words[4].to_owned(),
    )
}

#[test]
fn only_capture_owns_and_can_write_the_runtime_directory() {
    // capture-svc alone writes /run/mecam (the region and the socket): its own user owns the
    // directory, the readers only share its group, and the group cannot write it.
    let capture = unit("mecam-capture.service");
    let capture_user = values(&capture, "User")[0];
    let capture_group = values(&capture, "Group")[0];
    let (mode, owner, group) = tmpfiles_runtime_dir();
    assert_eq!(owner, capture_user, "/run/mecam is not capture-svc's");
    assert_eq!(
        group, capture_group,
        "/run/mecam's group is not capture-svc's"
    );
    assert_eq!(
        mode & 0o027,
        0,
        "/run/mecam mode {mode:o}: group may write or others enter"
    );
    for (key, want) in [
        ("RuntimeDirectory", "mecam".to_owned()),
        ("RuntimeDirectoryMode", format!("{mode:04o}")),
        ("RuntimeDirectoryPreserve", "yes".to_owned()),
    ] {
        assert_eq!(values(&capture, key), vec![want.as_str()], "capture: {key}");
    }
    for name in ["mecam-motion.service", "mecam-web.service"] {
        let t = unit(name);
        assert_ne!(
            values(&t, "User"),
            vec![capture_user],
            "{name} runs as capture-svc's user: it could write the region"
        );
        assert_eq!(
            values(&t, "Group"),
            vec![group.as_str()],
            "{name} is not in /run/mecam's group: it could not read the region"
        );
        // systemd would hand a RuntimeDirectory=mecam to this unit's user at each start (a
        // directory of its own, motion's /run/mecam-motion for the preview socket, is fine).
        for v in values(&t, "RuntimeDirectory") {
            assert!(
                v.split_whitespace().all(|d| d == "mecam-motion"),
                "{name} declares RuntimeDirectory={v}"
            );
        }
        for key in ["Wants", "After"] {
            assert!(
                values(&t, key)
                    .iter()
                    .any(|v| v.split_whitespace().any(|u| u == "mecam-capture.service")),
                "{name}: no {key}=mecam-capture.service"
            );
        }
    }
}

#[test]
fn install_and_package_scripts_parse() {
    for (shell, script) in [
        ("sh", bins::systemd_dir().join("install.sh")),
        ("sh", bins::systemd_dir().join("layout.sh")),
        ("bash", bins::systemd_dir().join("../scripts/package")),
        ("sh", bins::systemd_dir().join("../packaging/deb/postinst")),
        ("sh", bins::systemd_dir().join("../packaging/deb/prerm")),
        ("sh", bins::systemd_dir().join("../packaging/deb/postrm")),
    ] {
        let out = Command::new(shell).arg("-n").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `systemd/layout.sh`'s list in one layout: `(kind, source, destination)` per file.
fn layout_files(layout: &str) -> Vec<(String, String, String)> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". systemd/layout.sh && mecam_layout {layout} && mecam_files"
        ))
        .current_dir(bins::systemd_dir().join(".."))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "layout.sh ({layout}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                w.len(),
                4,
                "layout.sh line {l:?}: kind mode source destination"
            );
            (w[0].to_owned(), w[2].to_owned(), w[3].to_owned())
        })
        .collect()
}

#[test]
fn layout_installs_every_file_and_the_units_name_where_it_puts_them() {
    let repo = bins::systemd_dir().join("..");
    // What is not installed: the installer, the list itself, this folder's README.
    let not_installed = ["install.sh", "layout.sh", "README.md"];
    for (layout, prefix) in [("source /opt/inst", "/opt/inst"), ("package", "/usr")] {
        let files = layout_files(layout);
        for entry in std::fs::read_dir(bins::systemd_dir()).unwrap().flatten() {
            let name = entry.file_name().into_string().unwrap();
            if !not_installed.contains(&name.as_str()) {
                let src = format!("systemd/{name}");
                assert!(
                    files.iter().any(|(_, s, _)| *s == src),
                    "{src} is not in systemd/layout.sh's list: neither install.sh nor the .deb installs it"
                );
            }
        }
        for service in bins::SERVICES {
            assert!(
                files.iter().any(|(k, s, d)| k == "bin"
                    && s == service
                    && *d == format!("{prefix}/bin/{service}")),
                "{layout}: {service} is not installed to {prefix}/bin"
            );
        }
        let readme = files
            .iter()
            .find(|(_, s, _)| s == "README.md")
            .map(|(_, _, d)| d.clone())
            .expect("layout.sh installs the README");
        for (kind, src, dst) in &files {
            if kind != "bin" {
                assert!(
                    repo.join(src).is_file(),
                    "{layout}: {src} is listed but missing"
                );
            }
            if kind == "unit" {
                // As installing rewrites it.
                let text = std::fs::read_to_string(repo.join(src))
                    .unwrap()
                    .replace("/usr/local/", &format!("{prefix}/"));
                assert_eq!(
                    values(&text, "Documentation"),
                    vec![format!("file:{readme}")],
                    "{layout}: {dst} names another README than the one installed"
                );
                for exec in values(&text, "ExecStart") {
                    let program = exec.split_whitespace().next().unwrap();
                    assert!(
                        files.iter().any(|(k, _, d)| k == "bin" && d == program),
                        "{layout}: {dst} runs {program}, which is not installed"
                    );
                }
            }
        }
    }
}

#[test]
fn capture_memory_max_holds_the_frame_region_with_room_to_run() {
    // The region's tmpfs pages are charged to capture's cgroup: 3 slots of the configured
    // capacity plus the 4 KiB header, and the process itself on top.
    let Ok(bin) = bins::bin("capture-svc") else {
        mecam_system_tests::skip("capture_memory_max", "capture-svc not built");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("empty.toml");
    std::fs::write(&cfg, "").unwrap();
    let out = Command::new(bin)
        .args(["--print-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let slot: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("slot_capacity = "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no slot_capacity in capture-svc --print-config:\n{text}"));
    let region = 3 * slot + 4096;
    let max = memory_max("mecam-capture.service");
    assert!(
        max >= region + 32 * 1024 * 1024,
        "capture MemoryMax {max} leaves under 32 MiB beside the {region}-byte region"
    );
}
