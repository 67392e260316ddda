//! The compressed day: a day's work for the whole system (frames, viewers, motion events with
//! clips, retention, restarts of every service) pushed through the real binaries as fast as
//! the machine allows, each service's resident memory and live heap sampled against the work
//! done, and a verdict that fails on growth. What leaks is per frame, per viewer, per event
//! and per restart, not per hour: so the work is counted, not the minutes.
//!
//! The camera is a pre-rendered scene: [`emit`] (run by capture-svc as its `command` source,
//! `mecam-soak emit`) writes a cycle of small JPEGs to stdout at a fixed high rate. Each cycle
//! of [`CYCLE_FRAMES`] frames is an object crossing the frame and then a still scene (a few
//! distinct noisy variants, so that it is never a frozen camera): one motion event per cycle,
//! so a day of frames ([`DAY_FRAMES`], 30 fps for 24 h) carries a day of events
//! ([`DAY_EVENTS`], one a minute). motion-svc records a clip of each with a short pre- and
//! post-capture, and its storage limit (a few MiB) deletes old events all along. Viewers
//! connect, read a few frames and leave ([`DAY_VIEWERS`] connects), and each service is
//! stopped (SIGKILL and SIGTERM in turn) and started again: capture-svc
//! [`DAY_CAPTURE_RESTARTS`] times, the others [`DAY_OTHER_RESTARTS`] times each; the others
//! recover on their own.
//!
//! Judged: each service's last incarnation over the work after its restarts ended (the
//! restarts of motion-svc and web-svc are done in the first [`OTHER_RESTARTS_END`] of the
//! frames, capture-svc's in the first [`CAPTURE_RESTARTS_END`]), after a warm-up: bounded
//! buffers and caches fill first. Growth over the last half of that span beyond the tolerance
//! (resident memory, and live heap from the service's own report of `ipc::heap`'s figures:
//! the `STATUS=` line of capture-svc and motion-svc, web-svc's `/metrics`) fails the day.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;

use crate::procfs::ProcStats;
use crate::system::{LocalSystem, Options};
use crate::{bins, http};

/// A day of frames at 30 fps.
pub const DAY_FRAMES: u64 = 30 * 86_400;
/// A day of motion events: one a minute.
pub const DAY_EVENTS: u64 = 1_440;
/// A day of viewer connects.
pub const DAY_VIEWERS: u64 = 10_000;
/// capture-svc restarts in a day.
pub const DAY_CAPTURE_RESTARTS: u64 = 50;
/// motion-svc and web-svc restarts in a day, each.
pub const DAY_OTHER_RESTARTS: u64 = 20;
/// Frames of one cycle of the scene: one event each, so a day of frames is a day of events.
pub const CYCLE_FRAMES: u64 = DAY_FRAMES / DAY_EVENTS;
/// Frames of a cycle in which the object crosses; the rest is still.
pub const MOTION_FRAMES: u64 = CYCLE_FRAMES * 2 / 5;
/// Distinct frames of the crossing (each shown `MOTION_FRAMES / POSITIONS` times in a row).
const POSITIONS: u64 = 48;
/// Distinct frames of the still scene, in turn (sensor noise: never a frozen camera).
const STILL_VARIANTS: u64 = 8;
/// The scene's size.
pub const WIDTH: usize = 160;
/// The scene's size.
pub const HEIGHT: usize = 120;
/// JPEG quality of the scene.
const QUALITY: u8 = 70;
/// motion-svc and web-svc are restarted within this share of the day's frames.
pub const OTHER_RESTARTS_END: f64 = 0.35;
/// capture-svc is restarted within this share of the day's frames.
pub const CAPTURE_RESTARTS_END: f64 = 0.7;
/// After its restarts end, a service is judged from this much later (a share of the day's
/// frames): its bounded buffers and caches fill first.
pub const JUDGE_AFTER: f64 = 0.1;
/// The emitter writes its count of frames written every this many frames.
const COUNT_EVERY: u64 = 250;
/// How often the day's loop looks at the work done and the services.
const TICK: Duration = Duration::from_millis(250);

