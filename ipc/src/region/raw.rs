//! The one place in mecam that touches mapped memory through raw pointers.
//!
//! Everything here works on a [`Mapping`]: a pointer and a length that were checked once, when
//! the region was opened or created, against the fixed layout in [`super::layout`]. Callers
//! outside this module only ever see safe functions that take a slot index and a
//! [`SlotField`]; every offset is computed here and bounds-checked against the mapping length.
//!
//! The region is shared between processes, so every word that two processes both touch is
//! accessed as an atomic, and readers stay within what Rust defines on a read-only
//! (`PROT_READ`) mapping on every target, 32-bit ARM included: relaxed atomic loads of at most
//! pointer width. So a reader never does an acquire load (on some targets that is a
//! read-modify-write, which faults on a read-only page) nor a 64-bit atomic load (on armv7,
//! `ldrexd`, which needs write access): it loads 32-bit header words (`AtomicU32`), all
//! relaxed, and its callers order them with explicit fences. The frame bytes are copied under
//! a sequence lock (the classic seqlock pattern) with loads that are defined while the writer
//! stores (`copy_shared`: volatile SIMD loads where the target has them, as the `seqlock` crate
//! does, else relaxed `AtomicUsize` loads, and `AtomicU8` for the tail): a reader may copy
//! bytes the writer is changing at that moment, then sees the lock changed and throws the copy
//! away.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use memmap2::{Mmap, MmapMut};

use super::layout::{HEADER_SIZE, HeaderField, SLOT_HEADER_SIZE, SlotField};

