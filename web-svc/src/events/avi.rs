//! Reading the JPEG frames of an MJPEG AVI clip for in-browser replay.

use std::io::{Read, Seek, SeekFrom};

/// Largest JPEG chunk read from a clip; a bigger one ends the replay as corrupt.
pub const MAX_CLIP_FRAME: u32 = 8 * 1024 * 1024;

/// Reads the JPEG frames of an MJPEG AVI one by one, without an index: RIFF chunks are walked
/// in order, `LIST`s entered, `..dc`/`..db` chunks returned, everything else skipped.
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
    pub fn new(mut r: R) -> std::io::Result<AviFrames<R>> {
        let mut head = [0u8; 12];
        r.read_exact(&mut head)?;
        if &head[0..4] != b"RIFF" || &head[8..12] != b"AVI " {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
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
    /// cut-off clip plays up to where it was cut).
    ///
    /// # Errors
    /// A read error.
    pub fn next_frame(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        while !self.done {
            let mut h = [0u8; 8];
            if self.r.read_exact(&mut h).is_err() {
                self.done = true;
                break;
            }
            let id = [h[0], h[1], h[2], h[3]];
            let size = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let padded = i64::from(size) + i64::from(size & 1);
            match &id {
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
                b"idx1" => self.done = true,
                _ if &id[2..4] == b"dc" || &id[2..4] == b"db" => {
                    if size > MAX_CLIP_FRAME {
                        self.done = true;
                        break;
                    }
                    out.clear();
                    out.resize(size as usize, 0);
                    if self.r.read_exact(out).is_err() {
                        self.done = true;
                        break;
                    }
                    if size & 1 == 1 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn avi(frames: &[&[u8]]) -> Vec<u8> {
        let mut movi = b"movi".to_vec();
        for f in frames {
            movi.extend_from_slice(b"00dc");
            movi.extend_from_slice(&(f.len() as u32).to_le_bytes());
            movi.extend_from_slice(f);
            if f.len() % 2 == 1 {
                movi.push(0);
            }
        }
        let mut avih = b"avih".to_vec();
        avih.extend_from_slice(&56u32.to_le_bytes());
        avih.extend_from_slice(&100_000u32.to_le_bytes());
        avih.extend_from_slice(&[0; 52]);
        let mut hdrl = b"hdrl".to_vec();
        hdrl.extend_from_slice(&avih);
        let mut body = b"AVI ".to_vec();
        for l in [hdrl, movi] {
            body.extend_from_slice(b"LIST");
            body.extend_from_slice(&(l.len() as u32).to_le_bytes());
            body.extend_from_slice(&l);
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn reads_frames_and_survives_truncation() {
        let f1: &[u8] = &[0xFF, 0xD8, 1, 2, 0xFF, 0xD9];
        let f2: &[u8] = &[0xFF, 0xD8, 3, 0xFF, 0xD9];
        let data = avi(&[f1, f2]);
        let mut r = AviFrames::new(std::io::Cursor::new(&data)).unwrap();
        let mut buf = Vec::new();
        assert!(r.next_frame(&mut buf).unwrap());
        assert_eq!(buf, f1);
        assert_eq!(r.us_per_frame, 100_000);
        assert!(r.next_frame(&mut buf).unwrap());
        assert_eq!(buf, f2);
        assert!(!r.next_frame(&mut buf).unwrap());
        let cut = &data[..data.len() - 3];
        let mut r = AviFrames::new(std::io::Cursor::new(cut)).unwrap();
        assert!(r.next_frame(&mut buf).unwrap());
        assert!(
            !r.next_frame(&mut buf).unwrap(),
            "a cut frame is not returned"
        );
        assert!(AviFrames::new(std::io::Cursor::new(b"garbage garbage")).is_err());
    }
}
