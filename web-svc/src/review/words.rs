//! An event in words, for its card and page: how large the largest moving object was (as a
//! share of the frame), where in the frame, and for how long; no raw score.

use ::events::EventMeta;

/// How large an object of `pct` percent of the frame looks: a person at the far end of a
/// garden is under 2 %, one at the door 10 % or more.
pub fn size(pct: f32) -> &'static str {
    match pct {
        p if p < 2.0 => "A small object",
        p if p < 10.0 => "A medium-sized object",
        p if p < 30.0 => "A large object",
        _ => "A very large object",
    }
}

/// Where the centre of `[x, y, w, h]` (fractions of the frame) is: "top left", "centre",
/// "right", "bottom"...
pub fn place(b: [f32; 4]) -> &'static str {
    let third = |v: f32| {
        if v < 1.0 / 3.0 {
            0
        } else if v < 2.0 / 3.0 {
            1
        } else {
            2
        }
    };
    match (third(b[1] + b[3] / 2.0), third(b[0] + b[2] / 2.0)) {
        (0, 0) => "top left",
        (0, 1) => "top",
        (0, _) => "top right",
        (1, 0) => "left",
        (1, 1) => "centre",
        (1, _) => "right",
        (_, 0) => "bottom left",
        (_, 1) => "bottom",
        _ => "bottom right",
    }
}

/// "under a second", "6 s", "2 min 5 s".
pub fn duration(s: f64) -> String {
    if !s.is_finite() || s < 1.0 {
        "under a second".into()
    } else if s < 60.0 {
        format!("{s:.0} s")
    } else {
        let whole = s.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// A percentage for people: "12 %", "0.4 %".
fn pct(p: f32) -> String {
    if p >= 10.0 {
        format!("{p:.0} %")
    } else {
        format!("{p:.1} %")
    }
}

/// What was seen: "A large object (12 % of the frame) in the bottom left, for 6 s." While
/// recording (`recording_for_s`, the seconds so far: `duration_s` is written at the end), "...,
/// recording for 4 s."
pub fn describe(m: &EventMeta, recording_for_s: Option<u64>) -> String {
    let mut s = match m.boxes.first() {
        Some(&b) => format!(
            "{} ({} of the frame) in the {}",
            size(m.peak_score),
            pct(m.peak_score),
            place(b)
        ),
        None => "Motion".into(),
    };
    match recording_for_s {
        Some(so_far) => s.push_str(&format!(", recording for {so_far} s")),
        None => {
            s.push_str(", for ");
            s.push_str(&duration(m.duration_s));
        }
    }
    s.push('.');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_told_in_words() {
        let m = EventMeta {
            peak_score: 12.4,
            duration_s: 6.4,
            boxes: vec![[0.05, 0.6, 0.25, 0.35]],
            ..EventMeta::new("x".into(), 0, 640, 480)
        };
        assert_eq!(
            describe(&m, None),
            "A large object (12 % of the frame) in the bottom left, for 6 s."
        );
        assert_eq!(
            describe(&m, Some(4)),
            "A large object (12 % of the frame) in the bottom left, recording for 4 s."
        );
        let far = EventMeta {
            peak_score: 0.42,
            duration_s: 125.0,
            boxes: vec![[0.45, 0.4, 0.1, 0.1]],
            ..m.clone()
        };
        assert_eq!(
            describe(&far, None),
            "A small object (0.4 % of the frame) in the centre, for 2 min 5 s."
        );
        assert_eq!(
            describe(
                &EventMeta {
                    boxes: vec![],
                    ..far
                },
                None
            ),
            "Motion, for 2 min 5 s."
        );
        assert_eq!(place([0.7, 0.0, 0.2, 0.2]), "top right");
        assert_eq!(place([0.4, 0.7, 0.2, 0.2]), "bottom");
        assert_eq!(duration(0.3), "under a second");
        assert_eq!(duration(f64::NAN), "under a second");
    }
}
