//! Topics and payloads: Home Assistant's discovery configs, the event messages, the state.
//!
//! Discovery follows Home Assistant's MQTT discovery: one retained config per entity at
//! `<discovery>/<component>/<node>/<object>/config`, each with a `unique_id`, the same
//! `device` block, the state topic and the availability topic (retained `online`, and
//! `offline` as the broker's last will).

use serde_json::{Value, json};

use super::config::MqttSettings;
use crate::hooks::HookKind;
use events::EventMeta;

/// The topics of one camera.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `online` / `offline`, retained.
    pub availability: String,
    /// `ON` / `OFF`, retained.
    pub motion: String,
    /// Event start and end JSON, QoS 1, never retained.
    pub events: String,
    /// The JPEG of the latest event start, retained.
    pub poster: String,
    /// Camera state, analysed fps, events, disk free: JSON, retained.
    pub state: String,
    /// The stream and snapshot URLs: JSON, retained.
    pub attributes: String,
    /// Home Assistant's birth message (`online` when it starts).
    pub ha_status: String,
    /// Armed or not: `ON` / `OFF`, retained.
    pub detection: String,
    /// The command that arms (`ON`) or disarms (`OFF`).
    pub set_detection: String,
}

impl Topics {
    /// Under `s.prefix`.
    pub fn new(s: &MqttSettings) -> Topics {
        let p = &s.prefix;
        Topics {
            availability: format!("{p}/availability"),
            motion: format!("{p}/motion"),
            events: format!("{p}/events"),
            poster: format!("{p}/poster"),
            state: format!("{p}/state"),
            attributes: format!("{p}/attributes"),
            ha_status: format!("{}/status", s.discovery_prefix),
            detection: format!("{p}/detection"),
            set_detection: format!("{p}/set/detection"),
        }
    }
}

/// The entities: (component, object id, name, extra config keys).
fn entities(t: &Topics) -> Vec<(&'static str, &'static str, Value)> {
    let sensor = |name: &str, field: &str, extra: Value| {
        let mut v = json!({
            "name": name,
            "state_topic": t.state,
            "value_template": format!("{{{{ value_json.{field} }}}}"),
        });
        merge(&mut v, extra);
        v
    };
    vec![
        (
            "binary_sensor",
            "motion",
            json!({
                "name": "Motion",
                "device_class": "motion",
                "state_topic": t.motion,
                "payload_on": "ON",
                "payload_off": "OFF",
                "json_attributes_topic": t.attributes,
            }),
        ),
        (
            "switch",
            "detection",
            json!({
                "name": "Detection",
                "command_topic": t.set_detection,
                "state_topic": t.detection,
                "payload_on": "ON",
                "payload_off": "OFF",
                "icon": "mdi:shield-home",
            }),
        ),
        (
            "camera",
            "poster",
            json!({
                "name": "Last event",
                "topic": t.poster,
                "json_attributes_topic": t.attributes,
            }),
        ),
        (
            "sensor",
            "camera_state",
            sensor("Camera", "camera", json!({"icon": "mdi:cctv"})),
        ),
        (
            "sensor",
            "analysed_fps",
            sensor(
                "Analysed fps",
                "analysed_fps",
                json!({"unit_of_measurement": "fps", "state_class": "measurement"}),
            ),
        ),
        (
            "sensor",
            "events_today",
            sensor(
                "Events today",
                "events_today",
                json!({"state_class": "total_increasing", "icon": "mdi:motion-sensor"}),
            ),
        ),
        (
            "sensor",
            "capture_service",
            sensor("Capture service", "capture", json!({"icon": "mdi:camera"})),
        ),
        (
            "sensor",
            "web_service",
            sensor("Web service", "web", json!({"icon": "mdi:web"})),
        ),
        (
            "sensor",
            "disk_free",
            sensor(
                "Disk free",
                "disk_free_mib",
                json!({"device_class": "data_size", "unit_of_measurement": "MiB", "state_class": "measurement"}),
            ),
        ),
    ]
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, extra) {
        a.extend(b);
    }
}

