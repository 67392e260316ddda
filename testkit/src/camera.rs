//! The in-process test camera: a real frame region and announce server (the publishing half
//! of capture-svc), either in the caller's tokio runtime ([`Publisher`]) or on a thread of its
//! own publishing at a frame rate until stopped ([`Camera`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipc::announce::{AnnounceHandle, AnnounceServer, Hello, ServerConfig};
use ipc::region::{FrameInfo, FrameMeta, PublishError, RegionWriter};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long [`Camera::start`] waits for its thread to bind the region and the socket.
pub const CAMERA_READY: Duration = Duration::from_secs(20);

/// What a test camera announces, and its region's slot capacity.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Frame width in the hello and in each frame's info.
    pub width: u32,
    /// Frame height in the hello and in each frame's info.
    pub height: u32,
    /// Frames per second: announced in the hello, and [`Camera`]'s publishing rate.
    pub fps: f64,
    /// Region slot capacity: the largest frame it can publish.
    pub slot: usize,
    /// The source name in the hello.
    pub source: &'static str,
}

/// A frame region at `dir/frames` and an announce server at `dir/capture.sock`.
#[derive(Debug)]
pub struct Publisher {
    /// The region.
    pub writer: RegionWriter,
    /// Announces what the writer commits.
    pub handle: AnnounceHandle,
    /// The announce socket's path.
    pub socket: PathBuf,
    width: u32,
    height: u32,
}

impl Publisher {
    /// Creates the region and binds the socket in `dir`, and spawns the server on the current
    /// tokio runtime until `shutdown` completes (it then removes the socket).
    ///
    /// # Panics
    /// Outside a tokio runtime, or when the region or the socket cannot be made.
    pub fn start(
        dir: &Path,
        stream: &Stream,
        config: ServerConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (Publisher, JoinHandle<()>) {
        let writer = RegionWriter::create(&dir.join("frames"), stream.slot)
            .unwrap_or_else(|e| panic!("test camera region in {}: {e}", dir.display()));
        let hello = Hello::streaming(
            &writer,
            stream.width,
            stream.height,
            stream.fps as f32,
            stream.source,
        );
        let socket = dir.join("capture.sock");
        let server = AnnounceServer::bind(&socket, hello, config)
            .unwrap_or_else(|e| panic!("test camera socket {}: {e}", socket.display()));
        let handle = server.handle();
        let task = tokio::spawn(server.run(shutdown));
        let publisher = Publisher {
            writer,
            handle,
            socket,
            width: stream.width,
            height: stream.height,
        };
        (publisher, task)
    }

    /// Commits `bytes` as a JPEG of the stream's size, stamped now, and announces it.
    ///
    /// # Errors
    /// The region refused the frame (larger than a slot).
    pub fn try_publish(&mut self, bytes: &[u8]) -> Result<FrameMeta, PublishError> {
        let meta = self.commit(bytes)?;
        self.handle.frame(&meta);
        Ok(meta)
    }

    /// Commits `bytes` as a JPEG of the stream's size, stamped now, without announcing it
    /// (the caller announces it through [`Publisher::handle`]).
    ///
    /// # Errors
    /// The region refused the frame (larger than a slot).
    pub fn commit(&mut self, bytes: &[u8]) -> Result<FrameMeta, PublishError> {
        let info = FrameInfo::jpeg_now(self.width, self.height);
        self.writer.publish(&info, bytes)
    }

    /// [`Publisher::try_publish`] for a frame that fits.
    ///
    /// # Panics
    /// The region refused the frame.
    pub fn publish(&mut self, bytes: &[u8]) -> FrameMeta {
        self.try_publish(bytes)
            .unwrap_or_else(|e| panic!("test camera publish: {e}"))
    }

    /// Commits `bytes` with `info` and announces it.
    ///
    /// # Errors
    /// The region refused the frame (larger than a slot).
    pub fn publish_info(
        &mut self,
        info: &FrameInfo,
        bytes: &[u8],
    ) -> Result<FrameMeta, PublishError> {
        let meta = self.writer.publish(info, bytes)?;
        self.handle.frame(&meta);
        Ok(meta)
    }
}

/// A [`Publisher`] on a thread and runtime of its own, calling `next` once a frame period
/// (missed periods are skipped, as a camera drops them). Stopping it (or dropping it) stops
/// the server, which removes the socket, and removes the region, like capture-svc going away.
#[derive(Debug)]
pub struct Camera {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Camera {
    /// Starts publishing into `runtime_dir`: each frame period, `next(n, publisher)` publishes
    /// frame `n` (from 0). Returns once the socket answers.
    ///
    /// # Panics
    /// The camera did not start within [`CAMERA_READY`].
    pub fn start(
        runtime_dir: &Path,
        stream: Stream,
        mut next: impl FnMut(u64, &mut Publisher) + Send + 'static,
    ) -> Camera {
        let dir = runtime_dir.to_owned();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the test camera");
            rt.block_on(async move {
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                let (mut publisher, server) =
                    Publisher::start(&dir, &stream, ServerConfig::default(), shutdown);
                let _ = ready_tx.send(());
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / stream.fps));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut n = 0u64;
                while !server.is_finished() {
                    tick.tick().await;
                    next(n, &mut publisher);
                    n += 1;
                }
                let _ = server.await;
                let _ = publisher.writer.remove();
            });
        });
        ready_rx
            .recv_timeout(CAMERA_READY)
            .expect("the test camera starts");
        Camera {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops publishing; the socket and the region are gone when it returns.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop();
    }
}
