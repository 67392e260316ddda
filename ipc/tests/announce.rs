//! The announce socket: bounded subscribers, bad input on a connection, heartbeats, and a
//! client that survives its server being killed and restarted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipc::announce::proto::{Subscribe, encode};
use ipc::announce::{
    AnnounceHandle, AnnounceServer, CameraState, ClientConfig, ClientEvent, FrameClient, Hello,
    Message, PROTOCOL_VERSION, ServerConfig,
};
use ipc::region::{FrameFormat, FrameInfo, RegionWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

fn hello(writer: &RegionWriter) -> Hello {
    Hello::streaming(writer, 64, 48, 30.0, "test")
}

fn info(seq: u64) -> FrameInfo {
    FrameInfo {
        width: 64,
        height: 48,
        format: FrameFormat::Jpeg,
        mono_ns: seq,
        wall_ns: seq,
    }
}

struct Running {
    writer: RegionWriter,
    handle: AnnounceHandle,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap();
        assert!(!self.socket.exists(), "socket removed on shutdown");
    }

    fn publish(&mut self, seq: u64) {
        let meta = self.writer.publish(&info(seq), &seq.to_le_bytes()).unwrap();
        self.handle.frame(&meta);
    }
}

fn start(config: ServerConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let writer = RegionWriter::create(&dir.path().join("frames"), 1024).unwrap();
    let socket = dir.path().join("capture.sock");
    let server = AnnounceServer::bind(&socket, hello(&writer), config).unwrap();
    let handle = server.handle();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        writer,
        handle,
        socket,
        stop: Some(tx),
        task,
        _dir: dir,
    }
}

async fn next_within(client: &mut FrameClient, buf: &mut Vec<u8>) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(10), client.next(buf))
        .await
        .expect("an event within 10 s")
}

async fn connected_client(socket: &Path, name: &str) -> FrameClient {
    let mut client = FrameClient::new(ClientConfig::new(socket, name));
    let mut buf = Vec::new();
    match next_within(&mut client, &mut buf).await {
        ClientEvent::Connected(h) => assert_eq!(h.protocol_version, PROTOCOL_VERSION),
        other => panic!("expected Connected, got {other:?}"),
    }
    client
}