/// The `device` block every entity carries.
fn device(s: &MqttSettings) -> Value {
    let mut d = json!({
        "identifiers": [format!("mecam_{}", s.node)],
        "name": format!("mecam {}", s.node),
        "manufacturer": "mecam",
        "model": "mecam camera",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(url) = &s.web_url {
        merge(&mut d, json!({ "configuration_url": url }));
    }
    d
}

/// Every discovery config: (topic, payload), retained.
pub fn discovery(s: &MqttSettings, t: &Topics) -> Vec<(String, Vec<u8>)> {
    let device = device(s);
    entities(t)
        .into_iter()
        .map(|(component, object, mut config)| {
            merge(
                &mut config,
                json!({
                    "unique_id": format!("mecam_{}_{object}", s.node),
                    "object_id": format!("mecam_{}_{object}", s.node),
                    "availability_topic": t.availability,
                    "payload_available": "online",
                    "payload_not_available": "offline",
                    "device": device,
                }),
            );
            (
                format!(
                    "{}/{component}/{}/{object}/config",
                    s.discovery_prefix, s.node
                ),
                serde_json::to_vec(&config).expect("JSON"),
            )
        })
        .collect()
}

/// The stream and snapshot URLs (empty object without `web_url`).
pub fn attributes(s: &MqttSettings) -> Vec<u8> {
    let v = match &s.web_url {
        Some(u) => json!({
            "stream_url": format!("{u}/stream.mjpg"),
            "snapshot_url": format!("{u}/snapshot.jpg"),
            "events_url": format!("{u}/events"),
        }),
        None => json!({}),
    };
    serde_json::to_vec(&v).expect("JSON")
}

/// An event's start or end message.
pub fn event(s: &MqttSettings, kind: HookKind, meta: &EventMeta) -> Vec<u8> {
    let url = |file: &str| {
        s.web_url
            .as_ref()
            .map(|u| format!("{u}/events/{}/{file}", meta.id))
    };
    let v = json!({
        "kind": kind.as_str(),
        "id": meta.id,
        "time": events::utc_stamp(meta.start_unix_ms),
        "start_unix_ms": meta.start_unix_ms,
        "end_unix_ms": meta.end_unix_ms,
        "duration_s": meta.duration_s,
        "area_pct": meta.peak_area_pct,
        "score": meta.peak_score,
        "boxes": meta.boxes,
        "clip_url": meta.clip.as_ref().and(url("clip.avi")),
        "poster_url": url("poster.jpg"),
        "end_reason": meta.end_reason.map(|r| r.as_str()),
        "clip_error": meta.clip_error,
    });
    serde_json::to_vec(&v).expect("JSON")
}

/// What the state message says.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// `streaming`, `away`, or capture's state name.
    pub camera: &'static str,
    /// Frames analysed per second over the last interval.
    pub analysed_fps: f64,
    /// Events started today (the system's time zone).
    pub events_today: u64,
    /// Free space on the events disk, MiB (`None`: unknown).
    pub disk_free_mib: Option<u64>,
    /// Event messages dropped since start because the queue was full.
    pub mqtt_dropped: u64,
    /// capture-svc from its status record: `running`, `not running` or `unknown`.
    pub capture: &'static str,
    /// web-svc, likewise.
    pub web: &'static str,
}

/// The state message.
pub fn state(st: &State) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "camera": st.camera,
        "analysed_fps": (st.analysed_fps * 10.0).round() / 10.0,
        "events_today": st.events_today,
        "disk_free_mib": st.disk_free_mib,
        "mqtt_dropped": st.mqtt_dropped,
        "capture": st.capture,
        "web": st.web,
    }))
    .expect("JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::config::MqttConfig;

    fn settings() -> MqttSettings {
        let c: MqttConfig = toml::from_str(
            "url = \"mqtt://127.0.0.1\"\ntopic_prefix = \"garden\"\nweb_url = \"http://cam.local:8080/\"",
        )
        .unwrap();
        let mut s = c.validate().unwrap().unwrap();
        s.node = "garden".into();
        s
    }

    #[test]
    fn every_discovery_config_has_what_home_assistant_needs() {
        let s = settings();
        let t = Topics::new(&s);
        let all = discovery(&s, &t);
        assert_eq!(all.len(), 9);
        let mut ids = std::collections::HashSet::new();
        for (topic, payload) in &all {
            let v: Value = serde_json::from_slice(payload).unwrap();
            let parts: Vec<_> = topic.split('/').collect();
            assert_eq!(parts.len(), 5, "{topic}");
            assert_eq!(
                (parts[0], parts[2], parts[4]),
                ("homeassistant", "garden", "config")
            );
            assert!(ids.insert(v["unique_id"].as_str().unwrap().to_owned()));
            assert_eq!(v["availability_topic"], "garden/availability");
            assert_eq!(v["device"]["identifiers"][0], "mecam_garden");
            assert_eq!(v["device"]["configuration_url"], "http://cam.local:8080");
            let state = v.get("state_topic").or(v.get("topic")).unwrap();
            assert!(state.as_str().unwrap().starts_with("garden/"), "{topic}");
        }
        let motion: Value = serde_json::from_slice(&all[0].1).unwrap();
        assert_eq!(motion["device_class"], "motion");
        let switch: Value = serde_json::from_slice(&all[1].1).unwrap();
        assert_eq!(switch["command_topic"], "garden/set/detection");
        let a: Value = serde_json::from_slice(&attributes(&s)).unwrap();
        assert_eq!(a["stream_url"], "http://cam.local:8080/stream.mjpg");
    }

    #[test]
    fn an_event_message_has_id_time_area_boxes_and_clip_url() {
        let s = settings();
        let mut meta = EventMeta::new("20261124T182900Z-0001".into(), 1_795_000_000_000, 640, 480);
        meta.clip = Some("clip.avi".into());
        meta.boxes = vec![[0.1, 0.2, 0.3, 0.4]];
        meta.peak_area_pct = 3.5;
        let v: Value = serde_json::from_slice(&event(&s, HookKind::Start, &meta)).unwrap();
        assert_eq!(v["kind"], "start");
        assert_eq!(v["id"], "20261124T182900Z-0001");
        assert_eq!(v["area_pct"], 3.5);
        assert_eq!(v["boxes"][0][2].as_f64().unwrap() as f32, 0.3);
        assert_eq!(
            v["clip_url"],
            "http://cam.local:8080/events/20261124T182900Z-0001/clip.avi"
        );
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