/// What keeps the pages mapped.
#[derive(Debug)]
enum Backing {
    ReadOnly(#[allow(dead_code)] Mmap),
    ReadWrite(#[allow(dead_code)] MmapMut),
}

/// The type of every header and slot-header word, the only atomic a reader loads from the
/// read-only mapping besides the copy's bytes and machine words.
type Word = AtomicU32;

// A reader's loads from its read-only mapping are defined only up to pointer width (on 32-bit
// ARM a wider atomic load is `ldrexd`, which needs write access): pinned for every target this
// compiles for (scripts/test builds and tests the region for armv7 too).
const _: () = {
    assert!(std::mem::size_of::<Word>() <= std::mem::size_of::<usize>());
    assert!(std::mem::size_of::<Word>() == 4 && std::mem::align_of::<Word>() == 4);
};

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

    /// The 32-bit word at `offset`, which the caller took from a [`HeaderField`] (inside the
    /// header page, 4-aligned: checked at compile time in `layout`) or from a [`SlotField`]
    /// past a checked slot base (inside the slot header, 4-aligned, likewise).
    fn word(&self, offset: usize) -> &Word {
        debug_assert!(offset % 4 == 0 && offset + 4 <= self.len);
        // SAFETY: every caller passes a field offset that the const assertions in `layout`
        // place 4-aligned inside the header page or inside a slot header, and a slot base that
        // `slot_base` checked against `slot_count`; the mapping covers the header and every
        // slot (invariant of `checked`) and is page-aligned, so the word is inside it and
        // 4-aligned. `Word` (AtomicU32) has the layout of u32; the mapping outlives `self`. Other
        // processes access these words only atomically too. A reader's mapping is read-only:
        // its callers only ever `load` it with `Relaxed`, which Rust defines on read-only
        // memory for types no wider than a pointer.
        unsafe { &*(self.base.add(offset) as *const Word) }
    }

    /// Loads a header field (relaxed: on a read-only mapping nothing stronger is defined;
    /// the caller orders it with a fence).
    pub(crate) fn header(&self, field: HeaderField) -> u32 {
        self.word(field.offset()).load(Ordering::Relaxed)
    }

    /// Stores a header field (writer only).
    pub(crate) fn set_header(&self, field: HeaderField, value: u32, order: Ordering) {
        assert!(self.writable, "store through a read-only mapping");
        self.word(field.offset()).store(value, order);
    }

    /// Copies the header's magic bytes out.
    pub(crate) fn magic(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: offsets 0..8 are inside the mapping (len >= HEADER_SIZE, invariant of
            // `checked`); AtomicU8 has the layout of u8 and any address is aligned for it; a
            // relaxed byte load is defined on read-only memory. The magic is written once,
            // before the file is renamed into place.
            *b = unsafe { &*(self.base.add(i) as *const AtomicU8) }.load(Ordering::Relaxed);
        }
        out
    }

    /// Writes the header's magic bytes (writer only, before the region is published).
    pub(crate) fn set_magic(&self, magic: &[u8; 8]) {
        assert!(self.writable, "store through a read-only mapping");
        for (i, b) in magic.iter().enumerate() {
            // SAFETY: offsets 0..8 are inside a writable mapping (checked above); byte atomics
            // need no alignment.
            unsafe { &*(self.base.add(i) as *const AtomicU8) }.store(*b, Ordering::Relaxed);
        }
    }

    /// Loads a slot header field (relaxed; the caller validates it under the slot's lock and
    /// orders it with fences).
    pub(crate) fn slot(&self, slot: usize, field: SlotField) -> u32 {
        self.word(self.slot_base(slot) + field.offset())
            .load(Ordering::Relaxed)
    }

    /// Stores a slot header field (writer only).
    pub(crate) fn set_slot(&self, slot: usize, field: SlotField, value: u32, order: Ordering) {
        assert!(self.writable, "store through a read-only mapping");
        self.word(self.slot_base(slot) + field.offset())
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
        // the slot header plus the capacity (invariant of `checked`); the mapping is writable;
        // the source is a distinct Rust slice so the ranges cannot overlap. In this process
        // nothing else touches these bytes (the writer is `&mut` in `publish`, and the only
        // writer: the region's flock). Readers in other processes load them concurrently,
        // with atomic loads only, detect the overlap through the sequence lock and discard
        // their copy; a plain copy here keeps publishing at memcpy speed.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(start), bytes.len()) };
    }

    /// Copies `len` bytes out of the data area of `slot` into `buf`, replacing its contents.
    ///
    /// The copy is made of relaxed atomic loads (a machine word at a time, then bytes for the
    /// tail), so it is defined even while the writer changes the slot; it may then be torn,
    /// and the caller must validate the sequence lock afterwards (after an acquire fence) and
    /// discard the copy if it changed. `buf` keeps its allocation across calls, so once it
    /// has grown to a frame's size it never allocates again.
    ///
    /// # Panics
    /// If `len` exceeds the slot capacity; the caller checks first.
    pub(crate) fn read_slot_data(&self, slot: usize, len: usize, buf: &mut Vec<u8>) {
        buf.clear();
        buf.reserve(len);
        // SAFETY: `buf` has at least `len` bytes of spare capacity after `reserve`, its own heap
        // memory that never overlaps the mapping; `set_len` is sound once `copy_slot` wrote
        // all `len` of them.
        unsafe {
            self.copy_slot(slot, len, buf.as_mut_ptr());
            buf.set_len(len);
        }
    }

    /// [`Mapping::read_slot_data`] into `dst`, already `len` bytes long (any buffer type).
    pub(crate) fn read_slot_data_to(&self, slot: usize, dst: &mut [u8]) {
        // SAFETY: `dst` is `dst.len()` writable bytes of this process's memory.
        unsafe { self.copy_slot(slot, dst.len(), dst.as_mut_ptr()) }
    }

    /// Copies `len` bytes of `slot`'s data to `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes and must not overlap the mapping.
    unsafe fn copy_slot(&self, slot: usize, len: usize, dst: *mut u8) {
        assert!(len <= self.slot_capacity, "length larger than the slot");
        let start = self.slot_base(slot) + SLOT_HEADER_SIZE;
        // SAFETY: the source range `start..start+len` is inside the mapping (the stride covers
        // header + capacity, and len <= capacity: invariant of `checked`) and `start` is
        // 64-aligned (page-aligned base; HEADER_SIZE, stride and SLOT_HEADER_SIZE multiples of
        // 64: checked in `checked` and at compile time in `layout`), as `copy_shared` needs.
        // The destination is the caller's: `len` writable bytes apart from the mapping.
        unsafe { copy_shared(self.base.add(start), dst, len) }
    }
}

/// Bytes per machine word: the widest atomic load Rust defines on read-only memory everywhere.
const WORD: usize = std::mem::size_of::<usize>();

/// Copies `len` bytes from the shared mapping at `src` to private memory at `dst` with loads
/// that are defined while another process writes `src`, and about as fast as `memcpy`.
///
/// Where the target has SIMD registers in its baseline (x86_64: SSE2, 16 bytes, or AVX, 32
/// bytes, when the CPU has it; aarch64: NEON, 16 bytes), the bulk is read with volatile loads
/// of one register each, as the `seqlock` crate does: a volatile load is emitted exactly once,
/// as written, as one load instruction, and is never assumed to see a value the compiler
/// knows; whatever it sees is plain bytes (every bit pattern is a valid vector), and the
/// caller throws a torn copy away. Elsewhere (32-bit ARM, whose baseline has no NEON), and for
/// what is left, relaxed `AtomicUsize` loads, then `AtomicU8` loads for the tail, which the
/// Rust memory model defines under a concurrent store. Every load is a plain load
/// instruction, valid on a read-only page. The loads are not ordered among themselves: the
/// caller orders the whole copy against the sequence lock with fences.
///
/// # Safety
/// - `src..src+len` is inside a live mapping, readable, and `src` is 64-byte aligned; every
///   other process changes those bytes only through the CPU's own stores, and this process
///   holds no Rust reference into them.
/// - `dst..dst+len` is valid for writes and does not overlap the source.
unsafe fn copy_shared(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let (src, dst, len) = {
        #[cfg(target_arch = "x86_64")]
        let done = if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the caller's promises, passed on; the CPU has AVX (just checked).
            unsafe { copy_vectors_avx(src, dst, len) }
        } else {
            // SAFETY: the caller's promises, passed on; SSE2 is in x86_64's baseline.
            unsafe { copy_vectors::<std::arch::x86_64::__m128i>(src, dst, len) }
        };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller's promises, passed on; NEON is in aarch64's baseline.
        let done = unsafe { copy_vectors::<std::arch::aarch64::uint8x16_t>(src, dst, len) };
        // SAFETY: `done <= len`, so both pointers stay inside their ranges; the source stays
        // 64-aligned, as the bulk is a multiple of 64 bytes.
        unsafe { (src.add(done), dst.add(done), len - done) }
    };
    // SAFETY: the caller's promises (a 64-aligned source is `usize`-aligned).
    unsafe { copy_words(src, dst, len) }
}

