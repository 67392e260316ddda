//! The `[web]` section of the config file: every bound of the service lives here, with the
//! default that fits a Pi Zero 2 W.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stream::RESEND_AFTER;

/// Where the password hash and the setup code live: the units' `StateDirectory=mecam/web`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mecam/web";

/// Lowest `viewer_timeout_s`: twice [`RESEND_AFTER`], the longest a healthy stream (re-sends
/// of the last frame, or `?fps=1`) goes without handing its socket a part.
pub const MIN_VIEWER_TIMEOUT_S: f64 = 2.0;
const _: () = assert!(MIN_VIEWER_TIMEOUT_S >= 2.0 * RESEND_AFTER.as_secs() as f64);
/// Lowest `request_timeout_s` (a slow phone on mobile data still sends a login form in it).
pub const MIN_REQUEST_TIMEOUT_S: f64 = 1.0;
/// Highest `request_timeout_s`.
pub const MAX_REQUEST_TIMEOUT_S: f64 = 300.0;

/// Largest `max_tracked_clients` accepted: the table is scanned for its stalest entry when
/// a new address comes and it is full.
pub const MAX_TRACKED_CLIENTS_LIMIT: usize = 65_536;
/// Longest login backoff accepted (a day).
pub const MAX_LOGIN_BACKOFF_S: f64 = 24.0 * 3600.0;

/// `[web]` in the config file. `--listen` overrides `listen`. The directories are no keys of
/// `[web]`: the events are `[motion] events_dir` (one key moves both services), the state
/// directory is the units' `StateDirectory=` (only `--state-dir` moves it, for tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where `motion-svc` writes event folders: `[motion] events_dir` (or `--events-dir`).
    #[serde(skip)]
    pub events_dir: PathBuf,
    /// Where the password hash and the setup code live (`--state-dir`).
    #[serde(skip)]
    pub state_dir: PathBuf,
    /// The overrides file the settings page writes: `[motion] overrides_file` (or
    /// `--overrides-file`).
    #[serde(skip)]
    pub overrides_file: PathBuf,
    /// motion-svc's live preview socket: `[motion] preview_socket` (or `--preview-socket`).
    #[serde(skip)]
    pub preview_socket: PathBuf,
    /// The administrator's tunable `[motion]` values, what the settings page starts from.
    #[serde(skip)]
    pub motion_tunables: tuning::Tunables,
    /// Live streams served at once; more get `503` with `Retry-After`.
    pub max_streams: usize,
    /// TCP connections open at once (streams, pages, API). Past it a newcomer takes the place
    /// of the connection that has waited longest on its client (a head or a body to come) of
    /// the client address holding the most; it is closed on accept only when none waits.
    pub max_connections: usize,
    /// A viewer whose socket accepts nothing for this many seconds is dropped. At least
    /// [`MIN_VIEWER_TIMEOUT_S`]: a healthy stream only shows progress once a second.
    pub viewer_timeout_s: f64,
    /// Seconds a client has to send a request's body and have the answer started (its head has
    /// `head_timeout_s`); a page or API answer whose socket takes nothing this long is dropped.
    /// A stalled request gets `408` and its connection is closed, so stalled clients cannot
    /// hold every connection slot.
    pub request_timeout_s: f64,
    /// Browser sessions kept at once; a new login past it ends the oldest session.
    pub max_sessions: usize,
    /// A session ends this many seconds after login.
    pub session_ttl_s: u64,
    /// Client addresses (IPv6: /64s) tracked by the login limiter; past it the stalest entry
    /// is forgotten.
    pub max_tracked_clients: usize,
    /// Largest request body accepted, in bytes (forms only; nothing uploads).
    pub max_body_bytes: usize,
    /// Events shown per page.
    pub events_per_page: usize,
    /// Event folders considered when listing (newest first); older ones are not listed.
    pub max_events_listed: usize,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Connections open at once from one client address (an IPv6 client's /64); past it the
    /// address's own connection that has waited longest on it is closed for the newcomer, or,
    /// if none waits, the newcomer is refused. Behind a reverse proxy every client has the proxy's address:
    /// raise it there.
    pub max_connections_per_client: usize,
    /// Seconds a client has for its TLS handshake and for each request head (also how long an
    /// idle keep-alive connection stays open). At most `request_timeout_s` counts.
    pub head_timeout_s: f64,
    /// Below this many MiB free on the events disk the dashboard and `/api/status` say that
    /// nothing can be recorded.
    pub events_min_free_mib: f64,
    /// Wrong passwords a client address (IPv6: a /64) may try before it has to wait.
    pub login_free_failures: u32,
    /// The first wait after those, in seconds; it doubles with each further failure.
    pub login_backoff_first_s: f64,
    /// The longest wait, in seconds.
    pub login_backoff_max_s: f64,
    /// Failed logins a minute, all addresses together, past which checks for addresses that
    /// already failed are spaced out to this many a minute (fresh addresses are not slowed).
    pub login_slow_after_failures_per_min: u32,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            events_dir: PathBuf::from(ipc::service::DEFAULT_EVENTS_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            overrides_file: PathBuf::from(tuning::DEFAULT_OVERRIDES_FILE),
            preview_socket: PathBuf::from(tuning::DEFAULT_PREVIEW_SOCKET),
            motion_tunables: tuning::Tunables::default(),
            max_streams: 16,
            max_connections: 128,
            viewer_timeout_s: 10.0,
            request_timeout_s: 10.0,
            max_sessions: 32,
            session_ttl_s: 7 * 24 * 3600,
            max_tracked_clients: 256,
            max_body_bytes: 16 * 1024,
            events_per_page: 20,
            max_events_listed: 10_000,
            tls_cert: None,
            tls_key: None,
            max_connections_per_client: 16,
            head_timeout_s: 5.0,
            events_min_free_mib: 64.0,
            login_free_failures: 5,
            login_backoff_first_s: 30.0,
            login_backoff_max_s: 900.0,
            login_slow_after_failures_per_min: 30,
        }
    }
}

