//! Unit tests of source resolution, camera detection and the file source.

use std::path::Path;

use super::*;

/// A probe over a test's own dirs: `bin` (the search path), `dev`, `sys`.
fn probe(dir: &Path) -> Probe {
    for d in ["bin", "dev", "sys"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    Probe {
        search_path: Some(dir.join("bin").into_os_string()),
        dev_dir: dir.join("dev"),
        sysfs_dir: dir.join("sys"),
    }
}

/// A `videoN` node with its sysfs name.
fn node(p: &Probe, n: u32, name: &str) {
    std::fs::write(p.dev_dir.join(format!("video{n}")), "").unwrap();
    let sys = p.sysfs_dir.join(format!("video{n}"));
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(sys.join("name"), format!("{name}\n")).unwrap();
}

fn auto() -> CaptureConfig {
    CaptureConfig::default()
}

#[test]
fn auto_falls_back_to_libcamera_vid_when_rpicam_vid_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let p = probe(dir.path());
    node(&p, 0, "USB Camera");
    let fake = dir.path().join("bin/libcamera-vid");
    std::fs::write(&fake, "#!/bin/sh\n").unwrap();
    let spec = SourceSpec::detect(&auto(), &p).unwrap();
    let SourceSpec::Process { label, argv, .. } = &spec else {
        panic!("{spec:?}")
    };
    assert_eq!(label, "rpicam");
    assert_eq!(argv[0], fake.as_os_str());
    // rpicam-vid itself wins when both exist.
    std::fs::write(dir.path().join("bin/rpicam-vid"), "#!/bin/sh\n").unwrap();
    let SourceSpec::Process { argv, .. } = SourceSpec::detect(&auto(), &p).unwrap() else {
        panic!()
    };
    assert_eq!(argv[0], dir.path().join("bin/rpicam-vid").as_os_str());
}

#[test]
fn a_named_rpicam_program_gets_no_libcamera_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let p = probe(dir.path());
    std::fs::write(dir.path().join("bin/libcamera-vid"), "").unwrap();
    let cfg = CaptureConfig {
        rpicam_program: "my-rpicam".into(),
        ..auto()
    };
    let e = SourceSpec::detect(&cfg, &p).unwrap_err();
    assert!(e.to_string().contains("no my-rpicam on PATH"), "{e}");
}

#[test]
fn auto_picks_the_lowest_numbered_camera_node_skipping_codecs_and_isps() {
    let dir = tempfile::tempdir().unwrap();
    let p = probe(dir.path());
    // A Pi: codec, ISP and HEVC nodes around a USB webcam's capture (video10) and
    // metadata (video11) nodes.
    node(&p, 0, "bcm2835-codec-decode");
    node(&p, 1, "bcm2835-codec-encode");
    node(&p, 12, "bcm2835-isp");
    node(&p, 13, "bcm2835-codec-isp");
    node(&p, 18, "rpivid");
    node(&p, 11, "HD Pro Webcam C920");
    node(&p, 10, "HD Pro Webcam C920");
    std::fs::write(p.dev_dir.join("video-not-a-number"), "").unwrap();
    std::fs::write(p.dev_dir.join("vchiq"), "").unwrap();
    let spec = SourceSpec::detect(&auto(), &p).unwrap();
    assert_eq!(
        spec.label(),
        format!("v4l2:{}", p.dev_dir.join("video10").display())
    );
    // Numeric, not text order: video2 before video10.
    node(&p, 2, "USB Camera");
    let spec = SourceSpec::detect(&auto(), &p).unwrap();
    assert_eq!(
        spec.label(),
        format!("v4l2:{}", p.dev_dir.join("video2").display())
    );
    // v4l2 without a device uses the same pick.
    let cfg = CaptureConfig {
        source: Some(SourceKind::V4l2),
        ..auto()
    };
    let SourceSpec::Process { argv, .. } = SourceSpec::resolve_in(&cfg, &p).unwrap() else {
        panic!()
    };
    assert!(
        argv.contains(&p.dev_dir.join("video2").into_os_string()),
        "{argv:?}"
    );
}

