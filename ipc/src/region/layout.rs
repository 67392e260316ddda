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

/// Bytes reserved for the region header: one page.
pub const HEADER_SIZE: usize = 4096;
/// Bytes of each slot's header, before its frame data.
pub const SLOT_HEADER_SIZE: usize = 64;
/// The eight bytes every region file starts with.
pub const MAGIC: [u8; 8] = *b"MECAMFRM";
/// Bumped whenever this layout changes; readers refuse any other.
pub const LAYOUT_VERSION: u32 = 1;
/// The number of frame slots: the newest, the one before it, and the one being written.
pub const SLOT_COUNT: usize = 3;
/// The largest slot capacity a region may declare (64 MiB): far above any JPEG from a Pi camera,
/// and a guard against a garbage header asking for an absurd mapping.
pub const MAX_SLOT_CAPACITY: usize = 64 << 20;

/// Fields of the header page (byte offsets).
#[derive(Debug, Clone, Copy)]
pub(crate) enum HeaderField {
    /// u32 at 8: [`LAYOUT_VERSION`].
    LayoutVersion,
    /// u32 at 12: number of slots.
    SlotCount,
    /// u64 at 16: bytes of frame data each slot can hold.
    SlotCapacity,
    /// u64 at 24: distance from one slot to the next.
    SlotStride,
    /// u64 at 32: the whole file's size.
    TotalSize,
    /// u64 at 40: random, fresh each time a writer creates the region. Never zero.
    Generation,
    /// u64 at 48: `seq << 2 | slot` of the newest committed frame; zero before the first.
    Latest,
}

impl HeaderField {
    pub(crate) const fn offset(self) -> usize {
        match self {
            HeaderField::LayoutVersion => 8,
            HeaderField::SlotCount => 12,
            HeaderField::SlotCapacity => 16,
            HeaderField::SlotStride => 24,
            HeaderField::TotalSize => 32,
            HeaderField::Generation => 40,
            HeaderField::Latest => 48,
        }
    }
}

/// Fields of a slot header (byte offsets from the slot's start). All are u64.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SlotField {
    /// The sequence lock: odd while the writer is inside the slot.
    Lock,
    /// Sequence number of the frame in the slot (from 1).
    Seq,
    /// Capture time, `CLOCK_MONOTONIC` nanoseconds.
    MonoNs,
    /// Capture time, nanoseconds since the Unix epoch.
    WallNs,
    /// `width << 32 | height`.
    Geometry,
    /// Frame format code ([`super::FrameFormat`]).
    Format,
    /// Length of the frame in bytes.
    Len,
}

impl SlotField {
    pub(crate) const fn offset(self) -> usize {
        match self {
            SlotField::Lock => 0,
            SlotField::Seq => 8,
            SlotField::MonoNs => 16,
            SlotField::WallNs => 24,
            SlotField::Geometry => 32,
            SlotField::Format => 40,
            SlotField::Len => 48,
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

/// Packs the `Latest` header word.
pub(crate) const fn pack_latest(seq: u64, slot: usize) -> u64 {
    (seq << 2) | slot as u64
}

/// Unpacks the `Latest` header word into `(seq, slot)`.
pub(crate) const fn unpack_latest(word: u64) -> (u64, usize) {
    (word >> 2, (word & 3) as usize)
}
