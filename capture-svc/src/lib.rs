//! The mecam `capture-svc` library: everything the binary runs.
#![forbid(unsafe_code)]
