//! The JPEG splitter: turns a camera's byte stream into whole JPEG frames.
//!
//! It walks the JPEG markers instead of guessing from read boundaries: marker segments are
//! skipped by their length, entropy-coded data is scanned for `FF xx` with stuffed `FF 00`
//! bytes and `RSTn` restart markers passed over, and a frame ends at `EOI` (`FF D9`). Bytes
//! before a start of image (`FF D8`) are garbage and dropped (counted). A new `SOI` where a
//! marker was expected means the previous frame was cut off (counted as truncated). A frame
//! that grows past the configured maximum is dropped (counted as oversized) and its remaining
//! bytes are walked without being stored, so the buffer never grows past
//! `max_frame + READ_CHUNK`: memory is flat whatever the input.
//!
//! The buffer is allocated once. Callers read straight into [`Splitter::spare`], then
//! [`Splitter::commit`] and take frames with [`Splitter::next_frame`] until it returns `None`.

#[cfg(test)]
mod bytewise;

/// Room the buffer has past the largest frame: once the frames read so far are taken,
/// [`Splitter::spare`] offers at least this much (and usually far more: all the free room,
/// so one read can bring a whole frame).
pub const READ_CHUNK: usize = 64 * 1024;

/// Counters of a splitter; every dropped byte or frame is counted with its reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitStats {
    /// Whole frames delivered.
    pub frames: u64,
    /// Bytes outside any frame (before an SOI), dropped.
    pub garbage_bytes: u64,
    /// Frames cut off by a new SOI or by the end of the stream.
    pub truncated: u64,
    /// Frames larger than the maximum frame size, dropped.
    pub oversized: u64,
    /// Frames with an impossible marker sequence (bad marker, bad segment length), dropped.
    pub corrupt: u64,
}

impl SplitStats {
    /// All frames dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.truncated + self.oversized + self.corrupt
    }
}

/// Where the walker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for `FF D8`.
    Seek,
    /// Expecting a marker (`FF xx`), possibly after fill `FF` bytes.
    Marker,
    /// Read `FF` at a marker position, need the marker code.
    MarkerCode,
    /// Need the first byte of a segment length; `sos` tells if entropy data follows.
    Len1 { sos: bool },
    /// Need the second byte of a segment length.
    Len2 { sos: bool, hi: u8 },
    /// Skip this many more bytes of segment payload.
    Skip { left: usize, sos: bool },
    /// In entropy-coded data.
    Entropy,
    /// Read `FF` inside entropy-coded data.
    EntropyFf,
}

/// What one walked byte did.
enum Step {
    Continue,
    /// The frame ends after this byte.
    End,
    /// A new SOI started at `self.pos - 1` (the `FF` before): previous frame truncated.
    Restart,
    /// The frame is corrupt; resync from the byte after this one.
    Corrupt,
}

/// Splits a byte stream into JPEG frames with a fixed-size buffer.
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Bytes of `buf` that hold stream data.
    filled: usize,
    /// Where the frame being walked (or the unsearched data) starts; bytes before it are done
    /// with and removed by the next [`Splitter::spare`], so each byte is moved at most once.
    start: usize,
    /// Next byte of `buf` to walk.
    pos: usize,
    state: State,
    max_frame: usize,
    /// The current frame outgrew `max_frame`: its bytes are walked but not kept.
    discarding: bool,
    stats: SplitStats,
}

impl Splitter {
    /// A splitter that delivers frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Splitter {
        let max_frame = max_frame.max(4);
        Splitter {
            buf: vec![0; max_frame + READ_CHUNK],
            filled: 0,
            start: 0,
            pos: 0,
            state: State::Seek,
            max_frame,
            discarding: false,
            stats: SplitStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SplitStats {
        self.stats
    }

    /// The largest frame delivered.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes held now (never more than `max_frame + READ_CHUNK`).
    pub fn buffered(&self) -> usize {
        self.filled - self.start
    }

    /// Room to read new bytes into: all the free room of the buffer, so a read can bring a
    /// whole frame (at least [`READ_CHUNK`] once [`Splitter::next_frame`] returned `None`);
    /// follow with [`Splitter::commit`]. Invalidates frames returned before.
    ///
    /// The bytes not yet taken (a partial frame, usually none when a camera writes whole
    /// frames) move to the front of the buffer: each byte is moved at most once.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.pos -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.filled..]
    }

