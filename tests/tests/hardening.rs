//! The units' sandboxes hold: under a real systemd, `capture-svc` and `motion-svc` cannot read
//! web-svc's password hash (`InaccessiblePaths=`); and web-svc's user, as the units deploy it,
//! reads the frame region but can never write, truncate, unlink or replace it.

use std::time::{Duration, Instant};

use mecam_system_tests::nspawn::{self, Mecam, MecamOptions, UNITS};
use mecam_system_tests::{bins, poll, unit_file};

/// web-svc's state directory under the units (its default `--state-dir`, `StateDirectory=mecam/web`).
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
    // Read each file as its owner, web-svc's user (capture's own user is also in its group),
    // inside each unit's own mount namespace: only the namespace (InaccessiblePaths=) can
    // keep the others out.
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

#[test]
fn under_systemd_only_capture_can_change_the_region_and_web_svc_reads_it() {
    let test = "under_systemd_only_capture_can_change_the_region_and_web_svc_reads_it";
    if !nspawn::available_or_skip(test, true) {
        return;
    }
    let m = Mecam::start(MecamOptions::default()).unwrap();
    let stat = |path: &str| {
        m.ct.run(&["stat", "-c", "%U %G %a", path])
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(stat("/run/mecam"), "mecam-capture mecam 750");
    assert_eq!(stat(nspawn::REGION), "mecam-capture mecam 640");
    let inode = m.region_inode().unwrap();
    let [_, motion, web] = m.pids().unwrap();
    // Both readers, as their units run them, map the very region capture-svc writes.
    for pid in [motion, web] {
        m.wait_maps_region(pid, inode, nspawn::ACTIVE_TIMEOUT)
            .unwrap();
    }
    // As web-svc's user, in web-svc's own mount namespace: reads work, nothing else does.
    let as_web = |script: &str| {
        m.ct.exec(&[
            "nsenter",
            "-t",
            &web.to_string(),
            "-m",
            "--",
            "setpriv",
            "--reuid=mecam",
            "--regid=mecam",
            "--init-groups",
            "sh",
            "-c",
            script,
        ])
        .unwrap()
    };
    let read = as_web(&format!("head -c 8 {}", nspawn::REGION));
    assert_eq!(
        String::from_utf8_lossy(&read.stdout),
        "MECAMFRM",
        "web-svc's user cannot read the region: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    let region = nspawn::REGION;
    for (what, script) in [
        ("open for writing", format!("exec 3>>{region}")),
        ("truncate", format!("truncate -s 0 {region}")),
        ("unlink", format!("rm -f {region}")),
        ("rename", format!("mv -f {region} /run/mecam/old")),
        ("create beside it", "touch /run/mecam/new".to_owned()),
        ("chmod", format!("chmod 0666 {region}")),
    ] {
        let out = as_web(&script);
        assert!(
            !out.status.success(),
            "web-svc's user could {what} the region ({script})"
        );
        println!(
            "{what}: refused: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    assert_eq!(m.region_inode().unwrap(), inode, "the region was replaced");
    assert_eq!(stat(region), "mecam-capture mecam 640");
}

// ---- the frame region as web-svc's user -------------------------------------------------------

/// Who runs capture-svc and web-svc, and who owns the runtime directory, as the repository's
/// `systemd/` files say: the test runs the processes as those users (numeric ids stand in for
/// the names), so it checks the deployment, not a setup of its own.
#[derive(Debug)]
struct Deployment {
    capture: (String, String),
    web: (String, String),
    /// `(mode, user, group)` of `/run/mecam` in `tmpfiles.conf`.
    runtime_dir: (u32, String, String),
}

impl Deployment {
    fn from_repo() -> Deployment {
        let user_group = |unit: &str| {
            let text = unit_file::text(unit).unwrap();
            let one = |key: &str| {
                let v = unit_file::values(&text, key);
                assert_eq!(v.len(), 1, "{unit}: {key}= {v:?}");
                v[0].to_owned()
            };
            (one("User"), one("Group"))
        };
        let tmpfiles = std::fs::read_to_string(bins::systemd_dir().join("tmpfiles.conf")).unwrap();
        let runtime_dir = tmpfiles
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.len() >= 5 && w[0] == "d" && w[1] == "/run/mecam")
            .map(|w| {
                let mode = u32::from_str_radix(w[2], 8).expect("tmpfiles mode is octal");
                (mode, w[3].to_owned(), w[4].to_owned())
            })
            .expect("tmpfiles.conf creates /run/mecam");
        Deployment {
            capture: user_group("mecam-capture.service"),
            web: user_group("mecam-web.service"),
            runtime_dir,
        }
    }
}

/// Numeric ids for user and group names: the same name always gets the same id, two names
/// never share one (no user needs to exist).
#[derive(Default)]
struct Ids(Vec<String>, Vec<String>);

impl Ids {
    fn uid(&mut self, name: &str) -> u32 {
        61_000 + Self::index(&mut self.0, name)
    }
    fn gid(&mut self, name: &str) -> u32 {
        62_000 + Self::index(&mut self.1, name)
    }
    fn index(names: &mut Vec<String>, name: &str) -> u32 {
        let i = names.iter().position(|n| n == name).unwrap_or_else(|| {
            names.push(name.to_owned());
            names.len() - 1
        });
        u32::try_from(i).unwrap()
    }
}

const CHILD_ROLE: &str = "MECAM_REGION_CHILD_DIR";

/// What web-svc's user tries on the region (only run as a child of
/// `web_svc_user_reads_the_region_but_can_never_change_it`): prints one line per attempt.
#[test]
#[ignore = "entry point of the child process of the region-permission test"]
fn region_child_as_web_user() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(dir) = std::env::var_os(CHILD_ROLE) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let run = dir.join("run");
    let frames = run.join("frames");
    let scratch = dir.join("scratch");
    // The real reader, as web-svc and motion-svc read: read-only open, PROT_READ map, copy.
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = loop {
        let attempt = ipc::region::RegionReader::open(&frames)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                let mut buf = Vec::new();
                r.read_latest(&mut buf)
                    .map(|m| (m.seq, buf))
                    .map_err(|e| e.to_string())
            });
        match attempt {
            Ok(ok) => break Ok(ok),
            Err(e) if Instant::now() >= deadline => break Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    match read {
        Ok((seq, buf)) => println!(
            "READ ok seq={seq} len={} jpeg={}",
            buf.len(),
            buf.starts_with(&[0xff, 0xd8]) && buf.ends_with(&[0xff, 0xd9])
        ),
        Err(e) => println!("READ failed {e}"),
    }
    let report = |what: &str, r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            println!("DENIED {what}")
        }
        Err(e) => println!("OTHER {what}: {e}"),
        Ok(()) => println!("ALLOWED {what}"),
    };
    let open = |write: bool, read: bool, truncate: bool| {
        std::fs::OpenOptions::new()
            .read(read)
            .write(write)
            .truncate(truncate)
            .open(&frames)
            .map(drop)
    };
    report("open-write", open(true, false, false));
    report("open-read-write", open(true, true, false));
    report("open-truncate", open(true, false, true));
    report(
        "truncate",
        nix::unistd::truncate(&frames, 0).map_err(std::io::Error::from),
    );
    report(
        "chmod",
        std::fs::set_permissions(&frames, std::fs::Permissions::from_mode(0o666)),
    );
    report("unlink", std::fs::remove_file(&frames));
    let fake = scratch.join("fake");
    std::fs::write(&fake, b"MECAMFRM").unwrap();
    report("rename-over", std::fs::rename(&fake, &frames));
    report(
        "rename-away",
        std::fs::rename(&frames, scratch.join("stolen")),
    );
    report(
        "create-in-dir",
        std::fs::File::create(run.join("frames.new")).map(drop),
    );
    report("mkdir-in-dir", std::fs::create_dir(run.join("sub")));
    // The library's own way to replace a region: refused too (the live writer's lock, and a
    // directory web-svc's user cannot write).
    match ipc::region::RegionWriter::create(&frames, 4096) {
        Ok(_) => println!("ALLOWED region-create"),
        Err(e) => println!("REFUSED region-create: {e}"),
    }
}

