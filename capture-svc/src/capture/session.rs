//! One session of a camera source: opened, its bytes read and split into published frames
//! until it ends (end of stream, stall, read error, shutdown), then closed and its camera
//! process stopped.

use std::time::{Duration, Instant};

use ipc::announce::CameraState;
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

use super::{EXIT_GRACE, Publisher};
use crate::logs;
use crate::source::{FileInput, SourceSpec};
use crate::splitter::Splitter;
use crate::supervise::{Spawn, Supervised};

/// How a session ended.
pub(super) enum End {
    Eof,
    Stalled,
    Error(std::io::Error),
    Shutdown,
}

/// The byte stream of an open session.
pub(super) enum Input {
    Child(tokio::process::ChildStdout),
    Http(crate::http::HttpStream),
    File(FileInput),
}

impl Input {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::Child(c) => c.read(buf).await,
            Input::Http(h) => h.read(buf).await,
            Input::File(f) => f.read(buf).await,
        }
    }
}

/// Ends a session: the splitter's last counts, a stall announced, the camera process stopped.
/// Its exit status and its last stderr lines.
pub(super) async fn end_session(
    end: &End,
    child: Option<Supervised>,
    splitter: &mut Splitter,
    publisher: &mut Publisher,
) -> (Option<String>, String) {
    splitter.finish();
    merge_split_stats(publisher, splitter);
    if matches!(end, End::Stalled) {
        // Announce before the (possibly slow) stop, so subscribers see it.
        let tail = child
            .as_ref()
            .map(|c| c.stderr().joined())
            .unwrap_or_default();
        publisher.set_state(CameraState::Stalled, &tail);
    }
    stop_child(child, end).await
}

/// Stops the session's camera process, if any: its exit status and its last stderr lines.
pub(super) async fn stop_child(child: Option<Supervised>, end: &End) -> (Option<String>, String) {
    let Some(mut c) = child else {
        return (None, String::new());
    };
    if matches!(end, End::Eof) {
        // Stdout closed: give the process a moment to exit by itself, so its own exit status
        // is what gets logged.
        let deadline = Instant::now() + EXIT_GRACE;
        while c.try_exited().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let tail = c.stderr().clone();
    let status = c.stop().await;
    (status.map(|s| s.to_string()), tail.joined())
}

/// Takes the splitter's counters, logging (throttled) the frames it dropped and the garbage
/// it skipped since the last call.
pub(super) fn merge_split_stats(publisher: &mut Publisher, splitter: &mut Splitter) {
    let new = splitter.stats();
    let (old, over_capacity) = {
        let mut s = publisher.stats.lock().expect("stats lock");
        (std::mem::replace(&mut s.split, new), s.over_capacity)
    };
    if old == new {
        return;
    }
    if let Some(held_back) = logs::check_n(&logs::DROPPED, new.dropped() - old.dropped()) {
        tracing::warn!(
            source = %publisher.source,
            truncated = new.truncated,
            oversized = new.oversized,
            corrupt = new.corrupt,
            held_back,
            "camera stream had bad data, frames dropped; {held_back} more drops held back since the last such line; totals: {}",
            logs::drop_totals(&new, over_capacity)
        );
    }
    if new.garbage_bytes > old.garbage_bytes {
        if let Some(held_back) = logs::GARBAGE.check() {
            logs::garbage_line(new.garbage_bytes, held_back, publisher.garbage_expected);
        }
    }
}

/// Opens a session. The error is the reason, for the Failed state.
pub(super) async fn open(
    spec: &SourceSpec,
    shim: Option<std::path::PathBuf>,
    splitter: &mut Splitter,
) -> Result<(Input, Option<Supervised>), String> {
    splitter.reset_stream();
    match spec {
        SourceSpec::Process { label, argv, .. } => {
            let program = argv
                .first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default();
            if crate::supervise::find_program(&program).is_none() {
                return Err(format!(
                    "cannot start {label}: program {program:?} not found (install it or set the path in [capture])"
                ));
            }
            let (child, out) = Supervised::spawn(&Spawn {
                argv: argv.clone(),
                shim,
            })
            .map_err(|e| {
                format!(
                    "cannot start {label} ({}): {e}",
                    argv.first()
                        .map(|a| a.to_string_lossy())
                        .unwrap_or_default()
                )
            })?;
            if let Some(held_back) = logs::PROCESS_STARTED.check() {
                tracing::info!(source = %label, pid = child.pid(), held_back, "camera process started");
            }
            Ok((Input::Child(out), Some(child)))
        }
        SourceSpec::Http {
            url,
            user,
            password,
        } => {
            let stream = crate::http::open(url, user.as_deref(), password.as_deref())
                .await
                .map_err(|e| format!("{}: {e}", spec.label()))?;
            Ok((Input::Http(stream), None))
        }
        SourceSpec::File { path, .. } => {
            let f = FileInput::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((Input::File(f), None))
        }
        SourceSpec::Synthetic { .. } | SourceSpec::Auto { .. } => {
            unreachable!("synthetic runs its own loop; auto is detected before opening")
        }
    }
}

/// Reads the session's bytes and publishes its frames until it ends.
///
/// The hot path: per read, one `read(2)` into the splitter's free room (a whole frame when
/// the camera writes frames whole), the frames it completes, and no allocation, formatting
/// or tracing unless something is dropped or refused. The stall timer and the shutdown
/// future live for the whole session instead of being made again per read: the timer is
/// moved only when it fires with a frame seen since it was set, so a frame costs no timer
/// work, and the session still stalls exactly `stall` after its last frame.
pub(super) async fn pump(
    input: &mut Input,
    splitter: &mut Splitter,
    publisher: &mut Publisher,
    stall: Duration,
    pace: Option<Duration>,
    shutdown: &CancellationToken,
) -> End {
    let mut last_frame = Instant::now();
    let mut next_tick = tokio::time::Instant::now();
    let stop = shutdown.cancelled();
    tokio::pin!(stop);
    let stalled = tokio::time::sleep_until(tokio::time::Instant::from_std(last_frame + stall));
    tokio::pin!(stalled);
    loop {
        while let Some(frame) = splitter.next_frame() {
            if let Some(p) = pace {
                next_tick += p;
                let now = tokio::time::Instant::now();
                if next_tick < now {
                    next_tick = now;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next_tick) => {}
                    _ = &mut stop => return End::Shutdown,
                }
            }
            if publisher.publish(frame) {
                last_frame = Instant::now();
            }
        }
        merge_split_stats(publisher, splitter);
        tokio::select! {
            _ = &mut stop => return End::Shutdown,
            () = &mut stalled => {
                let deadline = tokio::time::Instant::from_std(last_frame + stall);
                if deadline <= tokio::time::Instant::now() {
                    return End::Stalled;
                }
                stalled.as_mut().reset(deadline);
            }
            r = input.read(splitter.spare()) => match r {
                Ok(0) => return End::Eof,
                Ok(n) => splitter.commit(n),
                Err(e) => return End::Error(e),
            },
        }
    }
}
