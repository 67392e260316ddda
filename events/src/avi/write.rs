//! Writing a clip: the header first, frame chunks as they come, the index at the end.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::{
    AVIF_HASINDEX, AVIH_HEIGHT, AVIH_WIDTH, AVIIF_KEYFRAME, Chunk, FRAME, HEADER_LEN, INDEX,
    INDEX_ENTRY, MAX_CLIP_FRAMES, MAX_FRAME_BYTES, MOVI_FOURCC_AT, header_fps, le32,
};

/// Index entries a clip made with [`AviWriter::create`] reserves at first (it grows from there,
/// up to [`MAX_CLIP_FRAMES`]); a writer that records clip after clip passes its own
/// [`IndexBuffer`] to [`AviWriter::create_with`] instead.
pub const FIRST_INDEX_FRAMES: usize = 1024;
/// Index entries written to the file per write when the clip is finished: the index goes out
/// through a buffer of this many entries on the stack, never as one block the clip's size.
const INDEX_BATCH: usize = 256;

/// The frame index of a clip being written: `(offset from movi, size)` per frame. It is the
/// only memory a clip needs per frame, so a recorder keeps one from clip to clip
/// ([`AviWriter::create_with`], [`AviWriter::finish_keeping`]): reserved for the longest clip
/// it expects, writing frames then allocates nothing. Its bound is [`MAX_CLIP_FRAMES`] entries
/// (8 bytes each).
#[derive(Debug, Default)]
pub struct IndexBuffer(Vec<(u32, u32)>);

impl IndexBuffer {
    /// An empty index with room for `frames` entries (at most [`MAX_CLIP_FRAMES`]).
    pub fn with_frames(frames: usize) -> IndexBuffer {
        IndexBuffer(Vec::with_capacity(frames.min(MAX_CLIP_FRAMES)))
    }

    /// Entries it holds without allocating.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Makes room for `frames` entries in all (at most [`MAX_CLIP_FRAMES`]).
    pub fn reserve_frames(&mut self, frames: usize) {
        let want = frames.min(MAX_CLIP_FRAMES);
        self.0.reserve(want.saturating_sub(self.0.len()));
    }
}

/// Writes one clip.
#[derive(Debug)]
pub struct AviWriter {
    out: BufWriter<File>,
    index: IndexBuffer,
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
        AviWriter::create_with(
            path,
            width,
            height,
            nominal_fps,
            IndexBuffer::with_frames(FIRST_INDEX_FRAMES),
        )
    }

    /// [`AviWriter::create`], keeping the frame index in `index` (emptied first): with room
    /// for every frame of the clip, pushing frames allocates nothing. Get it back for the next
    /// clip with [`AviWriter::finish_keeping`].
    ///
    /// # Errors
    /// The file cannot be created or written (`index` is dropped).
    pub fn create_with(
        path: &Path,
        width: u32,
        height: u32,
        nominal_fps: f64,
        mut index: IndexBuffer,
    ) -> io::Result<AviWriter> {
        index.0.clear();
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
            index,
            pos: HEADER_LEN,
            max_frame: 0,
            first_ns: None,
            last_ns: 0,
            nominal_fps,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> usize {
        self.index.0.len()
    }

    /// Appends one JPEG frame captured at `mono_ns`. Returns `Ok(false)` (nothing written)
    /// when the clip is full or the frame is over [`MAX_FRAME_BYTES`].
    ///
    /// # Errors
    /// A write error.
    pub fn push(&mut self, jpeg: &[u8], mono_ns: u64) -> io::Result<bool> {
        if self.index.0.len() >= MAX_CLIP_FRAMES || jpeg.len() > MAX_FRAME_BYTES as usize {
            return Ok(false);
        }
        let chunk = Chunk {
            id: FRAME,
            size: jpeg.len() as u32,
        };
        self.out.write_all(&chunk.bytes())?;
        self.out.write_all(jpeg)?;
        if chunk.padded() > u64::from(chunk.size) {
            self.out.write_all(&[0])?;
        }
        self.index
            .0
            .push(((self.pos - MOVI_FOURCC_AT) as u32, chunk.size));
        self.pos += Chunk::LEN + chunk.padded();
        self.max_frame = self.max_frame.max(chunk.size);
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
        self.finish_keeping().0
    }

    /// [`AviWriter::finish`], handing back the frame index's storage for the next clip
    /// ([`AviWriter::create_with`]), whether finishing worked or not.
    pub fn finish_keeping(self) -> (io::Result<usize>, IndexBuffer) {
        let n = self.index.0.len();
        let fps = match self.first_ns {
            Some(first) if n > 1 && self.last_ns > first => {
                (n - 1) as f64 * 1e9 / (self.last_ns - first) as f64
            }
            _ => self.nominal_fps,
        };
        let result = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| finish_file(file, &self.index.0, self.pos, self.max_frame, Some(fps)))
            .map(|()| n);
        (result, self.index)
    }
}

