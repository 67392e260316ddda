//! `tuning`: the settings a user may change from the web UI (or MQTT) while mecam runs, and
//! the one file they go to.
//!
//! - [`bounds`]: each tunable number's key, range and default, and the error naming a key.
//! - [`polygon`]: frame-relative polygons (masks and zones) and their validation.
//! - [`overrides`]: the overrides file's schema ([`Overrides`]), its validation, and the
//!   values in effect ([`Tunables`]: defaults, then the administrator's `[motion]`, then the
//!   overrides).
//! - [`store`]: the atomic, size-bounded writer and the reader that refuses a broken file,
//!   and [`Watcher`], which notices a change.
//!
//! motion-svc validates its `[motion]` section with the same bounds and polygon checks, so a
//! value the settings page accepts is one motion-svc accepts. The administrator's file
//! (`/etc/mecam/mecam.toml`) is never written: changes go to the overrides file in the state
//! directory ([`DEFAULT_OVERRIDES_FILE`]).
#![forbid(unsafe_code)]

pub mod bounds;
pub mod overrides;
pub mod polygon;
pub mod store;

pub use bounds::{Bound, KeyError, Sensitivity};
pub use overrides::{Overrides, Tunables};
pub use polygon::{MAX_POINTS, MAX_POLYGONS, Polygon, PolygonError};
pub use store::{MAX_FILE_BYTES, StoreError, Watcher};

/// Where the overrides file is unless `[motion] overrides_file` (or a service's
/// `--overrides-file`) says otherwise: the units' `StateDirectory=mecam`, which both
/// motion-svc and web-svc (user `mecam`) may write.
pub const DEFAULT_OVERRIDES_FILE: &str = "/var/lib/mecam/overrides.toml";

/// Where motion-svc serves the live preview of detection unless `[motion] preview_socket`
/// (or `--preview-socket` of motion-svc and web-svc) says otherwise: motion-svc's own runtime
/// directory (the unit's `RuntimeDirectory=mecam-motion`), which web-svc (same user) connects
/// to.
pub const DEFAULT_PREVIEW_SOCKET: &str = "/run/mecam-motion/preview.sock";