/// [`copy_vectors`] with 32-byte AVX registers.
///
/// # Safety
/// As [`copy_shared`], and the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn copy_vectors_avx(src: *const u8, dst: *mut u8, len: usize) -> usize {
    // SAFETY: the caller's promises, passed on; compiled here with AVX enabled.
    unsafe { copy_vectors::<std::arch::x86_64::__m256i>(src, dst, len) }
}

/// Copies the largest multiple of four `V`s (a SIMD register type of 16 or 32 bytes) up to
/// `len` with volatile loads of one `V` each, four per step; returns the bytes copied.
///
/// # Safety
/// As [`copy_shared`], and `V` is a plain SIMD register type the CPU has, at most 64 bytes
/// wide and aligned to its size.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn copy_vectors<V: Copy>(src: *const u8, dst: *mut u8, len: usize) -> usize {
    let step = 4 * std::mem::size_of::<V>();
    let steps = len / step;
    for k in 0..steps {
        // SAFETY: `src + k * step .. + step` is inside the source range (`k < len / step`) and
        // aligned for `V` (a 64-aligned source, steps a multiple of V's size, V's alignment at
        // most 64); each volatile load reads shared bytes another process may be storing to at
        // that moment, which is the racy read the sequence lock exists for (see
        // `copy_shared`), and on a read-only page it is a plain load. The store goes to this
        // process's own destination, unaligned (a Vec<u8> is only byte-aligned), inside its
        // range.
        unsafe {
            let p = src.add(k * step).cast::<V>();
            let v: [V; 4] = [
                p.read_volatile(),
                p.add(1).read_volatile(),
                p.add(2).read_volatile(),
                p.add(3).read_volatile(),
            ];
            dst.add(k * step).cast::<[V; 4]>().write_unaligned(v);
        }
    }
    steps * step
}

