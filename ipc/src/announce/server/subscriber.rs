//! One connection's task: read its `Subscribe`, take a place, then send what is new until it
//! goes, idles, breaks the protocol, is replaced or the server stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::peer::Peer;
use super::places::{Kick, NoPlace, Place, Taken};
use super::{HEARTBEAT_PERIOD, MAX_SUBSCRIBE_LEN, REFUSAL_TIMEOUT, Shared};
use crate::announce::proto::{
    Heartbeat, Message, MessageReader, PROTOCOL_VERSION, ProtoError, Refused, write_message,
};
use crate::service::monotonic_ns;

/// Why a subscriber's connection ended.
pub(super) enum End {
    Gone,
    Idle,
    Protocol(String),
    Replaced(Peer),
    Stopped,
}

/// One connection and what its task needs to serve it.
pub(super) struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    reader: MessageReader,
    scratch: Vec<u8>,
    peer: Peer,
    /// Fires when the place is taken from this connection.
    kick: oneshot::Receiver<Kick>,
    /// Cancelled when the server stops.
    stop: CancellationToken,
}

pub(super) async fn serve(
    stream: UnixStream,
    peer: Peer,
    place: Place,
    kick: oneshot::Receiver<Kick>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let config = &shared.config;
    let (rd, wr) = stream.into_split();
    let mut c = Conn {
        rd,
        wr,
        reader: MessageReader::with_limit(MAX_SUBSCRIBE_LEN),
        scratch: Vec::with_capacity(256),
        peer,
        kick,
        stop,
    };
    let first = tokio::select! {
        first = tokio::time::timeout(config.idle_timeout, c.reader.read(&mut c.rd)) => first,
        _ = &mut c.kick => {
            // Counted when kicked.
            return crowded(&shared, &mut c).await;
        }
        _ = c.stop.cancelled() => return,
    };
    let why = match first {
        Ok(Ok(Message::Subscribe(s))) if s.protocol_version == PROTOCOL_VERSION => {
            return subscribed(&shared, s.name, place, c).await;
        }
        // Version 1 has no `Refused`; its clients read this hello's version and say so.
        Ok(Ok(Message::Subscribe(s))) if s.protocol_version < 2 => {
            let hello = shared
                .latest
                .lock()
                .expect("announce state poisoned")
                .hello
                .clone();
            let why = format!(
                "{:?} speaks announce protocol {}, this server {PROTOCOL_VERSION}",
                s.name, s.protocol_version
            );
            let _ = tokio::time::timeout(
                REFUSAL_TIMEOUT,
                write_message(&mut c.wr, &Message::Hello(hello), &mut c.scratch),
            )
            .await;
            return protocol_error(&shared, peer, &why);
        }
        // The name is the peer's: quoted wherever it goes, so it cannot forge a log line.
        Ok(Ok(Message::Subscribe(s))) => format!(
            "{:?} speaks announce protocol {}, this capture-svc {PROTOCOL_VERSION}; run matching versions",
            s.name, s.protocol_version
        ),
        Ok(Ok(other)) => format!("expected Subscribe, got {}", message_kind(&other)),
        Ok(Err(ProtoError::Closed)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no Subscribe within {:?}", config.idle_timeout),
    };
    refuse(&mut c, why.clone()).await;
    protocol_error(&shared, peer, &why);
}

/// Serves a connection that subscribed as `name`, once it has a place.
pub(super) async fn subscribed(shared: &Arc<Shared>, name: String, mut place: Place, mut c: Conn) {
    if !take_place(shared, &name, &mut place, &mut c).await {
        return;
    }
    tracing::debug!(subscriber = ?name, peer = %c.peer, "subscriber connected");
    let end = stream(shared, &mut c).await;
    // The place is given back before the (bounded) refusal write.
    drop(place);
    ended(shared, &name, &mut c, end).await;
}

/// Moves the connection from the handshake queue to a subscriber's place, logging a place
/// taken over or refused to a consumer's name. `false` when it got none (it was told why).
async fn take_place(shared: &Shared, name: &str, place: &mut Place, c: &mut Conn) -> bool {
    let peer = c.peer;
    match place.subscribe(name, peer) {
        Ok(Taken::Pool { not_trusted: false } | Taken::Reserved(None)) => true,
        Ok(Taken::Pool { not_trusted: true }) => {
            if let Some(held_back) = shared.logs.untrusted.check() {
                let ids = shared.ids;
                tracing::warn!(subscriber = ?name, %peer, held_back, "a subscriber gave a consumer's name but runs neither as this capture-svc's user (uid {}) nor with its group (gid {}) as its own: served from the shared pool, not the reserved place", ids.uid, ids.gid);
            }
            true
        }
        Ok(Taken::Reserved(Some(old))) => {
            shared.replaced.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = shared.logs.replaced.check() {
                tracing::warn!(subscriber = ?name, new = %peer, old = %old, held_back, "a new connection took over the reserved announce place of {name}; the old one is closed (a restarted consumer, or two running at once)");
            }
            true
        }
        Err(NoPlace::Full) => {
            shared.refused_full.fetch_add(1, Ordering::Relaxed);
            let max = shared.config.max_subscribers;
            if let Some(held_back) = shared.logs.refused.check() {
                tracing::warn!(subscriber = ?name, peer = %peer, max, held_back, "announce socket full: refused a subscriber (the consumers have reserved places; raise max_subscribers in [capture] for more others)");
            }
            let why = format!(
                "the announce socket is full ({max} subscribers besides the consumers); try again later, or raise max_subscribers in [capture]"
            );
            refuse(c, why).await;
            false
        }
        Err(NoPlace::Crowded) => {
            crowded(shared, c).await;
            false
        }
    }
}

/// Sends the hello, then what is new (state, newest frame, or a heartbeat when no frame came
/// for [`HEARTBEAT_PERIOD`]) until the connection ends; says why it did.
async fn stream(shared: &Shared, c: &mut Conn) -> Option<End> {
    let config = &shared.config;
    let mut wake = shared.wake.subscribe();
    let (hello, mut sent_state, mut sent_seq) = {
        let latest = shared.latest.lock().expect("announce state poisoned");
        (
            latest.hello.clone(),
            latest.state_version,
            latest.frame.map_or(0, |f| f.seq),
        )
    };
    let mut end = send(
        &mut c.wr,
        &Message::Hello(hello),
        &mut c.scratch,
        config.idle_timeout,
    )
    .await;
    let mut heartbeat = tokio::time::interval(HEARTBEAT_PERIOD);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while end.is_none() {
        let mut outgoing: [Option<Message>; 2] = [None, None];
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() { end = Some(End::Stopped); break; }
                let latest = shared.latest.lock().expect("announce state poisoned");
                if latest.state_version != sent_state {
                    sent_state = latest.state_version;
                    outgoing[0] = Some(Message::CameraState(latest.hello.state.clone()));
                }
                if let Some(frame) = latest.frame.filter(|f| f.seq != sent_seq) {
                    sent_seq = frame.seq;
                    outgoing[1] = Some(Message::Frame(frame));
                }
            }
            _ = heartbeat.tick() => {
                let latest = shared.latest.lock().expect("announce state poisoned");
                if latest.last_frame_at.elapsed() >= HEARTBEAT_PERIOD {
                    outgoing[0] = Some(Message::Heartbeat(Heartbeat {
                        mono_ns: monotonic_ns(),
                        last_seq: latest.frame.map_or(0, |f| f.seq),
                    }));
                }
            }
            got = c.reader.read(&mut c.rd) => {
                end = Some(match got {
                    Err(ProtoError::Closed) | Err(ProtoError::Io(_)) => End::Gone,
                    Ok(m) => End::Protocol(format!("unexpected {} from a subscriber", message_kind(&m))),
                    Err(e) => End::Protocol(e.to_string()),
                });
            }
            // Only a reserved place's holder can be kicked; the pool's keep their sender.
            kicked = &mut c.kick => end = Some(match kicked {
                Ok(Kick::Replaced(by)) => End::Replaced(by),
                Ok(Kick::Crowded) | Err(_) => End::Stopped,
            }),
            _ = c.stop.cancelled() => end = Some(End::Stopped),
        }
        for message in outgoing.into_iter().flatten() {
            end = send(&mut c.wr, &message, &mut c.scratch, config.idle_timeout).await;
            if end.is_some() {
                break;
            }
        }
    }
    end
}

