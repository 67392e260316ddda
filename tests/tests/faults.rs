//! Faults under a real systemd (booted in a throwaway container): SIGKILL of each service,
//! a unit over its MemoryMax, a hung service caught by the watchdog. In every case systemd
//! restarts only the unit at fault, and the others (and a viewer watching the live stream)
//! carry on as the design contract (ARCHITECTURE.md) promises. The faults themselves (and their timing) are
//! `mecam_system_tests::faults`, which `mecam-soak --faults` runs for the README's figures.
//!
//! Times are printed (they go in the README), never asserted: the deadlines only stop a
//! broken run from hanging.

use std::time::{Duration, Instant};

use mecam_system_tests::faults::{self, CAPTURE, DEADLINE, MOTION, OomKill, WEB};
use mecam_system_tests::nspawn::{self, Mecam, MecamOptions, UNITS};
use mecam_system_tests::viewer::{Kind, Viewer};
use mecam_system_tests::{events, scenes};

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

/// systemd saw `unit`'s main process killed by the kernel: `Result` oom-kill (cgroup v2) or
/// signal (v1), `ExecMainStatus=9`, `ExecMainCode=2` (CLD_KILLED: a signal, not an exit).
fn assert_killed_by_the_kernel(unit: &str, k: &OomKill) {
    let result = k.prop("Result");
    assert!(
        result == "oom-kill" || result == "signal",
        "{unit}: Result={result}, not killed by the kernel: {:?}",
        k.props
    );
    assert_eq!(k.prop("ExecMainStatus"), "9", "{unit}: {:?}", k.props);
    assert_eq!(k.prop("ExecMainCode"), "2", "{unit}: {:?}", k.props);
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
    let viewer = faults::live_viewer(&m).unwrap();
    let before = m.pids().unwrap();
    let outages_before = outages();

    let k = faults::kill_capture(&m, &viewer).unwrap();
    println!("capture SIGKILL: {k}");
    assert_ne!(k.new_pid, before[0]);
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
    let viewer = faults::live_viewer(&m).unwrap();
    let region = m.region_inode().unwrap();
    // A recording in progress, with frames in its clip already.
    let cut = m.wait_event_in_progress(CUT_CLIP_BYTES, DEADLINE).unwrap();
    let before = m.pids().unwrap();

    let killed_us = nspawn::now_us();
    let k = faults::kill_motion(&m, &viewer).unwrap();
    println!("motion SIGKILL: {k}");
    assert_eq!(
        viewer.count_since(Kind::Offline, k.t0),
        0,
        "the stream showed the offline frame when motion died"
    );
    // Frames kept coming while motion-svc was down (from the kill until systemd had it
    // active again): the stream did not wait for it. The gap itself is printed above.
    let while_down =
        viewer.count_since(Kind::Live, k.t0) - viewer.count_since(Kind::Live, k.t0 + k.back_after);
    assert!(
        while_down > 0,
        "no live frame reached the viewer while motion-svc was down ({k})"
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
    m.wait_maps_region(k.new_pid, region, DEADLINE).unwrap();
    let next = m.wait_event_after(killed_us, before[1], DEADLINE).unwrap();
    assert_eq!(next.pid, k.new_pid, "{next:?}");
    events::check_all(&m.events_dir());
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

    let killed_us = nspawn::now_us();
    let k = faults::kill_web(&m).unwrap();
    println!("web SIGKILL: {k}");
    // The viewer reconnects (a new connection: web is the server) and sees live frames.
    let viewer = Viewer::start(m.addr, &m.login().unwrap()).unwrap();
    viewer.wait_for(Kind::Live, k.t0, DEADLINE).unwrap();
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
    m.wait_maps_region(k.new_pid, region, DEADLINE).unwrap();
    events::check_all(&m.events_dir());
}

#[test]
fn a_unit_over_its_memory_max_is_killed_by_the_kernel_and_the_others_do_not_notice() {
    // motion-svc's pre-capture ring may grow to [motion] pre_capture_max_mib (96 MiB here, for
    // 60 s of 1280x720 frames at 30 fps), which it reaches within seconds; it is started again
    // with its unit's MemoryMax lowered under that: the kernel must kill motion-svc, and it
    // restarts once the limit is back.
    let Some(m) = start("memory_max", faults::motion_oom_options()) else {
        return;
    };
    let viewer = faults::live_viewer(&m).unwrap();
    let before = m.pids().unwrap();
    let k = faults::motion_over_memory_max(&m).unwrap();
    println!("motion over MemoryMax={}: {k}", k.limit);
    assert_killed_by_the_kernel(MOTION, &k);
    assert!(m.ct.n_restarts(MOTION).unwrap() >= 1);
    assert_eq!(viewer.count_since(Kind::Offline, k.t0), 0);
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
    let k = faults::stop_web(&m).unwrap();
    println!("web SIGSTOP: restarted by the watchdog, {k}");
    let log =
        m.ct.run(&["journalctl", "--no-pager", "-u", WEB, "-o", "cat"])
            .unwrap();
    assert!(
        log.contains("Watchdog timeout"),
        "no watchdog timeout in the journal:\n{log}"
    );
    assert_others_untouched(&m, WEB, before);
}

/// Needs no camera. web-svc allocates its argon2 working memory (7 MiB) on the first login;
/// its unit's MemoryMax is lowered, live, to a little above what it holds now, so that login
/// takes it over the limit: the kernel must kill it, systemd restart it, and motion-svc
/// (another unit) not notice.
#[test]
fn web_over_its_memory_max_is_killed_by_the_kernel_and_motion_does_not_notice() {
    let Some(m) = start("web_memory_max", faults::web_oom_options()) else {
        return;
    };
    let before = m.pids().unwrap();
    let k = faults::web_over_memory_max(&m).unwrap();
    println!("web over MemoryMax={}: {k}", k.limit);
    assert_killed_by_the_kernel(WEB, &k);
    assert_others_untouched(&m, WEB, before);
    // Back to the unit's own limit, the restarted web-svc logs in fine.
    let own = mecam_system_tests::unit_file::memory_max(WEB).unwrap();
    m.ct.run(&[
        "systemctl",
        "set-property",
        "--runtime",
        WEB,
        &format!("MemoryMax={own}"),
    ])
    .unwrap();
    m.wait_healthz().unwrap();
    m.login().expect("login after the limit is restored");
}
