//! Plumbing every mecam service shares: the common flags, the config file, logging to journald
//! or stderr, sd_notify, and the shutdown signal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the config file is unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/mecam/mecam.toml";
/// Where the region and socket live unless `--runtime-dir` says otherwise.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/mecam";

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// journald when started by systemd (`JOURNAL_STREAM` set), else stderr.
    Auto,
    /// The systemd journal, with structured fields.
    Journald,
    /// Readable lines on stderr.
    Stderr,
}

/// Flags every service takes; flatten into the service's own clap struct.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The TOML config file. A missing default file means built-in defaults; a missing file
    /// named here is an error.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Directory of the frame region and the announce socket (memory-backed, e.g. tmpfs).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUNTIME_DIR)]
    pub runtime_dir: PathBuf,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Where logs go.
    #[arg(long, value_enum, default_value = "auto")]
    pub log_target: LogTarget,
}

impl CommonArgs {
    /// The frame region's path.
    pub fn region_path(&self) -> PathBuf {
        self.runtime_dir.join(crate::REGION_FILE)
    }

    /// The announce socket's path.
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join(crate::SOCKET_FILE)
    }
}

/// Reads the `[section]` of the config file into `T`; no file or no section gives defaults.
///
/// `T` should be `#[serde(default, deny_unknown_fields)]` so a misspelt key is refused by name.
///
/// # Errors
/// A file named with `--config` that cannot be read, invalid TOML, or a section that does not
/// fit `T`; the message names the file, the section and the key.
pub fn load_section<T: DeserializeOwned + Default>(
    args: &CommonArgs,
    section: &str,
) -> anyhow::Result<T> {
    match read_config(args)? {
        None => Ok(T::default()),
        Some((path, text)) => parse_section(&text, section)
            .with_context(|| format!("in config file {}", path.display())),
    }
}

/// The config file's path and text; `None` when the default file is missing.
fn read_config(args: &CommonArgs) -> anyhow::Result<Option<(PathBuf, String)>> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some((path, t))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read config file {}", path.display())),
    }
}

/// Where motion-svc writes event folders and web-svc reads them, unless `[motion] events_dir`
/// says otherwise.
pub const DEFAULT_EVENTS_DIR: &str = "/var/lib/mecam/events";

/// One key of another service's section, for the one setting two services share (web-svc
/// reads `[motion] events_dir`, so that one key moves both): `None` when the file, the section
/// or the key is absent. The section's owner checks the rest of it.
///
/// # Errors
/// As [`load_section`], for the file and the TOML; a value of the wrong type names the key.
pub fn load_key<T: DeserializeOwned>(
    args: &CommonArgs,
    section: &str,
    key: &str,
) -> anyhow::Result<Option<T>> {
    let Some((path, text)) = read_config(args)? else {
        return Ok(None);
    };
    let in_file = || format!("in config file {}", path.display());
    let mut doc: toml::Table = text
        .parse()
        .context("not valid TOML")
        .with_context(in_file)?;
    let value = match doc.remove(section) {
        Some(toml::Value::Table(mut t)) => t.remove(key),
        _ => None,
    };
    value
        .map(|v| {
            v.try_into()
                .map_err(|e: toml::de::Error| anyhow::anyhow!("{section}.{key}: {}", e.message()))
                .with_context(in_file)
        })
        .transpose()
}

/// The sections of `mecam.toml`, one per service, and `[mqtt]` (motion-svc's). Any other top-level name is a misspelling
/// (`[captur]`, `[webb]`) or a key outside every section, and every service refuses it.
pub const KNOWN_SECTIONS: &[&str] = &["capture", "motion", "web", "mqtt"];

/// Parses the `[section]` of a TOML document into `T` (defaults when absent).
///
/// # Errors
/// Invalid TOML, a top-level name that is not one of [`KNOWN_SECTIONS`] (named in the
/// message), or a section that does not fit `T`, naming the key.
pub fn parse_section<T: DeserializeOwned + Default>(
    text: &str,
    section: &str,
) -> anyhow::Result<T> {
    let mut doc: toml::Table = text.parse().context("not valid TOML")?;
    if let Some(unknown) = doc
        .keys()
        .find(|k| k.as_str() != section && !KNOWN_SECTIONS.contains(&k.as_str()))
    {
        anyhow::bail!(
            "unknown section or top-level key `{unknown}` (the sections are [{}])",
            KNOWN_SECTIONS.join("], [")
        );
    }
    match doc.remove(section) {
        None => Ok(T::default()),
        Some(value) => value
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!(key_error(section, &e))),
    }
}

/// A deserialisation error as `section.key: what`, or `in [section]: what` when it concerns
/// the section itself (an unknown key, whose name is in the message).
///
/// `toml` puts the key path only in its `Display` (a last line "in `key`"), not in
/// [`toml::de::Error::message`], so the path is taken from there.
fn key_error(section: &str, e: &toml::de::Error) -> String {
    let shown = e.to_string();
    let shown = shown.trim_end();
    match shown.rsplit_once('\n') {
        Some((message, last)) if last.starts_with("in `") && last.ends_with('`') => {
            let key = &last[4..last.len() - 1];
            format!(
                "{section}.{key}: {}",
                message.trim_end().replace('\n', "; ")
            )
        }
        _ => format!("in [{section}]: {}", shown.replace('\n', "; ")),
    }
}

/// Renders a configuration as its TOML section, for `--print-config`.
///
/// # Errors
/// If `T` cannot be expressed in TOML (a bug in the service's config type).
pub fn render_section<T: Serialize>(section: &str, config: &T) -> anyhow::Result<String> {
    let mut doc = toml::Table::new();
    doc.insert(
        section.to_owned(),
        toml::Value::try_from(config).context("config is not TOML-shaped")?,
    );
    Ok(toml::to_string_pretty(&doc)?)
}

