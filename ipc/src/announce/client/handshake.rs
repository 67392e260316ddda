//! One connection attempt of the client: connect, subscribe, read the hello, within a
//! deadline, as a future that owns what it uses so a cancelled call can resume it.

use std::future::Future;
use std::pin::Pin;

use tokio::net::UnixStream;

use super::ClientConfig;
use crate::announce::proto::{
    Hello, Message, MessageReader, PROTOCOL_VERSION, Subscribe, write_message,
};

/// The buffers a connection attempt borrows and gives back: allocated once per client.
#[derive(Debug)]
pub(super) struct Parts {
    pub(super) reader: MessageReader,
    pub(super) scratch: Vec<u8>,
}

/// How a connection attempt failed.
pub(super) enum Failure {
    /// The server said why.
    Refused(String),
    /// Anything else.
    Other(String),
}

impl Failure {
    pub(super) fn into_reason(self) -> String {
        match self {
            Failure::Refused(why) => format!("capture-svc refused this subscriber: {why}"),
            Failure::Other(why) => why,
        }
    }
}

pub(super) type Attempt = (Parts, Result<(UnixStream, Hello), Failure>);

/// A connection attempt in flight, kept across cancelled calls to [`FrameClient::next`].
pub(super) struct Connecting(pub(super) Pin<Box<dyn Future<Output = Attempt> + Send>>);

impl std::fmt::Debug for Connecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connecting(..)")
    }
}

/// One connection attempt: connect, subscribe, read the hello, all within
/// [`ClientConfig::hello_timeout`]. Owns what it uses, so it can be kept across calls.
pub(super) async fn handshake(config: ClientConfig, mut parts: Parts) -> Attempt {
    let result = tokio::time::timeout(config.hello_timeout, exchange(&config, &mut parts))
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Other(format!(
                "capture-svc sent no hello within {:?}",
                config.hello_timeout
            )))
        });
    (parts, result)
}

pub(super) async fn exchange(
    config: &ClientConfig,
    parts: &mut Parts,
) -> Result<(UnixStream, Hello), Failure> {
    let path = &config.socket_path;
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|e| Failure::Other(format!("cannot connect to {}: {e}", path.display())))?;
    let subscribe = Message::Subscribe(Subscribe {
        protocol_version: PROTOCOL_VERSION,
        name: config.name.clone(),
    });
    write_message(&mut stream, &subscribe, &mut parts.scratch)
        .await
        .map_err(|e| Failure::Other(format!("cannot subscribe: {e}")))?;
    parts.reader.reset();
    let hello = match parts.reader.read(&mut stream).await {
        Ok(Message::Hello(hello)) => hello,
        Ok(Message::Refused(r)) => return Err(Failure::Refused(r.reason)),
        Ok(other) => return Err(Failure::Other(format!("expected a hello, got {other:?}"))),
        // A version-1 capture-svc refuses a newer subscriber by closing without a word.
        Err(e) => {
            return Err(Failure::Other(format!(
                "no hello: {e} (capture-svc stopped, or is older than this build: run matching versions)"
            )));
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Failure::Other(format!(
            "capture-svc speaks protocol {}, this build {PROTOCOL_VERSION}; run matching versions",
            hello.protocol_version
        )));
    }
    Ok((stream, hello))
}
