//! What every handler shares: the configuration, the live fan-out, the password file,
//! sessions, the login limiter and its password checker, the events store, and the shutdown
//! signal that ends every stream.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{BasicCache, Checker, PasswordStore, RateLimiter, Sessions, SetupCode};
use crate::config::WebConfig;
use crate::events::EventStore;
use crate::fanout::Hub;
use crate::settings::SettingsStore;

/// Everything handlers share.
#[derive(Debug)]
pub struct Inner {
    /// The configuration.
    pub config: WebConfig,
    /// The live fan-out.
    pub hub: Arc<Hub>,
    /// The announce socket of capture-svc.
    pub socket_path: PathBuf,
    /// The runtime directory (the socket's), whose `status/` holds the services' status
    /// records (`crate::health`).
    pub runtime_dir: PathBuf,
    /// The admin password file.
    pub(crate) passwords: PasswordStore,
    /// The one-time setup code, asked for while no password is set.
    pub(crate) setup_code: SetupCode,
    /// Browser sessions.
    pub(crate) sessions: Sessions,
    /// The login limiter.
    pub(crate) limiter: RateLimiter,
    /// HTTP Basic credentials already checked.
    pub(crate) basic: BasicCache,
    /// The password checker behind the limiter.
    pub(crate) checker: Checker,
    /// State changes refused by the same-origin rule.
    pub(crate) cross_site_refused: AtomicU64,
    /// The event folders.
    pub(crate) events: EventStore,
    /// The settings page's overrides file and motion-svc's preview.
    pub(crate) settings: SettingsStore,
    /// Cancelled on shutdown: every stream and task ends.
    shutdown: CancellationToken,
    /// Whether the service is served over TLS (cookies are `Secure`, origins `https`).
    pub(crate) tls: bool,
    /// Whether the current password-file error was logged (logged once, not per request).
    password_error_logged: AtomicBool,
}

/// Cloneable handle on the shared state.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Inner>);

impl AppState {
    /// State for `config`, reading frames from the announce socket at `socket_path`.
    pub fn new(config: WebConfig, socket_path: PathBuf) -> AppState {
        let tls = config.tls_cert.is_some();
        AppState(Arc::new(Inner {
            hub: Arc::new(Hub::default()),
            runtime_dir: socket_path
                .parent()
                .map_or_else(|| PathBuf::from("."), PathBuf::from),
            socket_path,
            passwords: PasswordStore::new(&config.state_dir),
            setup_code: SetupCode::new(&config.state_dir),
            sessions: Sessions::new(
                config.max_sessions,
                Duration::from_secs(config.session_ttl_s),
            ),
            limiter: RateLimiter::new(config.login_policy()),
            basic: BasicCache::default(),
            checker: Checker::new(config.request_timeout() / 4),
            cross_site_refused: AtomicU64::new(0),
            events: EventStore::new(&config.events_dir, config.max_events_listed),
            settings: SettingsStore::new(
                config.overrides_file.clone(),
                config.motion_tunables.clone(),
                config.preview_socket.clone(),
            ),
            shutdown: CancellationToken::new(),
            tls,
            password_error_logged: AtomicBool::new(false),
            config,
        }))
    }

    /// Ends every stream; called by `run` on shutdown.
    pub fn begin_shutdown(&self) {
        self.0.shutdown.cancel();
    }

    /// The password file's state; an unusable file is logged once (with what to do) and
    /// is never taken for "no password".
    pub fn password(&self) -> Password {
        let logged = &self.0.password_error_logged;
        match self.0.passwords.load() {
            Ok(None) => {
                logged.store(false, Ordering::Relaxed);
                Password::Unset
            }
            Ok(Some(hash)) => {
                logged.store(false, Ordering::Relaxed);
                Password::Set(hash)
            }
            Err(e) => {
                if !logged.swap(true, Ordering::Relaxed) {
                    tracing::error!("{e}; until then nobody can log in");
                }
                Password::Broken
            }
        }
    }

    /// A token cancelled on shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.0.shutdown.clone()
    }
}

/// The admin password, as the password file says.
#[derive(Debug, PartialEq, Eq)]
pub enum Password {
    /// No password file: first-visit setup is open to whoever has the setup code.
    Unset,
    /// The hash.
    Set(String),
    /// The file exists but cannot be used (logged); nobody can log in, setup stays shut.
    Broken,
}

impl Password {
    /// The hash, if there is a usable one: sessions and the Basic cache are tied to it, so
    /// any new password ends them, whatever the file's time says.
    pub fn hash(&self) -> Option<&str> {
        match self {
            Password::Set(h) => Some(h),
            Password::Unset | Password::Broken => None,
        }
    }
}
