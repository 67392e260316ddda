//! The connection to the broker (rumqttc): one task drives the event loop and reconnects
//! with backoff and jitter; one task sends what the outbox holds, one QoS 1 message at a
//! time, and at shutdown says `offline` and disconnects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng as _;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::{self, MqttSettings};
use super::{MAX_POSTER_BYTES, Shared, lock};

/// The first pause after a failed connection; it doubles up to `reconnect_max_s`.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Keep-alive: a dead broker is noticed within about 1.5 times this.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// At shutdown, how long the `offline` message and the disconnect may take.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// Largest message taken from the broker (the commands and Home Assistant's birth are a few
/// bytes): a larger one closes the connection.
pub const MAX_INCOMING_BYTES: usize = 4096;
/// Requests between the tasks and the event loop: one message in flight, the two
/// subscriptions, `offline` and the disconnect, with room to spare.
const REQUEST_CHANNEL: usize = 8;

/// A connection that held this long was a working one: the next failure starts the pause
/// again from [`FIRST_BACKOFF`].
pub const STABLE: Duration = KEEP_ALIVE;

/// Connections made and lost (a broker that drops every connection): one line of each per
/// interval, with a count.
static CONNECTED_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);
static LOST_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);
/// A broker that stays away: one line per interval, with a count.
static UNREACHABLE_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);
/// Commands (anyone who may publish on the broker can send them): one line per interval.
static COMMAND_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);
static RETAINED_COMMAND_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);
/// The queue dropping its oldest.
pub(super) static QUEUE_FULL_LOG: ipc::throttle::LogThrottle =
    ipc::throttle::LogThrottle::new(ipc::throttle::OUTSIDER_LOG_INTERVAL);

/// Builds the client and spawns the two tasks.
pub(super) fn spawn(
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let options = options(&shared.settings, &shared.topics.availability)?;
    let (client, events) = AsyncClient::new(options, REQUEST_CHANNEL);
    tasks.spawn(drive(
        Arc::clone(shared),
        events,
        client.clone(),
        stop.clone(),
    ));
    tasks.spawn(send(Arc::clone(shared), client, stop.clone()));
    Ok(())
}

fn options(s: &MqttSettings, availability: &str) -> anyhow::Result<MqttOptions> {
    let mut o = MqttOptions::new(&s.client_id, &s.host, s.port);
    o.set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_inflight(1)
        .set_max_packet_size(MAX_INCOMING_BYTES, MAX_POSTER_BYTES + 4096)
        .set_last_will(LastWill::new(
            availability,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, password)) = &s.credentials {
        o.set_credentials(user, password.expose());
    }
    if let config::Transport::Tls { ca_file } = &s.transport {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(ca_file)?),
        )));
    }
    Ok(o)
}

