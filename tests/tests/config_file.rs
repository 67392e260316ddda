//! The shipped `systemd/mecam.toml` is what the code generates (so the two cannot drift
//! apart), and every default it shows is one the services accept as it is.

use mecam_system_tests::config_file::{self, REGENERATE};
use mecam_system_tests::{bins, under_ci};

fn built() -> bool {
    if bins::all_present() {
        return true;
    }
    assert!(
        !under_ci(),
        "service binaries not built: CI must run `cargo build --workspace --bins` first"
    );
    eprintln!("note: service binaries not built; nothing to generate from");
    false
}

#[test]
fn the_shipped_mecam_toml_is_what_the_code_generates() {
    if !built() {
        return;
    }
    let generated = config_file::generate(&bins::bin_dir()).unwrap();
    let path = bins::systemd_dir().join("mecam.toml");
    let shipped = std::fs::read_to_string(&path).unwrap();
    if shipped != generated {
        let first = shipped
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(shipped.lines().count().min(generated.lines().count()));
        panic!(
            "{} differs from what the code generates (first at line {}: shipped {:?}, generated {:?}); regenerate it with\n  {REGENERATE}",
            path.display(),
            first + 1,
            shipped.lines().nth(first),
            generated.lines().nth(first),
        );
    }
}

#[test]
fn every_default_shown_is_accepted_and_is_the_default() {
    if !built() {
        return;
    }
    let generated = config_file::generate(&bins::bin_dir()).unwrap();
    // Uncomment every key that shows a value: the file means the same as the empty one.
    let uncommented: String = generated
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(kv) if !kv.starts_with(' ') && !kv.ends_with(" =") && kv.contains(" = ") => kv,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("mecam.toml");
    std::fs::write(&file, &uncommented).unwrap();
    let mut shown = 0;
    for service in bins::SERVICES {
        let defaults = config_file::defaults(&bins::bin_dir(), service).unwrap();
        let read = config_file::print_config(&bins::bin_dir(), service, &file).unwrap();
        assert_eq!(
            read, defaults,
            "{service} reads the shown defaults as its own"
        );
        shown += defaults.len();
    }
    let keys = generated
        .lines()
        .filter(|l| l.starts_with("#") && l.contains(" ="))
        .count();
    assert!(
        shown > 50 && keys >= shown,
        "{shown} defaults, {keys} keys shown"
    );
}
