//! The floor of a delivered frame on this machine: what any server pays to be woken once per
//! frame and write it into one viewer's loopback TCP connection, with nothing else. Built by
//! `scripts/bench-live` with plain `rustc -O` (no crates).
//!
//! A pacing thread sends one byte per frame period over a Unix socket pair (as capture-svc's
//! announcement wakes web-svc); the measured thread sleeps in `read(2)` on it, and in the second
//! phase also writes the frame with one `write_all` into a TCP connection on 127.0.0.1 that a
//! third thread reads and discards (the viewer's part). Only the measured thread's on-CPU time
//! is counted (`/proc/thread-self/schedstat`), over the same frames at the same rate as the
//! bench. On loopback the receiving side's TCP work runs in the sender's system call, so it is
//! counted, as it is in web-svc's figure.
//!
//! Usage: wake_floor FPS FRAMES FILE...   prints "WAKE_NS WAKE_AND_WRITE_NS" per frame.
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn on_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace().next().and_then(|v| v.parse().ok()).expect("schedstat field")
}

/// Sends a byte every `period`, `n` times, on a fixed schedule.
fn pace(mut tx: UnixStream, period: Duration, n: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now();
        for _ in 0..n {
            next += period;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            tx.write_all(&[1]).expect("pace");
        }
    })
}

/// Per frame: woken by the pacer, then (with `out`) the frame written. On-CPU ns per frame,
/// not counting the first `warm` frames.
fn phase(frames: &[Vec<u8>], period: Duration, n: usize, mut out: Option<&mut TcpStream>) -> u64 {
    let warm = 15;
    let (tx, mut rx) = UnixStream::pair().expect("socket pair");
    let pacer = pace(tx, period, n + warm);
    let mut byte = [0u8; 1];
    let mut start = 0;
    for i in 0..n + warm {
        if i == warm {
            start = on_cpu_ns();
        }
        rx.read_exact(&mut byte).expect("wake");
        if let Some(out) = out.as_deref_mut() {
            out.write_all(&frames[i % frames.len()]).expect("write");
        }
    }
    let spent = on_cpu_ns() - start;
    pacer.join().expect("pacer");
    spent / n as u64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: wake_floor FPS FRAMES FILE...";
    let fps: u32 = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let n: usize = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let frames: Vec<Vec<u8>> = args
        .map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}")))
        .collect();
    assert!(!frames.is_empty(), "{usage}");
    let period = Duration::from_secs(1) / fps;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let viewer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 64 * 1024];
        while s.read(&mut buf).is_ok_and(|r| r > 0) {}
    });
    let mut out = TcpStream::connect(addr).expect("connect");
    out.set_nodelay(true).expect("nodelay");
    let wake = phase(&frames, period, n, None);
    let write = phase(&frames, period, n, Some(&mut out));
    drop(out);
    viewer.join().expect("viewer");
    println!("{wake} {write}");
}