/// Copies `len` bytes with relaxed `AtomicUsize` loads, then `AtomicU8` loads for the tail.
///
/// # Safety
/// As [`copy_shared`], except that `src` need only be aligned for `usize`.
unsafe fn copy_words(src: *const u8, dst: *mut u8, len: usize) {
    const UNROLL: usize = 8;
    let words = len / WORD;
    let mut i = 0;
    // SAFETY: (for the whole body) every `AtomicUsize` is at `src + k * WORD` with `k < words`, so
    // inside the source range and aligned (the caller's promises); `AtomicUsize` has the
    // layout of `usize`. Each is loaded with `Relaxed` only, which Rust defines on read-only
    // memory for atomics no wider than a pointer, and an atomic load racing another process's
    // store is not undefined: it yields some value, and the caller's lock check throws a torn
    // copy away. Each `usize` goes to `dst + k * WORD`, inside the destination, with an
    // unaligned store (a Vec<u8> is only byte-aligned). The tail uses `AtomicU8`, which needs
    // no alignment, the same way.
    unsafe {
        while i + UNROLL <= words {
            let mut chunk = [0usize; UNROLL];
            for (k, w) in chunk.iter_mut().enumerate() {
                *w = (*(src.add((i + k) * WORD) as *const AtomicUsize)).load(Ordering::Relaxed);
            }
            dst.add(i * WORD)
                .cast::<[usize; UNROLL]>()
                .write_unaligned(chunk);
            i += UNROLL;
        }
        while i < words {
            let w = (*(src.add(i * WORD) as *const AtomicUsize)).load(Ordering::Relaxed);
            dst.add(i * WORD).cast::<usize>().write_unaligned(w);
            i += 1;
        }
        for b in words * WORD..len {
            let byte = (*(src.add(b) as *const AtomicU8)).load(Ordering::Relaxed);
            dst.add(b).write(byte);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every copy path against `copy_from_slice`, including the ones this CPU would not pick
    //! (SSE2 where it has AVX), for lengths around every word, vector and step boundary, into
    //! a destination that is not aligned.

    use super::*;

    #[repr(C, align(64))]
    struct Aligned([u8; 8192]);

    fn check(name: &str, copy: impl Fn(*const u8, *mut u8, usize) -> usize) {
        let mut src = Box::new(Aligned([0; 8192]));
        for (i, b) in src.0.iter_mut().enumerate() {
            *b = (i * 131 + 7) as u8;
        }
        for len in [
            0,
            1,
            7,
            8,
            9,
            63,
            64,
            65,
            127,
            128,
            129,
            255,
            1000,
            4096 + 13,
            8192,
        ] {
            let mut dst = vec![0u8; len + 1];
            // Offset by one: the destination is never aligned.
            let done = copy(src.0.as_ptr(), dst[1..].as_mut_ptr(), len);
            assert!(done <= len, "{name}: copied {done} of {len}");
            assert_eq!(
                dst[1..1 + done],
                src.0[..done],
                "{name}: {len} bytes ({done} copied)"
            );
        }
    }

    #[test]
    fn every_copy_path_copies_exactly() {
        // SAFETY: (for each call below) the source is a live, 64-aligned buffer of 8192 bytes
        // and `len <= 8192`; the destination is a distinct Vec with room for `len` bytes.
        check("copy_shared", |s, d, n| unsafe {
            copy_shared(s, d, n);
            n
        });
        // SAFETY: as above.
        check("copy_words", |s, d, n| unsafe {
            copy_words(s, d, n);
            n
        });
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: as above; SSE2 is in x86_64's baseline.
            check("sse2", |s, d, n| unsafe {
                copy_vectors::<std::arch::x86_64::__m128i>(s, d, n)
            });
            if std::arch::is_x86_feature_detected!("avx") {
                // SAFETY: as above; the CPU has AVX.
                check("avx", |s, d, n| unsafe { copy_vectors_avx(s, d, n) });
            }
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above; NEON is in aarch64's baseline.
        check("neon", |s, d, n| unsafe {
            copy_vectors::<std::arch::aarch64::uint8x16_t>(s, d, n)
        });
    }
}
