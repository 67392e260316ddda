//! The argon2 work area of a password check, with `ipc::heap`'s counting allocator installed
//! in this test binary (its own: the counters are the process's, and the test harness
//! allocates while other tests of a binary finish).

#[global_allocator]
static HEAP: ipc::heap::Counting = ipc::heap::Counting;

/// A password check's argon2 work area (7 MiB) lives only while it hashes: afterwards the live
/// heap is back where it was and the resident memory of the process too (the area was mapped
/// on its own and given back), however many checks ran.
#[test]
fn a_password_check_keeps_no_memory() {
    assert!(ipc::heap::release_large_blocks() || !cfg!(target_env = "gnu"));
    let hash = web_svc::auth::hash_phc("correct horse").unwrap();
    // The first check warms up whatever a check allocates once (base64 engine, ...).
    assert!(web_svc::auth::verify(&hash, "correct horse"));
    let (heap, rss) = (ipc::heap::stats(), rss_kib());
    for k in 0..5 {
        assert!(web_svc::auth::verify(&hash, "correct horse"), "check {k}");
        assert!(!web_svc::auth::verify(&hash, "wrong"));
    }
    let after = ipc::heap::stats();
    assert_eq!(after.live, heap.live, "live heap bytes after 10 checks");
    assert!(
        after.peak >= heap.live + 7 * 1024 * 1024,
        "the work area was allocated while hashing: peak {}",
        after.peak
    );
    let grown = rss_kib().saturating_sub(rss);
    assert!(
        grown < 1024,
        "resident memory grew by {grown} KiB over 10 checks"
    );
}

/// Resident KiB of this process.
fn rss_kib() -> u64 {
    testkit::procfs::status_kib("self", "VmRSS")
}
