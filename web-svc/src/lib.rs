//! The mecam `web-svc` library: everything the binary runs.
#![forbid(unsafe_code)]
