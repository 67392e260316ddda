//! The mecam `motion-svc` library: everything the binary runs.
//!
//! The pipeline per announced frame: [`select`] decides whether it is analysed, [`decode`]
//! turns it into a small luma image, [`detect`] compares it with the background, [`event`]
//! turns per-frame verdicts into events, and [`recorder`] writes clips, posters and metadata
//! on its own thread; [`life`] tells the journal and the hooks what the recorder reports.
//! [`preview`] shows web-svc what the detector saw, on request; the settings changed from
//! the web UI come from the `tuning` crate's overrides file (see [`service`]).
#![forbid(unsafe_code)]

pub mod analyzer;
pub mod config;
pub mod decode;
pub mod detect;
pub mod event;
pub mod geometry;
pub mod hooks;
pub mod journal;
pub mod life;
pub mod mqtt;
pub mod preview;
pub mod recorder;
pub mod ring;
pub mod select;
pub mod service;

/// JPEG encoding for the unit tests (shared with the integration tests, benches, examples).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../tests/support/jpeg.rs"]
mod test_jpeg;
