//! The faults of `tests/tests/faults.rs`, each done to a [`Mecam`] under a real systemd and
//! timed: SIGKILL of each service, a hung web-svc caught by the watchdog, motion-svc and
//! web-svc over their `MemoryMax`. The tests add their assertions around these; `mecam-soak
//! --faults` runs them all on fresh containers ([`measure_all`]) for the README's one table.
//!
//! Times are measured, never asserted: [`DEADLINE`] only stops a broken run from hanging.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::nspawn::{Mecam, MecamOptions};
use crate::viewer::{Kind, Viewer};
use crate::{poll, scenes};

/// capture-svc's unit.
pub const CAPTURE: &str = "mecam-capture.service";
/// motion-svc's unit.
pub const MOTION: &str = "mecam-motion.service";
/// web-svc's unit.
pub const WEB: &str = "mecam-web.service";
/// Upper bound for anything waited on after a fault (restart, frames coming back).
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How long the viewer keeps watching after motion-svc is back.
pub const WATCH_AFTER: Duration = Duration::from_secs(2);
/// `RestartSec` of a unit pushed over its `MemoryMax`: long enough that the failed process's
/// `Result` and `ExecMainStatus` can be read before the restart replaces them.
pub const RESTART_SEC_OOM: &str = "3s";
/// motion-svc's limit for its fault: under the 96 MiB pre-capture ring of
/// [`motion_oom_options`], whose arena motion-svc grows (each step resident at once) to what 60 s
/// of its large frames need within seconds of starting, and well over what it needs without
/// it.
pub const MOTION_OOM_LIMIT: u64 = 40 * 1024 * 1024;
/// web-svc's limit is lowered to this much above its anonymous memory; the 7 MiB of argon2
/// working memory of the first login then goes over it.
pub const WEB_OOM_MARGIN: u64 = 3 * 1024 * 1024;

/// Wait until `viewer` shows a live frame (any since it connected).
///
/// # Errors
/// None within [`DEADLINE`].
pub fn wait_live(viewer: &Viewer) -> anyhow::Result<Instant> {
    viewer.wait_for(
        Kind::Live,
        Instant::now() - Duration::from_secs(60),
        DEADLINE,
    )
}

/// A viewer on `m`'s live stream that has seen a live frame.
///
/// # Errors
/// Login or the stream failed.
pub fn live_viewer(m: &Mecam) -> anyhow::Result<Viewer> {
    let viewer = Viewer::start(m.addr, &m.login()?)?;
    wait_live(&viewer)?;
    Ok(viewer)
}

/// What a SIGKILL of capture-svc looked like to a viewer.
#[derive(Debug, Clone)]
pub struct CaptureKill {
    /// When the kill was sent.
    pub t0: Instant,
    /// The new main pid.
    pub new_pid: u32,
    /// Kill to the first "camera offline" frame.
    pub offline_after: Duration,
    /// Kill to the unit active again.
    pub active_after: Duration,
    /// Unit active to live frames again on the same connection.
    pub live_after: Duration,
}

impl fmt::Display for CaptureKill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "offline frame after {} ms; active again after {:.2} s; live frames {:.2} s later (same connection)",
            self.offline_after.as_millis(),
            self.active_after.as_secs_f64(),
            self.live_after.as_secs_f64()
        )
    }
}

/// SIGKILL capture-svc while `viewer` watches; wait for the offline frame, the restart and
/// live frames again.
///
/// # Errors
/// A step did not happen within [`DEADLINE`].
pub fn kill_capture(m: &Mecam, viewer: &Viewer) -> anyhow::Result<CaptureKill> {
    let before = m.ct.main_pid(CAPTURE)?;
    let t0 = Instant::now();
    m.ct.kill_main(CAPTURE, "KILL")?;
    let offline_at = viewer.wait_for(Kind::Offline, t0, DEADLINE)?;
    let new_pid = m.ct.wait_active(CAPTURE, before, DEADLINE)?;
    let active_at = Instant::now();
    let live_at = viewer.wait_for(Kind::Live, offline_at, DEADLINE)?;
    Ok(CaptureKill {
        t0,
        new_pid,
        offline_after: offline_at - t0,
        active_after: active_at - t0,
        live_after: live_at.saturating_duration_since(active_at),
    })
}

