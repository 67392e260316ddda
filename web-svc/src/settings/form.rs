//! A posted settings form: every field parsed into the values it asks for, and every
//! problem named by its field, so that the page shows each message next to its field.
//!
//! Masks and zones come as text, one polygon a line, points `x,y` apart by spaces, in
//! fractions of the frame (`0.1,0.2 0.4,0.2 0.4,0.6`): typed by hand without JavaScript,
//! written by the editor with it.

use std::collections::HashMap;

use tuning::{KeyError, Polygon, Sensitivity, Tunables};

/// Longest polygon text accepted per field (16 polygons of 64 points of `0.1234,0.5678`).
pub const MAX_POLYGON_TEXT: usize = 16 * 64 * 14 + 64;

/// The values a form asks for (starting from `base`, the values in effect) and the problems
/// of its fields (empty when it can be saved).
pub fn parse(fields: &HashMap<String, String>, base: &Tunables) -> (Tunables, Vec<KeyError>) {
    let mut t = base.clone();
    let mut problems = Vec::new();
    let get = |k: &str| fields.get(k).map(|v| v.trim()).unwrap_or("");
    match get("detection") {
        "armed" => t.detection = true,
        "disarmed" => t.detection = false,
        "" => {}
        other => problems.push(KeyError::new(
            "detection",
            format!("{other:?} is neither armed nor disarmed"),
        )),
    }
    match get("sensitivity") {
        "" => {}
        s => match s.parse::<Sensitivity>() {
            Ok(p) => t.sensitivity = p,
            Err(e) => problems.push(KeyError::new("sensitivity", e)),
        },
    }
    match get("min_object_pct") {
        "" => t.min_object_pct = None,
        s => match number("min_object_pct", s) {
            Ok(v) => t.min_object_pct = Some(v),
            Err(e) => problems.push(e),
        },
    }
    for (key, slot) in [
        ("analysis_fps", &mut t.analysis_fps),
        ("pre_capture_s", &mut t.pre_capture_s),
        ("post_capture_s", &mut t.post_capture_s),
        ("max_total_mib", &mut t.max_total_mib),
        ("max_age_days", &mut t.max_age_days),
    ] {
        let s = get(key);
        if s.is_empty() {
            continue; // a field left out keeps its value
        }
        match number(key, s) {
            Ok(v) => *slot = v,
            Err(e) => problems.push(e),
        }
    }
    for (key, slot) in [("masks", &mut t.masks), ("zones", &mut t.zones)] {
        if let Some(text) = fields.get(key) {
            match polygons(key, text) {
                Ok(p) => *slot = p,
                Err(e) => problems.push(e),
            }
        }
    }
    // The same checks motion-svc makes, on what parsed.
    let checked = t.overrides_from(&Tunables::default());
    for e in checked.problems() {
        let field = field_of(&e.key);
        if !problems.iter().any(|p| p.key == field) {
            problems.push(KeyError::new(field, e.problem));
        }
    }
    (t, problems)
}

/// The form field a problem's key belongs to (`masks[2]` is the `masks` field).
pub fn field_of(key: &str) -> &str {
    key.split('[').next().unwrap_or(key)
}

fn number(key: &str, s: &str) -> Result<f64, KeyError> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| KeyError::new(key, format!("{s:?} is not a number")))
}

/// Polygons from text, one a line; each kept to 4 decimals (a tenth of a pixel of a 4K
/// frame).
///
/// # Errors
/// Text too long, or a line that is not points `x,y`, named by line.
pub fn polygons(key: &str, text: &str) -> Result<Vec<Polygon>, KeyError> {
    if text.len() > MAX_POLYGON_TEXT {
        return Err(KeyError::new(
            key,
            format!("{} characters; at most {MAX_POLYGON_TEXT}", text.len()),
        ));
    }
    let round = |v: f32| (v * 10_000.0).round() / 10_000.0;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut points = Vec::new();
        for p in line.split_whitespace() {
            let xy = p
                .split_once(',')
                .and_then(|(x, y)| Some([x.parse::<f32>().ok()?, y.parse::<f32>().ok()?]));
            match xy {
                Some([x, y]) => points.push([round(x), round(y)]),
                None => {
                    return Err(KeyError::new(
                        key,
                        format!(
                            "line {}: {p:?} is not a point; write points as x,y (fractions of the frame, 0 to 1) apart by spaces",
                            n + 1
                        ),
                    ));
                }
            }
            if points.len() > tuning::MAX_POINTS {
                break; // refused by the check below, without reading the rest
            }
        }
        out.push(Polygon(points));
        if out.len() > tuning::MAX_POLYGONS {
            break;
        }
    }
    tuning::polygon::check_list(key, &out).map_err(|e| {
        // `masks[2]` is the third line written.
        KeyError::new(key, format!("{}: {}", e.key, e.problem))
    })?;
    Ok(out)
}

/// Polygons as the form's text.
pub fn polygons_text(list: &[Polygon]) -> String {
    let mut s = String::new();
    for p in list {
        let line: Vec<String> = p.0.iter().map(|[x, y]| format!("{x},{y}")).collect();
        s.push_str(&line.join(" "));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_bad_field_is_named_and_good_ones_parse() {
        let (t, problems) = parse(
            &form(&[
                ("detection", "disarmed"),
                ("sensitivity", "high"),
                ("analysis_fps", "100"),
                ("pre_capture_s", "abc"),
                ("post_capture_s", "7"),
                ("masks", "0.1,0.1 0.5,0.1 0.5,0.5\n0.2,0.2 nonsense"),
                ("zones", "0,0 2,0 0,1"),
            ]),
            &Tunables::default(),
        );
        let keys: Vec<&str> = problems.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["pre_capture_s", "masks", "zones", "analysis_fps"]);
        assert!(problems[1].problem.contains("line 2"), "{problems:?}");
        assert!(
            problems[2].problem.contains("outside the frame"),
            "{problems:?}"
        );
        assert!(!t.detection);
        assert_eq!(t.sensitivity, Sensitivity::High);
        assert_eq!(t.post_capture_s, 7.0);
    }

    #[test]
    fn polygons_round_trip_through_text_and_are_bounded() {
        let p = polygons("masks", "0.12345,0 1,0 1,1\n\n0,0 0.5,0 0,0.5\n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0[0], [0.1235, 0.0]);
        assert_eq!(polygons("masks", &polygons_text(&p)).unwrap(), p);
        let many = "0,0 1,0 1,1\n".repeat(tuning::MAX_POLYGONS + 1);
        assert!(
            polygons("masks", &many)
                .unwrap_err()
                .problem
                .contains("at most")
        );
        let long = "0,0 ".repeat(MAX_POLYGON_TEXT);
        assert!(
            polygons("masks", &long)
                .unwrap_err()
                .problem
                .contains("characters")
        );
        assert!(polygons("zones", "").unwrap().is_empty());
    }
}