/// What to run.
#[derive(Debug, Clone)]
pub struct DayOptions {
    /// Share of a day to run (1.0: the whole day's work; 0.1 in CI).
    pub fraction: f64,
    /// The scene's frame rate (the emitter's pace): the day's frames at this rate set how long
    /// the run takes.
    pub fps: u32,
    /// Time between samples.
    pub interval: Duration,
    /// Threads connecting viewers (each connect reads `viewer_frames` frames and leaves).
    pub viewer_threads: usize,
    /// Frames a viewer reads before it leaves.
    pub viewer_frames: usize,
    /// Resident growth (KiB) over the last half of the judged span that fails the day.
    pub rss_tolerance_kib: f64,
    /// Live heap growth (KiB) over the last half of the judged span that fails the day.
    pub heap_tolerance_kib: f64,
    /// Give up when the day takes this many times what the frame rate plans (a machine far too
    /// slow, or a stuck pipeline).
    pub slack: f64,
}

impl Default for DayOptions {
    fn default() -> Self {
        DayOptions {
            fraction: 1.0,
            fps: 1_250,
            interval: Duration::from_secs(5),
            viewer_threads: 2,
            viewer_frames: 5,
            rss_tolerance_kib: 1024.0,
            heap_tolerance_kib: 256.0,
            slack: 3.0,
        }
    }
}

impl DayOptions {
    /// The work of `fraction` of a day, rounded, at least one of each.
    pub fn targets(&self) -> Work {
        let part = |n: u64| ((n as f64 * self.fraction).round() as u64).max(1);
        Work {
            frames: part(DAY_FRAMES).max(CYCLE_FRAMES),
            viewers: part(DAY_VIEWERS),
            events: part(DAY_EVENTS),
        }
    }

    /// How long the frames take at [`DayOptions::fps`].
    pub fn planned(&self) -> Duration {
        Duration::from_secs_f64(self.targets().frames as f64 / f64::from(self.fps.max(1)))
    }
}

/// Work done (or to do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Frames written by the camera into capture-svc.
    pub frames: u64,
    /// Viewers that connected and got a frame.
    pub viewers: u64,
    /// Events recorded (motion-svc's "event recorded" lines).
    pub events: u64,
}

/// One sample: the work done, and per service (in [`bins::SERVICES`] order) resident KiB and
/// live heap KiB (from its latest STATUS line; `None` before it sent one).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Work done by then.
    pub work: Work,
    /// Resident memory, KiB.
    pub rss_kib: [u64; 3],
    /// Live heap, KiB.
    pub heap_kib: [Option<f64>; 3],
}

/// Growth of one figure over a judged span.
#[derive(Debug, Clone, Copy)]
pub struct Growth {
    /// At the start of the judged span, KiB.
    pub start: f64,
    /// At the end, KiB.
    pub end: f64,
    /// Least-squares slope over the span, KiB per million frames.
    pub per_mframes: f64,
    /// Growth over the span per thousand viewers, KiB.
    pub per_kviewers: f64,
    /// Growth over the span per hundred events, KiB.
    pub per_hevents: f64,
    /// Growth over the last half of the span, KiB: the verdict's basis.
    pub tail: f64,
    /// Whether `tail` is over the tolerance.
    pub rising: bool,
}

/// One service's figures.
#[derive(Debug, Clone)]
pub struct ServiceDay {
    /// Binary name.
    pub name: &'static str,
    /// Restarts by SIGKILL and by SIGTERM.
    pub restarts: (u64, u64),
    /// Share of the frames from which it was judged.
    pub judged_from: f64,
    /// Work done in the judged span.
    pub judged_work: Work,
    /// Resident memory.
    pub rss: Option<Growth>,
    /// Live heap.
    pub heap: Option<Growth>,
    /// Peak resident memory over the whole day, KiB.
    pub rss_peak_kib: u64,
}

