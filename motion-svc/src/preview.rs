//! The live preview of detection: what the detector saw in its last analysed frame (the
//! changed pixels, as a coarse grid of cells, and the moving objects' boxes), served as one
//! small JSON document to whoever connects to a Unix socket (web-svc, while someone has the
//! settings page open).
//!
//! Nothing is computed while nobody asks: a connection gets the document rendered from the
//! detector's last result, then is closed. One connection is answered per turn of the
//! detection loop, with a non-blocking write of at most [`MAX_DOCUMENT_BYTES`] (far under a
//! socket's buffer), so a client that reads nothing costs one write and a close.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ipc::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use tokio::net::{UnixListener, UnixStream};

use crate::detect::{Detector, Verdict};

/// Columns of the changed-cells grid (rows follow the frame's aspect, at most as many).
pub const GRID_COLS: usize = 32;
/// The document never exceeds this (a full grid, the most boxes, the numbers).
pub const MAX_DOCUMENT_BYTES: usize = 2048;
const _: () =
    assert!(GRID_COLS * GRID_COLS / 4 + crate::detect::MAX_BOXES * 48 + 256 <= MAX_DOCUMENT_BYTES);

pub use tuning::DEFAULT_PREVIEW_SOCKET;

static PREVIEW_LOG: LogThrottle = LogThrottle::new(OUTSIDER_LOG_INTERVAL);

/// What the detection loop knows besides the detector.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context {
    /// Wall-clock ms of the last frame.
    pub wall_ms: u64,
    /// Armed (the overrides' `detection`).
    pub armed: bool,
    /// An event is being recorded.
    pub recording: bool,
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Learning => "learning",
        Verdict::Still => "still",
        Verdict::Motion => "motion",
        Verdict::Grey => "grey",
        Verdict::SceneChange => "scene_change",
    }
}

/// The preview document of `det`'s last analysis into `out` (cleared first):
///
/// ```json
/// {"t_ms":1764662400000,"armed":true,"recording":false,"verdict":"motion","score":4.1,
///  "boxes":[[0.41,0.3,0.12,0.35]],"cols":32,"rows":18,"cells":"0000…"}
/// ```
///
/// `boxes` are frame-relative `[x, y, w, h]`; `cells` is the grid of changed cells, row-major,
/// one bit per cell (most significant first) in hexadecimal, a cell set when any pixel in it
/// changed and counted (masked pixels never do).
pub fn render(det: &Detector, ctx: Context, out: &mut String) {
    out.clear();
    let a = det.last();
    let (changed, w, h) = det.changed();
    let (cols, rows) = if w == 0 || h == 0 || changed.len() != w * h {
        (0, 0)
    } else {
        (
            GRID_COLS.min(w),
            ((GRID_COLS * h + w / 2) / w).clamp(1, GRID_COLS.min(h)),
        )
    };
    let _ = write!(
        out,
        "{{\"t_ms\":{},\"armed\":{},\"recording\":{},\"verdict\":\"{}\",\"score\":{:.2},\"boxes\":[",
        ctx.wall_ms,
        ctx.armed,
        ctx.recording,
        verdict_name(a.verdict),
        a.score
    );
    for (i, b) in a.boxes.iter().enumerate() {
        let [x, y, bw, bh] = b.to_array();
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}[{x},{y},{bw},{bh}]");
    }
    let _ = write!(out, "],\"cols\":{cols},\"rows\":{rows},\"cells\":\"");
    let mut nibble = 0u8;
    let mut bits = 0;
    for r in 0..rows {
        let (y0, y1) = (r * h / rows, (r + 1) * h / rows);
        for c in 0..cols {
            let (x0, x1) = (c * w / cols, (c + 1) * w / cols);
            let set = (y0..y1).any(|y| changed[y * w + x0..y * w + x1].contains(&1));
            nibble = nibble << 1 | u8::from(set);
            bits += 1;
            if bits == 4 {
                out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                (nibble, bits) = (0, 0);
            }
        }
    }
    if bits > 0 {
        nibble <<= 4 - bits;
        out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
    }
    out.push_str("\"}");
}

