//! The script's ranges: every value checked by key, so a refusal names what to change.

use super::script::{Background, Flicker, Light, Object, QualityChange, Script, ScriptError};

impl Script {
    /// Checks ranges.
    ///
    /// # Errors
    /// The first value out of range, by key.
    pub fn validate(&self) -> Result<(), ScriptError> {
        self.check_globals()?;
        check_background(&self.background)?;
        for (i, o) in self.objects.iter().enumerate() {
            check_object(i, o)?;
        }
        for (i, l) in self.lights.iter().enumerate() {
            check_light(i, l)?;
        }
        check_flicker(&self.flicker)?;
        check_quality_changes(&self.quality_changes)
    }

    /// The top-level keys: quality, noise, repeat.
    fn check_globals(&self) -> Result<(), ScriptError> {
        range(
            "quality",
            f32::from(self.quality),
            (1..=100).contains(&self.quality),
            "1..=100",
        )?;
        range(
            "noise",
            self.noise,
            (0.0..=100.0).contains(&self.noise),
            "0..=100",
        )?;
        range("repeat", self.repeat, self.repeat >= 0.0, ">= 0")
    }
}

/// `ok` and finite, else the range error for `key`.
fn range(key: &str, v: f32, ok: bool, expected: &'static str) -> Result<(), ScriptError> {
    if ok && v.is_finite() {
        Ok(())
    } else {
        Err(ScriptError::Range {
            key: key.to_owned(),
            value: v.to_string(),
            expected,
        })
    }
}

fn check_background(b: &Background) -> Result<(), ScriptError> {
    range(
        "background.scale",
        b.scale,
        b.scale > 0.0 && b.scale <= 1.0,
        "0 < scale <= 1",
    )?;
    range(
        "background.brightness",
        b.brightness,
        (0.0..=1.0).contains(&b.brightness),
        "0..=1",
    )?;
    range(
        "background.contrast",
        b.contrast,
        (0.0..=1.0).contains(&b.contrast),
        "0..=1",
    )
}

/// Object `i`: its times, size and sway.
fn check_object(i: usize, o: &Object) -> Result<(), ScriptError> {
    range(
        &format!("object[{i}].end"),
        o.end,
        o.end >= o.start,
        ">= start",
    )?;
    range(
        &format!("object[{i}].start"),
        o.start,
        o.start >= 0.0,
        ">= 0",
    )?;
    for (j, s) in o.size.iter().enumerate() {
        range(
            &format!("object[{i}].size[{j}]"),
            *s,
            *s > 0.0 && *s <= 2.0,
            "0 < size <= 2",
        )?;
    }
    for (j, a) in o.sway.iter().enumerate() {
        range(
            &format!("object[{i}].sway[{j}]"),
            *a,
            (0.0..=1.0).contains(a),
            "0..=1",
        )?;
    }
    range(
        &format!("object[{i}].sway_hz"),
        o.sway_hz,
        (0.0..=60.0).contains(&o.sway_hz),
        "0..=60",
    )
}

/// Light change `i`: its level, ramp, time and the noise it brings.
fn check_light(i: usize, l: &Light) -> Result<(), ScriptError> {
    range(
        &format!("light[{i}].level"),
        l.level,
        (0.0..=4.0).contains(&l.level),
        "0..=4",
    )?;
    range(&format!("light[{i}].ramp"), l.ramp, l.ramp >= 0.0, ">= 0")?;
    range(&format!("light[{i}].at"), l.at, l.at >= 0.0, ">= 0")?;
    if let Some(n) = l.noise {
        range(
            &format!("light[{i}].noise"),
            n,
            (0.0..=100.0).contains(&n),
            "0..=100",
        )?;
    }
    Ok(())
}

fn check_flicker(f: &Flicker) -> Result<(), ScriptError> {
    range(
        "flicker.amplitude",
        f.amplitude,
        (0.0..=1.0).contains(&f.amplitude),
        "0..=1",
    )?;
    range("flicker.hz", f.hz, f.hz >= 0.0, ">= 0")
}

/// Each change's quality, and their times in order.
fn check_quality_changes(changes: &[QualityChange]) -> Result<(), ScriptError> {
    let mut after = 0.0;
    for (i, q) in changes.iter().enumerate() {
        range(
            &format!("quality_change[{i}].quality"),
            f32::from(q.quality),
            (1..=100).contains(&q.quality),
            "1..=100",
        )?;
        range(
            &format!("quality_change[{i}].at"),
            q.at,
            q.at >= after,
            ">= 0 and >= the previous change's at",
        )?;
        after = q.at;
    }
    Ok(())
}
