//! The live fan-out: one task follows `capture-svc`'s announcements (through [`FrameSource`],
//! which [`ipc::announce::FrameClient`] implements) and keeps the camera's state and the
//! newest frame's place in the shared region; the [`Hub`] copies a frame out of the region only
//! when someone will use it: at once while viewers stream, on demand for a snapshot or a viewer
//! that joins. With nobody watching, nothing is copied. A copy goes into a small pool of
//! reusable reference-counted buffers and is published to every viewer through one `watch`
//! channel: each frame is copied out of shared memory at most once, whatever the number of
//! viewers; a viewer holds a reference to at most the frame it is sending and sees only the
//! newest one after that, so a slow viewer skips frames and nothing ever queues.
//!
//! When the camera is gone (capture-svc unreachable, not streaming, or no frame for
//! [`OFFLINE_AFTER`]) the task publishes a "camera offline" placeholder once a second instead.

mod feeder;
mod hub;
#[cfg(test)]
mod tests;

use std::time::Duration;

use ipc::announce::{Announcement, FrameClient};

pub use feeder::Feeder;
pub use hub::{CameraStatus, Frame, Hub, Metrics};

/// Buffers kept for reuse. A buffer is reused once no viewer holds it; viewers hold at most
/// the frame they are writing, so a handful covers the steady state and more are only
/// allocated (and then freed) while many viewers lag on different frames.
pub const POOL_SIZE: usize = 8;
/// The camera counts as offline when no frame has come for this long.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(2);
/// How often the offline placeholder is re-rendered (it shows the time).
pub const OFFLINE_PERIOD: Duration = Duration::from_secs(1);
/// While someone watches, the fan-out also turns this often with no announcement, to notice a
/// camera that went quiet (the offline frame is due [`OFFLINE_AFTER`] after its last frame).
pub const TICK: Duration = Duration::from_millis(250);
/// With nobody watching, the fan-out turns only this often (or when a viewer joins) to read
/// what was announced meanwhile: the camera's state and rate for the status, and proof for the
/// watchdog that the task turns. Between turns the connection to capture-svc is parked, so
/// frames wake nothing. A second keeps the status that fresh, and the announcements of a
/// second (a few hundred bytes at 30 fps) stay far below what the socket holds, so
/// capture-svc's idle timeout (its writes blocking for 5 s) is never near.
pub const IDLE_TICK: Duration = Duration::from_secs(1);
/// The multipart boundary of every MJPEG stream.
pub const BOUNDARY: &str = "mecamframe";

/// Where announcements come from: the announce client in the service, a script in tests. The
/// frames themselves are read from the region the hello names.
pub trait FrameSource: Send {
    /// Waits for the next event; a frame is announced, not copied.
    fn next(&mut self) -> impl Future<Output = Announcement> + Send;
    /// The next event already received, without waiting; in between, arriving events should
    /// wake nothing. `None` when there is none, or when waiting is needed (connecting).
    fn try_next(&mut self) -> Option<Announcement>;
    /// Whether connected: [`FrameSource::try_next`] only reads an open connection.
    fn is_connected(&self) -> bool;
}

impl FrameSource for FrameClient {
    fn next(&mut self) -> impl Future<Output = Announcement> + Send {
        FrameClient::next_announcement(self)
    }

    fn try_next(&mut self) -> Option<Announcement> {
        FrameClient::try_next_announcement(self)
    }

    fn is_connected(&self) -> bool {
        FrameClient::is_connected(self)
    }
}