/// The result of a day.
#[derive(Debug, Clone)]
pub struct DayReport {
    /// The fraction of a day run.
    pub fraction: f64,
    /// Work done.
    pub work: Work,
    /// Event folders left at the end (the storage limit deleted the rest).
    pub events_left: usize,
    /// Seconds it took.
    pub seconds: f64,
    /// Per service.
    pub services: Vec<ServiceDay>,
    /// Every sample, for the log.
    pub samples: Vec<Sample>,
    /// SIGTERM'd services that did not exit cleanly.
    pub unclean: Vec<String>,
}

impl DayReport {
    /// What failed: growth, unclean exits, too little work.
    pub fn failures(&self, targets: Work) -> Vec<String> {
        let mut f = Vec::new();
        for s in &self.services {
            for (what, g) in [("resident memory", s.rss), ("live heap", s.heap)] {
                match g {
                    Some(g) if g.rising => f.push(format!(
                        "{}: {what} rose {:+.0} KiB over the last half of its judged span",
                        s.name, g.tail
                    )),
                    None if what == "resident memory" => {
                        f.push(format!("{}: too few samples to judge", s.name));
                    }
                    _ => {}
                }
            }
        }
        f.extend(self.unclean.iter().cloned());
        if self.work.frames < targets.frames {
            f.push(format!(
                "only {} of {} frames",
                self.work.frames, targets.frames
            ));
        }
        // Restarts cut some cycles short, and an event can be lost with a SIGKILL: most
        // cycles must still make their event.
        if self.work.events * 10 < targets.events * 7 {
            f.push(format!(
                "only {} events recorded of the {} cycles' worth",
                self.work.events, targets.events
            ));
        }
        if self.work.viewers < targets.viewers {
            f.push(format!(
                "only {} of {} viewer connects",
                self.work.viewers, targets.viewers
            ));
        }
        f
    }

    /// The Markdown table for the README.
    pub fn table(&self) -> String {
        let mut t = format!(
            "{:.2} day in {:.0} s: {} frames ({:.0} per second), {} viewer connects, {} events recorded ({} left after the storage limit), restarts: {}\n\n\
             | service | restarts (KILL/TERM) | judged from | RSS start → end (KiB) | RSS per M frames (KiB) | RSS per 1000 viewers (KiB) | RSS per 100 events (KiB) | live heap start → end (KiB) | heap per M frames (KiB) | heap per 100 events (KiB) | RSS peak (KiB) |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            self.fraction,
            self.seconds,
            self.work.frames,
            self.work.frames as f64 / self.seconds.max(1.0),
            self.work.viewers,
            self.work.events,
            self.events_left,
            self.services
                .iter()
                .map(|s| format!("{} {}", s.name, s.restarts.0 + s.restarts.1))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let na = || "n/a".to_owned();
        for s in &self.services {
            let (rs, rf, rv, re) = s.rss.map_or((na(), na(), na(), na()), |g| {
                (
                    format!("{:.0} → {:.0}", g.start, g.end),
                    format!("{:+.1}", g.per_mframes),
                    format!("{:+.1}", g.per_kviewers),
                    format!("{:+.1}", g.per_hevents),
                )
            });
            let (hs, hf, he) = s.heap.map_or((na(), na(), na()), |g| {
                (
                    format!("{:.0} → {:.0}", g.start, g.end),
                    format!("{:+.1}", g.per_mframes),
                    format!("{:+.1}", g.per_hevents),
                )
            });
            t.push_str(&format!(
                "| {} | {}/{} | {:.0} % | {rs} | {rf} | {rv} | {re} | {hs} | {hf} | {he} | {} |\n",
                s.name,
                s.restarts.0,
                s.restarts.1,
                s.judged_from * 100.0,
                s.rss_peak_kib
            ));
        }
        t
    }
}

/// The scene's distinct frames: the still variants first, then the crossing's positions.
///
/// # Errors
/// The JPEG encoder failed.
pub fn render_scene() -> anyhow::Result<Vec<Vec<u8>>> {
    let (w, h) = (WIDTH, HEIGHT);
    let mut out = Vec::new();
    let background = |x: usize, y: usize| -> u8 {
        // Bricks: rows of 12 px, offset every other row.
        let (row, off) = (y / 12, if (y / 12) % 2 == 0 { 0 } else { 12 });
        let mortar = y % 12 == 0 || (x + off) % 24 == 0;
        if mortar {
            150
        } else {
            95 + (row % 3) as u8 * 6
        }
    };
    let mut seed = 0x2545_f491_u32;
    let mut noise = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed % 7) as i16 - 3
    };
    let encode = |rgb: &[u8]| -> anyhow::Result<Vec<u8>> {
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, QUALITY)
            .encode(rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .context("encoding the day's scene")?;
        Ok(jpeg)
    };
    for _ in 0..STILL_VARIANTS {
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let v = (i16::from(background(x, y)) + noise()).clamp(0, 255) as u8;
                rgb.extend_from_slice(&[v, v, v]);
            }
        }
        out.push(encode(&rgb)?);
    }
    // A person-sized object (a third of the height) crossing from out of view on the left to
    // out of view on the right.
    let (ow, oh) = (w / 8, h / 3);
    for p in 0..POSITIONS {
        let x0 = (p as usize * (w + ow)) / POSITIONS as usize;
        let y0 = h / 2 - oh / 4;
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let inside = x + ow >= x0 && x < x0 && y >= y0 && y < y0 + oh;
                if inside {
                    rgb.extend_from_slice(&[180, 60, 50]);
                } else {
                    let v = background(x, y);
                    rgb.extend_from_slice(&[v, v, v]);
                }
            }
        }
        out.push(encode(&rgb)?);
    }
    Ok(out)
}