/// What a SIGKILL of motion-svc (or web-svc) took.
#[derive(Debug, Clone)]
pub struct Restart {
    /// When the fault was made.
    pub t0: Instant,
    /// The new main pid.
    pub new_pid: u32,
    /// Fault to the unit active again (web-svc: to `/healthz` answering).
    pub back_after: Duration,
    /// The live stream's longest gap between frames from the fault until [`WATCH_AFTER`]
    /// after the restart (`None` when no viewer watched).
    pub longest_gap: Option<Duration>,
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "back after {:.2} s", self.back_after.as_secs_f64())?;
        if let Some(gap) = self.longest_gap {
            write!(f, "; the live stream's longest gap {} ms", gap.as_millis())?;
        }
        Ok(())
    }
}

/// SIGKILL motion-svc while `viewer` watches; wait for the restart and [`WATCH_AFTER`] more.
///
/// # Errors
/// A step did not happen within [`DEADLINE`].
pub fn kill_motion(m: &Mecam, viewer: &Viewer) -> anyhow::Result<Restart> {
    let before = m.ct.main_pid(MOTION)?;
    let t0 = Instant::now();
    m.ct.kill_main(MOTION, "KILL")?;
    let new_pid = m.ct.wait_active(MOTION, before, DEADLINE)?;
    let back_after = t0.elapsed();
    viewer.wait_for(Kind::Live, Instant::now() + WATCH_AFTER, DEADLINE)?;
    Ok(Restart {
        t0,
        new_pid,
        back_after,
        longest_gap: Some(viewer.longest_gap_since(t0)),
    })
}

/// SIGKILL web-svc; wait for the restart and `/healthz`.
///
/// # Errors
/// A step did not happen within [`DEADLINE`].
pub fn kill_web(m: &Mecam) -> anyhow::Result<Restart> {
    let before = m.ct.main_pid(WEB)?;
    let t0 = Instant::now();
    m.ct.kill_main(WEB, "KILL")?;
    let new_pid = m.ct.wait_active(WEB, before, DEADLINE)?;
    m.wait_healthz()?;
    Ok(Restart {
        t0,
        new_pid,
        back_after: t0.elapsed(),
        longest_gap: None,
    })
}

/// SIGSTOP web-svc (it stops pinging); wait for the watchdog's restart and `/healthz`.
///
/// # Errors
/// A step did not happen within [`DEADLINE`].
pub fn stop_web(m: &Mecam) -> anyhow::Result<Restart> {
    let before = m.ct.main_pid(WEB)?;
    let t0 = Instant::now();
    m.ct.kill_main(WEB, "STOP")?;
    let new_pid = m.ct.wait_active(WEB, before, DEADLINE)?;
    let back_after = t0.elapsed();
    m.wait_healthz()?;
    Ok(Restart {
        t0,
        new_pid,
        back_after,
        longest_gap: None,
    })
}

/// A unit pushed over its `MemoryMax`, as systemd saw it.
#[derive(Debug, Clone)]
pub struct OomKill {
    /// When the limit was lowered (motion) or the allocating request sent (web).
    pub t0: Instant,
    /// The limit set, bytes.
    pub limit: u64,
    /// `t0` to the unit failed and waiting to restart.
    pub killed_after: Duration,
    /// `t0` to the unit active again.
    pub active_after: Duration,
    /// `Result`, `ExecMainStatus`, `ExecMainCode`, `SubState` while waiting to restart.
    pub props: BTreeMap<String, String>,
}

impl OomKill {
    /// A property read while the unit waited to restart ("" when absent).
    pub fn prop(&self, key: &str) -> &str {
        self.props.get(key).map_or("", String::as_str)
    }
}

