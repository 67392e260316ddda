//! The recorder's tests: clips, pre-capture, slow and failing disks, shutdown.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use super::writer::{Current, Writer};
use super::*;
use events::avi::{self, AviWriter};
use events::{CLIP, CLIP_PART, EventState, POSTER};
use std::time::Instant;

const MS: u64 = 1_000_000;
/// The camera's rate in these tests: a frame every 100 ms.
const FPS: f64 = 10.0;

fn config(dir: &Path) -> RecorderConfig {
    RecorderConfig {
        events_dir: dir.to_path_buf(),
        pre_capture_s: 1.0,
        start_delay_s: 1.5,
        post_capture_s: 0.5,
        max_event_s: 60.0,
        pre_capture_bytes: 1 << 20,
        queue_frames: 8,
        limits: Limits {
            max_total_bytes: 0,
            max_age_ms: 0,
            min_free_bytes: 0,
        },
        recovery_pending: false,
    }
}

/// AVI clips on a disk that takes this long per frame written: a slow SD card.
struct SlowDisk(Duration);

struct SlowClip(AviWriter, Duration);

impl ClipFiles for SlowDisk {
    fn create(
        &self,
        path: &Path,
        width: u32,
        height: u32,
        fps: f64,
        index: avi::IndexBuffer,
    ) -> std::io::Result<Box<dyn ClipSink>> {
        let avi = AviWriter::create_with(path, width, height, fps, index)?;
        Ok(Box::new(SlowClip(avi, self.0)))
    }
}

impl ClipSink for SlowClip {
    fn push(&mut self, jpeg: &[u8], mono_ns: u64) -> std::io::Result<bool> {
        std::thread::sleep(self.1);
        self.0.push(jpeg, mono_ns)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }

    fn finish(self: Box<Self>) -> (std::io::Result<usize>, avi::IndexBuffer) {
        self.0.finish_keeping()
    }
}

fn jpeg(i: u64) -> Vec<u8> {
    crate::test_jpeg::encode_gray(64, 48, &vec![(i * 7 % 256) as u8; 64 * 48], 60).unwrap()
}

fn meta(id: &str) -> EventMeta {
    EventMeta::new(id.into(), events::parse_id(id).unwrap(), 64, 48)
}

/// The end of event `id` with last motion at frame `last`.
fn end(id: &str, last: u64) -> EndInfo {
    EndInfo {
        end_unix_ms: meta(id).start_unix_ms + 1000,
        last_motion_ns: last * 100 * MS,
        peak_score: 1.0,
        peak_area_pct: 1.0,
        boxes: vec![],
        track: vec![],
        reason: EndReason::Quiet,
    }
}

fn tag(i: u64, score: Option<f32>) -> FrameTag {
    FrameTag {
        mono_ns: i * 100 * MS,
        wall_ns: 0,
        width: 64,
        height: 48,
        score,
    }
}

/// The next `Ended` report waiting in `rx`, skipping `Started` ones.
fn ended(rx: &mut tokio::sync::mpsc::Receiver<Report>) -> Option<EventMeta> {
    std::iter::from_fn(|| rx.try_recv().ok()).find_map(|r| match r {
        Report::Ended(m) => Some(m),
        Report::Started(_) => None,
    })
}

