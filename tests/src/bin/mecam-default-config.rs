//! `mecam-default-config`: prints the shipped `systemd/mecam.toml`, generated from the code
//! (every key of the three services, commented out, with its default and explanation).
//!
//! ```text
//! cargo build --workspace --bins && cargo run -q -p mecam-system-tests --bin mecam-default-config > systemd/mecam.toml
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    match mecam_system_tests::config_file::generate(&mecam_system_tests::bins::bin_dir()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mecam-default-config: {e:#}");
            ExitCode::FAILURE
        }
    }
}
