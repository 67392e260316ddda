//! The counters: the systemd status line, and the log every 10 minutes and at exit.

use ipc::announce::ClientStats;
use ipc::service::Notifier;

use super::FrameGate;
use crate::analyzer::Analyzer;
use crate::recorder::{DiskState, RecorderStats};

/// The counters, for `systemctl status` and the periodic log line.
pub(super) fn status_text(
    camera_ok: bool,
    events: u64,
    a: &Analyzer,
    (c, r, gate, disk): (ClientStats, RecorderStats, &FrameGate, &DiskState),
) -> String {
    let (sel, st) = (a.selection(), a.stats());
    let disk = match disk {
        DiskState::Ok => "events disk ok".to_owned(),
        bad => format!("events disk {}: recording nothing", bad.describe()),
    };
    format!(
        "camera {}; {disk}; {} frames, {} analysed, {} not due, {} gaps, {} repeated seq, {} duplicate, {} corrupt, {}, {} grey, {} re-learns, {} torn; {events} events, {} clip frames dropped",
        if camera_ok { "streaming" } else { "away" },
        c.frames,
        sel.analysed,
        sel.skipped,
        sel.gaps,
        sel.duplicates,
        st.duplicates,
        st.corrupt + c.corrupt,
        gate.describe(),
        st.grey,
        st.relearns,
        c.torn,
        r.dropped,
    )
}

/// Sets the systemd status line to the counters (MQTT's too, when on) and, with `log`, logs
/// them with a field each.
pub(super) fn report_status(
    camera_ok: bool,
    events: u64,
    a: &Analyzer,
    (c, r, gate, disk): (ClientStats, RecorderStats, &FrameGate, &DiskState),
    mqtt: Option<String>,
    log: bool,
) {
    let mut text = status_text(camera_ok, events, a, (c, r, gate, disk));
    if let Some(m) = mqtt {
        text.push_str("; ");
        text.push_str(&m);
    }
    Notifier.status(&text);
    if !log {
        return;
    }
    let (sel, st) = (a.selection(), a.stats());
    tracing::info!(
        frames = c.frames,
        analysed = sel.analysed,
        skipped = sel.skipped,
        gaps = sel.gaps,
        seq_duplicates = sel.duplicates,
        duplicates = st.duplicates,
        corrupt = st.corrupt + c.corrupt,
        rejected = gate.rejected(),
        grey = st.grey,
        scene_changes = st.scene_changes,
        relearns = st.relearns,
        torn = c.torn,
        clip_dropped = r.dropped,
        heap = %ipc::heap::stats(),
        "status: {text}"
    );
}
