//! The harness itself: the camera publishes and cleans up, a service is stopped and reaped,
//! the notify socket reads what is sent (bounded), polling gives up at its deadline.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use ipc::announce::{ClientConfig, ClientEvent, FrameClient};
use testkit::camera::{Camera, Stream};
use testkit::notify::{DATAGRAM_MAX, NotifySocket};
use testkit::poll;
use testkit::service::{STARTS_PER_DIR, Service, fresh_log};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn the_camera_publishes_each_period_and_removes_socket_and_region_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Stream {
        width: 8,
        height: 4,
        fps: 50.0,
        slot: 64,
        source: "kit",
    };
    let mut camera = Camera::start(dir.path(), stream, |n, camera| {
        camera.publish(&n.to_le_bytes());
    });
    let socket = dir.path().join("capture.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (hello, frames) = rt.block_on(async {
        let mut client = FrameClient::new(ClientConfig::new(&socket, "kit"));
        let (mut buf, mut hello, mut frames) = (Vec::new(), None, Vec::new());
        while frames.len() < 3 {
            let ev = tokio::time::timeout(LIMIT, client.next(&mut buf))
                .await
                .expect("an event within the limit");
            match ev {
                ClientEvent::Connected(h) => hello = Some(h),
                ClientEvent::Frame(meta) => {
                    frames.push((meta.width, u64::from_le_bytes(buf[..8].try_into().unwrap())));
                }
                _ => {}
            }
        }
        (hello.expect("a hello first"), frames)
    });
    assert_eq!(
        (hello.width, hello.height, hello.source.as_str()),
        (8, 4, "kit")
    );
    assert!(frames.iter().all(|(w, _)| *w == 8), "{frames:?}");
    assert!(
        frames.windows(2).all(|p| p[0].1 < p[1].1),
        "frames numbered in order: {frames:?}"
    );
    camera.stop();
    assert!(!socket.exists(), "socket removed");
    assert!(!dir.path().join("frames").exists(), "region removed");
}

#[test]
fn a_service_logs_to_its_file_stops_on_sigterm_and_is_killed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "echo started; trap 'echo bye; exit 3' TERM; while :; do sleep 0.05; done",
    ]);
    let mut svc = Service::start("sh", cmd, &dir.path().join("sh.log")).unwrap();
    svc.wait_log("started", LIMIT).unwrap();
    assert!(
        svc.wait_log("never printed", Duration::from_millis(200))
            .is_err()
    );
    svc.check_alive().unwrap();
    let status = svc.stop(LIMIT).unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(svc.log().contains("bye"), "{}", svc.log());

    // One that ignores SIGTERM: stop gives up at its timeout and kills it.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "trap '' TERM; echo up; while :; do sleep 0.05; done"]);
    let mut deaf = Service::start("deaf", cmd, &dir.path().join("deaf.log")).unwrap();
    deaf.wait_log("up", LIMIT).unwrap();
    assert!(deaf.stop(Duration::from_millis(300)).is_err());
    assert!(
        deaf.try_wait().unwrap().is_some(),
        "killed after the timeout"
    );

    // Dropped while running: killed and reaped.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo up; while :; do sleep 0.05; done"]);
    let dropped = Service::start("dropped", cmd, &dir.path().join("dropped.log")).unwrap();
    dropped.wait_log("up", LIMIT).unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(dropped.pid()).unwrap());
    drop(dropped);
    assert!(
        nix::sys::signal::kill(pid, None).is_err(),
        "no process (nor zombie) left"
    );
}

#[test]
fn fresh_log_names_each_start_and_refuses_past_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    for n in 1..=STARTS_PER_DIR {
        let log = fresh_log(dir.path(), "svc");
        assert!(log.ends_with(format!("svc-{n}.log")), "{}", log.display());
        std::fs::write(&log, "").unwrap();
    }
    let past = std::panic::catch_unwind(|| fresh_log(dir.path(), "svc"));
    assert!(past.is_err(), "a start past STARTS_PER_DIR is refused");
}

#[test]
fn the_notify_socket_reads_what_is_sent_and_cuts_a_datagram_at_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let sock = NotifySocket::bind(&dir.path().join("notify.sock"));
    let sender = UnixDatagram::unbound().unwrap();
    sender.send_to(b"READY=1", sock.path()).unwrap();
    sender.send_to(b"STATUS=one", sock.path()).unwrap();
    let got = sock.until(LIMIT, |g| g.len() == 2);
    assert_eq!(got, ["READY=1", "STATUS=one"]);
    let long = vec![b'x'; DATAGRAM_MAX + 100];
    sender.send_to(&long, sock.path()).unwrap();
    let got = sock.drain();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), DATAGRAM_MAX, "cut at DATAGRAM_MAX");
    assert!(sock.collect(Duration::from_millis(150)).is_empty());

    let path = sock.path().to_owned();
    let watch = sock.watch_status();
    assert_eq!(watch.latest(), "");
    sender.send_to(b"WATCHDOG=1\nSTATUS=two", &path).unwrap();
    poll::wait("the STATUS line", LIMIT, || watch.latest() == "two");
}

#[test]
fn polling_returns_the_value_or_gives_up_at_the_deadline_with_the_last_reason() {
    let mut n = 0;
    let v = poll::until("n to reach 3", LIMIT, || {
        n += 1;
        Ok((n >= 3).then_some(n))
    })
    .unwrap();
    assert_eq!(v, 3);
    let err = poll::until::<()>("nothing", Duration::from_millis(100), || {
        Err("still nothing".into())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("waiting for nothing") && err.contains("still nothing"),
        "{err}"
    );
    let waited =
        std::panic::catch_unwind(|| poll::wait("never", Duration::from_millis(100), || false));
    assert!(waited.is_err());
}
