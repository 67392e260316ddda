//! The service's unit tests: the watchdog's progress, the status line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipc::announce::ClientStats;
use ipc::jpeg::FrameRejected;
use ipc::service::monotonic_ns;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::status::status_text;
use super::watchdog::spawn_watchdog;
use super::*;
use crate::analyzer::Analyzer;
use crate::recorder::{DiskState, RecorderStats};

#[test]
fn progress_is_fresh_only_within_its_window() {
    let p = Progress::default();
    let s = 1_000_000_000;
    p.beat_at(10 * s);
    assert!(p.fresh_at(10 * s, Duration::from_secs(3)));
    assert!(p.fresh_at(13 * s, Duration::from_secs(3)));
    assert!(!p.fresh_at(13 * s + 1, Duration::from_secs(3)));
    p.beat_at(20 * s);
    assert!(p.fresh_at(21 * s, Duration::from_secs(3)));
}

#[tokio::test]
async fn the_watchdog_stops_pinging_when_the_loop_stalls_and_resumes_after() {
    let pings = Arc::new(AtomicU64::new(0));
    let count = pings.clone();
    let p = Progress::default();
    p.beat_at(monotonic_ns());
    let stall = Duration::from_millis(200);
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    let ping = move || {
        count.fetch_add(1, Ordering::Relaxed);
    };
    let interval = Duration::from_millis(40);
    spawn_watchdog((&tasks, &stop), interval, stall, p.clone(), ping);
    // The loop turns: pings.
    for _ in 0..10 {
        p.beat_at(monotonic_ns());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pings.load(Ordering::Relaxed) > 0);
    // The loop stalls: once the last beat is older than `stall`, no ping at all.
    tokio::time::sleep(stall + Duration::from_millis(50)).await;
    let at_stall = pings.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pings.load(Ordering::Relaxed), at_stall);
    // It turns again: pings again.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while pings.load(Ordering::Relaxed) == at_stall {
        assert!(
            std::time::Instant::now() < end,
            "no ping after the loop came back"
        );
        p.beat_at(monotonic_ns());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}

#[test]
fn status_names_every_counter() {
    let a = Analyzer::new(&crate::config::MotionConfig::default().validate().unwrap()).unwrap();
    let c = ClientStats {
        frames: 7,
        torn: 2,
        ..ClientStats::default()
    };
    let r = RecorderStats {
        dropped: 3,
        ..RecorderStats::default()
    };
    let mut gate = FrameGate::default();
    gate.set_camera(320, 240);
    let big = crate::test_jpeg::encode_gray(640, 480, &vec![9; 640 * 480], 80).unwrap();
    assert!(matches!(
        gate.check(&big),
        Err(FrameRejected::TooLarge { .. })
    ));
    assert!(gate.check(b"garbage").is_err());
    let t = status_text(false, 4, &a, (c, r, &gate, &DiskState::Full));
    for word in [
        "camera away",
        "events disk full: recording nothing",
        "7 frames",
        "analysed",
        "not due",
        "gaps",
        "duplicate",
        "corrupt",
        "2 rejected (1 too large, 1 not jpeg)",
        "grey",
        "re-learns",
        "2 torn",
        "4 events",
        "3 clip frames dropped",
    ] {
        assert!(t.contains(word), "{word:?} missing in {t:?}");
    }
}
