//! The detector's tests: moving objects, what changes in place (light, foliage, parked
//! things), speckle, grey frames, masks, zones, bounds.

use super::*;
use crate::geometry::Polygon;

const W: usize = 160;
const H: usize = 120;
/// Analysed frames per second.
const STEP: f64 = 0.2;

/// A textured scene so that gain fitting has something to work with.
fn scene(brightness: f32) -> LumaImage {
    lit(|_, _| brightness)
}

/// The scene with the light `light(x, y)` at each pixel.
fn lit(light: impl Fn(usize, usize) -> f32) -> LumaImage {
    let mut img = LumaImage::filled(W, H, 0);
    for y in 0..H {
        for x in 0..W {
            let base = 60.0 + 60.0 * ((x / 16 + y / 12) % 3) as f32 + (x as f32 * 0.25);
            img.pixels[y * W + x] = (base * light(x, y)).clamp(0.0, 255.0) as u8;
        }
    }
    img
}

fn with_box(mut img: LumaImage, x0: usize, y0: usize, bw: usize, bh: usize, v: u8) -> LumaImage {
    for y in y0..(y0 + bh).min(H) {
        for x in x0..(x0 + bw).min(W) {
            img.pixels[y * W + x] = v;
        }
    }
    img
}

fn warmed(settings: DetectSettings) -> (Detector, f64) {
    let mut d = Detector::new(settings);
    let mut t = 0.0;
    for _ in 0..10 {
        d.analyse(&scene(1.0), t);
        t += STEP;
    }
    assert_eq!(d.analyse(&scene(1.0), t).verdict, Verdict::Still);
    (d, t + STEP)
}

/// Feeds `frames(k)` for `n` analysed frames from `t`; the verdicts and the last analysis.
fn feed(
    d: &mut Detector,
    t: &mut f64,
    n: usize,
    frames: impl Fn(usize) -> LumaImage,
) -> (Vec<Verdict>, Analysis) {
    let mut verdicts = Vec::new();
    let mut last = None;
    for k in 0..n {
        let a = d.analyse(&frames(k), *t);
        verdicts.push(a.verdict);
        last = Some(a.clone());
        *t += STEP;
    }
    (verdicts, last.expect("n > 0"))
}

#[test]
fn a_box_walking_across_is_motion_with_its_bounding_box() {
    let (mut d, mut t) = warmed(DetectSettings::default());
    let (verdicts, a) = feed(&mut d, &mut t, 8, |k| {
        with_box(scene(1.0), 40 + 4 * k, 20, 20, 40, 250)
    });
    // Followed for CONFIRM_FRAMES, then motion.
    assert!(!verdicts[0].is_motion(), "{verdicts:?}");
    assert!(verdicts[4..].iter().all(|v| v.is_motion()), "{verdicts:?}");
    assert!(a.since.is_some_and(|s| s < t - 1.0), "{a:?}");
    let b = a.boxes[0];
    // The box covers where it is now and the trail it just left (still unlike the background).
    assert!((b.y - 20.0 / H as f32).abs() < 0.03, "{b:?}");
    assert!((b.h - 40.0 / H as f32).abs() < 0.03, "{b:?}");
    assert!(b.x + b.w >= (68.0 + 20.0) / W as f32 - 0.03, "{b:?}");
    let person = 20.0 * 40.0 * 100.0 / (W * H) as f32;
    assert!(a.area_pct >= person * 0.8, "{} vs {person}", a.area_pct);
    assert!(a.score >= person * 0.8, "{a:?}");
}

#[test]
fn what_changes_in_place_is_never_motion() {
    let (mut d, mut t) = warmed(DetectSettings::default());
    // A bush swaying around its place: 30 px wide, ±5 px, for 10 s.
    let (verdicts, _) = feed(&mut d, &mut t, 50, |k| {
        let dx = (5.0 * (k as f32 * 0.9).sin()).round() as isize;
        with_box(scene(1.0), (60 + dx) as usize, 40, 30, 36, 30)
    });
    assert!(verdicts.iter().all(|v| !v.is_motion()), "{verdicts:?}");
    // Something that appears and stays (a parcel put down out of view of the analysis).
    let (verdicts, _) = feed(&mut d, &mut t, 30, |_| {
        with_box(scene(1.0), 10, 80, 24, 24, 240)
    });
    assert!(verdicts.iter().all(|v| !v.is_motion()), "{verdicts:?}");
}

