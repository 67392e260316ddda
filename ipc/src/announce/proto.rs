//! The messages on the announce socket and how they are framed.
//!
//! A message is a 4-byte big-endian length followed by that many bytes of MessagePack
//! (`rmp-serde`, struct-as-map so fields can be added). A length above [`MAX_MESSAGE_LEN`]
//! closes the connection: nothing legitimate is that large.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::region::FrameMeta;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of this protocol; a peer speaking another is refused.
///
/// 2 added [`Message::Refused`]. A version-1 subscriber cannot read that message, so it is
/// answered with a [`Hello`] naming version 2 instead, which every version-1 client turns into
/// "capture-svc speaks protocol 2, this build 1; run matching versions".
pub const PROTOCOL_VERSION: u32 = 2;
/// The largest message body accepted, in bytes.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Bytes of the length prefix.
const PREFIX_LEN: usize = 4;

/// The first message a subscriber sends after connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// The subscriber's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Who is subscribing, for the server's log.
    pub name: String,
}

/// What the server sends first: everything a subscriber needs to map the region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The server's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The region's generation.
    pub generation: u64,
    /// Where the region file is.
    pub region_path: PathBuf,
    /// Number of slots in the region.
    pub slot_count: u32,
    /// Bytes of frame data per slot.
    pub slot_capacity: u64,
    /// Frame width in pixels (0 while unknown).
    pub width: u32,
    /// Frame height in pixels (0 while unknown).
    pub height: u32,
    /// Frames per second the source is set to deliver.
    pub nominal_fps: f32,
    /// Which source the camera is (`rpicam`, `v4l2:/dev/video0`, `synthetic`, ...).
    pub source: String,
    /// The camera's state at the time of the hello.
    pub state: CameraState,
}

impl Hello {
    /// The hello of a camera that is already streaming into `region`: the protocol version
    /// and everything about the region are taken from it, the rest is the camera's.
    pub fn streaming(
        region: &crate::region::RegionWriter,
        width: u32,
        height: u32,
        nominal_fps: f32,
        source: &str,
    ) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            generation: region.generation(),
            region_path: region.path().to_owned(),
            slot_count: crate::region::SLOT_COUNT as u32,
            slot_capacity: region.slot_capacity() as u64,
            width,
            height,
            nominal_fps,
            source: source.to_owned(),
            state: CameraState::Streaming,
        }
    }
}

/// One committed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameAnnounce {
    /// Sequence number in the region.
    pub seq: u64,
    /// Slot it sits in.
    pub slot: u32,
    /// Length in bytes.
    pub len: u32,
    /// Capture time, `CLOCK_MONOTONIC` nanoseconds.
    pub mono_ns: u64,
    /// Capture time, nanoseconds since the Unix epoch.
    pub wall_ns: u64,
}

impl From<&FrameMeta> for FrameAnnounce {
    /// The announcement of the frame the region writer just committed.
    fn from(meta: &FrameMeta) -> FrameAnnounce {
        FrameAnnounce {
            seq: meta.seq,
            slot: meta.slot,
            len: meta.len as u32,
            mono_ns: meta.mono_ns,
            wall_ns: meta.wall_ns,
        }
    }
}

/// What the camera is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CameraState {
    /// The source is starting; no frame yet.
    Starting,
    /// Frames are flowing.
    Streaming,
    /// The source is up but no frame has come for the stall timeout.
    Stalled,
    /// The source failed and is being restarted.
    Restarting {
        /// Why, for people.
        reason: String,
    },
    /// The source cannot be started; capture-svc keeps retrying slowly.
    Failed {
        /// Why, for people.
        reason: String,
    },
}

impl CameraState {
    /// A short lowercase name (`streaming`, `stalled`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            CameraState::Starting => "starting",
            CameraState::Streaming => "streaming",
            CameraState::Stalled => "stalled",
            CameraState::Restarting { .. } => "restarting",
            CameraState::Failed { .. } => "failed",
        }
    }
}

/// Sent when no frame has come for a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Server time, `CLOCK_MONOTONIC` nanoseconds.
    pub mono_ns: u64,
    /// Newest sequence number published (0 if none).
    pub last_seq: u64,
}

/// Why the server closes a connection, sent just before it does: the subscriber was refused
/// (no place, wrong version, a protocol error) or its place was taken over by a newer
/// connection under the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The server's [`PROTOCOL_VERSION`], so a subscriber of another version can say which.
    pub protocol_version: u32,
    /// Why, for the subscriber's log and the dashboard; says what to do where there is
    /// something to do.
    pub reason: String,
}

