//! Faults under a real systemd (booted in a throwaway container): SIGKILL of each service,
//! a unit over its MemoryMax, a hung service caught by the watchdog. In every case systemd
//! restarts only the unit at fault, and the others (and a viewer watching the live stream)
//! carry on as DESIGN.md promises.
//!
//! Times are printed (they go in the README), never asserted: the deadlines below only stop
//! a broken run from hanging.

use std::time::{Duration, Instant};

use mecam_system_tests::nspawn::{self, Mecam, MecamOptions, UNITS};
use mecam_system_tests::viewer::{Kind, Viewer};
use mecam_system_tests::{poll, scenes};

const CAPTURE: &str = "mecam-capture.service";
const MOTION: &str = "mecam-motion.service";
const WEB: &str = "mecam-web.service";
/// Upper bound for anything we wait on after a fault (restart, frames coming back).
const DEADLINE: Duration = Duration::from_secs(60);
/// Clip bytes written before motion-svc is killed mid-recording (a few JPEG frames).
const CUT_CLIP_BYTES: u64 = 64 * 1024;

fn start(test: &str, opts: MecamOptions) -> Option<Mecam> {
    if !nspawn::available_or_skip(test, true) {
        return None;
    }
    Some(Mecam::start(opts).expect("mecam under systemd"))
}

/// The units other than `faulty` kept their pid and were never restarted.
fn assert_others_untouched(m: &Mecam, faulty: &str, before: [u32; 3]) {
    for (i, unit) in UNITS.iter().enumerate() {
        if *unit == faulty || !m.started.contains(unit) {
            continue;
        }
        assert_eq!(
            m.ct.main_pid(unit).unwrap(),
            before[i],
            "{unit} changed pid when {faulty} failed"
        );
        assert_eq!(
            m.ct.n_restarts(unit).unwrap(),
            0,
            "{unit} was restarted when {faulty} failed"
        );
        assert_eq!(m.ct.prop(unit, "ActiveState").unwrap(), "active", "{unit}");
    }
}

#[test]
fn sigkill_capture_restarts_only_capture_and_viewers_see_offline_then_live() {
    // A still scene: any motion event here would be the outage mistaken for motion.
    let opts = MecamOptions::with_scene(scenes::STILL, "");
    let Some(m) = start("sigkill_capture", opts) else {
        return;
    };
    let outages = || {
        m.ct.run(&["journalctl", "--no-pager", "-u", MOTION, "-o", "cat"])
            .unwrap()
            .matches("camera outage")
            .count()
    };
    let viewer = Viewer::start(m.addr, &m.login().unwrap()).unwrap();
    viewer
        .wait_for(
            Kind::Live,
            Instant::now() - Duration::from_secs(60),
            DEADLINE,
        )
        .unwrap();
    let before = m.pids().unwrap();
    let outages_before = outages();

    let t0 = Instant::now();
    m.ct.kill_main(CAPTURE, "KILL").unwrap();
    let offline_at = viewer.wait_for(Kind::Offline, t0, DEADLINE).unwrap();
    let new_pid = m.ct.wait_active(CAPTURE, before[0], DEADLINE).unwrap();
    let active_at = Instant::now();
    let live_at = viewer.wait_for(Kind::Live, offline_at, DEADLINE).unwrap();
    println!(
        "capture SIGKILL: offline frame after {:?}; capture active again after {:?}; live frames {:?} after that (same connection)",
        offline_at - t0,
        active_at - t0,
        live_at.saturating_duration_since(active_at)
    );
    assert_ne!(new_pid, before[0]);
    assert_eq!(m.ct.n_restarts(CAPTURE).unwrap(), 1);
    // motion-svc: the outage logged once, and never recorded as motion.
    let _ = viewer.wait_for(
        Kind::Live,
        Instant::now() + Duration::from_secs(2),
        DEADLINE,
    );
    assert_eq!(
        outages() - outages_before,
        1,
        "motion-svc should log the outage exactly once"
    );
    let starts =
        m.ct.journal_json(&[&format!(
            "MESSAGE_ID={}",
            mecam_system_tests::MSG_MOTION_START
        )])
        .unwrap();
    assert!(
        starts.is_empty(),
        "the outage was recorded as motion: {starts:?}"
    );
    assert!(
        viewer.ended().is_none(),
        "the viewer's connection was dropped: {:?}",
        viewer.ended()
    );
    assert_others_untouched(&m, CAPTURE, before);
}