/// Counts and logs why a subscriber's connection ended, and tells the peer when it is to
/// blame.
async fn ended(shared: &Shared, name: &str, c: &mut Conn, end: Option<End>) {
    let peer = c.peer;
    match end {
        Some(End::Idle) => {
            shared.dropped_idle.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = shared.logs.idle.check() {
                tracing::warn!(subscriber = ?name, %peer, timeout = ?shared.config.idle_timeout, held_back, "subscriber took nothing for the idle timeout, disconnected");
            }
        }
        Some(End::Protocol(why)) => {
            refuse(c, why.clone()).await;
            protocol_error(shared, peer, &format!("{name:?}: {why}"));
        }
        Some(End::Replaced(by)) => {
            let why = format!(
                "replaced by a newer connection under the name {name} ({by}); is a second {name} running?"
            );
            refuse(c, why).await;
        }
        Some(End::Gone) => tracing::debug!(subscriber = ?name, "subscriber disconnected"),
        Some(End::Stopped) | None => {}
    }
}

/// Closes a connection kicked from the handshake queue (counted when kicked).
pub(super) async fn crowded(shared: &Shared, c: &mut Conn) {
    let max = shared.config.max_handshakes;
    if let Some(held_back) = shared.logs.crowded.check() {
        tracing::warn!(peer = %c.peer, max, held_back, "closed an announce connection before its Subscribe: {max} newer ones are waiting");
    }
    let why = format!("{max} newer connections are waiting to subscribe; try again");
    refuse(c, why).await;
}

