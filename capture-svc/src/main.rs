//! `capture-svc`: thin binary over the library. Parses flags, merges them over the `[capture]`
//! section, validates, and runs [`capture_svc::service::run`] until SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use capture_svc::config::{CaptureConfig, SourceKind};
use capture_svc::http::CameraUrl;
use clap::Parser;
use ipc::service::CommonArgs;

/// Counts live heap bytes, allocations and peak for the status and the tests (`ipc::heap`).
#[global_allocator]
static HEAP: ipc::heap::Counting = ipc::heap::Counting;

/// Threads for blocking work (the synthetic camera renders on one, one frame at a time). The
/// default of 512 lets a brief overlap between two renders leave an extra idle thread behind.
const MAX_BLOCKING_THREADS: usize = 1;

/// mecam capture service: the camera into the shared frame region.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Camera source (default: [capture] source, else auto).
    #[arg(long, value_enum)]
    source: Option<SourceKind>,
    /// Frame width.
    #[arg(long)]
    width: Option<u32>,
    /// Frame height.
    #[arg(long)]
    height: Option<u32>,
    /// Frames per second.
    #[arg(long)]
    fps: Option<u32>,
    /// JPEG quality asked of the camera (1..=100).
    #[arg(long)]
    quality: Option<u8>,
    /// Rotation for rpicam (0 or 180).
    #[arg(long)]
    rotation: Option<u32>,
    /// Mirror horizontally (rpicam).
    #[arg(long)]
    hflip: bool,
    /// Mirror vertically (rpicam).
    #[arg(long)]
    vflip: bool,
    /// rpicam-vid program (name or path).
    #[arg(long, value_name = "PROGRAM")]
    rpicam_program: Option<String>,
    /// V4L2 device (v4l2 source).
    #[arg(long, value_name = "PATH")]
    device: Option<PathBuf>,
    /// Stream URL (http source).
    #[arg(long)]
    url: Option<String>,
    /// Basic-auth user (http source); the password belongs in the config file.
    #[arg(long)]
    username: Option<String>,
    /// Command for the command source, split on whitespace (use the config list for
    /// arguments containing spaces).
    #[arg(long, value_name = "COMMAND LINE")]
    command: Option<String>,
    /// MJPEG file or folder of JPEGs (file source).
    #[arg(long, value_name = "PATH")]
    path: Option<PathBuf>,
    /// Replay the file source for ever.
    #[arg(long = "loop")]
    loop_file: bool,
    /// Scene script for the synthetic source (TOML, see capture-svc/README.md).
    #[arg(long, value_name = "FILE")]
    scene: Option<PathBuf>,
    /// Bytes per frame slot.
    #[arg(long)]
    slot_capacity: Option<usize>,
    /// No frame for this many ms: restart the source.
    #[arg(long)]
    stall_timeout_ms: Option<u64>,
    /// First restart delay in ms.
    #[arg(long)]
    backoff_min_ms: Option<u64>,
    /// Longest restart delay in ms.
    #[arg(long)]
    backoff_max_ms: Option<u64>,
    /// Where to look for rpicam-vid with no source configured (tests; default $PATH).
    #[arg(long, hide = true, value_name = "PATHS")]
    camera_search_path: Option<std::ffi::OsString>,
    /// Where the video device nodes are (tests; default /dev).
    #[arg(long, hide = true, value_name = "DIR")]
    camera_dev_dir: Option<PathBuf>,
    /// Where their sysfs entries are (tests; default /sys/class/video4linux).
    #[arg(long, hide = true, value_name = "DIR")]
    camera_sysfs_dir: Option<PathBuf>,
}

fn config(args: &Args) -> anyhow::Result<CaptureConfig> {
    let mut c: CaptureConfig = ipc::service::load_section(&args.common, "capture")?;
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = args.$f.clone() { c.$f = v.into(); } )* };
    }
    set!(
        width,
        height,
        fps,
        quality,
        rotation,
        slot_capacity,
        stall_timeout_ms,
        backoff_min_ms,
        backoff_max_ms
    );
    if let Some(s) = args.source {
        c.source = Some(s);
    }
    if let Some(p) = &args.rpicam_program {
        c.rpicam_program = p.clone();
    }
    if args.device.is_some() {
        c.device = args.device.clone();
    }
    if args.url.is_some() {
        c.url = args.url.clone();
    }
    if args.username.is_some() {
        c.username = args.username.clone();
    }
    if let Some(cmd) = &args.command {
        c.command = cmd.split_whitespace().map(str::to_owned).collect();
    }
    if args.path.is_some() {
        c.path = args.path.clone();
    }
    if args.scene.is_some() {
        c.scene = args.scene.clone();
    }
    c.hflip |= args.hflip;
    c.vflip |= args.vflip;
    c.loop_file |= args.loop_file;
    c.validate()?;
    Ok(c)
}

fn main() -> ExitCode {
    // Large buffers go back to the kernel when freed (see `ipc::heap`).
    ipc::heap::release_large_blocks();
    let mut argv = std::env::args_os();
    if argv.nth(1).as_deref() == Some(capture_svc::supervise::SHIM_ARG.as_ref()) {
        capture_svc::supervise::shim_main(argv.collect());
    }
    let args = Args::parse();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capture-svc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let cfg = config(&args)?;
    if args.common.print_config {
        let mut shown = cfg.clone();
        if shown.password.is_some() {
            // Printed configs end up in bug reports: never show the camera's password.
            shown.password = Some("(set, not shown)".into());
        }
        if let Some(url) = shown.url.as_deref().and_then(|u| CameraUrl::parse(u).ok()) {
            if url.password.is_some() {
                shown.url = Some(url.redacted());
            }
        }
        print!("{}", ipc::service::render_section("capture", &shown)?);
        return Ok(());
    }
    ipc::service::init_tracing("capture-svc", args.common.log_target);
    let mut probe = capture_svc::source::Probe::system();
    if let Some(p) = args.camera_search_path.clone() {
        probe.search_path = Some(p);
    }
    if let Some(d) = args.camera_dev_dir.clone() {
        probe.dev_dir = d;
    }
    if let Some(d) = args.camera_sysfs_dir.clone() {
        probe.sysfs_dir = d;
    }
    let paths = capture_svc::service::Paths {
        region: args.common.region_path(),
        socket: args.common.socket_path(),
        runtime_dir: args.common.runtime_dir.clone(),
        probe,
    };
    let shim = std::env::current_exe().ok();
    // One thread: camera processes are spawned from it, and their parent-death signal is tied
    // to the spawning thread (see capture_svc::supervise).
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(capture_svc::service::run(
        cfg,
        paths,
        shim,
        ipc::service::shutdown_signal(),
    ))
}
