//! The pre-capture ring: the last few seconds of compressed camera frames, so a clip can
//! start before the motion that triggered it.
//!
//! One byte arena and an index of at most `max_frames` entries; frames are bounded both by age
//! (seconds) and by bytes. The arena is sized by what the seconds need, not by the cap: it
//! starts at [`MIN_ARENA`], doubles (up to the cap, never above) when the frames of the window
//! would fill more than three quarters of it, and is halved back towards twice what the window
//! held when, over a whole window, they never filled a quarter of it (the camera's frames got
//! smaller, the scene quieter). A resize copies the frames it keeps into a new arena, so for
//! that moment both exist (together under twice the cap); between resizes pushing never allocates, and a steady stream
//! settles after a few doublings.
//!
//! Each arena is written in full when it is made, so it is resident from the start: zeroed
//! memory comes from the kernel as pages that are only made resident when first written, and
//! the ring writes its arena from one end to the other before it wraps, so a lazily backed
//! arena made resident memory climb for as long as that first pass took (minutes at a low
//! byte rate: a slow or busy machine, a small scene), which is a leak to any measurement.

use std::collections::VecDeque;

/// What the arena holds before any frame: not zero, so that neither the allocator nor the
/// compiler can hand out untouched zero pages instead of writing them.
const ARENA_FILL: u8 = 0xa5;
/// The arena's first (and smallest) size, unless the cap is smaller: a few 640x480 frames.
pub const MIN_ARENA: usize = 256 * 1024;
/// Index entries reserved at first; the index grows (to `max_frames`) with the frame rate.
const FIRST_ENTRIES: usize = 64;

/// One stored frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingEntry {
    start: usize,
    len: usize,
    /// Capture time, monotonic ns.
    pub mono_ns: u64,
    /// Capture time, wall clock ns.
    pub wall_ns: u64,
}

/// A bounded ring of JPEG frames.
#[derive(Debug)]
pub struct FrameRing {
    arena: Vec<u8>,
    entries: VecDeque<RingEntry>,
    cap: usize,
    max_frames: usize,
    keep_ns: u64,
    head: usize,
    /// Bytes of the frames held.
    held: usize,
    /// The most `held` reached since `watch_since_ns`, for shrinking.
    held_peak: usize,
    watch_since_ns: Option<u64>,
    /// Arena resizes so far.
    pub resizes: u64,
    /// Frames refused because one alone is larger than the cap.
    pub too_large: u64,
}

impl FrameRing {
    /// A ring of at most `cap` bytes holding at most `max_frames` frames no older than `keep_s`
    /// seconds behind the newest. Its arena starts at [`MIN_ARENA`] (or `cap` if smaller),
    /// resident.
    pub fn new(cap: usize, max_frames: usize, keep_s: f64) -> FrameRing {
        FrameRing {
            arena: vec![ARENA_FILL; MIN_ARENA.min(cap)],
            entries: VecDeque::with_capacity(FIRST_ENTRIES.min(max_frames)),
            cap,
            max_frames,
            keep_ns: (keep_s * 1e9) as u64,
            head: 0,
            held: 0,
            held_peak: 0,
            watch_since_ns: None,
            resizes: 0,
            too_large: 0,
        }
    }

    /// Bytes of arena now.
    pub fn capacity_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Bytes the arena may grow to.
    pub fn cap_bytes(&self) -> usize {
        self.cap
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held by frames (not counting space wasted at the wrap).
    pub fn bytes(&self) -> usize {
        self.held
    }

    /// Forgets everything (camera restart: old frames are from another stream).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.head = 0;
        self.held = 0;
    }

