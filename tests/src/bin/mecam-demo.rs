//! `mecam-demo`: the whole system on the synthetic camera, in temporary directories, for a
//! first look. Builds nothing: it runs the `capture-svc`, `motion-svc` and `web-svc` binaries
//! found next to its own executable (so build them first, same profile):
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/mecam-demo [--port 8080]
//! ```
//!
//! It prints the URL and the admin login, and on Ctrl-C (SIGINT) or SIGTERM stops the three
//! services with SIGTERM and removes its directories. In production systemd supervises the
//! services (see `systemd/`); this runner only starts and stops them.

use std::process::ExitCode;

use anyhow::Context as _;
use mecam_system_tests::system::{LocalSystem, Options};
use nix::sys::signal::{SigSet, Signal};

const USAGE: &str = "usage: mecam-demo [--port PORT]   (web UI on 127.0.0.1:PORT, default 8080)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mecam-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let port = parse_port(std::env::args().skip(1))?;
    eprintln!("mecam-demo: starting capture-svc (synthetic camera), motion-svc, web-svc ...");
    let sys = LocalSystem::start(Options {
        port,
        ..Options::default()
    })
    .context("starting mecam (is the port free? are the binaries built?)")?;
    // Block the stop signals only now and wait for them synchronously: children inherit the
    // signal mask, and theirs must stay open. A Ctrl-C during start-up reaches the services
    // too (same process group), so nothing outlives the demo.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block().context("blocking SIGINT/SIGTERM")?;
    println!();
    println!("mecam is running on the synthetic camera.");
    println!("  open:   {}", sys.url());
    println!(
        "  login:  {} / {}",
        mecam_system_tests::ADMIN_USER,
        sys.password
    );
    println!(
        "  files:  {} (logs in logs/)",
        sys.runtime_dir()
            .parent()
            .unwrap_or(&sys.runtime_dir())
            .display()
    );
    println!("Press Ctrl-C to stop.");

    let sig = stop.wait().context("waiting for SIGINT/SIGTERM")?;
    eprintln!("mecam-demo: {sig}, stopping the services ...");
    sys.stop()?;
    eprintln!("mecam-demo: stopped, temporary directories removed.");
    Ok(())
}

fn parse_port(mut args: impl Iterator<Item = String>) -> anyhow::Result<u16> {
    let mut port = 8080;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => {
                let v = args.next().context(USAGE)?;
                port = v
                    .parse()
                    .with_context(|| format!("--port {v:?}: not a port number\n{USAGE}"))?;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    anyhow::ensure!(
        port != 0,
        "--port 0: pick a fixed port so you know where to point the browser"
    );
    Ok(port)
}
