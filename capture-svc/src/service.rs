//! The service: creates the region and the announce socket, tells systemd it is ready, runs
//! the capture loop, pings the watchdog only while frames flow (or the source is legitimately
//! restarting or being looked for), reports the fps and the drop and refusal counters as
//! STATUS, and on shutdown stops the camera process and removes the socket and the region.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipc::announce::{AnnounceServer, CameraState, Hello, PROTOCOL_VERSION, ServerConfig};
use ipc::region::{RegionWriter, SLOT_COUNT};
use ipc::service::Notifier;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::{CaptureStats, Publisher, attempt_bound, run_capture};
use crate::config::CaptureConfig;
use crate::source::{Probe, SourceSpec};

/// How often STATUS is updated and drop counters are checked.
pub const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// Where the service puts its files, and where it looks for a camera when none is configured.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The frame region file.
    pub region: PathBuf,
    /// The announce socket.
    pub socket: PathBuf,
    /// The runtime directory, whose `status/` holds the status record ([`ipc::status`]).
    pub runtime_dir: PathBuf,
    /// Where to look for a camera ([`Probe::system`] but in tests).
    pub probe: Probe,
}

/// Runs capture-svc until `shutdown` completes.
///
/// `shim` is the `capture-svc` binary used to tie camera processes to this process's life
/// (see [`crate::supervise`]); `None` runs them without the death signal.
///
/// # Errors
/// The region or socket cannot be created, or the scene script cannot be read.
pub async fn run(
    cfg: CaptureConfig,
    paths: Paths,
    shim: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let spec = SourceSpec::resolve_in(&cfg, &paths.probe)?;
    let label = spec.label();
    create_runtime_dirs(&paths)?;
    let (server, region) = open_outputs(&cfg, &paths, &label)?;
    let notifier = Notifier;
    notifier.ready();
    tracing::info!(
        source = %label,
        region = %paths.region.display(),
        socket = %paths.socket.display(),
        "capture-svc ready"
    );

    let stats = Arc::new(Mutex::new(CaptureStats::default()));
    let mut publisher = Publisher::new(
        region,
        server.handle(),
        stats.clone(),
        (cfg.width, cfg.height),
        label,
    );
    // One token stops every part; the tracker holds every task spawned, so none outlives the
    // service.
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let server_task = server.run(stop.clone().cancelled_owned());
    // An HTTP camera's multipart headers between frames reach the splitter as garbage bytes:
    // normal there, a fault from any other source.
    let garbage_expected = matches!(spec, SourceSpec::Http { .. });
    let status_task = status_loop(
        stats.clone(),
        &paths.runtime_dir,
        cfg.stall_timeout(),
        attempt_bound(&cfg),
        garbage_expected,
        stop.clone(),
    );
    // The capture loop is a task of its own: a camera's read wakes it alone. Inside the
    // `join!` below, every frame's wake would poll the signal handler, the announce server and
    // the status loop beside it. (The runtime has one thread: the task runs on the thread that
    // spawns the camera processes, as `main` requires.)
    let capture = tasks.spawn({
        let cfg = cfg.clone();
        let stop = stop.clone();
        async move {
            run_capture(spec, &cfg, shim, &mut publisher, stop).await;
            publisher
        }
    });
    tasks.close();
    let capture = async {
        match capture.await {
            Ok(publisher) => publisher,
            // A panic in the capture loop ends the service as it did before it was a task.
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("the capture task did not finish: {e}"),
            },
        }
    };
    let signal = async {
        shutdown.await;
        stop.cancel();
    };
    let ((), (), (), publisher) = tokio::join!(signal, server_task, status_task, capture);
    tasks.wait().await;
    notifier.stopping();
    remove_region(publisher)?;
    log_stopped(&stats.lock().expect("stats lock"));
    Ok(())
}

/// Removes the frame region the publisher wrote.
fn remove_region(publisher: Publisher) -> anyhow::Result<()> {
    let region = publisher.into_region();
    let region_path = region.path().to_owned();
    region
        .remove()
        .with_context(|| format!("cannot remove {}", region_path.display()))
}

/// The last line: what the service did in its life.
fn log_stopped(s: &CaptureStats) {
    tracing::info!(
        frames = s.published,
        restarts = s.restarts,
        refused = s.refused.total(),
        "capture-svc stopped after {} frames ({} dropped, {}): camera process stopped, socket and region removed",
        s.published,
        s.split.dropped() + s.over_capacity,
        s.refused.summary()
    );
}

/// Creates the directories of the region and the socket (warning when not on tmpfs).
fn create_runtime_dirs(paths: &Paths) -> anyhow::Result<()> {
    let mut dirs: Vec<&std::path::Path> = [&paths.region, &paths.socket]
        .iter()
        .filter_map(|p| p.parent())
        .collect();
    dirs.dedup();
    for dir in dirs {
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create runtime directory {}", dir.display()))?;
            ipc::service::warn_if_not_tmpfs(dir);
        }
    }
    Ok(())
}

