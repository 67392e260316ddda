//! Churn: 1,000 viewer connects and disconnects, 100 motion events, 20 capture restarts. Open
//! file descriptors, threads and resident memory of every service come back to where they
//! were after warm-up.

use std::time::{Duration, Instant};

use mecam_system_tests::procfs::ProcStats;
use mecam_system_tests::system::{LocalSystem, Options};
use mecam_system_tests::viewer::Kind;
use mecam_system_tests::{bins, http, poll, scenes, viewer::Viewer};

const VIEWER_CYCLES: usize = 1_000;
const EVENTS: usize = 100;
const CAPTURE_RESTARTS: usize = 20;
/// RSS may settle this much above the warm-up figure (allocator caches, not growth).
const RSS_TOLERANCE_KIB: u64 = 3 * 1024;
/// Longest warm-up: waiting for memory to stop moving ends here at the latest.
const WARMUP_MAX: Duration = Duration::from_secs(150);

fn events_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("event.json").is_file())
                .count()
        })
        .unwrap_or(0)
}

fn stats(sys: &LocalSystem) -> [ProcStats; 3] {
    [sys.capture.pid(), sys.motion.pid(), sys.web.pid()].map(|p| ProcStats::of(p).unwrap())
}

/// Wait (bounded) until `now` is back within tolerance of `base`; returns the last figures.
fn settled(sys: &LocalSystem, idx: &[usize], base: &[ProcStats; 3]) -> [ProcStats; 3] {
    let mut last = stats(sys);
    let _ = poll::until_true("figures to settle", Duration::from_secs(30), || {
        last = stats(sys);
        idx.iter().all(|&i| {
            last[i].fds <= base[i].fds
                && last[i].threads <= base[i].threads
                && last[i].rss_kib <= base[i].rss_kib + RSS_TOLERANCE_KIB
        })
    });
    last
}

#[test]
fn churn_leaves_fds_threads_and_memory_where_they_started() {
    if !bins::all_present_or_skip("churn") {
        return;
    }
    let mut sys = LocalSystem::start(Options {
        config: Some(scenes::config(
            "{dir}/scene.toml",
            "fps = 15\n",
            scenes::MOTION_FAST,
        )),
        files: vec![("scene.toml".into(), scenes::CROSSINGS.into())],
        ..Options::default()
    })
    .unwrap();
    let cookie = http::login(sys.addr, mecam_system_tests::ADMIN_USER, &sys.password).unwrap();

    // Warm-up: a viewer, a few frames, the first event.
    {
        let v = Viewer::start(sys.addr, &cookie).unwrap();
        v.wait_for(
            Kind::Live,
            Instant::now() - Duration::from_secs(60),
            Duration::from_secs(30),
        )
        .unwrap();
    }
    let events_dir = sys.events_dir();
    poll::until_true("the first motion event", Duration::from_secs(120), || {
        events_in(&events_dir) >= 1
    })
    .unwrap();
    // Warm-up ends when every service's resident memory has stopped moving: motion-svc's
    // recorder pools fill up to their bounds over its first events, and "back where they
    // started" means back to that steady state.
    let mut last = stats(&sys);
    let mut steady = 0;
    let warm = Instant::now();
    while steady < 3 && warm.elapsed() < WARMUP_MAX {
        std::thread::sleep(Duration::from_secs(5));
        let now = stats(&sys);
        let moved = (0..3).any(|i| now[i].rss_kib.abs_diff(last[i].rss_kib) > 256);
        steady = if moved { 0 } else { steady + 1 };
        last = now;
    }
    println!(
        "warm-up: {:?}, {} events",
        warm.elapsed(),
        events_in(&events_dir)
    );
    let base = stats(&sys);
    println!("warm-up figures (capture, motion, web): {base:?}");

    // 1,000 viewers connect and go away: half after one frame, half before any.
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..4 {
            let (addr, cookie) = (sys.addr, cookie.clone());
            s.spawn(move || {
                for i in 0..VIEWER_CYCLES / 4 {
                    let mut st = http::MjpegStream::open(addr, "/stream", Some(&cookie))
                        .unwrap_or_else(|e| panic!("viewer {w}/{i}: {e:#}"));
                    if i % 2 == 0 {
                        st.next_part()
                            .unwrap_or_else(|e| panic!("viewer {w}/{i} frame: {e:#}"));
                    }
                }
            });
        }
    });
    println!("{VIEWER_CYCLES} viewer cycles in {:?}", t.elapsed());
    let after_viewers = settled(&sys, &[0, 1, 2], &base);
    println!("after viewers: {after_viewers:?}");

    // 100 motion events.
    let t = Instant::now();
    let start_count = events_in(&events_dir);
    poll::until_true(
        &format!("{EVENTS} motion events"),
        Duration::from_secs(400),
        || events_in(&events_dir) >= start_count + EVENTS,
    )
    .unwrap();
    println!("{EVENTS} events in {:?}", t.elapsed());
    let after_events = settled(&sys, &[0, 1, 2], &base);
    println!("after events: {after_events:?}");

    // 20 capture restarts; motion and web reconnect each time.
    let t = Instant::now();
    for i in 0..CAPTURE_RESTARTS {
        sys.restart_capture()
            .unwrap_or_else(|e| panic!("capture restart {i}: {e:#}"));
        let v = Viewer::start(sys.addr, &cookie).unwrap();
        v.wait_for(Kind::Live, Instant::now(), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("live after restart {i}: {e:#}"));
    }
    println!("{CAPTURE_RESTARTS} capture restarts in {:?}", t.elapsed());
    let after_restarts = settled(&sys, &[1, 2], &base);
    println!(
        "after capture restarts (motion, web): {:?} {:?}",
        after_restarts[1], after_restarts[2]
    );

    for (i, name) in ["capture-svc", "motion-svc", "web-svc"].iter().enumerate() {
        let last = if i == 0 {
            after_events[0]
        } else {
            after_restarts[i]
        };
        assert!(
            last.fds <= base[i].fds,
            "{name}: fds {} -> {}",
            base[i].fds,
            last.fds
        );
        assert!(
            last.threads <= base[i].threads,
            "{name}: threads {} -> {}",
            base[i].threads,
            last.threads
        );
        assert!(
            last.rss_kib <= base[i].rss_kib + RSS_TOLERANCE_KIB,
            "{name}: RSS {} KiB -> {} KiB",
            base[i].rss_kib,
            last.rss_kib
        );
    }
    sys.stop().unwrap();
}
