//! The announce socket: bounded subscribers, bad input on a connection, heartbeats, and a
//! client that survives its server being killed and restarted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipc::announce::proto::{Subscribe, encode};
use ipc::announce::{
    AnnounceHandle, Announcement, CameraState, ClientConfig, ClientEvent, FrameClient, Hello,
    MOTION_SVC, Message, PROTOCOL_VERSION, ServerConfig, WEB_SVC,
};
use ipc::region::{FrameFormat, FrameInfo, RegionWriter};
use testkit::camera::{Publisher, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

/// What the test servers announce.
const STREAM: Stream = Stream {
    width: 64,
    height: 48,
    fps: 30.0,
    slot: 1024,
    source: "test",
};

fn hello(writer: &RegionWriter) -> Hello {
    Hello::streaming(
        writer,
        STREAM.width,
        STREAM.height,
        STREAM.fps as f32,
        STREAM.source,
    )
}

fn info(seq: u64) -> FrameInfo {
    FrameInfo {
        width: STREAM.width,
        height: STREAM.height,
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
    let (tx, rx) = oneshot::channel();
    let shutdown = async {
        let _ = rx.await;
    };
    let (camera, task) = Publisher::start(dir.path(), &STREAM, config, shutdown);
    let Publisher {
        writer,
        handle,
        socket,
        ..
    } = camera;
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
    let out = subscribe_bytes(PROTOCOL_VERSION, "deaf");
    s.write_all(&out).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_costs_nothing_and_others_see_every_frame() {
    let config = ServerConfig {
        max_subscribers: 4,
        idle_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
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
        ..ServerConfig::default()
    });
    let mut a = connected_client(&server.socket, "a").await;
    let _b = connected_client(&server.socket, "b").await;
    eventually("two subscribers", Duration::from_secs(5), || {
        server.handle.stats().subscribers == 2
    })
    .await;
    // A third is told why, then closed.
    let rest = refused_subscriber(&server.socket, "c").await;
    let reason = refusal(&rest)
        .await
        .expect("a Refused message, then the close");
    assert!(reason.contains("full"), "{reason}");
    assert_eq!(server.handle.stats().refused_full, 1);
    // A client reports it as gone, with the server's reason, once.
    let mut c = FrameClient::new(ClientConfig::new(&server.socket, "c"));
    let mut buf = Vec::new();
    match next_within(&mut c, &mut buf).await {
        ClientEvent::Gone { reason } => assert!(reason.contains("full"), "{reason}"),
        other => panic!("expected Gone, got {other:?}"),
    }
    // Polled under a short timer, it retries no faster than its backoff, and quietly.
    let window = Duration::from_secs(1);
    let before = server.handle.stats().refused_full;
    let config = ClientConfig::new(&server.socket, "c");
    assert_eq!(poll_for(&mut c, Duration::from_millis(5), window).await, 0);
    let refused = server.handle.stats().refused_full - before;
    let allowed = attempts_allowed(&config, Duration::ZERO, window);
    println!("refused {refused} times in {window:?} (backoff allows {allowed})");
    assert!(refused <= allowed, "{refused} attempts, allowed {allowed}");
    server.publish(1);
    // The others carry on (a heartbeat may come first: nothing was published for a second).
    loop {
        match next_within(&mut a, &mut buf).await {
            ClientEvent::Frame(m) => break assert_eq!(m.seq, 1),
            ClientEvent::Heartbeat(_) => {}
            other => panic!("expected the frame, got {other:?}"),
        }
    }
    // The refused client keeps retrying with its backoff and gets in once there is room.
    drop(a);
    match next_within(&mut c, &mut buf).await {
        ClientEvent::Connected(_) => {}
        other => panic!("expected Connected, not a second Gone: {other:?}"),
    }
    assert!(c.stats().refusals >= 1);
    server.stop().await;
}

/// The reason of the single `Refused` message in `bytes`, if that is all they are.
async fn refusal(bytes: &[u8]) -> Option<String> {
    let mut reader = ipc::announce::proto::MessageReader::new();
    let mut rest = bytes;
    let first = reader.read(&mut rest).await;
    let second = reader.read(&mut rest).await;
    match (first, second) {
        (Ok(Message::Refused(r)), Err(ipc::announce::proto::ProtoError::Closed)) => {
            assert_eq!(r.protocol_version, PROTOCOL_VERSION);
            Some(r.reason)
        }
        _ => None,
    }
}

/// As [`refusal`], for a connection that was subscribed: any heartbeats, then the `Refused`
/// and the close.
async fn refusal_after_heartbeats(bytes: &[u8]) -> Option<String> {
    let mut reader = ipc::announce::proto::MessageReader::new();
    let mut rest = bytes;
    loop {
        match reader.read(&mut rest).await {
            Ok(Message::Heartbeat(_)) => {}
            Ok(Message::Refused(r)) => {
                assert_eq!(r.protocol_version, PROTOCOL_VERSION);
                let closed = matches!(
                    reader.read(&mut rest).await,
                    Err(ipc::announce::proto::ProtoError::Closed)
                );
                return closed.then_some(r.reason);
            }
            _ => return None,
        }
    }
}

#[tokio::test]
async fn bad_input_closes_only_that_connection() {
    let mut server = start(ServerConfig::default());
    let mut good = connected_client(&server.socket, "good").await;
    let mut scratch = Vec::new();
    let wrong_version = subscribe_bytes(99, "old");
    let truncated = {
        let whole = subscribe_bytes(PROTOCOL_VERSION, "cut");
        whole[..whole.len() - 2].to_vec()
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
        let reason = refusal(&rest).await;
        println!("{what}: refused: {reason:?}");
        assert!(
            reason.is_some(),
            "{what}: no hello for a bad subscriber, only a refusal: {rest:?}"
        );
    }
    // Garbage from a subscriber that was accepted: it gets its hello, then is closed.
    let mut s = UnixStream::connect(&server.socket).await.unwrap();
    let subscribe = subscribe_bytes(PROTOCOL_VERSION, "later garbage");
    s.write_all(&subscribe).await.unwrap();
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
        let shutdown = std::future::pending();
        let (mut camera, _server) =
            Publisher::start(&dir, &STREAM, ServerConfig::default(), shutdown);
        for seq in 1..=60_000u64 {
            let generation = camera.writer.generation();
            camera
                .publish_info(&info(seq), &generation.to_le_bytes())
                .unwrap();
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

// ---- hostile local peers: a full socket, a flood of refusals, a stale consumer -------------

/// Log lines written while the guard lives, on this thread (tests using it run on the
/// current-thread runtime, so the server's tasks log here too).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A raw connection that subscribes under `name`, reads its hello and then never reads again.
async fn idle_subscriber(socket: &Path, name: &str) -> UnixStream {
    let mut s = UnixStream::connect(socket).await.unwrap();
    let out = subscribe_bytes(PROTOCOL_VERSION, name);
    s.write_all(&out).await.unwrap();
    let mut reader = ipc::announce::proto::MessageReader::new();
    let first = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut s))
        .await
        .expect("an answer within 10 s");
    assert!(
        matches!(first, Ok(Message::Hello(_))),
        "{name}: expected a hello, got {first:?}"
    );
    s
}

/// Connects, subscribes under `name` and reads until the server closes; write errors are
/// ignored (the server may close first).
async fn refused_subscriber(socket: &Path, name: &str) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).await.unwrap();
    let out = subscribe_bytes(PROTOCOL_VERSION, name);
    let _ = s.write_all(&out).await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the server closes a refused connection")
        .unwrap_or_default();
    rest
}

