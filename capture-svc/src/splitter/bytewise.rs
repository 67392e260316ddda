//! The splitter's first walker, one byte at a time through the state machine: the reference
//! that the differential tests hold [`Splitter::next_frame`] to. Kept as it was; test-only.

use super::{Splitter, State, Step};

impl Splitter {
    /// [`Splitter::next_frame`], walking every byte.
    pub(crate) fn next_frame_bytewise(&mut self) -> Option<&[u8]> {
        while self.pos < self.filled {
            if self.state == State::Seek {
                if !self.seek_soi_bytewise() {
                    return None;
                }
                continue;
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
                Step::Restart => {
                    if !self.discarding {
                        self.stats.truncated += 1;
                    }
                    self.discarding = false;
                    // The new frame starts at the FF D8 just walked (the FF is kept even
                    // while discarding: see below).
                    self.start = self.pos - 2;
                    self.state = State::Marker;
                }
                Step::Corrupt => {
                    if !self.discarding {
                        self.stats.corrupt += 1;
                    }
                    self.discarding = false;
                    self.start = self.pos;
                    self.state = State::Seek;
                }
            }
            if !self.discarding && self.pos - self.start > self.max_frame {
                self.stats.oversized += 1;
                self.discarding = true;
            }
            if self.discarding {
                // Keep walking without keeping the bytes; the last one stays, in case it is
                // the FF of an SOI.
                self.start = self.pos - 1;
            }
        }
        None
    }

    /// The first `seek_soi`, a window at a time.
    fn seek_soi_bytewise(&mut self) -> bool {
        let data = &self.buf[self.start..self.filled];
        match data.windows(2).position(|w| w == [0xFF, 0xD8]) {
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
}