/// Everything that crosses the announce socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Client to server, first.
    Subscribe(Subscribe),
    /// Server to client, first.
    Hello(Hello),
    /// A frame was committed.
    Frame(FrameAnnounce),
    /// The camera changed state.
    CameraState(CameraState),
    /// Nothing new for a second.
    Heartbeat(Heartbeat),
    /// Server to client, last: the connection is closed after it (since version 2).
    Refused(Refused),
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The peer closed between messages.
    #[error("connection closed")]
    Closed,
    /// The peer closed in the middle of a message.
    #[error("connection closed mid-message ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the message needed.
        want: usize,
    },
    /// The length prefix is over [`MAX_MESSAGE_LEN`].
    #[error("message length {0} over the {MAX_MESSAGE_LEN}-byte limit")]
    TooLarge(usize),
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes a message with its length prefix into `out` (cleared first; its allocation is kept).
///
/// # Errors
/// [`ProtoError::TooLarge`] if the body would exceed [`MAX_MESSAGE_LEN`] (no message type
/// reaches that except by a huge `source`, `reason`, path or name string); `out` is left empty,
/// so nothing half-encoded can be sent.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    out.clear();
    out.extend_from_slice(&[0; PREFIX_LEN]);
    if let Err(e) = rmp_serde::encode::write_named(out, message) {
        out.clear();
        return Err(ProtoError::Malformed(format!("cannot encode: {e}")));
    }
    let body = out.len() - PREFIX_LEN;
    if body > MAX_MESSAGE_LEN {
        out.clear();
        return Err(ProtoError::TooLarge(body));
    }
    out[..PREFIX_LEN].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(())
}

/// Writes one message.
///
/// # Errors
/// What the socket says; a message that cannot be encoded (see [`encode`]) is an
/// `InvalidInput` error and nothing is written.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    message: &Message,
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    encode(message, scratch)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    w.write_all(scratch).await
}

/// Reads length-prefixed messages from a stream into a fixed buffer.
///
/// Parses what it already has before reading more, and keeps partial input across calls, so
/// [`MessageReader::read`] is cancel-safe: dropping it mid-way loses nothing.
#[derive(Debug)]
pub struct MessageReader {
    buf: Box<[u8]>,
    limit: usize,
    filled: usize,
    consumed: usize,
}

impl Default for MessageReader {
    fn default() -> Self {
        MessageReader::new()
    }
}

impl MessageReader {
    /// A reader with room for one maximum-size message and its prefix.
    pub fn new() -> MessageReader {
        MessageReader::with_limit(MAX_MESSAGE_LEN)
    }

    /// A reader that refuses messages longer than `limit` (at most [`MAX_MESSAGE_LEN`]); its
    /// buffer is allocated once, at that size.
    pub fn with_limit(limit: usize) -> MessageReader {
        let limit = limit.min(MAX_MESSAGE_LEN);
        MessageReader {
            buf: vec![0; PREFIX_LEN + limit].into_boxed_slice(),
            limit,
            filled: 0,
            consumed: 0,
        }
    }

    /// Forgets any buffered input (for a new connection).
    pub fn reset(&mut self) {
        self.filled = 0;
        self.consumed = 0;
    }

    /// Parses a complete message from the buffered bytes, if there is one.
    ///
    /// # Errors
    /// [`ProtoError::TooLarge`] or [`ProtoError::Malformed`]: the connection must be closed.
    pub fn parse(&mut self) -> Result<Option<Message>, ProtoError> {
        let avail = &self.buf[self.consumed..self.filled];
        if avail.len() < PREFIX_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes(avail[..PREFIX_LEN].try_into().expect("4 bytes")) as usize;
        if len > self.limit {
            return Err(ProtoError::TooLarge(len));
        }
        if avail.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        let body = &avail[PREFIX_LEN..PREFIX_LEN + len];
        let message = rmp_serde::from_slice(body).map_err(|e| ProtoError::Malformed(e.to_string()));
        self.consumed += PREFIX_LEN + len;
        if self.consumed == self.filled {
            self.consumed = 0;
            self.filled = 0;
        }
        message.map(Some)
    }