#[test]
fn sigkill_motion_restarts_only_motion_and_the_stream_does_not_notice() {
    // A slow crossing: a recording stays in progress for seconds, so the kill cuts one off.
    let opts = MecamOptions::with_scene(scenes::SLOW_CROSSING, scenes::MOTION_FAST);
    let Some(m) = start("sigkill_motion", opts) else {
        return;
    };
    let viewer = Viewer::start(m.addr, &m.login().unwrap()).unwrap();
    viewer
        .wait_for(
            Kind::Live,
            Instant::now() - Duration::from_secs(60),
            DEADLINE,
        )
        .unwrap();
    let region = m.region_inode().unwrap();
    // A recording in progress, with frames in its clip already.
    let cut = m.wait_event_in_progress(CUT_CLIP_BYTES, DEADLINE).unwrap();
    let before = m.pids().unwrap();

    let t0 = Instant::now();
    let killed_us = nspawn::now_us();
    m.ct.kill_main(MOTION, "KILL").unwrap();
    let new_pid = m.ct.wait_active(MOTION, before[1], DEADLINE).unwrap();
    println!("motion SIGKILL: active again after {:?}", t0.elapsed());
    // Keep watching for a while after motion is back.
    let until = Instant::now() + Duration::from_secs(2);
    viewer.wait_for(Kind::Live, until, DEADLINE).unwrap();
    assert_eq!(
        viewer.count_since(Kind::Offline, t0),
        0,
        "the stream showed the offline frame when motion died"
    );
    let gap = viewer.longest_gap_since(t0);
    println!("motion SIGKILL: longest gap between stream frames meanwhile {gap:?}");
    assert!(
        gap < Duration::from_secs(1),
        "stream stalled for {gap:?} while motion restarted"
    );
    assert!(viewer.ended().is_none());
    assert_eq!(m.ct.n_restarts(MOTION).unwrap(), 1);
    assert_others_untouched(&m, MOTION, before);

    // The recording cut off mid-way is closed on the next start (interrupted, its clip
    // repaired and readable to its last frame), never left as a corrupt file that looks whole.
    let (state, frames) = m.wait_closed(&cut.id, DEADLINE).unwrap();
    assert_eq!(
        state, "interrupted",
        "event {} was recording when motion-svc was killed",
        cut.id
    );
    println!(
        "motion SIGKILL: event {} closed as {state}, {frames} frames kept",
        cut.id
    );
    // The runtime directory survived: the same region, mapped by the new motion-svc, which
    // detects and records again.
    assert_eq!(
        m.region_inode().unwrap(),
        region,
        "the frame region was recreated"
    );
    m.wait_maps_region(new_pid, region, DEADLINE).unwrap();
    let next = m.wait_event_after(killed_us, before[1], DEADLINE).unwrap();
    assert_eq!(next.pid, new_pid, "{next:?}");
    mecam_system_tests::events::check_all(&m.events_dir());
}

#[test]
fn sigkill_web_restarts_only_web_and_detection_goes_on() {
    // A crossing every 1.5 s: events start and end all through the web outage.
    let opts = MecamOptions::with_scene(scenes::CROSSINGS, scenes::MOTION_FAST);
    let Some(m) = start("sigkill_web", opts) else {
        return;
    };
    let region = m.region_inode().unwrap();
    // Kill web while an event is being recorded.
    let spanning = m.wait_event_in_progress(0, DEADLINE).unwrap();
    let before = m.pids().unwrap();

    let t0 = Instant::now();
    let killed_us = nspawn::now_us();
    m.ct.kill_main(WEB, "KILL").unwrap();
    let new_pid = m.ct.wait_active(WEB, before[2], DEADLINE).unwrap();
    m.wait_healthz().unwrap();
    println!("web SIGKILL: serving again after {:?}", t0.elapsed());
    // The viewer reconnects (a new connection: web is the server) and sees live frames.
    let viewer = Viewer::start(m.addr, &m.login().unwrap()).unwrap();
    viewer.wait_for(Kind::Live, t0, DEADLINE).unwrap();
    assert_eq!(m.ct.n_restarts(WEB).unwrap(), 1);
    assert_others_untouched(&m, WEB, before);

    // Detection and recording did not notice: the event in progress at the kill ends and
    // is complete, and so is the next one, started after the kill.
    let (state, _) = m.wait_closed(&spanning.id, DEADLINE).unwrap();
    assert_eq!(
        state, "complete",
        "event {} across the web outage",
        spanning.id
    );
    let ended = m
        .journal_events()
        .unwrap()
        .into_iter()
        .find(|e| e.id == spanning.id)
        .and_then(|e| e.end_us);
    assert!(ended.is_some(), "no end record for {}", spanning.id);
    let next = m.wait_event_after(killed_us, 0, DEADLINE).unwrap();
    assert_eq!(next.pid, before[1], "{next:?}");
    println!(
        "web SIGKILL: event {} spanned the kill (ended {} ms after it), event {} started {} ms after it; both complete",
        spanning.id,
        ended.unwrap_or_default().saturating_sub(killed_us) / 1000,
        next.id,
        next.start_us.saturating_sub(killed_us) / 1000
    );
    // The runtime directory survived: the same region, mapped by the new web-svc.
    assert_eq!(
        m.region_inode().unwrap(),
        region,
        "the frame region was recreated"
    );
    m.wait_maps_region(new_pid, region, DEADLINE).unwrap();
    mecam_system_tests::events::check_all(&m.events_dir());
}

