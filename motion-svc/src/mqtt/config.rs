//! The `[mqtt]` section of `mecam.toml`, validated into [`MqttSettings`]: the broker URL, the
//! credentials (the password from a file only the service may read), the names, and the
//! bounds of the link.
//!
//! The section is off unless it is written: with no `[mqtt]` (or an empty one) nothing of
//! MQTT is set up.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Messages (event starts and ends) kept for the broker while it is away, unless
/// `queue_messages` says otherwise: beyond it the oldest is dropped and counted.
pub const DEFAULT_QUEUE_MESSAGES: usize = 100;
/// The most `queue_messages` may be (an event message is at most a few KiB).
pub const MAX_QUEUE_MESSAGES: usize = 10_000;
/// Largest password file read.
pub const MAX_PASSWORD_BYTES: u64 = 4096;

/// The `[mqtt]` section as written (every key optional; no `url` = MQTT off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// The broker, `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883); when not set,
    /// MQTT is off.
    pub url: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://` only; when not set:
    /// the system's CA bundle).
    pub ca_file: Option<PathBuf>,
    /// User name at the broker.
    pub user: Option<String>,
    /// File holding the password (its first line), readable by the service's user only.
    pub password_file: Option<PathBuf>,
    /// MQTT client id (when not set: `mecam-` and the host name).
    pub client_id: Option<String>,
    /// Prefix of every topic of this camera (when not set: the host name).
    pub topic_prefix: Option<String>,
    /// Prefix of Home Assistant's discovery topics.
    pub discovery_prefix: String,
    /// The camera's web address as the hub reaches it (`http://cam.local:8080`): the device's
    /// `configuration_url`, the stream, snapshot and clip URLs. Absent: no URLs are sent.
    pub web_url: Option<String>,
    /// Event messages kept while the broker is away; past it the oldest is dropped.
    pub queue_messages: usize,
    /// Longest pause between two connection attempts, seconds (the pause doubles from one
    /// second up to this, with jitter).
    pub reconnect_max_s: f64,
    /// Seconds between two state messages (camera, analysed fps, events, disk free).
    pub state_interval_s: f64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            ca_file: None,
            user: None,
            password_file: None,
            client_id: None,
            topic_prefix: None,
            discovery_prefix: "homeassistant".to_owned(),
            web_url: None,
            queue_messages: DEFAULT_QUEUE_MESSAGES,
            reconnect_max_s: 60.0,
            state_interval_s: 60.0,
        }
    }
}

/// A password that never shows in a log or a debug print.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password itself, for the CONNECT packet only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(hidden)")
    }
}

/// How to reach the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS, checked against these roots (PEM file).
    Tls {
        /// The CA file.
        ca_file: PathBuf,
    },
}

/// The `[mqtt]` section, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TCP or TLS.
    pub transport: Transport,
    /// User and password, when set.
    pub credentials: Option<(String, Password)>,
    /// MQTT client id.
    pub client_id: String,
    /// Topic prefix of this camera (no trailing `/`).
    pub prefix: String,
    /// Discovery prefix (no trailing `/`).
    pub discovery_prefix: String,
    /// The node id in discovery topics and unique ids (letters, digits, `_`, `-`).
    pub node: String,
    /// The web address, no trailing `/`.
    pub web_url: Option<String>,
    /// Bound of the event queue.
    pub queue_messages: usize,
    /// Longest pause between connection attempts.
    pub reconnect_max: Duration,
    /// Pause between state messages.
    pub state_interval: Duration,
}

/// A refused `[mqtt]` value.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("mqtt.{key}: {problem}")]
pub struct MqttConfigError {
    /// The key as written.
    pub key: &'static str,
    /// What is wrong, and what to do.
    pub problem: String,
}

fn bad(key: &'static str, problem: impl Into<String>) -> MqttConfigError {
    MqttConfigError {
        key,
        problem: problem.into(),
    }
}

/// The machine's host name (`/proc/sys/kernel/hostname`), or `mecam`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "mecam".to_owned())
}

