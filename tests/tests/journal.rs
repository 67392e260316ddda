//! Motion events under systemd reach the journal with their fixed MESSAGE_ID and fields, and
//! each names an event folder that exists.

use std::time::Duration;

use mecam_system_tests::nspawn::{self, Mecam, MecamOptions};
use mecam_system_tests::{MSG_MOTION_END, MSG_MOTION_START, poll};

#[test]
fn motion_events_are_read_back_from_the_journal_with_their_fields() {
    if !nspawn::available_or_skip("motion_events_in_journal", true) {
        return;
    }
    // Short gaps so the synthetic scene's movement makes complete events quickly.
    let m = Mecam::start(MecamOptions {
        config: Some(
            "[capture]\n[motion]\nquiet_gap_s = 1.0\npost_capture_s = 0.5\npre_capture_s = 0.5\n[web]\n".into(),
        ),
        ..MecamOptions::default()
    })
    .unwrap();
    let starts = poll::until(
        "a motion start record in the journal",
        Duration::from_secs(120),
        || {
            let r =
                m.ct.journal_json(&[&format!("MESSAGE_ID={MSG_MOTION_START}")])
                    .map_err(|e| e.to_string())?;
            Ok((!r.is_empty()).then_some(r))
        },
    )
    .unwrap();
    let start = &starts[0];
    let id = start["MECAM_EVENT_ID"]
        .as_str()
        .expect("MECAM_EVENT_ID")
        .to_owned();
    assert!(
        id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "bad event id {id}"
    );
    for field in ["MECAM_SCORE", "MECAM_AREA_PCT", "MECAM_BOXES"] {
        assert!(
            start[field].is_string(),
            "start record lacks {field}: {start}"
        );
    }
    let area: f64 = start["MECAM_AREA_PCT"]
        .as_str()
        .unwrap()
        .parse()
        .expect("MECAM_AREA_PCT is a number");
    assert!((0.0..=100.0).contains(&area));
    assert_eq!(start["_SYSTEMD_UNIT"], "mecam-motion.service");

    let end = poll::until(
        "the end record of that event",
        Duration::from_secs(120),
        || {
            let r =
                m.ct.journal_json(&[
                    &format!("MESSAGE_ID={MSG_MOTION_END}"),
                    &format!("MECAM_EVENT_ID={id}"),
                ])
                .map_err(|e| e.to_string())?;
            Ok(r.into_iter().next())
        },
    )
    .unwrap();
    assert!(
        end["MECAM_CLIP"].is_string(),
        "end record lacks MECAM_CLIP: {end}"
    );
    // The end record may come just before the recorder finishes the folder: poll for it.
    let folder = m.ct.host_path(&format!("/var/lib/mecam/events/{id}"));
    let ev: serde_json::Value = poll::until(
        "event.json to say complete",
        Duration::from_secs(60),
        || {
            let text =
                std::fs::read_to_string(folder.join("event.json")).map_err(|e| e.to_string())?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            Ok((v["state"] == "complete").then_some(v))
        },
    )
    .unwrap();
    if let Some(clip) = ev["clip"].as_str() {
        assert!(folder.join(clip).is_file(), "complete event without {clip}");
    }
    assert_eq!(ev["id"], id.as_str());
    println!(
        "journal: event {id} start and end records read back; event.json state {}",
        ev["state"]
    );
}

#[test]
fn the_events_directory_key_moves_where_both_services_keep_events() {
    if !nspawn::available_or_skip("events_directory_key", true) {
        return;
    }
    let config = |events: &str| {
        format!(
            "[capture]\n[motion]\n{events}quiet_gap_s = 1.0\npost_capture_s = 0.5\npre_capture_s = 0.5\n[web]\n"
        )
    };
    let m = Mecam::start(MecamOptions {
        config: Some(config("")),
        ..MecamOptions::default()
    })
    .unwrap();
    // As a user would: edit the one events key under the shipped units, restart both.
    let moved = "/var/lib/mecam/clips";
    std::fs::write(
        m.ct.host_path("/etc/mecam/mecam.toml"),
        config(&format!("events_dir = \"{moved}\"\n")),
    )
    .unwrap();
    let pids: Vec<u32> = ["mecam-motion.service", "mecam-web.service"]
        .iter()
        .map(|u| m.ct.main_pid(u).unwrap())
        .collect();
    m.ct.run(&[
        "systemctl",
        "restart",
        "mecam-motion.service",
        "mecam-web.service",
    ])
    .unwrap();
    for (unit, old) in ["mecam-motion.service", "mecam-web.service"]
        .iter()
        .zip(pids)
    {
        m.ct.wait_active(unit, old, Duration::from_secs(60))
            .unwrap();
    }
    m.wait_healthz().unwrap();
    let dir = m.ct.host_path(moved);
    let id = poll::until(
        "an event folder in the new events directory",
        Duration::from_secs(120),
        || {
            let ids: Vec<String> = std::fs::read_dir(&dir)
                .map_err(|e| e.to_string())?
                .flatten()
                .filter(|e| e.path().join("event.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            Ok(ids.into_iter().next())
        },
    )
    .unwrap();
    // web-svc reads the same key: it lists the event from the new directory.
    let session = m.login().unwrap();
    poll::until_true("web-svc lists the event", Duration::from_secs(30), || {
        mecam_system_tests::http::get(m.addr, "/api/events", Some(&session))
            .is_ok_and(|r| r.status == 200 && r.text().contains(&id))
    })
    .unwrap();
}
