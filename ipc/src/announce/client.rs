//! The announce client, used by `motion-svc` and `web-svc`.
//!
//! [`FrameClient::next`] hides the socket and the region behind one stream of events: it
//! connects, subscribes, maps the region the hello names, copies and verifies each announced
//! frame, and when the server goes away (or refuses it, saying why) says so once, then
//! reconnects with capped exponential backoff and remaps when the generation changed.
//!
//! The services call `next` under a timeout (web-svc every 250 ms, motion-svc every second), so
//! it must lose nothing when cancelled, connecting included: the connect-and-hello exchange is
//! a future kept in the client across calls (a cancelled `next` resumes it where it was), and
//! the time of the next attempt is a deadline in the client, so cancelling never skips the
//! backoff.

use std::path::PathBuf;
use std::time::Duration;

mod handshake;
mod parked;

use tokio::net::UnixStream;
use tokio::time::Instant;

use super::proto::{
    CameraState, FrameAnnounce, Heartbeat, Hello, Message, MessageReader, ProtoError,
};
use crate::region::{FrameMeta, ReadError, RegionReader};
use crate::throttle::{LogThrottle, OUTSIDER_LOG_INTERVAL};
use handshake::{Connecting, Failure, Parts, handshake};
use parked::NonBlocking;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The announce socket.
    pub socket_path: PathBuf,
    /// Who we are, for the server's log.
    pub name: String,
    /// First retry delay after a failed connect.
    pub backoff_min: Duration,
    /// Longest retry delay. Keep it under a second or two: viewers should see the camera back
    /// within that time of capture-svc coming back.
    pub backoff_max: Duration,
    /// How long the server has to send its hello.
    pub hello_timeout: Duration,
}

impl ClientConfig {
    /// Defaults for a socket: backoff from 50 ms to 1 s, 2 s for the hello.
    pub fn new(socket_path: impl Into<PathBuf>, name: impl Into<String>) -> ClientConfig {
        ClientConfig {
            socket_path: socket_path.into(),
            name: name.into(),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            hello_timeout: Duration::from_secs(2),
        }
    }
}

/// What [`FrameClient::next`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Connected (again); the region named in the hello is mapped.
    Connected(Hello),
    /// A frame was copied into the caller's buffer and verified.
    Frame(FrameMeta),
    /// The camera changed state.
    State(CameraState),
    /// No frame for a second; the server is alive.
    Heartbeat(Heartbeat),
    /// The server is unreachable, refused this subscriber, or closed its connection; reported
    /// once per outage (later refusals of the same outage go to a throttled log line).
    Gone {
        /// Why, for the log: the server's own words when it refused.
        reason: String,
    },
}

/// What [`FrameClient::next_announcement`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Announcement {
    /// A frame was committed to the region; nothing has been copied.
    Frame(FrameAnnounce),
    /// Any other event, as [`FrameClient::next`] reports it (never [`ClientEvent::Frame`]).
    Event(ClientEvent),
}

/// Counters of a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Frames delivered.
    pub frames: u64,
    /// Announced frames not delivered: overwritten or torn before they could be copied.
    pub skipped: u64,
    /// Copies discarded because the writer raced them (also counted in `skipped`).
    pub torn: u64,
    /// Frames refused as corrupt.
    pub corrupt: u64,
    /// Successful connections, the first included.
    pub connects: u64,
    /// Times the region was (re)mapped.
    pub remaps: u64,
    /// Connection attempts started, the successful ones included.
    pub attempts: u64,
    /// Times the server refused this subscriber or closed it with a reason.
    pub refusals: u64,
}

/// A self-reconnecting subscriber to the announce socket.
#[derive(Debug)]
pub struct FrameClient {
    config: ClientConfig,
    stream: Option<UnixStream>,
    /// The connection while parked ([`FrameClient::try_next_announcement`]): out of the
    /// reactor, so arriving announcements wake no thread.
    parked: Option<std::os::unix::net::UnixStream>,
    /// `None` only while an attempt in `connecting` has them.
    parts: Option<Parts>,
    connecting: Option<Connecting>,
    region: Option<RegionReader>,
    hello: Option<Hello>,
    backoff: Duration,
    retry_at: Option<Instant>,
    outage_reported: bool,
    refusals_log: LogThrottle,
    stats: ClientStats,
}

