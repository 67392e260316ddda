//! Where the writer's clips go: the [`ClipSink`] of one event, created by [`ClipFiles`].

use std::path::Path;

use events::avi::{AviWriter, IndexBuffer};

/// A clip being written, frame by frame.
pub trait ClipSink: Send {
    /// Appends a frame captured at `mono_ns`; `false` when it was not written (too large).
    ///
    /// # Errors
    /// The write failed.
    fn push(&mut self, jpeg: &[u8], mono_ns: u64) -> std::io::Result<bool>;
    /// Writes what is buffered.
    ///
    /// # Errors
    /// The write failed.
    fn flush(&mut self) -> std::io::Result<()>;
    /// Completes the file: the frames it holds (or the write error), and the index storage
    /// back for the next clip.
    fn finish(self: Box<Self>) -> (std::io::Result<usize>, IndexBuffer);
}

/// Where the writer's clips go: [`AviFiles`] in the service; tests put a slower disk behind
/// the same calls.
pub trait ClipFiles: Send + 'static {
    /// Creates the clip file at `path`, its frame index kept in `index` (the writer's, reused
    /// from clip to clip: see [`AviWriter::create_with`]).
    ///
    /// # Errors
    /// It cannot be created.
    fn create(
        &self,
        path: &Path,
        width: u32,
        height: u32,
        nominal_fps: f64,
        index: IndexBuffer,
    ) -> std::io::Result<Box<dyn ClipSink>>;
}

/// Clips as AVI files ([`AviWriter`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct AviFiles;

impl ClipFiles for AviFiles {
    fn create(
        &self,
        path: &Path,
        width: u32,
        height: u32,
        nominal_fps: f64,
        index: IndexBuffer,
    ) -> std::io::Result<Box<dyn ClipSink>> {
        Ok(Box::new(AviWriter::create_with(
            path,
            width,
            height,
            nominal_fps,
            index,
        )?))
    }
}

impl ClipSink for AviWriter {
    fn push(&mut self, jpeg: &[u8], mono_ns: u64) -> std::io::Result<bool> {
        AviWriter::push(self, jpeg, mono_ns)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        AviWriter::flush(self)
    }

    fn finish(self: Box<Self>) -> (std::io::Result<usize>, IndexBuffer) {
        AviWriter::finish_keeping(*self)
    }
}
