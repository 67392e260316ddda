//! The one harness of mecam's tests and benches (a dev-dependency, never shipped):
//! - [`camera`]: the in-process test camera, a real frame region and announce server;
//! - [`service`]: a spawned service binary with its log, SIGTERM on request, SIGKILL on drop;
//! - [`notify`]: a fake `NOTIFY_SOCKET` the test reads;
//! - [`poll`]: waiting for a state with a deadline, never a guessed sleep.

pub mod camera;
pub mod notify;
pub mod poll;
pub mod service;
