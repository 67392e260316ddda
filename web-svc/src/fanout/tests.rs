//! Unit tests of the fan-out: the pool, copies only for viewers, joining viewers, offline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipc::announce::{CameraState, ClientEvent, FrameAnnounce, Hello};

use super::*;
use crate::stream::ViewerSlot;
use futures_util::StreamExt as _;
use ipc::region::{FrameInfo, RegionWriter};
use tokio::sync::mpsc;

/// Plays a script of announcements and events.
struct Script(mpsc::Receiver<Announcement>);
impl FrameSource for Script {
    async fn next(&mut self) -> Announcement {
        match self.0.recv().await {
            Some(a) => a,
            None => std::future::pending().await,
        }
    }
    fn try_next(&mut self) -> Option<Announcement> {
        self.0.try_recv().ok()
    }
    fn is_connected(&self) -> bool {
        true
    }
}

/// A camera: a real region in a temporary directory, and the script announcing its
/// frames to a feeder running on a hub.
struct Camera {
    writer: RegionWriter,
    tx: mpsc::Sender<Announcement>,
    hub: Arc<Hub>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Camera {
    fn start() -> Camera {
        let dir = tempfile::tempdir().unwrap();
        let writer = RegionWriter::create(&dir.path().join("frames"), 4096).unwrap();
        let hub = Arc::new(Hub::default());
        let (tx, rx) = mpsc::channel(64);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Feeder::new(hub.clone()).run(Script(rx), async {
            let _ = stop_rx.await;
        }));
        Camera {
            writer,
            tx,
            hub,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn event(&self, event: ClientEvent) {
        self.tx.send(Announcement::Event(event)).await.unwrap();
    }

    async fn connect(&self) {
        let hello = Hello::streaming(&self.writer, 4, 4, 15.0, "script");
        self.event(ClientEvent::Connected(hello)).await;
    }

    /// Commits a frame of `len` bytes all equal to its sequence number (mod 256).
    fn commit(&mut self, len: usize) -> FrameAnnounce {
        let seq = self.writer.stats().published + 1;
        let meta = (self.writer)
            .publish(&FrameInfo::jpeg_now(4, 4), &vec![seq as u8; len])
            .unwrap();
        assert_eq!(meta.seq, seq);
        FrameAnnounce::from(&meta)
    }

    /// Commits a frame and announces it.
    async fn frame(&mut self, len: usize) -> u64 {
        let a = self.commit(len);
        self.tx.send(Announcement::Frame(a)).await.unwrap();
        a.seq
    }

    fn counter(&self, c: impl Fn(&Metrics) -> &AtomicU64) -> u64 {
        c(&self.hub.metrics).load(Ordering::Relaxed)
    }

    /// The frame in the channel, without asking for a copy.
    fn published(&self) -> Option<Frame> {
        self.hub.tx.borrow().clone()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap();
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn frames_reuse_the_pool_and_slow_viewers_see_only_the_newest() {
    let mut cam = Camera::start();
    let _viewer = ViewerSlot::acquire(&cam.hub, 10, None).unwrap();
    cam.connect().await;
    let mut slow = cam.hub.subscribe();
    // Push past the pool size while a viewer holds one frame: no frame is lost to the
    // newest-only rule, the pool never grows, and a held frame stays intact.
    let mut held = None;
    let last = POOL_SIZE as u64 * 4;
    for seq in 1..=last {
        assert_eq!(cam.frame(100).await, seq);
        if seq == 3 {
            until("frame 3 published", || {
                cam.published().is_some_and(|f| f.seq == 3)
            })
            .await;
            held = cam.published();
        }
    }
    until("the last frame published", || {
        cam.published().is_some_and(|f| f.seq == last)
    })
    .await;
    let newest = slow.borrow_and_update().clone().unwrap();
    assert_eq!(newest.seq, last, "a slow viewer jumps to the newest");
    let held = held.unwrap();
    assert_eq!(held.seq, 3);
    assert_eq!(
        &held.jpeg[..],
        &[3u8; 100][..],
        "a held frame is never overwritten"
    );
    assert!(
        std::str::from_utf8(&held.head)
            .unwrap()
            .contains("X-Mecam-Seq: 3\r\n")
    );
    assert_eq!(cam.counter(|m| &m.pool_misses), 0);
    assert!(cam.counter(|m| &m.frames_copied) <= last);
    let hub = cam.hub.clone();
    cam.stop().await;
    assert!(
        hub.latest().is_none(),
        "shutdown clears the frame so streams end"
    );
}

#[tokio::test]
async fn without_viewers_nothing_is_copied_and_a_snapshot_reads_the_newest_frame() {
    let mut cam = Camera::start();
    cam.connect().await;
    for _ in 0..20 {
        cam.frame(1000).await;
    }
    until("20 frames announced", || {
        cam.counter(|m| &m.frames_in) == 20
    })
    .await;
    assert_eq!(cam.counter(|m| &m.frames_copied), 0, "nobody watches");
    assert!(cam.published().is_none_or(|f| !f.live));
    assert_eq!(cam.hub.status().state, "streaming");
    let snap = cam.hub.latest().unwrap();
    assert!(snap.live);
    assert_eq!(snap.seq, 20);
    assert_eq!(&snap.jpeg[..], &[20u8; 1000][..]);
    assert_eq!(cam.counter(|m| &m.frames_copied), 1);
    assert_eq!(cam.hub.latest().unwrap().seq, 20);
    assert_eq!(
        cam.counter(|m| &m.frames_copied),
        1,
        "a frame already copied is not copied again"
    );
    // A frame committed whose announcement has not been read yet is the newest.
    cam.commit(1000);
    assert_eq!(cam.hub.latest().unwrap().seq, 21);
    assert_eq!(cam.counter(|m| &m.frames_copied), 2);
    cam.stop().await;
}

#[tokio::test]
async fn with_viewers_each_frame_is_copied_once() {
    let mut cam = Camera::start();
    cam.connect().await;
    cam.frame(500).await;
    until("a frame announced", || cam.counter(|m| &m.frames_in) == 1).await;
    let viewers: Vec<_> = (0..3)
        .map(|_| ViewerSlot::acquire(&cam.hub, 10, None).unwrap())
        .collect();
    for seq in 2..=11 {
        cam.frame(500).await;
        until("the frame published", || {
            cam.published().is_some_and(|f| f.seq == seq)
        })
        .await;
        assert_eq!(cam.hub.latest().unwrap().seq, seq);
    }
    assert_eq!(cam.counter(|m| &m.frames_in), 11);
    assert_eq!(
        cam.counter(|m| &m.frames_copied),
        10,
        "one copy per frame announced while viewers stream, however many"
    );
    drop(viewers);
    cam.stop().await;
}

#[tokio::test]
async fn a_viewer_that_joins_starts_at_the_newest_frame() {
    let mut cam = Camera::start();
    cam.connect().await;
    cam.frame(300).await;
    until("a frame announced", || cam.counter(|m| &m.frames_in) == 1).await;
    // Copied once by a snapshot, then frames go by with nobody watching.
    assert_eq!(cam.hub.latest().unwrap().seq, 1);
    for _ in 0..5 {
        cam.frame(300).await;
    }
    until("6 frames announced", || cam.counter(|m| &m.frames_in) == 6).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let slot = ViewerSlot::acquire(&cam.hub, 10, None).unwrap();
    let mut body = std::pin::pin!(crate::stream::live(slot, shutdown, None));
    let head = body.next().await.unwrap().unwrap();
    let head = std::str::from_utf8(&head).unwrap();
    assert!(head.contains("X-Mecam-Seq: 6\r\n"), "{head}");
    let jpeg = body.next().await.unwrap().unwrap();
    assert_eq!(&jpeg[..], &[6u8; 300][..]);
    let seq = cam.frame(300).await;
    let head = body.next().await.unwrap().unwrap();
    assert!(
        std::str::from_utf8(&head)
            .unwrap()
            .contains(&format!("X-Mecam-Seq: {seq}\r\n"))
    );
    assert_eq!(cam.counter(|m| &m.frames_copied), 3);
    cam.stop().await;
}

#[tokio::test]
async fn stalled_or_gone_camera_gives_offline_frames_and_live_ones_resume() {
    let mut cam = Camera::start();
    let _viewer = ViewerSlot::acquire(&cam.hub, 10, None).unwrap();
    let hub = cam.hub.clone();
    cam.connect().await;
    cam.frame(5).await;
    until("a live frame", || hub.latest().is_some_and(|f| f.live)).await;
    assert_eq!(hub.status().state, "streaming");
    cam.event(ClientEvent::State(CameraState::Stalled)).await;
    until("the offline frame", || {
        hub.latest().is_some_and(|f| !f.live)
    })
    .await;
    assert_eq!(hub.status().state, "stalled");
    let offline = hub.latest().unwrap();
    assert!(
        std::str::from_utf8(&offline.head)
            .unwrap()
            .contains("X-Mecam-Camera: offline")
    );
    assert_eq!(&offline.jpeg[..2], &[0xFF, 0xD8]);
    cam.event(ClientEvent::State(CameraState::Streaming)).await;
    cam.frame(5).await;
    until("live again", || {
        hub.latest().is_some_and(|f| f.live && f.seq == 2)
    })
    .await;
    cam.event(ClientEvent::Gone {
        reason: "test".into(),
    })
    .await;
    until("offline after gone", || {
        hub.latest().is_some_and(|f| !f.live)
    })
    .await;
    assert_eq!(hub.status().state, "offline");
    // Placeholders come at most once per OFFLINE_PERIOD.
    let before = cam.counter(|m| &m.offline_frames);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = cam.counter(|m| &m.offline_frames) - before;
    assert!(n <= 2, "{n} placeholders in 1.5 s");
    cam.stop().await;
}

/// A connected source with nothing to say, counting how often the feeder asks it.
struct Quiet(Arc<AtomicU64>);
impl FrameSource for Quiet {
    async fn next(&mut self) -> Announcement {
        self.0.fetch_add(1, Ordering::Relaxed);
        std::future::pending().await
    }
    fn try_next(&mut self) -> Option<Announcement> {
        self.0.fetch_add(1, Ordering::Relaxed);
        None
    }
    fn is_connected(&self) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn with_nobody_watching_the_fan_out_turns_once_a_second_and_a_viewer_brings_the_tick_back() {
    let hub = Arc::new(Hub::default());
    let asked = Arc::new(AtomicU64::new(0));
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Feeder::new(hub.clone()).run(Quiet(asked.clone()), async {
        let _ = stop_rx.await;
    }));
    // Each turn asks the source once. Idle: one turn per IDLE_TICK (and one at the start),
    // not one per TICK as before.
    let ticks = 20u32;
    tokio::time::sleep(IDLE_TICK * ticks).await;
    let idle = asked.swap(0, Ordering::Relaxed);
    let expected = u64::from(ticks);
    assert!(
        (expected..=expected + 3).contains(&idle),
        "{idle} turns in {ticks} idle ticks"
    );
    // A viewer: the feeder waits on the source again, and turns every TICK to notice a camera
    // gone quiet.
    let viewer = ViewerSlot::acquire(&hub, 10, None).unwrap();
    tokio::time::sleep(IDLE_TICK * ticks).await;
    let watched = asked.swap(0, Ordering::Relaxed);
    let per_tick = (IDLE_TICK.as_millis() / TICK.as_millis()) as u64;
    assert!(
        watched >= expected * per_tick - 2,
        "{watched} turns in {ticks} s with a viewer"
    );
    // The viewer gone, the fan-out is idle again.
    drop(viewer);
    tokio::time::sleep(IDLE_TICK * 2).await;
    asked.store(0, Ordering::Relaxed);
    tokio::time::sleep(IDLE_TICK * ticks).await;
    let again = asked.load(Ordering::Relaxed);
    assert!(
        (expected - 1..=expected + 2).contains(&again),
        "{again} turns in {ticks} idle ticks after the viewer left"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[test]
fn the_part_header_is_what_the_formatter_wrote() {
    let cases = [
        (0, 0, 0, false),
        (1, 1, 1_000, true),
        (39_712, 151, 1_764_662_400_123_456_789, true),
        (usize::MAX, u64::MAX, u64::MAX, true),
        (7, 9, 999_999_999, false),
    ];
    let mut out = bytes::BytesMut::new();
    for (len, seq, wall_ns, live) in cases {
        hub::write_head(&mut out, len, seq, wall_ns, live);
        let expected = format!(
            "\r\n--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nX-Timestamp: {}.{:06}\r\nX-Mecam-Seq: {seq}\r\nX-Mecam-Camera: {}\r\n\r\n",
            wall_ns / 1_000_000_000,
            wall_ns % 1_000_000_000 / 1000,
            if live { "live" } else { "offline" }
        );
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
    }
}

#[tokio::test]
async fn a_quiet_camera_s_last_frame_is_resent_a_resend_period_after_it_was_sent() {
    let mut cam = Camera::start();
    let slot = ViewerSlot::acquire(&cam.hub, 10, None).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut parts = std::pin::pin!(crate::stream::live(slot, stop.clone(), None));
    cam.connect().await;
    let mut next_head = async || {
        let head = parts.next().await.unwrap().unwrap();
        let jpeg = parts.next().await.unwrap().unwrap();
        let head = String::from_utf8(head.to_vec()).unwrap();
        (head, jpeg.len())
    };
    cam.frame(10).await;
    let (first, len) = next_head().await;
    assert!(first.contains("X-Mecam-Seq: 1\r\n"), "{first}");
    assert_eq!(len, 10);
    // A second frame before the first one's resend was due: the resend is due a period after
    // it, not after the first (the timer, set for the first, is moved when it fires early).
    tokio::time::sleep(crate::stream::RESEND_AFTER * 3 / 5).await;
    cam.frame(20).await;
    let (second, len) = next_head().await;
    let sent = std::time::Instant::now();
    assert!(second.contains("X-Mecam-Seq: 2\r\n"), "{second}");
    assert_eq!(len, 20);
    let (again, len) = next_head().await;
    let waited = sent.elapsed();
    assert!(again.contains("X-Mecam-Seq: 2\r\n"), "{again}");
    assert_eq!(len, 20, "the same frame again");
    assert!(
        waited + Duration::from_millis(5) >= crate::stream::RESEND_AFTER,
        "resent {waited:?} after it was sent, before the resend period"
    );
    stop.cancel();
    cam.stop().await;
}