/// A server whose throttled lines go through once in the whole test, then as a summary at
/// shutdown.
fn quiet_config(max_subscribers: usize) -> ServerConfig {
    ServerConfig {
        max_subscribers,
        idle_timeout: Duration::from_secs(60),
        log_interval: Duration::from_secs(3600),
        ..ServerConfig::default()
    }
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| l.contains(what)).count()
}

#[tokio::test]
async fn a_full_socket_lets_restarted_consumers_in_and_logs_a_refusal_flood_once() {
    const FLOOD: u64 = 300;
    let (logs, _guard) = Captured::start();
    let server = start(quiet_config(4));
    // The old web-svc's connection, not yet noticed as gone, then squatters in every place.
    let mut stale_web = idle_subscriber(&server.socket, WEB_SVC).await;
    let mut squatters = Vec::new();
    for i in 0..4 {
        squatters.push(idle_subscriber(&server.socket, &format!("squatter-{i}")).await);
    }
    for i in 0..FLOOD {
        let rest = refused_subscriber(&server.socket, &format!("flood-{i}")).await;
        assert!(refusal(&rest).await.is_some_and(|r| r.contains("full")));
    }
    assert_eq!(
        server.handle.stats().refused_full,
        FLOOD,
        "every refusal counted"
    );
    // The consumers restart: both get in, whoever holds the shared places.
    let web = connected_client(&server.socket, WEB_SVC).await;
    let motion = connected_client(&server.socket, MOTION_SVC).await;
    assert!(web.is_connected() && motion.is_connected());
    let stats = server.handle.stats();
    assert_eq!((stats.subscribers, stats.replaced), (6, 1));
    // The stale web-svc connection was told why and closed.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stale_web.read_to_end(&mut rest))
        .await
        .expect("the replaced connection is closed")
        .unwrap();
    // It was subscribed all along: heartbeats (one a second with no frames) may come first
    // on a slow machine (the flood above takes longer than a second under qemu).
    let why = refusal_after_heartbeats(&rest)
        .await
        .expect("a Refused, then the close");
    assert!(why.contains("replaced"), "{why}");
    let lines = logs.lines();
    println!("{}", lines.join("\n"));
    assert_eq!(
        count(&lines, "announce socket full"),
        1,
        "one line for {FLOOD} refused connections"
    );
    assert!(
        lines.iter().any(|l| l.contains("pid ")),
        "peers are named by pid"
    );
    drop(squatters);
    server.stop().await;
    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{} more subscribers refused", FLOOD - 1))),
        "the shutdown sums up what was held back:\n{}",
        lines.join("\n")
    );
}

