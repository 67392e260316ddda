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
#[cfg(test)]
mod tests;

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
            if let Some((from, to)) = self.walk_byte() {
                return Some(&self.buf[from..to]);
            }
        }
        None
    }

    /// Walks the byte at `pos` through the state machine; the end of a frame that is kept
    /// gives its range.
    fn walk_byte(&mut self) -> Option<(usize, usize)> {
        let b = self.buf[self.pos];
        self.pos += 1;
        let step = self.step(b);
        self.take_step(step)
    }

    /// Acts on what [`Splitter::step`] found; the end of a frame that is kept gives its range.
    fn take_step(&mut self, step: Step) -> Option<(usize, usize)> {
        match step {
            Step::Continue => {}
            Step::End => {
                let from = self.start;
                self.start = self.pos;
                self.state = State::Seek;
                if std::mem::take(&mut self.discarding) {
                    return None;
                }
                self.stats.frames += 1;
                return Some((from, self.pos));
            }
            Step::Restart => self.restart(),
            Step::Corrupt => self.corrupt(),
        }
        self.check_size();
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
        let soi = memchr::memmem::find(&self.buf[self.start..self.filled], &[0xFF, 0xD8]);
        self.skip_garbage(soi)
    }

    /// Drops (and counts) the garbage before an SOI at `soi` bytes from the start, or all of
    /// it but a trailing `FF` when there is none; true if there is one.
    fn skip_garbage(&mut self, soi: Option<usize>) -> bool {
        match soi {
            Some(i) => {
                self.stats.garbage_bytes += i as u64;
                self.start += i;
                self.pos = self.start + 2;
                self.state = State::Marker;
                true
            }
            None => {
                // Keep a trailing FF: it may be half of an SOI.
                let data = &self.buf[self.start..self.filled];
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