/// The listening socket. Removed when dropped.
#[derive(Debug)]
pub struct PreviewSocket {
    listener: UnixListener,
    path: PathBuf,
    doc: String,
}

impl PreviewSocket {
    /// Listens at `path`, replacing a socket left by a previous run.
    ///
    /// # Errors
    /// The directory is missing or not writable, or something other than a socket is there.
    pub fn bind(path: &Path) -> std::io::Result<PreviewSocket> {
        use std::os::unix::fs::FileTypeExt as _;
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if m.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        Ok(PreviewSocket {
            listener: UnixListener::bind(path)?,
            path: path.to_path_buf(),
            doc: String::with_capacity(MAX_DOCUMENT_BYTES),
        })
    }

    /// The next connection (cancel-safe: for `select!`).
    pub async fn accept(&self) -> Option<UnixStream> {
        match self.listener.accept().await {
            Ok((s, _)) => Some(s),
            Err(e) => {
                if let Some(held_back) = PREVIEW_LOG.check() {
                    tracing::warn!(held_back, "preview socket: accept failed: {e}");
                }
                None
            }
        }
    }

    /// Answers `conn` with the preview of `det` and closes it. Never waits: what the socket
    /// does not take at once is dropped.
    pub fn answer(&mut self, conn: UnixStream, det: &Detector, ctx: Context) {
        render(det, ctx, &mut self.doc);
        let _ = conn.try_write(self.doc.as_bytes());
    }
}

impl Drop for PreviewSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DetectSettings;
    use crate::decode::LumaImage;

    #[test]
    fn an_unconfigured_detector_gives_an_empty_grid() {
        let det = Detector::new(DetectSettings::default());
        let mut out = String::new();
        render(&det, Context::default(), &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["verdict"], "learning");
        assert_eq!(v["cols"], 0);
        assert_eq!(v["cells"], "");
    }

    #[test]
    fn a_moving_square_sets_its_cells_and_the_document_stays_bounded() {
        let mut det = Detector::new(DetectSettings::default());
        let (w, h) = (160, 90);
        let mut bg = LumaImage::filled(w, h, 0);
        for (i, p) in bg.pixels.iter_mut().enumerate() {
            let (x, y) = (i % w, i / w);
            *p = 60 + 40 * (((x / 10) + (y / 10)) % 3) as u8;
        }
        let mut t = 0.0;
        for _ in 0..20 {
            det.analyse(&bg, t);
            t += 0.2;
        }
        let mut moving = bg.clone();
        for y in 30..60 {
            for x in 100..130 {
                moving.pixels[y * w + x] = 220;
            }
        }
        for _ in 0..3 {
            det.analyse(&moving, t);
            t += 0.2;
        }
        let mut out = String::new();
        let ctx = Context {
            wall_ms: 5,
            armed: true,
            recording: false,
        };
        render(&det, ctx, &mut out);
        assert!(out.len() <= MAX_DOCUMENT_BYTES, "{}", out.len());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let (cols, rows) = (
            v["cols"].as_u64().unwrap() as usize,
            v["rows"].as_u64().unwrap() as usize,
        );
        assert_eq!((cols, rows), (32, 18));
        let cells = v["cells"].as_str().unwrap();
        assert_eq!(cells.len(), (cols * rows).div_ceil(4));
        let bit = |c: usize, r: usize| {
            let i = r * cols + c;
            let n = u8::from_str_radix(&cells[i / 4..i / 4 + 1], 16).unwrap();
            n >> (3 - i % 4) & 1 == 1
        };
        // The square covers x 100..130 of 160 (cells 20..26), y 30..60 of 90 (rows 6..12).
        assert!(bit(22, 8), "{out}");
        assert!(!bit(2, 2), "{out}");
        assert_eq!(v["armed"], true);
    }
}
