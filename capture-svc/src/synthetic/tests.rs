//! Unit tests of the synthetic scene: determinism, truth, light, sway, flicker, quality and
//! refused scripts.

use std::time::Duration;

use super::*;

fn crossing() -> Script {
    Script::from_toml(
        r#"
        seed = 3
        [[object]]
        name = "walker"
        start = 10.0
        end = 20.0
        size = [0.1, 0.3]
        from = [-0.05, 0.5]
        to = [1.05, 0.5]
        "#,
    )
    .unwrap()
}

#[test]
fn same_time_same_bytes() {
    let mut a = Scene::new(crossing(), 160, 120);
    let mut b = Scene::new(crossing(), 160, 120);
    let (mut ja, mut jb) = (Vec::new(), Vec::new());
    a.render_jpeg(Duration::from_millis(12_345), &mut ja);
    b.render_jpeg(Duration::from_millis(12_345), &mut jb);
    assert_eq!(ja, jb);
    b.render_jpeg(Duration::from_millis(12_380), &mut jb);
    assert_ne!(ja, jb, "noise and motion differ between frames");
}

#[test]
fn truth_matches_the_script() {
    let script = crossing();
    let scene = Scene::new(script.clone(), 160, 120);
    assert!(scene.objects_in_view(Duration::from_secs(9)).is_empty());
    let mid = scene.objects_in_view(Duration::from_secs(15));
    assert_eq!(mid.len(), 1);
    assert!((mid[0].bbox[0] - 0.45).abs() < 0.01, "{mid:?}");
    assert!(scene.objects_in_view(Duration::from_secs(21)).is_empty());
    let iv = script.motion_intervals();
    assert_eq!(iv.len(), 1);
    let (_, a, b) = &iv[0];
    // Just out of view at start and end: in view from ~10.0 s to ~20.0 s.
    assert!(a.as_secs_f32() >= 10.0 && a.as_secs_f32() < 10.1, "{a:?}");
    assert!(b.as_secs_f32() > 19.9 && b.as_secs_f32() <= 20.01, "{b:?}");
}

#[test]
fn object_changes_the_pixels_where_it_is() {
    let mut scene = Scene::new(
        Script {
            noise: 0.0,
            ..crossing()
        },
        160,
        120,
    );
    let before = scene.render_rgb(Duration::from_secs(5)).to_vec();
    let during = scene.render_rgb(Duration::from_secs(15)).to_vec();
    let at = |img: &[u8], x: usize, y: usize| img[(y * 160 + x) * 3];
    assert_ne!(at(&before, 80, 60), at(&during, 80, 60));
    assert_eq!(at(&before, 5, 5), at(&during, 5, 5));
}

#[test]
fn light_step_and_ramp() {
    let s = Script::from_toml(
        "[[light]]\nat = 5.0\nlevel = 0.5\n[[light]]\nat = 10.0\nlevel = 1.0\nramp = 2.0\n",
    )
    .unwrap();
    assert_eq!(s.light_at(4.9), 1.0);
    assert_eq!(s.light_at(5.0), 0.5);
    assert!((s.light_at(11.0) - 0.75).abs() < 1e-4);
    assert_eq!(s.light_at(13.0), 1.0);
}

#[test]
fn a_swaying_object_oscillates_about_its_path_and_is_motion() {
    let s = Script::from_toml(
        "[[object]]\nname = \"branch\"\nstart = 0.0\nend = 30.0\nsize = [0.2, 0.2]\n\
         from = [0.5, 0.5]\nto = [0.5, 0.5]\nsway = [0.04, 0.01]\nsway_hz = 0.5\n",
    )
    .unwrap();
    let scene = Scene::new(s.clone(), 160, 120);
    let x = |ms| scene.objects_in_view(Duration::from_millis(ms))[0].bbox[0];
    // sin(2π·0.5·t): 0 at 0 s, +1 at 0.5 s, -1 at 1.5 s.
    assert!((x(0) - 0.4).abs() < 1e-4);
    assert!((x(500) - 0.44).abs() < 1e-4, "{}", x(500));
    assert!((x(1500) - 0.36).abs() < 1e-4, "{}", x(1500));
    assert_eq!(s.motion_intervals().len(), 1);
    // Without sway it does not move.
    let still = Script::from_toml(
        "[[object]]\nstart = 0.0\nend = 30.0\nfrom = [0.5, 0.5]\nto = [0.5, 0.5]\n",
    )
    .unwrap();
    let scene = Scene::new(still, 160, 120);
    let b = |ms| scene.objects_in_view(Duration::from_millis(ms))[0].bbox;
    assert_eq!(b(0), b(500));
}

