//! A real systemd, booted as PID 1 of a throwaway `systemd-nspawn` container made from the
//! host's own `/usr`, with the mecam units and binaries in it.
//!
//! How (and why each step):
//! - `systemd-nspawn -D / --volatile=yes --register=no --keep-unit`: the root is a fresh
//!   tmpfs, `/usr` is the host's (read-only), nothing is registered with a host machined.
//! - The container's first process is `init.sh` (written here), not systemd: on a hybrid
//!   cgroup layout nspawn mounts the v1 `memory` and `pids` controllers read-only, and systemd
//!   then silently enforces no `MemoryMax`/`TasksMax`. `init.sh` remounts both read-write
//!   (`mount -o remount,bind,rw`), lays a minimal `/etc` (users `root`, `mecam` and
//!   `mecam-capture` as `install.sh` makes them, a machine id, the units, the tmpfiles entry)
//!   and `exec`s `/lib/systemd/systemd`. journald runs inside as usual.
//! - Those controllers show the host's whole hierarchy, so two containers' systemds would both
//!   make `/sys/fs/cgroup/memory/system.slice/mecam-motion.service`: one cgroup, one
//!   `MemoryMax`, the OOM kill of one test landing in another running beside it. So `init.sh`
//!   first makes a cgroup of the container's own ([`CGROUP_PREFIX`] + machine name) below its
//!   current one in each, moves itself in, and bind-mounts it over the controller: each
//!   container's systemd has a subtree to itself. Drop removes it.
//! - Commands go in with `nsenter --all` into the namespaces of the container's PID 1
//!   (`systemd-run --machine` needs a registered machine). The container shares the host's
//!   network namespace, so `web-svc` inside is reached on the host's loopback.
//! - The built binaries are bind-mounted read-only at `/opt/mecam/bin`; the unit files are
//!   the repository's, with `/usr/local/bin/` rewritten to that path, plus test drop-ins.
//! - With [`BootOptions::root`] the container is a Debian root of another architecture
//!   ([`crate::pi`]) under `--volatile=overlay` instead: its own `/etc` and users are kept, the
//!   same `init.sh` (run by the emulated shell) and commands go in the same way, and nothing of
//!   the host's is bind-mounted.
//! - Drop kills the container's PID 1 (which ends the whole container) and reaps nspawn.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::{bins, http, poll, procfs::ProcStats};

/// How long the container's systemd gets to finish booting.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a unit gets to become active.
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Where the service binaries appear inside the container.
pub const BIN_DIR: &str = "/opt/mecam/bin";
/// The mecam unit names, capture first.
pub const UNITS: [&str; 3] = [
    "mecam-capture.service",
    "mecam-motion.service",
    "mecam-web.service",
];

/// Name prefix of each container's own cgroup in the v1 `memory` and `pids` hierarchies.
pub const CGROUP_PREFIX: &str = "mecam-ct-";

const INIT_SH: &str = r#"#!/bin/sh
# PID 1 of a mecam test container: its own writable memory+pids cgroups, minimal /etc, systemd.
# $1: the cgroup name (unique per container).
set -e
for c in memory pids; do
    mount -o remount,bind,rw /sys/fs/cgroup/$c
    here=$(sed -n "s/^[0-9]*:$c:\(.*\)$/\1/p" /proc/self/cgroup)
    own=/sys/fs/cgroup/$c${here%/}/$1
    mkdir "$own"
    echo $$ > "$own/cgroup.procs"
    mount --bind "$own" /sys/fs/cgroup/$c
done
cp -a /mecam-ctl/etc/. /etc/
exec /lib/systemd/systemd --show-status=no
"#;

const PASSWD_ROOT: &str = "root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
/// The users `install.sh` makes: capture-svc's own, and motion's and web's, one group.
const PASSWD_MECAM: &str = "mecam:x:990:990:mecam:/nonexistent:/usr/sbin/nologin\n\
mecam-capture:x:989:990:mecam-capture:/nonexistent:/usr/sbin/nologin\n";
/// What an older `install.sh` made: one user for all three services.
const PASSWD_ONE_USER: &str = "mecam:x:990:990:mecam:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str =
    "root:x:0:\nvideo:x:44:{video}\nsystemd-journal:x:101:\n{mecam}nogroup:x:65534:\n";

