//! The frame gate: every frame's headers are checked before anything reads the frame.

use ipc::jpeg::{FrameLimits, FrameRejected};

/// Every [`FrameRejected`] kind, in the order the status line names them.
const REJECT_KINDS: [&str; 5] = [
    "too_large",
    "too_much_memory",
    "not_jpeg",
    "truncated",
    "unsupported",
];

/// The gate every frame passes before it is decoded or recorded: [`ipc::jpeg::check`]
/// against the camera's announced geometry ([`FrameLimits::for_camera`]) and the decode
/// memory budget, with a count per reason.
#[derive(Debug, Clone)]
pub struct FrameGate {
    limits: FrameLimits,
    rejected: [u64; REJECT_KINDS.len()],
}

impl Default for FrameGate {
    fn default() -> Self {
        FrameGate {
            limits: FrameLimits::default(),
            rejected: [0; REJECT_KINDS.len()],
        }
    }
}

impl FrameGate {
    /// The camera announced `width` x `height` (0 when unknown). Returns whether that changed
    /// the limits.
    pub fn set_camera(&mut self, width: u32, height: u32) -> bool {
        let limits = FrameLimits::for_camera(width, height);
        let changed = limits != self.limits;
        self.limits = limits;
        changed
    }

    /// The limits frames are checked against.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Checks one frame's headers; a refused frame is counted.
    ///
    /// # Errors
    /// Why the frame must be neither decoded nor recorded.
    pub fn check(&mut self, jpeg: &[u8]) -> Result<(), FrameRejected> {
        let r = match ipc::jpeg::check(jpeg, &self.limits) {
            Ok(_) => return Ok(()),
            Err(r) => r,
        };
        if let Some(i) = REJECT_KINDS.iter().position(|k| *k == r.kind()) {
            self.rejected[i] += 1;
        }
        Err(r)
    }

    /// Frames refused in all.
    pub fn rejected(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// `N rejected`, and the count of each reason seen, e.g.
    /// `3 rejected (2 too large, 1 too much memory)`.
    pub(super) fn describe(&self) -> String {
        let mut s = format!("{} rejected", self.rejected());
        let parts: Vec<String> = REJECT_KINDS
            .iter()
            .zip(self.rejected)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
            .collect();
        if !parts.is_empty() {
            s.push_str(&format!(" ({})", parts.join(", ")));
        }
        s
    }
}
