//! Region benchmarks (filled in below).
fn main() {}
