//! A fake `NOTIFY_SOCKET`: the datagram socket systemd gives a `Type=notify` service, bound in
//! the test's own directory and read by the test.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The largest datagram read; sd_notify messages are a few lines.
pub const DATAGRAM_MAX: usize = 4096;

/// How long one read waits, so that a reader notices its deadline or its stop flag.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// A bound notify socket; the service is given [`NotifySocket::env`].
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds `path` (in the test's own directory).
    ///
    /// # Panics
    /// The socket cannot be bound (the path is taken or too long).
    pub fn bind(path: &Path) -> NotifySocket {
        let path = path.to_owned();
        let sock = UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("binding the notify socket {}: {e}", path.display()));
        sock.set_read_timeout(Some(READ_TIMEOUT))
            .expect("a read timeout on a datagram socket");
        NotifySocket { sock, path }
    }

    /// Where it is bound.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its path as the value of `NOTIFY_SOCKET`.
    pub fn env(&self) -> String {
        self.path.display().to_string()
    }

    /// Every message received until `done` holds for those received so far, or `limit` passed.
    pub fn until(&self, limit: Duration, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let (mut got, mut buf, end) = (Vec::new(), [0u8; DATAGRAM_MAX], Instant::now() + limit);
        while !done(&got) && Instant::now() < end {
            if let Ok(n) = self.sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    }

    /// Every message received during `for_time`.
    pub fn collect(&self, for_time: Duration) -> Vec<String> {
        self.until(for_time, |_| false)
    }

    /// Every message already sent: reads until a read finds nothing within its timeout.
    pub fn drain(&self) -> Vec<String> {
        let (mut got, mut buf) = (Vec::new(), [0u8; DATAGRAM_MAX]);
        while let Ok(n) = self.sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    }

    /// Reads on a thread from now on, keeping the latest `STATUS=` line (a notify socket nobody
    /// reads fills up and blocks the sender).
    pub fn watch_status(self) -> StatusWatch {
        let latest = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (latest2, stop2) = (Arc::clone(&latest), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; DATAGRAM_MAX];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(n) = self.sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if let Some(l) = text.lines().find_map(|l| l.strip_prefix("STATUS=")) {
                        *latest2.lock().unwrap() = l.to_string();
                    }
                }
            }
        });
        StatusWatch {
            latest,
            stop,
            thread: Some(thread),
        }
    }
}

/// The latest `STATUS=` line of a [`NotifySocket`] read on a thread; the thread stops on drop.
#[derive(Debug)]
pub struct StatusWatch {
    latest: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusWatch {
    /// The latest STATUS line received so far (empty before the first).
    pub fn latest(&self) -> String {
        self.latest.lock().unwrap().clone()
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
