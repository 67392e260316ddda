//! A real MQTT broker for the tests, and a subscriber to it: Debian's `mosquitto` on a free loopback port, with its
//! own configuration, password file (`mosquitto_passwd`), persistence directory and, on
//! request, a TLS listener with a CA made in the test (`openssl`). Stopped with SIGTERM on
//! request (it saves its sessions), restarted on the same ports, SIGKILLed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use crate::poll;
use crate::service::Service;

/// How long [`Subscriber::wait`] waits.
pub const WAIT: Duration = Duration::from_secs(30);

/// The user and password every test broker knows.
pub const USER: &str = "mecam";
/// Its password.
pub const PASSWORD: &str = "test-password-1";

/// A mosquitto process and its files.
#[derive(Debug)]
pub struct Broker {
    dir: PathBuf,
    /// The plain listener's port.
    pub port: u16,
    /// The TLS listener's port, with [`Broker::start_tls`].
    pub tls_port: Option<u16>,
    service: Option<Service>,
}

/// A free TCP port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (apt-get install mosquitto openssl)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Broker {
    /// A broker in `dir` (created) that takes [`USER`] with [`PASSWORD`] only.
    ///
    /// # Panics
    /// mosquitto is not installed or does not listen within 10 s.
    pub fn start(dir: &Path) -> Broker {
        Broker::start_with(dir, false)
    }

    /// [`Broker::start`] plus a TLS listener whose certificate (for `127.0.0.1` and
    /// `localhost`) is signed by a CA made now: its PEM file is [`Broker::ca_file`].
    ///
    /// # Panics
    /// As [`Broker::start`], or openssl failed.
    pub fn start_tls(dir: &Path) -> Broker {
        Broker::start_with(dir, true)
    }

    fn start_with(dir: &Path, tls: bool) -> Broker {
        std::fs::create_dir_all(dir.join("db")).expect("broker directory");
        let passwd = dir.join("passwd");
        run(Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwd)
            .args([USER, PASSWORD]));
        let port = free_port();
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous false\npassword_file {}\nuser root\npersistence true\npersistence_location {}/\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nlistener {port} 127.0.0.1\n",
            passwd.display(),
            dir.join("db").display(),
        );
        let tls_port = tls.then(|| {
            make_certificates(dir);
            let p = free_port();
            conf.push_str(&format!(
                "listener {p} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
                dir.display()
            ));
            p
        });
        std::fs::write(dir.join("mosquitto.conf"), conf).expect("broker config");
        let mut b = Broker {
            dir: dir.to_owned(),
            port,
            tls_port,
            service: None,
        };
        b.restart();
        b
    }

    /// The CA's PEM file (TLS brokers).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same ports) and waits until it listens.
    ///
    /// # Panics
    /// It does not listen within 10 s.
    pub fn restart(&mut self) {
        assert!(self.service.is_none(), "the broker is running");
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(self.dir.join("mosquitto.conf"));
        let svc = Service::start("mosquitto", cmd, &self.dir.join("mosquitto.log"))
            .expect("mosquitto starts (apt-get install mosquitto)");
        self.service = Some(svc);
        let port = self.port;
        if let Err(e) = poll::until_true("mosquitto to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            panic!("{e}; its log:\n{}", self.log());
        }
    }

    /// Stops it with SIGTERM (it writes its sessions to disk) and waits for it.
    ///
    /// # Panics
    /// It was not running, or did not stop within 10 s.
    pub fn stop(&mut self) {
        let mut svc = self.service.take().expect("the broker is running");
        svc.stop(Duration::from_secs(10))
            .expect("mosquitto stops on SIGTERM");
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

/// One message as the subscriber got it.
#[derive(Debug, Clone)]
pub struct Got {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Delivered as a retained message (what a new subscriber finds).
    pub retain: bool,
}

impl Got {
    /// The payload as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.topic, self.text()))
    }
}

/// A subscriber to `#` on the broker's plain port, on a thread of its own: what Home
/// Assistant would see. With `persistent`, its session (and the QoS 1 messages for it)
/// outlives a broker restart. Stopped on drop.
pub struct Subscriber {
    client: Client,
    got: Arc<Mutex<Vec<Got>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Connected (and reconnecting) to `broker` as [`USER`].
    pub fn start(broker: &Broker, persistent: bool) -> Subscriber {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let mut o = MqttOptions::new(
            format!("test-sub-{}-{n}", std::process::id()),
            "127.0.0.1",
            broker.port,
        );
        o.set_credentials(USER, PASSWORD)
            .set_clean_session(!persistent)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(o, 16);
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g2, s2, c2) = (Arc::clone(&got), Arc::clone(&stop), client.clone());
        let thread = std::thread::spawn(move || {
            let client = c2;
            while !s2.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        client.try_subscribe("#", QoS::AtLeastOnce).unwrap();
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => g2.lock().unwrap().push(Got {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            let _ = client.try_disconnect();
        });
        Subscriber {
            client,
            got,
            stop,
            thread: Some(thread),
        }
    }

    /// Publishes `payload` on `topic` (QoS 1, not retained), as Home Assistant sends a command.
    ///
    /// # Panics
    /// The client's queue is full.
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .expect("publish");
    }

    /// [`Subscriber::publish`], retained by the broker (an empty payload clears the topic).
    ///
    /// # Panics
    /// The client's queue is full.
    pub fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
            .expect("publish");
    }

    /// Everything received so far, in order.
    pub fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// What was received on `topic`, in order.
    pub fn on(&self, topic: &str) -> Vec<Got> {
        self.all()
            .into_iter()
            .filter(|g| g.topic == topic)
            .collect()
    }

    /// Waits until a message on `topic` satisfies `ok`; returns it.
    ///
    /// # Panics
    /// Not within [`WAIT`].
    pub fn wait(&self, what: &str, topic: &str, ok: impl Fn(&Got) -> bool) -> Got {
        poll::until(what, WAIT, || {
            Ok(self.on(topic).into_iter().find(|g| ok(g)))
        })
        .unwrap_or_else(|e| panic!("{e}; got: {:?}", self.summary()))
    }

    /// Waits until the latest message on `topic` has `payload`.
    ///
    /// # Panics
    /// Not within [`WAIT`].
    pub fn wait_latest(&self, topic: &str, payload: &str) -> Got {
        poll::until(&format!("{topic} = {payload}"), WAIT, || {
            Ok(self
                .on(topic)
                .pop()
                .filter(|g| g.payload == payload.as_bytes()))
        })
        .unwrap_or_else(|e| panic!("{e}; got: {:?}", self.summary()))
    }

    /// Topic and the start of the payload of everything received (for failure messages).
    pub fn summary(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|g| {
                let t = g.text();
                format!("{} {}", g.topic, &t[..t.len().min(80)])
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, in `dir`
/// (`ca.pem`, `server.pem`, `server.key`): P-256 keys, valid for two days.
fn make_certificates(dir: &Path) {
    let p = |f: &str| dir.join(f);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", "/CN=mecam test CA", "-keyout"])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extension file");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-out")
        .arg(p("server.pem"))
        .arg("-extfile")
        .arg(p("ext.cnf")));
}
