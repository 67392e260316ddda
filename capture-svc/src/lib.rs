//! The mecam `capture-svc` library: everything the binary runs.
//!
//! - [`splitter`]: whole JPEG frames out of a camera's byte stream.
//! - [`synthetic`]: the scripted synthetic scene (also used in-process by other crates' tests).
#![forbid(unsafe_code)]

pub mod splitter;
pub mod synthetic;