#[test]
fn a_unit_over_its_memory_max_is_killed_by_the_kernel_and_the_others_do_not_notice() {
    // motion-svc's pre-capture ring is bounded by [motion] pre_capture_max_mib (96 MiB here,
    // 60 s at 30 fps); its unit's MemoryMax is lowered, live, to 4 MiB above what it holds
    // now. The ring outgrows that within seconds: the kernel must kill motion-svc.
    let opts = MecamOptions {
        config: Some(
            "[capture]\nfps = 30\n[motion]\npre_capture_s = 60.0\npre_capture_max_mib = 96.0\n[web]\n"
                .into(),
        ),
        ..MecamOptions::default()
    };
    let opts = MecamOptions {
        dropins: vec![slow_restart(MOTION)],
        ..opts
    };
    let Some(m) = start("memory_max", opts) else {
        return;
    };
    let viewer = Viewer::start(m.addr, &m.login().unwrap()).unwrap();
    viewer
        .wait_for(
            Kind::Live,
            Instant::now() - Duration::from_secs(60),
            DEADLINE,
        )
        .unwrap();
    let before = m.pids().unwrap();
    // Live, without a restart: a limit a little above what motion uses now.
    let usage: u64 = m.ct.prop(MOTION, "MemoryCurrent").unwrap().parse().unwrap();
    let limit = usage + 4 * 1024 * 1024;
    m.ct.run(&[
        "systemctl",
        "set-property",
        "--runtime",
        MOTION,
        &format!("MemoryMax={limit}"),
    ])
    .unwrap();
    let t0 = Instant::now();
    let killed = assert_killed_by_the_kernel(&m, MOTION, t0);
    m.ct.wait_active(MOTION, before[1], DEADLINE).unwrap();
    println!(
        "motion over MemoryMax={limit}: killed after {killed:?}; active again after {:?} (RestartSec={RESTART_SEC_OOM} here)",
        t0.elapsed()
    );
    assert!(m.ct.n_restarts(MOTION).unwrap() >= 1);
    assert_eq!(viewer.count_since(Kind::Offline, t0), 0);
    assert!(viewer.ended().is_none());
    assert_others_untouched(&m, MOTION, before);
}

/// Needs no camera: web and motion wait for capture by themselves, so the watchdog is tested
/// on those two alone.
#[test]
fn a_hung_service_is_restarted_by_the_watchdog() {
    let opts = MecamOptions {
        only: vec![MOTION, WEB],
        ..MecamOptions::default()
    };
    let Some(m) = start("watchdog", opts) else {
        return;
    };
    let before = m.pids().unwrap();
    let t0 = Instant::now();
    m.ct.kill_main(WEB, "STOP").unwrap();
    m.ct.wait_active(WEB, before[2], DEADLINE).unwrap();
    println!(
        "web SIGSTOP: restarted by the watchdog after {:?}",
        t0.elapsed()
    );
    let log =
        m.ct.run(&["journalctl", "--no-pager", "-u", WEB, "-o", "cat"])
            .unwrap();
    assert!(
        log.contains("Watchdog timeout"),
        "no watchdog timeout in the journal:\n{log}"
    );
    m.wait_healthz().unwrap();
    assert_others_untouched(&m, WEB, before);
}

