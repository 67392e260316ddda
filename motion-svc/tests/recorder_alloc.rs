//! Steady-state allocation of recording, counted by `ipc::heap`'s allocator installed in this
//! test binary (its own binary: the counters are global, so no other test may run beside it):
//! once a clip is being written, recording more frames (the pre-capture ring, the clip's
//! chunks and index, the pooled buffers) allocates nothing and leaves the live heap where it
//! was; a whole clip (start, frames, end, the storage limits deleting an old one) leaves the
//! live heap where it found it. One leaked byte, or one allocation, per frame fails it.

mod support;

use std::time::{Duration, Instant};

use events::{EventMeta, Limits};
use motion_svc::event::EndReason;
use motion_svc::life::Report;
use motion_svc::recorder::{EndInfo, FrameTag, Recorder, RecorderConfig};
use support::jpeg::encode_gray;

#[global_allocator]
static HEAP: ipc::heap::Counting = ipc::heap::Counting;

const W: usize = 64;
const H: usize = 48;
/// Distinct frames, played in a loop.
const DISTINCT: u64 = 16;
/// The camera's rate: a frame every 40 ms.
const STEP_NS: u64 = 40_000_000;
/// Frames counted while a clip is written: more than the index a clip reserved on its own
/// (`events::avi::FIRST_INDEX_FRAMES`), so a clip index that grows per clip fails.
const FRAMES: u64 = 3000;
/// Longest event: long enough for the counted frames (120 s at 25 fps).
const MAX_EVENT_S: f64 = 150.0;
/// Allocations a time-driven check of the events disk may make (it runs every
/// `DISK_CHECK_EVERY` whatever the frames: a path, a `statvfs`), per check that may fall in
/// the counted span. Far below one per frame.
const ALLOCS_PER_DISK_CHECK: u64 = 16;
/// How long the writer may take to catch up with one frame.
const CATCH_UP: Duration = Duration::from_secs(10);

fn frames() -> Vec<Vec<u8>> {
    (0..DISTINCT)
        .map(|k| {
            let mut px = vec![90u8; W * H];
            let x0 = (k as usize * 3) % (W - 8);
            for y in 10..20 {
                px[y * W + x0..y * W + x0 + 8].fill(220);
            }
            encode_gray(W, H, &px, 80).unwrap()
        })
        .collect()
}

struct Camera {
    frames: Vec<Vec<u8>>,
    n: u64,
}

impl Camera {
    fn now_ns(&self) -> u64 {
        1_000_000_000 + self.n * STEP_NS
    }

    /// Hands `count` frames to the recorder, each taken in by the writer before the next.
    fn feed(&mut self, rec: &mut Recorder, count: u64) {
        for _ in 0..count {
            self.n += 1;
            let tag = FrameTag {
                mono_ns: self.now_ns(),
                wall_ns: 0,
                width: W as u32,
                height: H as u32,
                score: Some((self.n % 7) as f32),
            };
            rec.frame(&self.frames[(self.n % DISTINCT) as usize], tag);
            let sent = rec.stats().sent;
            let since = Instant::now();
            while rec.frames_handled() < sent {
                assert!(since.elapsed() < CATCH_UP, "the writer is stuck");
                std::thread::yield_now();
            }
        }
        assert_eq!(rec.stats().dropped, 0, "no frame may be dropped here");
    }
}