#[test]
fn web_svc_user_reads_the_region_but_can_never_change_it() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;
    let test = "web_svc_user_reads_the_region_but_can_never_change_it";
    if !nix::unistd::geteuid().is_root() {
        mecam_system_tests::skip(test, "needs root, to run processes as other users");
        return;
    }
    let capture_bin = match bins::bin("capture-svc") {
        Ok(b) => b,
        Err(e) => {
            mecam_system_tests::skip(test, &e.to_string());
            return;
        }
    };
    let deploy = Deployment::from_repo();
    println!("deployment: {deploy:?}");
    let mut ids = Ids::default();
    let (capture_uid, capture_gid) = (ids.uid(&deploy.capture.0), ids.gid(&deploy.capture.1));
    let (web_uid, web_gid) = (ids.uid(&deploy.web.0), ids.gid(&deploy.web.1));
    let (dir_mode, dir_uid, dir_gid) = (
        deploy.runtime_dir.0,
        ids.uid(&deploy.runtime_dir.1),
        ids.gid(&deploy.runtime_dir.2),
    );

    let root = tempfile::Builder::new()
        .prefix("mecam-region-perm-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = root.path().join("run");
    std::fs::create_dir(&run).unwrap();
    nix::unistd::chown(
        &run,
        Some(nix::unistd::Uid::from_raw(dir_uid)),
        Some(nix::unistd::Gid::from_raw(dir_gid)),
    )
    .unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(dir_mode)).unwrap();
    let scratch = root.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    nix::unistd::chown(
        &scratch,
        Some(nix::unistd::Uid::from_raw(web_uid)),
        Some(nix::unistd::Gid::from_raw(web_gid)),
    )
    .unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The two executables, where the other users can surely reach them (the checkout may sit
    // under a directory they cannot enter).
    let bin = root.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let reachable = |from: &std::path::Path, name: &str| {
        let to = bin.join(name);
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to).unwrap();
        }
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    };
    let capture_bin = reachable(&capture_bin, "capture-svc");
    let test_bin = reachable(&std::env::current_exe().unwrap(), "hardening-test");
    let config = root.path().join("mecam.toml");
    std::fs::write(&config, "[capture]\n[motion]\n[web]\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The real capture-svc, as capture's user, on the synthetic camera.
    let log = root.path().join("capture.log");
    let out = std::fs::File::create(&log).unwrap();
    let capture = std::process::Command::new(&capture_bin)
        .arg("--config")
        .arg(&config)
        .arg("--runtime-dir")
        .arg(&run)
        .args(["--source", "synthetic"])
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .uid(capture_uid)
        .gid(capture_gid)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut capture = Reap(Some(capture), log.clone());
    let frames = run.join("frames");
    poll::until_true(
        "capture-svc to create the region",
        Duration::from_secs(30),
        || frames.exists(),
    )
    .unwrap_or_else(|e| panic!("{e}\ncapture-svc log:\n{}", capture.log()));
    let before = std::fs::metadata(&frames).unwrap();
    println!(
        "region {}: mode {:o} uid {} gid {}",
        frames.display(),
        before.permissions().mode() & 0o7777,
        before.uid(),
        before.gid()
    );

    // web-svc's user: a reader process that tries everything else too.
    let child = std::process::Command::new(&test_bin)
        .args([
            "region_child_as_web_user",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, root.path())
        .uid(web_uid)
        .gid(web_gid)
        .current_dir(root.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&child.stdout);
    println!("as web-svc's user (uid {web_uid} gid {web_gid}):\n{said}");
    assert!(
        child.status.success(),
        "the child failed ({}): {said}{}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(
        said.contains("READ ok") && said.contains("jpeg=true"),
        "web-svc's user cannot read frames from the region: {said}"
    );
    for what in [
        "open-write",
        "open-read-write",
        "open-truncate",
        "truncate",
        "chmod",
        "unlink",
        "rename-over",
        "rename-away",
        "create-in-dir",
        "mkdir-in-dir",
    ] {
        assert!(
            said.contains(&format!("DENIED {what}\n")),
            "web-svc's user was not refused {what}: {said}"
        );
    }
    assert!(said.contains("REFUSED region-create"), "{said}");

    // The region is the same file, untouched, and capture-svc still publishes into it.
    let after = std::fs::metadata(&frames).unwrap();
    assert_eq!(
        (
            after.ino(),
            after.len(),
            after.permissions().mode() & 0o7777
        ),
        (before.ino(), before.len(), 0o640)
    );
    capture.check_alive();
    capture.stop();
}

/// capture-svc started as another user: SIGTERM and a clean exit on `stop`, SIGKILL on drop.
struct Reap(Option<std::process::Child>, std::path::PathBuf);

impl Reap {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
    fn check_alive(&mut self) {
        let status = self.0.as_mut().unwrap().try_wait().unwrap();
        assert!(
            status.is_none(),
            "capture-svc exited ({status:?}):\n{}",
            self.log()
        );
    }
    fn stop(&mut self) {
        let mut child = self.0.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = poll::until(
            "capture-svc to exit after SIGTERM",
            Duration::from_secs(15),
            || child.try_wait().map_err(|e| e.to_string()),
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "capture-svc did not exit cleanly: {status:?}\n{}",
            self.log()
        );
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            if std::thread::panicking() {
                eprintln!("----- capture-svc log -----\n{}", self.log());
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
