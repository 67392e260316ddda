//! The CI soak: a few minutes at a raised frame rate with viewers; fails if any service's
//! resident memory rises (by more than the tolerance within the soak, or at a slope that in a
//! day would take more than `trend::LEAK_HEADROOM_FRACTION` of the room left under its unit's
//! `MemoryMax`), and prints the slope. `mecam-soak --hours 24` is the long form.

use mecam_system_tests::bins;
use mecam_system_tests::soak::{self, SoakOptions};

#[test]
fn soak_memory_stays_flat() {
    if !bins::all_present_or_skip("soak") {
        return;
    }
    let opts = SoakOptions::default();
    let report = soak::run(&opts, |line| println!("{line}")).unwrap();
    println!("{}", report.table(&[]));
    assert!(
        report.viewer_frames > 0,
        "viewers received nothing: the soak exercised nothing"
    );
    assert!(
        report.rising().is_empty(),
        "resident memory rising for {:?}\n{}",
        report.rising(),
        report.table(&[])
    );
}
