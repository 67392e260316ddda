//! The `file` source: an MJPEG file, or the JPEG files of a folder in name order, as one
//! byte stream.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt as _;

/// Most JPEG files a folder source replays (their names are held in memory).
pub const MAX_FOLDER_FILES: usize = 100_000;
/// A file or the files of a folder, read as one byte stream.
#[derive(Debug)]
pub struct FileInput {
    files: Vec<PathBuf>,
    next: usize,
    current: Option<tokio::fs::File>,
}

impl FileInput {
    /// Opens an MJPEG file, or lists the `*.jpg`/`*.jpeg` files of a folder in name order.
    ///
    /// # Errors
    /// Nothing to read, more than [`MAX_FOLDER_FILES`], or I/O errors.
    pub fn open(path: &Path) -> std::io::Result<FileInput> {
        let files = if path.is_dir() {
            let mut files = Vec::new();
            for e in std::fs::read_dir(path)? {
                let p = e?.path();
                let ext = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                if matches!(ext.as_deref(), Some("jpg" | "jpeg")) {
                    if files.len() == MAX_FOLDER_FILES {
                        return Err(std::io::Error::other(format!(
                            "{} holds more than {MAX_FOLDER_FILES} JPEGs",
                            path.display()
                        )));
                    }
                    files.push(p);
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{} holds no .jpg/.jpeg files",
                    path.display()
                )));
            }
            files
        } else {
            std::fs::metadata(path)?;
            vec![path.to_owned()]
        };
        Ok(FileInput {
            files,
            next: 0,
            current: None,
        })
    }

    /// Reads the next bytes; 0 at the end of the last file.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(f) = &mut self.current {
                let n = f.read(buf).await?;
                if n > 0 {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some(p) = self.files.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.current = Some(tokio::fs::File::open(p).await?);
        }
    }
}