/// Which of [`render_scene`]'s frames is frame `n` of the stream.
pub fn scene_frame(n: u64) -> usize {
    let i = n % CYCLE_FRAMES;
    if i < MOTION_FRAMES {
        (STILL_VARIANTS + i * POSITIONS / MOTION_FRAMES) as usize
    } else {
        (i % STILL_VARIANTS) as usize
    }
}

/// The camera of the day (`mecam-soak emit`): writes the scene to `out` at `fps`, for ever,
/// and its count of frames written to `count_file` every [`COUNT_EVERY`] frames and at the
/// end. Returns when `out` is closed (capture-svc stopped); never bursts past `fps` to catch
/// up after a stall.
///
/// # Errors
/// The scene cannot be rendered or the count cannot be written.
pub fn emit(fps: u32, count_file: &Path, mut out: impl std::io::Write) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let frames = render_scene()?;
    let count = std::fs::File::create(count_file)
        .with_context(|| format!("creating {}", count_file.display()))?;
    let put = |n: u64| count.write_at(format!("{n:020}\n").as_bytes(), 0);
    let fps = f64::from(fps.max(1));
    let mut start = Instant::now();
    let mut n = 0u64;
    loop {
        let due = (start.elapsed().as_secs_f64() * fps) as u64;
        if due > n + fps as u64 / 10 {
            // More than 100 ms behind: forget the backlog.
            start += Duration::from_secs_f64((due - n) as f64 / fps);
        }
        if n >= due {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if out
            .write_all(&frames[scene_frame(n)])
            .and_then(|()| out.flush())
            .is_err()
        {
            put(n)?;
            return Ok(());
        }
        n += 1;
        if n % COUNT_EVERY == 0 {
            put(n)?;
        }
    }
}

/// Frames written by every emitter so far: the sum of the counts in `dir`.
fn frames_done(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.trim().parse::<u64>().ok())
        .sum()
}

/// Counts lines with `needle` in a growing log, reading only what was added.
struct LogCounter {
    path: PathBuf,
    offset: u64,
    partial: String,
    count: u64,
    needle: &'static str,
}