impl FrameClient {
    /// A client that connects on the first call to [`FrameClient::next`].
    pub fn new(config: ClientConfig) -> FrameClient {
        FrameClient {
            backoff: config.backoff_min,
            config,
            stream: None,
            parked: None,
            parts: Some(Parts {
                reader: MessageReader::new(),
                scratch: Vec::with_capacity(128),
            }),
            connecting: None,
            region: None,
            hello: None,
            retry_at: None,
            outage_reported: false,
            refusals_log: LogThrottle::new(OUTSIDER_LOG_INTERVAL),
            stats: ClientStats::default(),
        }
    }

    /// The last hello received, with the camera state kept current.
    pub fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    /// The mapped region, while connected.
    pub fn region(&self) -> Option<&RegionReader> {
        self.region.as_ref()
    }

    /// True while connected to the server.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some() || self.parked.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Waits for the next event, copying frames into `buf` (its allocation is reused).
    ///
    /// Cancel-safe, connecting included: partial messages stay buffered, a connection attempt
    /// in flight is resumed by the next call, and a retry delay is kept as a deadline.
    pub async fn next(&mut self, buf: &mut Vec<u8>) -> ClientEvent {
        loop {
            match self.next_announcement().await {
                Announcement::Event(event) => return event,
                Announcement::Frame(announce) => {
                    if let Some(meta) = self.copy(&announce, buf) {
                        return ClientEvent::Frame(meta);
                    }
                }
            }
        }
    }

    /// Waits for the next event like [`FrameClient::next`], but returns a frame announcement
    /// as it came, copying nothing: for a subscriber that copies a frame only when someone
    /// will use it ([`FrameClient::copy`], or its own [`RegionReader`] of the region the
    /// hello names). Cancel-safe like `next`.
    pub async fn next_announcement(&mut self) -> Announcement {
        if let Some(parked) = self.parked.take() {
            match UnixStream::from_std(parked) {
                Ok(stream) => self.stream = Some(stream),
                Err(e) => {
                    self.disconnect();
                    let why = format!("cannot watch the capture-svc connection: {e}");
                    if let Some(event) = self.outage(Failure::Other(why)) {
                        return Announcement::Event(event);
                    }
                }
            }
        }
        loop {
            let Some(stream) = self.stream.as_mut() else {
                if let Some(event) = self.connect().await {
                    return Announcement::Event(event);
                }
                continue;
            };
            let reader = &mut self
                .parts
                .as_mut()
                .expect("a connected client has its reader")
                .reader;
            let read = reader.read(stream).await;
            if let Some(announcement) = self.on_read(read) {
                return announcement;
            }
        }
    }

    /// Takes the next announcement or event already received, without waiting, and parks the
    /// connection: it leaves the async reactor, so announcements arriving while nobody asks
    /// wake no thread (for a subscriber that only looks now and then); the next
    /// [`FrameClient::next_announcement`] takes it back. `None` when nothing is buffered, or
    /// when not connected (connecting needs `next_announcement`).
    pub fn try_next_announcement(&mut self) -> Option<Announcement> {
        if let Some(stream) = self.stream.take() {
            match stream.into_std() {
                Ok(parked) => self.parked = Some(parked),
                Err(e) => {
                    self.disconnect();
                    let why = format!("cannot park the capture-svc connection: {e}");
                    return self.outage(Failure::Other(why)).map(Announcement::Event);
                }
            }
        }
        let stream = self.parked.as_mut()?;
        let reader = &mut self.parts.as_mut()?.reader;
        // A non-blocking socket: the read never waits, so one poll settles it.
        let polled = {
            let mut parked = NonBlocking(stream);
            let mut read = std::pin::pin!(reader.read(&mut parked));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            read.as_mut().poll(&mut cx)
        };
        match polled {
            std::task::Poll::Ready(result) => self.on_read(result),
            std::task::Poll::Pending => None,
        }
    }

    /// What a read from the connection gives: `None` to read again.
    fn on_read(&mut self, read: Result<Message, ProtoError>) -> Option<Announcement> {
        let message = match read {
            Ok(m) => m,
            Err(e) => {
                self.disconnect();
                let why = format!("capture-svc connection lost: {e}");
                return self.outage(Failure::Other(why)).map(Announcement::Event);
            }
        };
        match message {
            Message::Frame(announce) => Some(Announcement::Frame(announce)),
            Message::CameraState(state) => {
                if let Some(hello) = self.hello.as_mut() {
                    hello.state = state.clone();
                }
                Some(Announcement::Event(ClientEvent::State(state)))
            }
            Message::Heartbeat(h) => Some(Announcement::Event(ClientEvent::Heartbeat(h))),
            Message::Refused(r) => {
                // Closed by the server, with a reason (replaced by a newer connection under
                // our name, or a protocol error): back off before coming back.
                self.disconnect();
                self.retry_later();
                self.outage(Failure::Refused(r.reason))
                    .map(Announcement::Event)
            }
            other => {
                tracing::warn!(message = ?other, "unexpected message from capture-svc, reconnecting");
                self.disconnect();
                self.retry_later();
                None
            }
        }
    }

