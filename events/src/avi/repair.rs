//! Finishing a clip cut off by a crash.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::write::finish_file;
use super::{Chunk, FRAME, HEADER_LEN, MAX_CLIP_FRAMES, MAX_FRAME_BYTES, MOVI_FOURCC_AT};

/// Why a clip could not be repaired.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Reading or writing failed.
    #[error("cannot repair clip: {0}")]
    Io(#[from] io::Error),
    /// Not one of our AVI files (bad header).
    #[error("not an AVI written by motion-svc (bad header); left as it is")]
    NotOurs,
    /// The header is fine but no whole frame made it to disk.
    #[error("no complete frame in the clip")]
    Empty,
}

/// Finishes a clip cut off by a crash: keeps every whole frame chunk, drops a torn last one,
/// writes the index and fixes the header. Returns the number of frames kept.
///
/// # Errors
/// [`RepairError`]; the file is left untouched when it is not ours.
pub fn repair(path: &Path) -> Result<usize, RepairError> {
    // O_NONBLOCK, O_NOFOLLOW and a regular file only: a FIFO, device or symlink put in its
    // place never blocks us nor leads us elsewhere.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                RepairError::NotOurs
            } else {
                RepairError::Io(e)
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(RepairError::NotOurs);
    }
    let len = meta.len();
    let mut head = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN || file.read_exact(&mut head).is_err() {
        return Err(RepairError::NotOurs);
    }
    if &head[0..4] != b"RIFF"
        || &head[8..12] != b"AVI "
        || &head[MOVI_FOURCC_AT as usize..HEADER_LEN as usize] != b"movi"
    {
        return Err(RepairError::NotOurs);
    }
    let mut index = Vec::new();
    let mut pos = HEADER_LEN;
    let mut max_frame = 0;
    let mut reader = io::BufReader::new(&mut file);
    let mut ck = [0u8; Chunk::LEN as usize];
    while pos + Chunk::LEN <= len && index.len() < MAX_CLIP_FRAMES {
        if reader.read_exact(&mut ck).is_err() {
            break;
        }
        let chunk = Chunk::parse(ck);
        if chunk.id != FRAME
            || chunk.size > MAX_FRAME_BYTES
            || pos + Chunk::LEN + chunk.padded() > len
        {
            break;
        }
        index.push(((pos - MOVI_FOURCC_AT) as u32, chunk.size));
        max_frame = max_frame.max(chunk.size);
        pos += Chunk::LEN + chunk.padded();
        reader.seek_relative(chunk.padded() as i64)?;
    }
    drop(reader);
    if index.is_empty() {
        return Err(RepairError::Empty);
    }
    finish_file(file, &index, pos, max_frame, None)?;
    Ok(index.len())
}

#[cfg(test)]
mod tests {
    use super::super::tests::probe;
    use super::super::{AviWriter, read_frames};
    use super::*;
    use crate::test_support::jpeg;

    #[test]
    fn a_torn_clip_is_repaired_to_its_whole_frames() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.avi.part");
        let mut w = AviWriter::create(&p, 64, 48, 15.0).unwrap();
        for i in 0..5 {
            w.push(&jpeg(i), i as u64).unwrap();
        }
        w.flush().unwrap();
        drop(w); // the crash: no index, counts zero
        let len = std::fs::metadata(&p).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        assert!(read_frames(&p).is_err());
        assert_eq!(repair(&p).unwrap(), 4);
        let (fps, back) = read_frames(&p).unwrap();
        assert_eq!(back.len(), 4);
        assert!((fps - 15.0).abs() < 0.01);
        probe(&p, 4);
    }

    #[test]
    fn garbage_is_not_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.avi.part");
        std::fs::write(&p, b"hello").unwrap();
        assert!(matches!(repair(&p), Err(RepairError::NotOurs)));
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        let p2 = dir.path().join("y.avi.part");
        AviWriter::create(&p2, 64, 48, 15.0)
            .unwrap()
            .flush()
            .unwrap();
        assert!(matches!(repair(&p2), Err(RepairError::Empty)));
    }
}