/// `name` as a discovery node id: letters, digits, `_` and `-` kept, anything else `_`.
pub fn node_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A topic prefix: not empty, no wildcard, no leading or trailing `/`, no NUL.
fn check_topic(key: &'static str, t: &str) -> Result<String, MqttConfigError> {
    if t.is_empty() || t.starts_with('/') || t.ends_with('/') {
        return Err(bad(
            key,
            format!(
                "{t:?}: give a topic like \"garden\" or \"mecam/garden\" (no leading or trailing /)"
            ),
        ));
    }
    if t.contains(['+', '#', '\0']) || t.len() > 200 {
        return Err(bad(key, format!("{t:?}: no + # or NUL, at most 200 bytes")));
    }
    Ok(t.to_owned())
}

/// Reads the password: the file must be a regular file with no permission for group or
/// others (`chmod 600`), at most [`MAX_PASSWORD_BYTES`]; its first line is the password.
///
/// # Errors
/// A message naming the file and what to do; the password itself is never in it.
pub fn read_password(path: &std::path::Path) -> Result<Password, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} can be read by other users (mode {mode:03o}); make it readable by the service only: chmod 600 {0}, owned by the service's user",
            path.display()
        ));
    }
    if meta.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "{} is {} bytes; a password file holds one line (at most {MAX_PASSWORD_BYTES} bytes)",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!(
            "{} is empty; write the password on its first line",
            path.display()
        ));
    }
    Ok(Password(line.to_owned()))
}

impl MqttConfig {
    /// `None` when MQTT is off (no `url`), else the checked settings.
    ///
    /// # Errors
    /// The first bad value, naming its key.
    pub fn validate(&self) -> Result<Option<MqttSettings>, MqttConfigError> {
        let Some(url) = &self.url else {
            if *self != MqttConfig::default() {
                return Err(bad(
                    "url",
                    "missing: give the broker as url = \"mqtt://host:1883\", or remove [mqtt] to turn MQTT off",
                ));
            }
            return Ok(None);
        };
        let (host, port, tls) = parse_broker_url(url).map_err(|e| bad("url", e))?;
        let transport = if tls {
            Transport::Tls {
                ca_file: self
                    .ca_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE)),
            }
        } else {
            if self.ca_file.is_some() {
                return Err(bad(
                    "ca_file",
                    "is for mqtts:// only; use an mqtts:// url or remove ca_file",
                ));
            }
            Transport::Tcp
        };
        let credentials = match (&self.user, &self.password_file) {
            (None, None) => None,
            (Some(u), Some(p)) => Some((
                u.clone(),
                read_password(p).map_err(|e| bad("password_file", e))?,
            )),
            (Some(_), None) => {
                return Err(bad(
                    "password_file",
                    "missing: a user needs a password file",
                ));
            }
            (None, Some(_)) => return Err(bad("user", "missing: a password file needs a user")),
        };
        let host_name = host_name();
        let node = node_id(&host_name);
        let prefix = check_topic(
            "topic_prefix",
            self.topic_prefix.as_deref().unwrap_or(&node),
        )?;
        let discovery_prefix = check_topic("discovery_prefix", &self.discovery_prefix)?;
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("mecam-{node}"));
        if client_id.is_empty() || client_id.len() > 128 {
            return Err(bad("client_id", "give 1 to 128 characters"));
        }
        let web_url = match &self.web_url {
            None => None,
            Some(u) => {
                let p = crate::hooks::parse_http_url(u).map_err(|e| bad("web_url", e))?;
                Some(format!(
                    "http://{}{}",
                    p.authority,
                    p.path.trim_end_matches('/')
                ))
            }
        };
        let queue_messages = self.queue_messages;
        if queue_messages == 0 || queue_messages > MAX_QUEUE_MESSAGES {
            return Err(bad(
                "queue_messages",
                format!("{queue_messages} is out of range; use 1 to {MAX_QUEUE_MESSAGES}"),
            ));
        }
        let reconnect_max_s = self.reconnect_max_s;
        if !(1.0..=3600.0).contains(&reconnect_max_s) {
            return Err(bad("reconnect_max_s", "use 1 to 3600 seconds"));
        }
        let state_interval_s = self.state_interval_s;
        if !(1.0..=3600.0).contains(&state_interval_s) {
            return Err(bad("state_interval_s", "use 1 to 3600 seconds"));
        }
        Ok(Some(MqttSettings {
            host,
            port,
            transport,
            credentials,
            client_id,
            prefix,
            discovery_prefix,
            node,
            web_url,
            queue_messages,
            reconnect_max: Duration::from_secs_f64(reconnect_max_s),
            state_interval: Duration::from_secs_f64(state_interval_s),
        }))
    }
}