impl LogCounter {
    fn update(&mut self) -> u64 {
        use std::io::{Read as _, Seek as _};
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            if f.seek(std::io::SeekFrom::Start(self.offset)).is_ok() {
                let mut added = String::new();
                if let Ok(n) = f.read_to_string(&mut added) {
                    self.offset += n as u64;
                    self.partial.push_str(&added);
                    let complete = self.partial.rfind('\n').map_or(0, |i| i + 1);
                    self.count += self.partial[..complete].matches(self.needle).count() as u64;
                    self.partial.drain(..complete);
                }
            }
        }
        self.count
    }
}

/// The live heap (KiB) a STATUS line ends with (`…, heap 1234 B live, …`).
pub fn heap_kib(status: &str) -> Option<f64> {
    let at = status.rfind("heap ")?;
    let n: f64 = status[at + 5..].split_whitespace().next()?.parse().ok()?;
    Some(n / 1024.0)
}

/// web-svc's live heap (KiB) from its `/metrics` (`mecam_web_heap_live_bytes`): web-svc
/// sends no periodic STATUS. Logs in (once, and again after web-svc restarted) with `cookie`.
fn web_heap_kib(addr: SocketAddr, password: &str, cookie: &mut Option<String>) -> Option<f64> {
    for _ in 0..2 {
        if cookie.is_none() {
            *cookie = http::login(addr, crate::ADMIN_USER, password).ok();
        }
        let r = http::get(addr, "/metrics", cookie.as_deref()).ok()?;
        if r.status != 200 {
            *cookie = None;
            continue;
        }
        let text = r.text();
        let line = text
            .lines()
            .find(|l| l.starts_with("mecam_web_heap_live_bytes "))?;
        let n: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        return Some(n / 1024.0);
    }
    None
}

/// A viewer thread: connects when the schedule allows (`due` connects so far), reads
/// `frames` parts, leaves; logs in again when its session is gone (web-svc restarted).
fn viewer(
    addr: SocketAddr,
    password: String,
    frames: usize,
    due: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut cookie: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        if done.load(Ordering::Relaxed) >= due.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let Some(c) = cookie.as_deref() else {
            cookie = http::login(addr, crate::ADMIN_USER, &password).ok();
            if cookie.is_none() {
                std::thread::sleep(Duration::from_millis(500));
            }
            continue;
        };
        let Ok(mut s) = http::MjpegStream::open(addr, "/stream", Some(c)) else {
            cookie = None;
            continue;
        };
        let mut got = 0;
        for _ in 0..frames {
            if stop.load(Ordering::Relaxed) || s.next_part().is_err() {
                break;
            }
            got += 1;
        }
        if got > 0 {
            done.fetch_add(1, Ordering::Relaxed);
        } else {
            // Connected but nothing came: logged out, or the camera is restarting.
            cookie = None;
        }
    }
}

/// The config of the day: the emitter as capture-svc's camera; motion-svc with short events
/// (so that a cycle's crossing makes one), analysing often, and a small storage limit.
fn config(opts: &DayOptions, emitter: &Path, counts: &Path) -> String {
    format!(
        "[capture]\nsource = \"command\"\ncommand = [{:?}, \"emit\", \"--fps\", \"{}\", \"--count-dir\", {:?}]\nfps = 120\nwidth = {WIDTH}\nheight = {HEIGHT}\n\
         [motion]\nanalysis_fps = 30\nmin_duration_s = 0.2\nquiet_gap_s = 0.3\npre_capture_s = 0.2\npost_capture_s = 0.2\nmax_event_s = 20\nbackground_s = 2\nmax_total_mib = 24\nmin_free_mib = 0\n\
         [web]\n",
        emitter.display().to_string(),
        opts.fps,
        counts.display().to_string(),
    )
}

/// When (share of the day's frames) restart `k` of `n` within the first `end` of the day is
/// due: evenly spread, the first after half a step, shifted by `phase` of a step.
fn restart_at(k: u64, n: u64, end: f64, phase: f64) -> f64 {
    end * (k as f64 + 0.5 + phase) / n as f64
}

