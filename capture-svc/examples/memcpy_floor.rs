//! The floor for capture-svc's CPU per frame: one `memcpy` of a frame, on this machine.
//!
//! `cargo run --release -p capture-svc --example memcpy_floor -- BYTES...` prints, for each
//! size, the median time of copying a frame of that many bytes into one of three slot-sized
//! buffers in turn (like the region's slots), over 15 rounds of 200 copies.

use std::time::Instant;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes in bytes"))
        .collect();
    for size in sizes {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let src: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut slots = [vec![0u8; size], vec![0u8; size], vec![0u8; size]];
        let mut rounds = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            for i in 0..200 {
                let dst = &mut slots[i % 3];
                dst.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(dst);
            }
            rounds.push(t.elapsed().as_nanos() / 200);
        }
        rounds.sort_unstable();
        println!("{size} {}", rounds[rounds.len() / 2]);
    }
}
