//! The events disk on the dashboard and in `/api/status`: missing, not a directory, full
//! (under `events_min_free_mib`) or read-only is said in words ("Not recording: ..."), and the
//! rest of the service keeps working.

use std::path::{Path, PathBuf};
use std::process::Command;

use mecam_system_tests::http;

use crate::harness::{Dirs, Web, set_password};

const PW: &str = "disk test password";

/// `/api/status`'s `disk` and the dashboard's HTML.
fn disk(web: &Web, cookie: &str) -> (serde_json::Value, String) {
    let status: serde_json::Value = serde_json::from_slice(
        &http::get(web.addr, "/api/status", Some(cookie))
            .unwrap()
            .body,
    )
    .unwrap();
    let dash = http::get(web.addr, "/", Some(cookie)).unwrap();
    assert_eq!(dash.status, 200);
    (status["disk"].clone(), dash.text())
}

fn problem(d: &serde_json::Value) -> &str {
    d["problem"].as_str().unwrap_or_default()
}

#[test]
fn a_missing_or_misplaced_events_directory_is_shown_and_the_rest_keeps_working() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    std::fs::remove_dir(dirs.events()).unwrap();
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let (d, dash) = disk(&web, &cookie);
    assert_eq!(d["state"], "missing", "{d}");
    assert!(
        problem(&d).starts_with("Not recording: the events directory")
            && problem(&d).contains("does not exist"),
        "{d}"
    );
    assert!(dash.contains(problem(&d)), "not on the dashboard:\n{dash}");
    assert_eq!(
        http::get(web.addr, "/events", Some(&cookie))
            .unwrap()
            .status,
        200
    );
    // A file where the directory should be.
    std::fs::write(dirs.events(), "not a directory").unwrap();
    let (d, _) = disk(&web, &cookie);
    assert_eq!(d["state"], "not-a-directory", "{d}");
    // Back: the banner goes.
    std::fs::remove_file(dirs.events()).unwrap();
    std::fs::create_dir(dirs.events()).unwrap();
    let (d, dash) = disk(&web, &cookie);
    assert_eq!(d["state"], "ok", "{d}");
    assert!(d["problem"].is_null() && d["free_bytes"].as_u64().unwrap() > 0);
    assert!(dash.contains("id=\"disk\" hidden"), "{dash}");
}

#[test]
fn less_free_space_than_the_threshold_is_shown_as_full_with_the_space_left() {
    // More than any disk has: this disk counts as full.
    let dirs = Dirs::new("events_min_free_mib = 1e12");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let (d, dash) = disk(&web, &cookie);
    assert_eq!(d["state"], "full", "{d}");
    let free_mib = d["free_bytes"].as_u64().unwrap() / (1024 * 1024);
    assert!(
        problem(&d).starts_with(&format!(
            "Not recording: the events disk is full ({free_mib} MiB free)"
        )),
        "{d}"
    );
    assert!(
        dash.contains("Not recording: the events disk is full"),
        "{dash}"
    );
}

#[test]
fn an_events_directory_the_service_cannot_write_is_shown() {
    if !nix::unistd::geteuid().is_root() {
        mecam_system_tests::skip(
            "an_events_directory_the_service_cannot_write_is_shown",
            "needs root, to run web-svc as another user",
        );
        return;
    }
    use std::os::unix::fs::{PermissionsExt as _, chown};
    const NOBODY: u32 = 65534;
    let dirs = Dirs::new("");
    // The tree readable by the service user; its state directory its own; the events
    // directory root's, mode 0755: readable, not writable.
    for d in [
        dirs.tmp.path().to_owned(),
        dirs.run(),
        dirs.events(),
        dirs.state(),
    ] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    chown(dirs.state(), Some(NOBODY), Some(NOBODY)).unwrap();
    chown(dirs.run(), Some(NOBODY), Some(NOBODY)).unwrap();
    set_password(&dirs, PW);
    let web = Web::start_as(&dirs, NOBODY, NOBODY);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let (d, dash) = disk(&web, &cookie);
    assert_eq!(d["state"], "not-writable", "{d}");
    assert!(
        problem(&d).starts_with("Not recording: the events directory")
            && problem(&d).contains("is not writable"),
        "{d}"
    );
    assert!(dash.contains("is not writable"), "{dash}");
    // Given to the service user, it is fine.
    chown(dirs.events(), Some(NOBODY), Some(NOBODY)).unwrap();
    assert_eq!(disk(&web, &cookie).0["state"], "ok");
}

/// A tmpfs mounted on `at`, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("mecam-test")
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(at.to_owned()))
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_really_full_then_read_only_events_disk_is_shown_and_detected_when_it_recovers() {
    let dirs = Dirs::new("events_min_free_mib = 4");
    let Some(mount) = Mount::tmpfs(&dirs.events(), "8m") else {
        mecam_system_tests::skip(
            "a_really_full_then_read_only_events_disk_is_shown",
            "cannot mount a tmpfs (needs root with CAP_SYS_ADMIN)",
        );
        return;
    };
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    assert_eq!(disk(&web, &cookie).0["state"], "ok");
    // Fill it to about 2 MiB free.
    let filler = dirs.events().join("filler");
    std::fs::write(&filler, vec![0x55u8; 6 << 20]).unwrap();
    let (d, dash) = disk(&web, &cookie);
    assert_eq!(d["state"], "full", "{d}");
    let free = d["free_bytes"].as_u64().unwrap();
    assert!(free < 4 << 20, "{d}");
    let want = format!(
        "Not recording: the events disk is full ({} MiB free)",
        free >> 20
    );
    assert!(problem(&d).starts_with(&want), "{d}");
    assert!(dash.contains(&want), "{dash}");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(disk(&web, &cookie).0["state"], "ok");
    mount.remount("ro");
    let (d, dash) = disk(&web, &cookie);
    assert_eq!(d["state"], "read-only", "{d}");
    assert!(
        problem(&d).starts_with("Not recording: the events disk")
            && problem(&d).contains("read-only"),
        "{d}"
    );
    assert!(dash.contains("read-only"), "{dash}");
    // Pages still work on a read-only disk.
    assert_eq!(
        http::get(web.addr, "/events", Some(&cookie))
            .unwrap()
            .status,
        200
    );
    mount.remount("rw");
    assert_eq!(disk(&web, &cookie).0["state"], "ok");
}