/// Truncates `file` after its last frame chunk at `movi_end`, appends the index of `index`
/// (`(offset from movi, size)` per frame) and rewrites the header with the counts, keeping the
/// width, height and (when `fps` is `None`) the rate of the header in the file.
pub(super) fn finish_file(
    mut file: File,
    index: &[(u32, u32)],
    movi_end: u64,
    max_frame: u32,
    fps: Option<f64>,
) -> io::Result<()> {
    file.set_len(movi_end)?;
    file.seek(SeekFrom::Start(movi_end))?;
    let idx_len = index.len() * INDEX_ENTRY;
    file.write_all(
        &Chunk {
            id: INDEX,
            size: idx_len as u32,
        }
        .bytes(),
    )?;
    let mut batch = [0u8; INDEX_BATCH * INDEX_ENTRY];
    for entries in index.chunks(INDEX_BATCH) {
        for (&(off, len), e) in entries.iter().zip(batch.chunks_exact_mut(INDEX_ENTRY)) {
            e[..4].copy_from_slice(&FRAME);
            e[4..8].copy_from_slice(&AVIIF_KEYFRAME.to_le_bytes());
            e[8..12].copy_from_slice(&off.to_le_bytes());
            e[12..].copy_from_slice(&len.to_le_bytes());
        }
        file.write_all(&batch[..entries.len() * INDEX_ENTRY])?;
    }
    let total = movi_end + Chunk::LEN + idx_len as u64;
    let mut old = [0u8; HEADER_LEN as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut old)?;
    let h = header(
        le32(&old, AVIH_WIDTH as usize),
        le32(&old, AVIH_HEIGHT as usize),
        fps.unwrap_or_else(|| header_fps(&old)),
        index.len() as u32,
        max_frame,
        (movi_end - MOVI_FOURCC_AT) as u32,
        (total - 8) as u32,
    );
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&h)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::super::tests::probe;
    use super::*;
    use crate::avi::read_frames;
    use crate::test_support::jpeg;

    #[test]
    fn writes_a_clip_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.avi");
        let mut w = AviWriter::create(&p, 64, 48, 15.0).unwrap();
        let frames: Vec<_> = (0..10).map(jpeg).collect();
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
    fn one_index_serves_clip_after_clip_without_growing() {
        let dir = tempfile::tempdir().unwrap();
        let frames: Vec<_> = (0..40).map(jpeg).collect();
        let mut index = IndexBuffer::with_frames(400);
        let room = index.capacity();
        // More frames in the index than one write of it holds, so it goes out in batches.
        for (clip, n) in [(0, 40), (1, 3), (2, 40)] {
            let p = dir.path().join(format!("clip{clip}.avi"));
            let mut w = AviWriter::create_with(&p, 64, 48, 15.0, index).unwrap();
            for (i, f) in frames[..n].iter().enumerate() {
                for _ in 0..10 {
                    assert!(w.push(f, i as u64 * 100_000_000).unwrap());
                }
            }
            let (written, back) = w.finish_keeping();
            assert_eq!(written.unwrap(), n * 10);
            index = back;
            let (_, read) = read_frames(&p).unwrap();
            assert_eq!(read.len(), n * 10);
            assert_eq!(read[read.len() - 1], frames[n - 1]);
            probe(&p, n * 10);
        }
        assert_eq!(
            index.capacity(),
            room,
            "reserved for the longest clip: never grown"
        );
    }

    #[test]
    fn a_clip_index_is_never_reserved_past_the_clip_bound() {
        let mut index = IndexBuffer::with_frames(usize::MAX);
        assert_eq!(index.capacity(), MAX_CLIP_FRAMES);
        index.reserve_frames(MAX_CLIP_FRAMES * 4);
        assert_eq!(index.capacity(), MAX_CLIP_FRAMES);
    }

    #[test]
    fn a_frame_the_readers_would_refuse_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clip.avi");
        let mut w = AviWriter::create(&p, 64, 48, 15.0).unwrap();
        assert!(w.push(&jpeg(0), 0).unwrap());
        let huge = vec![0u8; MAX_FRAME_BYTES as usize + 1];
        assert!(!w.push(&huge, 1).unwrap(), "over the bound: dropped");
        assert!(w.push(&jpeg(1), 2).unwrap());
        assert_eq!(w.finish().unwrap(), 2);
        assert_eq!(read_frames(&p).unwrap().1, [jpeg(0), jpeg(1)]);
    }
}
