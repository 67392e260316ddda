//! The clip: the camera's own JPEG frames in an MJPEG AVI (RIFF) file that VLC, ffmpeg and
//! mpv play, written without re-encoding, repaired after a crash, and read back for replay.
//!
//! Layout: `RIFF AVI` { `LIST hdrl` { `avih`, `LIST strl` { `strh`, `strf` } }, `LIST movi`
//! { `00dc` chunks }, `idx1` }. The header is written first with the nominal frame rate and
//! zero counts; [`AviWriter::finish`] appends the index and fixes the sizes, counts and the
//! measured frame rate. A file cut off by a crash still has a valid header and whole chunks
//! up to the crash; [`repair`] walks them, truncates a torn last chunk and finishes the file.
//! This module is the one definition of that layout: the writer ([`write`]), the repair
//! ([`repair`]) and the readers ([`read`], and [`index`] for one frame by its number) all use the offsets and the chunk header below.

mod index;
mod read;
mod repair;
mod write;

pub use index::{ClipIndex, IndexError};
pub use read::{AviFrames, read_frames};
pub use repair::{RepairError, repair};
pub use write::{AviWriter, FIRST_INDEX_FRAMES, IndexBuffer};

/// Frames per clip at most; frames past it are dropped (and counted by the caller). At 30 fps
/// this is over an hour.
pub const MAX_CLIP_FRAMES: usize = 120_000;
/// Largest JPEG frame in a clip: the writer drops a larger one (counted by the caller), the
/// readers stop at one (a clip read back never needs a bigger buffer).
pub const MAX_FRAME_BYTES: u32 = 8 * 1024 * 1024;

/// Bytes before the first frame chunk: everything up to and including `movi`.
const HEADER_LEN: u64 = 224;
/// Where the `avih` chunk's data starts.
const AVIH_DATA: u64 = 32;
/// Where the `strh` chunk's data starts.
const STRH_DATA: u64 = 108;
/// Where the `movi` list's size is.
const MOVI_SIZE_AT: u64 = 216;
/// Where the `movi` four-character code is: index offsets count from here.
const MOVI_FOURCC_AT: u64 = 220;
/// Offsets inside the header of the fields read back.
const AVIH_TOTAL_FRAMES: u64 = AVIH_DATA + 16;
const AVIH_WIDTH: u64 = AVIH_DATA + 32;
const AVIH_HEIGHT: u64 = AVIH_DATA + 36;
const STRH_SCALE: u64 = STRH_DATA + 20;
const STRH_RATE: u64 = STRH_DATA + 24;
const AVIF_HASINDEX: u32 = 0x10;
const AVIIF_KEYFRAME: u32 = 0x10;
/// The frame chunk's four-character code (stream 0, compressed video).
const FRAME: [u8; 4] = *b"00dc";
/// The index chunk's code.
const INDEX: [u8; 4] = *b"idx1";
/// Bytes per index entry: code, flags, offset, size.
const INDEX_ENTRY: usize = 16;

const _: () = assert!(MOVI_SIZE_AT + 4 == MOVI_FOURCC_AT && MOVI_FOURCC_AT + 4 == HEADER_LEN);

/// A RIFF chunk header: a four-character code and the payload's size; the payload is padded
/// to an even length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    id: [u8; 4],
    size: u32,
}

impl Chunk {
    const LEN: u64 = 8;

    fn parse(b: [u8; 8]) -> Chunk {
        Chunk {
            id: [b[0], b[1], b[2], b[3]],
            size: le32(&b, 4),
        }
    }

    fn bytes(self) -> [u8; 8] {
        let mut b = [0; 8];
        b[..4].copy_from_slice(&self.id);
        b[4..].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// The payload's length on disk, padding included.
    fn padded(self) -> u64 {
        u64::from(self.size) + u64::from(self.size % 2)
    }

    /// A video frame chunk of any stream (`..dc` compressed, `..db` uncompressed).
    fn is_frame(self) -> bool {
        &self.id[2..4] == b"dc" || &self.id[2..4] == b"db"
    }
}

/// The little-endian `u32` at `at` of `b`.
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The frame rate a header claims (`dwRate / dwScale`).
fn header_fps(head: &[u8]) -> f64 {
    f64::from(le32(head, STRH_RATE as usize)) / f64::from(le32(head, STRH_SCALE as usize).max(1))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    /// Cross-checks with ffprobe when it is installed (CI installs ffmpeg).
    pub(crate) fn probe(p: &Path, frames: usize) {
        let out = match std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=codec_name,nb_read_frames",
                "-of",
                "csv=p=0",
            ])
            .arg(p)
            .output()
        {
            Ok(o) => o,
            Err(_) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "ffprobe missing: CI must install ffmpeg"
                );
                eprintln!("ffprobe not installed: skipping the cross-check");
                return;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ffprobe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.trim(),
            format!("mjpeg,{frames}"),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
