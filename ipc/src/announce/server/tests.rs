//! Unit tests of the announce server's places and connections.

use super::peer::{Ids, Peer};
use super::places::{Kick, Place, Taken};
use super::*;
use crate::announce::MOTION_SVC;
use crate::announce::proto::{Message, MessageReader, PROTOCOL_VERSION, ProtoError};
use tokio::net::UnixStream;

fn server(dir: &Path) -> AnnounceServer {
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        generation: 1,
        region_path: dir.join("frames"),
        slot_count: 3,
        slot_capacity: 1024,
        width: 0,
        height: 0,
        nominal_fps: 1.0,
        source: "test".into(),
        state: CameraState::Starting,
    };
    AnnounceServer::bind(&dir.join("capture.sock"), hello, ServerConfig::default()).unwrap()
}

fn nobody() -> Peer {
    Peer {
        uid: None,
        gid: None,
        pid: None,
    }
}

/// A peer running as this process does.
fn us() -> Peer {
    let ids = Ids::own();
    Peer {
        uid: Some(ids.uid),
        gid: Some(ids.gid),
        pid: Some(std::process::id() as i32),
    }
}

#[tokio::test]
async fn a_panicking_subscriber_task_gives_its_place_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let handle = server.handle();
    let (mut slot, _kick) = Place::handshake(&handle.shared, nobody());
    let (mut held, _kick2) = Place::handshake(&handle.shared, us());
    assert_eq!(handle.stats().handshaking, 2);
    assert!(matches!(
        slot.subscribe("a", nobody()),
        Ok(Taken::Pool { not_trusted: false })
    ));
    assert!(matches!(
        held.subscribe(WEB_SVC, us()),
        Ok(Taken::Reserved(None))
    ));
    assert_eq!(
        (handle.stats().subscribers, handle.stats().handshaking),
        (2, 0)
    );
    let task = tokio::spawn(async move {
        let _slot = slot;
        panic!("a subscriber task fails");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(
        handle.stats().subscribers,
        1,
        "the panicked task's place is free"
    );
    drop(held);
    assert_eq!(handle.stats().subscribers, 0);
}

#[tokio::test]
async fn only_the_servers_user_group_or_root_may_hold_a_reserved_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let handle = server.handle();
    let own = Ids::own();
    // Some other user who can connect (a member of the socket's group, say).
    let stranger = Peer {
        uid: Some(own.uid.wrapping_add(4242).max(1)),
        gid: Some(own.gid.wrapping_add(4242)),
        pid: Some(1),
    };
    let (mut holder, mut holder_kick) = Place::handshake(&handle.shared, us());
    assert!(matches!(
        holder.subscribe(WEB_SVC, us()),
        Ok(Taken::Reserved(None))
    ));
    let (mut impostor, _kick) = Place::handshake(&handle.shared, us());
    assert!(matches!(
        impostor.subscribe(WEB_SVC, stranger),
        Ok(Taken::Pool { not_trusted: true })
    ));
    assert!(
        holder_kick.try_recv().is_err(),
        "the consumer keeps its place"
    );
    let (mut unknown, _kick) = Place::handshake(&handle.shared, us());
    assert!(matches!(
        unknown.subscribe(MOTION_SVC, nobody()),
        Ok(Taken::Pool { not_trusted: true })
    ));
    // Root, the server's user, or its group: any of them.
    for peer in [
        Peer {
            uid: Some(0),
            ..stranger
        },
        Peer {
            uid: Some(own.uid),
            ..stranger
        },
        Peer {
            gid: Some(own.gid),
            ..stranger
        },
    ] {
        assert!(peer.may_reserve(own), "{peer}");
    }
    assert!(!stranger.may_reserve(own));
}

#[tokio::test]
async fn a_flood_of_strangers_never_pushes_a_consumers_handshake_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let handle = server.handle();
    let max = handle.shared.config.max_handshakes;
    let mut strangers = Vec::new();
    for _ in 0..max - 1 {
        strangers.push(Place::handshake(&handle.shared, nobody()));
    }
    let (mut consumer, mut consumer_kick) = Place::handshake(&handle.shared, us());
    for _ in 0..10 * max {
        strangers.push(Place::handshake(&handle.shared, nobody()));
    }
    assert_eq!(handle.stats().handshaking, max);
    assert_eq!(handle.stats().dropped_handshakes, 10 * max as u64);
    assert!(
        consumer_kick.try_recv().is_err(),
        "the consumer still waits"
    );
    assert!(matches!(
        consumer.subscribe(WEB_SVC, us()),
        Ok(Taken::Reserved(None))
    ));
    // With only trusted ones waiting, the oldest goes.
    let (_a, mut a_kick) = Place::handshake(&handle.shared, us());
    drop(strangers);
    let trusted: Vec<_> = (0..max)
        .map(|_| Place::handshake(&handle.shared, us()))
        .collect();
    assert!(matches!(a_kick.try_recv(), Ok(Kick::Crowded)));
    assert_eq!(handle.stats().handshaking, max);
    drop(trusted);
}

#[tokio::test]
async fn a_replaced_holder_leaving_does_not_free_its_successors_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let handle = server.handle();
    let (mut old, mut old_kick) = Place::handshake(&handle.shared, us());
    assert!(old.subscribe(WEB_SVC, us()).is_ok());
    let (mut new, _kick) = Place::handshake(&handle.shared, us());
    assert!(matches!(
        new.subscribe(WEB_SVC, us()),
        Ok(Taken::Reserved(Some(_)))
    ));
    assert!(matches!(old_kick.try_recv(), Ok(Kick::Replaced(_))));
    drop(old);
    assert_eq!(handle.stats().subscribers, 1, "the new holder keeps it");
    drop(new);
    assert_eq!(handle.stats().subscribers, 0);
}

#[tokio::test]
async fn a_message_too_large_to_encode_closes_the_connection_not_the_server() {
    use super::super::proto::{Subscribe, encode};
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let handle = server.handle();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let run = tokio::spawn(server.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let mut s = UnixStream::connect(dir.path().join("capture.sock"))
        .await
        .unwrap();
    let mut out = Vec::new();
    encode(
        &Message::Subscribe(Subscribe {
            protocol_version: PROTOCOL_VERSION,
            name: "big".into(),
        }),
        &mut out,
    )
    .unwrap();
    s.write_all(&out).await.unwrap();
    let mut reader = MessageReader::new();
    assert!(matches!(reader.read(&mut s).await, Ok(Message::Hello(_))));
    handle.state(CameraState::Failed {
        reason: "x".repeat(super::super::MAX_MESSAGE_LEN),
    });
    let why = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut s)).await;
    assert!(
        matches!(&why, Ok(Ok(Message::Refused(r))) if r.reason.contains("cannot send a camera state")),
        "{why:?}"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut s)).await;
    assert!(matches!(end, Ok(Err(ProtoError::Closed))), "{end:?}");
    assert_eq!(handle.stats().protocol_errors, 1);
    // The task gives its place back just after the socket closes.
    for _ in 0..500 {
        if handle.stats().subscribers == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.stats().subscribers, 0);
    let _ = stop_tx.send(true);
    run.await.unwrap();
}
