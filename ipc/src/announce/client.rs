//! The announce client, used by `motion-svc` and `web-svc`.
//!
//! [`FrameClient::next`] hides the socket and the region behind one stream of events: it
//! connects, subscribes, maps the region the hello names, copies and verifies each announced
//! frame, and when the server goes away says so once, then reconnects with capped exponential
//! backoff and remaps when the generation changed.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::Instant;

use super::proto::{
    CameraState, Heartbeat, Hello, Message, MessageReader, PROTOCOL_VERSION, Subscribe,
    write_message,
};
use crate::region::{FrameMeta, ReadError, RegionReader};

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
    /// The server is unreachable; reported once per outage.
    Gone {
        /// Why, for the log.
        reason: String,
    },
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
}

/// A self-reconnecting subscriber to the announce socket.
#[derive(Debug)]
pub struct FrameClient {
    config: ClientConfig,
    stream: Option<UnixStream>,
    reader: MessageReader,
    region: Option<RegionReader>,
    hello: Option<Hello>,
    backoff: Duration,
    retry_at: Option<Instant>,
    outage_reported: bool,
    scratch: Vec<u8>,
    stats: ClientStats,
}

impl FrameClient {
    /// A client that connects on the first call to [`FrameClient::next`].
    pub fn new(config: ClientConfig) -> FrameClient {
        FrameClient {
            backoff: config.backoff_min,
            config,
            stream: None,
            reader: MessageReader::new(),
            region: None,
            hello: None,
            retry_at: None,
            outage_reported: false,
            scratch: Vec::with_capacity(128),
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
        self.stream.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Waits for the next event, copying frames into `buf` (its allocation is reused).
    ///
    /// Cancel-safe: partial messages stay buffered, and a retry delay is kept as a deadline.
    pub async fn next(&mut self, buf: &mut Vec<u8>) -> ClientEvent {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                if let Some(at) = self.retry_at {
                    tokio::time::sleep_until(at).await;
                }
                match self.connect().await {
                    Ok(hello) => {
                        self.backoff = self.config.backoff_min;
                        self.retry_at = None;
                        self.outage_reported = false;
                        self.stats.connects += 1;
                        return ClientEvent::Connected(hello);
                    }
                    Err(reason) => {
                        self.retry_at = Some(Instant::now() + self.backoff);
                        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
                        if let Some(event) = self.outage(reason) {
                            return event;
                        }
                        continue;
                    }
                }
            };
            let message = match self.reader.read(stream).await {
                Ok(m) => m,
                Err(e) => {
                    self.disconnect();
                    match self.outage(format!("capture-svc connection lost: {e}")) {
                        Some(event) => return event,
                        None => continue,
                    }
                }
            };
            match message {
                Message::Frame(announce) => {
                    let region = self
                        .region
                        .as_ref()
                        .expect("a connected client has a region");
                    match region.read_slot(announce.slot, announce.seq, buf) {
                        Ok(meta) => {
                            self.stats.frames += 1;
                            return ClientEvent::Frame(meta);
                        }
                        Err(ReadError::Torn) => {
                            self.stats.torn += 1;
                            self.stats.skipped += 1;
                        }
                        Err(ReadError::Overwritten | ReadError::Empty) => self.stats.skipped += 1,
                        Err(ReadError::Corrupt(why)) => {
                            self.stats.corrupt += 1;
                            tracing::warn!(
                                seq = announce.seq,
                                why,
                                "skipping a corrupt frame slot"
                            );
                        }
                    }
                }
                Message::CameraState(state) => {
                    if let Some(hello) = self.hello.as_mut() {
                        hello.state = state.clone();
                    }
                    return ClientEvent::State(state);
                }
                Message::Heartbeat(h) => return ClientEvent::Heartbeat(h),
                other => {
                    tracing::warn!(message = ?other, "unexpected message from capture-svc, reconnecting");
                    self.disconnect();
                    self.retry_at = Some(Instant::now() + self.backoff);
                }
            }
        }
    }

    /// Reports an outage once; later failures of the same outage stay quiet.
    fn outage(&mut self, reason: String) -> Option<ClientEvent> {
        if self.outage_reported {
            return None;
        }
        self.outage_reported = true;
        Some(ClientEvent::Gone { reason })
    }

    fn disconnect(&mut self) {
        self.stream = None;
        self.reader.reset();
    }

    async fn connect(&mut self) -> Result<Hello, String> {
        let path = &self.config.socket_path;
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
        let subscribe = Message::Subscribe(Subscribe {
            protocol_version: PROTOCOL_VERSION,
            name: self.config.name.clone(),
        });
        write_message(&mut stream, &subscribe, &mut self.scratch)
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
        self.reader.reset();
        let hello =
            match tokio::time::timeout(self.config.hello_timeout, self.reader.read(&mut stream))
                .await
            {
                Ok(Ok(Message::Hello(hello))) => hello,
                Ok(Ok(other)) => return Err(format!("expected a hello, got {other:?}")),
                Ok(Err(e)) => return Err(format!("no hello: {e}")),
                Err(_) => return Err("no hello within the timeout".into()),
            };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(format!(
                "capture-svc speaks protocol {}, this build {PROTOCOL_VERSION}; run matching versions",
                hello.protocol_version
            ));
        }
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
