//! `ipc`: what the mecam services share.
//!
//! - [`region`]: the fixed shared-memory frame region (one writer, read-only readers).
//! - [`announce`]: the Unix socket on which `capture-svc` announces committed frames.
//! - [`service`]: the plumbing every service has in common: config file, logging, sd_notify,
//!   shutdown signals.
//! - [`jpeg`]: what a frame costs to decode, checked from its headers before anyone decodes it.
//! - [`throttle`]: log lines an outsider can trigger, one per interval with a count.
//! - [`heap`]: the counting global allocator every service installs.
//! - [`status`]: the status record each service publishes and web-svc reads.
//!
//! All unsafe code of the project is in `region::raw` and in `heap`'s `GlobalAlloc` impl.

pub mod announce;
pub mod heap;
pub mod jpeg;
pub mod region;
pub mod service;
pub mod status;
pub mod throttle;

/// The region file's name inside the runtime directory.
pub const REGION_FILE: &str = "frames";
/// The announce socket's name inside the runtime directory.
pub const SOCKET_FILE: &str = "capture.sock";
