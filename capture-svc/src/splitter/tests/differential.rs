//! Differential tests: [`Splitter::next_frame`] (jumping runs with `memchr`) against the
//! old byte-at-a-time walker (`bytewise`) on the same chunks of the same stream.

use std::sync::OnceLock;

use super::super::{SplitStats, Splitter};
use super::{frame, marker_biased};
use proptest::prelude::*;

/// Everything a walker did: frames, and after every chunk the counters and the bytes
/// held; then the counters after `finish`.
#[derive(Debug, PartialEq, Eq)]
struct Trace {
    frames: Vec<Vec<u8>>,
    after_chunk: Vec<(SplitStats, usize)>,
    finished: SplitStats,
}

fn walk(max_frame: usize, data: &[u8], cuts: &[usize], bytewise: bool) -> Trace {
    let mut s = Splitter::new(max_frame);
    let mut t = Trace {
        frames: Vec::new(),
        after_chunk: Vec::new(),
        finished: SplitStats::default(),
    };
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let spare = s.spare();
        let n = cuts[i % cuts.len()].min(rest.len()).min(spare.len());
        spare[..n].copy_from_slice(&rest[..n]);
        s.commit(n);
        rest = &rest[n..];
        i += 1;
        loop {
            let f = if bytewise {
                s.next_frame_bytewise()
            } else {
                s.next_frame()
            };
            match f {
                Some(f) => t.frames.push(f.to_vec()),
                None => break,
            }
        }
        t.after_chunk.push((s.stats(), s.buffered()));
    }
    s.finish();
    t.finished = s.stats();
    t
}

/// Both walkers, checked equal; the new one's trace.
fn same(max_frame: usize, data: &[u8], cuts: &[usize]) -> Result<Trace, TestCaseError> {
    let new = walk(max_frame, data, cuts, false);
    let old = walk(max_frame, data, cuts, true);
    prop_assert_eq!(&new, &old);
    Ok(new)
}

/// Real JPEGs: the synthetic camera's (baseline), and `jpeg-encoder`'s of a noisy
/// picture with restart markers, progressive (several scans), and 4:2:0.
fn real() -> &'static [Vec<u8>] {
    static REAL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    REAL.get_or_init(|| {
        let mut out = Vec::new();
        for (w, h, t) in [(160, 120, 1), (96, 64, 15)] {
            let mut scene =
                crate::synthetic::Scene::new(crate::synthetic::Script::default_demo(), w, h);
            let mut jpeg = Vec::new();
            scene.render_jpeg(std::time::Duration::from_secs(t), &mut jpeg);
            out.push(jpeg);
        }
        let (w, h) = (80u16, 48u16);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let pixels: Vec<u8> = (0..usize::from(w) * usize::from(h) * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for (restart, progressive) in [(1, false), (3, false), (0, true), (2, true)] {
            let mut jpeg = Vec::new();
            let mut e = jpeg_encoder::Encoder::new(&mut jpeg, 90);
            e.set_restart_interval(restart);
            e.set_progressive(progressive);
            e.encode(&pixels, w, h, jpeg_encoder::ColorType::Rgb)
                .expect("encode");
            out.push(jpeg);
        }
        out
    })
}

#[test]
fn the_real_jpegs_have_what_the_walker_must_pass_over() {
    let all: Vec<u8> = real().concat();
    let has = |pair: &[u8]| all.windows(2).any(|w| w == pair);
    assert!(has(&[0xFF, 0x00]), "byte stuffing");
    assert!(
        (0xD0..=0xD7).any(|rst| has(&[0xFF, rst])),
        "restart markers"
    );
    let scans = |j: &Vec<u8>| j.windows(2).filter(|w| w == &[0xFF, 0xDA]).count();
    assert!(real().iter().any(|j| scans(j) > 1), "several scans");
    // Each is one frame to both walkers.
    for j in real() {
        let t = same(1 << 20, j, &[j.len()]).unwrap();
        assert_eq!(t.frames, vec![j.clone()]);
    }
}

