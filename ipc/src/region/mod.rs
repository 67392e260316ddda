//! The frame region: a fixed-size shared-memory file with three frame slots.
//!
//! `capture-svc` holds the only [`RegionWriter`]; `motion-svc` and `web-svc` each hold a
//! [`RegionReader`], which opens the file read-only and maps it `PROT_READ`, so no reader bug can
//! corrupt a frame. The layout is in [`layout`]; the pointer work in the private `raw` module.
//!
//! Each slot is guarded by a sequence lock. The writer fills slots round-robin, which with three
//! slots means it always writes the slot that is neither the newest nor the one before it: a
//! reader holding the newest frame's announcement has two frame periods to copy it. A reader
//! copies, then re-checks the lock; a torn copy is counted and never returned.
//!
//! Only the writer can change the region. The file is created mode `0640` (whatever the umask)
//! in a directory its readers cannot write: readers in the file's group map it, but cannot
//! write, truncate, unlink or replace it (the units run `capture-svc` as its own user; see
//! ARCHITECTURE.md). Its pages are reserved when it is created (`posix_fallocate`), so a full
//! file system fails [`RegionWriter::create`] with [`RegionError::NoSpace`] instead of killing
//! the writer with SIGBUS at its first frame.

pub mod layout;
mod raw;

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use layout::{HEADER_SIZE, HeaderField, MAGIC, SlotField, join, region_size, slot_stride, split};
pub use layout::{LAYOUT_VERSION, MAX_SLOT_CAPACITY, SLOT_COUNT};
use raw::Mapping;

/// How the bytes of a frame are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u32)]
pub enum FrameFormat {
    /// A complete baseline or progressive JPEG image (what MJPEG cameras produce).
    Jpeg = 1,
}

impl FrameFormat {
    fn from_code(code: u32) -> Option<FrameFormat> {
        (code == FrameFormat::Jpeg as u32).then_some(FrameFormat::Jpeg)
    }
}

/// The region file's permissions: the writer reads and writes, its group (the readers) only
/// reads, others nothing. Set explicitly after creation, so the umask cannot widen or narrow it.
pub const REGION_MODE: u32 = 0o640;

/// How often [`RegionReader::read_latest`] retries when the writer is changing the newest
/// frame's announcement at that moment (it holds that lock for three stores) before it gives
/// up with [`ReadError::Torn`].
pub const LATEST_ATTEMPTS: usize = 8;

/// What the writer is told about a frame; the sequence number is the writer's to assign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Encoding of the bytes.
    pub format: FrameFormat,
    /// Capture time on `CLOCK_MONOTONIC`, nanoseconds.
    pub mono_ns: u64,
    /// Capture time in nanoseconds since the Unix epoch.
    pub wall_ns: u64,
}

/// A committed frame's description, as written or as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// Sequence number, from 1, increasing by one per published frame of a generation.
    pub seq: u64,
    /// The slot the frame sits in.
    pub slot: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Encoding of the bytes.
    pub format: FrameFormat,
    /// Capture time on `CLOCK_MONOTONIC`, nanoseconds.
    pub mono_ns: u64,
    /// Capture time in nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    /// Length of the frame in bytes.
    pub len: usize,
}

