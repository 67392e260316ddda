//! A live-stream viewer on its own thread: one HTTP connection to `/stream`, every part
//! recorded with its arrival time and whether it is the "camera offline" frame, so a test can
//! check what a person watching would have seen across a fault.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::{MjpegStream, Part};
use crate::poll;

/// Parts kept (oldest dropped first): a bound, so a long test cannot grow without limit.
pub const MAX_KEPT: usize = 20_000;

/// What one received part was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A frame from the camera.
    Live,
    /// The "camera offline" placeholder frame.
    Offline,
}

/// One received part.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// What it was.
    pub kind: Kind,
    /// Its size in bytes.
    pub len: usize,
}

/// Whether `part` is web-svc's "camera offline" frame. web-svc marks every part with
/// `X-Mecam-Camera: live|offline`.
pub fn classify(part: &Part) -> Kind {
    match part.header("x-mecam-camera") {
        Some(v) if v.eq_ignore_ascii_case("offline") => Kind::Offline,
        _ => Kind::Live,
    }
}

#[derive(Debug, Default)]
struct Shared {
    seen: Vec<Seen>,
    ended: Option<String>,
}

/// A viewer reading one stream connection until dropped.
#[derive(Debug)]
pub struct Viewer {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Viewer {
    /// Open `/stream` with `cookie` and start reading.
    ///
    /// # Errors
    /// The stream could not be opened.
    pub fn start(addr: SocketAddr, cookie: &str) -> anyhow::Result<Viewer> {
        let mut stream = MjpegStream::open(addr, "/stream", Some(cookie))?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match stream.next_part() {
                    Ok(part) => {
                        let seen = Seen {
                            at: Instant::now(),
                            kind: classify(&part),
                            len: part.body.len(),
                        };
                        let mut g = sh.lock().expect("viewer lock");
                        if g.seen.len() >= MAX_KEPT {
                            g.seen.remove(0);
                        }
                        g.seen.push(seen);
                    }
                    Err(e) => {
                        sh.lock().expect("viewer lock").ended = Some(format!("{e:#}"));
                        return;
                    }
                }
            }
        });
        Ok(Viewer {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().expect("viewer lock").seen.clone()
    }

    /// Why the connection ended, if it did.
    pub fn ended(&self) -> Option<String> {
        self.shared.lock().expect("viewer lock").ended.clone()
    }

    /// Wait for a part of `kind` that arrived after `since`; returns its arrival time.
    ///
    /// # Errors
    /// The connection ended, or no such part within `timeout`.
    pub fn wait_for(
        &self,
        kind: Kind,
        since: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        poll::until(&format!("a {kind:?} frame on the stream"), timeout, || {
            if let Some(e) = self.ended() {
                return Err(format!("stream connection ended: {e}"));
            }
            Ok(self
                .seen()
                .iter()
                .find(|s| s.at > since && s.kind == kind)
                .map(|s| s.at))
        })
    }

    /// Count of parts of `kind` received after `since`.
    pub fn count_since(&self, kind: Kind, since: Instant) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.at > since && s.kind == kind)
            .count()
    }

    /// Longest gap between consecutive parts received after `since`.
    pub fn longest_gap_since(&self, since: Instant) -> Duration {
        let seen = self.seen();
        let times: Vec<Instant> = seen.iter().filter(|s| s.at > since).map(|s| s.at).collect();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread wakes within the socket's read timeout at worst; don't wait for it.
        drop(self.thread.take());
    }
}