/// Connects and sends `bytes`, then reads what comes back until the server closes.
async fn send_raw(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the server closes a bad connection")
        .unwrap_or_default();
    rest
}

/// A subscribe message under `name` speaking protocol `version`, framed.
fn subscribe_bytes(version: u32, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode(
        &Message::Subscribe(Subscribe {
            protocol_version: version,
            name: name.into(),
        }),
        &mut out,
    )
    .unwrap();
    out
}

#[tokio::test]
async fn every_line_a_local_peer_can_trigger_is_throttled_and_every_occurrence_counted() {
    const EACH: usize = 50;
    let (logs, _guard) = Captured::start();
    let server = start(ServerConfig {
        max_handshakes: 4,
        ..quiet_config(1)
    });
    let _squatter = idle_subscriber(&server.socket, "squatter").await;
    let garbage: [(&str, Vec<u8>); 4] = [
        ("wrong version", subscribe_bytes(99, "future")),
        ("garbage", [&6u32.to_be_bytes()[..], &[0xc1; 6]].concat()),
        ("oversized", u32::MAX.to_be_bytes().to_vec()),
        ("not a subscribe", {
            let mut out = Vec::new();
            encode(&Message::CameraState(CameraState::Stalled), &mut out).unwrap();
            out
        }),
    ];
    for _ in 0..EACH {
        for (what, bytes) in &garbage {
            let rest = send_raw(&server.socket, bytes).await;
            assert!(
                refusal(&rest).await.is_some(),
                "{what}: refused with a reason"
            );
        }
        refused_subscriber(&server.socket, "one too many").await;
        // A consumer's place taken over, again and again.
        drop(idle_subscriber(&server.socket, WEB_SVC).await);
    }
    // Silent connections past the handshake bound: the oldest are closed.
    let mut silent = Vec::new();
    for _ in 0..EACH {
        silent.push(UnixStream::connect(&server.socket).await.unwrap());
    }
    eventually(
        "silent connections dropped",
        Duration::from_secs(10),
        || server.handle.stats().dropped_handshakes == (EACH - 4) as u64,
    )
    .await;
    let stats = server.handle.stats();
    assert_eq!(stats.protocol_errors, (EACH * garbage.len()) as u64);
    assert_eq!(stats.refused_full, EACH as u64);
    assert_eq!(stats.handshaking, 4);
    let lines = logs.lines();
    for what in [
        "protocol error",
        "announce socket full",
        "before its Subscribe",
    ] {
        assert_eq!(
            count(&lines, what),
            1,
            "{what}: one line in the interval:\n{}",
            lines.join("\n")
        );
    }
    // Each takeover of web-svc's place that found a holder still there is counted; lines: one.
    assert!(count(&lines, "took over the reserved") <= 1);
    drop(silent);
    server.stop().await;
    let lines = logs.lines();
    for summary in [
        format!(
            "{} more announce connections closed after a protocol error",
            EACH * garbage.len() - 1
        ),
        format!("{} more subscribers refused", EACH - 1),
        format!(
            "{} more announce connections closed before subscribing",
            EACH - 4 - 1
        ),
    ] {
        assert_eq!(
            count(&lines, &summary),
            1,
            "{summary}:\n{}",
            lines.join("\n")
        );
    }
}

