//! `motion-svc`: thin binary over the library. Parses flags, loads the `[motion]` section
//! (and `[mqtt]`),
//! applies flag overrides, validates, sets up logging, and runs the service until SIGTERM.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use ipc::service::{CommonArgs, init_tracing, load_section, render_section, shutdown_signal};
use motion_svc::config::{MotionConfig, Sensitivity};
use motion_svc::mqtt::MqttConfig;
use motion_svc::service::{RunConfig, run};

/// Counts live heap bytes, allocations and peak for the status and the tests (`ipc::heap`).
#[global_allocator]
static HEAP: ipc::heap::Counting = ipc::heap::Counting;

/// Threads for blocking work (file system calls, the recorder's shutdown): a fixed bound in
/// place of tokio's default of 512.
const MAX_BLOCKING_THREADS: usize = 2;

/// Watches the camera for motion, logs events to the journal and records clips.
#[derive(Debug, Parser)]
#[command(name = "motion-svc", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Where event folders are written [config: events_dir; default /var/lib/mecam/events].
    #[arg(long, value_name = "DIR")]
    events_dir: Option<PathBuf>,
    /// Frames analysed per second [config: analysis_fps].
    #[arg(long, value_name = "FPS")]
    analysis_fps: Option<f64>,
    /// Sensitivity preset: low, medium or high [config: sensitivity].
    #[arg(long, value_name = "PRESET")]
    sensitivity: Option<Sensitivity>,
    /// The smallest object to catch, percent of the frame height [config: min_object_pct].
    #[arg(long, value_name = "PCT")]
    min_object_pct: Option<f64>,
    /// Seconds motion must last before an event starts [config: min_duration_s].
    #[arg(long, value_name = "S")]
    min_duration_s: Option<f64>,
    /// Seconds without motion that end an event [config: quiet_gap_s].
    #[arg(long, value_name = "S")]
    quiet_gap_s: Option<f64>,
    /// Seconds of video kept before the motion [config: pre_capture_s].
    #[arg(long, value_name = "S")]
    pre_capture_s: Option<f64>,
    /// Seconds of video kept after the motion [config: post_capture_s].
    #[arg(long, value_name = "S")]
    post_capture_s: Option<f64>,
    /// Command run at event start and end [config: hook_command].
    #[arg(long, value_name = "CMD")]
    hook_command: Option<String>,
    /// URL that receives event JSON [config: webhook_url].
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// The overrides file written by the web UI [config: overrides_file; default
    /// /var/lib/mecam/overrides.toml].
    #[arg(long, value_name = "PATH")]
    overrides_file: Option<PathBuf>,
    /// The Unix socket of the live preview [config: preview_socket; default
    /// /run/mecam-motion/preview.sock].
    #[arg(long, value_name = "PATH")]
    preview_socket: Option<PathBuf>,
}

fn config(args: &Args) -> anyhow::Result<MotionConfig> {
    let mut c: MotionConfig = load_section(&args.common, "motion")?;
    if let Some(v) = &args.events_dir {
        c.events_dir = v.clone();
    }
    if let Some(v) = &args.overrides_file {
        c.overrides_file = v.clone();
    }
    if let Some(v) = &args.preview_socket {
        c.preview_socket = v.clone();
    }
    macro_rules! over {
        ($($f:ident),*) => { $( if let Some(v) = args.$f.clone() { c.$f = v.into(); } )* };
    }
    over!(
        analysis_fps,
        sensitivity,
        min_duration_s,
        quiet_gap_s,
        pre_capture_s,
        post_capture_s
    );
    if let Some(v) = args.min_object_pct {
        c.min_object_pct = Some(v);
    }
    if let Some(v) = &args.hook_command {
        c.hook_command = Some(v.clone());
    }
    if let Some(v) = &args.webhook_url {
        c.webhook_url = Some(v.clone());
    }
    Ok(c)
}

fn main() -> ExitCode {
    // Large buffers go back to the kernel when freed (see `ipc::heap`).
    ipc::heap::release_large_blocks();
    let args = Args::parse();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("motion-svc: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let config = config(&args)?;
    let settings = config.validate().context("bad configuration")?;
    let mqtt_config: MqttConfig = load_section(&args.common, "mqtt")?;
    let mqtt = mqtt_config.validate().context("bad configuration")?;
    if args.common.print_config {
        print!("{}", render_section("motion", &config)?);
        print!("\n{}", render_section("mqtt", &mqtt_config)?);
        return Ok(());
    }
    init_tracing("motion-svc", args.common.log_target);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let rc = RunConfig {
        socket_path: args.common.socket_path(),
        runtime_dir: args.common.runtime_dir.clone(),
        settings,
        mqtt,
        base: config,
    };
    rt.block_on(run(rc, shutdown_signal()))
}
