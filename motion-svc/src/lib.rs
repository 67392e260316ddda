//! The mecam `motion-svc` library: everything the binary runs.
#![forbid(unsafe_code)]
