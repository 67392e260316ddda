//! Steady-state allocation of the live fan-out, counted by `ipc::heap`'s allocator installed in
//! this test binary: after warm-up, a frame announced, copied out of the region once and
//! handed to two viewers' MJPEG bodies allocates nothing and leaves the live heap where it
//! was, and a viewer that comes and goes, or a capture-svc restart, leaves it where it found
//! it. One leaked byte, or one
//! allocation, per frame fails it.

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
        // A viewer comes, gets frames and goes, again and again: after the first (which may
        // fill the runtime's bounded caches), each leaves the live heap where it found it.
        let mut come_and_go = async || {
            let slot = ViewerSlot::acquire(&hub, 10, None).unwrap();
            viewers.push(Box::pin(live(slot, stop.clone(), None)));
            for _ in 0..3 {
                one_frame(&mut writer, &queue, &mut viewers, &jpeg).await;
            }
            drop(viewers.pop());
            one_frame(&mut writer, &queue, &mut viewers, &jpeg).await;
        };
        come_and_go().await;
        let base = ipc::heap::stats();
        for _ in 0..20 {
            come_and_go().await;
        }
        let after = ipc::heap::stats();
        assert_eq!(
            after.live, base.live,
            "live heap bytes after 20 viewers came and went: {base} -> {after}"
        );
        // capture-svc restarts: its region made again at the same path (a new generation),
        // a new hello, frames again. After the first, each leaves the live heap where it was.
        let path = dir.path().join("frames");
        let mut base = None;
        for restart in 0..6 {
            drop(writer);
            writer = RegionWriter::create(&path, 4096).unwrap();
            let hello = Hello::streaming(&writer, 4, 4, 15.0, "alloc-test");
            queue.push(Announcement::Event(ClientEvent::Connected(hello)));
            for _ in 0..3 {
                one_frame(&mut writer, &queue, &mut viewers, &jpeg).await;
            }
            if restart == 0 {
                base = Some(ipc::heap::stats());
            }
        }
        let (base, after) = (base.unwrap(), ipc::heap::stats());
        assert_eq!(
            after.live, base.live,
            "live heap bytes after 5 capture-svc restarts: {base} -> {after}"
        );
        stop.cancel();
        drop(viewers);
        feeder.await.unwrap();
    });
}
