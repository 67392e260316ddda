//! Property tests: any cut of the stream gives the same frames, and random bytes never
//! panic nor grow the buffer past its bound.

use super::{READ_CHUNK, Splitter, frame, marker_biased, split_all};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn cutting_the_stream_anywhere_gives_the_same_frames(
        sizes in prop::collection::vec(0usize..3000, 1..8),
        garbage in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no FF", |b| *b != 0xFF), 0..40), 8),
        cuts in prop::collection::vec(1usize..5000, 1..40),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            stream.extend_from_slice(&garbage[i]);
            let f = frame(i as u8, *n);
            stream.extend_from_slice(&f);
            want.push(f);
        }
        let mut whole = Splitter::new(100_000);
        let at_once = split_all(&mut whole, &stream);
        prop_assert_eq!(&at_once, &want);

        let mut s = Splitter::new(100_000);
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            s.feed(&rest[..n], |f| got.push(f.to_vec()));
            rest = &rest[n..];
            i += 1;
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(s.stats(), whole.stats());
    }

    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        seed in any::<u64>(),
        len in 0usize..20_000,
        chunk in 1usize..3000,
    ) {
        let data = marker_biased(seed, len);
        let mut s = Splitter::new(500);
        for c in data.chunks(chunk) {
            s.feed(c, |f| {
                assert!(f.len() <= 500);
                assert_eq!(&f[..2], &[0xFF, 0xD8]);
                assert_eq!(&f[f.len() - 2..], &[0xFF, 0xD9]);
            });
            prop_assert!(s.buffered() <= 500 + READ_CHUNK);
        }
        s.finish();
        prop_assert_eq!(s.buffered(), 0);
    }
}