    /// Marks `n` bytes of the last [`Splitter::spare`] as read.
    ///
    /// # Panics
    /// If `n` is larger than the spare slice was.
    pub fn commit(&mut self, n: usize) {
        assert!(self.filled + n <= self.buf.len(), "commit past spare");
        self.filled += n;
    }

    /// Copies `data` in, in chunks, calling `on_frame` for every whole frame.
    pub fn feed(&mut self, mut data: &[u8], mut on_frame: impl FnMut(&[u8])) {
        while !data.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(data.len());
            spare[..n].copy_from_slice(&data[..n]);
            self.commit(n);
            data = &data[n..];
            while let Some(frame) = self.next_frame() {
                on_frame(frame);
            }
        }
    }

    /// The end of the stream: a frame in progress is counted as truncated; the splitter is
    /// ready for a new stream.
    pub fn finish(&mut self) {
        if self.state == State::Seek {
            self.stats.garbage_bytes += (self.filled - self.start) as u64;
        } else if !self.discarding {
            // (A discarded frame was already counted as oversized.)
            self.stats.truncated += 1;
        }
        self.reset_stream();
    }

    /// Forgets any partial frame without counting it (a new stream starts, e.g. after a
    /// reconnect, whose old bytes were already counted by [`Splitter::finish`]).
    pub fn reset_stream(&mut self) {
        self.filled = 0;
        self.start = 0;
        self.pos = 0;
        self.state = State::Seek;
        self.discarding = false;
    }

    /// The next whole frame in what was read so far, or `None` when more bytes are needed.
    /// The slice is valid until the next [`Splitter::spare`].
    ///
    /// Runs of bytes that cannot change the walker's state are jumped over instead of stepped
    /// through: entropy-coded data up to the next `FF` (found with [`memchr`], a vectorised
    /// scan), and marker-segment payloads by their length. The result is the same as walking
    /// every byte (`bytewise::next_frame_bytewise`, the old walker, kept as the reference of
    /// a differential test): a jumped run only moves `pos`, and the size bound is checked after
    /// it as after each byte, with the same outcome.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        while self.pos < self.filled {
            match self.state {
                State::Seek => {
                    if !self.seek_soi() {
                        return None;
                    }
                    continue;
                }
                State::Entropy => {
                    let rest = &self.buf[self.pos..self.filled];
                    let run = memchr::memchr(0xFF, rest).unwrap_or(rest.len());
                    if run > 0 {
                        self.pos += run;
                        self.check_size();
                        continue;
                    }
                    // At an FF: stepped below.
                }
                State::Skip { left, sos } => {
                    // `left` is at least 1 and a byte is there: the run is never empty.
                    let run = left.min(self.filled - self.pos);
                    self.pos += run;
                    self.state = self.after_skip(left - run, sos);
                    self.check_size();
                    continue;
                }
                _ => {}
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            match self.step(b) {
                Step::Continue => {}
                Step::End => {
                    let from = self.start;
                    self.start = self.pos;
                    self.state = State::Seek;
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    self.stats.frames += 1;
                    return Some(&self.buf[from..self.pos]);
                }
                Step::Restart => self.restart(),
                Step::Corrupt => self.corrupt(),
            }
            self.check_size();
        }
        None
    }

    /// A new SOI where a marker was expected: the frame so far is truncated.
    fn restart(&mut self) {
        if !self.discarding {
            self.stats.truncated += 1;
        }
        self.discarding = false;
        // The new frame starts at the FF D8 just walked (the FF is kept even while
        // discarding: see `check_size`).
        self.start = self.pos - 2;
        self.state = State::Marker;
    }

    /// An impossible marker sequence: the frame is dropped, the walk resyncs after it.
    fn corrupt(&mut self) {
        if !self.discarding {
            self.stats.corrupt += 1;
        }
        self.discarding = false;
        self.start = self.pos;
        self.state = State::Seek;
    }

    /// After walking up to `pos`: a frame past the maximum is dropped (counted once) and its
    /// further bytes are walked without being kept.
    fn check_size(&mut self) {
        if !self.discarding && self.pos - self.start > self.max_frame {
            self.stats.oversized += 1;
            self.discarding = true;
        }
        if self.discarding {
            // Keep walking without keeping the bytes; the last one stays, in case it is the
            // FF of an SOI.
            self.start = self.pos - 1;
        }
    }

    /// Drops bytes before the next `FF D8`; true if one was found.
    fn seek_soi(&mut self) -> bool {
        let data = &self.buf[self.start..self.filled];
        match memchr::memmem::find(data, &[0xFF, 0xD8]) {
            Some(i) => {
                self.stats.garbage_bytes += i as u64;
                self.start += i;
                self.pos = self.start + 2;
                self.state = State::Marker;
                true
            }
            None => {
                // Keep a trailing FF: it may be half of an SOI.
                let keep = usize::from(data.last() == Some(&0xFF));
                let drop = data.len() - keep;
                self.stats.garbage_bytes += drop as u64;
                self.start += drop;
                self.pos = self.filled;
                false
            }
        }
    }

    fn step(&mut self, b: u8) -> Step {
        match self.state {
            State::Seek => unreachable!("handled by seek_soi"),
            State::Marker => {
                if b == 0xFF {
                    self.state = State::MarkerCode;
                    Step::Continue
                } else {
                    Step::Corrupt
                }
            }
            State::MarkerCode => self.marker(b),
            State::Len1 { sos } => {
                self.state = State::Len2 { sos, hi: b };
                Step::Continue
            }
            State::Len2 { sos, hi } => {
                let len = usize::from(u16::from_be_bytes([hi, b]));
                if len < 2 {
                    return Step::Corrupt;
                }
                self.state = self.after_skip(len - 2, sos);
                Step::Continue
            }
            State::Skip { left, sos } => {
                self.state = self.after_skip(left - 1, sos);
                Step::Continue
            }
            State::Entropy => {
                if b == 0xFF {
                    self.state = State::EntropyFf;
                }
                Step::Continue
            }
            State::EntropyFf => match b {
                0x00 | 0xD0..=0xD7 => {
                    self.state = State::Entropy;
                    Step::Continue
                }
                0xFF => Step::Continue,
                other => self.marker(other),
            },
        }
    }

    fn after_skip(&self, left: usize, sos: bool) -> State {
        match (left, sos) {
            (0, true) => State::Entropy,
            (0, false) => State::Marker,
            (left, sos) => State::Skip { left, sos },
        }
    }

    /// A marker code after `FF`.
    fn marker(&mut self, code: u8) -> Step {
        match code {
            0xFF => {
                // Fill byte.
                self.state = State::MarkerCode;
                Step::Continue
            }
            0xD9 => Step::End,
            0xD8 => Step::Restart,
            0x01 | 0xD0..=0xD7 => {
                self.state = State::Marker;
                Step::Continue
            }
            0x00 => Step::Corrupt,
            0xDA => {
                self.state = State::Len1 { sos: true };
                Step::Continue
            }
            _ => {
                self.state = State::Len1 { sos: false };
                Step::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    /// Differential tests: [`Splitter::next_frame`] (jumping runs with `memchr`) against the
    /// old byte-at-a-time walker (`bytewise`) on the same chunks of the same stream.
    mod differential {
        use std::sync::OnceLock;

        use super::super::{SplitStats, Splitter};
        use super::frame;
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
                    let mut scene = crate::synthetic::Scene::new(
                        crate::synthetic::Script::default_demo(),
                        w,
                        h,
                    );
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
                // Bytes biased towards marker bytes (as in the property tests below), with
                // runs of plain bytes for the jumps to take.
                let mut x = seed | 1;
                let data: Vec<u8> = (0..len)
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
                            _ => (x >> 32) as u8 & 0x7F,
                        }
                    })
                    .collect();
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
    }

    mod proptests {
        use super::{READ_CHUNK, Splitter, frame, split_all};
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
                // Bytes biased towards marker bytes, from a seed (fast to generate).
                let mut x = seed | 1;
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        match x % 8 {
                            0 => 0xFF,
                            1 => 0xD8,
                            2 => 0xD9,
                            3 => 0xDA,
                            4 => 0x00,
                            _ => (x >> 32) as u8,
                        }
                    })
                    .collect();
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
    }
}