/// Run the day. `progress` gets a line per sample.
///
/// # Errors
/// Start-up failed, a service died on its own, a restart failed, or the day took more than
/// `slack` times its plan.
pub fn run(opts: &DayOptions, mut progress: impl FnMut(&str)) -> anyhow::Result<DayReport> {
    let targets = opts.targets();
    let part = |n: u64| ((n as f64 * opts.fraction).round() as u64).max(1);
    let n_restarts = [
        part(DAY_CAPTURE_RESTARTS),
        part(DAY_OTHER_RESTARTS),
        part(DAY_OTHER_RESTARTS),
    ];
    let restarts_end = [CAPTURE_RESTARTS_END, OTHER_RESTARTS_END, OTHER_RESTARTS_END];
    let emitter = bins::bin("mecam-soak")?;
    let counts = tempfile::Builder::new()
        .prefix("mecam-day-counts-")
        .tempdir()?;
    let mut sys = LocalSystem::start(Options {
        config: Some(config(opts, &emitter, counts.path())),
        capture_args: vec!["--source".into(), "command".into()],
        notify: true,
        ..Options::default()
    })?;
    let names = bins::SERVICES;
    let motion_log = LogCounter {
        path: sys.motion.log_path().to_owned(),
        offset: 0,
        partial: String::new(),
        count: 0,
        needle: "event recorded",
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (due, viewers) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let threads: Vec<_> = (0..opts.viewer_threads.max(1))
        .map(|_| {
            let (addr, pw, n) = (sys.addr, sys.password.clone(), opts.viewer_frames);
            let (due, done, stop) = (due.clone(), viewers.clone(), stop.clone());
            std::thread::spawn(move || viewer(addr, pw, n, due, done, stop))
        })
        .collect();
    let mut state = DayState {
        motion_log,
        samples: Vec::new(),
        restarts: [(0, 0); 3],
        unclean: Vec::new(),
        web_cookie: None,
    };
    let result = state.drive(
        &mut sys,
        opts,
        targets,
        (n_restarts, restarts_end),
        (&due, &viewers, counts.path()),
        &mut progress,
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let seconds = result?;
    let events_left = std::fs::read_dir(sys.events_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .count()
        })
        .unwrap_or(0);
    let work = Work {
        frames: frames_done(counts.path()),
        viewers: viewers.load(Ordering::Relaxed),
        events: state.motion_log.update(),
    };
    sys.stop()?;
    let services = (0..3)
        .map(|i| {
            let judged_from = restarts_end[i] + JUDGE_AFTER;
            let span: Vec<&Sample> = state
                .samples
                .iter()
                .filter(|s| s.work.frames as f64 >= judged_from * targets.frames as f64)
                .collect();
            let judged_work = match (span.first(), span.last()) {
                (Some(a), Some(b)) => Work {
                    frames: b.work.frames - a.work.frames,
                    viewers: b.work.viewers - a.work.viewers,
                    events: b.work.events - a.work.events,
                },
                _ => Work::default(),
            };
            let rss: Vec<(f64, f64)> = span
                .iter()
                .map(|s| (s.work.frames as f64, s.rss_kib[i] as f64))
                .collect();
            let heap: Vec<(f64, f64)> = span
                .iter()
                .filter_map(|s| Some((s.work.frames as f64, s.heap_kib[i]?)))
                .collect();
            ServiceDay {
                name: names[i],
                restarts: state.restarts[i],
                judged_from,
                judged_work,
                rss: growth(&rss, judged_work, opts.rss_tolerance_kib),
                heap: growth(&heap, judged_work, opts.heap_tolerance_kib),
                rss_peak_kib: state
                    .samples
                    .iter()
                    .map(|s| s.rss_kib[i])
                    .max()
                    .unwrap_or(0),
            }
        })
        .collect();
    Ok(DayReport {
        fraction: opts.fraction,
        work,
        events_left,
        seconds,
        services,
        samples: state.samples,
        unclean: state.unclean,
    })
}

/// The growth of `(frames, KiB)` samples over a judged span that did `work`.
fn growth(samples: &[(f64, f64)], work: Work, tolerance_kib: f64) -> Option<Growth> {
    if samples.len() < 4 {
        return None;
    }
    let xs: Vec<f64> = samples.iter().map(|s| s.0 / 1e6).collect();
    let ys: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let per_mframes = crate::trend::slope(&xs, &ys).unwrap_or(0.0);
    let (start, end) = (ys[0], ys[ys.len() - 1]);
    let tail = end - ys[ys.len() / 2];
    let per = |n: u64, unit: f64| (end - start) / (n as f64 / unit).max(f64::MIN_POSITIVE);
    Some(Growth {
        start,
        end,
        per_mframes,
        per_kviewers: per(work.viewers, 1000.0),
        per_hevents: per(work.events, 100.0),
        tail,
        rising: tail > tolerance_kib,
    })
}

/// What the day's loop keeps.
struct DayState {
    motion_log: LogCounter,
    samples: Vec<Sample>,
    restarts: [(u64, u64); 3],
    unclean: Vec<String>,
    /// The session `/metrics` is read with.
    web_cookie: Option<String>,
}

impl DayState {
    /// The loop: work counted every [`TICK`], restarts when due, a sample every interval,
    /// until the frames are done. Returns the seconds it took.
    fn drive(
        &mut self,
        sys: &mut LocalSystem,
        opts: &DayOptions,
        targets: Work,
        (n_restarts, restarts_end): ([u64; 3], [f64; 3]),
        (due, viewers, counts): (&AtomicU64, &AtomicU64, &Path),
        progress: &mut impl FnMut(&str),
    ) -> anyhow::Result<f64> {
        let names = bins::SERVICES;
        let start = Instant::now();
        let give_up = opts.planned().mul_f64(opts.slack) + Duration::from_secs(120);
        let mut next_sample = start;
        loop {
            let frames = frames_done(counts);
            let share = frames as f64 / targets.frames as f64;
            // Viewers connect in step with the frames.
            due.store(
                ((share * targets.viewers as f64).ceil() as u64).min(targets.viewers),
                Ordering::Relaxed,
            );
            for i in 0..3 {
                let (kills, terms) = self.restarts[i];
                let k = kills + terms;
                let phase = if i == 2 { 0.5 } else { 0.0 };
                if k < n_restarts[i]
                    && share >= restart_at(k, n_restarts[i], restarts_end[i], phase)
                {
                    let signal = if k % 2 == 0 {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    };
                    let status = sys
                        .restart(names[i], signal)
                        .with_context(|| format!("restart {} of {}", k + 1, names[i]))?;
                    if signal == Signal::SIGKILL {
                        self.restarts[i].0 += 1;
                    } else {
                        self.restarts[i].1 += 1;
                        if !status.success() {
                            self.unclean
                                .push(format!("{} exited with {status} on SIGTERM", names[i]));
                        }
                    }
                }
            }
            for svc in [&mut sys.capture, &mut sys.motion, &mut sys.web] {
                svc.check_alive()?;
            }
            let done =
                frames >= targets.frames && viewers.load(Ordering::Relaxed) >= targets.viewers;
            if Instant::now() >= next_sample || done {
                next_sample += opts.interval;
                let pids = [sys.capture.pid(), sys.motion.pid(), sys.web.pid()];
                let mut rss_kib = [0u64; 3];
                let mut heap = [None; 3];
                for i in 0..3 {
                    rss_kib[i] = ProcStats::of(pids[i])?.rss_kib;
                    heap[i] = if names[i] == "web-svc" {
                        web_heap_kib(sys.addr, &sys.password, &mut self.web_cookie)
                    } else {
                        sys.status(names[i]).as_deref().and_then(heap_kib)
                    };
                }
                let work = Work {
                    frames,
                    viewers: viewers.load(Ordering::Relaxed),
                    events: self.motion_log.update(),
                };
                let t = start.elapsed().as_secs_f64();
                let mut line = format!(
                    "t={t:7.1}s frames={frames} ({:5.1} %) viewers={} events={}",
                    share * 100.0,
                    work.viewers,
                    work.events
                );
                for i in 0..3 {
                    line.push_str(&format!(
                        "  {}={}KiB/heap {}",
                        names[i],
                        rss_kib[i],
                        heap[i].map_or("?".into(), |h| format!("{h:.0}KiB"))
                    ));
                }
                progress(&line);
                self.samples.push(Sample {
                    t,
                    work,
                    rss_kib,
                    heap_kib: heap,
                });
            }
            if done {
                return Ok(start.elapsed().as_secs_f64());
            }
            anyhow::ensure!(
                start.elapsed() < give_up,
                "the day's {} frames are not done after {:.0} s ({frames} so far): the machine \
                 cannot keep {} fps; lower --fps",
                targets.frames,
                start.elapsed().as_secs_f64(),
                opts.fps
            );
            std::thread::sleep(TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_one_crossing_and_a_still_scene_that_never_freezes() {
        let frames = render_scene().unwrap();
        assert_eq!(frames.len() as u64, STILL_VARIANTS + POSITIONS);
        let shown: Vec<usize> = (0..CYCLE_FRAMES).map(scene_frame).collect();
        // The crossing, position by position, then the still variants in turn.
        assert_eq!(shown[0], STILL_VARIANTS as usize);
        assert_eq!(
            shown[MOTION_FRAMES as usize - 1],
            (STILL_VARIANTS + POSITIONS - 1) as usize
        );
        assert!(
            shown[MOTION_FRAMES as usize..]
                .windows(2)
                .all(|w| w[0] != w[1] && w[0] < STILL_VARIANTS as usize)
        );
        assert_ne!(frames[0], frames[1], "the still variants differ");
        assert_eq!(scene_frame(CYCLE_FRAMES), shown[0], "the cycle repeats");
    }

    #[test]
    fn a_day_is_a_day_of_each_kind_of_work() {
        let day = DayOptions::default().targets();
        assert_eq!(day.frames / CYCLE_FRAMES, DAY_EVENTS);
        let tenth = DayOptions {
            fraction: 0.1,
            ..DayOptions::default()
        }
        .targets();
        assert_eq!(
            (tenth.frames, tenth.viewers, tenth.events),
            (259_200, 1_000, 144)
        );
    }

    #[test]
    fn the_heap_figure_is_read_from_a_status_line() {
        let s = "camera streaming; 10 frames, heap 2048 B live, 4096 B peak, 7 allocs";
        assert_eq!(heap_kib(s), Some(2.0));
        assert_eq!(heap_kib("starting"), None);
    }

    #[test]
    fn growth_in_the_last_half_fails_and_a_filled_bound_does_not() {
        let work = Work {
            frames: 1_000_000,
            viewers: 1000,
            events: 100,
        };
        // Fills 2 MiB in the first quarter, then flat.
        let filled: Vec<(f64, f64)> = (0..40)
            .map(|i| {
                (
                    f64::from(i) * 25_000.0,
                    10_000.0 + 2048.0 * f64::from(i.min(10)) / 10.0,
                )
            })
            .collect();
        assert!(!growth(&filled, work, 1024.0).unwrap().rising);
        // A byte a frame: about 1 MiB per million frames, half of it in the last half.
        let leak: Vec<(f64, f64)> = (0..40)
            .map(|i| {
                (
                    f64::from(i) * 50_000.0,
                    10_000.0 + f64::from(i) * 50_000.0 / 1024.0,
                )
            })
            .collect();
        let g = growth(&leak, work, 512.0).unwrap();
        assert!(g.rising, "{g:?}");
        assert!((g.per_mframes - 976.6).abs() < 1.0, "{g:?}");
        assert!(growth(&leak[..3], work, 512.0).is_none());
    }
}
