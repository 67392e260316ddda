//! The real-footage scenarios load: every frame of every scenario of
//! `tests/footage/labels.toml` is a JPEG the service's decoder takes, at the labelled size,
//! as many as the labelled length gives, and every label lies inside its clip. The accuracy
//! of the detector on them is not asserted here.
//!
//! Needs the footage (`scripts/footage`) and ffmpeg: without them the test prints SKIPPED,
//! or fails under CI.

mod support;

use std::path::Path;
use std::time::Duration;

use motion_svc::decode::LumaDecoder;
use support::footage::{self, Kind};

#[test]
fn every_scenario_decodes_and_its_labels_fit() {
    let Some(scenarios) = footage::load_or_skip() else {
        return;
    };
    assert!(!scenarios.is_empty(), "the labels have no scenario");
    let mut decoder = LumaDecoder::new().unwrap();
    let mut failures = Vec::new();
    for s in &scenarios {
        let expected = s.duration.as_secs_f64() * f64::from(s.fps);
        let n = s.frames.len();
        if (n as f64 - expected).abs() > 1.0 {
            failures.push(format!(
                "{}: {n} frames, expected {expected:.0} ({:?} at {} fps)",
                s.name, s.duration, s.fps
            ));
        }
        for (k, (at, jpeg)) in s.frames.iter().enumerate() {
            assert_eq!(*at, Duration::from_secs(k as u64) / s.fps, "{}", s.name);
            match decoder.decode(jpeg) {
                Ok(_) => {
                    let size = decoder.source_size();
                    if size != (s.width as usize, s.height as usize) {
                        failures.push(format!(
                            "{}: frame {k} is {}x{}, labelled {}x{}",
                            s.name, size.0, size.1, s.width, s.height
                        ));
                        break;
                    }
                }
                Err(e) => {
                    failures.push(format!("{}: frame {k} does not decode: {e}", s.name));
                    break;
                }
            }
        }
        let length = s.duration.as_secs_f64();
        for &(a, b) in s.motion.iter().chain(&s.ignore) {
            if !(0.0 <= a && a < b && b <= length) {
                failures.push(format!(
                    "{}: window [{a}, {b}] is not inside the clip (0 to {length} s)",
                    s.name
                ));
            }
        }
        match s.kind {
            Kind::Positive if s.motion.is_empty() => {
                failures.push(format!("{}: a positive without motion", s.name));
            }
            Kind::Negative if !s.motion.is_empty() => {
                failures.push(format!("{}: a negative with motion", s.name));
            }
            _ => {}
        }
        println!(
            "{:<44} {:<8} {:<10} {:>3}x{:<3} {:>4} frames  motion {:?}",
            s.name,
            format!("{:?}", s.kind).to_lowercase(),
            s.origin,
            s.width,
            s.height,
            n,
            s.motion
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn missing_footage_says_how_to_fetch_it() {
    let labels = Path::new(env!("CARGO_MANIFEST_DIR")).join(footage::LABELS);
    let e = footage::load_from(&labels, Path::new("/nonexistent/mecam-footage")).unwrap_err();
    assert!(e.contains("run scripts/footage"), "{e}");
    assert!(e.contains("/nonexistent/mecam-footage"), "{e}");
}

#[test]
fn mjpeg_splits_on_markers_not_on_bytes() {
    let a = support::jpeg::encode_gray(16, 16, &[90; 256], 80).unwrap();
    let b = support::jpeg::encode_gray(24, 8, &[200; 192], 50).unwrap();
    // A comment segment holding an EOI and an SOI byte pair must not end or start a frame.
    let mut c = a.clone();
    c.splice(2..2, [0xFF, 0xFE, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xD8]);
    let stream = [a.as_slice(), &c, &b].concat();
    let jpegs = footage::split_jpegs(&stream).unwrap();
    assert_eq!(jpegs, vec![a.as_slice(), &c, &b]);
    assert!(footage::split_jpegs(&stream[..stream.len() - 1]).is_err());
    assert!(footage::split_jpegs(b"not a jpeg").is_err());
}
