//! `mecam-soak`: run the whole system and exit 1 if any service's memory grows.
//!
//! `--day` (or `--day-fraction F`): the compressed day ([`mecam_system_tests::day`]): a
//! day's frames, viewers, events and restarts through the real binaries as fast as the
//! scene's rate (`--fps`, default 1250) allows, memory judged against the work done. The
//! README's table; `--day-fraction 0.1` is what CI runs.
//!
//! `--minutes N` / `--hours N`: wall-clock time at a raised frame rate with viewers streaming,
//! resident memory sampled, the slope printed: `--hours 24 --interval 60` on a real Pi is a
//! day in real time. With `--faults` (root, `systemd-container`), then do every fault of the
//! fault tests to the same binaries under a real systemd in throwaway containers, and time
//! them.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/mecam-soak --day                           # the README's table
//! target/release/mecam-soak --hours 24 --interval 60 > soak.log
//! sudo target/release/mecam-soak --minutes 3.5 --faults
//! ```
//! The last lines are a Markdown table for the README.
//!
//! `mecam-soak emit --fps N --count-dir DIR` is the day's camera: capture-svc runs it as its
//! `command` source (see [`mecam_system_tests::day::emit`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use mecam_system_tests::day::{self, DayOptions};
use mecam_system_tests::soak::{self, SoakOptions};
use mecam_system_tests::{faults, nspawn};

const USAGE: &str = "usage: mecam-soak --day | --day-fraction F [--fps N] [--interval SECONDS]\n       mecam-soak [--minutes N | --hours N] [--fps N] [--interval SECONDS] [--viewers N] [--faults]\n       mecam-soak emit --fps N --count-dir DIR";

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
    let mut day_opts: Option<DayOptions> = None;
    let mut fps: Option<u32> = None;
    let mut interval: Option<Duration> = None;
    let mut count_dir: Option<std::path::PathBuf> = None;
    let mut with_faults = false;
    let mut args = std::env::args().skip(1).peekable();
    let emitting = args.next_if_eq("emit").is_some();
    while let Some(a) = args.next() {
        if a == "--faults" {
            with_faults = true;
            continue;
        }
        if a == "--day" {
            day_opts.get_or_insert_with(DayOptions::default);
            continue;
        }
        if a == "--count-dir" {
            count_dir = args.next().map(Into::into);
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
            "--day-fraction" => {
                let fraction = num("--day-fraction")?;
                anyhow::ensure!(
                    fraction <= 10.0,
                    "--day-fraction {fraction}: at most 10 days"
                );
                day_opts.get_or_insert_with(DayOptions::default).fraction = fraction;
            }
            "--fps" => fps = Some(num("--fps")? as u32),
            "--interval" => interval = Some(Duration::from_secs_f64(num("--interval")?)),
            "--viewers" => opts.viewers = num("--viewers")? as usize,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(true);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if emitting {
        let dir = count_dir.with_context(|| format!("emit needs --count-dir\n{USAGE}"))?;
        let fps = fps.with_context(|| format!("emit needs --fps\n{USAGE}"))?;
        let count = dir.join(format!("{}.count", std::process::id()));
        day::emit(fps, &count, std::io::stdout().lock())?;
        return Ok(true);
    }
    if let Some(mut d) = day_opts {
        anyhow::ensure!(
            !with_faults,
            "--faults goes with --minutes/--hours, not --day"
        );
        d.fps = fps.unwrap_or(d.fps);
        d.interval = interval.unwrap_or(d.interval);
        let targets = d.targets();
        println!(
            "a compressed day x {}: {} frames at {} fps (about {:.0} s), {} viewer connects, {} events",
            d.fraction,
            targets.frames,
            d.fps,
            d.planned().as_secs_f64(),
            targets.viewers,
            targets.events
        );
        let report = day::run(&d, |line| println!("{line}"))?;
        println!("{}", report.table());
        let failures = report.failures(targets);
        if failures.is_empty() {
            println!("memory flat for every service against the work done");
            return Ok(true);
        }
        println!("FAILED:\n{}", failures.join("\n"));
        return Ok(false);
    }
    opts.fps = fps.unwrap_or(opts.fps);
    opts.interval = interval.unwrap_or(opts.interval);
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
