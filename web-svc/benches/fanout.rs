//! Fan-out bench (filled in later).
fn main() {}