#[test]
fn a_small_far_person_is_motion_at_medium_and_not_at_low() {
    // A tenth of the frame height, 5 px wide at this scale: a person at the garden's end.
    let person = |k: usize| with_box(scene(1.0), 20 + 2 * k, 50, 5, 12, 25);
    let (mut d, mut t) = warmed(DetectSettings::default());
    let (verdicts, a) = feed(&mut d, &mut t, 10, person);
    assert!(verdicts[5..].iter().all(|v| v.is_motion()), "{verdicts:?}");
    assert!(a.area_pct < 0.6, "{a:?}");
    let low = DetectSettings {
        min_object_pct: 20.0,
        ..DetectSettings::default()
    };
    let (mut d, mut t) = warmed(low);
    let (verdicts, _) = feed(&mut d, &mut t, 10, person);
    assert!(verdicts.iter().all(|v| !v.is_motion()), "{verdicts:?}");
}

#[test]
fn light_changes_are_not_motion_but_motion_during_them_is() {
    let (mut d, mut t) = warmed(DetectSettings::default());
    let a = d.analyse(&scene(1.1), t).clone();
    assert!((a.gain - 1.0 / 1.1).abs() < 0.05, "{a:?}");
    let steps = [
        // A strong step that clips the highlights.
        lit(|_, _| 1.6),
        // A gamma change.
        gamma(scene(1.0), 0.7),
        // A porch light on the left half only, fading over ten pixels.
        lit(|x, _| 1.0 + 0.4 * ((60.0 - x as f32) / 10.0).clamp(0.0, 1.0)),
        scene(0.6),
    ];
    for img in steps {
        t += STEP;
        let (verdicts, _) = feed(&mut d, &mut t, 6, |_| img.clone());
        assert!(verdicts.iter().all(|v| !v.is_motion()), "{verdicts:?}");
    }
    // The light falls while someone walks in.
    let (verdicts, _) = feed(&mut d, &mut t, 8, |k| {
        with_box(scene(0.6 - 0.02 * k as f32), 40 + 4 * k, 20, 12, 30, 250)
    });
    assert!(verdicts[4..].iter().all(|v| v.is_motion()), "{verdicts:?}");
}

/// Lights switched on over shadows the camera had crushed to black: an additive step, with
/// texture coming out of pure black, not a gain change.
#[test]
fn lights_on_over_crushed_shadows_is_not_motion() {
    let dark = |offset: f32| {
        let mut img = scene(1.0);
        for p in &mut img.pixels {
            *p = (f32::from(*p) + offset).clamp(0.0, 255.0) as u8;
        }
        img
    };
    let mut d = Detector::new(DetectSettings::default());
    let mut t = 0.0;
    feed(&mut d, &mut t, 20, |_| dark(-90.0));
    let (verdicts, _) = feed(&mut d, &mut t, 20, |_| dark(0.0));
    assert!(verdicts.iter().all(|v| !v.is_motion()), "{verdicts:?}");
    let (verdicts, _) = feed(&mut d, &mut t, 20, |_| dark(-90.0));
    assert!(verdicts.iter().all(|v| !v.is_motion()), "{verdicts:?}");
}

fn gamma(mut img: LumaImage, g: f32) -> LumaImage {
    for p in &mut img.pixels {
        *p = (255.0 * (f32::from(*p) / 255.0).powf(g)) as u8;
    }
    img
}

/// A low-contrast wall (std ~8 levels) and a dark person on it: a least-squares first fit
/// let the person drag the gain to a third and hide itself.
#[test]
fn a_dark_object_on_a_low_contrast_scene_is_motion_also_during_a_light_change() {
    let wall = |brightness: f32| {
        let mut img = LumaImage::filled(W, H, 0);
        for y in 0..H {
            for x in 0..W {
                let v = 140.0 + if (x / 8 + y / 6) % 2 == 0 { 8.0 } else { -8.0 };
                img.pixels[y * W + x] = (v * brightness) as u8;
            }
        }
        img
    };
    let mut d = Detector::new(DetectSettings::default());
    let mut t = 0.0;
    feed(&mut d, &mut t, 10, |_| wall(1.0));
    let light = [1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.6];
    let (verdicts, a) = feed(&mut d, &mut t, light.len(), |k| {
        with_box(wall(light[k]), 20 + 8 * k, 40, 16, 54, 55)
    });
    assert!(verdicts[3..].iter().all(|v| v.is_motion()), "{verdicts:?}");
    let person = 16.0 * 54.0 * 100.0 / (W * H) as f32;
    assert!(a.area_pct >= person * 0.8, "{a:?}");
}

