//! MQTT and Home Assistant against a real broker: Debian's `mosquitto` on a loopback port
//! with a password file (testkit's `Broker`), the real `motion-svc` binary and an in-test
//! camera, and a subscriber in the test that sees what Home Assistant would see.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::jpeg::encode_gray;
use testkit::camera::Stream;
use testkit::mosquitto::{Broker, Got, PASSWORD, Subscriber, USER, WAIT};
use testkit::notify::{NotifySocket, StatusWatch};
use testkit::poll;
use testkit::service::{Service, fresh_log};

const W: usize = 320;
const H: usize = 240;

/// The test camera: a still textured scene, and a bright box moving across it on request.
struct Camera {
    _camera: testkit::camera::Camera,
    moving: Arc<AtomicBool>,
}

impl Camera {
    fn start(runtime_dir: &Path) -> Camera {
        let moving = Arc::new(AtomicBool::new(false));
        let m2 = Arc::clone(&moving);
        let stream = Stream {
            width: W as u32,
            height: H as u32,
            fps: 15.0,
            slot: 256 * 1024,
            source: "test-camera",
        };
        let mut box_x = 0usize;
        let camera = testkit::camera::Camera::start(runtime_dir, stream, move |n, camera| {
            let mut px = vec![0u8; W * H];
            let mut seed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for (i, p) in px.iter_mut().enumerate() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let (x, y) = (i % W, i / W);
                *p = (60 + 40 * ((x / 16 + y / 16) % 3) + (seed % 5) as usize) as u8;
            }
            if m2.load(Ordering::Relaxed) {
                box_x = (box_x + 6) % (W - 60);
                for y in 50..200 {
                    px[y * W + box_x..y * W + box_x + 50].fill(235);
                }
            }
            camera.publish(&encode_gray(W, H, &px, 80).unwrap());
        });
        Camera {
            _camera: camera,
            moving,
        }
    }

    fn set_moving(&self, on: bool) {
        self.moving.store(on, Ordering::Relaxed);
    }
}

/// The real motion-svc with an `[mqtt]` section (`mqtt`, without the header; empty: none).
struct Svc {
    svc: Service,
    status: StatusWatch,
}

impl Svc {
    fn start(dir: &Path, name: &str, mqtt: &str) -> Svc {
        let log = fresh_log(dir, name);
        let config = dir.join(format!("{name}.toml"));
        let section = if mqtt.is_empty() {
            String::new()
        } else {
            format!("[mqtt]\n{mqtt}\n")
        };
        fs::write(&config, format!("[motion]\n{section}")).unwrap();
        let sock = NotifySocket::bind(&log.with_extension("sock"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_motion-svc"));
        cmd.env("NOTIFY_SOCKET", sock.env())
            .env_remove("JOURNAL_STREAM")
            .arg("--config")
            .arg(&config)
            .arg("--runtime-dir")
            .arg(dir.join("run"))
            .arg("--events-dir")
            .arg(dir.join(format!("{name}-events")))
            .arg("--overrides-file")
            .arg(dir.join(format!("{name}-overrides.toml")))
            .arg("--preview-socket")
            .arg(dir.join(format!("{name}-preview.sock")))
            .args(["--log-target", "stderr", "--analysis-fps", "5"])
            .args(["--min-duration-s", "0.4", "--quiet-gap-s", "1"])
            .args(["--pre-capture-s", "1", "--post-capture-s", "0.5"]);
        eprintln!("running {cmd:?}");
        let svc = Svc {
            svc: Service::start("motion-svc", cmd, &log).unwrap(),
            status: sock.watch_status(),
        };
        svc.wait_log("motion-svc ready");
        svc
    }

    fn log(&self) -> String {
        self.svc.log()
    }

    fn wait_log(&self, needle: &str) {
        if let Err(e) = self.svc.wait_log(needle, WAIT) {
            panic!("{e}; the log:\n{}", self.log());
        }
    }

    fn wait_status(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        poll::until(what, WAIT, || {
            let s = self.status.latest();
            Ok(ok(&s).then_some(s))
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}; status {:?}; log:\n{}",
                self.status.latest(),
                self.log()
            )
        })
    }

    /// Waits until the background is learned (frames analysed for a while).
    fn warmed_up(&self) {
        self.wait_status("frames analysed", |s| analysed(s) >= 10);
    }
}