#[test]
fn with_no_program_and_only_codec_nodes_no_camera_is_found_never_the_synthetic_scene() {
    let dir = tempfile::tempdir().unwrap();
    let p = probe(dir.path());
    // Nothing configured: look at every attempt, never pick a source once for good.
    assert!(matches!(
        SourceSpec::resolve_in(&auto(), &p).unwrap(),
        SourceSpec::Auto { .. }
    ));
    let e = SourceSpec::detect(&auto(), &p).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("no camera found"), "{text}");
    assert!(
        text.contains("rpicam-vid or libcamera-vid")
            && text.contains(&format!("{}/video*", p.dev_dir.display()))
            && text.contains("[capture] source"),
        "says what was looked for and what to do: {text}"
    );
    node(&p, 10, "bcm2835-codec-decode");
    node(&p, 31, "bcm2835-isp");
    assert!(SourceSpec::detect(&auto(), &p).is_err());
    // A USB camera plugged in later is found on the next look.
    node(&p, 0, "USB Camera");
    let spec = SourceSpec::detect(&auto(), &p).unwrap();
    assert_eq!(
        spec.label(),
        format!("v4l2:{}", p.dev_dir.join("video0").display())
    );
}

#[test]
fn frame_limits_follow_the_size_the_source_is_known_to_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let p = probe(dir.path());
    let cfg = |source| CaptureConfig {
        source: Some(source),
        width: 1366,
        height: 768,
        command: vec!["cat".into()],
        ..auto()
    };
    // rpicam and synthetic deliver the configured size (libcamera may align it).
    for kind in [SourceKind::Rpicam, SourceKind::Synthetic] {
        let l = SourceSpec::resolve_in(&cfg(kind), &p)
            .unwrap()
            .frame_limits();
        assert_eq!((l.max_width, l.max_height), (1408, 768), "{kind:?}");
    }
    // A V4L2 driver may round to another size; a command or a file is anything.
    for kind in [SourceKind::V4l2, SourceKind::Command] {
        let l = SourceSpec::resolve_in(&cfg(kind), &p)
            .unwrap()
            .frame_limits();
        assert_eq!(l, ipc::jpeg::FrameLimits::default(), "{kind:?}");
    }
}

#[tokio::test]
async fn a_folder_of_jpegs_is_read_in_name_order_skipping_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = |w, h| {
        let mut scene = crate::synthetic::Scene::new(Script::default(), w, h);
        let mut out = Vec::new();
        scene.render_jpeg(std::time::Duration::ZERO, &mut out);
        out
    };
    std::fs::write(dir.path().join("b.jpg"), jpeg(64, 48)).unwrap();
    std::fs::write(dir.path().join("a.jpeg"), jpeg(32, 24)).unwrap();
    std::fs::write(dir.path().join("c.JPG"), jpeg(96, 64)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a frame").unwrap();
    let mut input = FileInput::open(dir.path()).unwrap();
    let mut splitter = crate::splitter::Splitter::new(1 << 20);
    loop {
        let n = input.read(splitter.spare()).await.unwrap();
        if n == 0 {
            break;
        }
        splitter.commit(n);
    }
    let mut sizes = Vec::new();
    while let Some(frame) = splitter.next_frame() {
        let h = ipc::jpeg::inspect(frame).unwrap();
        sizes.push((h.width, h.height));
    }
    assert_eq!(sizes, [(32, 24), (64, 48), (96, 64)]);
    assert_eq!(splitter.stats().garbage_bytes, 0, "notes.txt not read");
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("x.png"), "").unwrap();
    let err = FileInput::open(empty.path()).unwrap_err();
    assert!(err.to_string().contains("no .jpg/.jpeg"), "{err}");
}

#[test]
fn rpicam_arguments_follow_the_config() {
    let cfg = CaptureConfig {
        source: Some(SourceKind::Rpicam),
        rpicam_program: "/nonexistent/rpicam-vid".into(),
        rotation: 180,
        hflip: true,
        ..Default::default()
    };
    let SourceSpec::Process { argv, .. } = SourceSpec::resolve(&cfg).unwrap() else {
        panic!("process expected")
    };
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let line = argv.join(" ");
    assert!(
        line.contains("-t 0 --codec mjpeg -o - --nopreview"),
        "{line}"
    );
    assert!(
        line.contains("--width 640 --height 480 --framerate 15 --quality 80"),
        "{line}"
    );
    assert!(line.contains("--rotation 180 --hflip"), "{line}");
    assert!(!line.contains("--vflip"), "{line}");
}
