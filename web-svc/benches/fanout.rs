//! Fan-out bench: the real `web-svc` binary (bench profile) fed by an in-process camera
//! through the real region and announce socket, with 1, 10, 50 and 200 viewers reading
//! `/stream.mjpg` on loopback, at 640x480@15 and 1920x1080@30. Prints a table of web-svc CPU
//! per delivered frame, its resident memory, and latency from the commit in the region to the
//! last byte at the viewer (median and p99). CPU is the sum of web-svc's threads' on-CPU
//! time from `/proc/<pid>/task/*/schedstat`, in nanoseconds.
//!
//! Run: `cargo bench -p web-svc --bench fanout` (`WEB_BENCH_SECS=N` sets the measuring time
//! per row, default 5). Viewers are threads of this process and share the machine's cores
//! with web-svc, so latency at many viewers includes the clients' own scheduling.

#[path = "../tests/it/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Camera, Dirs, Web, make_frames, set_password};
use mecam_system_tests::http::{self, MjpegStream};

/// On-CPU nanoseconds of each thread of `pid`: the first field of
/// `/proc/<pid>/task/<tid>/schedstat` (nanosecond resolution, where `/proc/<pid>/stat` counts
/// 10 ms clock ticks, too coarse for a row with one viewer).
fn thread_cpu_ns(pid: u32) -> HashMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            Some((tid, stat.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// CPU time spent between two [`thread_cpu_ns`] samples. A thread that ended in between
/// takes its time with it (the blocking pool's idle threads; a slight undercount).
fn cpu_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> Duration {
    Duration::from_nanos(
        after
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
            .sum(),
    )
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

fn main() {
    let secs: u64 = std::env::var("WEB_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!("web-svc fan-out bench, {secs} s per row, viewers are threads on the same machine");
    println!(
        "{:>10} {:>4} {:>8} {:>9} {:>10} {:>12} {:>9} {:>11} {:>9} {:>9}",
        "geometry",
        "fps",
        "frame KB",
        "viewers",
        "delivered",
        "CPU us/frame",
        "CPU %",
        "RSS MiB",
        "p50 ms",
        "p99 ms"
    );
    for &(w, h, fps, noise) in &[(640u16, 480u16, 15.0f64, 24u8), (1920, 1080, 30.0, 24)] {
        let frames = Arc::new(make_frames(8, w, h, noise));
        let avg_kb =
            frames.iter().map(Vec::len).sum::<usize>() as f64 / frames.len() as f64 / 1024.0;
        for &viewers in &[1usize, 10, 50, 200] {
            let dirs = Dirs::new("max_streams = 250\nmax_connections = 300\nviewer_timeout_s = 30");
            set_password(&dirs, "bench password");
            let camera = Arc::new(Camera::start(
                &dirs.run(),
                frames.clone(),
                u32::from(w),
                u32::from(h),
                fps,
            ));
            let web = Web::start(&dirs);
            let cookie = http::login(web.addr, "admin", "bench password").unwrap();
            let measuring = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let lat = Arc::new(Mutex::new(Vec::<u64>::with_capacity(1 << 16)));
            let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let threads: Vec<_> = (0..viewers)
                .map(|_| {
                    let (cookie, camera, measuring, stop, lat, delivered) = (
                        cookie.clone(),
                        camera.clone(),
                        measuring.clone(),
                        stop.clone(),
                        lat.clone(),
                        delivered.clone(),
                    );
                    let addr = web.addr;
                    std::thread::spawn(move || {
                        let mut s = MjpegStream::open(addr, "/stream.mjpg", Some(&cookie)).unwrap();
                        let mut last_seq = 0;
                        let mut mine = Vec::with_capacity(4096);
                        while !stop.load(Ordering::Relaxed) {
                            let Ok(part) = s.next_part() else { break };
                            let at = ipc::service::monotonic_ns();
                            let seq: u64 = part
                                .header("x-mecam-seq")
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            if seq == 0 || seq == last_seq {
                                continue;
                            }
                            last_seq = seq;
                            if measuring.load(Ordering::Relaxed) {
                                delivered.fetch_add(1, Ordering::Relaxed);
                                if let Some((_, committed)) = camera.frame_for(seq) {
                                    mine.push(at.saturating_sub(committed));
                                }
                            }
                        }
                        lat.lock().unwrap().extend(mine);
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs(2));
            let cpu0 = thread_cpu_ns(web.pid());
            let t0 = Instant::now();
            measuring.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(secs));
            measuring.store(false, Ordering::Relaxed);
            let cpu = cpu_between(&cpu0, &thread_cpu_ns(web.pid())).as_secs_f64();
            let elapsed = t0.elapsed().as_secs_f64();
            let rss = web.rss_kib() as f64 / 1024.0;
            stop.store(true, Ordering::Relaxed);
            drop(web);
            for t in threads {
                let _ = t.join();
            }
            let n = delivered.load(Ordering::Relaxed);
            let mut l = std::mem::take(&mut *lat.lock().unwrap());
            l.sort_unstable();
            println!(
                "{:>10} {:>4} {:>8.0} {:>9} {:>10} {:>12.1} {:>9.1} {:>11.1} {:>9.2} {:>9.2}",
                format!("{w}x{h}"),
                fps,
                avg_kb,
                viewers,
                n,
                if n > 0 {
                    cpu / n as f64 * 1e6
                } else {
                    f64::NAN
                },
                cpu / elapsed * 100.0,
                rss,
                percentile(&l, 0.5),
                percentile(&l, 0.99)
            );
            drop(camera);
        }
    }
}