/// Debian's bundle of the public CAs (package ca-certificates).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `mqtt://host[:port]` or `mqtts://host[:port]`: (host, port, tls).
///
/// # Errors
/// What is wrong with it, and the form expected.
pub fn parse_broker_url(url: &str) -> Result<(String, u16, bool), String> {
    const FORM: &str = "mqtt://host[:port] or mqtts://host[:port]";
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url:?}: {e}; expected {FORM}"))?;
    let tls = match uri.scheme_str() {
        Some("mqtt") => false,
        Some("mqtts") => true,
        _ => return Err(format!("{url:?}: expected {FORM}")),
    };
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(format!("{url:?}: no path; expected {FORM}"));
    }
    let (host, port) = crate::hooks::host_and_port(url, &uri, FORM).map_err(|e| {
        e.replace(
            "user names in the URL are not supported",
            "no user or password in the URL (use the user and password_file keys)",
        )
    })?;
    Ok((host, port.unwrap_or(if tls { 8883 } else { 1883 }), tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> MqttConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn absent_or_empty_section_is_off() {
        assert_eq!(MqttConfig::default().validate().unwrap(), None);
        assert_eq!(parse("").validate().unwrap(), None);
    }

    #[test]
    fn a_section_without_url_is_refused_naming_url() {
        let e = parse("user = \"cam\"").validate().unwrap_err();
        assert_eq!(e.key, "url");
    }

    #[test]
    fn urls_are_parsed_and_bad_ones_refused() {
        assert_eq!(
            parse_broker_url("mqtt://hub.local").unwrap(),
            ("hub.local".into(), 1883, false)
        );
        assert_eq!(
            parse_broker_url("mqtts://[::1]:8884").unwrap(),
            ("::1".into(), 8884, true)
        );
        for bad in [
            "http://hub:1883",
            "mqtt://user:pw@hub",
            "mqtt://hub:99999",
            "mqtt://hub/topic",
            "hub:1883",
        ] {
            assert!(parse_broker_url(bad).is_err(), "{bad} accepted");
        }
        let e = parse("url = \"mqtt://u:secret@hub\"")
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "url");
    }

    #[test]
    fn defaults_come_from_the_host_name() {
        let s = parse("url = \"mqtt://127.0.0.1:1883\"")
            .validate()
            .unwrap()
            .unwrap();
        let node = node_id(&host_name());
        assert_eq!(s.prefix, node);
        assert_eq!(s.node, node);
        assert_eq!(s.client_id, format!("mecam-{node}"));
        assert_eq!(s.discovery_prefix, "homeassistant");
        assert_eq!(s.queue_messages, DEFAULT_QUEUE_MESSAGES);
        assert_eq!(s.transport, Transport::Tcp);
        assert_eq!(node_id("cam.garden 1"), "cam_garden_1");
    }

    #[test]
    fn bad_values_name_their_key() {
        let url = "url = \"mqtt://h\"\n";
        for (extra, key) in [
            ("queue_messages = 0", "queue_messages"),
            ("queue_messages = 10001", "queue_messages"),
            ("topic_prefix = \"a/#\"", "topic_prefix"),
            ("topic_prefix = \"/a\"", "topic_prefix"),
            ("reconnect_max_s = 0.1", "reconnect_max_s"),
            ("ca_file = \"/x\"", "ca_file"),
            ("user = \"u\"", "password_file"),
            ("web_url = \"https://x\"", "web_url"),
        ] {
            let e = parse(&format!("{url}{extra}")).validate().unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
        }
    }

    #[test]
    fn a_password_file_others_can_read_is_refused_and_the_password_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret-pw\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "url = \"mqtt://h\"\nuser = \"cam\"\npassword_file = {:?}",
            p
        );
        let e = parse(&text).validate().unwrap_err();
        assert_eq!(e.key, "password_file");
        assert!(e.problem.contains("chmod 600"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = parse(&text).validate().unwrap().unwrap();
        let (user, pw) = s.credentials.clone().unwrap();
        assert_eq!((user.as_str(), pw.expose()), ("cam", "s3cret-pw"));
        assert!(!format!("{s:?}").contains("s3cret"));
        std::fs::write(&p, "").unwrap();
        assert_eq!(parse(&text).validate().unwrap_err().key, "password_file");
    }
}
