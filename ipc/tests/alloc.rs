//! Steady-state allocation of publishing, counted by `ipc::heap`'s allocator installed in this
//! test binary: after warm-up, a frame written to the region, announced on the socket and
//! received and copied by a subscriber allocates nothing and leaves the live heap where it
//! was. One leaked byte, or one allocation, per frame fails it.

use ipc::announce::{AnnounceServer, ClientConfig, ClientEvent, FrameClient, Hello, ServerConfig};
use ipc::region::{FrameInfo, RegionWriter};

#[global_allocator]
static HEAP: ipc::heap::Counting = ipc::heap::Counting;

/// Frames before counting: connection buffers and the runtime fill up.
const WARM_UP: u64 = 64;
/// Frames counted.
const FRAMES: u64 = 256;
/// Bytes of each frame.
const FRAME_LEN: usize = 2000;

#[test]
fn publishing_announcing_and_copying_a_frame_allocates_nothing_in_the_steady_state() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = RegionWriter::create(&dir.path().join("frames"), 4096).unwrap();
        let socket = dir.path().join("capture.sock");
        let hello = Hello::streaming(&writer, 4, 4, 15.0, "alloc-test");
        let server = AnnounceServer::bind(&socket, hello, ServerConfig::default()).unwrap();
        let handle = server.handle();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(server.run({
            let stop = stop.clone();
            async move { stop.cancelled().await }
        }));
        let mut client = FrameClient::new(ClientConfig::new(&socket, "alloc-test"));
        let mut buf = Vec::with_capacity(FRAME_LEN);
        match client.next(&mut buf).await {
            ClientEvent::Connected(_) => {}
            other => panic!("expected Connected, got {other:?}"),
        }
        let jpeg = vec![0x5a; FRAME_LEN];
        let mut seq = 0;
        let (before, after) = ipc::heap::measure(WARM_UP, FRAMES, async || {
            let meta = writer.publish(&FrameInfo::jpeg_now(4, 4), &jpeg).unwrap();
            handle.frame(&meta);
            seq += 1;
            match client.next(&mut buf).await {
                ClientEvent::Frame(got) => assert_eq!(got.seq, seq),
                other => panic!("expected frame {seq}, got {other:?}"),
            }
            assert_eq!(buf.len(), FRAME_LEN);
        })
        .await;
        assert!(ipc::heap::installed());
        eprintln!("over {FRAMES} frames: {before} -> {after}");
        assert_eq!(
            after.since(&before),
            ipc::heap::Growth::NONE,
            "allocations and live heap bytes over {FRAMES} frames published, announced and copied"
        );
        drop(client);
        stop.cancel();
        task.await.unwrap();
    });
}