fn wait_done(r: &mut Recorder) -> EventMeta {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = ended(&mut r.reports) {
            return m;
        }
        assert!(Instant::now() < deadline, "no event completed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Hands a frame over, retrying while the pool is empty, so that tests not about drops
/// are not disturbed by a busy machine.
fn paced(r: &mut Recorder, i: u64, score: Option<f32>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = r.stats().sent;
    while r.stats().sent == sent {
        assert!(Instant::now() < deadline, "writer never took a frame");
        r.frame(&jpeg(i), tag(i, score));
        if r.stats().sent == sent {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A writer of AVI clips into `dir` whose reports queue holds `reports`, the receiving end of
/// that queue, and the receiving end of its buffer pool (kept so that returned buffers have
/// somewhere to go).
fn writer(
    dir: &Path,
    reports: usize,
) -> (
    Writer,
    tokio::sync::mpsc::Receiver<Report>,
    std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let (pool_tx, pool) = sync_channel(1);
    let (report_tx, report_rx) = tokio::sync::mpsc::channel(reports);
    let w = Writer::new(
        config(dir),
        Box::new(AviFiles),
        pool_tx,
        report_tx,
        Arc::default(),
    );
    (w, report_rx, pool)
}

#[test]
fn a_clip_has_pre_capture_event_and_post_capture_and_a_poster() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Recorder::start(config(d.path())).unwrap();
    for i in 0..30 {
        paced(&mut r, i, None);
    }
    // Motion first seen at frame 30 (3.0 s): pre-capture from 2.0 s = frame 20.
    let id = "20261124T182900Z-0001";
    r.start_event(meta(id), 30 * 100 * MS, FPS);
    for i in 30..40 {
        paced(&mut r, i, Some(if i == 35 { 9.0 } else { 1.0 }));
    }
    r.end_event(EndInfo {
        end_unix_ms: meta(id).start_unix_ms + 4000,
        last_motion_ns: 39 * 100 * MS,
        peak_score: 9.0,
        peak_area_pct: 3.0,
        boxes: vec![[0.1, 0.1, 0.2, 0.2]],
        track: vec![events::TrackFrame {
            t_ms: 600,
            boxes: vec![[0.1, 0.1, 0.2, 0.2]],
        }],
        reason: EndReason::Quiet,
    });
    // Post-capture 0.5 s: frames 40..=44 go in, 45 closes the clip.
    for i in 40..50 {
        paced(&mut r, i, None);
    }
    let m = wait_done(&mut r);
    assert_eq!(m.state, EventState::Complete);
    let dir = d.path().join(id);
    let (_, frames) = avi::read_frames(&dir.join(CLIP)).unwrap();
    assert_eq!(frames.len(), 45 - 20);
    assert_eq!(frames[0], jpeg(20));
    assert_eq!(*frames.last().unwrap(), jpeg(44));
    assert_eq!(std::fs::read(dir.join(POSTER)).unwrap(), jpeg(35));
    let on_disk = events::read_meta(&dir).unwrap();
    assert_eq!(on_disk, m);
    assert_eq!(on_disk.frames, 25);
    assert_eq!(on_disk.peak_score, 9.0);
    assert_eq!(on_disk.track.len(), 1);
    assert_eq!(on_disk.track[0].t_ms, 600);
    assert_eq!(
        on_disk.clip_lead_ms,
        Some(1000),
        "frame 20 is 1 s before the motion"
    );
    assert!(!dir.join(CLIP_PART).exists());
    assert_eq!(on_disk.end_reason, Some(EndReason::Quiet));
    assert_eq!(on_disk.clip_error, None);
    assert_eq!(events::last_counter(d.path()), 1);
}

#[test]
fn pre_capture_survives_the_wait_before_an_event_starts() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Recorder::start(config(d.path())).unwrap();
    // Motion first seen at frame 30 (3.0 s); the event is confirmed 1.2 s later (the
    // persistence time and a dropout), so Start arrives after frame 42.
    for i in 0..=42 {
        paced(&mut r, i, None);
    }
    let id = "20261124T182900Z-0004";
    r.start_event(meta(id), 30 * 100 * MS, FPS);
    r.end_event(end(id, 42));
    for i in 43..50 {
        paced(&mut r, i, None);
    }
    wait_done(&mut r);
    let (_, frames) = avi::read_frames(&d.path().join(id).join(CLIP)).unwrap();
    // First frame = first motion minus pre_capture_s (1 s) = frame 20.
    assert_eq!(frames[0], jpeg(20), "the clip lost its pre-capture");
}

#[test]
fn a_slow_disk_drops_frames_counts_them_post_capture_included_and_never_blocks() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path());
    cfg.queue_frames = 4;
    cfg.post_capture_s = 60.0;
    let slow = SlowDisk(Duration::from_millis(30));
    let mut r = Recorder::start_with(cfg, Box::new(slow)).unwrap();
    let id = "20261124T182900Z-0002";
    r.start_event(meta(id), 0, FPS);
    // 300 frames pushed as fast as possible: the writer can take only a few of them.
    // The event ends half-way; the rest falls in its post-capture.
    for i in 0..300 {
        if i == 150 {
            r.end_event(end(id, 150));
        }
        r.frame(&jpeg(i), tag(i, Some(1.0)));
    }
    let s = r.stats();
    assert!(s.dropped > 200, "{s:?}");
    assert_eq!(s.sent + s.dropped, 300);
    let m = wait_done(&mut r);
    assert!(m.dropped_frames >= s.dropped, "{m:?} {s:?}");
    assert!(m.frames <= s.sent);
}

#[test]
fn a_frame_the_full_channel_refuses_gives_its_buffer_back() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path());
    cfg.queue_frames = 2;
    let mut r = Recorder::start_with(cfg, Box::new(SlowDisk(Duration::from_secs(2)))).unwrap();
    let id = "20261124T182900Z-0005";
    r.start_event(meta(id), 0, FPS);
    // The writer sleeps 2 s on this frame while control messages fill the channel.
    paced(&mut r, 0, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.path().join(id).join(CLIP_PART).exists() {
        assert!(Instant::now() < deadline, "the event never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Frame 0 is next in the channel, ahead of every message sent from now on: the
    // writer sleeps 2 s on it before it can take any of them, so they fill the channel.
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.stats().control_lost == 0 {
        assert!(Instant::now() < deadline, "the channel never filled");
        r.reset();
    }
    r.frame(&jpeg(1), tag(1, None));
    assert_eq!(r.stats().dropped, 1, "{:?}", r.stats());
    // Once the writer has caught up, both buffers are back in the pool.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let free: Vec<_> = std::iter::from_fn(|| r.pool.try_recv().ok()).collect();
        let n = free.len();
        for b in free {
            r.pool_back.try_send(b).unwrap();
        }
        if n == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a buffer was lost: {n} of 2 free"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_clip_write_error_keeps_what_was_written_and_marks_the_event() {
    let d = tempfile::tempdir().unwrap();
    let (mut w, mut done, _pool) = writer(d.path(), 4);
    for i in 0..10 {
        w.on_frame(&jpeg(i), tag(i, None));
    }
    let id = "20261124T182900Z-0006";
    w.on_start(meta(id), 10 * 100 * MS, 0, FPS);
    let dir = d.path().join(id);
    // Pre-capture (frames 0..=9) is on disk; from now on every write fails.
    let cur = w.current.as_mut().unwrap();
    cur.clip = Some(Box::new(
        AviWriter::create(Path::new("/dev/full"), 64, 48, 10.0).unwrap(),
    ));
    let big = vec![0xab; 100_000];
    w.on_frame(&big, tag(10, Some(1.0)));
    // The recording ended there, as failed: not left "recording" until the motion ends.
    assert!(w.current.is_none());
    w.on_frame(&jpeg(11), tag(11, Some(1.0)));
    let m = ended(&mut done).unwrap();
    assert_eq!(m.state, EventState::Failed);
    assert!(
        m.clip_error.as_deref().unwrap().contains("write the clip"),
        "{m:?}"
    );
    assert_eq!(m.end_reason, Some(EndReason::WriteFailed));
    assert!(!dir.join(CLIP_PART).exists());
    let (_, frames) = avi::read_frames(&dir.join(CLIP)).unwrap();
    assert_eq!(frames.len(), 10);
    assert_eq!(m.frames, 10);
    assert_eq!(m.dropped_frames, 1, "the frame that failed is counted");
    assert_eq!(events::read_meta(&dir).unwrap(), m);
}

#[test]
fn an_event_stopped_before_any_frame_names_no_clip() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Recorder::start(config(d.path())).unwrap();
    let id = "20261124T182900Z-0008";
    r.start_event(meta(id), 0, FPS);
    r.shutdown();
    let dir = d.path().join(id);
    let m = events::read_meta(&dir).unwrap();
    assert_eq!((m.state, m.clip, m.frames), (EventState::Complete, None, 0));
    assert!(!dir.join(CLIP).exists() && !dir.join(CLIP_PART).exists());
}

#[test]
fn storage_limits_are_applied_when_an_event_starts() {
    let d = tempfile::tempdir().unwrap();
    let old = "20200101T000000Z-0001";
    std::fs::create_dir(d.path().join(old)).unwrap();
    let mut done = meta(old);
    done.state = EventState::Complete;
    events::write_meta(&d.path().join(old), &done).unwrap();
    let mut cfg = config(d.path());
    cfg.limits.max_age_ms = 86_400_000;
    let mut r = Recorder::start(cfg).unwrap();
    r.start_event(meta("20261124T182900Z-0007"), 0, FPS);
    paced(&mut r, 0, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.path().join(old).exists() {
        assert!(Instant::now() < deadline, "the old event was not deleted");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        ended(&mut r.reports).is_none(),
        "deleted while the new event is recording"
    );
}

#[test]
fn the_disk_probe_tells_a_usable_disk_from_a_broken_one() {
    let d = tempfile::tempdir().unwrap();
    // Missing: created.
    assert_eq!(probe_disk(&d.path().join("events"), 0), DiskState::Ok);
    assert!(d.path().join("events").is_dir());
    // A file where the directory should be.
    std::fs::write(d.path().join("file"), b"x").unwrap();
    assert!(matches!(
        probe_disk(&d.path().join("file"), 0),
        DiskState::Broken(_)
    ));
    // Less free than asked for.
    assert_eq!(probe_disk(d.path(), u64::MAX), DiskState::Full);
}

#[test]
fn unwritable_final_metadata_is_kept_up_to_its_bound_and_reported_failed() {
    let d = tempfile::tempdir().unwrap();
    let (mut w, mut done, _pool) = writer(d.path(), MAX_PENDING_META * 2);
    for k in 0..MAX_PENDING_META + 3 {
        let id = format!("20261124T1829{:02}Z-0001", k % 60);
        // A folder that is gone (as if the disk failed under it): nothing can be written.
        let cur = Current {
            meta: meta(&id),
            dir: d.path().join("gone").join(&id),
            folder: true,
            clip: None,
            ending_at_ns: None,
            peak: f32::MIN,
            written_dropped: 0,
            dropped_before: 0,
            last_frame: Instant::now(),
        };
        w.finish(cur, Some(EndReason::Quiet));
        let m = ended(&mut done).unwrap();
        assert_eq!(
            (m.state, m.end_reason),
            (EventState::Failed, Some(EndReason::WriteFailed))
        );
        assert!(m.clip_error.unwrap().contains("event.json"));
    }
    assert_eq!(w.pending_meta.len(), MAX_PENDING_META);
    // The disk comes back: what is kept is written.
    std::fs::create_dir_all(d.path().join("gone")).unwrap();
    // ... except for the first, whose folder the user deleted meanwhile: given up.
    for (dir, _) in w.pending_meta.iter().skip(1) {
        std::fs::create_dir_all(dir).unwrap();
    }
    w.write_pending_meta();
    assert!(w.pending_meta.is_empty());
    let written = std::fs::read_dir(d.path().join("gone"))
        .unwrap()
        .flatten()
        .filter(|e| events::read_meta(&e.path()).is_ok_and(|m| m.state == EventState::Failed))
        .count();
    assert_eq!(written, MAX_PENDING_META - 1);
}

#[test]
fn a_clip_claims_the_rate_the_camera_announced_until_it_is_measured() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Recorder::start(config(d.path())).unwrap();
    let id = "20261124T182900Z-0009";
    r.start_event(meta(id), 0, 25.0);
    paced(&mut r, 0, Some(1.0));
    r.shutdown();
    let (fps, frames) = avi::read_frames(&d.path().join(id).join(CLIP)).unwrap();
    assert_eq!((fps, frames.len()), (25.0, 1));
}

#[test]
fn shutdown_mid_event_closes_the_clip() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Recorder::start(config(d.path())).unwrap();
    let id = "20261124T182900Z-0003";
    r.start_event(meta(id), 0, FPS);
    for i in 0..5 {
        paced(&mut r, i, Some(1.0));
    }
    r.shutdown();
    let m = events::read_meta(&d.path().join(id)).unwrap();
    assert_eq!(m.state, EventState::Complete);
    assert_eq!(m.end_reason, Some(EndReason::Shutdown));
    assert_eq!(
        avi::read_frames(&d.path().join(id).join(CLIP))
            .unwrap()
            .1
            .len(),
        5
    );
}

#[test]
fn reports_past_their_bound_are_lost_and_logged_never_waited_for() {
    let d = tempfile::tempdir().unwrap();
    let (mut w, mut reports, _pool) = writer(d.path(), REPORT_QUEUE);
    // Nobody takes the reports (a stuck service): the writer goes on regardless.
    for k in 0..REPORT_QUEUE + 3 {
        let id = format!("20261124T1829{:02}Z-{:04}", k % 60, k + 1);
        w.not_recorded(meta(&id), d.path().join(&id), 0, "test".into());
        let cur = w.current.take().unwrap();
        w.finish(cur, Some(EndReason::Quiet));
    }
    let kept = std::iter::from_fn(|| reports.try_recv().ok()).count();
    assert_eq!(kept, REPORT_QUEUE);
}
