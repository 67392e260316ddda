//! Journal records of motion events: one at start and one at end, each with a fixed
//! `MESSAGE_ID` so that `journalctl MESSAGE_ID=...` lists them, and `MECAM_*` fields.
//!
//! The fields are ordinary `tracing` fields. `ipc::service::init_tracing` installs the
//! journald layer without a field prefix, and that layer upper-cases field names: the field
//! `message_id` arrives in the journal as `MESSAGE_ID`, `mecam_event_id` as `MECAM_EVENT_ID`.
//! On stderr the same line is printed with the same fields.

use std::path::Path;

use events::EventMeta;

/// `MESSAGE_ID` of a motion start record.
pub const START_MESSAGE_ID: &str = "8d6f2c1e4b7a4e0f9c3d5a1b2e6f7081";
/// `MESSAGE_ID` of a motion end record.
pub const END_MESSAGE_ID: &str = "3a9e5b7c1d2f4a6b8c0e1f2a3b4c5d6e";

fn boxes_text(boxes: &[[f32; 4]]) -> String {
    serde_json::to_string(boxes).expect("boxes serialise")
}

/// Logs a motion start: `clip` is the clip's path when the recorder has one.
pub fn log_start(meta: &EventMeta, clip: Option<&Path>) {
    let (id, score, area_pct) = (&meta.id, meta.peak_score, meta.peak_area_pct);
    tracing::info!(
        message_id = START_MESSAGE_ID,
        mecam_event_id = %id,
        mecam_start_unix_ms = meta.start_unix_ms,
        mecam_score = format_args!("{score:.2}"),
        mecam_area_pct = format_args!("{area_pct:.2}"),
        mecam_boxes = %boxes_text(&meta.boxes),
        mecam_clip = clip.map(|c| tracing::field::display(c.display())),
        "motion start: event {id}, largest object {score:.1}% of the frame"
    );
}

/// Logs a motion end, once the recorder has closed the event and written its final
/// `event.json`: `mecam_state` says whether it was recorded (`complete`) or not (`failed`,
/// with `mecam_error` saying why), and `mecam_end_reason` why it ended (`write-failed` when
/// the disk let it down). `clip` is the clip's path when there is one.
pub fn log_end(meta: &EventMeta, clip: Option<&Path>) {
    let (id, score, area_pct) = (&meta.id, meta.peak_score, meta.peak_area_pct);
    let reason = meta.end_reason.map_or("unknown", |r| r.as_str());
    let state = serde_json::to_value(meta.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let clip = clip.map(|c| tracing::field::display(c.display()));
    // One record, at error level when the clip failed: tracing takes the level at compile
    // time, so the fields are written once here for both.
    macro_rules! end_record {
        ($level:ident, $($tail:tt)+) => {
            tracing::$level!(
                message_id = END_MESSAGE_ID,
                mecam_event_id = %id,
                mecam_start_unix_ms = meta.start_unix_ms,
                mecam_end_unix_ms = meta.end_unix_ms,
                mecam_score = format_args!("{score:.2}"),
                mecam_area_pct = format_args!("{area_pct:.2}"),
                mecam_boxes = %boxes_text(&meta.boxes),
                mecam_clip = clip,
                mecam_end_reason = reason,
                mecam_state = %state,
                $($tail)+
            )
        };
    }
    match meta.clip_error.as_deref() {
        None => end_record!(
            info,
            "motion end: event {id}, largest object {score:.1}% of the frame ({reason})"
        ),
        Some(error) => end_record!(
            error,
            mecam_error = error,
            "motion end: event {id}, largest object {score:.1}% of the frame ({reason}): {state}, {error}"
        ),
    }
}