/// rustls with the workspace's ring provider, trusting the certificates of `ca_file`.
fn tls_config(ca_file: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("mqtt.ca_file {}: cannot read it as PEM", ca_file.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("mqtt.ca_file {}: bad PEM", ca_file.display()))?;
        // A bundle may hold a certificate rustls does not take: the others still count.
        let _ = roots.add(cert);
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "mqtt.ca_file {}: no usable CA certificate in it; give the PEM file of the CA that signed the broker's certificate",
        ca_file.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Drives the connection until `stop` (then until the disconnect went out, at most
/// [`SHUTDOWN_FLUSH`]): marks the outbox connected at each `CONNACK`, acknowledges at each
/// `PUBACK`, and after a failure waits a growing, jittered pause before the next attempt.
async fn drive(
    shared: Arc<Shared>,
    mut events: EventLoop,
    client: AsyncClient,
    stop: CancellationToken,
) {
    let s = &shared.settings;
    let mut pause = FIRST_BACKOFF;
    // When the connection came up: one that fails sooner than STABLE keeps the pause growing,
    // so a broker (or a peer on it) that closes every new connection is retried ever slower.
    let mut up_since = None::<Instant>;
    let flush_deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(SHUTDOWN_FLUSH).await;
    };
    tokio::pin!(flush_deadline);
    loop {
        let event = tokio::select! {
            e = events.poll() => e,
            () = &mut flush_deadline => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                up_since = Some(Instant::now());
                if let Some(held_back) = CONNECTED_LOG.check() {
                    tracing::info!(broker = %format!("{}:{}", s.host, s.port), prefix = %s.prefix, held_back, "MQTT connected");
                }
                let _ = client.try_subscribe(shared.topics.ha_status.clone(), QoS::AtMostOnce);
                let _ = client.try_subscribe(shared.topics.set_detection.clone(), QoS::AtLeastOnce);
                lock(&shared.outbox).connected();
                shared.wake.notify_one();
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                lock(&shared.outbox).acked();
                shared.wake.notify_one();
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == shared.topics.set_detection => {
                if p.retain {
                    // A command left on the broker would be obeyed again at every connection,
                    // over what was set since: only live commands count.
                    if let Some(held_back) = RETAINED_COMMAND_LOG.check() {
                        tracing::warn!(
                            held_back,
                            "MQTT command {} ignored: it is a retained message (clear it with an empty retained message)",
                            p.topic
                        );
                    }
                } else {
                    set_detection(&shared, &p.payload).await;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic == shared.topics.ha_status && p.payload.as_ref() == b"online" {
                    tracing::info!("Home Assistant started: discovery sent again");
                    lock(&shared.outbox).resend_slots();
                    shared.wake.notify_one();
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                let was_up = lock(&shared.outbox).stats().connected;
                lock(&shared.outbox).disconnected();
                if stop.is_cancelled() {
                    return;
                }
                if up_since.take().is_some_and(|t| t.elapsed() >= STABLE) {
                    pause = FIRST_BACKOFF;
                }
                let wait = jittered(pause);
                if was_up {
                    if let Some(held_back) = LOST_LOG.check() {
                        tracing::warn!(
                            held_back,
                            "MQTT connection lost: {}; reconnecting in {wait:.1?}",
                            describe(&e)
                        );
                    }
                } else if let Some(held_back) = UNREACHABLE_LOG.check() {
                    tracing::warn!(
                        held_back,
                        "MQTT broker {}:{} unreachable: {}; retrying in {wait:.1?} (up to every {:?})",
                        s.host,
                        s.port,
                        describe(&e),
                        s.reconnect_max
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
                pause = (pause * 2).min(s.reconnect_max);
            }
        }
    }
}

/// `<prefix>/set/detection`: `ON` arms, `OFF` disarms, written to the overrides file as the
/// settings page writes it (the detection loop applies it from there, within a second, and
/// the `detection` topic then says so). One command at a time: the connection is not read
/// while the file is written, so a flood of commands waits in the broker, not here.
async fn set_detection(shared: &Shared, payload: &[u8]) {
    let on = match payload {
        b"ON" => true,
        b"OFF" => false,
        other => {
            if let Some(held_back) = COMMAND_LOG.check() {
                tracing::warn!(
                    held_back,
                    "MQTT command {} ignored: {:?} is not ON or OFF",
                    shared.topics.set_detection,
                    String::from_utf8_lossy(&other[..other.len().min(32)])
                );
            }
            return;
        }
    };
    let path = shared.paths.overrides_file.clone();
    let written = tokio::task::spawn_blocking(move || {
        tuning::store::update(&path, |o| o.detection = Some(on)).map(|_| ())
    })
    .await;
    if let Some(held_back) = COMMAND_LOG.check() {
        let what = if on { "armed" } else { "disarmed" };
        match written {
            Ok(Ok(())) => tracing::info!(
                held_back,
                "MQTT command: detection {what} (written to the overrides file {})",
                shared.paths.overrides_file.display()
            ),
            Ok(Err(e)) => tracing::warn!(
                held_back,
                "MQTT command to set detection {what} not applied: {e}"
            ),
            Err(e) => tracing::warn!(held_back, "MQTT command not applied: {e}"),
        }
    }
}

/// Between half and all of `pause`, at random: many cameras that lost the same broker do not
/// come back in step.
fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// A connection error as a user reads it (a refused login says what to check).
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!(
            "the broker refused the connection ({code:?}): check mqtt.user and the password file"
        ),
        other => other.to_string(),
    }
}

/// Sends the outbox's next message whenever the link is free, until `stop`; then, for at
/// most half of [`SHUTDOWN_FLUSH`], what is still waiting (the end of an event the shutdown
/// cut); then says `offline` (retained) and disconnects, if connected.
async fn send(shared: Arc<Shared>, client: AsyncClient, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            () = stop.cancelled() => break,
        }
        if !send_next(&shared, &client).await {
            return;
        }
    }
    let flush = async {
        while lock(&shared.outbox).stats().connected {
            if !send_next(&shared, &client).await {
                return;
            }
            shared.wake.notified().await;
        }
    };
    let _ = tokio::time::timeout(SHUTDOWN_FLUSH / 2, flush).await;
    if lock(&shared.outbox).stats().connected {
        let _ = client.try_publish(
            shared.topics.availability.clone(),
            QoS::AtLeastOnce,
            true,
            "offline",
        );
        let _ = client.try_disconnect();
    }
}

/// Hands the outbox's next message, if any is due, to the event loop. False when the event
/// loop is gone.
async fn send_next(shared: &Shared, client: &AsyncClient) -> bool {
    // At most one: the next goes once this one is acknowledged (the link wakes us).
    let next = lock(&shared.outbox).take_next();
    match next {
        Some(m) => client
            .publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload)
            .await
            .is_ok(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_jittered_within_half_to_all_of_it() {
        let p = Duration::from_secs(8);
        let seen: Vec<_> = (0..200).map(|_| jittered(p)).collect();
        assert!(seen.iter().all(|d| *d >= p / 2 && *d <= p));
        assert!(seen.iter().any(|d| *d != seen[0]), "no jitter");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let e = tls_config(&f).unwrap_err().to_string();
        assert!(e.contains("ca.pem"), "{e}");
    }
}
