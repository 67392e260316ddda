//! Steady-state allocation of the live fan-out, counted by `ipc::heap`'s allocator installed in
//! this test binary: after warm-up, a frame announced, copied out of the region once and
//! handed to two viewers' MJPEG bodies allocates nothing and leaves the live heap where it
//! was. One leaked byte, or one allocation, per frame fails it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use ipc::announce::{Announcement, ClientEvent, FrameAnnounce, Hello};
use ipc::region::{FrameInfo, RegionWriter};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use web_svc::fanout::{Feeder, FrameSource, Hub};
use web_svc::stream::{ViewerSlot, live};

#[global_allocator]
static HEAP: ipc::heap::Counting = ipc::heap::Counting;

/// The counters are the whole process's: the tests of this file take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Frames before counting: the pool, the watch channel, the runtime's timers fill up.
const WARM_UP: u64 = 64;
/// Frames counted.
const FRAMES: u64 = 256;
/// Bytes of each frame.
const FRAME_LEN: usize = 2000;

/// Announcements handed over in memory, with room reserved up front so the queue itself
/// never allocates.
#[derive(Clone)]
struct Queue(Arc<(Mutex<VecDeque<Announcement>>, Notify)>);

impl Queue {
    fn new() -> Queue {
        Queue(Arc::new((
            Mutex::new(VecDeque::with_capacity(16)),
            Notify::new(),
        )))
    }

    fn push(&self, a: Announcement) {
        let mut q = self.0.0.lock().unwrap();
        assert!(q.len() < q.capacity(), "the test's queue would grow");
        q.push_back(a);
        drop(q);
        self.0.1.notify_one();
    }
}

impl FrameSource for Queue {
    async fn next(&mut self) -> Announcement {
        loop {
            if let Some(a) = self.try_next() {
                return a;
            }
            self.0.1.notified().await;
        }
    }

    fn try_next(&mut self) -> Option<Announcement> {
        self.0.0.lock().unwrap().pop_front()
    }

    fn is_connected(&self) -> bool {
        true
    }
}

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, std::convert::Infallible>> + Send>>;

/// Publishes frame `seq` to the region, announces it, and reads its header and JPEG from each
/// viewer.
async fn one_frame(writer: &mut RegionWriter, queue: &Queue, viewers: &mut [Body], jpeg: &[u8]) {
    let meta = writer.publish(&FrameInfo::jpeg_now(4, 4), jpeg).unwrap();
    queue.push(Announcement::Frame(FrameAnnounce::from(&meta)));
    for v in viewers.iter_mut() {
        let _head = v.next().await.expect("a header").unwrap();
        let body = v.next().await.expect("a JPEG").unwrap();
        assert_eq!(body.len(), jpeg.len());
    }
}

#[test]
fn fanning_a_frame_out_to_two_viewers_allocates_nothing_in_the_steady_state() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = RegionWriter::create(&dir.path().join("frames"), 4096).unwrap();
        let hub = Arc::new(Hub::default());
        let queue = Queue::new();
        let stop = CancellationToken::new();
        let feeder = tokio::spawn(Feeder::new(hub.clone()).run(queue.clone(), {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        }));
        let hello = Hello::streaming(&writer, 4, 4, 15.0, "alloc-test");
        queue.push(Announcement::Event(ClientEvent::Connected(hello)));
        let mut viewers: Vec<Body> = (0..2)
            .map(|_| {
                let slot = ViewerSlot::acquire(&hub, 10, None).unwrap();
                Box::pin(live(slot, stop.clone(), None)) as Body
            })
            .collect();
        let jpeg = vec![0x5a; FRAME_LEN];
        let (before, after) = ipc::heap::measure(WARM_UP, FRAMES, async || {
            one_frame(&mut writer, &queue, &mut viewers, &jpeg).await;
        })
        .await;
        assert!(ipc::heap::installed());
        eprintln!("over {FRAMES} frames to 2 viewers: {before} -> {after}");
        assert_eq!(
            after.since(&before),
            ipc::heap::Growth::NONE,
            "allocations and live heap bytes over {FRAMES} frames fanned out to 2 viewers"
        );
        stop.cancel();
        drop(viewers);
        feeder.await.unwrap();
    });
}

/// A password check's argon2 work area (7 MiB) lives only while it hashes: afterwards the live
/// heap is back where it was and the resident memory of the process too (the area was mapped
/// on its own and given back), however many checks ran.
#[test]
fn a_password_check_keeps_no_memory() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(ipc::heap::release_large_blocks() || !cfg!(target_env = "gnu"));
    let hash = web_svc::auth::hash_phc("correct horse").unwrap();
    // The first check warms up whatever a check allocates once (base64 engine, ...).
    assert!(web_svc::auth::verify(&hash, "correct horse"));
    let (heap, rss) = (ipc::heap::stats(), rss_kib());
    for k in 0..5 {
        assert!(web_svc::auth::verify(&hash, "correct horse"), "check {k}");
        assert!(!web_svc::auth::verify(&hash, "wrong"));
    }
    let after = ipc::heap::stats();
    assert_eq!(after.live, heap.live, "live heap bytes after 10 checks");
    assert!(
        after.peak >= heap.live + 7 * 1024 * 1024,
        "the work area was allocated while hashing: peak {}",
        after.peak
    );
    let grown = rss_kib().saturating_sub(rss);
    assert!(
        grown < 1024,
        "resident memory grew by {grown} KiB over 10 checks"
    );
}

/// Resident KiB of this process.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