#[tokio::test]
async fn an_old_client_is_told_the_version_and_a_newer_one_is_refused_with_a_reason() {
    let server = start(ServerConfig::default());
    // A version-1 client can read only a hello: it gets one naming this version, then the
    // close, and says "capture-svc speaks protocol 2, this build 1; run matching versions".
    let rest = send_raw(&server.socket, &subscribe_bytes(1, "old web-svc")).await;
    let mut reader = ipc::announce::proto::MessageReader::new();
    let mut bytes = &rest[..];
    match reader.read(&mut bytes).await {
        Ok(Message::Hello(h)) => assert_eq!(h.protocol_version, PROTOCOL_VERSION),
        other => panic!("expected a hello for a version-1 client, got {other:?}"),
    }
    assert!(matches!(
        reader.read(&mut bytes).await,
        Err(ipc::announce::proto::ProtoError::Closed)
    ));
    assert_ne!(PROTOCOL_VERSION, 1);
    // A newer one gets a refusal naming both versions.
    let rest = send_raw(
        &server.socket,
        &subscribe_bytes(PROTOCOL_VERSION + 1, "new"),
    )
    .await;
    let why = refusal(&rest).await.expect("a refusal");
    assert!(
        why.contains(&format!("protocol {}", PROTOCOL_VERSION + 1))
            && why.contains(&PROTOCOL_VERSION.to_string())
            && why.contains("run matching versions"),
        "{why}"
    );
    assert_eq!(server.handle.stats().protocol_errors, 2);
    server.stop().await;
}

#[tokio::test]
async fn silent_connections_past_the_handshake_bound_cannot_keep_a_consumer_from_subscribing() {
    let server = start(ServerConfig {
        max_handshakes: 8,
        ..quiet_config(2)
    });
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(UnixStream::connect(&server.socket).await.unwrap());
    }
    eventually(
        "the oldest silent ones dropped",
        Duration::from_secs(10),
        || server.handle.stats().dropped_handshakes == 32,
    )
    .await;
    assert_eq!(server.handle.stats().handshaking, 8, "the bound holds");
    // The oldest silent connection was told why.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent[0].read_to_end(&mut rest))
        .await
        .expect("a dropped connection is closed")
        .unwrap();
    let why = refusal(&rest).await.expect("a refusal");
    assert!(why.contains("waiting"), "{why}");
    let web = connected_client(&server.socket, WEB_SVC).await;
    assert!(web.is_connected());
    server.stop().await;
}