    /// Reads the next message.
    ///
    /// # Errors
    /// [`ProtoError::Closed`] on a clean end between messages, [`ProtoError::Truncated`] on an end
    /// mid-message, else as [`MessageReader::parse`] or the socket's error.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Message, ProtoError> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(message);
            }
            if self.consumed > 0 {
                self.buf.copy_within(self.consumed..self.filled, 0);
                self.filled -= self.consumed;
                self.consumed = 0;
            }
            let n = r.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                if self.filled == 0 {
                    return Err(ProtoError::Closed);
                }
                let want = if self.filled >= PREFIX_LEN {
                    PREFIX_LEN
                        + u32::from_be_bytes(self.buf[..PREFIX_LEN].try_into().expect("4 bytes"))
                            as usize
                } else {
                    PREFIX_LEN
                };
                return Err(ProtoError::Truncated {
                    got: self.filled,
                    want,
                });
            }
            self.filled += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Message {
        Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            generation: 7,
            region_path: "/run/mecam/frames".into(),
            slot_count: 3,
            slot_capacity: 1 << 20,
            width: 640,
            height: 480,
            nominal_fps: 15.0,
            source: "synthetic".into(),
            state: CameraState::Restarting {
                reason: "child exited".into(),
            },
        })
    }

    #[tokio::test]
    async fn every_message_round_trips_even_split_byte_by_byte() {
        let messages = vec![
            Message::Subscribe(Subscribe {
                protocol_version: 1,
                name: "web".into(),
            }),
            hello(),
            Message::Frame(FrameAnnounce {
                seq: 9,
                slot: 0,
                len: 1234,
                mono_ns: 5,
                wall_ns: 6,
            }),
            Message::CameraState(CameraState::Stalled),
            Message::Heartbeat(Heartbeat {
                mono_ns: 1,
                last_seq: 9,
            }),
            Message::Refused(Refused {
                protocol_version: PROTOCOL_VERSION,
                reason: "the announce socket is full".into(),
            }),
        ];
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        for m in &messages {
            encode(m, &mut scratch).unwrap();
            wire.extend_from_slice(&scratch);
        }
        // A reader that hands out one byte at a time exercises every partial state.
        let mut r = tokio_test_reader(wire);
        let mut reader = MessageReader::new();
        for m in &messages {
            assert_eq!(&reader.read(&mut r).await.unwrap(), m);
        }
        assert!(matches!(reader.read(&mut r).await, Err(ProtoError::Closed)));
    }

    fn tokio_test_reader(bytes: Vec<u8>) -> impl AsyncRead + Unpin {
        struct OneByte(std::collections::VecDeque<u8>);
        impl AsyncRead for OneByte {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if let Some(b) = self.0.pop_front() {
                    buf.put_slice(&[b]);
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        OneByte(bytes.into())
    }

    #[tokio::test]
    async fn an_oversized_message_is_an_encode_error_never_a_panic_or_a_write() {
        let huge = Message::CameraState(CameraState::Failed {
            reason: "x".repeat(MAX_MESSAGE_LEN),
        });
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            encode(&huge, &mut out),
            Err(ProtoError::TooLarge(n)) if n > MAX_MESSAGE_LEN
        ));
        assert!(out.is_empty(), "nothing half-encoded is left to send");
        let mut sink: Vec<u8> = Vec::new();
        let err = write_message(&mut sink, &huge, &mut out).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(sink.is_empty(), "nothing written");
        // Just under the limit still fits.
        let fits = Message::CameraState(CameraState::Failed {
            reason: "x".repeat(MAX_MESSAGE_LEN - 64),
        });
        encode(&fits, &mut out).unwrap();
        assert!(out.len() <= PREFIX_LEN + MAX_MESSAGE_LEN);
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_reading_the_body() {
        let mut wire = ((MAX_MESSAGE_LEN + 1) as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&[0; 16]);
        let mut reader = MessageReader::new();
        assert!(matches!(
            reader.read(&mut &wire[..]).await,
            Err(ProtoError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn truncated_and_garbage_messages_are_distinct_errors() {
        let mut scratch = Vec::new();
        encode(&hello(), &mut scratch).unwrap();
        let cut = &scratch[..scratch.len() - 3];
        let mut reader = MessageReader::new();
        assert!(matches!(
            reader.read(&mut &cut[..]).await,
            Err(ProtoError::Truncated { .. })
        ));

        let garbage = [0, 0, 0, 5, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1];
        let mut reader = MessageReader::new();
        assert!(matches!(
            reader.read(&mut &garbage[..]).await,
            Err(ProtoError::Malformed(_))
        ));
    }
}
