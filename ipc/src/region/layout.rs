//! The byte layout of the frame region file: offsets and sizes, nothing else.
//!
//! ```text
//! offset 0            header page (HEADER_SIZE = 4096 bytes, fields below, rest zero)
//! HEADER_SIZE         slot 0: 64-byte slot header, then slot_capacity bytes, padded to 64
//! + slot_stride       slot 1
//! + 2 * slot_stride   slot 2
//! ```
//!
//! All multi-byte fields are native-endian: the region never leaves the machine.
//!
//! Every field a reader loads is a 32-bit word, even on 64-bit machines: readers map the file
//! read-only, and Rust defines atomic loads on read-only memory only for relaxed loads of at
//! most pointer width (on 32-bit ARM a 64-bit atomic load is `ldrexd`, which needs write
//! access and faults on a read-only page). A 64-bit value (a sequence number, a timestamp, the
//! generation) is two words, low then high, and a reader only trusts a pair it read under the
//! sequence lock that guards it (or, for the generation, one written before the file was
//! published).

/// Bytes reserved for the region header: one page.
pub const HEADER_SIZE: usize = 4096;
/// Bytes of each slot's header, before its frame data.
pub const SLOT_HEADER_SIZE: usize = 64;
/// The eight bytes every region file starts with.
pub const MAGIC: [u8; 8] = *b"MECAMFRM";
/// Bumped whenever this layout changes; readers refuse any other. Version 2: every field a
/// reader loads is 32 bits wide (version 1 had 64-bit fields).
pub const LAYOUT_VERSION: u32 = 2;
/// The number of frame slots: the newest, the one before it, and the one being written.
pub const SLOT_COUNT: usize = 3;
/// The largest slot capacity a region may declare (64 MiB): far above any JPEG from a Pi camera,
/// and a guard against a garbage header asking for an absurd mapping.
pub const MAX_SLOT_CAPACITY: usize = 64 << 20;

/// Fields of the header page. Every one is a native-endian `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderField {
    /// At 8: [`LAYOUT_VERSION`].
    LayoutVersion,
    /// At 12: number of slots.
    SlotCount,
    /// At 16: bytes of frame data each slot can hold.
    SlotCapacity,
    /// At 20: distance from one slot to the next.
    SlotStride,
    /// At 24: the whole file's size.
    TotalSize,
    /// At 32: low half of the generation: random, fresh each time a writer creates the region,
    /// never zero. Written before the file is published and never again.
    GenerationLo,
    /// At 36: high half of the generation.
    GenerationHi,
    /// At 40: the sequence lock of the three `Latest*` words: odd while the writer changes them.
    LatestLock,
    /// At 44: the slot of the newest committed frame.
    LatestSlot,
    /// At 48: low half of the newest committed frame's sequence number; zero before the first.
    LatestSeqLo,
    /// At 52: high half of it.
    LatestSeqHi,
}

impl HeaderField {
    /// Every header field, for the layout checks.
    pub const ALL: [HeaderField; 11] = [
        HeaderField::LayoutVersion,
        HeaderField::SlotCount,
        HeaderField::SlotCapacity,
        HeaderField::SlotStride,
        HeaderField::TotalSize,
        HeaderField::GenerationLo,
        HeaderField::GenerationHi,
        HeaderField::LatestLock,
        HeaderField::LatestSlot,
        HeaderField::LatestSeqLo,
        HeaderField::LatestSeqHi,
    ];

    /// Byte offset from the start of the file.
    pub const fn offset(self) -> usize {
        match self {
            HeaderField::LayoutVersion => 8,
            HeaderField::SlotCount => 12,
            HeaderField::SlotCapacity => 16,
            HeaderField::SlotStride => 20,
            HeaderField::TotalSize => 24,
            HeaderField::GenerationLo => 32,
            HeaderField::GenerationHi => 36,
            HeaderField::LatestLock => 40,
            HeaderField::LatestSlot => 44,
            HeaderField::LatestSeqLo => 48,
            HeaderField::LatestSeqHi => 52,
        }
    }
}

