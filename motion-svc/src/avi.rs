//! AVI: the camera's own JPEG frames in an MJPEG AVI (RIFF) file that VLC, ffmpeg and mpv
//! play, written without re-encoding.
//!
//! Layout: `RIFF AVI` { `LIST hdrl` { `avih`, `LIST strl` { `strh`, `strf` } }, `LIST movi`
//! { `00dc` chunks }, `idx1` }. The header is written first with the nominal frame rate and
//! zero counts; [`AviWriter::finish`] appends the index and fixes the sizes, counts and the
//! measured frame rate. A file cut off by a crash still has a valid header and whole chunks
//! up to the crash; [`repair`] walks them, truncates a torn last chunk and finishes the file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Frames per clip at most; frames past it are dropped (and counted by the caller). At 30 fps
/// this is over an hour.
pub const MAX_CLIP_FRAMES: usize = 120_000;

const HEADER_LEN: u64 = 224;
const AVIH_DATA: u64 = 32;
const STRH_DATA: u64 = 108;
const MOVI_SIZE_AT: u64 = 216;
const MOVI_FOURCC_AT: u64 = 220;
const AVIF_HASINDEX: u32 = 0x10;
const AVIIF_KEYFRAME: u32 = 0x10;

/// Writes one clip.
#[derive(Debug)]
pub struct AviWriter {
    out: BufWriter<File>,
    index: Vec<(u32, u32)>,
    pos: u64,
    max_frame: u32,
    first_ns: Option<u64>,
    last_ns: u64,
    nominal_fps: f64,
}

fn header(
    width: u32,
    height: u32,
    fps: f64,
    frames: u32,
    max_frame: u32,
    movi_len: u32,
    riff_len: u32,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    let fps = if fps.is_finite() && fps > 0.1 {
        fps
    } else {
        10.0
    };
    let rate = (fps * 1000.0).round() as u32;
    let put = |h: &mut Vec<u8>, v: u32| h.extend_from_slice(&v.to_le_bytes());
    h.extend_from_slice(b"RIFF");
    put(&mut h, riff_len);
    h.extend_from_slice(b"AVI LIST");
    put(&mut h, 4 + 64 + 12 + 64 + 48);
    h.extend_from_slice(b"hdrlavih");
    put(&mut h, 56);
    put(&mut h, (1_000_000.0 / fps).round() as u32); // dwMicroSecPerFrame
    put(&mut h, (f64::from(max_frame) * fps) as u32); // dwMaxBytesPerSec
    put(&mut h, 0); // dwPaddingGranularity
    put(&mut h, AVIF_HASINDEX);
    put(&mut h, frames); // dwTotalFrames
    put(&mut h, 0); // dwInitialFrames
    put(&mut h, 1); // dwStreams
    put(&mut h, max_frame); // dwSuggestedBufferSize
    put(&mut h, width);
    put(&mut h, height);
    for _ in 0..4 {
        put(&mut h, 0);
    }
    h.extend_from_slice(b"LIST");
    put(&mut h, 4 + 64 + 48);
    h.extend_from_slice(b"strlstrh");
    put(&mut h, 56);
    h.extend_from_slice(b"vidsMJPG");
    put(&mut h, 0); // dwFlags
    put(&mut h, 0); // wPriority, wLanguage
    put(&mut h, 0); // dwInitialFrames
    put(&mut h, 1000); // dwScale
    put(&mut h, rate); // dwRate
    put(&mut h, 0); // dwStart
    put(&mut h, frames); // dwLength
    put(&mut h, max_frame); // dwSuggestedBufferSize
    put(&mut h, u32::MAX); // dwQuality
    put(&mut h, 0); // dwSampleSize
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&(width as u16).to_le_bytes());
    h.extend_from_slice(&(height as u16).to_le_bytes());
    h.extend_from_slice(b"strf");
    put(&mut h, 40);
    put(&mut h, 40);
    put(&mut h, width);
    put(&mut h, height);
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&24u16.to_le_bytes());
    h.extend_from_slice(b"MJPG");
    put(&mut h, width * height * 3);
    for _ in 0..4 {
        put(&mut h, 0);
    }
    h.extend_from_slice(b"LIST");
    put(&mut h, movi_len);
    h.extend_from_slice(b"movi");
    debug_assert_eq!(h.len() as u64, HEADER_LEN);
    h
}