#[test]
fn a_light_change_can_bring_sensor_noise_with_it() {
    let s = Script::from_toml(
        "noise = 2.0\n[[light]]\nat = 10.0\nlevel = 0.4\nramp = 10.0\nnoise = 12.0\n\
         [[light]]\nat = 30.0\nlevel = 1.0\n",
    )
    .unwrap();
    let scene = Scene::new(s, 32, 32);
    let at = |secs| Duration::from_secs(secs);
    assert_eq!(scene.noise(at(5)), 2.0);
    assert!((scene.noise(at(15)) - 7.0).abs() < 1e-4);
    assert!((scene.light(at(15)) - 0.7).abs() < 1e-4);
    assert_eq!(scene.noise(at(25)), 12.0);
    // A later light without `noise` keeps the noise reached.
    assert_eq!(scene.noise(at(35)), 12.0);
    assert_eq!(scene.light(at(35)), 1.0);
    // More noise shows in the pixels: frames at night differ more from each other.
    let mut scene = scene;
    let spread = |scene: &mut Scene, a: u64, b: u64| {
        let x = scene.render_rgb(Duration::from_millis(a)).to_vec();
        let y = scene.render_rgb(Duration::from_millis(b)).to_vec();
        x.iter()
            .zip(&y)
            .map(|(p, q)| p.abs_diff(*q) as u64)
            .sum::<u64>()
    };
    assert!(spread(&mut scene, 35_000, 35_100) > 3 * spread(&mut scene, 5_000, 5_100));
}

#[test]
fn random_flicker_is_irregular_and_deterministic() {
    let text = "[flicker]\namplitude = 0.1\nhz = 10.0\nwave = \"random\"\n";
    let scene = Scene::new(Script::from_toml(text).unwrap(), 32, 32);
    let levels: Vec<f32> = (0..50)
        .map(|i| scene.light(Duration::from_millis(i * 100 + 50)))
        .collect();
    assert!(levels.iter().all(|l| (0.9..=1.1).contains(l)), "{levels:?}");
    // Every 5th slot (what 2 fps analysis of it would see) still changes.
    let fifths: Vec<f32> = levels.iter().step_by(5).copied().collect();
    assert!(fifths.windows(2).all(|w| w[0] != w[1]), "{fifths:?}");
    // Constant within a slot, the same for the same script.
    assert_eq!(
        scene.light(Duration::from_millis(110)),
        scene.light(Duration::from_millis(190))
    );
    let again = Scene::new(Script::from_toml(text).unwrap(), 32, 32);
    assert_eq!(
        again.light(Duration::from_millis(1234)),
        scene.light(Duration::from_millis(1234))
    );
}

#[test]
fn quality_changes_apply_from_their_time() {
    let s = Script::from_toml(
        "quality = 85\n[[quality_change]]\nat = 10.0\nquality = 25\n\
         [[quality_change]]\nat = 20.0\nquality = 60\n",
    )
    .unwrap();
    let mut scene = Scene::new(s, 160, 120);
    let q = |scene: &Scene, secs| scene.quality(Duration::from_secs(secs));
    assert_eq!(
        (q(&scene, 5), q(&scene, 10), q(&scene, 15), q(&scene, 25)),
        (85, 25, 25, 60)
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    scene.render_jpeg(Duration::from_millis(9_990), &mut a);
    scene.render_jpeg(Duration::from_millis(10_000), &mut b);
    assert!(
        b.len() < a.len(),
        "quality 25 is smaller: {} vs {}",
        b.len(),
        a.len()
    );
}

#[test]
fn bad_new_keys_are_refused_by_key() {
    for (text, key) in [
        ("[[object]]\nsway = [0.1, 1.5]", "object[0].sway[1]"),
        ("[[object]]\nsway = [-0.1, 0.0]", "object[0].sway[0]"),
        ("[[object]]\nsway_hz = 61.0", "object[0].sway_hz"),
        ("[[object]]\nsway_hz = -1.0", "object[0].sway_hz"),
        ("[[light]]\nnoise = 101.0", "light[0].noise"),
        ("[[light]]\nnoise = -1.0", "light[0].noise"),
        (
            "[[quality_change]]\nquality = 0",
            "quality_change[0].quality",
        ),
        (
            "[[quality_change]]\nat = -1.0\nquality = 50",
            "quality_change[0].at",
        ),
        (
            "[[quality_change]]\nat = 5.0\n[[quality_change]]\nat = 4.0",
            "quality_change[1].at",
        ),
        ("[flicker]\nwave = \"square\"", "wave"),
    ] {
        let e = Script::from_toml(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text:?}: {e}");
    }
}

#[test]
fn bad_scripts_are_refused_by_key() {
    let e = Script::from_toml("quality = 0").unwrap_err().to_string();
    assert!(e.contains("quality"), "{e}");
    let e = Script::from_toml("[[object]]\nstart = 5.0\nend = 1.0")
        .unwrap_err()
        .to_string();
    assert!(e.contains("object[0].end"), "{e}");
    let e = Script::from_toml("colour = 1").unwrap_err().to_string();
    assert!(e.contains("colour"), "{e}");
}
