//! One frame of a finished clip by its number, through the clip's own `idx1` index: the
//! header is read once ([`ClipIndex::open`]), then each frame costs one read of its 16-byte
//! index entry and one of its chunk, however long the clip. Nothing is decoded; every offset
//! and size read from the file is checked against the file before it is used, so a damaged
//! or hostile file gives an error, never a huge allocation or a read outside the clip.

use std::io::{self, Read, Seek, SeekFrom};

use super::{
    AVIH_DATA, AVIH_HEIGHT, AVIH_WIDTH, Chunk, HEADER_LEN, INDEX, INDEX_ENTRY, MAX_CLIP_FRAMES,
    MAX_FRAME_BYTES, MOVI_FOURCC_AT, MOVI_SIZE_AT, le32,
};

/// Why a frame could not be read by its number.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The clip has no such frame.
    #[error("the clip has {frames} frames (numbered from 0); there is no frame {n}")]
    NoSuchFrame {
        /// The number asked for.
        n: u64,
        /// Frames in the clip.
        frames: u32,
    },
    /// The file is not a finished clip with a usable index (cut off, repaired badly, foreign).
    #[error("the clip's index is unusable: {0}")]
    Malformed(&'static str),
    /// Reading failed.
    #[error("the clip cannot be read: {0}")]
    Io(#[from] io::Error),
}

/// Where the frames of a finished clip are: its index's place, its frame count and rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipIndex {
    /// Frames in the index (at most [`MAX_CLIP_FRAMES`]).
    pub frames: u32,
    /// Microseconds per frame from the `avih` header (the measured rate; 0 if the header
    /// says nothing).
    pub us_per_frame: u32,
    /// Frame width and height from the header.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Where the first index entry is.
    entries_at: u64,
    /// End of the `movi` list: every frame lies before it.
    movi_end: u64,
}