    fn overlaps(e: &RingEntry, start: usize, end: usize) -> bool {
        e.start < end && start < e.start + e.len
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.held -= e.len;
        }
    }

    /// Stores a copy of `jpeg`, evicting the oldest frames as needed.
    pub fn push(&mut self, jpeg: &[u8], mono_ns: u64, wall_ns: u64) {
        let len = jpeg.len();
        if len > self.cap || self.max_frames == 0 {
            self.too_large += 1;
            return;
        }
        // What the window no longer wants goes first.
        while let Some(front) = self.entries.front() {
            let stale = mono_ns.saturating_sub(front.mono_ns) > self.keep_ns;
            if stale || self.entries.len() >= self.max_frames {
                self.pop_front();
            } else {
                break;
            }
        }
        self.resize_for(len, mono_ns);
        let start = if self.head + len <= self.arena.len() {
            self.head
        } else {
            0
        };
        let end = start + len;
        while self
            .entries
            .front()
            .is_some_and(|front| Self::overlaps(front, start, end))
        {
            self.pop_front();
        }
        // After a wrap, entries behind the front may still overlap the new range.
        let mut freed = 0;
        self.entries.retain(|e| {
            let keep = !Self::overlaps(e, start, end);
            freed += if keep { 0 } else { e.len };
            keep
        });
        self.held -= freed;
        self.arena[start..end].copy_from_slice(jpeg);
        self.entries.push_back(RingEntry {
            start,
            len,
            mono_ns,
            wall_ns,
        });
        self.held += len;
        self.held_peak = self.held_peak.max(self.held);
        self.head = end;
    }

    /// Grows the arena when the window's frames and a new one of `len` bytes would fill more
    /// than three quarters of it; shrinks it when a whole window went by under a quarter.
    fn resize_for(&mut self, len: usize, now_ns: u64) {
        let need = self.held + len;
        let size = self.arena.len();
        if need * 4 > size * 3 && size < self.cap {
            self.rebuild((need * 2).max(size * 2).min(self.cap));
            return;
        }
        let since = *self.watch_since_ns.get_or_insert(now_ns);
        if now_ns.saturating_sub(since) < self.keep_ns.max(1_000_000_000) {
            return;
        }
        let peak = self.held_peak.max(need);
        if peak * 4 < size && size > MIN_ARENA {
            self.rebuild((peak * 2).max(MIN_ARENA).min(self.cap));
        }
        self.watch_since_ns = Some(now_ns);
        self.held_peak = self.held;
    }

    /// A new resident arena of `size` bytes with the frames held copied to its start, oldest
    /// first (all of them fit: `size` is at least twice what they hold).
    fn rebuild(&mut self, size: usize) {
        let mut arena = vec![ARENA_FILL; size];
        let mut at = 0;
        for e in &mut self.entries {
            arena[at..at + e.len].copy_from_slice(&self.arena[e.start..e.start + e.len]);
            e.start = at;
            at += e.len;
        }
        self.arena = arena;
        self.head = at;
        self.resizes += 1;
    }

    /// Frames captured at or after `since_ns`, oldest first.
    pub fn since(&self, since_ns: u64) -> impl Iterator<Item = (&RingEntry, &[u8])> + '_ {
        self.entries
            .iter()
            .filter(move |e| e.mono_ns >= since_ns)
            .map(move |e| (e, &self.arena[e.start..e.start + e.len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// Resident KiB of the mapping of this process that holds `addr` (`/proc/self/smaps`).
    fn resident_kib_at(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            // A mapping's line starts with its range, `lo-hi`; its fields follow (`Rss: N kB`).
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
            if let Some(kib) = line.strip_prefix("Rss:").filter(|_| inside) {
                return kib.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn a_steady_stream_settles_the_arena_resident_and_then_adds_nothing() {
        // Settles above glibc's largest mmap threshold (32 MiB): a mapping of its own, whatever
        // the other tests of this process allocated and freed before.
        const CAP: usize = 80 << 20;
        let frame = vec![7u8; 1 << 20];
        // 1 MiB frames at 10 fps, 3 s kept: 30 MiB in the window.
        let mut r = FrameRing::new(CAP, 1_000, 3.0);
        let mut t = 0u64;
        let mut push = |r: &mut FrameRing, n: u64| {
            for _ in 0..n {
                r.push(&frame, t, 0);
                t += S / 10;
            }
        };
        push(&mut r, 100);
        let (size, resizes) = (r.capacity_bytes(), r.resizes);
        assert!((32 << 20..CAP).contains(&size), "{size}");
        let addr = r.arena.as_ptr() as usize;
        let settled = resident_kib_at(addr);
        assert!(
            settled >= (size / 1024) as u64,
            "{settled} KiB of the {} KiB arena resident: the rest would become resident frame \
             by frame, memory rising until the ring first wraps",
            size / 1024
        );
        // Frames through the whole arena several times, as a long soak would.
        push(&mut r, 400);
        assert_eq!((r.capacity_bytes(), r.resizes), (size, resizes));
        assert_eq!(resident_kib_at(addr), settled);
    }

    #[test]
    fn the_arena_grows_to_what_the_seconds_need_never_above_the_cap() {
        // 40 KB at 15 fps for 4 s: 2.4 MB in the window, in a ring allowed 24 MiB.
        let mut r = FrameRing::new(24 << 20, 1_000, 4.0);
        for i in 0..600u64 {
            r.push(&vec![(i % 251) as u8; 40_000], i * S / 15, 0);
        }
        let window = 61 * 40_000;
        assert!(r.bytes() >= window - 40_000, "{}", r.bytes());
        assert!(
            r.capacity_bytes() <= 4 * window && r.capacity_bytes() >= window,
            "{} bytes for a window of {window}",
            r.capacity_bytes()
        );
        // A cap under what the seconds need: the arena is the cap, the window shorter.
        let mut r = FrameRing::new(1 << 20, 1_000, 4.0);
        for i in 0..600u64 {
            r.push(&vec![1; 40_000], i * S / 15, 0);
            assert!(r.capacity_bytes() <= 1 << 20 && r.bytes() <= 1 << 20);
        }
        assert_eq!(r.capacity_bytes(), 1 << 20);
    }

    #[test]
    fn smaller_frames_give_memory_back() {
        let mut r = FrameRing::new(64 << 20, 1_000, 3.0);
        let mut t = 0;
        for _ in 0..300 {
            r.push(&[1; 200_000], t, 0);
            t += S / 15;
        }
        let big = r.capacity_bytes();
        // The scene got dark and quiet: frames a tenth of the size.
        for _ in 0..300 {
            r.push(&[2; 20_000], t, 0);
            t += S / 15;
        }
        let small = r.capacity_bytes();
        assert!(small * 4 <= big, "{big} -> {small}");
        assert!(small >= r.bytes() * 2, "{small} for {} held", r.bytes());
        // The newest frames are intact after the moves.
        assert!(r.since(0).all(|(_, b)| b.iter().all(|&x| x == 2)));
    }

    #[test]
    fn keeps_only_the_last_seconds() {
        let mut r = FrameRing::new(1 << 20, 1000, 2.0);
        for i in 0..100u64 {
            r.push(&[i as u8; 100], i * S / 10, 0);
        }
        // 2 s at 10 fps plus the boundary frame.
        assert_eq!(r.len(), 21);
        let first = r.since(0).next().unwrap();
        assert_eq!(first.1[0], 79);
    }

    #[test]
    fn bytes_and_frame_count_are_bounded_past_capacity() {
        let mut r = FrameRing::new(1000, 5, 100.0);
        for i in 0..1000u64 {
            r.push(&vec![(i % 251) as u8; 90 + (i as usize % 50)], i, 0);
            assert!(r.bytes() <= 1000);
            assert!(r.len() <= 5);
        }
        // The newest frames are intact.
        let frames: Vec<_> = r.since(0).collect();
        let (e, bytes) = frames.last().unwrap();
        assert_eq!(e.mono_ns, 999);
        assert!(bytes.iter().all(|&b| b == (999 % 251) as u8));
        for (e, bytes) in frames {
            assert!(
                bytes.iter().all(|&b| b == (e.mono_ns % 251) as u8),
                "frame {} corrupted",
                e.mono_ns
            );
        }
        r.push(&[0; 2000], 1000, 0);
        assert_eq!(r.too_large, 1);
    }

    #[test]
    fn since_filters_by_time() {
        let mut r = FrameRing::new(10_000, 100, 10.0);
        for i in 0..10u64 {
            r.push(&[1; 10], i * S, 0);
        }
        assert_eq!(r.since(7 * S).count(), 3);
        r.clear();
        assert!(r.is_empty());
    }
}