/// Binds the announce socket and creates the frame region, the hello naming the region.
fn open_outputs(
    cfg: &CaptureConfig,
    paths: &Paths,
    label: &str,
) -> anyhow::Result<(AnnounceServer, RegionWriter)> {
    // The socket first: `bind` refuses a socket a running capture-svc answers on, so a second
    // instance stops here, before it could touch the live instance's region. The region's own
    // lock (see `RegionWriter::create`) catches two instances starting at the same moment.
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        generation: 0,
        region_path: paths.region.clone(),
        slot_count: SLOT_COUNT as u32,
        slot_capacity: cfg.slot_capacity as u64,
        width: cfg.width,
        height: cfg.height,
        nominal_fps: cfg.fps as f32,
        source: label.to_owned(),
        state: CameraState::Starting,
    };
    let server = AnnounceServer::bind(
        &paths.socket,
        hello,
        ServerConfig {
            max_subscribers: cfg.max_subscribers,
            idle_timeout: Duration::from_millis(cfg.subscriber_idle_timeout_ms),
            // Reserved places for motion-svc and web-svc, outside `max_subscribers`.
            ..ServerConfig::default()
        },
    )
    .with_context(|| format!("cannot bind the announce socket {}", paths.socket.display()))?;
    let region = match RegionWriter::create(&paths.region, cfg.slot_capacity) {
        Ok(r) => r,
        Err(e) => {
            // Nobody was served yet: the socket just bound is ours to remove.
            let _ = std::fs::remove_file(&paths.socket);
            return Err(e).with_context(|| {
                format!("cannot create the frame region {}", paths.region.display())
            });
        }
    };
    // Subscribers are served only once `run` starts below, so none sees generation 0.
    server.handle().update_hello(|h| {
        h.generation = region.generation();
        h.slot_capacity = region.slot_capacity() as u64;
    });
    Ok((server, region))
}

/// STATUS every [`STATUS_PERIOD`] (state, fps, frames, restarts, frames dropped and frames
/// refused by reason), watchdog pings while frames flow or the source restarts (including a
/// failed source whose retry is pending, see [`CaptureStats::restarting`]), and every tick the
/// summaries of what the outsider-log throttles held back ([`crate::logs::flush`]).
/// `garbage_expected`: HTTP multipart framing, whose garbage is logged at debug level.
async fn status_loop(
    stats: Arc<Mutex<CaptureStats>>,
    runtime_dir: &std::path::Path,
    stall: Duration,
    attempt: Duration,
    garbage_expected: bool,
    stop: CancellationToken,
) {
    let notifier = Notifier;
    let wd = notifier.watchdog_interval();
    let tick = wd.unwrap_or(STATUS_PERIOD).min(Duration::from_secs(1));
    let mut last_status = Instant::now();
    let mut last_count = 0u64;
    let mut record = StatusRecord::new(runtime_dir);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => {
                record.write(&stats.lock().expect("stats lock"), true);
                return;
            }
        }
        let s = stats.lock().expect("stats lock").clone();
        record.write(&s, false);
        let flowing = s.last_frame.is_some_and(|t| t.elapsed() < stall);
        if wd.is_some() && (flowing || s.restarting(Instant::now(), attempt)) {
            notifier.watchdog();
        }
        let source = s.source.as_str();
        crate::logs::flush(&s, source, garbage_expected);
        if last_status.elapsed() >= STATUS_PERIOD {
            let secs = last_status.elapsed().as_secs_f64();
            let fps = (s.published - last_count) as f64 / secs;
            last_count = s.published;
            last_status = Instant::now();
            notifier.status(&status_line(&s, fps));
        }
    }
}

/// capture-svc's status record ([`ipc::status`]), written every tick of the status loop.
struct StatusRecord {
    writer: Option<ipc::status::StatusWriter>,
    detail: ipc::status::Detail,
    fps: ipc::status::RateMeter,
}

impl StatusRecord {
    fn new(runtime_dir: &std::path::Path) -> StatusRecord {
        let writer =
            ipc::status::StatusWriter::open_or_warn(runtime_dir, ipc::status::Service::Capture);
        StatusRecord {
            writer,
            detail: ipc::status::Detail::Capture(Default::default()),
            fps: ipc::status::RateMeter::default(),
        }
    }

    /// Writes the record from `s` (`stopped`: the last one, as the service stops).
    fn write(&mut self, s: &CaptureStats, stopped: bool) {
        use ipc::status::CameraState as Cam;
        let Some(writer) = &mut self.writer else {
            return;
        };
        let ipc::status::Detail::Capture(d) = &mut self.detail else {
            unreachable!("capture-svc's record holds capture's detail")
        };
        d.camera = match &s.state {
            None | Some(CameraState::Starting) => Cam::Starting,
            Some(CameraState::Streaming) => Cam::Streaming,
            Some(CameraState::Stalled) => Cam::Stalled,
            Some(CameraState::Restarting { reason }) => {
                writer.set_last_error(reason);
                Cam::Restarting
            }
            Some(CameraState::Failed { reason }) => {
                writer.set_last_error(reason);
                Cam::Failed
            }
        };
        if d.source != ipc::status::cut_text(&s.source) {
            d.source.clear();
            d.source.push_str(ipc::status::cut_text(&s.source));
        }
        d.frames_in = s.published;
        d.fps_in = self.fps.rate(s.published, ipc::service::monotonic_ns());
        d.splitter_garbage_bytes = s.split.garbage_bytes;
        d.splitter_dropped = s.split.dropped() + s.over_capacity;
        d.frames_refused = s.refused.total();
        d.camera_restarts = s.restarts;
        writer.publish(&self.detail, stopped);
    }
}

/// The STATUS text: `streaming, 15.0 fps, 1200 frames, 0 restarts, 2 dropped, 3 refused
/// (too_large 1, too_much_memory 2)`.
pub fn status_line(s: &CaptureStats, fps: f64) -> String {
    let state = s.state.as_ref().map_or("starting", CameraState::name);
    format!(
        "{state}, {fps:.1} fps, {} frames, {} restarts, {} dropped, {}",
        s.published,
        s.restarts,
        s.split.dropped() + s.over_capacity,
        s.refused.summary()
    )
}