/// Why the nspawn tests cannot run here, if they cannot. `needs_bins`: the test also needs
/// the three service binaries built.
pub fn unavailable(needs_bins: bool) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: systemd-nspawn needs root".into());
    }
    for tool in ["systemd-nspawn", "nsenter"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Some(format!(
                "{tool} not found: apt-get install systemd-container util-linux"
            ));
        }
    }
    if !Path::new("/lib/systemd/systemd").exists() {
        return Some("/lib/systemd/systemd not found: apt-get install systemd".into());
    }
    if needs_bins && !bins::all_present() {
        return Some(format!(
            "service binaries missing in {}: run `cargo build --workspace --bins` first",
            bins::bin_dir().display()
        ));
    }
    None
}

/// `true` if the test may go on; otherwise prints a loud skip line and returns `false`.
/// Under CI (`CI` set) a missing prerequisite is a failure, not a skip.
///
/// # Panics
/// Under CI when the prerequisites are missing.
pub fn available_or_skip(test: &str, needs_bins: bool) -> bool {
    match unavailable(needs_bins) {
        None => true,
        Some(why) => {
            crate::skip(test, &why);
            false
        }
    }
}

/// A booted container with a real systemd as PID 1.
#[derive(Debug)]
pub struct Container {
    nspawn: Child,
    leader: i32,
    ctl: tempfile::TempDir,
    /// The container's own cgroups (host paths), removed on drop.
    cgroups: Vec<PathBuf>,
}

/// Which mecam users a container's `/etc` has at boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Users {
    /// `mecam-capture` (in `video`) and `mecam`, group `mecam`: what `install.sh` makes.
    #[default]
    Installed,
    /// None (to test `install.sh`'s useradd).
    None,
    /// Only `mecam` (group `mecam`, in `video`): what an older `install.sh` made.
    OneUser,
}

/// How to boot a [`Container`] beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// The mecam users in `/etc/passwd` and `/etc/group`.
    pub users: Users,
    /// More read-only bind mounts: `(host path, container path)`.
    pub binds: Vec<(PathBuf, String)>,
    /// Give the container its own network namespace (loopback only) instead of the host's.
    pub private_network: bool,
    /// Boot this root file system (a Debian root of any architecture the host runs through
    /// binfmt_misc, see [`crate::pi`]) under a throwaway overlay (`--volatile=overlay`: the
    /// directory itself is never written) instead of the host's `/usr`. Its own `/etc` is
    /// kept: only the machine id, the masks and the [`EtcFiles`] are laid over it, and
    /// [`BootOptions::users`] is ignored.
    pub root: Option<PathBuf>,
    /// How long the boot may take ([`BOOT_TIMEOUT`] when `None`): an emulated CPU boots
    /// slower.
    pub boot_timeout: Option<Duration>,
}

/// Files to place under the container's `/etc` before boot: `(path relative to /etc, text)`.
pub type EtcFiles = Vec<(String, String)>;

impl Container {
    /// Boot a container with `etc` files added to the minimal `/etc`, and wait until its
    /// systemd reports `running` (or `degraded`).
    ///
    /// # Errors
    /// nspawn failed or the boot did not finish within [`BOOT_TIMEOUT`] (console in the error).
    pub fn boot(etc: &EtcFiles) -> anyhow::Result<Container> {
        Container::boot_with(etc, &BootOptions::default())
    }

