//! `web-svc`: thin binary over the library: flags, config, logging, bind, run.
#![forbid(unsafe_code)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ipc::service::{self, CommonArgs, Notifier};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use web_svc::{WebConfig, auth::PasswordStore};

/// mecam web-svc: the logged-in live view, snapshots, events and API.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on ([web] listen; default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Event folders written by motion-svc ([web] events_dir).
    #[arg(long, value_name = "DIR")]
    events_dir: Option<PathBuf>,
    /// Where the password hash is kept ([web] state_dir).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set the admin password from the first line of stdin.
    SetPassword {
        /// Where the password hash is kept.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/mecam/web")]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web-svc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::SetPassword { state_dir }) = &cli.command {
        return set_password(state_dir);
    }
    let config = config(&cli)?;
    if cli.common.print_config {
        print!("{}", service::render_section("web", &config)?);
        return Ok(());
    }
    service::init_tracing("web-svc", cli.common.log_target);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Everything that can fail at start comes before READY: the config (above), the state
    // directory, the password file, the TLS certificate and key, and the bind.
    let startup = web_svc::Startup::new(config, cli.common.socket_path())?;
    let listen = startup.state().0.config.listen;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {listen}; is another server using it? set [web] listen or --listen"
                )
            })?;
        let addr = listener.local_addr()?;
        let notifier = Notifier;
        let stop_pings = CancellationToken::new();
        let pinger = TaskTracker::new();
        if let Some(period) = notifier.watchdog_interval() {
            let hub = startup.state().0.hub.clone();
            pinger.spawn(ping_watchdog(period, hub, stop_pings.clone()));
        }
        pinger.close();
        // Polled once now so its SIGTERM and SIGINT handlers are in place before READY: a
        // stop that comes right after READY is a clean shutdown, not a kill.
        let mut shutdown = Box::pin(service::shutdown_signal());
        let _ = futures_util::FutureExt::now_or_never(&mut shutdown);
        tracing::info!(%addr, "web-svc ready");
        notifier.ready();
        web_svc::run(listener, startup, shutdown).await;
        stop_pings.cancel();
        pinger.wait().await;
        notifier.stopping();
        Ok(())
    })
}

/// `web-svc set-password`: the first line of stdin becomes the admin password.
fn set_password(state_dir: &Path) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    PasswordStore::new(state_dir).set(password)?;
    eprintln!("web-svc: admin password set in {}", state_dir.display());
    Ok(())
}

/// The `[web]` section with the flags over it, validated.
fn config(cli: &Cli) -> anyhow::Result<WebConfig> {
    let mut config: WebConfig = service::load_section(&cli.common, "web")?;
    if let Some(l) = cli.listen {
        config.listen = l;
    }
    if let Some(d) = &cli.events_dir {
        config.events_dir = d.clone();
    }
    if let Some(d) = &cli.state_dir {
        config.state_dir = d.clone();
    }
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// Pings the systemd watchdog every `period`, only while the fan-out task turns (it wakes at
/// least every 250 ms) and this runtime schedules tasks; a wedged service is restarted by
/// systemd.
async fn ping_watchdog(
    period: std::time::Duration,
    hub: std::sync::Arc<web_svc::fanout::Hub>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            () = stop.cancelled() => return,
        }
        let alive = hub
            .metrics
            .feeder_alive_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = service::monotonic_ns() / 1_000_000;
        if now.saturating_sub(alive) < 5_000 {
            Notifier.watchdog();
        } else {
            tracing::warn!("the frame fan-out is not turning; not pinging the watchdog");
        }
    }
}