/// Fields of a slot header (byte offsets from the slot's start). Every one is a native-endian
/// `u32`; all but the lock are only trusted when read under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotField {
    /// At 0: the sequence lock: odd while the writer is inside the slot.
    Lock,
    /// At 4: frame format code ([`super::FrameFormat`]).
    Format,
    /// At 8: low half of the sequence number of the frame in the slot (from 1).
    SeqLo,
    /// At 12: high half of it.
    SeqHi,
    /// At 16: low half of the capture time, `CLOCK_MONOTONIC` nanoseconds.
    MonoLo,
    /// At 20: high half of it.
    MonoHi,
    /// At 24: low half of the capture time, nanoseconds since the Unix epoch.
    WallLo,
    /// At 28: high half of it.
    WallHi,
    /// At 32: width in pixels.
    Width,
    /// At 36: height in pixels.
    Height,
    /// At 40: length of the frame in bytes.
    Len,
}

impl SlotField {
    /// Every slot field, for the layout checks.
    pub const ALL: [SlotField; 11] = [
        SlotField::Lock,
        SlotField::Format,
        SlotField::SeqLo,
        SlotField::SeqHi,
        SlotField::MonoLo,
        SlotField::MonoHi,
        SlotField::WallLo,
        SlotField::WallHi,
        SlotField::Width,
        SlotField::Height,
        SlotField::Len,
    ];

    /// Byte offset from the start of the slot.
    pub const fn offset(self) -> usize {
        match self {
            SlotField::Lock => 0,
            SlotField::Format => 4,
            SlotField::SeqLo => 8,
            SlotField::SeqHi => 12,
            SlotField::MonoLo => 16,
            SlotField::MonoHi => 20,
            SlotField::WallLo => 24,
            SlotField::WallHi => 28,
            SlotField::Width => 32,
            SlotField::Height => 36,
            SlotField::Len => 40,
        }
    }
}

/// The distance between slots for a capacity: header plus data, rounded up to 64 bytes.
pub const fn slot_stride(slot_capacity: usize) -> usize {
    (SLOT_HEADER_SIZE + slot_capacity).div_ceil(64) * 64
}

/// The size of the whole region file for a capacity.
pub const fn region_size(slot_capacity: usize) -> usize {
    HEADER_SIZE + SLOT_COUNT * slot_stride(slot_capacity)
}

/// Splits a 64-bit value into its `(low, high)` 32-bit words.
pub(crate) const fn split(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}

/// Joins `(low, high)` 32-bit words into a 64-bit value.
pub(crate) const fn join(lo: u32, hi: u32) -> u64 {
    ((hi as u64) << 32) | lo as u64
}

// The layout's promises, checked when the crate compiles rather than when a region is mapped.
const _: () = {
    // Every field is a 4-byte word, 4-aligned, inside its header, after the magic, and no two
    // fields overlap.
    let mut i = 0;
    while i < HeaderField::ALL.len() {
        let at = HeaderField::ALL[i].offset();
        assert!(at >= MAGIC.len() && at % 4 == 0 && at + 4 <= HEADER_SIZE);
        let mut j = i + 1;
        while j < HeaderField::ALL.len() {
            assert!(HeaderField::ALL[j].offset() != at);
            j += 1;
        }
        i += 1;
    }
    let mut i = 0;
    while i < SlotField::ALL.len() {
        let at = SlotField::ALL[i].offset();
        assert!(at % 4 == 0 && at + 4 <= SLOT_HEADER_SIZE);
        let mut j = i + 1;
        while j < SlotField::ALL.len() {
            assert!(SlotField::ALL[j].offset() != at);
            j += 1;
        }
        i += 1;
    }
    // Slots and their data start 64-aligned (given a page-aligned mapping), so the frame bytes
    // can be copied a machine word at a time on every target.
    assert!(HEADER_SIZE % 64 == 0 && SLOT_HEADER_SIZE % 64 == 0);
    assert!(64 % std::mem::align_of::<usize>() == 0);
    // Every size a header word holds fits in 32 bits, for the largest capacity allowed.
    assert!(region_size(MAX_SLOT_CAPACITY) <= u32::MAX as usize);
    assert!(SLOT_COUNT <= u32::MAX as usize);
};