fn next_report(rec: &mut Recorder) -> Report {
    let since = Instant::now();
    loop {
        if let Some(r) = rec.report() {
            return r;
        }
        assert!(since.elapsed() < CATCH_UP, "no report from the writer");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Event `k`'s metadata: ids of one length, so that every event's strings are the same size.
fn meta(k: u64) -> EventMeta {
    let id = format!(
        "20261124T18{:02}{:02}Z-{:04}",
        k / 60 % 60,
        k % 60,
        k % 10_000
    );
    let start = events::parse_id(&id).unwrap();
    EventMeta::new(id, start, W as u32, H as u32)
}

fn start(rec: &mut Recorder, cam: &Camera, k: u64) {
    rec.start_event(meta(k), cam.now_ns(), 25.0);
    match next_report(rec) {
        Report::Started(m) => assert!(m.clip.is_some(), "not recorded: {:?}", m.clip_error),
        Report::Ended(m) => panic!("ended at its start: {m:?}"),
    }
}

/// Ends the event now, and feeds frames through the post-capture until it is closed.
fn end(rec: &mut Recorder, cam: &mut Camera) -> EventMeta {
    rec.end_event(EndInfo {
        end_unix_ms: events::now_unix_ms(),
        last_motion_ns: cam.now_ns(),
        peak_score: 6.0,
        peak_area_pct: 3.0,
        boxes: vec![[0.1, 0.2, 0.1, 0.2]],
        track: vec![],
        reason: EndReason::Quiet,
    });
    // Post-capture is 0.4 s: 10 frames; then the next frame closes the clip.
    cam.feed(rec, 12);
    match next_report(rec) {
        Report::Ended(m) => m,
        Report::Started(m) => panic!("a start instead of an end: {m:?}"),
    }
}

#[test]
fn recording_allocates_nothing_per_frame_and_a_clip_returns_the_heap() {
    let dir = tempfile::tempdir().unwrap();
    let events_dir = dir.path().join("events");
    let mut rec = Recorder::start(RecorderConfig {
        events_dir: events_dir.clone(),
        pre_capture_s: 1.0,
        start_delay_s: 0.5,
        post_capture_s: 0.4,
        max_event_s: MAX_EVENT_S,
        pre_capture_bytes: 1 << 20,
        queue_frames: 8,
        // Room for about two of the short clips below: each later clip deletes an old one.
        limits: Limits {
            max_total_bytes: 120_000,
            max_age_ms: 0,
            min_free_bytes: 0,
        },
        recovery_pending: false,
    })
    .unwrap();
    let mut cam = Camera {
        frames: frames(),
        n: 0,
    };
    // Warm-up: the ring fills, a first clip is opened and written for a while.
    cam.feed(&mut rec, 100);
    start(&mut rec, &cam, 0);
    cam.feed(&mut rec, 100);

    let since = Instant::now();
    let before = ipc::heap::stats();
    cam.feed(&mut rec, FRAMES);
    let after = ipc::heap::stats();
    let checks = since.elapsed().as_secs() / 2 + 1;
    assert!(ipc::heap::installed());
    eprintln!("over {FRAMES} frames recorded: {before} -> {after}");
    let grown = after.since(&before);
    assert_eq!(
        grown.live, 0,
        "live heap bytes after {FRAMES} frames written to a clip: {before} -> {after}"
    );
    assert!(
        grown.allocs <= checks * ALLOCS_PER_DISK_CHECK,
        "{} allocations over {FRAMES} frames written to a clip ({checks} disk checks may \
         have run): {before} -> {after}",
        grown.allocs
    );
    let first = end(&mut rec, &mut cam);
    // The pre-capture (a second: 25 frames), the frames fed, the post-capture (10 frames).
    assert!(first.frames > 100 + FRAMES + 30, "{first:?}");

    // Whole clips: start, a few seconds of frames, end, the storage limits deleting an old
    // clip. After the first, each leaves the live heap where it found it.
    let clip = |rec: &mut Recorder, cam: &mut Camera, k: u64| {
        cam.feed(rec, 60);
        start(rec, cam, k);
        cam.feed(rec, 100);
        end(rec, cam)
    };
    clip(&mut rec, &mut cam, 1);
    let base = ipc::heap::stats();
    for k in 2..8 {
        let m = clip(&mut rec, &mut cam, k);
        assert!(m.frames > 100 + 30, "{m:?}");
        drop(m);
    }
    let after = ipc::heap::stats();
    let left = std::fs::read_dir(&events_dir).unwrap().count();
    assert!(
        left < 8,
        "the storage limits deleted old clips: {left} folders left"
    );
    assert_eq!(
        after.live, base.live,
        "live heap bytes after 6 whole clips: {base} -> {after}"
    );
    rec.shutdown();
}