impl fmt::Display for OomKill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "killed by the kernel after {:.2} s (Result={}, status {}); active again {:.2} s later (RestartSec={RESTART_SEC_OOM})",
            self.killed_after.as_secs_f64(),
            self.prop("Result"),
            self.prop("ExecMainStatus"),
            self.active_after
                .saturating_sub(self.killed_after)
                .as_secs_f64()
        )
    }
}

/// A drop-in raising `unit`'s `RestartSec` to [`RESTART_SEC_OOM`].
pub fn slow_restart(unit: &str) -> (String, String, String) {
    (
        unit.to_owned(),
        "60-test-restart.conf".to_owned(),
        format!("[Service]\nRestartSec={RESTART_SEC_OOM}\n"),
    )
}

fn set_memory_max(m: &Mecam, unit: &str, limit: u64) -> anyhow::Result<()> {
    m.ct.run(&[
        "systemctl",
        "set-property",
        "--runtime",
        unit,
        &format!("MemoryMax={limit}"),
    ])?;
    Ok(())
}

/// Wait for `unit` to fail and wait to restart, then for it to be active again.
fn wait_oom(
    m: &Mecam,
    unit: &str,
    before: u32,
    t0: Instant,
    limit: u64,
) -> anyhow::Result<OomKill> {
    wait_oom_then(m, unit, before, t0, limit, || Ok(()))
}