    /// [`Container::boot`] with [`BootOptions`].
    ///
    /// # Errors
    /// nspawn failed or the boot did not finish within [`BOOT_TIMEOUT`] (console in the error).
    pub fn boot_with(etc: &EtcFiles, opts: &BootOptions) -> anyhow::Result<Container> {
        let ctl = tempfile::Builder::new().prefix("mecam-ns-").tempdir()?;
        let root = ctl.path();
        let etc_dir = root.join("etc");
        std::fs::create_dir_all(etc_dir.join("systemd/system"))?;
        std::fs::write(root.join("init.sh"), INIT_SH)?;
        set_mode(&root.join("init.sh"), 0o755)?;
        if opts.root.is_none() {
            host_root_etc(&etc_dir, opts.users)?;
        }
        let id: u128 = rand::random();
        std::fs::write(etc_dir.join("machine-id"), format!("{id:032x}\n"))?;
        for masked in ["systemd-firstboot.service", "console-getty.service"] {
            std::os::unix::fs::symlink("/dev/null", etc_dir.join("systemd/system").join(masked))?;
        }
        for (rel, text) in etc {
            let p = etc_dir.join(rel);
            std::fs::create_dir_all(p.parent().context("etc file has a parent")?)?;
            std::fs::write(&p, text)?;
        }
        // The ctl dir must be reachable by the unprivileged mecam user only where needed:
        // it is not; binaries come in through their own bind mount.
        set_mode(root, 0o755)?;
        let name = format!("mecam-{:08x}", rand::random::<u32>());
        let cgroup = format!("{CGROUP_PREFIX}{name}");
        let console = std::fs::File::create(root.join("console.log"))?;
        let (dir, volatile) = match &opts.root {
            Some(root) => (root.as_path(), "--volatile=overlay"),
            None => (Path::new("/"), "--volatile=yes"),
        };
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(dir)
            .args([volatile, "--register=no", "--keep-unit", "--quiet"])
            .arg(format!("--machine={name}"))
            .arg(format!("--bind={}:/mecam-ctl", root.display()))
            .args(
                // The host's binaries only in a root that runs them.
                opts.root
                    .is_none()
                    .then(|| format!("--bind-ro={}:{BIN_DIR}", bins::bin_dir().display())),
            )
            .args(
                opts.binds
                    .iter()
                    .map(|(host, inside)| format!("--bind-ro={}:{inside}", host.display())),
            )
            .args(opts.private_network.then_some("--private-network"))
            .args(["--", "/mecam-ctl/init.sh", &cgroup])
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()
            .context("spawning systemd-nspawn (apt-get install systemd-container)")?;
        let mut c = Container {
            nspawn,
            leader: 0,
            ctl,
            cgroups: ["memory", "pids"]
                .iter()
                .map(|ctrl| own_cgroup(ctrl, &cgroup))
                .collect(),
        };
        let nspawn_pid = c.nspawn.id();
        let boot_timeout = opts.boot_timeout.unwrap_or(BOOT_TIMEOUT);
        let leader = poll::until("the container's systemd (PID 1)", boot_timeout, || {
            if let Ok(Some(status)) = c.nspawn.try_wait() {
                return Err(format!("systemd-nspawn exited ({status})"));
            }
            Ok(systemd_child(nspawn_pid))
        });
        c.leader = match leader {
            Ok(l) => l,
            Err(e) => anyhow::bail!("{e}\nconsole:\n{}", c.console()),
        };
        let booted = poll::until("the container's boot to finish", boot_timeout, || {
            let out = c
                .exec(&["systemctl", "is-system-running"])
                .map_err(|e| e.to_string())?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            match state.as_str() {
                "running" | "degraded" => Ok(Some(state)),
                _ => Err(state),
            }
        });
        if let Err(e) = booted {
            anyhow::bail!("{e}\nconsole:\n{}", c.console());
        }
        Ok(c)
    }

    /// The host pid of the container's PID 1.
    pub fn leader(&self) -> i32 {
        self.leader
    }

