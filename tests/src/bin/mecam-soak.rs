//! `mecam-soak`: run the whole system at a raised frame rate with viewers streaming, sample
//! each service's resident memory, print the slope, and exit 1 if any service's memory rises.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/mecam-soak --minutes 5
//! target/release/mecam-soak --hours 24 --interval 60 > soak.log
//! ```
//! The last lines are a Markdown table for the README.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use mecam_system_tests::soak::{self, SoakOptions};

const USAGE: &str =
    "usage: mecam-soak [--minutes N | --hours N] [--fps N] [--interval SECONDS] [--viewers N]";

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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
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
    let report = soak::run(&opts, |line| println!("{line}"))?;
    println!("{}", report.table());
    let rising = report.rising();
    if rising.is_empty() {
        println!("memory flat for every service");
        Ok(true)
    } else {
        println!("memory RISING for: {}", rising.join(", "));
        Ok(false)
    }
}
