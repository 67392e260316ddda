//! Reading a clip back: frame by frame for replay ([`AviFrames`], no index needed, so a
//! cut-off clip plays up to the cut), and whole with its index checked ([`read_frames`]).

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::{
    AVIH_TOTAL_FRAMES, Chunk, FRAME, HEADER_LEN, INDEX, INDEX_ENTRY, MAX_FRAME_BYTES,
    MOVI_FOURCC_AT, MOVI_SIZE_AT, header_fps, le32,
};

/// Reads the JPEG frames of an MJPEG AVI one by one, without an index: RIFF chunks are walked
/// in order, `LIST`s entered, frame chunks (`..dc`/`..db`) returned, everything else skipped.
#[derive(Debug)]
pub struct AviFrames<R> {
    r: R,
    /// Microseconds per frame from the `avih` header (0 until seen).
    pub us_per_frame: u32,
    done: bool,
}

impl<R: Read + Seek> AviFrames<R> {
    /// Checks the RIFF/AVI header.
    ///
    /// # Errors
    /// Not an AVI file.
    pub fn new(mut r: R) -> io::Result<AviFrames<R>> {
        let mut head = [0u8; 12];
        r.read_exact(&mut head)?;
        if &head[0..4] != b"RIFF" || &head[8..12] != b"AVI " {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an AVI file",
            ));
        }
        Ok(AviFrames {
            r,
            us_per_frame: 0,
            done: false,
        })
    }

    /// The next JPEG into `out` (cleared); `Ok(false)` at the end or on a damaged chunk (a
    /// cut-off clip plays up to where it was cut, a chunk over [`MAX_FRAME_BYTES`] ends it).
    ///
    /// # Errors
    /// A read error.
    pub fn next_frame(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        while !self.done {
            let mut h = [0u8; Chunk::LEN as usize];
            if self.r.read_exact(&mut h).is_err() {
                self.done = true;
                break;
            }
            let chunk = Chunk::parse(h);
            let padded = chunk.padded() as i64;
            match &chunk.id {
                b"LIST" => {
                    let mut kind = [0u8; 4];
                    if self.r.read_exact(&mut kind).is_err() {
                        self.done = true;
                    }
                }
                b"avih" => {
                    let mut us = [0u8; 4];
                    self.r.read_exact(&mut us)?;
                    self.us_per_frame = u32::from_le_bytes(us);
                    self.r.seek(SeekFrom::Current(padded - 4))?;
                }
                id if *id == INDEX => self.done = true,
                _ if chunk.is_frame() => {
                    if chunk.size > MAX_FRAME_BYTES {
                        self.done = true;
                        break;
                    }
                    out.clear();
                    out.resize(chunk.size as usize, 0);
                    if self.r.read_exact(out).is_err() {
                        self.done = true;
                        break;
                    }
                    if padded > i64::from(chunk.size) {
                        let _ = self.r.seek(SeekFrom::Current(1));
                    }
                    if out.starts_with(&[0xFF, 0xD8]) {
                        return Ok(true);
                    }
                }
                _ => {
                    self.r.seek(SeekFrom::Current(padded))?;
                }
            }
        }
        Ok(false)
    }
}

/// Reads back the frames of a finished clip through its index, checking the index, the sizes
/// and the header's counts (tests and tools): returns `(fps, frames)`.
///
/// # Errors
/// A read error or a malformed file.
pub fn read_frames(path: &Path) -> io::Result<(f64, Vec<Vec<u8>>)> {
    let data = std::fs::read(path)?;
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed AVI: {what}"));
    if data.len() < HEADER_LEN as usize || &data[0..4] != b"RIFF" {
        return Err(bad("no RIFF header"));
    }
    if le32(&data, 4) as usize + 8 != data.len() {
        return Err(bad("RIFF size is not the file's"));
    }
    let fps = header_fps(&data);
    let movi_end = MOVI_FOURCC_AT as usize + le32(&data, MOVI_SIZE_AT as usize) as usize;
    let chunk_at =
        |at: usize| -> Option<Chunk> { Some(Chunk::parse(data.get(at..at + 8)?.try_into().ok()?)) };
    let index = chunk_at(movi_end)
        .filter(|c| c.id == INDEX)
        .ok_or_else(|| bad("no index"))?;
    let n = index.size as usize / INDEX_ENTRY;
    let mut frames = Vec::with_capacity(n);
    for k in 0..n {
        let e = movi_end + 8 + k * INDEX_ENTRY;
        let entry = data
            .get(e..e + INDEX_ENTRY)
            .ok_or_else(|| bad("index cut off"))?;
        let off = MOVI_FOURCC_AT as usize + le32(entry, 8) as usize;
        let size = le32(entry, 12) as usize;
        match chunk_at(off) {
            Some(c) if c.id == FRAME && c.size as usize == size => {}
            _ => return Err(bad("index entry does not point at its frame")),
        }
        let frame = data
            .get(off + 8..off + 8 + size)
            .ok_or_else(|| bad("frame cut off"))?;
        frames.push(frame.to_vec());
    }
    if le32(&data, AVIH_TOTAL_FRAMES as usize) as usize != n {
        return Err(bad("frame count in the header is not the index's"));
    }
    Ok((fps, frames))
}

#[cfg(test)]
mod tests {
    use super::super::AviWriter;
    use super::*;

    #[test]
    fn reads_frames_and_survives_truncation() {
        let f1: &[u8] = &[0xFF, 0xD8, 1, 2, 0xFF, 0xD9];
        let f2: &[u8] = &[0xFF, 0xD8, 3, 0xFF, 0xD9];
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.avi");
        let mut w = AviWriter::create(&p, 64, 48, 10.0).unwrap();
        w.push(f1, 0).unwrap();
        w.push(f2, 100_000_000).unwrap();
        w.finish().unwrap();
        let data = std::fs::read(&p).unwrap();
        let mut r = AviFrames::new(std::io::Cursor::new(&data)).unwrap();
        let mut buf = Vec::new();
        assert!(r.next_frame(&mut buf).unwrap());
        assert_eq!(buf, f1);
        assert_eq!(r.us_per_frame, 100_000);
        assert!(r.next_frame(&mut buf).unwrap());
        assert_eq!(buf, f2);
        assert!(!r.next_frame(&mut buf).unwrap());
        // Cut inside the second frame (before the index).
        let second = data.len() - 8 - 2 * INDEX_ENTRY;
        let cut = &data[..second - 3];
        let mut r = AviFrames::new(std::io::Cursor::new(cut)).unwrap();
        assert!(r.next_frame(&mut buf).unwrap());
        assert!(
            !r.next_frame(&mut buf).unwrap(),
            "a cut frame is not returned"
        );
        assert!(AviFrames::new(std::io::Cursor::new(b"garbage garbage")).is_err());
    }
}
