//! Connections: slow clients that trickle their request heads, from one address or from many,
//! never shut out a new client; one address never holds more than its share; the global bound
//! still refuses a newcomer when every connection is busy; live viewers are never evicted.
//!
//! All of 127.0.0.0/8 is loopback: client sockets are bound to 127.0.0.x before connecting, so
//! one test plays many client addresses.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mecam_system_tests::http;

use crate::harness::{Dirs, Web, metric, poll, set_password};

const PW: &str = "connections test password";

/// Connects to `to` from the loopback address `from`.
fn connect_from(rt: &tokio::runtime::Runtime, from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((from, 0))).unwrap();
        let s = sock.connect(to).await.unwrap();
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s
    })
}

/// Connects from `from` and sends `GET path` with the session `cookie`, reading nothing.
fn send_get(
    rt: &tokio::runtime::Runtime,
    from: Ipv4Addr,
    to: SocketAddr,
    path: &str,
    cookie: &str,
) -> TcpStream {
    let mut s = connect_from(rt, from, to);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    s
}

/// Reads the start of the answer's status line (10 s at most): a 200.
fn expect_200(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Whether the server still holds `s` open (a closed one reads as EOF or an error; an open
/// one has data waiting or none yet).
fn alive(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = match s.peek(&mut [0u8; 1]) {
        Ok(n) => n > 0,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    r
}

/// One `GET /healthz` on a fresh connection from `from`: the status, or 0 if the connection
/// was closed without an answer.
fn fresh_get(rt: &tokio::runtime::Runtime, from: Ipv4Addr, to: SocketAddr) -> u16 {
    let mut s = connect_from(rt, from, to);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return 0;
    }
    let mut got = Vec::new();
    let _ = s.take(4096).read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A request head that never ends: its last header line goes on for ever.
const HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
/// A request whose body never ends (it announces more than will ever come).
const BODY: &[u8] = b"POST /login HTTP/1.1\r\nHost: x\r\nOrigin: http://x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\npassword=";

/// A slow-client attacker: keeps `count` connections open from `sources` (round robin), each
/// sending `start` then trickling one more byte at a time and never finishing; a connection
/// the server closes is opened again at once.
struct Trickler {
    stop: Arc<AtomicBool>,
    /// Connections opened so far (first ones and re-opened ones).
    opened: Arc<AtomicU64>,
    /// Full passes over every connection.
    rounds: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trickler {
    fn start(
        to: SocketAddr,
        sources: Vec<Ipv4Addr>,
        count: usize,
        start: &'static [u8],
    ) -> Trickler {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let rounds = Arc::new(AtomicU64::new(0));
        let (st, op, rd) = (stop.clone(), opened.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let rt = runtime();
            let open = |i: usize| {
                let mut s = connect_from(&rt, sources[i % sources.len()], to);
                op.fetch_add(1, Ordering::Relaxed);
                let _ = s.write_all(start);
                s.set_nonblocking(true).unwrap();
                s
            };
            let mut conns: Vec<TcpStream> = Vec::with_capacity(count);
            // Bounded: the test stops it; a stuck server ends it after ten minutes.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                for i in 0..count {
                    if st.load(Ordering::Relaxed) {
                        break;
                    }
                    if i >= conns.len() {
                        conns.push(open(i));
                        continue;
                    }
                    let closed = match conns[i].peek(&mut [0u8; 1]) {
                        Ok(_) => true,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    };
                    if closed || conns[i].write(b"a").is_err() {
                        conns[i] = open(i);
                    }
                }
                rd.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Trickler {
            stop,
            opened,
            rounds,
            thread: Some(thread),
        }
    }

    /// Waits until every connection was opened and trickled at least twice.
    fn wait_running(&self) {
        poll(
            Duration::from_secs(120),
            "the trickler's first rounds",
            || self.rounds.load(Ordering::Relaxed) >= 3,
        );
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `/metrics` with HTTP Basic, from `from`.
fn metrics_from(rt: &tokio::runtime::Runtime, from: Ipv4Addr, web: &Web) -> String {
    use base64::Engine as _;
    let mut s = connect_from(rt, from, web.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PW}").as_bytes());
    // While every slot is still taken the server may refuse (close) this connection at
    // once: then there is no answer, and the caller's poll asks again.
    if write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return String::new();
    }
    let mut got = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

/// Fresh requests from `from` while the trickler runs: every one must be answered 200.
fn fresh_requests_all_succeed(rt: &tokio::runtime::Runtime, web: &Web, from: Ipv4Addr) {
    const FRESH: usize = 50;
    let started = Instant::now();
    let ok = (0..FRESH)
        .filter(|_| fresh_get(rt, from, web.addr) == 200)
        .count();
    eprintln!(
        "{ok}/{FRESH} fresh requests from {from} answered in {:?}",
        started.elapsed()
    );
    assert_eq!(
        ok,
        FRESH,
        "fresh clients were shut out by slow ones:\n{}",
        web.log()
    );
}

/// Lines of the log that contain `what`.
fn lines_with(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn five_hundred_trickling_connections_from_one_address_never_shut_out_a_new_client() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let rt = runtime();
    let flood = Trickler::start(web.addr, vec![Ipv4Addr::new(127, 0, 0, 1)], 500, HEAD);
    flood.wait_running();
    fresh_requests_all_succeed(&rt, &web, Ipv4Addr::new(127, 0, 0, 2));
    let m = metrics_from(&rt, Ipv4Addr::new(127, 0, 0, 2), &web);
    let open = metric(&m, "mecam_web_connections").unwrap();
    let evicted = metric(&m, "mecam_web_connections_evicted_total").unwrap();
    let opened = flood.opened.load(Ordering::Relaxed);
    eprintln!("{opened} slow connections opened, {evicted} evicted, {open} open now");
    // 127.0.0.1 holds at most its share (16 by default); the rest is this probe's own and
    // the last fresh requests' still closing.
    assert!(open <= 20.0, "{open} connections open");
    assert!(evicted >= 100.0, "{evicted} evicted");
    drop(flood);
    // Every eviction is counted, but the log gets one line per interval, not one per client.
    let log = web.log();
    assert!(
        lines_with(&log, "evict") <= 10,
        "{} eviction lines:\n{log}",
        lines_with(&log, "evict")
    );
}

#[test]
fn five_hundred_trickling_connections_from_many_addresses_never_shut_out_a_new_client() {
    let dirs = Dirs::new("max_connections = 64");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let rt = runtime();
    // A live viewer from its own address, before the flood: it must keep streaming.
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let mut viewer = connect_from(&rt, Ipv4Addr::new(127, 0, 2, 1), web.addr);
    write!(
        viewer,
        "GET /stream.mjpg HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let viewer_bytes = Arc::new(AtomicU64::new(0));
    let viewer_closed = Arc::new(AtomicBool::new(false));
    let reader = {
        let (bytes, closed) = (viewer_bytes.clone(), viewer_closed.clone());
        let mut v = viewer.try_clone().unwrap();
        v.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match v.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.fetch_add(n as u64, Ordering::Relaxed),
                };
            }
            closed.store(true, Ordering::Relaxed);
        })
    };
    poll(Duration::from_secs(20), "the viewer's first part", || {
        viewer_bytes.load(Ordering::Relaxed) > 0
    });
    // 500 slow connections over 50 addresses, 10 each: under the per-address limit, far over
    // the global one.
    let sources: Vec<Ipv4Addr> = (10..60).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect();
    let flood = Trickler::start(web.addr, sources, 500, HEAD);
    flood.wait_running();
    let before = viewer_bytes.load(Ordering::Relaxed);
    fresh_requests_all_succeed(&rt, &web, Ipv4Addr::new(127, 0, 3, 1));
    let m = metrics_from(&rt, Ipv4Addr::new(127, 0, 3, 1), &web);
    let open = metric(&m, "mecam_web_connections").unwrap();
    let evicted = metric(&m, "mecam_web_connections_evicted_total").unwrap();
    eprintln!(
        "{} slow connections opened, {evicted} evicted, {open} open now",
        flood.opened.load(Ordering::Relaxed)
    );
    assert!(open <= 64.0, "{open} connections open past max_connections");
    assert!(evicted >= 100.0, "{evicted} evicted");
    // The viewer was never taken for idle: it is open and still gets parts.
    poll(Duration::from_secs(10), "more parts for the viewer", || {
        viewer_bytes.load(Ordering::Relaxed) > before
    });
    assert!(
        !viewer_closed.load(Ordering::Relaxed),
        "the viewer was closed"
    );
    drop(flood);
    let _ = viewer.shutdown(std::net::Shutdown::Both);
    reader.join().unwrap();
}

#[test]
fn five_hundred_trickling_request_bodies_from_many_addresses_never_shut_out_a_new_client() {
    // A request whose body the server is waiting for is the client's to finish, like a head:
    // it gives way to a new client too (a long request timeout, so only eviction helps).
    let dirs = Dirs::new("max_connections = 64\nrequest_timeout_s = 60");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let rt = runtime();
    let sources: Vec<Ipv4Addr> = (10..60).map(|i| Ipv4Addr::new(127, 0, 5, i)).collect();
    let flood = Trickler::start(web.addr, sources, 500, BODY);
    flood.wait_running();
    fresh_requests_all_succeed(&rt, &web, Ipv4Addr::new(127, 0, 6, 1));
    let m = metrics_from(&rt, Ipv4Addr::new(127, 0, 6, 1), &web);
    let evicted = metric(&m, "mecam_web_connections_evicted_total").unwrap();
    eprintln!(
        "{} slow bodies opened, {evicted} evicted",
        flood.opened.load(Ordering::Relaxed)
    );
    assert!(evicted >= 100.0, "{evicted} evicted");
}

#[test]
fn one_address_holds_at_most_its_limit_and_its_oldest_idle_connection_makes_room() {
    let dirs = Dirs::new("max_connections_per_client = 4\nmax_streams = 8");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let rt = runtime();
    let me = Ipv4Addr::new(127, 0, 0, 3);
    // Ten idle connections, oldest first.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(connect_from(&rt, me, web.addr));
        // Each accepted before the next (they are told apart by age).
        poll(Duration::from_secs(10), "the connection accepted", || {
            let m = metrics_from(&rt, Ipv4Addr::new(127, 0, 0, 4), &web);
            metric(&m, "mecam_web_connections_evicted_total").unwrap()
                >= idle.len().saturating_sub(4) as f64
        });
    }
    poll(Duration::from_secs(10), "only four left open", || {
        idle.iter().filter(|s| alive(s)).count() == 4
    });
    let open: Vec<bool> = idle.iter().map(alive).collect();
    assert_eq!(
        open,
        [
            false, false, false, false, false, false, true, true, true, true
        ],
        "the oldest were evicted"
    );
    // A fresh request from the same address is served (its own oldest idle one makes room).
    assert_eq!(fresh_get(&rt, me, web.addr), 200);
    drop(idle);
    // Four busy connections (live streams) from that address: nothing idle to evict, so a
    // fifth from it is refused, while another address is served.
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let mut streams: Vec<TcpStream> = (0..4)
        .map(|_| send_get(&rt, me, web.addr, "/stream.mjpg", &cookie))
        .collect();
    for s in &mut streams {
        expect_200(s);
    }
    // (The idle ones dropped above may still be closing at the first try.)
    poll(
        Duration::from_secs(10),
        "a fifth connection from 127.0.0.3 refused",
        || fresh_get(&rt, me, web.addr) == 0,
    );
    assert_eq!(fresh_get(&rt, Ipv4Addr::new(127, 0, 0, 4), web.addr), 200);
    assert!(streams.iter().all(alive), "a stream was evicted");
    let m = metrics_from(&rt, Ipv4Addr::new(127, 0, 0, 4), &web);
    assert!(metric(&m, "mecam_web_connections_refused_total").unwrap() >= 1.0);
    poll(Duration::from_secs(10), "the refusal logged", || {
        web.log().contains("refused a connection")
    });
}

#[test]
fn connections_past_the_bound_are_refused_only_when_none_is_idle() {
    let dirs = Dirs::new("max_connections = 4\nmax_streams = 2\nrequest_timeout_s = 30");
    set_password(&dirs, PW);
    let web = Web::start(&dirs);
    let rt = runtime();
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let probe = Ipv4Addr::new(127, 0, 0, 9);
    let connections = || metric(&metrics_from(&rt, probe, &web), "mecam_web_connections");
    poll(Duration::from_secs(10), "no other connection", || {
        connections() == Some(1.0)
    });
    // Busy: two streams and two downloads (each from its own address, so only the global
    // bound counts).
    let mut busy = Vec::new();
    for i in 0..2u8 {
        let from = Ipv4Addr::new(127, 0, 4, i + 1);
        let mut s = send_get(&rt, from, web.addr, "/stream.mjpg", &cookie);
        expect_200(&mut s);
        busy.push(s);
    }
    // Two downloads of a clip bigger than the socket buffers, never read: the server is
    // writing, not waiting on the client.
    let clip_dir = dirs.events().join("20261124T182900Z-0001");
    std::fs::create_dir(&clip_dir).unwrap();
    std::fs::write(clip_dir.join("clip.avi"), vec![0x55u8; 64 << 20]).unwrap();
    for i in 0..2u8 {
        let from = Ipv4Addr::new(127, 0, 4, i + 3);
        let mut s = send_get(
            &rt,
            from,
            web.addr,
            "/events/20261124T182900Z-0001/clip.avi",
            &cookie,
        );
        expect_200(&mut s);
        busy.push(s);
    }
    // Every slot is busy: a newcomer is refused (the probe's own connection may still be
    // closing at the first try, so the first may be served).
    poll(
        Duration::from_secs(10),
        "a fifth connection refused",
        || fresh_get(&rt, Ipv4Addr::new(127, 0, 4, 9), web.addr) == 0,
    );
    assert!(busy.iter().all(alive), "a busy connection was evicted");
    poll(Duration::from_secs(10), "the refusal logged", || {
        web.log().contains("refused a connection")
    });
    // An idle connection in a slot: the next newcomer evicts it instead of being refused.
    drop(busy.pop());
    poll(Duration::from_secs(10), "the slot free", || {
        connections() == Some(4.0)
    });
    let sleeper = connect_from(&rt, Ipv4Addr::new(127, 0, 4, 10), web.addr);
    assert_eq!(fresh_get(&rt, Ipv4Addr::new(127, 0, 4, 11), web.addr), 200);
    poll(Duration::from_secs(10), "the sleeper evicted", || {
        !alive(&sleeper)
    });
    assert!(busy.iter().all(alive), "a busy connection was evicted");
    let m = metrics_from(&rt, probe, &web);
    assert!(metric(&m, "mecam_web_connections_refused_total").unwrap() >= 1.0);
    assert!(metric(&m, "mecam_web_connections_evicted_total").unwrap() >= 1.0);
}
