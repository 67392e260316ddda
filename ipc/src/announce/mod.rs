//! The announce socket: `capture-svc` tells subscribers which frame it committed, and what the
//! camera is doing. See [`proto`] for the messages, [`server`] and [`client`] for each side.

pub mod client;
pub mod proto;
pub mod server;

pub use client::{ClientConfig, ClientEvent, ClientStats, FrameClient};
pub use proto::{
    CameraState, FrameAnnounce, Heartbeat, Hello, MAX_MESSAGE_LEN, Message, PROTOCOL_VERSION,
};
pub use server::{AnnounceHandle, AnnounceServer, HEARTBEAT_PERIOD, ServerConfig, ServerStats};
