//! Steady-state allocation of motion analysis, counted by `ipc::heap`'s allocator installed in
//! this test binary: after warm-up, offering frames to the [`Analyzer`] (selection, decoding,
//! detection, the event tracker) with motion in every one allocates nothing and leaves the
//! live heap where it was; an event's end and the camera going away and coming back leave it
//! where they found it. One leaked byte, or one allocation, per frame fails it.

mod support;

use std::cell::Cell;

use motion_svc::analyzer::{Analyzer, FrameInput};
use motion_svc::config::MotionConfig;
use support::jpeg::encode_gray;

#[global_allocator]
static HEAP: ipc::heap::Counting = ipc::heap::Counting;

const W: usize = 320;
const H: usize = 240;
/// Distinct frames, played in a loop: a bright square crossing a grey scene.
const DISTINCT: usize = 16;
/// Frames before counting: the background is learned, the event starts, buffers settle.
const WARM_UP: u64 = 64;
/// Frames counted.
const FRAMES: u64 = 256;
/// Time between frames: 10 fps.
const STEP_NS: u64 = 100_000_000;

/// Frame `k` of the loop: the square at its `k`-th place.
fn frame(k: usize) -> Vec<u8> {
    let mut px = vec![100u8; W * H];
    let (x0, y0) = (k * (W - 48) / DISTINCT, H / 3);
    for y in y0..y0 + 48 {
        px[y * W + x0..y * W + x0 + 48].fill(230);
    }
    encode_gray(W, H, &px, 80).unwrap()
}

#[test]
fn analysing_a_frame_allocates_nothing_in_the_steady_state() {
    let frames: Vec<Vec<u8>> = (0..DISTINCT).map(frame).collect();
    let mut a = Analyzer::new(&MotionConfig::default().validate().unwrap()).unwrap();
    let still = frame(0);
    let (seq, analysed) = (Cell::new(0u64), Cell::new(0u64));
    // The next frame: the moving square's, or the still first one.
    let offer = |a: &mut Analyzer, moving: bool| {
        seq.set(seq.get() + 1);
        let jpeg = if moving {
            &frames[seq.get() as usize % DISTINCT]
        } else {
            &still
        };
        let out = a.offer(FrameInput {
            seq: seq.get(),
            mono_ns: 1_000_000_000 + seq.get() * STEP_NS,
            wall_ns: 0,
            jpeg,
        });
        analysed.set(analysed.get() + u64::from(out.analysed.is_some()));
    };
    for _ in 0..WARM_UP {
        offer(&mut a, true);
    }
    let before = ipc::heap::stats();
    for _ in 0..FRAMES {
        offer(&mut a, true);
    }
    let after = ipc::heap::stats();
    assert!(ipc::heap::installed());
    assert!(
        a.event_active(),
        "the moving square is motion: an event runs"
    );
    let analysed = analysed.get();
    assert!(analysed > FRAMES / 4, "only {analysed} frames analysed");
    eprintln!("over {FRAMES} frames ({analysed} analysed in all): {before} -> {after}");
    assert_eq!(
        after.since(&before),
        ipc::heap::Growth::NONE,
        "allocations and live heap bytes over {FRAMES} frames offered to the analyzer"
    );

    // Events end and start again, and the camera goes away and comes back: after the first
    // of each, every one leaves the live heap where it found it.
    let cycle = |a: &mut Analyzer| {
        // Quiet until the event ends, the camera lost, back and learning, motion again.
        for _ in 0..80 {
            offer(a, false);
        }
        let _ = a.camera_lost();
        for _ in 0..WARM_UP {
            offer(a, true);
        }
    };
    cycle(&mut a);
    let base = ipc::heap::stats();
    for _ in 0..5 {
        cycle(&mut a);
    }
    let after = ipc::heap::stats();
    assert!(
        a.event_active(),
        "motion again after the last camera restart"
    );
    assert_eq!(
        after.live, base.live,
        "live heap bytes after 5 events and camera restarts: {base} -> {after}"
    );
}