impl WebConfig {
    /// Checks every value, naming the key of the first bad one.
    ///
    /// # Errors
    /// A value out of its range, or half a TLS pair.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_streams", self.max_streams),
            ("max_connections", self.max_connections),
            ("max_sessions", self.max_sessions),
            ("max_tracked_clients", self.max_tracked_clients),
            ("events_per_page", self.events_per_page),
            ("max_events_listed", self.max_events_listed),
            ("max_body_bytes", self.max_body_bytes),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(format!("[web] {key} must be at least 1"));
            }
        }
        if self.max_connections <= self.max_streams {
            return Err("[web] max_connections must be larger than max_streams, so pages still load while every stream is taken".into());
        }
        if !(self.viewer_timeout_s.is_finite()
            && (MIN_VIEWER_TIMEOUT_S..=3600.0).contains(&self.viewer_timeout_s))
        {
            return Err(format!(
                "[web] viewer_timeout_s must be between {MIN_VIEWER_TIMEOUT_S} and 3600 (a healthy stream shows progress only once a second)"
            ));
        }
        if !(self.request_timeout_s.is_finite()
            && (MIN_REQUEST_TIMEOUT_S..=MAX_REQUEST_TIMEOUT_S).contains(&self.request_timeout_s))
        {
            return Err(format!(
                "[web] request_timeout_s must be between {MIN_REQUEST_TIMEOUT_S} and {MAX_REQUEST_TIMEOUT_S}"
            ));
        }
        if self.session_ttl_s < 60 {
            return Err("[web] session_ttl_s must be at least 60".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("[web] tls_cert and tls_key must be given together".into());
        }
        if self.max_connections_per_client == 0 {
            return Err("[web] max_connections_per_client must be at least 1".into());
        }
        if !(self.head_timeout_s.is_finite()
            && (MIN_REQUEST_TIMEOUT_S..=MAX_REQUEST_TIMEOUT_S).contains(&self.head_timeout_s))
        {
            return Err(format!(
                "[web] head_timeout_s must be between {MIN_REQUEST_TIMEOUT_S} and {MAX_REQUEST_TIMEOUT_S}"
            ));
        }
        if !(self.events_min_free_mib.is_finite() && self.events_min_free_mib >= 0.0) {
            return Err("[web] events_min_free_mib must be a number of MiB, 0 or more".into());
        }
        self.validate_login()
    }

    fn validate_login(&self) -> Result<(), String> {
        if self.max_tracked_clients > MAX_TRACKED_CLIENTS_LIMIT {
            return Err(format!(
                "[web] max_tracked_clients must be at most {MAX_TRACKED_CLIENTS_LIMIT}"
            ));
        }
        if self.login_free_failures == 0 || self.login_slow_after_failures_per_min == 0 {
            return Err("[web] login_free_failures and login_slow_after_failures_per_min must be at least 1".into());
        }
        let (first, max) = (self.login_backoff_first_s, self.login_backoff_max_s);
        if !(first.is_finite() && (1.0..=MAX_LOGIN_BACKOFF_S).contains(&first)) {
            return Err(format!(
                "[web] login_backoff_first_s must be between 1 and {MAX_LOGIN_BACKOFF_S}"
            ));
        }
        if !(max.is_finite() && (first..=MAX_LOGIN_BACKOFF_S).contains(&max)) {
            return Err(format!(
                "[web] login_backoff_max_s must be between login_backoff_first_s and {MAX_LOGIN_BACKOFF_S}"
            ));
        }
        Ok(())
    }

    /// The login limiter's settings.
    pub fn login_policy(&self) -> crate::auth::LoginPolicy {
        crate::auth::LoginPolicy {
            free_failures: self.login_free_failures,
            backoff_first: Duration::from_secs_f64(self.login_backoff_first_s),
            backoff_max: Duration::from_secs_f64(self.login_backoff_max_s),
            max_clients: self.max_tracked_clients,
            slow_after_per_min: self.login_slow_after_failures_per_min,
        }
    }

    /// `viewer_timeout_s` as a duration.
    pub fn viewer_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.viewer_timeout_s)
    }

    /// `request_timeout_s` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_s)
    }

    /// `head_timeout_s` as a duration, at most `request_timeout_s`.
    pub fn head_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.head_timeout_s.min(self.request_timeout_s))
    }

    /// The address a person opens in a browser, `http://HOST:PORT/` (`https` with TLS):
    /// HOST is this machine's name when listening on every address, else the address.
    pub fn browser_url(&self, port: u16) -> String {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let ip = self.listen.ip();
        let host = if ip.is_unspecified() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned())
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        format!("{scheme}://{host}:{port}/")
    }

    /// `events_min_free_mib` in bytes.
    pub fn events_min_free_bytes(&self) -> u64 {
        (self.events_min_free_mib * 1024.0 * 1024.0) as u64
    }
}