/// One piece of a stream built from real JPEGs.
#[derive(Debug, Clone)]
enum Piece {
    Whole(usize),
    /// The first `cut` (of 1000ths) of a frame.
    Truncated(usize, u16),
    Garbage(Vec<u8>),
    /// `n` fill `FF` bytes after the SOI and before the EOI.
    Filled(usize, usize),
    /// Bytes overwritten at (1000ths of the length, value).
    Mutated(usize, Vec<(u16, u8)>),
}

fn piece() -> impl Strategy<Value = Piece> {
    let marker_ish = prop_oneof![
        Just(0xFFu8),
        Just(0xD8),
        Just(0xD9),
        Just(0xDA),
        Just(0x00),
        Just(0xD3),
        any::<u8>()
    ];
    prop_oneof![
        4 => (0usize..64).prop_map(Piece::Whole),
        1 => (0usize..64, 0u16..1000).prop_map(|(f, c)| Piece::Truncated(f, c)),
        1 => prop::collection::vec(marker_ish.clone(), 0..40).prop_map(Piece::Garbage),
        1 => (0usize..64, 1usize..5).prop_map(|(f, n)| Piece::Filled(f, n)),
        1 => (0usize..64, prop::collection::vec((0u16..1000, marker_ish), 1..4))
            .prop_map(|(f, m)| Piece::Mutated(f, m)),
    ]
}

fn build(pieces: &[Piece]) -> Vec<u8> {
    let real = real();
    let pick = |i: usize| &real[i % real.len()];
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Whole(f) => out.extend_from_slice(pick(*f)),
            Piece::Truncated(f, c) => {
                let j = pick(*f);
                out.extend_from_slice(&j[..j.len() * usize::from(*c) / 1000]);
            }
            Piece::Garbage(g) => out.extend_from_slice(g),
            Piece::Filled(f, n) => {
                let j = pick(*f);
                out.extend_from_slice(&j[..2]);
                out.extend(std::iter::repeat_n(0xFF, *n));
                out.extend_from_slice(&j[2..j.len() - 2]);
                out.extend(std::iter::repeat_n(0xFF, *n));
                out.extend_from_slice(&j[j.len() - 2..]);
            }
            Piece::Mutated(f, m) => {
                let mut j = pick(*f).clone();
                for (at, v) in m {
                    let i = j.len() * usize::from(*at) / 1000;
                    j[i] = *v;
                }
                out.extend_from_slice(&j);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn same_as_the_bytewise_walker_on_real_jpeg_streams(
        pieces in prop::collection::vec(piece(), 1..10),
        cuts in prop::collection::vec(1usize..20_000, 1..20),
        small in any::<bool>(),
    ) {
        let stream = build(&pieces);
        // Small: the larger real frames are oversized.
        let max_frame = if small { 4000 } else { 1 << 20 };
        let t = same(max_frame, &stream, &cuts)?;
        // The stream's whole real frames come out (unless oversized or hit by a mutation
        // or a cut frame before them, which the walkers agree on above).
        if !small && pieces.iter().all(|p| matches!(p, Piece::Whole(_) | Piece::Filled(..))) {
            prop_assert_eq!(t.frames.len(), pieces.len());
            prop_assert_eq!(t.finished.dropped(), 0);
        }
    }

    #[test]
    fn same_as_the_bytewise_walker_on_random_bytes(
        seed in any::<u64>(),
        len in 0usize..20_000,
        cuts in prop::collection::vec(1usize..3000, 1..10),
        max_frame in 4usize..3000,
    ) {
        let data = marker_biased(seed, len);
        same(max_frame, &data, &cuts)?;
    }

    #[test]
    fn same_as_the_bytewise_walker_on_structured_frames(
        sizes in prop::collection::vec(0usize..3000, 1..8),
        cut_at in prop::collection::vec(0usize..4000, 0..4),
        cuts in prop::collection::vec(1usize..5000, 1..20),
        max_frame in 100usize..3000,
    ) {
        // Synthetic frames with stuffing and RST markers, some cut short.
        let mut stream = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let f = frame(i as u8, *n);
            let end = cut_at.get(i).map_or(f.len(), |c| (*c).min(f.len()));
            stream.extend_from_slice(&f[..end]);
        }
        same(max_frame, &stream, &cuts)?;
    }
}
