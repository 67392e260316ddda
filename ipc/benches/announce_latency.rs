//! Latency from commit in the region to a subscriber holding a verified copy, through the real
//! announce socket and `FrameClient` (paced at 500 fps), and the rate a writer sustains when it
//! publishes back to back with a subscriber attached (which skips frames, never slows it).
//! Prints a table.
//!
//! `cargo bench -p ipc --bench announce_latency`

use std::time::{Duration, Instant};

use ipc::announce::{ClientConfig, ClientEvent, FrameClient, ServerConfig};
use ipc::service::monotonic_ns;
use testkit::camera::{Publisher, Stream};

const FRAMES: u64 = 2_000;

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

async fn run(size: usize, paced: bool) -> (f64, f64, f64, u64) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let stream = Stream {
        width: 1920,
        height: 1080,
        fps: 30.0,
        slot: size,
        source: "bench",
    };
    let (mut camera, _server) = Publisher::start(
        dir.path(),
        &stream,
        ServerConfig::default(),
        std::future::pending(),
    );
    let socket = camera.socket.clone();
    let reader = tokio::spawn(async move {
        let mut client = FrameClient::new(ClientConfig::new(&socket, "bench"));
        let mut buf = Vec::with_capacity(size);
        let mut latencies = Vec::with_capacity(FRAMES as usize);
        let mut last = 0;
        while last < FRAMES {
            if let ClientEvent::Frame(meta) = client.next(&mut buf).await {
                latencies.push(monotonic_ns() - meta.mono_ns);
                last = meta.seq;
            }
        }
        (latencies, client.stats().frames)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let frame = vec![0x5au8; size];
    let start = Instant::now();
    for _ in 0..FRAMES {
        camera.publish(&frame);
        if paced {
            tokio::time::sleep(Duration::from_millis(2)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    let writer_fps = FRAMES as f64 / start.elapsed().as_secs_f64();
    let (mut lat, delivered) = reader.await.unwrap();
    lat.sort_unstable();
    (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        writer_fps,
        delivered,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| frame | commit to verified copy, median | p99 | publish+announce rate, back to back | of {FRAMES}, copies the subscriber verified |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (size, name) in [(64usize << 10, "64 KiB"), (512 << 10, "512 KiB")] {
        let (median, p99, _, _) = rt.block_on(run(size, true));
        let (_, _, fps, delivered) = rt.block_on(run(size, false));
        println!("| {name} | {median:.1} µs | {p99:.1} µs | {fps:.0} fps | {delivered} |");
    }
}
