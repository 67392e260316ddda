//! motion-svc's live preview, fetched from its Unix socket for the settings page.
//!
//! However many pages poll, motion-svc is asked at most once per [`PREVIEW_MAX_AGE`]: one
//! fetch at a time, and its answer is shared until it is that old. Nothing is fetched while
//! nobody polls.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncReadExt as _;

/// An answer younger than this is served again instead of asking motion-svc.
pub const PREVIEW_MAX_AGE: Duration = Duration::from_millis(200);
/// Largest preview document read (motion-svc's are at most 2 KiB).
pub const MAX_PREVIEW_BYTES: usize = 8 * 1024;
/// How long motion-svc has to answer.
pub const PREVIEW_TIMEOUT: Duration = Duration::from_secs(1);

/// The socket and the last answer.
#[derive(Debug)]
pub struct PreviewProxy {
    socket: PathBuf,
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl PreviewProxy {
    /// Asks motion-svc at `socket`.
    pub fn new(socket: PathBuf) -> PreviewProxy {
        PreviewProxy {
            socket,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The latest preview document (JSON).
    ///
    /// # Errors
    /// motion-svc is not running, not answering in time, or its answer is too large: what
    /// to do, for the page.
    pub async fn get(&self) -> Result<Bytes, String> {
        let mut last = self.last.lock().await;
        if let Some((at, doc)) = &*last {
            if at.elapsed() < PREVIEW_MAX_AGE {
                return Ok(doc.clone());
            }
        }
        let doc = tokio::time::timeout(PREVIEW_TIMEOUT, self.fetch())
            .await
            .map_err(|_| "motion-svc did not answer in time".to_owned())??;
        *last = Some((Instant::now(), doc.clone()));
        Ok(doc)
    }

    async fn fetch(&self) -> Result<Bytes, String> {
        let mut s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| {
                format!(
                    "no preview from motion-svc ({}: {e}); is mecam-motion running?",
                    self.socket.display()
                )
            })?;
        let mut buf = Vec::with_capacity(2048);
        let n = (&mut s)
            .take(MAX_PREVIEW_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("reading motion-svc's preview: {e}"))?;
        if n > MAX_PREVIEW_BYTES {
            return Err(format!(
                "motion-svc's preview is over {MAX_PREVIEW_BYTES} bytes"
            ));
        }
        Ok(Bytes::from(buf))
    }
}