    /// What nspawn and the container's console printed.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.ctl.path().join("console.log")).unwrap_or_default()
    }

    /// A path inside the container, seen from the host (through `/proc/<leader>/root`).
    pub fn host_path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.leader))
    }

    /// Run a command inside the container (all its namespaces), stdin empty.
    ///
    /// # Errors
    /// `nsenter` could not run.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.exec_stdin(args, b"")
    }

    /// Run a command inside the container with `input` on its stdin.
    ///
    /// # Errors
    /// `nsenter` could not run.
    pub fn exec_stdin(&self, args: &[&str], input: &[u8]) -> anyhow::Result<Output> {
        let mut child = Command::new("nsenter")
            .arg("-t")
            .arg(self.leader.to_string())
            .args(["--all", "--"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning nsenter")?;
        child.stdin.take().context("stdin")?.write_all(input)?;
        Ok(child.wait_with_output()?)
    }

    /// Run a command inside the container; fail on a non-zero exit. Returns stdout.
    ///
    /// # Errors
    /// The command failed (its output is in the error).
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.exec(args)?;
        anyhow::ensure!(
            out.status.success(),
            "{args:?} in the container failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Several properties of `unit` read at one instant (`systemctl show -p A -p B`).
    ///
    /// # Errors
    /// systemctl failed.
    pub fn props(
        &self,
        unit: &str,
        props: &[&str],
    ) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        let mut args = vec!["systemctl", "show"];
        for p in props {
            args.extend(["-p", p]);
        }
        args.push(unit);
        Ok(self
            .run(&args)?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// `systemctl show -P <prop> <unit>`, trimmed.
    ///
    /// # Errors
    /// systemctl failed.
    pub fn prop(&self, unit: &str, prop: &str) -> anyhow::Result<String> {
        Ok(self
            .run(&["systemctl", "show", "-P", prop, unit])?
            .trim()
            .to_owned())
    }

    /// The unit's main pid (container pid namespace); 0 when not running.
    ///
    /// # Errors
    /// systemctl failed.
    pub fn main_pid(&self, unit: &str) -> anyhow::Result<u32> {
        Ok(self.prop(unit, "MainPID")?.parse()?)
    }

    /// How many times systemd restarted the unit automatically.
    ///
    /// # Errors
    /// systemctl failed.
    pub fn n_restarts(&self, unit: &str) -> anyhow::Result<u32> {
        Ok(self.prop(unit, "NRestarts")?.parse()?)
    }

    /// Wait until `unit` is `active` with a main pid other than `not_pid`; returns the pid.
    ///
    /// # Errors
    /// Not so within `timeout`.
    pub fn wait_active(&self, unit: &str, not_pid: u32, timeout: Duration) -> anyhow::Result<u32> {
        poll::until(
            &format!("{unit} active (main pid not {not_pid})"),
            timeout,
            || {
                let state = self.prop(unit, "ActiveState").map_err(|e| e.to_string())?;
                let pid = self.main_pid(unit).map_err(|e| e.to_string())?;
                if state == "active" && pid != 0 && pid != not_pid {
                    Ok(Some(pid))
                } else {
                    Err(format!("ActiveState={state} MainPID={pid}"))
                }
            },
        )
    }

    /// Resource figures of a process given by its pid inside the container.
    ///
    /// # Errors
    /// The process is gone.
    pub fn proc_stats(&self, pid: u32) -> anyhow::Result<ProcStats> {
        ProcStats::read(&self.host_path(&format!("/proc/{pid}")))
    }

    /// Send `signal` (e.g. `KILL`, `STOP`) to the unit's main process, as systemd would see
    /// an outside kill (`kill -s`, not `systemctl kill`, so systemd counts a failure).
    ///
    /// # Errors
    /// The unit has no main pid or kill failed.
    pub fn kill_main(&self, unit: &str, signal: &str) -> anyhow::Result<u32> {
        let pid = self.main_pid(unit)?;
        anyhow::ensure!(pid != 0, "{unit} has no main process");
        self.run(&["kill", "-s", signal, &pid.to_string()])?;
        Ok(pid)
    }

    /// `journalctl -o json <args>` parsed, one value per record.
    ///
    /// # Errors
    /// journalctl failed or printed something that is not JSON.
    pub fn journal_json(&self, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut full = vec!["journalctl", "--no-pager", "-o", "json"];
        full.extend_from_slice(args);
        let out = self.run(&full)?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("journal line {l:?}")))
            .collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.leader > 0 {
            if let Ok(out) = self.exec(&[
                "journalctl",
                "--no-pager",
                "-n",
                "300",
                "-o",
                "short-monotonic",
            ]) {
                eprintln!(
                    "----- container journal (last 300) -----\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        if self.leader > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.leader),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let nspawn = &mut self.nspawn;
        if poll::until("systemd-nspawn to exit", Duration::from_secs(15), || {
            nspawn.try_wait().map_err(|e| e.to_string())
        })
        .is_err()
        {
            let _ = self.nspawn.kill();
        }
        let _ = self.nspawn.wait();
        for cg in &self.cgroups {
            remove_cgroup_tree(cg);
        }
    }
}

/// Host path of the cgroup `name` below this process's own in v1 controller `ctrl` (where
/// `init.sh` makes the container's; the container inherits this process's cgroup).
fn own_cgroup(ctrl: &str, name: &str) -> PathBuf {
    let here = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, c, path) = (f.next()?, f.next()?, f.next()?);
            (c == ctrl).then(|| path.trim_start_matches('/').to_owned())
        })
        .unwrap_or_default();
    Path::new("/sys/fs/cgroup").join(ctrl).join(here).join(name)
}

/// Remove a cgroup and every cgroup below it, deepest first, once their processes are gone
/// (bounded wait). Errors are ignored: a leftover empty cgroup costs nothing.
fn remove_cgroup_tree(root: &Path) {
    fn dirs(p: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs(&e.path(), out);
                }
            }
        }
        out.push(p.to_path_buf());
    }
    let _ = poll::until_true(
        "the container's cgroups to go",
        Duration::from_secs(10),
        || {
            let mut all = Vec::new();
            dirs(root, &mut all);
            for d in &all {
                let _ = std::fs::remove_dir(d);
            }
            !root.exists()
        },
    );
}

