//! The loop both heap benches time: one allocation and its free per round, of sizes a service
//! allocates (a small string, a log line, a frame header), with the result printed in ns per
//! allocate+free pair. Included by `heap_counting.rs` and `heap_system.rs`, which differ only
//! in their global allocator.

use std::hint::black_box;
use std::time::Instant;

/// Rounds per size: enough for a stable figure, bounded so the bench ends in seconds.
const ROUNDS: u32 = 5_000_000;

/// Times [`ROUNDS`] allocate+free pairs per size and prints one line per size.
pub fn run(allocator: &str) {
    for size in [16usize, 256, 4096] {
        // Warm-up: the allocator's caches, the first page faults.
        for _ in 0..ROUNDS / 10 {
            drop(black_box(Vec::<u8>::with_capacity(black_box(size))));
        }
        let start = Instant::now();
        for _ in 0..ROUNDS {
            drop(black_box(Vec::<u8>::with_capacity(black_box(size))));
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        println!("{allocator}: {size} B: {ns:.1} ns per allocate+free");
    }
}