#[test]
fn single_pixel_speckle_is_removed() {
    let (mut d, mut t) = warmed(DetectSettings {
        min_object_pct: 1.0,
        ..DetectSettings::default()
    });
    let (verdicts, a) = feed(&mut d, &mut t, 10, |k| {
        let mut img = scene(1.0);
        for i in (k..W * H).step_by(97) {
            img.pixels[i] = 255 - img.pixels[i];
        }
        img
    });
    assert!(verdicts.iter().all(|v| !v.is_motion()), "{verdicts:?}");
    assert_eq!(a.changed_pct, 0.0);
}

#[test]
fn grey_frames_are_never_motion_and_force_a_relearn() {
    let (mut d, t) = warmed(DetectSettings::default());
    assert_eq!(
        d.analyse(&LumaImage::filled(W, H, 128), t).verdict,
        Verdict::Grey
    );
    // The next frame (with a new object) seeds the background rather than firing.
    assert_eq!(
        d.analyse(&with_box(scene(1.0), 0, 0, 30, 30, 250), t + STEP)
            .verdict,
        Verdict::Learning
    );
}

#[test]
fn masked_motion_is_ignored_and_zones_limit_the_area() {
    let mask = Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]);
    let (mut d, mut t) = warmed(DetectSettings {
        masks: vec![mask],
        ..DetectSettings::default()
    });
    let (verdicts, _) = feed(&mut d, &mut t, 8, |k| {
        with_box(scene(1.0), 5 + 4 * k, 10, 20, 40, 250)
    });
    assert!(verdicts.iter().all(|v| !v.is_motion()), "{verdicts:?}");
    let (verdicts, a) = feed(&mut d, &mut t, 8, |k| {
        with_box(scene(1.0), 90 + 4 * k, 10, 20, 40, 250)
    });
    assert!(verdicts[4..].iter().all(|v| v.is_motion()), "{verdicts:?}");
    // Its share of the frame, not of the watched half.
    let of_frame = 20.0 * 40.0 * 100.0 / (W * H) as f32;
    assert!(
        a.area_pct < of_frame * 1.6,
        "{} vs {of_frame} (twice that would be the share of the watched half)",
        a.area_pct
    );
}

#[test]
fn a_scene_change_is_a_share_of_what_is_watched() {
    let left_half = Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]);
    let (mut d, t) = warmed(DetectSettings {
        masks: vec![left_half],
        ..DetectSettings::default()
    });
    // The whole watched half changes: 50 % of the frame is not over max_area_pct (50),
    // but all of what is watched is, so it is a scene change.
    let mut img = scene(1.0);
    for y in 0..H {
        for x in W / 2..W {
            img.pixels[y * W + x] = 255 - img.pixels[y * W + x];
        }
    }
    assert_eq!(d.analyse(&img, t).verdict, Verdict::SceneChange);
}

#[test]
fn an_object_that_comes_and_stays_stops_being_motion() {
    let (mut d, mut t) = warmed(DetectSettings::default());
    // A car drives in and parks.
    let (verdicts, _) = feed(&mut d, &mut t, 10, |k| {
        with_box(scene(1.0), 20 + 6 * k.min(6), 60, 30, 20, 250)
    });
    assert!(verdicts[4..7].iter().all(|v| v.is_motion()), "{verdicts:?}");
    let (verdicts, _) = feed(&mut d, &mut t, 100, |_| {
        with_box(scene(1.0), 56, 60, 30, 20, 250)
    });
    assert!(
        verdicts[50..].iter().all(|v| !v.is_motion()),
        "{verdicts:?}"
    );
}

#[test]
fn whole_frame_change_is_a_scene_change_not_motion() {
    let (mut d, t) = warmed(DetectSettings::default());
    let mut img = scene(1.0);
    // The camera was turned: the texture is somewhere else entirely.
    for p in img.pixels.iter_mut() {
        *p = 255 - *p;
    }
    let a = d.analyse(&img, t);
    assert_eq!(a.verdict, Verdict::SceneChange, "{a:?}");
}

#[test]
fn boxes_and_tracks_are_bounded() {
    let (mut d, mut t) = warmed(DetectSettings {
        max_area_pct: 100.0,
        min_object_pct: 5.0,
        ..DetectSettings::default()
    });
    // 30 objects walking at once, more than MAX_TRACKS.
    let (_, a) = feed(&mut d, &mut t, 8, |k| {
        let mut img = scene(1.0);
        for j in 0..30 {
            img = with_box(img, (j % 6) * 26 + 2 * k, (j / 6) * 24 + 2, 8, 10, 255);
        }
        img
    });
    assert!(d.tracker.moving().count() <= MAX_TRACKS);
    assert!(a.verdict.is_motion(), "{a:?}");
    assert_eq!(a.boxes.len(), MAX_BOXES);
    assert!(d.labeller.regions().len() <= regions::MAX_COMPONENTS);
}