#[tokio::test]
async fn the_socket_is_mode_0660_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    for umask in [0o077, 0o000, 0o022] {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
        let server = start(ServerConfig::default());
        nix::sys::stat::umask(old);
        let mode = std::fs::metadata(&server.socket)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o660, "socket mode {mode:o} under umask {umask:03o}");
        server.stop().await;
    }
}

// ---- FrameClient::next cancelled on a timer, as the services do ---------------------------

/// A stand-in capture-svc that reads each Subscribe, waits `delay`, then answers with its hello
/// (`answer`) or closes. Returns the socket path, the connection count and the region writer.
struct SlowServer {
    socket: PathBuf,
    attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    _writer: RegionWriter,
    _dir: tempfile::TempDir,
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn slow_server(delay: Duration, answer: bool) -> SlowServer {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let writer = RegionWriter::create(&dir.path().join("frames"), 1024).unwrap();
    let hello = hello(&writer);
    let socket = dir.path().join("capture.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let attempts = std::sync::Arc::new(AtomicU64::new(0));
    let count = attempts.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
            let hello = hello.clone();
            conns.spawn(async move {
                let mut reader = ipc::announce::proto::MessageReader::new();
                if !matches!(reader.read(&mut s).await, Ok(Message::Subscribe(_))) {
                    return;
                }
                tokio::time::sleep(delay).await;
                if !answer {
                    return;
                }
                let mut out = Vec::new();
                encode(&Message::Hello(hello), &mut out).unwrap();
                if s.write_all(&out).await.is_ok() {
                    // Hold the connection until the client goes.
                    let _ = reader.read(&mut s).await;
                }
            });
        }
    });
    SlowServer {
        socket,
        attempts,
        task,
        _writer: writer,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_server_slower_to_answer_than_the_callers_timeout_is_still_reached() {
    let server = slow_server(Duration::from_millis(400), true);
    let mut client = FrameClient::new(ClientConfig::new(&server.socket, "web-svc"));
    let mut buf = Vec::new();
    let mut connected = None;
    let started = Instant::now();
    for call in 0..40 {
        match tokio::time::timeout(Duration::from_millis(250), client.next(&mut buf)).await {
            Ok(ClientEvent::Connected(h)) => {
                connected = Some((call, h));
                break;
            }
            Ok(other) => println!("call {call}: {other:?}"),
            Err(_) => {}
        }
    }
    let attempts = server.attempts.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "connected: {:?} after {:?}, {attempts} connection attempts",
        connected.as_ref().map(|c| c.0),
        started.elapsed()
    );
    assert!(
        connected.is_some(),
        "never connected under a 250 ms timeout"
    );
    assert!(client.is_connected());
    assert_eq!(attempts, 1, "the first attempt was resumed, not restarted");
}

/// The most connection attempts a client with `config`'s backoff makes in `window` against a
/// server that takes `delay` to fail each one (plus one for the attempt in flight).
fn attempts_allowed(config: &ClientConfig, delay: Duration, window: Duration) -> u64 {
    let (mut t, mut backoff, mut n) = (Duration::ZERO, config.backoff_min, 0);
    while t < window {
        n += 1;
        t += delay + backoff;
        backoff = (backoff * 2).min(config.backoff_max);
    }
    n + 1
}

