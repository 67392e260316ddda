//! The splitter's first walker, one byte at a time through the state machine: the reference
//! that the differential tests hold [`Splitter::next_frame`] to (it shares the state machine
//! and what a step does, not the scanning); test-only.

use super::{Splitter, State};

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
            if let Some((from, to)) = self.walk_byte() {
                return Some(&self.buf[from..to]);
            }
        }
        None
    }

    /// The first `seek_soi`, a window at a time.
    fn seek_soi_bytewise(&mut self) -> bool {
        let data = &self.buf[self.start..self.filled];
        let soi = data.windows(2).position(|w| w == [0xFF, 0xD8]);
        self.skip_garbage(soi)
    }
}