impl ClipIndex {
    /// Reads the header and finds the index of the clip `r`, `len` bytes long.
    ///
    /// # Errors
    /// Not an AVI of this layout, no index (a clip cut off before it was finished), or an
    /// index that does not fit the file.
    pub fn open<R: Read + Seek>(r: &mut R, len: u64) -> Result<ClipIndex, IndexError> {
        let mut head = [0u8; HEADER_LEN as usize];
        r.seek(SeekFrom::Start(0))?;
        r.read_exact(&mut head).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => IndexError::Malformed("shorter than an AVI header"),
            _ => IndexError::Io(e),
        })?;
        if &head[0..4] != b"RIFF" || &head[8..12] != b"AVI " || &head[220..224] != b"movi" {
            return Err(IndexError::Malformed("not an MJPEG AVI written by mecam"));
        }
        let movi_end = MOVI_FOURCC_AT + u64::from(le32(&head, MOVI_SIZE_AT as usize));
        if movi_end + Chunk::LEN > len {
            return Err(IndexError::Malformed(
                "no index: the clip was cut off before it was finished",
            ));
        }
        let mut h = [0u8; Chunk::LEN as usize];
        r.seek(SeekFrom::Start(movi_end))?;
        r.read_exact(&mut h)?;
        let idx = Chunk::parse(h);
        if idx.id != INDEX {
            return Err(IndexError::Malformed("no idx1 index after the frames"));
        }
        let entries_at = movi_end + Chunk::LEN;
        if entries_at + u64::from(idx.size) > len {
            return Err(IndexError::Malformed(
                "the index runs past the end of the file",
            ));
        }
        let frames = idx.size as usize / INDEX_ENTRY;
        if frames > MAX_CLIP_FRAMES {
            return Err(IndexError::Malformed("more frames than a clip holds"));
        }
        Ok(ClipIndex {
            frames: frames as u32,
            us_per_frame: le32(&head, AVIH_DATA as usize),
            width: le32(&head, AVIH_WIDTH as usize),
            height: le32(&head, AVIH_HEIGHT as usize),
            entries_at,
            movi_end,
        })
    }

    /// Reads frame `n` (from 0) into `out` (cleared; its capacity is reused): one read of the
    /// index entry, one of the chunk. The bytes are the camera's JPEG as recorded.
    ///
    /// # Errors
    /// No such frame, an entry that points outside the frames or at something else than a
    /// frame of its size, a frame over [`MAX_FRAME_BYTES`], or a read error.
    pub fn frame<R: Read + Seek>(
        &self,
        r: &mut R,
        n: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), IndexError> {
        if n >= u64::from(self.frames) {
            return Err(IndexError::NoSuchFrame {
                n,
                frames: self.frames,
            });
        }
        let mut e = [0u8; INDEX_ENTRY];
        r.seek(SeekFrom::Start(self.entries_at + n * INDEX_ENTRY as u64))?;
        r.read_exact(&mut e)?;
        let (off, size) = (le32(&e, 8), le32(&e, 12));
        if size > MAX_FRAME_BYTES {
            return Err(IndexError::Malformed(
                "an index entry is larger than a frame can be",
            ));
        }
        let at = MOVI_FOURCC_AT + u64::from(off);
        if at < HEADER_LEN || at + Chunk::LEN + u64::from(size) > self.movi_end {
            return Err(IndexError::Malformed(
                "an index entry points outside the frames",
            ));
        }
        let mut h = [0u8; Chunk::LEN as usize];
        r.seek(SeekFrom::Start(at))?;
        r.read_exact(&mut h)?;
        let chunk = Chunk::parse(h);
        if !chunk.is_frame() || chunk.size != size {
            return Err(IndexError::Malformed(
                "an index entry does not point at its frame",
            ));
        }
        out.clear();
        out.resize(size as usize, 0);
        r.read_exact(out)?;
        Ok(())
    }

    /// When frame `n` was captured, in milliseconds after the first (the clip's measured
    /// rate; the frames of a clip come at an even rate as far as the file says).
    pub fn frame_ms(&self, n: u32) -> u64 {
        u64::from(n) * u64::from(self.us_per_frame) / 1000
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::AviWriter;
    use super::*;
    use crate::test_support::jpeg;

    fn clip(frames: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.avi");
        let mut w = AviWriter::create(&p, 64, 48, 10.0).unwrap();
        let jpegs: Vec<_> = (0..frames).map(jpeg).collect();
        for (i, f) in jpegs.iter().enumerate() {
            w.push(f, i as u64 * 100_000_000).unwrap();
        }
        w.finish().unwrap();
        (std::fs::read(&p).unwrap(), jpegs)
    }

    fn open(data: &[u8]) -> Result<ClipIndex, IndexError> {
        ClipIndex::open(&mut Cursor::new(data), data.len() as u64)
    }

    #[test]
    fn every_frame_reads_back_by_its_number() {
        let (data, jpegs) = clip(7);
        let idx = open(&data).unwrap();
        assert_eq!((idx.frames, idx.us_per_frame), (7, 100_000));
        assert_eq!((idx.width, idx.height), (64, 48));
        assert_eq!(idx.frame_ms(3), 300);
        let mut buf = Vec::new();
        let mut r = Cursor::new(&data);
        for n in [6, 0, 3, 3, 1] {
            idx.frame(&mut r, n as u64, &mut buf).unwrap();
            assert_eq!(buf, jpegs[n]);
        }
        let err = idx.frame(&mut r, 7, &mut buf).unwrap_err();
        assert!(
            matches!(err, IndexError::NoSuchFrame { n: 7, frames: 7 }),
            "{err}"
        );
        assert!(idx.frame(&mut r, u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn damaged_and_hostile_clips_give_errors_not_reads_outside() {
        let (data, _) = clip(3);
        let movi_end = (MOVI_FOURCC_AT + u64::from(le32(&data, MOVI_SIZE_AT as usize))) as usize;
        let mut buf = Vec::new();

        // Cut off before the index (a recording that never finished).
        let err = open(&data[..movi_end]).unwrap_err();
        assert!(err.to_string().contains("cut off"), "{err}");
        // Garbage and an empty file.
        assert!(open(b"").is_err());
        assert!(open(&[0x55; 600]).is_err());
        // An index larger than the file.
        let mut big = data.clone();
        big[movi_end + 4..movi_end + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(open(&big), Err(IndexError::Malformed(_))));
        // An entry pointing past the frames, one with a huge size, one at the wrong place.
        let entry = movi_end + 8 + INDEX_ENTRY;
        for (field, value) in [(8, u32::MAX - 4), (12, u32::MAX), (8, 0), (8, 6), (12, 1)] {
            let mut bad = data.clone();
            bad[entry + field..entry + field + 4].copy_from_slice(&value.to_le_bytes());
            let idx = open(&bad).unwrap();
            let err = idx.frame(&mut Cursor::new(&bad), 1, &mut buf).unwrap_err();
            assert!(
                matches!(err, IndexError::Malformed(_)),
                "{field} {value}: {err}"
            );
            assert!(
                buf.capacity() < 1 << 20,
                "no allocation from a hostile size"
            );
            idx.frame(&mut Cursor::new(&bad), 0, &mut buf).unwrap();
        }
        // A file that shrank after it was opened: a read error, not a panic.
        let idx = open(&data).unwrap();
        assert!(
            idx.frame(&mut Cursor::new(&data[..300]), 2, &mut buf)
                .is_err()
        );
    }
}
