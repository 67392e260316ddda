//! Helpers for whole-system tests: find the built binaries, give each test its own runtime
//! directory, start and stop the real services (directly, or under a real systemd booted in a
//! throwaway `systemd-nspawn` container), talk HTTP to `web-svc`, and read process figures
//! from `/proc`.
//!
//! The binaries are not built here: the test command runs `cargo build --workspace --bins`
//! first, and [`bins::bin_dir`] finds them in the target directory beside the test executable.

pub mod bins;
pub mod browser;
pub mod config_file;
pub mod day;
pub mod events;
pub mod faults;
pub mod http;
pub mod nspawn;
pub mod pi;
pub mod procfs;
pub mod scenes;
pub mod soak;
pub mod system;
pub mod trend;
pub mod unit_file;
pub mod viewer;

// The spawned-service harness and polling are testkit's, shared with the services' tests.
pub use testkit::{poll, service};

/// The admin user name `web-svc` knows.
pub const ADMIN_USER: &str = "admin";

/// `MESSAGE_ID` of the journal record `motion-svc` writes when a motion event starts.
pub const MSG_MOTION_START: &str = "8d6f2c1e4b7a4e0f9c3d5a1b2e6f7081";
/// `MESSAGE_ID` of the journal record `motion-svc` writes when a motion event ends.
pub const MSG_MOTION_END: &str = "3a9e5b7c1d2f4a6b8c0e1f2a3b4c5d6e";

/// The one-time setup code in what `web-svc --print-setup-code` (or `install.sh`) printed:
/// its `setup code: CODE` line. `None`: a password is set.
pub fn setup_code_in(printed: &str) -> Option<String> {
    printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("setup code:"))
        .map(|c| c.trim().to_owned())
}

/// A fresh random password of 20 alphanumeric characters.
pub fn random_password() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

/// Whether the tests run under CI (`CI` set, as `.ci/run` does): there a missing
/// prerequisite is a failure, never a skip.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Print a loud skip notice (so a skipped test is visible in the output) and return; under
/// CI ([`under_ci`]) panic instead, so a missing prerequisite fails the run rather than
/// passing silently (nextest hides the output of passing tests).
///
/// # Panics
/// Under CI.
pub fn skip(test: &str, why: &str) {
    assert!(
        !under_ci(),
        "{test}: {why} (CI is set: CI must provide this, a skip would pass silently)"
    );
    eprintln!("SKIPPED {test}: {why}");
}