/// Why a region could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The requested slot capacity is zero or above [`MAX_SLOT_CAPACITY`].
    #[error(
        "slot capacity {0} bytes is out of range (1 to {MAX_SLOT_CAPACITY}); set a frame size the camera can produce"
    )]
    Capacity(usize),
    /// Another live writer holds the region (its lock is taken): replacing the file would
    /// break that writer's readers.
    #[error(
        "the frame region {path} is held by another running writer (capture-svc); stop it or use another --runtime-dir"
    )]
    InUse {
        /// The region path.
        path: PathBuf,
    },
    /// The runtime directory's file system has no room for the region's pages.
    #[error(
        "no room for the {needed}-byte frame region in {dir}: its file system is full; free space there (for tmpfs /run: a larger size= or less in it) or lower [capture] slot_capacity"
    )]
    NoSpace {
        /// The directory the region was to be created in.
        dir: PathBuf,
        /// The bytes the region needs (header plus three slots).
        needed: u64,
    },
    /// The file could not be created, sized or mapped.
    #[error(
        "cannot create the frame region at {path}: {source}; check the runtime directory exists and is writable"
    )]
    Io {
        /// The region path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

/// Why a region could not be opened for reading. Each way a file can be wrong has its own variant.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file does not exist or cannot be opened or mapped.
    #[error(
        "cannot open the frame region {path}: {source}; is capture-svc running with the same --runtime-dir?"
    )]
    Io {
        /// The region path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file is shorter than the header.
    #[error("frame region is truncated: {len} bytes, shorter than its {HEADER_SIZE}-byte header")]
    Truncated {
        /// The file's length.
        len: u64,
    },
    /// The file does not start with the region magic.
    #[error("not a mecam frame region (bad magic {found:02x?})")]
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// The layout version is not the one this build understands.
    #[error(
        "frame region layout version {found}, this build reads version {LAYOUT_VERSION}; run matching versions of the mecam services"
    )]
    WrongVersion {
        /// The version found.
        found: u32,
    },
    /// Slot count, capacity, stride or total size disagree with each other.
    #[error("frame region header is inconsistent: {0}")]
    BadGeometry(String),
    /// The header's total size is not the file's size.
    #[error("frame region is {file} bytes but its header says {header}")]
    SizeMismatch {
        /// The file's length.
        file: u64,
        /// The header's total size.
        header: u64,
    },
    /// The generation is zero: the writer never finished creating it.
    #[error("frame region was never finished by its writer (generation 0)")]
    Uninitialized,
}

/// Why publishing a frame failed. Nothing was written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// The frame is larger than a slot.
    #[error(
        "frame of {len} bytes is larger than the slot capacity of {capacity} bytes; raise the slot capacity or lower the resolution/quality"
    )]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The slot capacity.
        capacity: usize,
    },
}

/// Why reading a frame gave nothing. Only [`ReadError::Corrupt`] needs any action; the others
/// mean "skip this one". (A region replaced by a restarted writer is not a read error: see
/// [`RegionReader::is_stale`].)
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// No frame has been published in this region yet.
    #[error("no frame has been published yet")]
    Empty,
    /// The slot no longer holds the frame asked for: the reader fell behind.
    #[error("frame was overwritten before it could be read")]
    Overwritten,
    /// The writer changed the slot while it was being copied; the copy was discarded.
    #[error("torn read discarded")]
    Torn,
    /// A slot header holds impossible values.
    #[error("corrupt slot: {0}")]
    Corrupt(String),
}

/// Counters of a writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Frames committed.
    pub published: u64,
    /// Frames refused for being larger than a slot.
    pub too_large: u64,
}

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

