//! Unit tests of the capture loop's parts: state messages, the watchdog's view, backoff.

use super::publisher::state_message;
use super::*;

#[test]
fn the_stderr_tail_is_in_the_log_message_itself() {
    let tail = crate::supervise::StderrTail::default();
    for i in 0..100 {
        tail.push(format!("err {i} {}", "x".repeat(1000)).as_bytes());
    }
    let detail = tail.joined();
    let m = state_message(
        &CameraState::Restarting {
            reason: "rpicam exited (exit status: 1)".into(),
        },
        &detail,
    );
    assert!(m.starts_with("camera restarting: rpicam exited"), "{m}");
    assert!(
        m.contains("last stderr lines: ") && m.contains("err 99 "),
        "{m}"
    );
    // Bounded: the tail's line count and length limits hold in the message.
    assert!(
        m.len() < 200 + crate::supervise::STDERR_LINES * (crate::supervise::STDERR_LINE_MAX + 3)
    );
    assert!(state_message(&CameraState::Stalled, "").ends_with("restarting it"));
}

#[test]
fn failed_with_a_retry_pending_counts_as_restarting_for_the_watchdog() {
    let now = Instant::now();
    let attempt = Duration::from_secs(10);
    let failed = |retry_at| CaptureStats {
        state: Some(CameraState::Failed {
            reason: "camera offline".into(),
        }),
        retry_at,
        ..Default::default()
    };
    assert!(CaptureStats::default().restarting(now, attempt), "starting");
    assert!(failed(Some(now + Duration::from_secs(30))).restarting(now, attempt));
    // The retry's time has come: the attempt itself may take up to `attempt`.
    assert!(failed(Some(now - Duration::from_secs(9))).restarting(now, attempt));
    // Long past its retry: the loop stopped turning.
    assert!(!failed(Some(now - Duration::from_secs(11))).restarting(now, attempt));
    // Failed for good (no retry).
    assert!(!failed(None).restarting(now, attempt));
    let streaming = CaptureStats {
        state: Some(CameraState::Streaming),
        retry_at: Some(now),
        ..Default::default()
    };
    assert!(
        !streaming.restarting(now, attempt),
        "frames decide while streaming"
    );
}

#[test]
fn backoff_doubles_is_capped_and_resets() {
    let ms = Duration::from_millis;
    let mut b = Backoff::new(ms(100), ms(1000));
    let got: Vec<_> = (0..7).map(|_| b.next_delay()).collect();
    assert_eq!(got, [100, 200, 400, 800, 1000, 1000, 1000].map(ms).to_vec());
    b.reset();
    assert_eq!(b.next_delay(), ms(100));
}
