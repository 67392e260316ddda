//! The mecam event folder: one definition, shared by `motion-svc` (which writes it) and
//! `web-svc` (which reads and deletes it).
//!
//! - [`layout`]: the file names in a folder and the event id (`20261124T182900Z-0001`).
//! - [`meta`]: the `event.json` schema ([`EventMeta`], [`SCHEMA_VERSION`]) and its reading and
//!   writing.
//! - [`avi`]: the clip, written, repaired and read back with one definition of its layout.
//! - [`open`]: the only way a file of a folder is read (regular files only, never following a
//!   symlink, never blocking, bounded in size).
//! - [`folders`], [`recover`], [`limits`]: listing, creating and deleting folders, crash
//!   recovery, and the storage limits.
//!
//! The folder as a user finds it on the card is described in this crate's README.
#![forbid(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};

pub mod avi;
pub mod folders;
pub mod layout;
pub mod limits;
pub mod meta;
pub mod open;
pub mod recover;

pub use folders::{
    MAX_SCAN, create_event_dir, delete_folder, event_folders, last_counter, newest_ids, next_id,
};
pub use layout::{
    CLIP, CLIP_MP4, CLIP_MP4_PART, CLIP_PART, MAX_COUNTER, MAX_ID_LEN, META, META_TMP, POSTER,
    POSTER_TMP, format_id, id_counter, now_unix_ms, parse_id, utc_stamp, valid_id,
};
pub use limits::{Limits, dir_size, disk_usage, enforce_limits, free_bytes};
pub use meta::{
    EndReason, EventMeta, EventState, MAX_TRACK_BOXES, MAX_TRACK_FRAMES, MetaError, PreparedMeta,
    SCHEMA_VERSION, TrackFrame, prepare_meta, read_meta, read_meta_map, says_recording, write_meta,
};
pub use open::{
    EventFile, MAX_CLIP_BYTES, MAX_META_BYTES, MAX_POSTER_BYTES, OpenError, flush_skipped_log,
    log_skipped, open_event_file, read_event_file,
};
pub use recover::{Recovered, Recovery, Skipped, recover};

/// Lines about one event folder that a hostile or damaged file can repeat (a clip that cannot
/// be repaired, a folder that cannot be deleted): one per interval, then a count.
static FOLDER_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);

/// Errors writing to the events directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{what} {path}: {source}; check the events directory exists and is writable")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod test_support {
    use crate::{EventMeta, EventState, parse_id};

    /// A small event of `state` with a peak.
    pub(crate) fn meta(id: &str, state: EventState) -> EventMeta {
        EventMeta {
            state,
            peak_score: 1.0,
            peak_area_pct: 1.0,
            boxes: vec![[0.1, 0.1, 0.2, 0.2]],
            ..EventMeta::new(id.into(), parse_id(id).unwrap(), 640, 480)
        }
    }

    /// A real 64x48 grey JPEG whose shade depends on `i`.
    pub(crate) fn jpeg(i: usize) -> Vec<u8> {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 70)
            .encode(
                &vec![(i * 20 % 256) as u8; 64 * 48],
                64,
                48,
                jpeg_encoder::ColorType::Luma,
            )
            .expect("a grey frame encodes");
        out
    }
}
