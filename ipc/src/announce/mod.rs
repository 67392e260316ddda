//! The announce socket: `capture-svc` tells subscribers which frame it committed, and what the
//! camera is doing. See [`proto`] for the messages, [`server`] and [`client`] for each side.

pub mod client;
pub mod proto;
pub mod server;

pub use client::{Announcement, ClientConfig, ClientEvent, ClientStats, FrameClient};
pub use proto::{
    CameraState, FrameAnnounce, Heartbeat, Hello, MAX_MESSAGE_LEN, Message, PROTOCOL_VERSION,
    Refused,
};
pub use server::{
    AnnounceHandle, AnnounceServer, HEARTBEAT_PERIOD, SOCKET_MODE, ServerConfig, ServerStats,
};

/// The name motion-svc subscribes under; it has a reserved place on the server by default.
pub const MOTION_SVC: &str = "motion-svc";
/// The name web-svc subscribes under; it has a reserved place on the server by default.
pub const WEB_SVC: &str = "web-svc";
