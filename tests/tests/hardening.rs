//! Under a real systemd, the units' sandboxes hold: `capture-svc` and `motion-svc` run as the
//! same user as `web-svc`, yet cannot read its password hash (`InaccessiblePaths=`).

use mecam_system_tests::nspawn::{self, Mecam, MecamOptions, UNITS};

/// web-svc's state directory in the units (`--state-dir`).
const WEB_STATE: &str = "/var/lib/mecam/web";

#[test]
fn capture_and_motion_cannot_read_the_password_hash() {
    if !nspawn::available_or_skip("capture_and_motion_cannot_read_the_password_hash", true) {
        return;
    }
    let m = Mecam::start(MecamOptions::default()).unwrap();
    let files: Vec<String> = std::fs::read_dir(m.ct.host_path(WEB_STATE))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| format!("{WEB_STATE}/{}", e.file_name().to_string_lossy()))
        .collect();
    assert!(
        !files.is_empty(),
        "set-password left nothing in {WEB_STATE}"
    );
    let pids = m.pids().unwrap();
    // Read each file as the unit's user, inside the unit's own mount namespace.
    let read_as = |pid: u32, file: &str| {
        m.ct.exec(&[
            "nsenter",
            "-t",
            &pid.to_string(),
            "-m",
            "--",
            "setpriv",
            "--reuid=mecam",
            "--regid=mecam",
            "--clear-groups",
            "cat",
            file,
        ])
        .unwrap()
    };
    for file in &files {
        let web = read_as(pids[2], file);
        assert!(
            web.status.success() && !web.stdout.is_empty(),
            "web-svc cannot read its own {file}: {}",
            String::from_utf8_lossy(&web.stderr)
        );
        for (unit, pid) in UNITS.iter().zip(pids).take(2) {
            let out = read_as(pid, file);
            assert!(
                !out.status.success() && out.stdout.is_empty(),
                "{unit} can read web-svc's {file}"
            );
            println!(
                "{unit}: {file}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}
