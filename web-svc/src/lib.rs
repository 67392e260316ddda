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
pub mod offline;
pub mod pages;
pub mod server;
pub mod stream;
pub mod web;

use ipc::announce::{ClientConfig, FrameClient, WEB_SVC};
use tokio::net::TcpListener;

pub use config::WebConfig;
pub use web::{AppState, app};

/// Serves `state` on `listener` until `shutdown` completes: the fan-out task reads frames
/// from the announce socket, streams end at once on shutdown, and `run` returns once every
/// connection and task is gone.
///
/// # Errors
/// The TLS certificate or key cannot be loaded.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cfg = &state.0.config;
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(server::tls_acceptor(c, k)?),
        _ => None,
    };
    // Logs now, with what to do, if the password file is there but unusable.
    let _ = state.password();
    let hub = state.0.hub.clone();
    let client = FrameClient::new(ClientConfig::new(state.0.socket_path.clone(), WEB_SVC));
    let mut feeder_stop = state.shutdown_rx();
    let feeder = tokio::spawn(fanout::Feeder::new(hub.clone()).run(client, async move {
        let _ = feeder_stop.wait_for(|s| *s).await;
    }));
    let log_flusher = tokio::spawn(web::flush_outsider_logs_until(state.shutdown_rx()));
    let st = state.clone();
    let signal = tokio::spawn(async move {
        shutdown.await;
        st.begin_shutdown();
    });
    let server = server::serve(
        listener,
        app(state.clone()),
        hub,
        tls,
        cfg.max_connections,
        server::Timeouts {
            viewer: cfg.viewer_timeout(),
            request: cfg.request_timeout(),
        },
        state.shutdown_rx(),
    );
    server.await;
    signal.abort();
    state.begin_shutdown();
    let _ = feeder.await;
    let _ = log_flusher.await;
    Ok(())
}