/// Tells the peer why it is being closed, if it takes the message within
/// [`REFUSAL_TIMEOUT`].
pub(super) async fn refuse(c: &mut Conn, reason: String) {
    let message = Message::Refused(Refused {
        protocol_version: PROTOCOL_VERSION,
        reason,
    });
    let write = write_message(&mut c.wr, &message, &mut c.scratch);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, write).await;
}

/// Writes one message, giving up after `timeout`: a subscriber that takes nothing is idle.
/// `None` when it was sent, else why the connection ends.
pub(super) async fn send(
    wr: &mut OwnedWriteHalf,
    message: &Message,
    scratch: &mut Vec<u8>,
    timeout: Duration,
) -> Option<End> {
    match tokio::time::timeout(timeout, write_message(wr, message, scratch)).await {
        Ok(Ok(())) => None,
        // Nothing was written: the message itself cannot be encoded (over the size limit).
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => Some(End::Protocol(format!(
            "cannot send {}: {e}",
            message_kind(message)
        ))),
        Ok(Err(_)) => Some(End::Gone),
        Err(_) => Some(End::Idle),
    }
}

pub(super) fn message_kind(message: &Message) -> &'static str {
    match message {
        Message::Subscribe(_) => "a subscribe",
        Message::Hello(_) => "the hello",
        Message::Frame(_) => "a frame announcement",
        Message::CameraState(_) => "a camera state",
        Message::Heartbeat(_) => "a heartbeat",
        Message::Refused(_) => "a refusal",
    }
}

pub(super) fn protocol_error(shared: &Shared, peer: Peer, why: &str) {
    shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
    if let Some(held_back) = shared.logs.protocol.check() {
        tracing::warn!(
            reason = why,
            %peer,
            held_back,
            "closing an announce connection after a protocol error"
        );
    }
}
