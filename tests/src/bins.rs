//! Where the built mecam binaries are.
//!
//! Tests and the demo never build anything: they look for `capture-svc`, `motion-svc` and
//! `web-svc` in the cargo target directory (`target/debug` for tests, whatever profile
//! directory holds the demo binary), or in `$MECAM_BIN_DIR` when set.

use std::path::{Path, PathBuf};

/// The three service binaries.
pub const SERVICES: [&str; 3] = ["capture-svc", "motion-svc", "web-svc"];

/// The directory holding the service binaries.
///
/// `$MECAM_BIN_DIR` if set; otherwise the directory of the running executable, or its parent
/// when the executable lives in `deps/` (a test binary).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MECAM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe: /proc not mounted?");
    let mut dir = exe
        .parent()
        .expect("executable has a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Path of one service binary, or an error telling how to build it.
///
/// # Errors
/// The binary is not in [`bin_dir`].
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        anyhow::bail!(
            "{} not found: build the services first with `cargo build --workspace --bins` \
             (same profile as this program), or set MECAM_BIN_DIR",
            path.display()
        )
    }
}

/// True when all three service binaries are present.
pub fn all_present() -> bool {
    SERVICES.iter().all(|b| bin(b).is_ok())
}

/// `true` when all three service binaries are present; otherwise prints a loud skip line for
/// `test` and returns `false` (under CI it fails instead: see [`crate::skip`]).
pub fn all_present_or_skip(test: &str) -> bool {
    if all_present() {
        return true;
    }
    crate::skip(
        test,
        "service binaries not built (cargo build --workspace --bins)",
    );
    false
}

/// The repository's `systemd/` directory (unit files, install script).
pub fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}