impl AviWriter {
    /// Creates `path` (truncating) and writes the header for `width` x `height` frames at
    /// `nominal_fps` (the rate a repaired file will claim).
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn create(path: &Path, width: u32, height: u32, nominal_fps: f64) -> io::Result<AviWriter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        out.write_all(&header(width, height, nominal_fps, 0, 0, 4, 0))?;
        Ok(AviWriter {
            out,
            index: Vec::with_capacity(1024),
            pos: HEADER_LEN,
            max_frame: 0,
            first_ns: None,
            last_ns: 0,
            nominal_fps,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> usize {
        self.index.len()
    }

    /// Appends one JPEG frame captured at `mono_ns`. Returns `Ok(false)` (nothing written)
    /// when the clip is full.
    ///
    /// # Errors
    /// A write error.
    pub fn push(&mut self, jpeg: &[u8], mono_ns: u64) -> io::Result<bool> {
        if self.index.len() >= MAX_CLIP_FRAMES || jpeg.len() > u32::MAX as usize / 2 {
            return Ok(false);
        }
        let len = jpeg.len() as u32;
        self.out.write_all(b"00dc")?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(jpeg)?;
        if len % 2 == 1 {
            self.out.write_all(&[0])?;
        }
        self.index.push(((self.pos - MOVI_FOURCC_AT) as u32, len));
        self.pos += 8 + u64::from(len) + u64::from(len % 2);
        self.max_frame = self.max_frame.max(len);
        self.first_ns.get_or_insert(mono_ns);
        self.last_ns = mono_ns;
        Ok(true)
    }

    /// Flushes buffered bytes to the file (so a crash loses little).
    ///
    /// # Errors
    /// A write error.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes the index, fixes the header, and syncs. Returns the number of frames.
    ///
    /// # Errors
    /// A write error.
    pub fn finish(self) -> io::Result<usize> {
        let n = self.index.len();
        let fps = match self.first_ns {
            Some(first) if n > 1 && self.last_ns > first => {
                (n - 1) as f64 * 1e9 / (self.last_ns - first) as f64
            }
            _ => self.nominal_fps,
        };
        finish_file(
            self.out.into_inner().map_err(|e| e.into_error())?,
            &self.index,
            self.pos,
            self.max_frame,
            Some(fps),
        )?;
        Ok(n)
    }
}

fn finish_file(
    mut file: File,
    index: &[(u32, u32)],
    movi_end: u64,
    max_frame: u32,
    fps: Option<f64>,
) -> io::Result<()> {
    file.set_len(movi_end)?;
    file.seek(SeekFrom::Start(movi_end))?;
    let mut idx = Vec::with_capacity(8 + index.len() * 16);
    idx.extend_from_slice(b"idx1");
    idx.extend_from_slice(&((index.len() * 16) as u32).to_le_bytes());
    for &(off, len) in index {
        idx.extend_from_slice(b"00dc");
        idx.extend_from_slice(&AVIIF_KEYFRAME.to_le_bytes());
        idx.extend_from_slice(&off.to_le_bytes());
        idx.extend_from_slice(&len.to_le_bytes());
    }
    file.write_all(&idx)?;
    let total = movi_end + idx.len() as u64;
    // Keep width/height/nominal rate from the existing header; patch the rest.
    let mut old = [0u8; HEADER_LEN as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut old)?;
    let rd = |at: u64| {
        u32::from_le_bytes(
            old[at as usize..at as usize + 4]
                .try_into()
                .expect("4 bytes"),
        )
    };
    let width = rd(AVIH_DATA + 32);
    let height = rd(AVIH_DATA + 36);
    let nominal = f64::from(rd(STRH_DATA + 24)) / f64::from(rd(STRH_DATA + 20).max(1));
    let fps = fps.unwrap_or(nominal);
    let h = header(
        width,
        height,
        fps,
        index.len() as u32,
        max_frame,
        (movi_end - MOVI_FOURCC_AT) as u32,
        (total - 8) as u32,
    );
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&h)?;
    debug_assert_eq!(MOVI_SIZE_AT + 4, MOVI_FOURCC_AT);
    file.sync_all()
}

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
    // O_NONBLOCK and a regular file only: a FIFO or device put in its place never blocks us.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
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
    let mut ck = [0u8; 8];
    while pos + 8 <= len && index.len() < MAX_CLIP_FRAMES {
        if reader.read_exact(&mut ck).is_err() || &ck[0..4] != b"00dc" {
            break;
        }
        let size = u32::from_le_bytes(ck[4..8].try_into().expect("4 bytes"));
        let padded = u64::from(size) + u64::from(size % 2);
        if pos + 8 + padded > len {
            break;
        }
        index.push(((pos - MOVI_FOURCC_AT) as u32, size));
        max_frame = max_frame.max(size);
        pos += 8 + padded;
        reader.seek_relative(padded as i64)?;
    }
    drop(reader);
    if index.is_empty() {
        return Err(RepairError::Empty);
    }
    finish_file(file, &index, pos, max_frame, None)?;
    Ok(index.len())
}

