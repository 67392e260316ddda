//! motion-svc's status record ([`ipc::status`]): frames in and analysed, the last event,
//! recording, clip errors and bytes, retention, the events disk; written every tick of the
//! loop and once more, marked stopped, at exit.

use std::path::{Path, PathBuf};

use events::EventState;
use ipc::announce::FrameClient;
use ipc::status::{Detail, MotionStatus, MqttStatus, RateMeter, Service, StatusWriter};

use super::detection::Detection;
use crate::life::Report;
use crate::mqtt::Mqtt;
use crate::recorder::DiskState;

/// The record and what it is made from between writes.
pub(super) struct Health {
    writer: Option<StatusWriter>,
    detail: Detail,
    analysed: RateMeter,
    events_dir: PathBuf,
}

impl Health {
    /// The record of this service in `runtime_dir`; its disk figures are `events_dir`'s.
    pub(super) fn new(runtime_dir: &Path, events_dir: &Path) -> Health {
        Health {
            writer: StatusWriter::open_or_warn(runtime_dir, Service::Motion),
            detail: Detail::Motion(MotionStatus::default()),
            analysed: RateMeter::default(),
            events_dir: events_dir.to_owned(),
        }
    }

    fn motion(&mut self) -> &mut MotionStatus {
        match &mut self.detail {
            Detail::Motion(m) => m,
            _ => unreachable!("motion-svc's record holds motion's detail"),
        }
    }

    /// What the recorder said about an event: recording, the last event, clip errors and bytes.
    pub(super) fn on_report(&mut self, report: &Report) {
        match report {
            Report::Started(meta) => {
                let m = self.motion();
                m.recording = true;
                let id = m.last_event_id.get_or_insert_with(String::new);
                id.clear();
                id.push_str(ipc::status::cut_text(&meta.id));
                m.last_event_unix_ms = Some(meta.start_unix_ms);
            }
            Report::Ended(meta) => {
                let clip = meta
                    .clip
                    .as_ref()
                    .and_then(|c| std::fs::metadata(self.events_dir.join(&meta.id).join(c)).ok())
                    .map_or(0, |md| md.len());
                let failed = meta.state == EventState::Failed || meta.clip_error.is_some();
                if let (Some(why), Some(w)) = (&meta.clip_error, &mut self.writer) {
                    w.set_last_error(why);
                }
                let m = self.motion();
                m.recording = false;
                m.clip_bytes += clip;
                m.clip_errors += u64::from(failed);
            }
        }
    }

    /// Writes the record from the loop's state (and MQTT's counters, when on).
    pub(super) fn write(&mut self, det: &Detection, client: &FrameClient, mqtt: Option<&Mqtt>) {
        if self.writer.is_none() {
            return;
        }
        let analysed = det.analyzer.selection().analysed;
        let fps = self.analysed.rate(analysed, ipc::service::monotonic_ns());
        // Zeros when `statvfs` fails: the disk state says why.
        let (used, free) = events::disk_usage(&self.events_dir).unwrap_or((0, 0));
        let disk = det.recorder.disk();
        let m = self.motion();
        m.camera_ok = det.camera_ok;
        m.frames_in = client.stats().frames;
        m.frames_analysed = analysed;
        m.analysed_fps = fps;
        m.events_total = det.events;
        m.queue_dropped = det.recorder.stats().dropped;
        m.retention_deletions = det.recorder.retention_deletions();
        m.disk_used_bytes = used;
        m.disk_free_bytes = free;
        m.mqtt = mqtt.map(|q| {
            let s = q.stats();
            MqttStatus {
                connected: s.connected,
                queued: s.queued as u64,
                dropped: s.dropped,
                delivered: s.delivered,
            }
        });
        if let (DiskState::Full | DiskState::ReadOnly | DiskState::Broken(_), Some(w)) =
            (&disk, &mut self.writer)
        {
            w.set_last_error(&format!(
                "events disk {}: recording nothing",
                disk.describe()
            ));
        }
        self.publish(false);
    }

    /// The last record, as the service stops: nothing is being recorded any more.
    pub(super) fn write_stopped(&mut self) {
        self.motion().recording = false;
        self.publish(true);
    }

    fn publish(&mut self, stopped: bool) {
        if let Some(w) = &mut self.writer {
            w.publish(&self.detail, stopped);
        }
    }
}
