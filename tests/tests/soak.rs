//! The CI soak: a tenth of the compressed day ([`mecam_system_tests::day`]): 259,200 frames,
//! 1,000 viewer connects, 144 motion events with clips and the storage limit deleting old
//! ones, capture-svc restarted 5 times and the others twice each, through the real binaries in
//! about four minutes. Fails if a service's resident memory or live heap grows against the
//! work done after its restarts, if a SIGTERM'd service exits uncleanly, or if the work was
//! not done. `mecam-soak --day` is the whole day (the README's table), `mecam-soak --hours 24`
//! a day in real time on a Pi.

use std::time::Duration;

use mecam_system_tests::bins;
use mecam_system_tests::day::{self, DayOptions};

#[test]
fn a_tenth_of_a_day_leaves_memory_flat() {
    if !bins::all_present_or_skip("soak") {
        return;
    }
    let opts = DayOptions {
        fraction: 0.1,
        interval: Duration::from_secs(3),
        ..DayOptions::default()
    };
    let targets = opts.targets();
    let report = day::run(&opts, |line| println!("{line}")).unwrap();
    println!("{}", report.table());
    assert!(
        report.services.iter().all(|s| s.heap.is_some()),
        "every service's live heap was read: {:?}",
        report.services
    );
    let failures = report.failures(targets);
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        report.table()
    );
}
