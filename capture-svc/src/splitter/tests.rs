//! Unit tests of the splitter: frames out of streams, every dropped byte counted, and the
//! fast walker held to the bytewise one.

use super::*;

/// A tiny but structurally real JPEG: SOI, APP0, DQT-ish segment, SOS, entropy data with
/// stuffed bytes and restart markers, EOI. `tag` makes frames distinguishable.
pub(crate) fn frame(tag: u8, entropy_len: usize) -> Vec<u8> {
    let mut f = vec![0xFF, 0xD8];
    f.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x07, b'J', b'F', b'I', b'F', tag]);
    // A segment whose payload contains FF D9 and FF D8: must be skipped by length.
    f.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xD8]);
    f.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, tag]);
    for i in 0..entropy_len {
        match i % 50 {
            10 => f.extend_from_slice(&[0xFF, 0x00]),
            30 => f.extend_from_slice(&[0xFF, 0xD0 + (i % 8) as u8]),
            _ => f.push(((i as u8) ^ tag) & 0x7F),
        }
    }
    f.extend_from_slice(&[0xFF, 0xD9]);
    f
}

/// `len` random bytes from `seed`, biased towards the bytes of JPEG markers (`FF`, SOI, EOI,
/// SOS, stuffing, restart markers), with short runs of other bytes for the walkers to jump;
/// fast to generate.
fn marker_biased(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 16 {
                0 => 0xFF,
                1 => 0xD8,
                2 => 0xD9,
                3 => 0xDA,
                4 => 0x00,
                5 => 0xD0 + (x >> 40) as u8 % 8,
                6 => 0x01,
                _ => (x >> 32) as u8,
            }
        })
        .collect()
}

fn split_all(s: &mut Splitter, data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    s.feed(data, |f| out.push(f.to_vec()));
    out
}

#[test]
fn whole_frames_out_of_a_stream() {
    let a = frame(1, 500);
    let b = frame(2, 300);
    let mut stream = a.clone();
    stream.extend_from_slice(&b);
    let mut s = Splitter::new(10_000);
    let frames = split_all(&mut s, &stream);
    assert_eq!(frames, vec![a, b]);
    assert_eq!(s.stats().frames, 2);
    assert_eq!(s.stats().dropped(), 0);
    assert_eq!(s.stats().garbage_bytes, 0);
}

#[test]
fn garbage_between_frames_is_dropped_and_counted() {
    let a = frame(1, 100);
    let b = frame(2, 100);
    let mut stream = b"junk".to_vec();
    stream.extend_from_slice(&a);
    stream.extend_from_slice(&[0x00, 0xFF, 0x12, 0xFF]);
    stream.extend_from_slice(&b);
    let mut s = Splitter::new(10_000);
    let frames = split_all(&mut s, &stream);
    assert_eq!(frames, vec![a, b]);
    assert_eq!(s.stats().garbage_bytes, 8);
}

#[test]
fn truncated_tail_is_counted_at_finish() {
    let a = frame(1, 100);
    let b = frame(2, 100);
    let mut stream = a.clone();
    stream.extend_from_slice(&b[..b.len() / 2]);
    let mut s = Splitter::new(10_000);
    let frames = split_all(&mut s, &stream);
    assert_eq!(frames, vec![a]);
    s.finish();
    assert_eq!(s.stats().truncated, 1);
    assert_eq!(s.buffered(), 0);
}

#[test]
fn frame_cut_by_a_new_soi_is_truncated_and_the_next_kept() {
    let a = frame(1, 100);
    let b = frame(2, 100);
    let mut stream = a[..60].to_vec();
    stream.extend_from_slice(&b);
    let mut s = Splitter::new(10_000);
    let frames = split_all(&mut s, &stream);
    assert_eq!(frames, vec![b]);
    assert_eq!(s.stats().truncated, 1);
}

#[test]
fn oversized_frame_is_dropped_and_the_next_kept() {
    let big = frame(1, 50_000);
    let small = frame(2, 100);
    let mut stream = small.clone();
    stream.extend_from_slice(&big);
    stream.extend_from_slice(&small);
    let mut s = Splitter::new(1000);
    let mut frames = Vec::new();
    let mut peak = 0;
    for chunk in stream.chunks(700) {
        s.feed(chunk, |f| frames.push(f.to_vec()));
        peak = peak.max(s.buffered());
    }
    assert_eq!(frames, vec![small.clone(), small]);
    assert_eq!(s.stats().oversized, 1);
    assert!(peak <= 1000 + READ_CHUNK);
    assert_eq!(s.buf.len(), 1000 + READ_CHUNK, "buffer never reallocated");
}

#[test]
fn endless_stream_without_soi_stays_bounded() {
    let mut s = Splitter::new(1000);
    let junk = vec![0x55u8; 10_000];
    for _ in 0..1000 {
        s.feed(&junk, |_| panic!("no frame in junk"));
        assert!(s.buffered() <= 1);
    }
    assert_eq!(s.stats().garbage_bytes, 10_000_000);
    assert_eq!(s.buf.len(), 1000 + READ_CHUNK);
}

#[test]
fn bad_marker_is_corrupt_and_resynced() {
    let a = frame(1, 100);
    let mut bad = vec![0xFF, 0xD8, 0x12, 0x34];
    bad.extend_from_slice(&a);
    let mut s = Splitter::new(10_000);
    let frames = split_all(&mut s, &bad);
    assert_eq!(frames, vec![a]);
    assert_eq!(s.stats().corrupt, 1);
}

#[test]
fn real_encoded_jpeg_is_one_frame() {
    let mut scene =
        crate::synthetic::Scene::new(crate::synthetic::Script::default_demo(), 160, 120);
    let mut jpeg = Vec::new();
    scene.render_jpeg(std::time::Duration::from_secs(1), &mut jpeg);
    let mut stream = jpeg.clone();
    stream.extend_from_slice(&jpeg);
    let mut s = Splitter::new(1 << 20);
    let frames = split_all(&mut s, &stream);
    assert_eq!(frames, vec![jpeg.clone(), jpeg]);
}

mod differential;

mod proptests;
