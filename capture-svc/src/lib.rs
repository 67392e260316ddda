//! The mecam `capture-svc` library: everything the binary runs.
//!
//! - [`splitter`]: whole JPEG frames out of a camera's byte stream.
//! - [`synthetic`]: the scripted synthetic scene (also used in-process by other crates' tests).
//! - [`source`]: which camera, how it is opened; [`http`]: the MJPEG-over-HTTP client.
//! - [`supervise`]: camera processes (process group, death signal, reaping, stderr tail).
//! - [`capture`]: the capture loop (frame check, publish, announce, restart with backoff).
//! - [`logs`]: the log lines a camera can trigger, each throttled ([`ipc::throttle`]).
//! - [`config`]: the `[capture]` section; [`service`]: [`service::run`].
#![forbid(unsafe_code)]

pub mod capture;
pub mod config;
pub mod http;
pub mod logs;
pub mod service;
pub mod source;
pub mod splitter;
pub mod supervise;
pub mod synthetic;
