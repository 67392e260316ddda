//! The one place in mecam that touches mapped memory through raw pointers.
//!
//! Everything here works on a [`Mapping`]: a pointer and a length that were checked once, when
//! the region was opened or created, against the fixed layout in [`super::layout`]. Callers
//! outside this module only ever see safe functions that take a slot index and a
//! [`SlotField`]; every offset is computed here and bounds-checked against the mapping length.
//!
//! The region is shared between processes, so every field that two processes both touch is
//! accessed as an atomic. The frame bytes themselves are copied with plain memory copies under a
//! sequence lock (the classic seqlock pattern): a reader may copy bytes the writer is changing at
//! that moment, but it then sees the lock changed and throws the copy away.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::{Mmap, MmapMut};

use super::layout::{HEADER_SIZE, HeaderField, SLOT_HEADER_SIZE, SlotField};

/// What keeps the pages mapped.
#[derive(Debug)]
enum Backing {
    ReadOnly(#[allow(dead_code)] Mmap),
    ReadWrite(#[allow(dead_code)] MmapMut),
}

/// A mapped region and its checked geometry. It owns the mapping, so no pointer into it can
/// outlive it.
///
/// Invariant: `base..base+len` is the live mapping held by `_backing`, page-aligned, at least
/// `HEADER_SIZE + slot_count * slot_stride` long, and `slot_stride` is a multiple of 64 that is
/// at least `SLOT_HEADER_SIZE + slot_capacity`. `writable` is true only for a `PROT_WRITE` map.
#[derive(Debug)]
pub(crate) struct Mapping {
    _backing: Backing,
    base: *mut u8,
    len: usize,
    slot_count: usize,
    slot_stride: usize,
    slot_capacity: usize,
    writable: bool,
}

// SAFETY: the pointer is only dereferenced through atomics and through copies guarded by the
// sequence lock, both of which are sound from any thread; the mapping lives as long as `self`.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `file` read-write for the writer, with the given geometry.
    ///
    /// # Errors
    /// What mmap says, or `InvalidInput` if the geometry does not fit the file.
    pub(crate) fn map_writer(
        file: &File,
        slot_count: usize,
        slot_stride: usize,
        slot_capacity: usize,
    ) -> io::Result<Mapping> {
        // SAFETY: memmap2 requires that nobody truncates or remaps the file under us. The writer
        // created this file under a private name; after it is renamed into place only this
        // writer writes it and nothing ever truncates it (a new writer replaces it by rename).
        let mut mmap = unsafe { MmapMut::map_mut(file)? };
        let (base, len) = (mmap.as_mut_ptr(), mmap.len());
        Mapping::checked(
            Backing::ReadWrite(mmap),
            base,
            len,
            slot_count,
            slot_stride,
            slot_capacity,
            true,
        )
    }

    /// Maps `file` read-only (`PROT_READ`) for a reader, covering only the header until
    /// [`Mapping::with_slots`] is given a checked geometry.
    ///
    /// # Errors
    /// What mmap says, or `InvalidInput` if the file is shorter than the header.
    pub(crate) fn map_reader(file: &File) -> io::Result<Mapping> {
        // SAFETY: as in `map_writer`: the writer never truncates a published region, so the
        // pages stay backed for as long as we map them.
        let mmap = unsafe { Mmap::map(file)? };
        let (base, len) = (mmap.as_ptr() as *mut u8, mmap.len());
        Mapping::checked(Backing::ReadOnly(mmap), base, len, 0, 64, 0, false)
    }

    /// The same mapping with a slot geometry read from (and checked against) its header.
    ///
    /// # Errors
    /// `InvalidInput` if the slots do not fit the mapping.
    pub(crate) fn with_slots(
        self,
        slot_count: usize,
        slot_stride: usize,
        slot_capacity: usize,
    ) -> io::Result<Mapping> {
        let Mapping {
            _backing,
            base,
            len,
            writable,
            ..
        } = self;
        Mapping::checked(
            _backing,
            base,
            len,
            slot_count,
            slot_stride,
            slot_capacity,
            writable,
        )
    }

    fn checked(
        backing: Backing,
        base: *mut u8,
        len: usize,
        slot_count: usize,
        slot_stride: usize,
        slot_capacity: usize,
        writable: bool,
    ) -> io::Result<Mapping> {
        let needed = slot_count
            .checked_mul(slot_stride)
            .and_then(|s| s.checked_add(HEADER_SIZE));
        let fits = needed.is_some_and(|n| n <= len)
            && slot_stride % 64 == 0
            && slot_stride >= SLOT_HEADER_SIZE + slot_capacity
            && (base as usize) % 64 == 0;
        if !fits {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "region geometry does not fit the mapping",
            ));
        }
        Ok(Mapping {
            _backing: backing,
            base,
            len,
            slot_count,
            slot_stride,
            slot_capacity,
            writable,
        })
    }

    fn slot_base(&self, slot: usize) -> usize {
        assert!(slot < self.slot_count, "slot {slot} out of range");
        HEADER_SIZE + slot * self.slot_stride
    }

    fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % 8 == 0 && offset + 8 <= self.len,
            "u64 field at {offset} out of range"
        );
        // SAFETY: the offset is inside the mapping (checked above) and 8-aligned because the base
        // is page-aligned; AtomicU64 has the same layout as u64; the mapping outlives `self`
        // (invariant of `new`). Other processes only access this word atomically too.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset % 4 == 0 && offset + 4 <= self.len,
            "u32 field at {offset} out of range"
        );
        // SAFETY: as in `atomic_u64`, for a 4-byte aligned word.
        unsafe { &*(self.base.add(offset) as *const AtomicU32) }
    }

    /// Loads a 64-bit header field.
    pub(crate) fn header_u64(&self, field: HeaderField, order: Ordering) -> u64 {
        self.atomic_u64(field.offset()).load(order)
    }

    /// Stores a 64-bit header field (writer only).
    pub(crate) fn set_header_u64(&self, field: HeaderField, value: u64, order: Ordering) {
        assert!(self.writable, "store through a read-only mapping");
        self.atomic_u64(field.offset()).store(value, order);
    }

    /// Loads a 32-bit header field.
    pub(crate) fn header_u32(&self, field: HeaderField, order: Ordering) -> u32 {
        self.atomic_u32(field.offset()).load(order)
    }

    /// Stores a 32-bit header field (writer only).
    pub(crate) fn set_header_u32(&self, field: HeaderField, value: u32, order: Ordering) {
        assert!(self.writable, "store through a read-only mapping");
        self.atomic_u32(field.offset()).store(value, order);
    }

    /// Copies the header's magic bytes out.
    pub(crate) fn magic(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        for (i, b) in out.iter_mut().enumerate() {
            // Byte-wise volatile reads: the magic is written once before the file is renamed
            // into place, so nothing races it, but volatile keeps the compiler honest.
            // SAFETY: offsets 0..8 are inside the mapping (len >= HEADER_SIZE).
            *b = unsafe { self.base.add(i).read_volatile() };
        }
        out
    }

    /// Writes the header's magic bytes (writer only, before the region is published).
    pub(crate) fn set_magic(&self, magic: &[u8; 8]) {
        assert!(self.writable, "store through a read-only mapping");
        for (i, b) in magic.iter().enumerate() {
            // SAFETY: offsets 0..8 are inside a writable mapping (checked above).
            unsafe { self.base.add(i).write_volatile(*b) };
        }
    }

    /// Loads a slot header field.
    pub(crate) fn slot_u64(&self, slot: usize, field: SlotField, order: Ordering) -> u64 {
        self.atomic_u64(self.slot_base(slot) + field.offset())
            .load(order)
    }

    /// Stores a slot header field (writer only).
    pub(crate) fn set_slot_u64(&self, slot: usize, field: SlotField, value: u64, order: Ordering) {
        assert!(self.writable, "store through a read-only mapping");
        self.atomic_u64(self.slot_base(slot) + field.offset())
            .store(value, order);
    }

    /// Copies `bytes` into the data area of `slot` (writer only, inside the sequence lock).
    ///
    /// # Panics
    /// If `bytes` is longer than the slot capacity; the caller checks first.
    pub(crate) fn write_slot_data(&self, slot: usize, bytes: &[u8]) {
        assert!(self.writable, "store through a read-only mapping");
        assert!(
            bytes.len() <= self.slot_capacity,
            "frame larger than the slot"
        );
        let start = self.slot_base(slot) + SLOT_HEADER_SIZE;
        // SAFETY: `start + bytes.len()` is inside the mapping because the slot stride covers
        // the slot header plus the capacity (invariant of `new`); the mapping is writable; the
        // source is a distinct Rust slice so the ranges cannot overlap. Readers in other
        // processes may copy these bytes concurrently: they detect that through the sequence
        // lock and discard their copy.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(start), bytes.len()) };
    }

    /// Copies `len` bytes out of the data area of `slot` into `buf`, replacing its contents.
    ///
    /// The copy may be torn if the writer is in this slot at the same time: the caller must
    /// validate the sequence lock afterwards and discard the copy if it changed. `buf` keeps its
    /// allocation across calls, so once it has grown to a frame's size it never allocates again.
    ///
    /// # Panics
    /// If `len` exceeds the slot capacity; the caller checks first.
    pub(crate) fn read_slot_data(&self, slot: usize, len: usize, buf: &mut Vec<u8>) {
        assert!(len <= self.slot_capacity, "length larger than the slot");
        let start = self.slot_base(slot) + SLOT_HEADER_SIZE;
        buf.clear();
        buf.reserve(len);
        // SAFETY: the source range `start..start+len` is inside the mapping (stride covers
        // header + capacity, and len <= capacity); the destination has at least `len` bytes of
        // spare capacity after `reserve`; a Vec's buffer never overlaps a mapping we hold. We
        // never create a Rust reference to the shared bytes, only copy through a raw pointer,
        // and the caller discards torn copies. `set_len` is sound because all `len` bytes were
        // just initialised by the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(start), buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
    }
}