async fn poll_for(client: &mut FrameClient, each: Duration, window: Duration) -> u64 {
    let mut buf = Vec::new();
    let mut gone = 0;
    let end = Instant::now() + window;
    while Instant::now() < end {
        if let Ok(event) = tokio::time::timeout(each, client.next(&mut buf)).await {
            match event {
                ClientEvent::Gone { reason } => {
                    println!("gone: {reason}");
                    gone += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    gone
}

#[tokio::test]
async fn a_slow_refusing_server_is_retried_no_faster_than_the_backoff_under_cancellation() {
    let delay = Duration::from_millis(400);
    let window = Duration::from_secs(3);
    let server = slow_server(delay, false);
    let config = ClientConfig::new(&server.socket, "web-svc");
    let allowed = attempts_allowed(&config, delay, window);
    let mut client = FrameClient::new(config);
    let gone = poll_for(&mut client, Duration::from_millis(100), window).await;
    let attempts = server.attempts.load(std::sync::atomic::Ordering::Relaxed);
    println!("{attempts} attempts in {window:?} (backoff allows {allowed})");
    assert!(attempts >= 1);
    assert!(
        attempts <= allowed,
        "{attempts} attempts in {window:?}; the backoff allows {allowed}"
    );
    assert_eq!(gone, 1, "the outage is reported once");
}

#[tokio::test]
async fn an_unreachable_or_instantly_refusing_server_is_retried_no_faster_than_the_backoff() {
    let window = Duration::from_secs(2);
    // Nothing listening at all.
    let dir = tempfile::tempdir().unwrap();
    let mut client = FrameClient::new(ClientConfig::new(dir.path().join("capture.sock"), "m"));
    assert_eq!(
        poll_for(&mut client, Duration::from_millis(5), window).await,
        1
    );
    // A server that closes every connection at once.
    let server = slow_server(Duration::ZERO, false);
    let config = ClientConfig::new(&server.socket, "web-svc");
    let allowed = attempts_allowed(&config, Duration::ZERO, window);
    let mut client = FrameClient::new(config);
    assert_eq!(
        poll_for(&mut client, Duration::from_millis(5), window).await,
        1
    );
    let attempts = server.attempts.load(std::sync::atomic::Ordering::Relaxed);
    println!("{attempts} attempts in {window:?} (backoff allows {allowed})");
    assert!(
        (1..=allowed).contains(&attempts),
        "{attempts} attempts, allowed {allowed}"
    );
}

// ---- another user: kept out by the socket's mode, and out of the consumers' places ---------

const IMPOSTOR_VAR: &str = "MECAM_IPC_ANNOUNCE_IMPOSTOR";
/// The user the impostor runs as.
const NOBODY: u32 = 65534;

/// The child side: subscribes as web-svc, prints what it got on one `VERDICT` line, and holds
/// the connection until its stdin closes.
#[test]
#[ignore = "entry point for the impostor child process"]
fn impostor_entry() {
    use std::io::{Read as _, Write as _};
    let Ok(socket) = std::env::var(IMPOSTOR_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _held = rt.block_on(async {
        let mut s = match UnixStream::connect(&socket).await {
            Ok(s) => s,
            Err(e) => {
                println!("VERDICT connect {:?}", e.kind());
                return None;
            }
        };
        s.write_all(&subscribe_bytes(PROTOCOL_VERSION, WEB_SVC))
            .await
            .unwrap();
        let mut reader = ipc::announce::proto::MessageReader::new();
        match reader.read(&mut s).await {
            Ok(Message::Hello(_)) => println!("VERDICT hello"),
            other => println!("VERDICT {other:?}"),
        }
        Some(s)
    });
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// Runs [`impostor_entry`] as uid and gid [`NOBODY`]; returns it (killed on drop) and its
/// verdict.
async fn impostor(socket: &Path) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "impostor_entry",
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(IMPOSTOR_VAR, socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the impostor");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let verdict = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest may have printed "test impostor_entry ... " on the same line.
            if let Some((_, v)) = line.split_once("VERDICT ") {
                return v.to_owned();
            }
        }
        panic!("the impostor exited without a verdict")
    })
    .await
    .expect("a verdict within 20 s");
    (child, verdict)
}

#[tokio::test]
async fn another_user_is_kept_out_by_the_mode_and_in_the_group_cannot_take_a_consumers_place() {
    use std::os::unix::fs::PermissionsExt as _;
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test runs a peer as another user: run it as root (CI is set, a skip would pass silently)"
        );
        eprintln!("SKIPPED: not root, cannot run a peer as another user");
        return;
    }
    let (logs, _guard) = Captured::start();
    let mut server = start(quiet_config(4));
    let dir = server.socket.parent().unwrap().to_owned();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut web = connected_client(&server.socket, WEB_SVC).await;
    // The socket in a group the other user is not in (root's own group it would have kept).
    let group = |gid: u32| {
        nix::unistd::chown(&server.socket, None, Some(nix::unistd::Gid::from_raw(gid))).unwrap()
    };
    group(4242);
    let (_out, verdict) = impostor(&server.socket).await;
    assert_eq!(
        verdict, "connect PermissionDenied",
        "mode 0660 keeps others out"
    );
    // In the socket's group, but not running as capture-svc's user or with its group as its
    // own: it is served from the pool and web-svc keeps its place.
    group(NOBODY);
    let (_impostor, verdict) = impostor(&server.socket).await;
    assert_eq!(verdict, "hello", "a member of the group may subscribe");
    let stats = server.handle.stats();
    assert_eq!((stats.subscribers, stats.replaced), (2, 0));
    server.publish(1);
    let mut buf = Vec::new();
    loop {
        match next_within(&mut web, &mut buf).await {
            ClientEvent::Frame(m) => break assert_eq!(m.seq, 1),
            ClientEvent::Heartbeat(_) => {}
            other => panic!("web-svc lost its place: {other:?}"),
        }
    }
    let lines = logs.lines();
    assert_eq!(
        count(&lines, "gave a consumer's name"),
        1,
        "{}",
        lines.join("\n")
    );
    assert!(count(&lines, &format!("uid {NOBODY}")) >= 1);
    server.stop().await;
}

/// Polls `try_next_announcement` until it gives a frame, for at most 10 s; the client stays
/// parked in between.
async fn parked_frame(client: &mut FrameClient) -> ipc::announce::FrameAnnounce {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match client.try_next_announcement() {
            Some(Announcement::Frame(a)) => return a,
            Some(Announcement::Event(ClientEvent::Heartbeat(_) | ClientEvent::State(_))) | None => {
                assert!(
                    Instant::now() < end,
                    "no frame announced to a parked client"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_takes_announcements_without_waiting_and_resumes() {
    let mut server = start(ServerConfig::default());
    let mut client = connected_client(&server.socket, WEB_SVC).await;
    assert!(
        client
            .try_next_announcement()
            .is_none_or(|a| !matches!(a, Announcement::Frame(_)))
    );
    assert!(client.is_connected(), "parked is still connected");
    server.publish(1);
    let a = parked_frame(&mut client).await;
    assert_eq!(a.seq, 1);
    let mut buf = Vec::new();
    assert_eq!(client.copy(&a, &mut buf).map(|m| m.seq), Some(1));
    assert_eq!(buf, 1u64.to_le_bytes());
    // Frames announced while parked are all there at the next look, in order.
    server.publish(2);
    let mut last = parked_frame(&mut client).await.seq;
    server.publish(3);
    while last < 3 {
        let seq = parked_frame(&mut client).await.seq;
        assert!(seq > last, "{seq} after {last}");
        last = seq;
    }
    // Back to waiting: the connection is taken back into the reactor.
    server.publish(4);
    let seq = loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next_announcement())
            .await
            .expect("an announcement within 10 s")
        {
            Announcement::Frame(a) => break a.seq,
            Announcement::Event(ClientEvent::Heartbeat(_) | ClientEvent::State(_)) => {}
            Announcement::Event(other) => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(seq, 4);
    assert_eq!(client.stats().connects, 1, "never reconnected");
    // A parked client hears the server go away.
    client.try_next_announcement();
    server.stop().await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match client.try_next_announcement() {
            Some(Announcement::Event(ClientEvent::Gone { .. })) => break,
            _ => {
                assert!(
                    Instant::now() < end,
                    "a parked client never saw the server go"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert!(!client.is_connected());
}
