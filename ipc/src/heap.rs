//! The counting global allocator every mecam service installs: the system allocator plus
//! three relaxed counters (live heap bytes, allocations, peak live bytes), read by the
//! services' status lines, web-svc's `/metrics` and the steady-state allocation tests.
//!
//! The second and last module of the project with `unsafe` code (the first is `region::raw`):
//! implementing [`GlobalAlloc`] is an `unsafe impl`, and every method only forwards to
//! [`System`] with the caller's own arguments; [`release_large_blocks`] is one `mallopt` call. A maintained crate was not taken: `stats_alloc`
//! has no peak, `cap` no allocation count, and either would be a dependency for forty lines.
//!
//! Install it in a binary (services keep `#![forbid(unsafe_code)]`, which the attribute does
//! not need):
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: ipc::heap::Counting = ipc::heap::Counting;
//! ```
//!
//! Without it installed every figure reads 0 ([`installed`] says which).
//!
//! Services also call [`release_large_blocks`] first thing: glibc then maps every block of
//! [`LARGE_BLOCK`] bytes or more on its own and unmaps it when it is freed, so a buffer used
//! for a moment (argon2's 7 MiB work area at a login, a pre-capture arena the ring outgrew)
//! goes back to the kernel, instead of staying in the heap because glibc's adaptive threshold
//! rose to its size after the first one.
//!
//! Cost: `cargo bench -p ipc --bench heap_counting` and `--bench heap_system` print ns per
//! allocate+free pair through this allocator and the plain system one. On the x86-64 build
//! machine, uncontended: 23 ns against 7 ns for 16 and 256 bytes, 27 ns against 14-16 ns for
//! 4 KiB, i.e. about 15 ns more per pair (three atomic read-modify-writes). Services allocate
//! nothing per frame in the steady state, so this is paid at start and per request.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Live heap bytes: requested sizes of the blocks allocated and not yet freed. All counters are
/// Relaxed: each is a statistic on its own, read with no other memory to synchronise with.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The highest [`LIVE`] seen.
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Allocations since start (`alloc`, `alloc_zeroed`, and each `realloc`, which may move).
static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting. See the module documentation for how to install it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapStats {
    /// Bytes allocated and not yet freed (as requested, without the allocator's overhead).
    pub live: usize,
    /// The highest `live` since start.
    pub peak: usize,
    /// Allocations since start, reallocations included.
    pub allocs: u64,
}

impl std::fmt::Display for HeapStats {
    /// `heap 1234567 B live, 2345678 B peak, 98765 allocs`: the tail of the services' status.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "heap {} B live, {} B peak, {} allocs",
            self.live, self.peak, self.allocs
        )
    }
}

impl HeapStats {
    /// What happened from `earlier` to `self`: what a steady-state test asserts is
    /// [`Growth::NONE`].
    pub fn since(&self, earlier: &HeapStats) -> Growth {
        Growth {
            allocs: self.allocs - earlier.allocs,
            live: self.live as i64 - earlier.live as i64,
        }
    }
}

/// The change between two [`HeapStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    /// Allocations made in between.
    pub allocs: u64,
    /// Change of the live heap bytes (negative: freed more than allocated).
    pub live: i64,
}

impl Growth {
    /// No allocation, the live heap where it was.
    pub const NONE: Growth = Growth { allocs: 0, live: 0 };
}

/// The counters now. Each is read on its own (Relaxed): under concurrent allocation the three
/// are not one instant's, which a status line does not need.
pub fn stats() -> HeapStats {
    HeapStats {
        live: LIVE.load(Ordering::Relaxed),
        peak: PEAK.load(Ordering::Relaxed),
        allocs: ALLOCS.load(Ordering::Relaxed),
    }
}

/// Whether [`Counting`] is this process's global allocator (true once anything allocated
/// through it; a Rust program allocates before `main`).
pub fn installed() -> bool {
    ALLOCS.load(Ordering::Relaxed) > 0
}

/// The counters before and after `counted` runs of `step`, which first runs `warm_up` times
/// uncounted so that buffers, pools and the runtime fill up: what the steady-state allocation
/// tests compare with [`HeapStats::since`].
pub async fn measure(
    warm_up: u64,
    counted: u64,
    mut step: impl AsyncFnMut(),
) -> (HeapStats, HeapStats) {
    for _ in 0..warm_up {
        step().await;
    }
    let before = stats();
    for _ in 0..counted {
        step().await;
    }
    (before, stats())
}

/// Blocks of this many bytes or more are mapped on their own once [`release_large_blocks`] ran:
/// the largest threshold glibc accepts on a 32-bit system (armhf), where its limit is 512 KiB.
pub const LARGE_BLOCK: usize = 512 << 10;

/// Makes the C allocator (glibc's malloc, which [`Counting`] forwards to) map each block of
/// [`LARGE_BLOCK`] bytes or more on its own and unmap it when freed (one `mmap` and `munmap`
/// each, for blocks that are rare: arenas, work areas, frame pools): memory a service used for
/// a moment goes back to the kernel. Setting the threshold also turns off glibc's adaptive one,
/// which otherwise rises to the size of the first large block freed and keeps later ones in
/// the heap. Returns whether it was set (false with another C library, where nothing changes).
pub fn release_large_blocks() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` sets one of malloc's tunables and touches no memory of ours;
        // M_MMAP_THRESHOLD takes a byte count, and LARGE_BLOCK is within its range on every
        // glibc target (up to 512 KiB on 32-bit systems, 32 MiB on 64-bit ones).
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK as libc::c_int) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

fn grew(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    // A load first: `fetch_max` is a compare-exchange loop, needed only at a new peak.
    if live > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's own layout and pointer, so
// `System` upholds the `GlobalAlloc` contract; the counters never touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract (non-zero size) is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; `new_size` is the caller's, valid
        // for `layout.align()` by `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}
