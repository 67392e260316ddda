//! The floor of the live path: one `memcpy` of a frame, on this machine. Built by
//! `scripts/bench-live` with plain `rustc -O` (no crates); prints the median nanoseconds per
//! copy of the given JPEG files, each copied into a reused buffer as the region reader does.
//!
//! Usage: floor FILE...
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let frames: Vec<Vec<u8>> = std::env::args()
        .skip(1)
        .map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}")))
        .collect();
    assert!(!frames.is_empty(), "usage: floor FILE...");
    let mut buf: Vec<u8> = Vec::with_capacity(frames.iter().map(Vec::len).max().unwrap_or(0));
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        for f in &frames {
            buf.clear();
            buf.extend_from_slice(black_box(f));
            black_box(&buf);
        }
        samples.push(t.elapsed().as_nanos() as u64 / frames.len() as u64);
    }
    samples.sort_unstable();
    println!("{}", samples[samples.len() / 2]);
}
