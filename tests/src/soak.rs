//! The soak: the whole system at a raised frame rate with viewers streaming, each service's
//! resident memory sampled at a fixed interval, a least-squares slope per service, and a
//! verdict, in wall-clock time: `mecam-soak --minutes N` or `--hours 24` (a day in real time,
//! for a real Pi). CI runs the compressed day instead ([`crate::day`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::faults::Figure;
use crate::procfs::ProcStats;
use crate::system::{LocalSystem, Options};
use crate::{http, trend};

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long to run after start-up.
    pub duration: Duration,
    /// Time between samples.
    pub interval: Duration,
    /// Samples in the first `warmup` are printed but not judged.
    pub warmup: Duration,
    /// Camera frame rate (the raised rate).
    pub fps: u32,
    /// Viewers kept streaming throughout (each reconnects after every `viewer_frames` frames).
    pub viewers: usize,
    /// Frames a viewer reads before it disconnects and connects again.
    pub viewer_frames: usize,
    /// Growth over the judged span (KiB) below which a service is not "rising" on that count
    /// alone (the day's projection against `MemoryMax`, see [`trend::judge`], still applies).
    pub tolerance_kib: f64,
}

impl Default for SoakOptions {
    fn default() -> Self {
        SoakOptions {
            duration: Duration::from_secs(210),
            interval: Duration::from_secs(3),
            // Longer than one period of the demo scene (60 s) and its first events: buffers
            // and pools with fixed bounds fill up to them during the first minute.
            warmup: Duration::from_secs(90),
            fps: 30,
            viewers: 2,
            viewer_frames: 200,
            tolerance_kib: 1024.0,
        }
    }
}

/// One service's figures.
#[derive(Debug, Clone)]
pub struct ServiceReport {
    /// Binary name.
    pub name: &'static str,
    /// RSS (KiB) at the first sample.
    pub start_kib: u64,
    /// RSS (KiB) at the last sample.
    pub end_kib: u64,
    /// The trend verdict after warm-up (`None` with too few samples).
    pub verdict: Option<trend::Verdict>,
    /// CPU time (user+system) used over the run, in ticks of `/proc/<pid>/stat`.
    pub cpu_ms: u64,
}

/// The result of a soak.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// Per service, capture first.
    pub services: Vec<ServiceReport>,
    /// Seconds actually run.
    pub seconds: f64,
    /// Frames the viewers received.
    pub viewer_frames: u64,
    /// Frames the camera produced (fps × seconds, nominal).
    pub nominal_frames: u64,
}

impl SoakReport {
    /// Services whose memory rose.
    pub fn rising(&self) -> Vec<&'static str> {
        self.services
            .iter()
            .filter(|s| s.verdict.as_ref().is_some_and(|v| v.rising))
            .map(|s| s.name)
            .collect()
    }

    /// A table for the README: a row per service, and with `faults` (from
    /// [`crate::faults::measure_all`]) a last column with each unit's fault figures.
    pub fn table(&self, faults: &[Figure]) -> String {
        let fault_col = if faults.is_empty() {
            ("", "")
        } else {
            (" faults under systemd |", " --- |")
        };
        let mut t = format!(
            "soak: {:.0} s, {} frames nominal, {} frames to viewers\n\
             | service | RSS start (KiB) | RSS end (KiB) | slope after warm-up (KiB/min) | slope, last half (KiB/min) | a day at the slower half of the last half / half the room under MemoryMax (KiB) | CPU per nominal frame (ms) |{}\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |{}\n",
            self.seconds, self.nominal_frames, self.viewer_frames, fault_col.0, fault_col.1
        );
        for s in &self.services {
            let (slope, tail, day) =
                s.verdict
                    .as_ref()
                    .map_or(("n/a".into(), "n/a".into(), "n/a".into()), |v| {
                        (
                            format!("{:+.1}", v.kib_per_min),
                            format!("{:+.1}", v.tail_kib_per_min),
                            format!(
                                "{:+.0} / {}",
                                v.day_kib,
                                v.headroom_kib.map_or("n/a".into(), |r| format!(
                                    "{:.0}",
                                    trend::LEAK_HEADROOM_FRACTION * r
                                ))
                            ),
                        )
                    });
            let per_frame = s.cpu_ms as f64 / self.nominal_frames.max(1) as f64;
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.3} |",
                s.name, s.start_kib, s.end_kib, slope, tail, day, per_frame
            ));
            if !faults.is_empty() {
                let unit = crate::unit_file::unit_of(s.name);
                let mine: Vec<String> = faults
                    .iter()
                    .filter(|f| f.unit == unit)
                    .map(|f| format!("{}: {}", f.fault, f.figure))
                    .collect();
                let cell = if mine.is_empty() {
                    "not faulted".to_owned()
                } else {
                    mine.join("<br>")
                };
                t.push_str(&format!(" {cell} |"));
            }
            t.push('\n');
        }
        t
    }
}