/// Sets up `tracing`: journald with structured fields, or readable stderr lines.
/// `RUST_LOG` overrides the default `info` level.
pub fn init_tracing(service: &str, target: LogTarget) {
    use tracing_subscriber::prelude::*;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let journald = match target {
        LogTarget::Stderr => false,
        LogTarget::Journald => true,
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter)
                    // No "F_" prefix: structured fields keep their own (upper-cased) names,
                    // so `message_id` becomes MESSAGE_ID and `journalctl MESSAGE_ID=...`
                    // finds motion events; `mecam_event_id` becomes MECAM_EVENT_ID.
                    .with(
                        layer
                            .with_field_prefix(None)
                            .with_syslog_identifier(service.to_owned()),
                    )
                    .init();
                return;
            }
            Err(e) => eprintln!("{service}: journald unavailable ({e}), logging to stderr"),
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .init();
}

/// Talks to systemd's notify socket; every call is a no-op outside systemd.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier;

impl Notifier {
    /// Tells systemd the service is ready.
    pub fn ready(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }

    /// Sets the status line `systemctl status` shows, followed by the heap figures
    /// ([`crate::heap::HeapStats`]) when the counting allocator is installed.
    pub fn status(&self, status: &str) {
        let text = if crate::heap::installed() {
            format!("{status}, {}", crate::heap::stats())
        } else {
            status.to_owned()
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&text)]);
    }

    /// Pings the watchdog: call only while the service is making progress.
    pub fn watchdog(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }

    /// Tells systemd the service is stopping.
    pub fn stopping(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }

    /// How often to ping: half the unit's `WatchdogSec`, or `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        let mut usec = 0;
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
    }
}

/// Completes on SIGTERM or SIGINT.
///
/// # Panics
/// If the signal handlers cannot be installed (only outside a Tokio runtime).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock frame timestamps use.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// The wall clock now, in nanoseconds since the Unix epoch.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Warns when `dir` is not memory-backed: frames written 30 times a second to an SD card wear
/// it out.
pub fn warn_if_not_tmpfs(dir: &Path) {
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    // Nested rather than a let chain: let chains need Rust 1.88, the workspace MSRV is 1.85.
    if let Ok(fs) = statfs(dir) {
        if fs.filesystem_type() != TMPFS_MAGIC {
            tracing::warn!(dir = %dir.display(), "runtime directory is not on tmpfs; frames will be written to disk");
        }
    }
}

/// Resident memory of this process in bytes, from `/proc/self/statm` (0 if unreadable).
pub fn resident_bytes() -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        fps: u32,
        source: Option<Kind>,
        inner: Inner,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        limit: u64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Rpicam,
        Synthetic,
    }

    #[test]
    fn load_key_reads_one_key_of_another_section() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mecam.toml");
        let args = |file: &Path| CommonArgs {
            config: Some(file.to_owned()),
            runtime_dir: PathBuf::from(DEFAULT_RUNTIME_DIR),
            print_config: false,
            log_target: LogTarget::Stderr,
        };
        let key = |text: &str| {
            std::fs::write(&file, text).unwrap();
            load_key::<PathBuf>(&args(&file), "motion", "events_dir")
        };
        assert_eq!(key("").unwrap(), None);
        assert_eq!(key("[motion]\nanalysis_fps = 2\n").unwrap(), None);
        assert_eq!(
            key("[motion]\nevents_dir = \"/srv/ev\"\n[web]\n").unwrap(),
            Some(PathBuf::from("/srv/ev"))
        );
        let e = key("[motion]\nevents_dir = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("motion.events_dir"), "{e:#}");
        let missing = args(&dir.path().join("absent.toml"));
        assert!(load_key::<PathBuf>(&missing, "motion", "events_dir").is_err());
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse_section::<Sample>(text, "svc").unwrap_err())
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let e = error("[svc]\nfps = \"fast\"\n");
        assert!(e.starts_with("svc.fps: "), "{e}");
        assert!(e.contains("expected u32"), "{e}");
    }

    #[test]
    fn an_unknown_enum_value_names_the_key_and_the_choices() {
        let e = error("[svc]\nsource = \"webcam\"\n");
        assert!(e.starts_with("svc.source: "), "{e}");
        assert!(e.contains("webcam") && e.contains("rpicam"), "{e}");
    }

    #[test]
    fn a_nested_key_is_named_with_its_path() {
        let e = error("[svc]\ninner = { limit = -1 }\n");
        assert!(e.starts_with("svc.inner.limit: "), "{e}");
    }

    #[test]
    fn an_unknown_key_is_named_in_the_section() {
        let e = error("[svc]\nfsp = 3\n");
        assert!(e.starts_with("in [svc]: "), "{e}");
        assert!(e.contains("fsp"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn other_sections_and_a_missing_section_are_fine() {
        let s: Sample = parse_section("[web]\nfps = \"x\"\n", "svc").unwrap();
        assert_eq!(s.fps, 0);
    }

    #[test]
    fn a_misspelt_section_or_a_key_outside_every_section_is_named() {
        for (text, name) in [
            ("[captur]\nfps = 3\n", "`captur`"),
            ("[webb]\n", "`webb`"),
            ("fps = 3\n[svc]\n", "`fps`"),
        ] {
            let e = error(text);
            assert!(e.contains(name), "{text:?}: {e}");
            assert!(e.contains("[capture]"), "says which sections exist: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