/// `RestartSec` of a unit the memory tests push over its `MemoryMax`: long enough that the
/// failed process's `Result` and `ExecMainStatus` can be read before the restart replaces them.
const RESTART_SEC_OOM: &str = "3s";

/// A drop-in raising `unit`'s `RestartSec` to [`RESTART_SEC_OOM`].
fn slow_restart(unit: &str) -> (String, String, String) {
    (
        unit.to_owned(),
        "60-test-restart.conf".to_owned(),
        format!("[Service]\nRestartSec={RESTART_SEC_OOM}\n"),
    )
}

/// Wait for `unit` to fail and wait to restart, and assert systemd saw its main process
/// killed by the kernel: `Result` oom-kill (cgroup v2) or signal (v1), `ExecMainStatus=9`.
/// Returns how long after `t0` that was.
fn assert_killed_by_the_kernel(m: &Mecam, unit: &str, t0: Instant) -> Duration {
    let props = poll::until(
        &format!("{unit} to fail and wait to restart"),
        DEADLINE,
        || {
            let p =
                m.ct.props(
                    unit,
                    &["SubState", "Result", "ExecMainStatus", "ExecMainCode"],
                )
                .map_err(|e| e.to_string())?;
            Ok((p.get("SubState").map(String::as_str) == Some("auto-restart")).then_some(p))
        },
    )
    .unwrap();
    let result = props.get("Result").map_or("", String::as_str);
    assert!(
        result == "oom-kill" || result == "signal",
        "{unit}: Result={result}, not killed by the kernel: {props:?}"
    );
    assert_eq!(
        props.get("ExecMainStatus").map(String::as_str),
        Some("9"),
        "{unit}: {props:?}"
    );
    // CLD_KILLED: ended by a signal, not an exit.
    assert_eq!(
        props.get("ExecMainCode").map(String::as_str),
        Some("2"),
        "{unit}: {props:?}"
    );
    t0.elapsed()
}

/// Anonymous (non-reclaimable) memory charged to `unit`'s cgroup, bytes (cgroup v1 `rss`).
fn anon_bytes(m: &Mecam, unit: &str) -> u64 {
    let stat =
        m.ct.run(&[
            "cat",
            &format!("/sys/fs/cgroup/memory/system.slice/{unit}/memory.stat"),
        ])
        .unwrap();
    stat.lines()
        .find_map(|l| l.strip_prefix("total_rss "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_rss in {unit}'s memory.stat:\n{stat}"))
}

/// Needs no camera. web-svc allocates its argon2 working memory (7 MiB) on the first login;
/// its unit's MemoryMax is lowered, live, to 3 MiB above what it holds now, so that login
/// takes it over the limit: the kernel must kill it, systemd restart it, and motion-svc
/// (another unit) not notice.
#[test]
fn web_over_its_memory_max_is_killed_by_the_kernel_and_motion_does_not_notice() {
    let opts = MecamOptions {
        only: vec![MOTION, WEB],
        dropins: vec![slow_restart(WEB)],
        ..MecamOptions::default()
    };
    let Some(m) = start("web_memory_max", opts) else {
        return;
    };
    let before = m.pids().unwrap();
    let limit = anon_bytes(&m, WEB) + 3 * 1024 * 1024;
    m.ct.run(&[
        "systemctl",
        "set-property",
        "--runtime",
        WEB,
        &format!("MemoryMax={limit}"),
    ])
    .unwrap();
    let t0 = Instant::now();
    let login = m.login();
    assert!(
        login.is_err(),
        "login succeeded within MemoryMax={limit}: the limit is not enforced"
    );
    let killed = assert_killed_by_the_kernel(&m, WEB, t0);
    m.ct.wait_active(WEB, before[2], DEADLINE).unwrap();
    println!(
        "web over MemoryMax={limit}: killed after {killed:?}; active again after {:?} (RestartSec={RESTART_SEC_OOM} here)",
        t0.elapsed()
    );
    assert_others_untouched(&m, WEB, before);
    // Back to the unit's own limit, the restarted web-svc logs in fine.
    m.ct.run(&[
        "systemctl",
        "set-property",
        "--runtime",
        WEB,
        "MemoryMax=64M",
    ])
    .unwrap();
    m.wait_healthz().unwrap();
    m.login().expect("login after the limit is restored");
}