/// The minimal `/etc` of a container made from the host's `/usr`: `users`, root, the groups
/// the units name, shadow files (for `useradd`) and the host's os-release.
fn host_root_etc(etc_dir: &Path, users: Users) -> anyhow::Result<()> {
    let (passwd, video, mecam_group) = match users {
        Users::Installed => (PASSWD_MECAM, "mecam-capture", "mecam:x:990:\n"),
        Users::None => ("", "", ""),
        Users::OneUser => (PASSWD_ONE_USER, "mecam", "mecam:x:990:\n"),
    };
    std::fs::write(etc_dir.join("passwd"), format!("{PASSWD_ROOT}{passwd}"))?;
    std::fs::write(
        etc_dir.join("group"),
        GROUP
            .replace("{video}", video)
            .replace("{mecam}", mecam_group),
    )?;
    // useradd (install.sh) needs the shadow files to exist.
    std::fs::write(etc_dir.join("shadow"), "root:*:19000:0:99999:7:::\n")?;
    std::fs::write(etc_dir.join("gshadow"), "root:*::\n")?;
    set_mode(&etc_dir.join("shadow"), 0o640)?;
    set_mode(&etc_dir.join("gshadow"), 0o640)?;
    std::os::unix::fs::symlink("/usr/lib/os-release", etc_dir.join("os-release"))?;
    Ok(())
}

/// The child of `nspawn_pid` that is already `systemd` (after init.sh exec'd it).
fn systemd_child(nspawn_pid: u32) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{nspawn_pid}/task")).ok()?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "systemd" {
                return Some(pid);
            }
        }
    }
    None
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// What a [`Mecam`] container runs beyond the repository's units.
#[derive(Debug, Clone, Default)]
pub struct MecamOptions {
    /// `/etc/mecam/mecam.toml` (empty sections when `None`).
    pub config: Option<String>,
    /// Extra flags for each service, appended to its unit's `ExecStart` via a drop-in.
    pub capture_args: Vec<String>,
    /// Extra flags for `motion-svc`.
    pub motion_args: Vec<String>,
    /// Extra flags for `web-svc`.
    pub web_args: Vec<String>,
    /// More drop-ins: `(unit, file name, text)`.
    pub dropins: Vec<(String, String, String)>,
    /// More files under the container's `/etc` (a scene script, say).
    pub etc_files: EtcFiles,
    /// Start only these units instead of `mecam.target` (empty: the target, all three).
    pub only: Vec<&'static str>,
}

