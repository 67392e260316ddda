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

mod error;
pub mod layout;
mod raw;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

pub use error::{OpenError, PublishError, ReadError, RegionError};
pub use layout::{LAYOUT_VERSION, MAX_SLOT_CAPACITY, SLOT_COUNT};
pub use reader::{ReaderStats, RegionReader};
pub use writer::{RegionWriter, WriterStats};

use std::fs::File;
use std::io;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

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

impl FrameInfo {
    /// A JPEG of `width` x `height` captured now, on both clocks.
    pub fn jpeg_now(width: u32, height: u32) -> FrameInfo {
        FrameInfo {
            width,
            height,
            format: FrameFormat::Jpeg,
            mono_ns: crate::service::monotonic_ns(),
            wall_ns: crate::service::wall_ns(),
        }
    }
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

/// Opens `path` with `flags` (always close-on-exec, so a camera process never inherits the
/// region or its lock) and `mode` for a file it creates.
fn open_file(path: &Path, flags: OFlag, mode: Mode) -> io::Result<File> {
    let fd = nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, mode).map_err(io::Error::from)?;
    Ok(File::from(fd))
}