/// CPU time of `pid` in milliseconds (utime + stime from `/proc/<pid>/stat`).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let ticks: u64 = f.iter().sum();
    // USER_HZ is 100 on Linux.
    ticks * 10
}

/// A viewer that connects, reads `frames` parts, disconnects, and again, until `stop`.
fn viewer(
    addr: SocketAddr,
    cookie: String,
    frames: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = http::MjpegStream::open(addr, "/stream", Some(&cookie)) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        for _ in 0..frames {
            if stop.load(Ordering::Relaxed) || s.next_part().is_err() {
                break;
            }
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Start mecam, soak it, stop it. `progress` gets one line per sample.
///
/// # Errors
/// Start-up failed, a service died during the soak, or one exited uncleanly.
pub fn run(opts: &SoakOptions, mut progress: impl FnMut(&str)) -> anyhow::Result<SoakReport> {
    let mut sys = LocalSystem::start(Options {
        config: Some(format!("[capture]\nfps = {}\n[motion]\n[web]\n", opts.fps)),
        ..Options::default()
    })?;
    let cookie = http::login(sys.addr, crate::ADMIN_USER, &sys.password)?;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..opts.viewers)
        .map(|_| {
            let (addr, cookie, stop, count, n) = (
                sys.addr,
                cookie.clone(),
                stop.clone(),
                count.clone(),
                opts.viewer_frames,
            );
            std::thread::spawn(move || viewer(addr, cookie, n, stop, count))
        })
        .collect();

    let names = crate::bins::SERVICES;
    // Each unit's MemoryMax: the verdict also fails a trend that would eat into it within a day.
    let limits_kib = names.map(|n| {
        crate::unit_file::memory_max(&crate::unit_file::unit_of(n))
            .ok()
            .map(|b| b as f64 / 1024.0)
    });
    let pids = [sys.capture.pid(), sys.motion.pid(), sys.web.pid()];
    let cpu0: Vec<u64> = pids.iter().map(|p| cpu_ms(*p)).collect();
    let mut samples: [Vec<(f64, u64)>; 3] = Default::default();
    let start = Instant::now();
    let mut next = start;
    let result = (|| -> anyhow::Result<()> {
        while start.elapsed() < opts.duration {
            for svc in [&mut sys.capture, &mut sys.motion, &mut sys.web] {
                svc.check_alive()?;
            }
            let t = start.elapsed().as_secs_f64();
            let mut line = format!("t={t:7.1}s");
            for (i, pid) in pids.iter().enumerate() {
                let rss = ProcStats::of(*pid)?.rss_kib;
                samples[i].push((t, rss));
                line.push_str(&format!("  {}={rss}KiB", names[i]));
            }
            line.push_str(&format!(
                "  viewer_frames={}",
                count.load(Ordering::Relaxed)
            ));
            progress(&line);
            next += opts.interval;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(())
    })();
    let seconds = start.elapsed().as_secs_f64();
    let cpu1: Vec<u64> = pids.iter().map(|p| cpu_ms(*p)).collect();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    result?;
    sys.stop()?;
    let services = (0..3)
        .map(|i| ServiceReport {
            name: names[i],
            start_kib: samples[i].first().map_or(0, |s| s.1),
            end_kib: samples[i].last().map_or(0, |s| s.1),
            verdict: trend::judge(
                &samples[i],
                opts.warmup.as_secs_f64(),
                opts.tolerance_kib,
                limits_kib[i],
            ),
            cpu_ms: cpu1[i].saturating_sub(cpu0[i]),
        })
        .collect();
    Ok(SoakReport {
        services,
        seconds,
        viewer_frames: count.load(Ordering::Relaxed),
        nominal_frames: (seconds * f64::from(opts.fps)) as u64,
    })
}