/// Where the frame region is inside the container (the default `--runtime-dir`, /run/mecam).
pub const REGION: &str = "/run/mecam/frames";
/// Where motion-svc keeps its event folders inside the container.
pub const EVENTS_DIR: &str = "/var/lib/mecam/events";

impl MecamOptions {
    /// Options that play `scene` (a [`crate::scenes`] script, at `/etc/mecam/scene.toml`) with
    /// `motion` added to the `[motion]` section.
    pub fn with_scene(scene: &str, motion: &str) -> MecamOptions {
        MecamOptions {
            config: Some(crate::scenes::config("/etc/mecam/scene.toml", "", motion)),
            etc_files: vec![("mecam/scene.toml".into(), scene.into())],
            ..MecamOptions::default()
        }
    }
}

/// One motion event as the journal tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEvent {
    /// `MECAM_EVENT_ID`.
    pub id: String,
    /// `__REALTIME_TIMESTAMP` of the start record, µs since the epoch.
    pub start_us: u64,
    /// `_PID` of the process that logged the start (container pid namespace).
    pub pid: u32,
    /// `__REALTIME_TIMESTAMP` of the end record, if there is one yet.
    pub end_us: Option<u64>,
}

/// Microseconds since the epoch now (the container shares the host's clock).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn field_u64(v: &serde_json::Value, key: &str) -> Option<u64> {
    v[key].as_str()?.parse().ok()
}

/// mecam installed and started under the container's systemd: synthetic camera, web on a
/// free loopback port, a random admin password.
#[derive(Debug)]
pub struct Mecam {
    /// The container.
    pub ct: Container,
    /// Where `web-svc` listens (host loopback, shared network namespace).
    pub addr: SocketAddr,
    /// The admin password.
    pub password: String,
    /// The units this test started (the others may be absent or failing).
    pub started: Vec<&'static str>,
}

/// The repository's unit `name`, with binaries at [`BIN_DIR`].
///
/// # Errors
/// The unit file is unreadable.
pub fn unit_text(name: &str) -> anyhow::Result<String> {
    Ok(crate::unit_file::text(name)?.replace("/usr/local/bin/", &format!("{BIN_DIR}/")))
}

fn exec_start(unit_text: &str) -> anyhow::Result<String> {
    unit_text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .map(str::to_owned)
        .context("unit has no ExecStart=")
}