/// Reads back the frames of a finished clip (tests and tools): returns `(fps, frames)`.
///
/// # Errors
/// A read error or a malformed file.
pub fn read_frames(path: &Path) -> io::Result<(f64, Vec<Vec<u8>>)> {
    let data = std::fs::read(path)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed AVI");
    if data.len() < HEADER_LEN as usize || &data[0..4] != b"RIFF" {
        return Err(bad());
    }
    let rd = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
    if rd(4) as usize + 8 != data.len() {
        return Err(bad());
    }
    let fps =
        f64::from(rd(STRH_DATA as usize + 24)) / f64::from(rd(STRH_DATA as usize + 20).max(1));
    let movi_end = MOVI_FOURCC_AT as usize + rd(MOVI_SIZE_AT as usize) as usize;
    if &data[movi_end..movi_end + 4] != b"idx1" {
        return Err(bad());
    }
    let n = rd(movi_end + 4) as usize / 16;
    let mut frames = Vec::with_capacity(n);
    for k in 0..n {
        let e = movi_end + 8 + k * 16;
        let off = MOVI_FOURCC_AT as usize + rd(e + 8) as usize;
        let size = rd(e + 12) as usize;
        if &data[off..off + 4] != b"00dc" || rd(off + 4) as usize != size {
            return Err(bad());
        }
        frames.push(data[off + 8..off + 8 + size].to_vec());
    }
    if rd(AVIH_DATA as usize + 16) as usize != n {
        return Err(bad());
    }
    Ok((fps, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: usize) -> Vec<u8> {
        crate::test_jpeg::encode_gray(64, 48, &vec![(i * 20 % 256) as u8; 64 * 48], 70).unwrap()
    }

    #[test]
    fn writes_a_clip_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.avi");
        let mut w = AviWriter::create(&p, 64, 48, 15.0).unwrap();
        let frames: Vec<_> = (0..10).map(frame).collect();
        for (i, f) in frames.iter().enumerate() {
            assert!(w.push(f, i as u64 * 100_000_000).unwrap());
        }
        assert_eq!(w.finish().unwrap(), 10);
        let (fps, back) = read_frames(&p).unwrap();
        assert!((fps - 10.0).abs() < 0.01, "{fps}");
        assert_eq!(back, frames);
        probe(&p, 10);
    }

    #[test]
    fn a_torn_clip_is_repaired_to_its_whole_frames() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.avi.part");
        let mut w = AviWriter::create(&p, 64, 48, 15.0).unwrap();
        for i in 0..5 {
            w.push(&frame(i), i as u64).unwrap();
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

    /// Cross-checks with ffprobe when it is installed (CI installs ffmpeg).
    fn probe(p: &Path, frames: usize) {
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
