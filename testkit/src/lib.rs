//! The one harness of mecam's tests and benches (a dev-dependency, never shipped):
//! - [`camera`]: the in-process test camera, a real frame region and announce server;
//! - [`service`]: a spawned service binary with its log, SIGTERM on request, SIGKILL on drop;
//! - [`jpeg`]: JPEG headers built byte by byte, for the header checks;
//! - [`mosquitto`]: a real MQTT broker (Debian's mosquitto) on a loopback port;
//! - [`notify`]: a fake `NOTIFY_SOCKET` the test reads;
//! - [`poll`]: waiting for a state with a deadline, never a guessed sleep;
//! - [`procfs`]: a process's memory figures.

pub mod camera;
pub mod jpeg;
pub mod mosquitto;
pub mod notify;
pub mod poll;
pub mod procfs;
pub mod service;
