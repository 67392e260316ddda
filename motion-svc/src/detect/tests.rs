//! The detector's tests: motion, light changes, speckle, grey frames, masks, zones, bounds.

use super::*;
use crate::geometry::Polygon;

const W: usize = 80;
const H: usize = 60;

/// A textured scene so that gain fitting has something to work with.
fn scene(brightness: f32) -> LumaImage {
    let mut img = LumaImage::filled(W, H, 0);
    for y in 0..H {
        for x in 0..W {
            let base = 60.0 + 60.0 * ((x / 8 + y / 6) % 3) as f32 + (x as f32 * 0.5);
            img.pixels[y * W + x] = (base * brightness).clamp(0.0, 255.0) as u8;
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
        t += 0.2;
    }
    assert_eq!(d.analyse(&scene(1.0), t).verdict, Verdict::Still);
    (d, t + 0.2)
}

#[test]
fn a_box_is_motion_with_its_bounding_box() {
    let (mut d, t) = warmed(DetectSettings::default());
    let a = d
        .analyse(&with_box(scene(1.0), 20, 10, 10, 20, 250), t)
        .clone();
    assert_eq!(a.verdict, Verdict::Motion);
    let expected = 10.0 * 20.0 * 100.0 / (W * H) as f32;
    assert!(
        (a.area_pct - expected).abs() < 1.5,
        "{} vs {expected}",
        a.area_pct
    );
    let b = a.boxes[0];
    assert!(
        (b.x - 0.25).abs() < 0.03 && (b.y - 1.0 / 6.0).abs() < 0.03,
        "{b:?}"
    );
    assert!(
        (b.w - 0.125).abs() < 0.03 && (b.h - 1.0 / 3.0).abs() < 0.03,
        "{b:?}"
    );
}

#[test]
fn a_light_step_is_not_motion_but_motion_during_it_is() {
    let (mut d, t) = warmed(DetectSettings::default());
    let a = d.analyse(&scene(1.1), t);
    assert_eq!(a.verdict, Verdict::Still, "{a:?}");
    assert!((a.gain - 1.0 / 1.1).abs() < 0.05, "{a:?}");
    // A strong step that clips the highlights.
    let a = d.analyse(&scene(1.6), t + 0.2);
    assert_eq!(a.verdict, Verdict::Still, "{a:?}");
    let a = d.analyse(&with_box(scene(0.6), 40, 20, 12, 20, 250), t + 0.4);
    assert_eq!(a.verdict, Verdict::Motion, "{a:?}");
}

/// A low-contrast wall (std ~8 levels) and a dark person on 4.5% of it: a least-squares
/// first fit let the person drag the gain to a third and hide itself.
#[test]
fn a_dark_object_on_a_low_contrast_scene_is_motion_also_during_a_light_change() {
    let wall = |brightness: f32| {
        let mut img = LumaImage::filled(W, H, 0);
        for y in 0..H {
            for x in 0..W {
                let v = 140.0 + if (x / 4 + y / 3) % 2 == 0 { 8.0 } else { -8.0 };
                img.pixels[y * W + x] = (v * brightness) as u8;
            }
        }
        img
    };
    let mut d = Detector::new(DetectSettings::default());
    let mut t = 0.0;
    for _ in 0..10 {
        d.analyse(&wall(1.0), t);
        t += 0.2;
    }
    for (x0, brightness) in [(10, 1.0), (20, 1.0), (30, 0.8), (40, 0.6)] {
        let a = d.analyse(&with_box(wall(brightness), x0, 20, 8, 27, 55), t);
        assert_eq!(
            a.verdict,
            Verdict::Motion,
            "at x {x0}, light {brightness}: {a:?}"
        );
        let person = 8.0 * 27.0 * 100.0 / (W * H) as f32;
        assert!(
            (a.area_pct - person).abs() < 1.0,
            "at x {x0}, light {brightness}: {a:?}"
        );
        t += 0.2;
    }
}

#[test]
fn single_pixel_speckle_is_removed() {
    let (mut d, t) = warmed(DetectSettings {
        area_pct: 0.01,
        ..DetectSettings::default()
    });
    let mut img = scene(1.0);
    for i in (0..W * H).step_by(97) {
        img.pixels[i] = 255 - img.pixels[i];
    }
    let a = d.analyse(&img, t);
    assert_eq!(a.verdict, Verdict::Still, "{a:?}");
    assert_eq!(a.area_pct, 0.0);
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
        d.analyse(&with_box(scene(1.0), 0, 0, 30, 30, 250), t + 0.2)
            .verdict,
        Verdict::Learning
    );
}

#[test]
fn masked_motion_is_ignored_and_zones_limit_the_area() {
    let mask = Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]);
    let (mut d, t) = warmed(DetectSettings {
        masks: vec![mask],
        ..DetectSettings::default()
    });
    assert_eq!(
        d.analyse(&with_box(scene(1.0), 5, 5, 20, 20, 250), t)
            .verdict,
        Verdict::Still
    );
    assert_eq!(
        d.analyse(&with_box(scene(1.0), 50, 5, 20, 20, 250), t + 0.2)
            .verdict,
        Verdict::Motion
    );
}

#[test]
fn area_is_a_share_of_the_frame_and_a_scene_change_a_share_of_what_is_watched() {
    let left_half = Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]);
    let (mut d, t) = warmed(DetectSettings {
        masks: vec![left_half],
        ..DetectSettings::default()
    });
    // A box in the watched right half: its share of the frame, not of the half.
    let a = d
        .analyse(&with_box(scene(1.0), 50, 10, 10, 20, 250), t)
        .clone();
    assert_eq!(a.verdict, Verdict::Motion);
    let of_frame = 10.0 * 20.0 * 100.0 / (W * H) as f32;
    assert!(
        (a.area_pct - of_frame).abs() < 1.5,
        "{} vs {of_frame} (twice that would be the share of the watched half)",
        a.area_pct
    );
    // The whole watched half changes: 50 % of the frame is not over max_area_pct (50),
    // but all of what is watched is, so it is a scene change.
    let mut img = scene(1.0);
    for y in 0..H {
        for x in W / 2..W {
            img.pixels[y * W + x] = 255 - img.pixels[y * W + x];
        }
    }
    assert_eq!(d.analyse(&img, t + 0.2).verdict, Verdict::SceneChange);
}

#[test]
fn slow_change_is_absorbed() {
    let (mut d, mut t) = warmed(DetectSettings::default());
    // A parked object: motion at first, absorbed after many background time constants.
    let parked = with_box(scene(1.0), 20, 10, 10, 20, 250);
    assert_eq!(d.analyse(&parked, t).verdict, Verdict::Motion);
    let mut last = Verdict::Motion;
    for _ in 0..2000 {
        t += 0.2;
        last = d.analyse(&parked, t).verdict;
    }
    assert_eq!(last, Verdict::Still);
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
fn boxes_are_bounded() {
    let (mut d, t) = warmed(DetectSettings {
        max_area_pct: 100.0,
        ..DetectSettings::default()
    });
    let mut img = scene(1.0);
    for k in 0..30 {
        img = with_box(img, (k % 10) * 8, (k / 10) * 20, 4, 4, 255);
    }
    let a = d.analyse(&img, t);
    assert_eq!(a.boxes.len(), MAX_BOXES);
}