/// The writing side of a region. Only `capture-svc` creates one.
#[derive(Debug)]
pub struct RegionWriter {
    path: PathBuf,
    /// Exclusively `flock`ed for the writer's whole life: a second writer that finds the lock
    /// taken refuses instead of replacing a live region.
    file: Flock<File>,
    map: Mapping,
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
            // fchmod: the mode given to open was masked by the umask.
            file.set_permissions(std::fs::Permissions::from_mode(REGION_MODE))
                .map_err(CreateFailure::Io)?;
            // Allocates every page now (and sets the size): set_len alone would leave a sparse
            // file whose pages tmpfs supplies on first touch, or fails to with SIGBUS.
            nix::fcntl::posix_fallocate(&*file, 0, size as libc::off_t).map_err(|e| {
                if e == Errno::ENOSPC {
                    CreateFailure::NoSpace
                } else {
                    CreateFailure::Io(io::Error::from(e))
                }
            })?;
            let map =
                Mapping::map_writer(&file, SLOT_COUNT, slot_stride(slot_capacity), slot_capacity)
                    .map_err(CreateFailure::Io)?;
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
            // a reader that sees the generation sees every header field above. (The rename
            // below is what really publishes the file; this keeps the header's own contract.)
            let (lo, hi) = split(generation);
            map.set_header(HeaderField::GenerationLo, lo, Ordering::Release);
            map.set_header(HeaderField::GenerationHi, hi, Ordering::Release);
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

/// Opens `path` with `flags` (always close-on-exec, so a camera process never inherits the
/// region or its lock) and `mode` for a file it creates.
fn open_file(path: &Path, flags: OFlag, mode: Mode) -> io::Result<File> {
    let fd = nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, mode).map_err(io::Error::from)?;
    Ok(File::from(fd))
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
        map.read_slot_data(slot, len, buf);
        #[cfg(test)]
        tests::after_copy();
        if !unchanged(map) {
            buf.clear();
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

#[cfg(test)]
mod tests {
    //! The torn-read path, made deterministic: a hook runs between the copy and the re-check
    //! of the lock, where a racing writer would be.

    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    thread_local! {
        static AFTER_COPY: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
    }

    /// Called by `read_slot` between the copy and the re-check.
    pub(super) fn after_copy() {
        AFTER_COPY.with(|h| {
            if let Some(hook) = h.borrow_mut().as_mut() {
                hook();
            }
        });
    }

    fn set_hook(hook: Option<Box<dyn FnMut()>>) {
        AFTER_COPY.with(|h| *h.borrow_mut() = hook);
    }

    fn info() -> FrameInfo {
        FrameInfo {
            width: 4,
            height: 2,
            format: FrameFormat::Jpeg,
            mono_ns: 1,
            wall_ns: 2,
        }
    }

    #[test]
    fn a_copy_raced_by_the_writer_is_torn_counted_and_never_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames");
        let writer = Rc::new(RefCell::new(RegionWriter::create(&path, 256).unwrap()));
        let reader = RegionReader::open(&path).unwrap();
        let meta = writer.borrow_mut().publish(&info(), &[1; 100]).unwrap();
        let mut buf = Vec::with_capacity(256);

        // 1. The writer enters the slot during the copy: the lock is odd at the re-check.
        let w = Rc::clone(&writer);
        let slot = meta.slot as usize;
        set_hook(Some(Box::new(move || {
            let w = w.borrow();
            let lock = w.map.slot(slot, SlotField::Lock);
            w.map
                .set_slot(slot, SlotField::Lock, lock | 1, Ordering::Release);
        })));
        assert_eq!(
            reader.read_slot(meta.slot, meta.seq, &mut buf),
            Err(ReadError::Torn)
        );
        assert!(buf.is_empty(), "the torn copy is discarded");
        assert_eq!(reader.stats().torn, 1);
        set_hook(None);
        // Put the lock back as the writer would on leaving (even, one step on).
        {
            let w = writer.borrow();
            let lock = w.map.slot(slot, SlotField::Lock);
            w.map
                .set_slot(slot, SlotField::Lock, lock + 1, Ordering::Release);
        }

        // 2. The writer laps the reader during the copy: three publishes later the same slot
        //    holds another frame and its lock is even again, but not the value seen before.
        let meta = writer.borrow_mut().publish(&info(), &[2; 120]).unwrap();
        let w = Rc::clone(&writer);
        set_hook(Some(Box::new(move || {
            let mut w = w.borrow_mut();
            for fill in 3..6 {
                w.publish(&info(), &[fill; 80]).unwrap();
            }
        })));
        assert_eq!(
            reader.read_slot(meta.slot, meta.seq, &mut buf),
            Err(ReadError::Torn)
        );
        assert!(buf.is_empty());
        assert_eq!(reader.stats().torn, 2);
        assert_eq!(reader.stats().read, 0, "nothing torn was ever delivered");
        set_hook(None);

        // Without a racing writer the newest frame reads whole.
        let got = reader.read_latest(&mut buf).unwrap();
        assert_eq!((got.seq, buf.as_slice()), (5, &[5u8; 80][..]));
        assert_eq!(reader.stats().read, 1);
    }
}
