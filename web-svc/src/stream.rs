//! One viewer's MJPEG body: waits for the newest frame in the hub (copied out of the region
//! for it when it joins, then by the fan-out as each frame comes), writes the shared part
//! header and JPEG (reference-counted, never copied), re-sends the last live frame after
//! [`RESEND_AFTER`] without a new one (never a placeholder: new ones come once a second),
//! honours a per-viewer fps cap, and ends on shutdown.
//! Progress is recorded in the connection's [`ConnWatch`], so the server can drop a
//! connection whose socket has taken nothing for the viewer timeout.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fanout::{Frame, Hub};

/// Without a new frame for this long, the last one is sent again (keeps proxies and players
/// from timing out).
pub const RESEND_AFTER: Duration = Duration::from_secs(1);
/// Lowest `?fps=` accepted; lower values are raised to it, so a stalled viewer is still told
/// apart from a slow one by the viewer timeout.
pub const MIN_FPS: f64 = 1.0;
/// Highest `?fps=` that means anything.
pub const MAX_FPS: f64 = 120.0;

/// Per-connection record shared between the server's connection task and the stream body.
#[derive(Debug)]
pub struct ConnWatch {
    epoch: Instant,
    streaming: AtomicBool,
    last_progress_ms: AtomicU64,
    /// Since when (ms after `epoch`) a write to the socket has been waiting for room;
    /// [`NOT_BLOCKED`] while writes go out.
    write_blocked_ms: AtomicU64,
}

const NOT_BLOCKED: u64 = u64::MAX;

impl Default for ConnWatch {
    fn default() -> Self {
        ConnWatch {
            epoch: Instant::now(),
            streaming: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(0),
            write_blocked_ms: AtomicU64::new(NOT_BLOCKED),
        }
    }
}