/// The number before " analysed" in a status line.
fn analysed(status: &str) -> u64 {
    status
        .split("; ")
        .flat_map(|part| part.split(", "))
        .find_map(|p| {
            p.strip_suffix(" analysed")
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn setup() -> (tempfile::TempDir, Camera) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("run")).unwrap();
    let cam = Camera::start(&dir.path().join("run"));
    (dir, cam)
}

/// The password file, as the service wants it (mode 600).
fn password_file(dir: &Path, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(format!("mqtt-{password}.pass"));
    fs::write(&p, format!("{password}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The `[mqtt]` keys for `broker` with the right password, prefix `cam1`, a state message
/// every second unless `extra` says otherwise.
fn mqtt_keys(dir: &Path, url: &str, extra: &str) -> String {
    let state = if extra.contains("state_interval_s") {
        ""
    } else {
        "state_interval_s = 1\n"
    };
    format!(
        "url = {url:?}\nuser = {USER:?}\npassword_file = {:?}\ntopic_prefix = \"cam1\"\nweb_url = \"http://cam1.local:8080\"\nreconnect_max_s = 2\n{state}{extra}",
        password_file(dir, PASSWORD)
    )
}

/// One event: motion until the camera's start message, then stillness until its end.
fn one_event(cam: &Camera, svc: &Svc, events_before: usize) {
    cam.set_moving(true);
    svc.wait_status("an event to start", |s| {
        s.contains(&format!("; {} events", events_before + 1))
    });
    cam.set_moving(false);
    let dir_has_closed = || svc.log().matches("event recorded").count() > events_before;
    if let Err(e) = poll::until_true("the event to end", WAIT, dir_has_closed) {
        panic!("{e}; log:\n{}", svc.log());
    }
}

#[test]
fn home_assistant_finds_the_camera_and_sees_motion_events_the_poster_and_the_last_will() {
    let (dir, cam) = setup();
    let broker = Broker::start(&dir.path().join("broker"));
    let sub = Subscriber::start(&broker, false);
    let keys = mqtt_keys(dir.path(), &broker.url(), "");
    let svc = Svc::start(dir.path(), "motion-svc", &keys);

    // Discovery: nine retained configs, one device, unique ids, state and availability topics.
    poll::wait("nine discovery configs", WAIT, || {
        sub.all()
            .iter()
            .filter(|g| g.topic.starts_with("homeassistant/"))
            .count()
            >= 9
    });
    let configs: Vec<Got> = sub
        .all()
        .into_iter()
        .filter(|g| g.topic.starts_with("homeassistant/"))
        .collect();
    let mut ids = std::collections::HashSet::new();
    let node = configs[0].topic.split('/').nth(2).unwrap().to_owned();
    for g in &configs {
        let parts: Vec<&str> = g.topic.split('/').collect();
        assert_eq!(
            (parts.len(), parts[2], parts[4]),
            (5, node.as_str(), "config")
        );
        let c = g.json();
        assert!(
            ids.insert(c["unique_id"].as_str().unwrap().to_owned()),
            "{}",
            g.topic
        );
        assert_eq!(c["availability_topic"], "cam1/availability");
        assert_eq!(c["payload_available"], "online");
        assert_eq!(c["payload_not_available"], "offline");
        assert_eq!(
            c["device"]["identifiers"],
            configs[0].json()["device"]["identifiers"]
        );
        assert_eq!(c["device"]["configuration_url"], "http://cam1.local:8080");
        let topic = c.get("state_topic").or(c.get("topic")).unwrap();
        assert!(topic.as_str().unwrap().starts_with("cam1/"), "{}", g.topic);
    }
    let components: std::collections::BTreeSet<&str> = configs
        .iter()
        .map(|g| g.topic.split('/').nth(1).unwrap())
        .collect();
    assert_eq!(
        components.into_iter().collect::<Vec<_>>(),
        ["binary_sensor", "camera", "sensor", "switch"]
    );
    let motion = configs
        .iter()
        .find(|g| g.topic.contains("/binary_sensor/"))
        .unwrap()
        .json();
    assert_eq!(motion["device_class"], "motion");
    assert_eq!(motion["state_topic"], "cam1/motion");
    sub.wait_latest("cam1/availability", "online");
    let attrs = sub.wait("attributes", "cam1/attributes", |_| true).json();
    assert_eq!(attrs["stream_url"], "http://cam1.local:8080/stream.mjpg");
    assert_eq!(attrs["snapshot_url"], "http://cam1.local:8080/snapshot.jpg");
    sub.wait_latest("cam1/motion", "OFF");
    let state = sub
        .wait("a state with the camera streaming", "cam1/state", |g| {
            g.json()["camera"] == "streaming" && g.json()["analysed_fps"].as_f64() > Some(0.0)
        })
        .json();
    assert!(state["disk_free_mib"].as_u64().unwrap() > 0, "{state}");
    assert_eq!(state["events_today"], 0);
    // No capture-svc or web-svc here (the test's camera writes no status record).
    assert_eq!(state["capture"], "not running");
    assert_eq!(state["web"], "not running");

    // A scripted event: motion ON, the start with the poster, then the end and motion OFF.
    svc.warmed_up();
    one_event(&cam, &svc, 0);
    let start = sub.wait("the event start", "cam1/events", |g| {
        g.json()["kind"] == "start"
    });
    assert!(!start.retain);
    let start = start.json();
    let id = start["id"].as_str().unwrap().to_owned();
    assert!(start["area_pct"].as_f64().unwrap() > 0.0, "{start}");
    assert!(!start["boxes"].as_array().unwrap().is_empty(), "{start}");
    assert_eq!(
        start["clip_url"],
        format!("http://cam1.local:8080/events/{id}/clip.avi")
    );
    let end = sub
        .wait("the event end", "cam1/events", |g| {
            g.json()["kind"] == "end"
        })
        .json();
    assert_eq!(end["id"], id.as_str());
    assert!(end["end_unix_ms"].as_u64().is_some(), "{end}");
    let motion: Vec<String> = sub.on("cam1/motion").iter().map(Got::text).collect();
    let on = motion.iter().position(|m| m == "ON").expect("motion ON");
    assert!(motion[on..].iter().any(|m| m == "OFF"), "{motion:?}");
    let poster = sub.wait("the poster", "cam1/poster", |_| true);
    assert_eq!(&poster.payload[..2], [0xff, 0xd8], "a JPEG");
    // What Home Assistant finds when it (re)starts: everything retained but the events.
    let late = Subscriber::start(&broker, false);
    let retained = [
        "cam1/availability",
        "cam1/motion",
        "cam1/state",
        "cam1/attributes",
        "cam1/poster",
    ];
    poll::wait("the retained messages", WAIT, || {
        late.all()
            .iter()
            .filter(|g| g.topic.starts_with("homeassistant/"))
            .count()
            >= 9
            && retained.iter().all(|t| !late.on(t).is_empty())
    });
    // The first message of each topic came from the broker's store (later ones may be new).
    let mut seen = std::collections::HashSet::new();
    for g in late.all().iter().filter(|g| !g.topic.ends_with("/status")) {
        if seen.insert(g.topic.clone()) {
            assert!(g.retain, "{} not retained", g.topic);
        }
    }
    assert!(
        late.on("cam1/events").is_empty(),
        "events are never retained"
    );
    assert_eq!(late.on("cam1/motion").pop().unwrap().text(), "OFF");
    drop(late);
    sub.wait("a state counting the event", "cam1/state", |g| {
        g.json()["events_today"] == 1
    });
    svc.wait_status("mqtt in the status line", |s| {
        s.contains("mqtt connected, 0 queued")
    });
    assert!(
        !tcp_sockets(svc.svc.pid()).is_empty(),
        "the broker connection is seen"
    );
    // The password never reaches the log.
    assert!(!svc.log().contains(PASSWORD));

    // SIGKILL: the broker publishes the last will; a new start says online again.
    let mut svc = svc;
    svc.svc.kill().unwrap();
    sub.wait_latest("cam1/availability", "offline");
    let svc = Svc::start(dir.path(), "motion-svc-again", &keys);
    sub.wait_latest("cam1/availability", "online");
    drop(svc);
}

#[test]
fn a_broker_away_costs_a_bounded_queue_and_what_is_queued_arrives_after_its_restart() {
    let (dir, cam) = setup();
    let mut broker = Broker::start(&dir.path().join("broker"));
    let sub = Subscriber::start(&broker, true);
    let keys = mqtt_keys(dir.path(), &broker.url(), "queue_messages = 2");
    let svc = Svc::start(dir.path(), "motion-svc", &keys);
    sub.wait_latest("cam1/availability", "online");
    svc.warmed_up();

    // A long outage in short: three events (six messages) with the broker away and room
    // for two.
    broker.stop();
    svc.wait_status("mqtt away", |s| s.contains("mqtt away"));
    for n in 0..3 {
        one_event(&cam, &svc, n);
    }
    let status = svc.wait_status("the queue full", |s| {
        s.contains("mqtt away, 2 queued, 4 mqtt dropped")
    });
    assert!(status.contains("3 events"), "{status}");
    assert!(svc.log().contains("the oldest is dropped"), "{}", svc.log());
    let before = sub.on("cam1/events").len();
    assert_eq!(before, 0, "nothing went out while the broker was away");

    // The broker is back: the two newest messages arrive (QoS 1, to the subscriber's
    // session kept across the restart), in order, and the state counts the four dropped.
    broker.restart();
    svc.wait_status("reconnected and the queue sent", |s| {
        s.contains("mqtt connected, 0 queued, 4 mqtt dropped")
    });
    sub.wait("the last end", "cam1/events", |g| g.json()["kind"] == "end");
    let events: Vec<Value> = sub.on("cam1/events").iter().map(Got::json).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["start", "end"], "{events:?}");
    assert_eq!(events[0]["id"], events[1]["id"]);
    let dirs: Vec<String> = fs::read_dir(dir.path().join("motion-svc-events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let newest = dirs.iter().max().unwrap();
    assert_eq!(events[0]["id"], newest.as_str(), "the newest event is kept");
    sub.wait("a state with the drops", "cam1/state", |g| {
        g.json()["mqtt_dropped"] == 4
    });

    // SIGTERM: `offline` said before a clean exit.
    let mut svc = svc;
    let status = svc.svc.stop(WAIT).unwrap();
    assert!(status.success(), "{status}");
    sub.wait_latest("cam1/availability", "offline");
}

#[test]
fn tls_with_a_throwaway_ca_works_and_a_wrong_password_is_refused_with_a_clear_line() {
    let (dir, _cam) = setup();
    let broker = Broker::start_tls(&dir.path().join("broker"));
    let sub = Subscriber::start(&broker, false);
    let url = format!("mqtts://127.0.0.1:{}", broker.tls_port.unwrap());
    let ca = format!("ca_file = {:?}", broker.ca_file());
    let svc = Svc::start(dir.path(), "motion-svc", &mqtt_keys(dir.path(), &url, &ca));
    sub.wait_latest("cam1/availability", "online");
    poll::wait("the motion config over TLS", WAIT, || {
        sub.all()
            .iter()
            .any(|g| g.topic.starts_with("homeassistant/binary_sensor/"))
    });
    drop(svc);

    // A wrong password: refused, said so, and the password never shows.
    let wrong = format!(
        "url = {:?}\nuser = {USER:?}\npassword_file = {:?}\ntopic_prefix = \"cam2\"",
        broker.url(),
        password_file(dir.path(), "wrong-password-9")
    );
    let svc = Svc::start(dir.path(), "motion-svc-wrong", &wrong);
    svc.wait_log("check mqtt.user and the password file");
    assert!(!svc.log().contains("wrong-password-9"));
    assert!(sub.on("cam2/availability").is_empty());

    // A password file others can read: refused at start, naming the key.
    let loose = password_file(dir.path(), "loose");
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("loose.toml");
    fs::write(
        &config,
        format!(
            "[mqtt]\nurl = {:?}\nuser = \"u\"\npassword_file = {loose:?}\n",
            broker.url()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_motion-svc"))
        .arg("--config")
        .arg(&config)
        .arg("--print-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mqtt.password_file") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn set_detection_disarms_and_arms_through_the_overrides_file() {
    let (dir, cam) = setup();
    let broker = Broker::start(&dir.path().join("broker"));
    let sub = Subscriber::start(&broker, false);
    let svc = Svc::start(
        dir.path(),
        "motion-svc",
        &mqtt_keys(dir.path(), &broker.url(), ""),
    );
    sub.wait_latest("cam1/detection", "ON");
    svc.warmed_up();

    // Hostile commands: garbage is refused with a line; a message over the 4 KiB taken from the
    // broker closes that connection, and a new one is made; a retained command is ignored.
    // None of them changes anything.
    sub.publish("cam1/set/detection", "maybe");
    svc.wait_log("is not ON or OFF");
    sub.publish("cam1/set/detection", vec![b'X'; 8192]);
    svc.wait_log("MQTT connection lost");
    svc.wait_status("connected again", |s| s.contains("mqtt connected"));
    sub.publish_retained("cam1/set/detection", "OFF");
    svc.wait_log("it is a retained message");
    sub.publish_retained("cam1/set/detection", "");
    assert_eq!(sub.on("cam1/detection").pop().unwrap().text(), "ON");
    sub.publish("cam1/set/detection", "OFF");
    sub.wait_latest("cam1/detection", "OFF");
    let file = dir.path().join("motion-svc-overrides.toml");
    assert_eq!(tuning::store::read(&file).unwrap().detection, Some(false));
    // Disarmed: motion makes no event.
    cam.set_moving(true);
    let from = analysed(&svc.status.latest());
    svc.wait_status("three seconds of motion analysed", |s| {
        analysed(s) >= from + 15
    });
    assert!(
        svc.status.latest().contains("; 0 events"),
        "{}",
        svc.status.latest()
    );
    assert!(sub.on("cam1/events").is_empty());
    cam.set_moving(false);

    sub.publish("cam1/set/detection", "ON");
    sub.wait_latest("cam1/detection", "ON");
    assert_eq!(tuning::store::read(&file).unwrap().detection, Some(true));
    svc.warmed_up();
    one_event(&cam, &svc, 0);
    sub.wait("an event once armed", "cam1/events", |g| {
        g.json()["kind"] == "start"
    });
}

/// The MQTT part of motion-svc's status record in `dir`'s runtime directory.
fn motion_mqtt_record(dir: &Path) -> Option<ipc::status::MqttStatus> {
    let r = ipc::status::read(&dir.join("run"), ipc::status::Service::Motion).ok()?;
    match r.record.detail {
        ipc::status::Detail::Motion(m) => m.mqtt,
        _ => None,
    }
}

/// The inodes of the TCP sockets `pid` holds.
fn tcp_sockets(pid: u32) -> Vec<String> {
    let mine: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|t| {
            fs::read_to_string(format!("/proc/{pid}/net/{t}"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9).map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .filter(|inode| mine.contains(inode))
        .collect()
}

#[test]
fn with_mqtt_off_no_mqtt_runs() {
    let (dir, _cam) = setup();
    let svc = Svc::start(dir.path(), "motion-svc", "");
    let status = svc.wait_status("a status line", |s| analysed(s) > 0);
    assert!(!status.contains("mqtt"), "{status}");
    poll::wait("a status record", WAIT, || {
        ipc::status::read(&dir.path().join("run"), ipc::status::Service::Motion).is_ok()
    });
    assert_eq!(
        motion_mqtt_record(dir.path()),
        None,
        "no MQTT in the record"
    );
    assert!(tcp_sockets(svc.svc.pid()).is_empty());
    assert!(!svc.log().to_lowercase().contains("mqtt"), "{}", svc.log());
}

/// CPU time (user + system) of `pid` so far, seconds (`/proc/<pid>/stat`, 100 ticks a second).
fn cpu_s(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the line; 12 and 13 after the name and state.
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// One run for [`mqtt_figures`]: `svc` through `events` events one every `period`; prints
/// its CPU time and memory.
fn measure(svc: &Svc, cam: &Camera, name: &str, events: usize, period: Duration) {
    svc.warmed_up();
    let pid = svc.svc.pid();
    let (rss0, cpu0, t0) = (
        testkit::procfs::status_kib(pid, "VmRSS"),
        cpu_s(pid),
        std::time::Instant::now(),
    );
    for n in 0..events {
        let start = std::time::Instant::now();
        one_event(cam, svc, n);
        std::thread::sleep(period.saturating_sub(start.elapsed()));
    }
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_s(pid) - cpu0);
    println!(
        "{name}: {events} events in {secs:.0} s: CPU {cpu:.2} s ({:.2} % of a core), VmRSS {rss0} -> {} KiB, VmHWM {} KiB",
        100.0 * cpu / secs,
        testkit::procfs::status_kib(pid, "VmRSS"),
        testkit::procfs::status_kib(pid, "VmHWM"),
    );
}

/// The README's figures for MQTT (not a check: run it by hand, in release):
/// `cargo test --release -p motion-svc --test mqtt -- --ignored --nocapture mqtt_figures`.
/// motion-svc without MQTT, then with it, on the same camera, each through `EVENTS` events one
/// every `PERIOD` (one a minute, scaled down): the difference is what MQTT costs.
#[test]
#[ignore = "figures for the README; run by hand in release"]
fn mqtt_figures() {
    const EVENTS: usize = 10;
    const PERIOD: Duration = Duration::from_secs(6);
    let (dir, cam) = setup();
    let broker = Broker::start(&dir.path().join("broker"));
    let sub = Subscriber::start(&broker, false);
    let off = Svc::start(dir.path(), "off", "");
    measure(&off, &cam, "mqtt off", EVENTS, PERIOD);
    drop(off);
    let keys = mqtt_keys(dir.path(), &broker.url(), "state_interval_s = 60");
    let on = Svc::start(dir.path(), "on", &keys);
    sub.wait_latest("cam1/availability", "online");
    measure(&on, &cam, "mqtt on", EVENTS, PERIOD);
    sub.wait("every event message", "cam1/events", |_| {
        sub.on("cam1/events").len() >= 2 * EVENTS
    });
}
