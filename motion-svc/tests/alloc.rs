//! Steady-state allocation of motion analysis, counted by `ipc::heap`'s allocator installed in
//! this test binary: after warm-up, offering frames to the [`Analyzer`] (selection, decoding,
//! detection, the event tracker) with motion in every one allocates nothing and leaves the
//! live heap where it was. One leaked byte, or one allocation, per frame fails it.

mod support;

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
    let mut seq = 0u64;
    let mut analysed = 0u64;
    let mut offer = |a: &mut Analyzer| {
        seq += 1;
        let out = a.offer(FrameInput {
            seq,
            mono_ns: 1_000_000_000 + seq * STEP_NS,
            wall_ns: 0,
            jpeg: &frames[seq as usize % DISTINCT],
        });
        analysed += u64::from(out.analysed.is_some());
    };
    for _ in 0..WARM_UP {
        offer(&mut a);
    }
    let before = ipc::heap::stats();
    for _ in 0..FRAMES {
        offer(&mut a);
    }
    let after = ipc::heap::stats();
    assert!(ipc::heap::installed());
    assert!(
        a.event_active(),
        "the moving square is motion: an event runs"
    );
    assert!(analysed > FRAMES / 4, "only {analysed} frames analysed");
    eprintln!("over {FRAMES} frames ({analysed} analysed in all): {before} -> {after}");
    assert_eq!(
        after.since(&before),
        ipc::heap::Growth::NONE,
        "allocations and live heap bytes over {FRAMES} frames offered to the analyzer"
    );
}