    /// Copies the announced frame into `buf` and verifies it, counting it in the stats;
    /// `None` when it is gone (overwritten or torn, counted as skipped), corrupt, or no region
    /// is mapped.
    pub fn copy(&mut self, announce: &FrameAnnounce, buf: &mut Vec<u8>) -> Option<FrameMeta> {
        let region = self.region.as_ref()?;
        match region.read_slot(announce.slot, announce.seq, buf) {
            Ok(meta) => {
                self.stats.frames += 1;
                Some(meta)
            }
            Err(ReadError::Torn) => {
                self.stats.torn += 1;
                self.stats.skipped += 1;
                None
            }
            Err(ReadError::Overwritten | ReadError::Empty) => {
                self.stats.skipped += 1;
                None
            }
            Err(ReadError::Corrupt(why)) => {
                self.stats.corrupt += 1;
                tracing::warn!(seq = announce.seq, why, "skipping a corrupt frame slot");
                None
            }
        }
    }

    /// Waits for the retry deadline, then drives the connection attempt (starting one if none
    /// is in flight). `Some` is the event to report; `None`: call again.
    async fn connect(&mut self) -> Option<ClientEvent> {
        if self.connecting.is_none() {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            let parts = self.parts.take().expect("parts are home between attempts");
            self.stats.attempts += 1;
            self.connecting = Some(Connecting(Box::pin(handshake(self.config.clone(), parts))));
        }
        let connecting = self.connecting.as_mut().expect("an attempt is in flight");
        // The only await on the attempt: cancelled here, it is resumed by the next call.
        let (parts, result) = connecting.0.as_mut().await;
        self.connecting = None;
        self.parts = Some(parts);
        let failure = match result.map(|(stream, hello)| self.map_region(stream, hello)) {
            Ok(Ok(hello)) => {
                self.backoff = self.config.backoff_min;
                self.retry_at = None;
                self.outage_reported = false;
                self.stats.connects += 1;
                return Some(ClientEvent::Connected(hello));
            }
            Ok(Err(why)) => Failure::Other(why),
            Err(failure) => failure,
        };
        self.retry_later();
        self.outage(failure)
    }

    /// Sets the next attempt's deadline one backoff from now and doubles the backoff.
    fn retry_later(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
    }

    /// Reports an outage once; later failures of the same outage stay quiet, but for refusals,
    /// which go to a throttled log line (the server's reason may have changed).
    fn outage(&mut self, failure: Failure) -> Option<ClientEvent> {
        if let Failure::Refused(_) = failure {
            self.stats.refusals += 1;
        }
        if !self.outage_reported {
            self.outage_reported = true;
            return Some(ClientEvent::Gone {
                reason: failure.into_reason(),
            });
        }
        if let Failure::Refused(why) = failure {
            if let Some(held_back) = self.refusals_log.check() {
                tracing::warn!(
                    held_back,
                    "capture-svc refused this subscriber again: {why}"
                );
            }
        }
        None
    }

    fn disconnect(&mut self) {
        self.stream = None;
        self.parked = None;
        if let Some(parts) = self.parts.as_mut() {
            parts.reader.reset();
        }
    }

    /// Maps (or keeps) the region the hello names; on success the client is connected.
    fn map_region(&mut self, stream: UnixStream, hello: Hello) -> Result<Hello, String> {
        let remap = match &self.region {
            Some(r) => {
                r.generation() != hello.generation || r.path() != hello.region_path || r.is_stale()
            }
            None => true,
        };
        if remap {
            self.region = None;
            let region = RegionReader::open(&hello.region_path).map_err(|e| e.to_string())?;
            if region.generation() != hello.generation {
                return Err(format!(
                    "region generation {:x} does not match the hello's {:x}; capture-svc restarted, retrying",
                    region.generation(),
                    hello.generation
                ));
            }
            self.region = Some(region);
            self.stats.remaps += 1;
        }
        self.stream = Some(stream);
        self.hello = Some(hello.clone());
        Ok(hello)
    }
}
