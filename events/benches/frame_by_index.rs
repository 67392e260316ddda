//! What the event player's seek costs: one frame of a clip by its number through the index
//! (`ClipIndex`, what `GET /events/<id>/frames/<n>` does after opening the file), against
//! walking the clip from its start to that frame (`AviFrames`, what a replay without the
//! index would do). A 600-frame clip of 40 KB frames (40 s at 15 fps, 640x480-sized), on the
//! page cache. `cargo bench -p events --bench frame_by_index`; `FRAME_BENCH_FRAMES` changes
//! the clip's length.

use std::fs::File;
use std::io::BufReader;
use std::time::Instant;

use events::avi::{AviFrames, AviWriter, ClipIndex};

const FRAME_BYTES: usize = 40_000;

fn main() {
    let frames: u64 = std::env::var("FRAME_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.avi");
    let mut w = AviWriter::create(&path, 640, 480, 15.0).unwrap();
    let mut jpeg = vec![0x55u8; FRAME_BYTES];
    jpeg[..2].copy_from_slice(&[0xFF, 0xD8]);
    for k in 0..frames {
        jpeg[2..10].copy_from_slice(&k.to_le_bytes());
        w.push(&jpeg, k * 66_666_667).unwrap();
    }
    w.finish().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();

    // Open, read the index's place, read one frame: the whole cost of one request's file work.
    let rounds = 2000u64;
    let mut buf = Vec::new();
    let t = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = seed % frames;
        let mut f = File::open(&path).unwrap();
        let idx = ClipIndex::open(&mut f, len).unwrap();
        idx.frame(&mut f, n, &mut buf).unwrap();
        assert_eq!(buf[2..10], n.to_le_bytes());
    }
    let by_index = t.elapsed().as_nanos() as f64 / rounds as f64;

    // Walking to the middle frame from the start.
    let walks = 50u64;
    let t = Instant::now();
    for _ in 0..walks {
        let mut r = AviFrames::new(BufReader::new(File::open(&path).unwrap())).unwrap();
        for _ in 0..=frames / 2 {
            assert!(r.next_frame(&mut buf).unwrap());
        }
    }
    let walked = t.elapsed().as_nanos() as f64 / walks as f64;
    println!(
        "clip of {frames} frames of {FRAME_BYTES} bytes: a frame by its index (open, header, entry, frame) {:.1} us; \
         walking to the middle frame {:.1} us ({:.0}x)",
        by_index / 1000.0,
        walked / 1000.0,
        walked / by_index
    );
}
