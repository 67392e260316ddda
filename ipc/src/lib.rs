//! `ipc`: what the mecam services share.
//!
//! - [`region`]: the fixed shared-memory frame region (one writer, read-only readers).
//! - [`announce`]: the Unix socket on which `capture-svc` announces committed frames.
//! - [`service`]: the plumbing every service has in common: config file, logging, sd_notify,
//!   shutdown signals.
//!
//! All unsafe code of the project is in `region::raw`.

pub mod announce;
pub mod region;
pub mod service;

/// The region file's name inside the runtime directory.
pub const REGION_FILE: &str = "frames";
/// The announce socket's name inside the runtime directory.
pub const SOCKET_FILE: &str = "capture.sock";
