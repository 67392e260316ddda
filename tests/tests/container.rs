//! The systemd-nspawn harness itself, without mecam: the container boots a real systemd,
//! enforces `MemoryMax` (the cgroup remount works), and has a working journal. If these fail,
//! every whole-system test under systemd would prove nothing.

use mecam_system_tests::nspawn::{self, Container};

#[test]
fn container_enforces_memory_max_and_keeps_a_journal() {
    if !nspawn::available_or_skip("container_enforces_memory_max_and_keeps_a_journal", false) {
        return;
    }
    let ct = Container::boot(&Vec::new()).unwrap();

    // A 64 MiB allocation under MemoryMax=16M: the kernel must kill it.
    let out = ct
        .exec(&[
            "systemd-run",
            "--unit=hog",
            "--wait",
            "-p",
            "MemoryMax=16M",
            "/usr/bin/perl",
            "-e",
            "my $x = 'x' x (64*1024*1024); print length($x), qq(\\n);",
        ])
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the hog survived MemoryMax: {printed}"
    );
    assert_eq!(ct.prop("hog.service", "Result").unwrap(), "signal");
    assert_eq!(ct.prop("hog.service", "ExecMainStatus").unwrap(), "9");

    // The same allocation under a roomy limit succeeds: the kill above was the limit's doing.
    let out = ct
        .exec(&[
            "systemd-run",
            "--unit=nohog",
            "--wait",
            "-p",
            "MemoryMax=512M",
            "/usr/bin/perl",
            "-e",
            "my $x = 'x' x (64*1024*1024);",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // journald: a structured record goes in and comes back out as JSON with its fields.
    ct.run(&[
        "systemd-cat",
        "-t",
        "mecam-harness",
        "/bin/sh",
        "-c",
        "echo harness-journal-check",
    ])
    .unwrap();
    let recs = mecam_system_tests::poll::until(
        "the record in the journal",
        std::time::Duration::from_secs(10),
        || {
            let r = ct
                .journal_json(&["SYSLOG_IDENTIFIER=mecam-harness"])
                .map_err(|e| e.to_string())?;
            Ok((!r.is_empty()).then_some(r))
        },
    )
    .unwrap();
    assert_eq!(recs[0]["MESSAGE"], "harness-journal-check");
}
