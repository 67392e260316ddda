//! Code the integration tests share.

// Each test binary uses a part of it.
#[allow(dead_code)]
pub mod footage;
#[allow(dead_code)]
pub mod jpeg;
