//! How creating, opening, publishing to and reading a region fail.

use std::io;
use std::path::PathBuf;

use super::layout::HEADER_SIZE;
use super::*;

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