impl Mecam {
    /// Boot a container, install the units with test drop-ins, set the password, start
    /// `mecam.target`, and wait for all three units to be active and `/healthz` to answer.
    ///
    /// # Errors
    /// Any step failed.
    pub fn start(opts: MecamOptions) -> anyhow::Result<Mecam> {
        let port = crate::system::free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut etc: EtcFiles = Vec::new();
        for unit in UNITS.iter().copied().chain(["mecam.target"]) {
            etc.push((format!("systemd/system/{unit}"), unit_text(unit)?));
        }
        // As install.sh does: /run/mecam (capture's) and /var/lib/mecam from boot.
        etc.push((
            "tmpfiles.d/mecam.conf".into(),
            std::fs::read_to_string(crate::bins::systemd_dir().join("tmpfiles.conf"))?,
        ));
        let extra = [
            (
                "mecam-capture.service",
                [
                    vec!["--source".to_owned(), "synthetic".to_owned()],
                    opts.capture_args.clone(),
                ]
                .concat(),
            ),
            ("mecam-motion.service", opts.motion_args.clone()),
            (
                "mecam-web.service",
                [
                    vec!["--listen".to_owned(), addr.to_string()],
                    opts.web_args.clone(),
                ]
                .concat(),
            ),
        ];
        for (unit, args) in extra {
            if args.is_empty() {
                continue;
            }
            let cmd = format!("{} {}", exec_start(&unit_text(unit)?)?, args.join(" "));
            etc.push((
                format!("systemd/system/{unit}.d/50-test-args.conf"),
                format!("[Service]\nExecStart=\nExecStart={cmd}\n"),
            ));
        }
        etc.extend(opts.etc_files.iter().cloned());
        for (unit, file, text) in &opts.dropins {
            etc.push((format!("systemd/system/{unit}.d/{file}"), text.clone()));
        }
        etc.push((
            "mecam/mecam.toml".into(),
            opts.config
                .clone()
                .unwrap_or_else(|| "[capture]\n[motion]\n[web]\n".into()),
        ));
        let ct = Container::boot(&etc)?;
        let password = crate::random_password();
        ct.run(&[
            "install",
            "-d",
            "-o",
            "mecam",
            "-g",
            "mecam",
            "-m",
            "0750",
            "/var/lib/mecam",
            "/var/lib/mecam/web",
        ])?;
        let out = ct.exec_stdin(
            &[
                "setpriv",
                "--reuid=mecam",
                "--regid=mecam",
                "--clear-groups",
                &format!("{BIN_DIR}/web-svc"),
                "set-password",
                "--state-dir",
                "/var/lib/mecam/web",
            ],
            format!("{password}\n").as_bytes(),
        )?;
        anyhow::ensure!(
            out.status.success(),
            "web-svc set-password failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let started: Vec<&'static str> = if opts.only.is_empty() {
            UNITS.to_vec()
        } else {
            opts.only.clone()
        };
        let mut cmd = vec!["systemctl", "start", "--no-block"];
        cmd.extend(if opts.only.is_empty() {
            vec!["mecam.target"]
        } else {
            started.clone()
        });
        ct.run(&cmd)?;
        for unit in &started {
            ct.wait_active(unit, 0, ACTIVE_TIMEOUT)?;
        }
        let m = Mecam {
            ct,
            addr,
            password,
            started,
        };
        m.wait_healthz()?;
        Ok(m)
    }

    /// Wait until `GET /healthz` answers 200 (only when `web-svc` was started).
    ///
    /// # Errors
    /// Not within [`ACTIVE_TIMEOUT`].
    pub fn wait_healthz(&self) -> anyhow::Result<()> {
        let addr = self.addr;
        poll::until_true("web-svc /healthz", ACTIVE_TIMEOUT, || {
            http::get(addr, "/healthz", None).is_ok_and(|r| r.status == 200)
        })
    }

    /// Log in as admin; the session cookie.
    ///
    /// # Errors
    /// Login refused.
    pub fn login(&self) -> anyhow::Result<String> {
        http::login(self.addr, crate::ADMIN_USER, &self.password)
    }

    /// motion-svc's events directory, seen from the host.
    pub fn events_dir(&self) -> PathBuf {
        self.ct.host_path(EVENTS_DIR)
    }

    /// Every motion event in the journal so far, start records paired with their end records,
    /// oldest first.
    ///
    /// # Errors
    /// journalctl failed.
    pub fn journal_events(&self) -> anyhow::Result<Vec<JournalEvent>> {
        let starts = self
            .ct
            .journal_json(&[&format!("MESSAGE_ID={}", crate::MSG_MOTION_START)])?;
        let ends = self
            .ct
            .journal_json(&[&format!("MESSAGE_ID={}", crate::MSG_MOTION_END)])?;
        let mut out: Vec<JournalEvent> = starts
            .iter()
            .filter_map(|r| {
                Some(JournalEvent {
                    id: r["MECAM_EVENT_ID"].as_str()?.to_owned(),
                    start_us: field_u64(r, "__REALTIME_TIMESTAMP")?,
                    pid: field_u64(r, "_PID")? as u32,
                    end_us: None,
                })
            })
            .collect();
        for e in &mut out {
            e.end_us = ends
                .iter()
                .find(|r| r["MECAM_EVENT_ID"].as_str() == Some(e.id.as_str()))
                .and_then(|r| field_u64(r, "__REALTIME_TIMESTAMP"));
        }
        Ok(out)
    }

