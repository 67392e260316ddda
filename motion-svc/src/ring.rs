//! The pre-capture ring: the last few seconds of compressed camera frames, so a clip can
//! start before the motion that triggered it.
//!
//! One byte arena allocated at construction and an index of at most `max_frames` entries;
//! frames are bounded both by age (seconds) and by bytes. Pushing never allocates.
//!
//! The arena is written in full when it is made, so it is resident from the start: zeroed
//! memory comes from the kernel as pages that are only made resident when first written, and
//! the ring writes its arena from one end to the other before it wraps, so a lazily backed
//! arena made resident memory climb for as long as that first pass took (minutes at a low
//! byte rate: a slow or busy machine, a small scene), which is a leak to any measurement.

use std::collections::VecDeque;

/// What the arena holds before any frame: not zero, so that neither the allocator nor the
/// compiler can hand out untouched zero pages instead of writing them.
const ARENA_FILL: u8 = 0xa5;

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
    max_frames: usize,
    keep_ns: u64,
    head: usize,
    /// Frames refused because one alone is larger than the arena.
    pub too_large: u64,
}

impl FrameRing {
    /// A ring of `bytes` bytes holding at most `max_frames` frames no older than `keep_s`
    /// seconds behind the newest. All `bytes` are resident when it returns.
    pub fn new(bytes: usize, max_frames: usize, keep_s: f64) -> FrameRing {
        FrameRing {
            arena: vec![ARENA_FILL; bytes],
            entries: VecDeque::with_capacity(max_frames),
            max_frames,
            keep_ns: (keep_s * 1e9) as u64,
            head: 0,
            too_large: 0,
        }
    }

    /// Bytes of arena (fixed).
    pub fn capacity_bytes(&self) -> usize {
        self.arena.len()
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
        self.entries.iter().map(|e| e.len).sum()
    }

    /// Forgets everything (camera restart: old frames are from another stream).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.head = 0;
    }

    fn overlaps(e: &RingEntry, start: usize, end: usize) -> bool {
        e.start < end && start < e.start + e.len
    }

    /// Stores a copy of `jpeg`, evicting the oldest frames as needed.
    pub fn push(&mut self, jpeg: &[u8], mono_ns: u64, wall_ns: u64) {
        let len = jpeg.len();
        if len > self.arena.len() || self.max_frames == 0 {
            self.too_large += 1;
            return;
        }
        let start = if self.head + len <= self.arena.len() {
            self.head
        } else {
            0
        };
        let end = start + len;
        while let Some(front) = self.entries.front() {
            let stale = mono_ns.saturating_sub(front.mono_ns) > self.keep_ns;
            if stale || self.entries.len() >= self.max_frames || Self::overlaps(front, start, end) {
                self.entries.pop_front();
            } else {
                break;
            }
        }
        // After a wrap, entries behind the front may still overlap the new range.
        self.entries.retain(|e| !Self::overlaps(e, start, end));
        self.arena[start..end].copy_from_slice(jpeg);
        self.entries.push_back(RingEntry {
            start,
            len,
            mono_ns,
            wall_ns,
        });
        self.head = end;
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
    fn the_arena_is_resident_from_the_start_and_frames_add_nothing() {
        // Larger than glibc's largest mmap threshold (32 MiB): a mapping of its own, whatever
        // the other tests of this process allocated and freed before.
        const BYTES: usize = 40 << 20;
        // A frame bound like the service's (hundreds): the index stays on the heap, where it
        // cannot be merged into the arena's mapping and counted with it.
        let mut r = FrameRing::new(BYTES, 1_000, 1e6);
        let addr = r.arena.as_ptr() as usize;
        let at_start = resident_kib_at(addr);
        assert!(
            at_start >= (BYTES / 1024) as u64,
            "{at_start} KiB of the {} KiB arena resident after construction: the rest would \
             become resident frame by frame, memory rising until the ring first wraps",
            BYTES / 1024
        );
        // Frames through the whole arena twice, as a long soak would.
        let frame = vec![7u8; 64 * 1024];
        for i in 0..(2 * BYTES / frame.len()) as u64 {
            r.push(&frame, i, 0);
        }
        assert!(r.bytes() > BYTES / 2, "the frames filled the ring");
        assert_eq!(resident_kib_at(addr), at_start);
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
