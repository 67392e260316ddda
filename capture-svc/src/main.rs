//! `capture-svc`: thin binary over the library.
#![forbid(unsafe_code)]

fn main() {}