/// [`wait_oom`], with `on_kill` run as soon as the unit waits to restart.
fn wait_oom_then(
    m: &Mecam,
    unit: &str,
    before: u32,
    t0: Instant,
    limit: u64,
    on_kill: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<OomKill> {
    let props = poll::until(
        &format!("{unit} to fail and wait to restart"),
        DEADLINE,
        || {
            let p =
                m.ct.props(
                    unit,
                    &["SubState", "Result", "ExecMainStatus", "ExecMainCode"],
                )
                .map_err(|e| e.to_string())?;
            Ok((p.get("SubState").map(String::as_str) == Some("auto-restart")).then_some(p))
        },
    )?;
    let killed_after = t0.elapsed();
    on_kill()?;
    m.ct.wait_active(unit, before, DEADLINE)?;
    Ok(OomKill {
        t0,
        limit,
        killed_after,
        active_after: t0.elapsed(),
        props,
    })
}

/// Options for [`motion_over_memory_max`]: 30 fps, a pre-capture ring of 96 MiB (60 s of
/// frames), and a slow restart.
pub fn motion_oom_options() -> MecamOptions {
    MecamOptions {
        config: Some(
            "[capture]\nfps = 30\nwidth = 1280\nheight = 720\nquality = 95\n[motion]\npre_capture_s = 60.0\npre_capture_max_mib = 96.0\n[web]\n"
                .into(),
        ),
        dropins: vec![slow_restart(MOTION)],
        ..MecamOptions::default()
    }
}

/// Start motion-svc again (run with [`motion_oom_options`]) with its `MemoryMax` lowered to
/// [`MOTION_OOM_LIMIT`], under its pre-capture ring: its ring grows past the limit within
/// seconds (a few MiB of frames a second) and the kernel kills it. Its limit is put back as soon as it waits to restart, so its
/// restart succeeds.
///
/// # Errors
/// systemctl failed, or it was not killed and restarted within [`DEADLINE`].
pub fn motion_over_memory_max(m: &Mecam) -> anyhow::Result<OomKill> {
    let before = m.ct.main_pid(MOTION)?;
    let unit_limit = m.ct.prop(MOTION, "MemoryMax")?;
    // Stopped first: a limit under what a running process holds is refused by cgroup v1.
    m.ct.run(&["systemctl", "stop", MOTION])?;
    set_memory_max(m, MOTION, MOTION_OOM_LIMIT)?;
    let t0 = Instant::now();
    m.ct.run(&["systemctl", "start", "--no-block", MOTION])?;
    wait_oom_then(m, MOTION, before, t0, MOTION_OOM_LIMIT, || {
        m.ct.run(&[
            "systemctl",
            "set-property",
            "--runtime",
            MOTION,
            &format!("MemoryMax={unit_limit}"),
        ])?;
        Ok(())
    })
}

/// Anonymous (non-reclaimable) memory charged to `unit`'s cgroup, bytes (cgroup v1 `rss`).
///
/// # Errors
/// memory.stat unreadable or without `total_rss`.
pub fn anon_bytes(m: &Mecam, unit: &str) -> anyhow::Result<u64> {
    let stat = m.ct.run(&[
        "cat",
        &format!("/sys/fs/cgroup/memory/system.slice/{unit}/memory.stat"),
    ])?;
    stat.lines()
        .find_map(|l| l.strip_prefix("total_rss "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no total_rss in {unit}'s memory.stat:\n{stat}"))
}

/// Options for [`web_over_memory_max`]: motion and web only (no camera needed), slow restart.
pub fn web_oom_options() -> MecamOptions {
    MecamOptions {
        only: vec![MOTION, WEB],
        dropins: vec![slow_restart(WEB)],
        ..MecamOptions::default()
    }
}

/// Lower web-svc's `MemoryMax`, live, to [`WEB_OOM_MARGIN`] above its anonymous memory, then
/// log in (argon2's working memory goes over it): the kernel kills it.
///
/// # Errors
/// systemctl failed, the login succeeded (the limit is not enforced), or web-svc was not
/// killed and restarted within [`DEADLINE`].
pub fn web_over_memory_max(m: &Mecam) -> anyhow::Result<OomKill> {
    let before = m.ct.main_pid(WEB)?;
    let limit = anon_bytes(m, WEB)? + WEB_OOM_MARGIN;
    set_memory_max(m, WEB, limit)?;
    let t0 = Instant::now();
    anyhow::ensure!(
        m.login().is_err(),
        "login succeeded within MemoryMax={limit}: the limit is not enforced"
    );
    wait_oom(m, WEB, before, t0, limit)
}

/// One fault's figure for the README.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The unit at fault.
    pub unit: &'static str,
    /// What was done.
    pub fault: &'static str,
    /// What was measured.
    pub figure: String,
}

/// Every fault above, each on a fresh container (as the tests do): capture on a still scene,
/// motion with a viewer watching, web, web stopped, motion and web over `MemoryMax`.
///
/// # Errors
/// A container did not boot or a fault did not resolve within [`DEADLINE`].
pub fn measure_all(mut progress: impl FnMut(&Figure)) -> anyhow::Result<Vec<Figure>> {
    let mut out = Vec::new();
    let mut push = |unit, fault, figure: String| {
        let f = Figure {
            unit,
            fault,
            figure,
        };
        progress(&f);
        out.push(f);
    };
    {
        let m = Mecam::start(MecamOptions::with_scene(scenes::STILL, ""))?;
        let v = live_viewer(&m)?;
        push(CAPTURE, "SIGKILL", kill_capture(&m, &v)?.to_string());
    }
    {
        let m = Mecam::start(MecamOptions::default())?;
        let v = live_viewer(&m)?;
        push(MOTION, "SIGKILL", kill_motion(&m, &v)?.to_string());
        push(WEB, "SIGKILL", kill_web(&m)?.to_string());
        push(
            WEB,
            "SIGSTOP (watchdog)",
            format!("restarted by the watchdog, {}", stop_web(&m)?),
        );
    }
    {
        let m = Mecam::start(motion_oom_options())?;
        let _v = live_viewer(&m)?;
        push(
            MOTION,
            "over MemoryMax",
            motion_over_memory_max(&m)?.to_string(),
        );
    }
    {
        let m = Mecam::start(web_oom_options())?;
        push(WEB, "over MemoryMax", web_over_memory_max(&m)?.to_string());
    }
    Ok(out)
}