/// The scene `dx` pixels to the right (a camera knocked or swaying on its pole).
fn shaken(img: &LumaImage, dx: isize) -> LumaImage {
    let mut out = img.clone();
    for y in 0..H {
        for x in 0..W {
            let src = (x as isize - dx).clamp(0, W as isize - 1) as usize;
            out.pixels[y * W + x] = img.pixels[y * W + src];
        }
    }
    out
}

#[test]
fn a_shaking_camera_is_not_motion_but_a_person_walking_then_is() {
    let (mut d, mut t) = warmed(DetectSettings::default());
    // Swaying by up to 3 px (12 px of a 640-wide frame), both ways, for 10 s.
    let sway = |k: usize| (3.0 * (k as f32 * 0.7).sin()).round() as isize;
    let (verdicts, _) = feed(&mut d, &mut t, 50, |k| shaken(&scene(1.0), sway(k)));
    assert!(verdicts.iter().all(|v| !v.is_motion()), "{verdicts:?}");
    let (verdicts, a) = feed(&mut d, &mut t, 10, |k| {
        shaken(&with_box(scene(1.0), 30 + 4 * k, 30, 12, 30, 250), sway(k))
    });
    assert!(verdicts[5..].iter().all(|v| v.is_motion()), "{verdicts:?}");
    assert_eq!(a.boxes.len(), 1, "{a:?}");
}

/// Someone close to the camera covers most of a light cell: the per-cell correction must not
/// take them for light.
#[test]
fn a_person_close_to_the_camera_is_not_taken_for_light() {
    let (mut d, mut t) = warmed(DetectSettings::default());
    let (verdicts, a) = feed(&mut d, &mut t, 8, |k| {
        with_box(scene(1.0), 10 + 6 * k, 10, 50, 100, 235)
    });
    // A wide object must move further (DISPLACE_FRAC of its width) before it counts.
    assert!(verdicts[5..].iter().all(|v| v.is_motion()), "{verdicts:?}");
    let person = 50.0 * 100.0 * 100.0 / (W * H) as f32;
    assert!(a.area_pct >= person * 0.8, "{} vs {person}", a.area_pct);
    assert_eq!(a.boxes.len(), 1, "{a:?}");
}

/// A busy pavement: groups of people walk the same path one after another for a minute,
/// something on every spot of it a third of the time. Their passing is not the place's
/// unrest: the last group is caught as well as the first.
#[test]
fn a_busy_path_keeps_catching_people() {
    let (mut d, mut t) = warmed(DetectSettings::default());
    let mut caught = Vec::new();
    for group in 0..20 {
        // Clothes 45 levels darker than what they pass in front of: a fixed contrast.
        let (verdicts, _) = feed(&mut d, &mut t, 14, |k| {
            let mut img = scene(1.0);
            for y in 50..74 {
                for x in (10 * k).min(W)..(10 * k + 50).min(W) {
                    img.pixels[y * W + x] = img.pixels[y * W + x].saturating_sub(45);
                }
            }
            img
        });
        caught.push((group, verdicts.iter().filter(|v| v.is_motion()).count()));
    }
    assert!(caught.iter().all(|&(_, n)| n >= 8), "{caught:?}");
}

#[test]
fn retune_masks_a_walker_at_once_and_never_relearns() {
    let (mut d, mut t) = warmed(DetectSettings::default());
    let walk = |k: usize| with_box(scene(1.0), 40 + 4 * k, 20, 20, 40, 250);
    let (verdicts, _) = feed(&mut d, &mut t, 8, walk);
    assert!(verdicts[7].is_motion(), "{verdicts:?}");
    // A mask over the left two thirds, while the walker is in it.
    let mask = Polygon(vec![[0.0, 0.0], [0.7, 0.0], [0.7, 1.0], [0.0, 1.0]]);
    d.retune(DetectSettings {
        masks: vec![mask],
        ..DetectSettings::default()
    });
    let (verdicts, a) = feed(&mut d, &mut t, 4, |k| walk(8 + k));
    // No re-learn (no Learning verdict) and nothing moving any more.
    assert!(
        verdicts.iter().all(|&v| v == Verdict::Still),
        "{verdicts:?}"
    );
    assert!(a.boxes.is_empty(), "{a:?}");
    // The mask removed: the walker is motion again without a settle period.
    d.retune(DetectSettings::default());
    let (verdicts, _) = feed(&mut d, &mut t, 6, |k| walk(12 + k));
    assert!(
        verdicts.iter().all(|&v| v != Verdict::Learning),
        "{verdicts:?}"
    );
    assert!(verdicts[5].is_motion(), "{verdicts:?}");
}
