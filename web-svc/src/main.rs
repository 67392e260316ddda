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
use web_svc::WebConfig;
use web_svc::auth::{PasswordStore, SetupCode};

/// Counts live heap bytes, allocations and peak for the status and the tests (`ipc::heap`).
#[global_allocator]
static HEAP: ipc::heap::Counting = ipc::heap::Counting;

/// mecam web-svc: the logged-in live view, snapshots, events and API.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on ([web] listen; default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Event folders written by motion-svc (default: [motion] events_dir, the one key both
    /// services read).
    #[arg(long, value_name = "DIR")]
    events_dir: Option<PathBuf>,
    /// The overrides file the settings page writes (default: [motion] overrides_file,
    /// /var/lib/mecam/overrides.toml).
    #[arg(long, value_name = "PATH")]
    overrides_file: Option<PathBuf>,
    /// motion-svc's live preview socket (default: [motion] preview_socket,
    /// /run/mecam-motion/preview.sock).
    #[arg(long, value_name = "PATH")]
    preview_socket: Option<PathBuf>,
    /// Where the password hash and the setup code are kept (the units' StateDirectory=).
    #[arg(long, value_name = "DIR", default_value = web_svc::config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// With no admin password yet: make (or keep the unused) one-time setup code, print it
    /// with the URL to open, and exit. With a password: say so and exit.
    #[arg(long)]
    print_setup_code: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set the admin password from the first line of stdin.
    SetPassword {
        /// Where the password hash is kept.
        #[arg(long, value_name = "DIR", default_value = web_svc::config::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // Large buffers go back to the kernel when freed (see `ipc::heap`).
    ipc::heap::release_large_blocks();
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
    if cli.print_setup_code {
        return print_setup_code(&config);
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
    // The one-time setup code works only while no password is set.
    SetupCode::new(state_dir).remove()?;
    eprintln!("web-svc: admin password set in {}", state_dir.display());
    Ok(())
}

/// `web-svc --print-setup-code`: the URL and the one-time setup code, or that a password is
/// set.
fn print_setup_code(config: &WebConfig) -> anyhow::Result<()> {
    let dir = &config.state_dir;
    anyhow::ensure!(
        dir.is_dir(),
        "the state directory {} does not exist; start the service once (`systemctl start mecam-web`) or create it, owned by the service user",
        dir.display()
    );
    let url = config.browser_url(config.listen.port());
    if PasswordStore::new(dir).load()?.is_some() {
        println!(
            "The admin password is set: log in at {url} (change it with `sudo -u mecam web-svc set-password`)."
        );
        return Ok(());
    }
    let code = SetupCode::new(dir).ensure()?;
    println!("No admin password is set yet. Open the URL and enter the setup code to choose it:");
    println!("  URL:        {url}");
    println!("  setup code: {code}");
    Ok(())
}

/// The `[web]` section with the flags over it, validated.
fn config(cli: &Cli) -> anyhow::Result<WebConfig> {
    let mut config: WebConfig = service::load_section(&cli.common, "web")?;
    if let Some(l) = cli.listen {
        config.listen = l;
    }
    config.events_dir = match &cli.events_dir {
        Some(d) => d.clone(),
        None => {
            service::load_key(&cli.common, "motion", "events_dir")?.unwrap_or(config.events_dir)
        }
    };
    config.state_dir.clone_from(&cli.state_dir);
    motion_keys(cli, &mut config)?;
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// What web-svc reads of `[motion]` for the settings page: the overrides file, the preview
/// socket, and the tunable values the administrator set (motion-svc checks the rest of the
/// section; a bad tunable value there is logged and the defaults shown, motion-svc refuses it).
fn motion_keys(cli: &Cli, config: &mut WebConfig) -> anyhow::Result<()> {
    let motion: toml::Table = service::load_section(&cli.common, "motion")?;
    let path = |key: &str| -> anyhow::Result<Option<PathBuf>> {
        motion
            .get(key)
            .map(|v| {
                v.clone().try_into().map_err(|e: toml::de::Error| {
                    anyhow::anyhow!("[motion] {key}: {}", e.message())
                })
            })
            .transpose()
    };
    if let Some(p) = cli.overrides_file.clone().or(path("overrides_file")?) {
        config.overrides_file = p;
    }
    if let Some(p) = cli.preview_socket.clone().or(path("preview_socket")?) {
        config.preview_socket = p;
    }
    match tuning::Tunables::from_motion_section(&motion) {
        Ok(t) => config.motion_tunables = t,
        Err(e) => eprintln!(
            "web-svc: [motion] {e}; the settings page shows the defaults for it (motion-svc refuses the section until it is fixed)"
        ),
    }
    Ok(())
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
