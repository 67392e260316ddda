//! The reading side of a region: opening and checking the header, and copying a frame out
//! under its slot's sequence lock.

use std::cell::Cell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};

use bytes::BytesMut;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::layout::{HEADER_SIZE, HeaderField, MAGIC, SlotField, join, region_size, slot_stride};
use super::raw::Mapping;
use super::*;

/// Counters of a reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Frames copied and verified.
    pub read: u64,
    /// Frames gone before they could be copied.
    pub overwritten: u64,
    /// Copies discarded because the writer raced them.
    pub torn: u64,
    /// Slots found with impossible values.
    pub corrupt: u64,
}

/// The reading side of a region: read-only file, `PROT_READ` mapping, no way to write.
#[derive(Debug)]
pub struct RegionReader {
    path: PathBuf,
    map: Mapping,
    generation: u64,
    slot_capacity: usize,
    dev_ino: (u64, u64),
    read: Cell<u64>,
    overwritten: Cell<u64>,
    torn: Cell<u64>,
    corrupt: Cell<u64>,
}

impl RegionReader {
    /// Opens the region at `path` read-only and checks its header.
    ///
    /// # Errors
    /// A distinct [`OpenError`] for a missing file, a truncated one, a bad magic, a wrong
    /// layout version, an inconsistent geometry, a size mismatch or an unfinished header.
    pub fn open(path: &Path) -> Result<RegionReader, OpenError> {
        let io_err = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        // Read-only descriptor: the mapping made from it cannot be writable.
        let file = open_file(path, OFlag::O_RDONLY, Mode::empty()).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let len = meta.len();
        if len < HEADER_SIZE as u64 {
            return Err(OpenError::Truncated { len });
        }
        let header = Mapping::map_reader(&file).map_err(io_err)?;
        let magic = header.magic();
        if magic != MAGIC {
            return Err(OpenError::BadMagic { found: magic });
        }
        // Relaxed loads only: the mapping is read-only (see `raw`).
        let generation = join(
            header.header(HeaderField::GenerationLo),
            header.header(HeaderField::GenerationHi),
        );
        // Pairs with the Release stores of the generation in `RegionWriter::create`: having
        // seen it, the fields written before it are visible below.
        fence(Ordering::Acquire);
        let version = header.header(HeaderField::LayoutVersion);
        if version != LAYOUT_VERSION {
            return Err(OpenError::WrongVersion { found: version });
        }
        let slot_count = header.header(HeaderField::SlotCount);
        let capacity = header.header(HeaderField::SlotCapacity);
        let stride = header.header(HeaderField::SlotStride);
        let total = header.header(HeaderField::TotalSize);
        if slot_count as usize != SLOT_COUNT {
            return Err(OpenError::BadGeometry(format!(
                "{slot_count} slots, expected {SLOT_COUNT}"
            )));
        }
        if capacity == 0 || capacity as usize > MAX_SLOT_CAPACITY {
            return Err(OpenError::BadGeometry(format!(
                "slot capacity {capacity} out of range"
            )));
        }
        let capacity = capacity as usize;
        if stride as usize != slot_stride(capacity) {
            return Err(OpenError::BadGeometry(format!(
                "slot stride {stride} does not match capacity {capacity}"
            )));
        }
        if total as usize != region_size(capacity) {
            return Err(OpenError::BadGeometry(format!(
                "total size {total} does not match capacity {capacity}"
            )));
        }
        if u64::from(total) != len {
            return Err(OpenError::SizeMismatch {
                file: len,
                header: u64::from(total),
            });
        }
        if generation == 0 {
            return Err(OpenError::Uninitialized);
        }
        let map = header
            .with_slots(SLOT_COUNT, stride as usize, capacity)
            .map_err(|_| OpenError::BadGeometry("slots do not fit the mapping".into()))?;
        Ok(RegionReader {
            path: path.to_owned(),
            map,
            generation,
            slot_capacity: capacity,
            dev_ino: (meta.dev(), meta.ino()),
            read: Cell::new(0),
            overwritten: Cell::new(0),
            torn: Cell::new(0),
            corrupt: Cell::new(0),
        })
    }