impl ConnWatch {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn progress(&self) {
        self.last_progress_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// Records that a write found the socket full (keeps the earliest time).
    pub fn write_blocked(&self) {
        if self.write_blocked_ms.load(Ordering::Relaxed) == NOT_BLOCKED {
            self.write_blocked_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Records that a write went out.
    pub fn write_unblocked(&self) {
        if self.write_blocked_ms.load(Ordering::Relaxed) != NOT_BLOCKED {
            self.write_blocked_ms.store(NOT_BLOCKED, Ordering::Relaxed);
        }
    }

    /// How long a write has been waiting for room in the socket, if one is.
    pub fn write_blocked_for(&self) -> Option<Duration> {
        let since = self.write_blocked_ms.load(Ordering::Relaxed);
        (since != NOT_BLOCKED).then(|| Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// Whether a stream or download is being sent on this connection (it is then watched
    /// by the viewer timeout).
    pub fn is_streaming(&self) -> bool {
        self.streaming.load(Ordering::Relaxed)
    }

    /// True when a stream on this connection has handed nothing to the socket for `timeout`.
    pub fn stalled(&self, timeout: Duration) -> bool {
        self.streaming.load(Ordering::Relaxed)
            && self
                .now_ms()
                .saturating_sub(self.last_progress_ms.load(Ordering::Relaxed))
                > timeout.as_millis() as u64
    }
}

/// Marks a long response (a download) on its connection, so a client that stops reading
/// is dropped after the viewer timeout like a stalled viewer; unmarked on drop.
#[derive(Debug)]
pub struct ConnProgress(Option<Arc<ConnWatch>>);

impl ConnProgress {
    /// Starts watching `conn` (no-op without one, e.g. in-process tests).
    pub fn new(conn: Option<Arc<ConnWatch>>) -> ConnProgress {
        if let Some(c) = &conn {
            c.progress();
            c.streaming.store(true, Ordering::Relaxed);
        }
        ConnProgress(conn)
    }

    /// Records that the socket took data.
    pub fn progress(&self) {
        if let Some(c) = &self.0 {
            c.progress();
        }
    }
}

impl Drop for ConnProgress {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.streaming.store(false, Ordering::Relaxed);
        }
    }
}

/// Holds a stream slot: counted in the viewer gauge until dropped.
#[derive(Debug)]
pub struct ViewerSlot {
    hub: Arc<Hub>,
    conn: ConnProgress,
}

impl ViewerSlot {
    /// Takes a slot if fewer than `max` viewers stream now.
    pub fn acquire(hub: &Arc<Hub>, max: usize, conn: Option<Arc<ConnWatch>>) -> Option<ViewerSlot> {
        let viewers = &hub.metrics.viewers;
        let mut n = viewers.load(Ordering::Relaxed);
        loop {
            if n >= max {
                hub.metrics.streams_refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match viewers.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        hub.viewer_joined();
        Some(ViewerSlot {
            hub: hub.clone(),
            conn: ConnProgress::new(conn),
        })
    }

    /// Records that the socket took data.
    pub fn progress(&self, bytes: usize) {
        self.conn.progress();
        self.hub
            .metrics
            .bytes_sent
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.hub.metrics.viewers.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Viewer {
    slot: ViewerSlot,
    rx: watch::Receiver<Option<Frame>>,
    shutdown: CancellationToken,
    pending: Option<Bytes>,
    min_interval: Duration,
    last_sent: Option<Instant>,
    last_seq: u64,
    /// Whether the last part sent was a live frame: a placeholder is never re-sent (the
    /// fan-out renders a new one every [`OFFLINE_PERIOD`]), so a viewer gets at most one
    /// offline part a second.
    ///
    /// [`OFFLINE_PERIOD`]: crate::fanout::OFFLINE_PERIOD
    last_live: bool,
    fresh: bool,
    /// The resend timer, made once per viewer and moved only when it fires early (see
    /// [`Viewer::wait_for_change`]): a frame costs no timer work.
    resend: Pin<Box<tokio::time::Sleep>>,
}

/// The body stream of one live viewer.
pub fn live(
    slot: ViewerSlot,
    shutdown: CancellationToken,
    fps: Option<f64>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let rx = slot.hub().subscribe();
    let min_interval = fps
        .filter(|f| f.is_finite())
        .map(|f| Duration::from_secs_f64(1.0 / f.clamp(MIN_FPS, MAX_FPS)))
        .unwrap_or_default();
    let viewer = Viewer {
        slot,
        rx,
        shutdown,
        pending: None,
        min_interval,
        last_sent: None,
        last_seq: 0,
        last_live: false,
        fresh: true,
        resend: Box::pin(tokio::time::sleep(Duration::ZERO)),
    };
    futures_util::stream::unfold(viewer, |mut v| async move {
        let part = v.next_part().await?;
        Some((Ok(part), v))
    })
}

impl Viewer {
    /// The next part to send: the JPEG of the frame whose header went last, else the header
    /// of the next frame due; `None` at shutdown.
    async fn next_part(&mut self) -> Option<Bytes> {
        if let Some(jpeg) = self.pending.take() {
            self.slot.progress(jpeg.len());
            return Some(jpeg);
        }
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            self.pace().await?;
            if !(self.fresh || self.rx.has_changed().unwrap_or(false)) {
                self.wait_for_change().await?;
            }
            if self.fresh {
                // Nothing is copied while nobody watches: a viewer that joins has the newest
                // frame copied now, not one from before.
                self.slot.hub().refresh();
                self.fresh = false;
            }
            let Some(frame) = self.rx.borrow_and_update().clone() else {
                continue;
            };
            return Some(self.send(frame));
        }
    }

    /// Waits until the viewer's frame rate allows the next frame; `None` at shutdown.
    async fn pace(&mut self) -> Option<()> {
        if let Some(last) = self.last_sent {
            let earliest = last + self.min_interval;
            if earliest > Instant::now() {
                tokio::select! {
                    () = self.shutdown.cancelled() => return None,
                    () = tokio::time::sleep_until(earliest.into()) => {}
                }
            }
        }
        Some(())
    }

    /// Waits for a new frame, or for the time to send a live one again ([`RESEND_AFTER`]);
    /// `None` at shutdown or when the fan-out is gone.
    ///
    /// The resend timer is not set again for every frame sent (a timer registered and
    /// cancelled per frame): it is left where it was, and when it fires before the resend is
    /// due (a frame was sent since) it is moved to when it is due. So it fires about once per
    /// [`RESEND_AFTER`] while frames flow, and the resend still comes exactly
    /// [`RESEND_AFTER`] after the last frame sent.
    async fn wait_for_change(&mut self) -> Option<()> {
        let resend_at = self
            .last_sent
            .filter(|_| self.last_live)
            .map(|t| t + RESEND_AFTER);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                r = self.rx.changed() => return r.is_ok().then_some(()),
                () = self.resend.as_mut(), if resend_at.is_some() => {
                    let due = resend_at.expect("guarded by the branch's condition");
                    // tokio's clock, the timer's own (the same as std's unless a test pauses it).
                    if tokio::time::Instant::now() >= tokio::time::Instant::from_std(due) {
                        return Some(());
                    }
                    self.resend.as_mut().reset(due.into());
                }
            }
        }
    }

    /// Counts `frame` as sent (and the frames skipped before it) and gives its header; its
    /// JPEG is the next part.
    fn send(&mut self, frame: Frame) -> Bytes {
        let metrics = &self.slot.hub().metrics;
        if frame.live && self.last_seq != 0 && frame.seq > self.last_seq + 1 {
            metrics
                .frames_skipped_viewers
                .fetch_add(frame.seq - self.last_seq - 1, Ordering::Relaxed);
        }
        if frame.live {
            self.last_seq = frame.seq;
        }
        self.last_live = frame.live;
        self.last_sent = Some(Instant::now());
        metrics.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.slot.progress(frame.head.len());
        self.pending = Some(frame.jpeg);
        frame.head
    }
}