/// Polls `ok` until it holds, for at most `limit`.
async fn eventually(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw connection that subscribes and then never reads again.
async fn deaf_subscriber(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).await.unwrap();
    let mut out = Vec::new();
    encode(
        &Message::Subscribe(Subscribe {
            protocol_version: PROTOCOL_VERSION,
            name: "deaf".into(),
        }),
        &mut out,
    )
    .unwrap();
    s.write_all(&out).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_costs_nothing_and_others_see_every_frame() {
    let config = ServerConfig {
        max_subscribers: 4,
        idle_timeout: Duration::from_millis(500),
    };
    let mut server = start(config);
    let _deaf = deaf_subscriber(&server.socket).await;
    let mut good = connected_client(&server.socket, "good").await;
    eventually("two subscribers", Duration::from_secs(5), || {
        server.handle.stats().subscribers == 2
    })
    .await;
    let rss_before = ipc::service::resident_bytes();
    let mut buf = Vec::with_capacity(1024);
    for seq in 1..=10_000u64 {
        server.publish(seq);
        // Wait for the good subscriber to see this very frame before the next: none skipped.
        loop {
            match next_within(&mut good, &mut buf).await {
                ClientEvent::Frame(meta) => {
                    assert_eq!(meta.seq, seq);
                    assert_eq!(buf, seq.to_le_bytes());
                    break;
                }
                ClientEvent::Heartbeat(_) | ClientEvent::State(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(good.stats().frames, 10_000);
    assert_eq!(good.stats().skipped, 0);
    // The deaf subscriber's socket buffer filled long ago; it is dropped after the idle time
    // instead of making the server queue.
    eventually(
        "the deaf subscriber dropped",
        Duration::from_secs(10),
        || server.handle.stats().dropped_idle == 1,
    )
    .await;
    assert_eq!(server.handle.stats().subscribers, 1);
    let grown = ipc::service::resident_bytes().saturating_sub(rss_before);
    println!(
        "server+client resident growth over 10,000 frames: {} KiB",
        grown / 1024
    );
    assert!(
        grown < 4 << 20,
        "memory grew by {grown} bytes over 10,000 frames"
    );
    server.stop().await;
}

#[tokio::test]
async fn subscribers_past_the_bound_are_refused_and_the_rest_carry_on() {
    let mut server = start(ServerConfig {
        max_subscribers: 2,
        idle_timeout: Duration::from_secs(5),
    });
    let mut a = connected_client(&server.socket, "a").await;
    let _b = connected_client(&server.socket, "b").await;
    eventually("two subscribers", Duration::from_secs(5), || {
        server.handle.stats().subscribers == 2
    })
    .await;
    let mut extra = UnixStream::connect(&server.socket).await.unwrap();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed without a hello");
    assert_eq!(server.handle.stats().refused_full, 1);
    server.publish(1);
    let mut buf = Vec::new();
    assert!(matches!(next_within(&mut a, &mut buf).await, ClientEvent::Frame(m) if m.seq == 1));
    server.stop().await;
}

#[tokio::test]
async fn bad_input_closes_only_that_connection() {
    let mut server = start(ServerConfig::default());
    let mut good = connected_client(&server.socket, "good").await;
    let mut scratch = Vec::new();
    let wrong_version = {
        encode(
            &Message::Subscribe(Subscribe {
                protocol_version: 99,
                name: "old".into(),
            }),
            &mut scratch,
        )
        .unwrap();
        scratch.clone()
    };
    let truncated = {
        encode(
            &Message::Subscribe(Subscribe {
                protocol_version: PROTOCOL_VERSION,
                name: "cut".into(),
            }),
            &mut scratch,
        )
        .unwrap();
        scratch[..scratch.len() - 2].to_vec()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Read as a length prefix, "GET " is far over the maximum.
        ("text", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        // A plausible length, then bytes that are no MessagePack at all (0xc1 is never used).
        (
            "garbage body",
            [&6u32.to_be_bytes()[..], &[0xc1; 6]].concat(),
        ),
        ("oversized length", u32::MAX.to_be_bytes().to_vec()),
        ("truncated message", truncated),
        ("wrong protocol version", wrong_version),
        ("not a subscribe", {
            encode(&Message::CameraState(CameraState::Stalled), &mut scratch).unwrap();
            scratch.clone()
        }),
    ];
    let count = cases.len() as u64;
    for (what, bytes) in cases {
        let mut s = UnixStream::connect(&server.socket).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let got = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
        assert!(got.is_ok(), "{what}: the server closes the connection");
        assert!(rest.is_empty(), "{what}: no hello for a bad subscriber");
    }
    // Garbage from a subscriber that was accepted: it gets its hello, then is closed.
    let mut s = UnixStream::connect(&server.socket).await.unwrap();
    encode(
        &Message::Subscribe(Subscribe {
            protocol_version: PROTOCOL_VERSION,
            name: "later garbage".into(),
        }),
        &mut scratch,
    )
    .unwrap();
    s.write_all(&scratch).await.unwrap();
    s.write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).await.unwrap();
    let mut rest = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(
        got.is_ok(),
        "garbage after subscribing: the server closes the connection"
    );
    assert!(!rest.is_empty(), "a hello came before the garbage was read");
    eventually("protocol errors counted", Duration::from_secs(5), || {
        server.handle.stats().protocol_errors == count + 1
    })
    .await;
    server.publish(1);
    let mut buf = Vec::new();
    assert!(matches!(next_within(&mut good, &mut buf).await, ClientEvent::Frame(m) if m.seq == 1));
    server.stop().await;
}

#[tokio::test]
async fn states_and_heartbeats_reach_subscribers() {
    let server = start(ServerConfig::default());
    let mut client = connected_client(&server.socket, "c").await;
    let mut buf = Vec::new();
    server.handle.state(CameraState::Stalled);
    assert_eq!(
        next_within(&mut client, &mut buf).await,
        ClientEvent::State(CameraState::Stalled)
    );
    assert_eq!(client.hello().unwrap().state, CameraState::Stalled);
    // No frames at all: a heartbeat comes within a couple of seconds.
    assert!(
        matches!(next_within(&mut client, &mut buf).await, ClientEvent::Heartbeat(h) if h.last_seq == 0)
    );
    server.stop().await;
}

// ---- a server process killed and restarted under a connected client ------------------------

const ROLE_VAR: &str = "MECAM_IPC_ANNOUNCE_ROLE";

/// The child side: a capture stand-in publishing 100 frames a second until killed.
#[test]
#[ignore = "entry point for child processes of the restart test"]
fn child_entry() {
    let Ok(dir) = std::env::var(ROLE_VAR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut writer = RegionWriter::create(&dir.join("frames"), 1024).unwrap();
        let server = AnnounceServer::bind(
            &dir.join("capture.sock"),
            hello(&writer),
            ServerConfig::default(),
        )
        .unwrap();
        let handle = server.handle();
        tokio::spawn(server.run(std::future::pending()));
        for seq in 1..=60_000u64 {
            let meta = writer
                .publish(&info(seq), &writer.generation().to_le_bytes())
                .unwrap();
            handle.frame(&meta);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(dir: &Path) -> Reap {
    Reap(
        Command::new(std::env::current_exe().unwrap())
            .args(["child_entry", "--exact", "--ignored", "--test-threads=1"])
            .env(ROLE_VAR, dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits for the next frame, skipping states and heartbeats; returns its bytes' generation tag.
async fn next_frame(client: &mut FrameClient, buf: &mut Vec<u8>) -> u64 {
    loop {
        match next_within(client, buf).await {
            ClientEvent::Frame(_) => return u64::from_le_bytes(buf[..8].try_into().unwrap()),
            ClientEvent::Heartbeat(_) | ClientEvent::State(_) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_reports_the_server_gone_once_then_reconnects_and_remaps() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("capture.sock");
    let mut client = FrameClient::new(ClientConfig::new(&socket, "survivor"));
    let mut buf = Vec::new();
    // No server yet: gone, reported once.
    assert!(matches!(
        next_within(&mut client, &mut buf).await,
        ClientEvent::Gone { .. }
    ));

    let first = spawn_server(dir.path());
    let ClientEvent::Connected(h1) = next_within(&mut client, &mut buf).await else {
        panic!("expected Connected")
    };
    assert_eq!(next_frame(&mut client, &mut buf).await, h1.generation);

    drop(first); // SIGKILL
    loop {
        match next_within(&mut client, &mut buf).await {
            ClientEvent::Gone { reason } => {
                println!("gone: {reason}");
                break;
            }
            ClientEvent::Frame(_) | ClientEvent::Heartbeat(_) | ClientEvent::State(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    let _second = spawn_server(dir.path());
    let ClientEvent::Connected(h2) = next_within(&mut client, &mut buf).await else {
        panic!("expected Connected, not a second Gone")
    };
    assert_ne!(
        h2.generation, h1.generation,
        "a restarted server has a new generation"
    );
    assert_eq!(
        client.region().unwrap().generation(),
        h2.generation,
        "the client remapped"
    );
    assert_eq!(
        next_frame(&mut client, &mut buf).await,
        h2.generation,
        "frames come from the new region"
    );
    let stats = client.stats();
    assert_eq!((stats.connects, stats.remaps), (2, 2));
}
