//! MQTT under a real systemd (booted in a throwaway container): motion-svc, installed as the
//! units install it with an `[mqtt]` section and a password file readable by its user only,
//! talks to a real mosquitto on the host's loopback (the container shares the host's network
//! namespace). The health of all three services reaches the broker, `set/detection` works
//! under the unit's sandbox, and on SIGKILL of motion-svc the broker's last will says
//! `offline`; once systemd has restarted it the camera says `online` again.

use mecam_system_tests::nspawn::{self, ACTIVE_TIMEOUT, Mecam, MecamOptions};
use testkit::mosquitto::{Broker, PASSWORD, Subscriber, USER};

const MOTION: &str = "mecam-motion.service";

#[test]
fn sigkill_of_motion_says_offline_through_the_last_will_and_online_after_the_restart() {
    if !nspawn::available_or_skip("mqtt_sigkill_motion", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let sub = Subscriber::start(&broker, false);
    let config = format!(
        "[capture]\n[motion]\n[web]\n[mqtt]\nurl = {:?}\nuser = {USER:?}\npassword_file = \"/etc/mecam/mqtt.pass\"\ntopic_prefix = \"ct\"\nstate_interval_s = 1\n",
        broker.url()
    );
    let opts = MecamOptions {
        config: Some(config),
        // The administrator's step (README): the password file belongs to the service's user,
        // mode 600. Done as root before the unit starts, as `install -o mecam -m 600` would.
        etc_files: vec![("mecam/mqtt.pass".into(), format!("{PASSWORD}\n"))],
        dropins: vec![(
            MOTION.into(),
            "60-test-mqtt-pass.conf".into(),
            "[Service]\nExecStartPre=+/bin/sh -c 'chown mecam:mecam /etc/mecam/mqtt.pass && chmod 600 /etc/mecam/mqtt.pass'\n".into(),
        )],
        ..MecamOptions::default()
    };
    let m = Mecam::start(opts).expect("mecam under systemd");
    sub.wait_latest("ct/availability", "online");
    poll_discovery(&sub);
    // The health of all three, from their status records.
    sub.wait("all three running", "ct/state", |g| {
        let s = g.json();
        s["capture"] == "running" && s["web"] == "running" && s["camera"] == "streaming"
    });

    // Disarming from Home Assistant writes the overrides file under the unit's sandbox.
    sub.wait_latest("ct/detection", "ON");
    sub.publish("ct/set/detection", "OFF");
    sub.wait_latest("ct/detection", "OFF");
    sub.publish("ct/set/detection", "ON");
    sub.wait_latest("ct/detection", "ON");

    let before = sub.on("ct/availability").len();
    let old = m.ct.kill_main(MOTION, "KILL").unwrap();
    let offline = sub.wait("offline after the kill", "ct/availability", |g| {
        g.text() == "offline"
    });
    assert!(sub.on("ct/availability").len() > before, "{offline:?}");
    let new = m.ct.wait_active(MOTION, old, ACTIVE_TIMEOUT).unwrap();
    assert_ne!(new, old);
    assert_eq!(m.ct.n_restarts(MOTION).unwrap(), 1);
    // `online` again, after the `offline`.
    testkit::poll::wait("online after the restart", testkit::mosquitto::WAIT, || {
        let all = sub.on("ct/availability");
        let off = all.iter().rposition(|g| g.text() == "offline");
        off.is_some_and(|i| all[i..].iter().any(|g| g.text() == "online"))
    });
}

fn poll_discovery(sub: &Subscriber) {
    testkit::poll::wait("discovery", testkit::mosquitto::WAIT, || {
        sub.all()
            .iter()
            .any(|g| g.topic.starts_with("homeassistant/binary_sensor/"))
    });
}
