//! `mecam-soak`: run the whole system at a raised frame rate with viewers streaming, sample
//! each service's resident memory, print the slope, and exit 1 if any service's memory rises.
//! With `--faults` (root, `systemd-container`), then do every fault of the fault tests to
//! the same binaries under a real systemd in throwaway containers, and time them.
//!
//! ```text
//! cargo build --release --workspace --bins
//! sudo target/release/mecam-soak --minutes 3.5 --faults   # the README's table
//! target/release/mecam-soak --hours 24 --interval 60 > soak.log
//! ```
//! The last lines are a Markdown table for the README: per service, resident memory at the
//! start and end, the slopes, CPU per frame and (with `--faults`) the fault figures.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use mecam_system_tests::soak::{self, SoakOptions};
use mecam_system_tests::{faults, nspawn};

const USAGE: &str = "usage: mecam-soak [--minutes N | --hours N] [--fps N] [--interval SECONDS] [--viewers N] [--faults]";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mecam-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let mut opts = SoakOptions::default();
    let mut with_faults = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--faults" {
            with_faults = true;
            continue;
        }
        let mut num = |name: &str| -> anyhow::Result<f64> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))?;
            v.parse::<f64>()
                .ok()
                .filter(|n| *n > 0.0)
                .with_context(|| format!("{name} {v:?}: not a positive number"))
        };
        match a.as_str() {
            "--minutes" => opts.duration = Duration::from_secs_f64(num("--minutes")? * 60.0),
            "--hours" => {
                opts.duration = Duration::from_secs_f64(num("--hours")? * 3600.0);
                opts.warmup = Duration::from_secs(600);
            }
            "--fps" => opts.fps = num("--fps")? as u32,
            "--interval" => opts.interval = Duration::from_secs_f64(num("--interval")?),
            "--viewers" => opts.viewers = num("--viewers")? as usize,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(true);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if with_faults {
        // Checked before the soak, so a machine that cannot run them fails at once.
        if let Some(why) = nspawn::unavailable(true) {
            anyhow::bail!("--faults: {why}");
        }
    }
    let report = soak::run(&opts, |line| println!("{line}"))?;
    let figures = if with_faults {
        faults::measure_all(|f| println!("{} {}: {}", f.unit, f.fault, f.figure))?
    } else {
        Vec::new()
    };
    println!("{}", report.table(&figures));
    let rising = report.rising();
    if rising.is_empty() {
        println!("memory flat for every service");
        Ok(true)
    } else {
        println!("memory RISING for: {}", rising.join(", "));
        Ok(false)
    }
}
