//! The writing side of a region: creating the file in place of a stale one, and publishing
//! frames under each slot's sequence lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use super::layout::{HeaderField, MAGIC, SlotField, region_size, slot_stride, split};
use super::raw::Mapping;
use super::*;

/// Counters of a writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Frames committed.
    pub published: u64,
    /// Frames refused for being larger than a slot.
    pub too_large: u64,
}

/// The writing side of a region. Only `capture-svc` creates one.
#[derive(Debug)]
pub struct RegionWriter {
    path: PathBuf,
    /// Exclusively `flock`ed for the writer's whole life: a second writer that finds the lock
    /// taken refuses instead of replacing a live region.
    file: Flock<File>,
    pub(super) map: Mapping,
    generation: u64,
    slot_capacity: usize,
    next_seq: u64,
    stats: WriterStats,
}

/// Why building a new region file failed, before it is turned into a [`RegionError`].
enum CreateFailure {
    NoSpace,
    Io(io::Error),
}

impl RegionWriter {
    /// Creates a fresh region at `path` with a new random generation, replacing any file there
    /// (a stale region from a crashed run, whose readers find out from the new generation).
    ///
    /// The file is built under a temporary name and renamed into place, so a reader never sees
    /// a half-written header, and readers still mapping an old file keep a valid mapping. It
    /// gets mode [`REGION_MODE`] whatever the umask, and every page of it is allocated before
    /// it is published (`posix_fallocate`): on a full file system creation fails here, rather
    /// than a later frame faulting (SIGBUS) on a page tmpfs cannot supply.
    ///
    /// Every writer holds an exclusive `flock` on its region file for as long as it lives (the
    /// kernel drops it when the process dies, however it dies). A region whose lock is taken
    /// belongs to a running writer and is left alone.
    ///
    /// # Errors
    /// [`RegionError::Capacity`] for a capacity of zero or above [`MAX_SLOT_CAPACITY`];
    /// [`RegionError::InUse`] when a live writer holds the region at `path`;
    /// [`RegionError::NoSpace`] when the file system cannot hold the region's pages;
    /// [`RegionError::Io`] when the file cannot be created, sized, mapped or renamed.
    pub fn create(path: &Path, slot_capacity: usize) -> Result<RegionWriter, RegionError> {
        if slot_capacity == 0 || slot_capacity > MAX_SLOT_CAPACITY {
            return Err(RegionError::Capacity(slot_capacity));
        }
        let io_err = |source| RegionError::Io {
            path: path.to_owned(),
            source,
        };
        // Held until the new file has replaced it, so the path is never unlocked while a
        // region sits there.
        let _old = lock_existing(path)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let file = open_file(
            &tmp,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(REGION_MODE),
        )
        .map_err(io_err)?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            let _ = std::fs::remove_file(&tmp);
            io_err(io::Error::from(errno))
        })?;
        let size = region_size(slot_capacity);
        let result = (|| {
            reserve(&file, size)?;
            let map =
                Mapping::map_writer(&file, SLOT_COUNT, slot_stride(slot_capacity), slot_capacity)
                    .map_err(CreateFailure::Io)?;
            let generation = write_header(&map, slot_capacity, size);
            std::fs::rename(&tmp, path).map_err(CreateFailure::Io)?;
            Ok((map, generation))
        })();
        let (map, generation) = result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            match e {
                CreateFailure::NoSpace => RegionError::NoSpace {
                    dir: path
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
                    needed: size as u64,
                },
                CreateFailure::Io(e) => io_err(e),
            }
        })?;
        Ok(RegionWriter {
            path: path.to_owned(),
            file,
            map,
            generation,
            slot_capacity,
            next_seq: 1,
            stats: WriterStats::default(),
        })
    }

    /// The random generation of this region.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of frame data each slot holds.
    pub fn slot_capacity(&self) -> usize {
        self.slot_capacity
    }

    /// Where the region lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters since creation.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// Copies a frame into the next slot and makes it the newest.
    ///
    /// # Errors
    /// [`PublishError::TooLarge`] if `bytes` is longer than a slot; nothing is written and the
    /// refusal is counted.
    pub fn publish(&mut self, info: &FrameInfo, bytes: &[u8]) -> Result<FrameMeta, PublishError> {
        let capacity = self.slot_capacity;
        if bytes.len() > capacity {
            self.stats.too_large += 1;
            return Err(PublishError::TooLarge {
                len: bytes.len(),
                capacity,
            });
        }
        let seq = self.next_seq;
        // Round-robin over three slots: the slot written is never the newest (seq-1) nor the
        // one before it (seq-2).
        let slot = (seq % SLOT_COUNT as u64) as usize;
        let map = &self.map;
        let lock = map.slot(slot, SlotField::Lock);
        map.set_slot(
            slot,
            SlotField::Lock,
            lock.wrapping_add(1) | 1,
            Ordering::Relaxed,
        );
        // Pairs with the Acquire fence in `RegionReader::read_slot` before its re-check: a
        // reader whose copy saw any of the writes below also sees the odd lock value there.
        fence(Ordering::Release);
        let (seq_lo, seq_hi) = split(seq);
        let (mono_lo, mono_hi) = split(info.mono_ns);
        let (wall_lo, wall_hi) = split(info.wall_ns);
        for (field, value) in [
            (SlotField::SeqLo, seq_lo),
            (SlotField::SeqHi, seq_hi),
            (SlotField::MonoLo, mono_lo),
            (SlotField::MonoHi, mono_hi),
            (SlotField::WallLo, wall_lo),
            (SlotField::WallHi, wall_hi),
            (SlotField::Width, info.width),
            (SlotField::Height, info.height),
            (SlotField::Format, info.format as u32),
            // At most MAX_SLOT_CAPACITY (checked above): fits.
            (SlotField::Len, bytes.len() as u32),
        ] {
            map.set_slot(slot, field, value, Ordering::Relaxed);
        }
        map.write_slot_data(slot, bytes);
        // Pairs with the Acquire fence after the first lock load in `read_slot`: the even
        // value publishes the whole slot.
        map.set_slot(
            slot,
            SlotField::Lock,
            (lock | 1).wrapping_add(1),
            Ordering::Release,
        );
        // The newest frame's announcement, under its own sequence lock (the same protocol).
        let latest = map.header(HeaderField::LatestLock);
        map.set_header(
            HeaderField::LatestLock,
            latest.wrapping_add(1) | 1,
            Ordering::Relaxed,
        );
        // Pairs with the Acquire fence before the re-check in `read_latest`.
        fence(Ordering::Release);
        map.set_header(HeaderField::LatestSlot, slot as u32, Ordering::Relaxed);
        map.set_header(HeaderField::LatestSeqLo, seq_lo, Ordering::Relaxed);
        map.set_header(HeaderField::LatestSeqHi, seq_hi, Ordering::Relaxed);
        // Pairs with the Acquire fence after the first lock load in `read_latest`.
        map.set_header(
            HeaderField::LatestLock,
            (latest | 1).wrapping_add(1),
            Ordering::Release,
        );
        self.next_seq += 1;
        self.stats.published += 1;
        Ok(FrameMeta {
            seq,
            slot: slot as u32,
            width: info.width,
            height: info.height,
            format: info.format,
            mono_ns: info.mono_ns,
            wall_ns: info.wall_ns,
            len: bytes.len(),
        })
    }

    /// Removes the region file on a clean shutdown, unless a newer writer already replaced it.
    ///
    /// # Errors
    /// What `unlink` says, other than "not found".
    pub fn remove(self) -> io::Result<()> {
        let ours = self.file.metadata()?;
        match std::fs::metadata(&self.path) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                std::fs::remove_file(&self.path)
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Sets the new file's mode and allocates every page of its `size`.
fn reserve(file: &File, size: usize) -> Result<(), CreateFailure> {
    // fchmod: the mode given to open was masked by the umask.
    file.set_permissions(std::fs::Permissions::from_mode(REGION_MODE))
        .map_err(CreateFailure::Io)?;
    // Allocates every page now (and sets the size): set_len alone would leave a sparse
    // file whose pages tmpfs supplies on first touch, or fails to with SIGBUS.
    nix::fcntl::posix_fallocate(file, 0, size as libc::off_t).map_err(|e| {
        if e == Errno::ENOSPC {
            CreateFailure::NoSpace
        } else {
            CreateFailure::Io(io::Error::from(e))
        }
    })
}

/// Writes a new region's header, its random non-zero generation last; returns the generation.
fn write_header(map: &Mapping, slot_capacity: usize, size: usize) -> u64 {
    let generation = loop {
        let g: u64 = rand::random();
        if g != 0 {
            break g;
        }
    };
    map.set_magic(&MAGIC);
    // Every size fits 32 bits: `layout` asserts it for MAX_SLOT_CAPACITY.
    for (field, value) in [
        (HeaderField::LayoutVersion, LAYOUT_VERSION),
        (HeaderField::SlotCount, SLOT_COUNT as u32),
        (HeaderField::SlotCapacity, slot_capacity as u32),
        (HeaderField::SlotStride, slot_stride(slot_capacity) as u32),
        (HeaderField::TotalSize, size as u32),
        (HeaderField::LatestLock, 0),
        (HeaderField::LatestSlot, 0),
        (HeaderField::LatestSeqLo, 0),
        (HeaderField::LatestSeqHi, 0),
    ] {
        map.set_header(field, value, Ordering::Relaxed);
    }
    // Pairs with the Acquire fence after the generation loads in `RegionReader::open`:
    // a reader that sees the generation sees every header field above. (The rename in
    // `create` is what really publishes the file; this keeps the header's own contract.)
    let (lo, hi) = split(generation);
    map.set_header(HeaderField::GenerationLo, lo, Ordering::Release);
    map.set_header(HeaderField::GenerationHi, hi, Ordering::Release);
    generation
}

/// Takes the lock of the region already at `path`, if there is one.
///
/// `Ok(None)`: no file there. `Ok(Some(lock))`: a stale region (no live writer); the lock keeps
/// another starting writer out until ours is renamed into place. The lock is only trusted if
/// the locked file is still the one at `path` afterwards: a writer that replaced it meanwhile
/// holds the new file's lock, so the check is repeated on the new file.
fn lock_existing(path: &Path) -> Result<Option<Flock<File>>, RegionError> {
    /// Replacements raced before giving up; each means another writer just won.
    const ATTEMPTS: usize = 3;
    let io_err = |source| RegionError::Io {
        path: path.to_owned(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(RegionError::InUse {
                    path: path.to_owned(),
                });
            }
            Err((_, errno)) => return Err(io_err(io::Error::from(errno))),
        };
        let locked = lock.metadata().map_err(io_err)?;
        match std::fs::metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (locked.dev(), locked.ino()) => {
                return Ok(Some(lock));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        }
    }
    Err(RegionError::InUse {
        path: path.to_owned(),
    })
}
