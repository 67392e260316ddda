//! The mecam `web-svc` library: everything the binary runs.
//!
//! [`app`] builds the router over an [`AppState`]; [`run`] serves it on a listener you hand
//! in, feeds the live fan-out from `capture-svc`, and returns when the shutdown future
//! completes and every connection is closed.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod events;
pub mod fanout;
pub mod health;
pub mod offline;
pub mod pages;
pub mod routes;
pub mod server;
pub mod settings;
pub mod state;
pub mod stream;

use std::path::PathBuf;

use ipc::announce::{ClientConfig, FrameClient, WEB_SVC};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

pub use config::WebConfig;
pub use routes::app;
pub use state::{AppState, Password};

/// What [`run`] serves, with everything that can fail at start already checked (the state
/// directory, the password file, the TLS certificate and key), so that the service tells
/// systemd it is ready only once nothing is left to fail.
pub struct Startup {
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The one-time setup code, while no password is set (logged with the URL by [`run`]).
    setup_code: Option<String>,
}

impl std::fmt::Debug for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Startup")
            .field("state", &self.state)
            .field("tls", &self.tls.is_some())
            .field("setup_code", &self.setup_code.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Startup {
    /// Checks the state directory, loads the TLS certificate and key, and reads the password
    /// file (an unusable one is logged with what to do; the service still starts, and
    /// answers `503` to logins until it is fixed). With no password it makes the one-time
    /// setup code (or keeps the unused one).
    ///
    /// # Errors
    /// The state directory is missing or not a directory, or the setup code cannot be
    /// written there; the TLS certificate or key cannot be loaded. Each names the file or
    /// key and what to do.
    pub fn new(config: WebConfig, socket_path: PathBuf) -> anyhow::Result<Startup> {
        check_state_dir(&config.state_dir)?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(c), Some(k)) => Some(server::tls_acceptor(c, k)?),
            _ => None,
        };
        let state = AppState::new(config, socket_path);
        let codes = &state.0.setup_code;
        let setup_code = match state.password() {
            Password::Unset => Some(codes.ensure()?),
            // A code works only while no password is set; one left behind goes (harmless if
            // it cannot: it is never asked for again).
            Password::Set(_) => {
                if let Err(e) = codes.remove() {
                    tracing::warn!("{e}");
                }
                None
            }
            Password::Broken => None,
        };
        Ok(Startup {
            state,
            tls,
            setup_code,
        })
    }

    /// The shared state (for the binary's watchdog task).
    pub fn state(&self) -> &AppState {
        &self.state
    }
}

fn check_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!(
            "the state directory {} is not a directory; make it a directory owned by the service user, or point --state-dir at one",
            dir.display()
        ),
        Err(e) => anyhow::bail!(
            "the state directory {}: {e}; create it, owned by the service user (the unit's StateDirectory= does), or point --state-dir at one",
            dir.display()
        ),
    }
}

/// Serves `startup` on `listener` until `shutdown` completes: the fan-out task reads frames
/// from the announce socket, streams end at once on shutdown, and `run` returns once every
/// connection and task is gone.
pub async fn run(
    listener: TcpListener,
    startup: Startup,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let Startup {
        state,
        tls,
        setup_code,
    } = startup;
    let cfg = &state.0.config;
    if let Some(code) = setup_code {
        let port = listener
            .local_addr()
            .map_or(cfg.listen.port(), |a| a.port());
        let url = cfg.browser_url(port);
        tracing::warn!(
            %url,
            "no admin password yet: open {url} and enter the one-time setup code {code} to choose it"
        );
    }
    let hub = state.0.hub.clone();
    let client = FrameClient::new(ClientConfig::new(state.0.socket_path.clone(), WEB_SVC));
    // Every task of the service is tracked: `run` returns once each has ended.
    let tasks = TaskTracker::new();
    let feeder_stop = state.shutdown_token().cancelled_owned();
    tasks.spawn(fanout::Feeder::new(hub.clone()).run(client, feeder_stop));
    tasks.spawn(routes::flush_outsider_logs_until(state.shutdown_token()));
    tasks.spawn(health::run_health(
        state.clone(),
        state.0.runtime_dir.clone(),
    ));
    let st = state.clone();
    let stopped = state.shutdown_token();
    tasks.spawn(async move {
        // The signal, or the server ending first (then `run` has begun the shutdown).
        tokio::select! {
            () = shutdown => st.begin_shutdown(),
            () = stopped.cancelled() => {}
        }
    });
    tasks.close();
    let server = server::serve(
        listener,
        app(state.clone()),
        hub,
        tls,
        server::Limits {
            max_connections: cfg.max_connections,
            max_per_client: cfg.max_connections_per_client,
        },
        server::Timeouts {
            viewer: cfg.viewer_timeout(),
            request: cfg.request_timeout(),
            head: cfg.head_timeout(),
        },
        state.shutdown_token(),
    );
    server.await;
    state.begin_shutdown();
    tasks.wait().await;
}