    /// The generation of the region this reader mapped.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of frame data each slot holds.
    pub fn slot_capacity(&self) -> usize {
        self.slot_capacity
    }

    /// Where the region was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the file at the path is no longer the one mapped (a writer restarted and
    /// created a new generation, or removed it): reopen.
    pub fn is_stale(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.dev_ino,
            Err(_) => true,
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            read: self.read.get(),
            overwritten: self.overwritten.get(),
            torn: self.torn.get(),
            corrupt: self.corrupt.get(),
        }
    }

    /// Sequence number of the newest committed frame (0 before the first), copying nothing:
    /// lets a reader that copies on demand tell whether its copy is still the newest.
    ///
    /// # Errors
    /// [`ReadError::Torn`] if the writer was changing the newest frame's announcement on each
    /// of [`LATEST_ATTEMPTS`] tries (counted).
    pub fn latest_seq(&self) -> Result<u64, ReadError> {
        self.latest().map(|(_, seq)| seq)
    }

    /// Copies the newest committed frame into `buf` (see [`RegionReader::read_slot`]).
    ///
    /// # Errors
    /// [`ReadError::Empty`] before the first frame, [`ReadError::Torn`] if the writer was
    /// changing the newest frame's announcement on each of [`LATEST_ATTEMPTS`] tries, else as
    /// [`RegionReader::read_slot`].
    pub fn read_latest(&self, buf: &mut Vec<u8>) -> Result<FrameMeta, ReadError> {
        match self.latest()? {
            (_, 0) => Err(ReadError::Empty),
            (slot, seq) => self.read_slot(slot, seq, buf),
        }
    }

    /// [`RegionReader::read_latest`] into a [`BytesMut`]: a buffer that can be frozen into
    /// [`bytes::Bytes`] to share with many readers and, once they let go, taken back
    /// ([`bytes::Bytes::try_into_mut`]) and filled again, so a frame fanned out to any number
    /// of clients costs one copy and no allocation. `buf` is resized to the frame (only the
    /// bytes past its old length are zeroed first) and keeps its allocation.
    ///
    /// # Errors
    /// As [`RegionReader::read_latest`].
    pub fn read_latest_bytes(&self, buf: &mut BytesMut) -> Result<FrameMeta, ReadError> {
        match self.latest()? {
            (_, 0) => Err(ReadError::Empty),
            (slot, seq) => {
                let result = self.read_slot_by(slot, seq, |map, slot, len| {
                    buf.resize(len, 0);
                    map.read_slot_data_to(slot, &mut buf[..]);
                });
                if matches!(result, Err(ReadError::Torn)) {
                    buf.clear();
                }
                result
            }
        }
    }

    /// The newest frame's announcement in the header, `(slot, seq)`; `seq` is 0 before the
    /// first frame. Read under its own sequence lock with relaxed 32-bit loads and fences.
    fn latest(&self) -> Result<(u32, u64), ReadError> {
        let map = &self.map;
        for _ in 0..LATEST_ATTEMPTS {
            let before = map.header(HeaderField::LatestLock);
            // Pairs with the Release store of the even lock value in `publish`: the words
            // below are at least that announcement's.
            fence(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let slot = map.header(HeaderField::LatestSlot);
            let seq = join(
                map.header(HeaderField::LatestSeqLo),
                map.header(HeaderField::LatestSeqHi),
            );
            // Pairs with the Release fence after the odd lock store in `publish`: if any word
            // above came from a newer announcement, the lock below has moved on.
            fence(Ordering::Acquire);
            if map.header(HeaderField::LatestLock) != before {
                std::hint::spin_loop();
                continue;
            }
            return Ok((slot, seq));
        }
        Err(self.torn())
    }

    /// Copies the frame `seq` from `slot` into `buf`, replacing its contents, if the slot still
    /// holds it. `buf` keeps its allocation: after the first frame of a size, no allocation.
    ///
    /// # Errors
    /// [`ReadError::Overwritten`] when the slot moved on, [`ReadError::Torn`] when the writer
    /// raced the copy (the copy is discarded), [`ReadError::Corrupt`] for a slot index or length
    /// out of range. Each is counted.
    pub fn read_slot(
        &self,
        slot: u32,
        seq: u64,
        buf: &mut Vec<u8>,
    ) -> Result<FrameMeta, ReadError> {
        let result = self.read_slot_by(slot, seq, |map, slot, len| {
            map.read_slot_data(slot, len, buf);
        });
        if matches!(result, Err(ReadError::Torn)) {
            buf.clear();
        }
        result
    }

    /// The sequence-locked read of [`RegionReader::read_slot`], copying with `copy(map, slot,
    /// len)`; a torn copy is the caller's to discard.
    fn read_slot_by(
        &self,
        slot: u32,
        seq: u64,
        copy: impl FnOnce(&Mapping, usize, usize),
    ) -> Result<FrameMeta, ReadError> {
        let slot = slot as usize;
        if slot >= SLOT_COUNT {
            return Err(self.corrupt(format!("slot {slot} out of range")));
        }
        let map = &self.map;
        // Relaxed loads then fences throughout: the mapping is read-only (see `raw`).
        let before = map.slot(slot, SlotField::Lock);
        // Pairs with the Release store of the even lock value at the end of `publish`: the
        // fields and bytes below are at least that frame's.
        fence(Ordering::Acquire);
        if before & 1 == 1 {
            // The writer is refilling this slot: whatever frame it held is gone.
            self.overwritten.set(self.overwritten.get() + 1);
            return Err(ReadError::Overwritten);
        }
        let slot_seq = join(
            map.slot(slot, SlotField::SeqLo),
            map.slot(slot, SlotField::SeqHi),
        );
        let len = map.slot(slot, SlotField::Len);
        let width = map.slot(slot, SlotField::Width);
        let height = map.slot(slot, SlotField::Height);
        let format = map.slot(slot, SlotField::Format);
        let mono_ns = join(
            map.slot(slot, SlotField::MonoLo),
            map.slot(slot, SlotField::MonoHi),
        );
        let wall_ns = join(
            map.slot(slot, SlotField::WallLo),
            map.slot(slot, SlotField::WallHi),
        );
        let unchanged = |map: &Mapping| {
            // Pairs with the Release fence in `publish` that follows the odd lock store: if any
            // load above saw a write of the next frame, this load sees the lock moved.
            fence(Ordering::Acquire);
            map.slot(slot, SlotField::Lock) == before
        };
        if slot_seq != seq {
            self.overwritten.set(self.overwritten.get() + 1);
            return Err(ReadError::Overwritten);
        }
        let len = len as usize;
        if len > self.slot_capacity {
            return Err(if unchanged(map) {
                self.corrupt(format!("length {len} over capacity {}", self.slot_capacity))
            } else {
                self.torn()
            });
        }
        let Some(format) = FrameFormat::from_code(format) else {
            return Err(if unchanged(map) {
                self.corrupt(format!("unknown format code {format}"))
            } else {
                self.torn()
            });
        };
        copy(map, slot, len);
        #[cfg(test)]
        super::tests::after_copy();
        if !unchanged(map) {
            return Err(self.torn());
        }
        self.read.set(self.read.get() + 1);
        Ok(FrameMeta {
            seq,
            slot: slot as u32,
            width,
            height,
            format,
            mono_ns,
            wall_ns,
            len,
        })
    }

    fn torn(&self) -> ReadError {
        self.torn.set(self.torn.get() + 1);
        ReadError::Torn
    }

    fn corrupt(&self, why: String) -> ReadError {
        self.corrupt.set(self.corrupt.get() + 1);
        ReadError::Corrupt(why)
    }
}