    /// Wait for an event in progress: its start record is in the journal, its end record is
    /// not, its folder says `recording`, and `min_clip_bytes` of its clip are written.
    ///
    /// # Errors
    /// None within `timeout`.
    pub fn wait_event_in_progress(
        &self,
        min_clip_bytes: u64,
        timeout: Duration,
    ) -> anyhow::Result<JournalEvent> {
        let dir = self.events_dir();
        poll::until("a motion event in progress", timeout, || {
            let evs = self.journal_events().map_err(|e| e.to_string())?;
            Ok(evs.into_iter().rev().find(|e| {
                e.end_us.is_none()
                    && crate::events::state(&dir, &e.id).as_deref() == Some("recording")
                    && std::fs::metadata(dir.join(&e.id).join(crate::events::CLIP_PART))
                        .is_ok_and(|m| m.len() >= min_clip_bytes)
            }))
        })
    }

    /// Wait for the first event whose start was logged after `after_us` by a process other
    /// than `not_pid` (0: any) to end, in the journal and in its folder (`complete`); checks
    /// its clip ([`crate::events::check_closed`]).
    ///
    /// # Errors
    /// No such event within `timeout`, or its clip is not consistent.
    pub fn wait_event_after(
        &self,
        after_us: u64,
        not_pid: u32,
        timeout: Duration,
    ) -> anyhow::Result<JournalEvent> {
        let dir = self.events_dir();
        let ev = poll::until(
            "a motion event started after the fault to end and complete",
            timeout,
            || {
                let evs = self.journal_events().map_err(|e| e.to_string())?;
                let Some(e) = evs
                    .into_iter()
                    .find(|e| e.start_us > after_us && e.pid != not_pid)
                else {
                    return Err("no start record yet".into());
                };
                let state = crate::events::state(&dir, &e.id);
                Ok((e.end_us.is_some() && state.as_deref() == Some("complete")).then_some(e))
            },
        )?;
        crate::events::check_closed(&dir, &ev.id)?;
        Ok(ev)
    }

    /// Wait until event `id` is closed in its folder (`complete` or `interrupted`); checks
    /// its clip. Returns the state and the clip's frame count.
    ///
    /// # Errors
    /// Not closed within `timeout`, or its clip is not consistent.
    pub fn wait_closed(&self, id: &str, timeout: Duration) -> anyhow::Result<(String, u64)> {
        let dir = self.events_dir();
        let state = poll::until(&format!("event {id} closed"), timeout, || {
            let s = crate::events::state(&dir, id).unwrap_or_default();
            Ok(matches!(s.as_str(), "complete" | "interrupted").then_some(s))
        })?;
        let frames = crate::events::check_closed(&dir, id)?;
        Ok((state, frames))
    }

    /// The inode of the frame region file, seen from the host.
    ///
    /// # Errors
    /// The region is not there.
    pub fn region_inode(&self) -> anyhow::Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        let p = self.ct.host_path(REGION);
        Ok(std::fs::metadata(&p)
            .with_context(|| format!("stat {}", p.display()))?
            .ino())
    }

    /// Wait until process `pid` (container pid) has the region file with inode `ino` mapped:
    /// it is connected to capture-svc and reads that very region.
    ///
    /// # Errors
    /// Not within `timeout`.
    pub fn wait_maps_region(&self, pid: u32, ino: u64, timeout: Duration) -> anyhow::Result<()> {
        let maps = self.ct.host_path(&format!("/proc/{pid}/maps"));
        poll::until_true(
            &format!("pid {pid} to map {REGION} (inode {ino})"),
            timeout,
            || {
                std::fs::read_to_string(&maps).is_ok_and(|text| {
                    text.lines().any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.len() >= 6 && f[4] == ino.to_string() && f[5] == REGION
                    })
                })
            },
        )
    }

    /// Main pids of the three units, in [`UNITS`] order (0 for a unit not running).
    ///
    /// # Errors
    /// systemctl failed.
    pub fn pids(&self) -> anyhow::Result<[u32; 3]> {
        Ok([
            self.ct.main_pid(UNITS[0])?,
            self.ct.main_pid(UNITS[1])?,
            self.ct.main_pid(UNITS[2])?,
        ])
    }
}
