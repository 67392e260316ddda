//! The settings page: the form with the values in effect (each field's problem next to it),
//! the mask and zone editor over the current picture, and the live preview of detection.
//!
//! Plain HTML that works without JavaScript (the form posts; masks and zones are typed as
//! numbers); `assets/settings.js` adds drawing with a finger and the preview, and
//! `assets/settings.css` its looks. Everything is inline: one request, under 50 KB.

use std::collections::HashMap;

use tuning::bounds::{
    ANALYSIS_FPS, Bound, MAX_AGE_DAYS, MAX_TOTAL_MIB, MIN_OBJECT_PCT, POST_CAPTURE_S, PRE_CAPTURE_S,
};
use tuning::{KeyError, Sensitivity, Tunables};

use super::form::{field_of, polygons_text};
use crate::pages::{esc, page};

const CSS: &str = include_str!("../../assets/settings.css");
const JS: &str = include_str!("../../assets/settings.js");

/// What the page says above the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// Nothing.
    None,
    /// Saved (motion-svc applies it within a second).
    Saved,
    /// Reset to the administrator's values.
    Reset,
    /// The overrides file could not be used or written: why.
    Problem(&'a str),
}

/// The form's text of each field for `t`.
pub fn fields_of(t: &Tunables) -> HashMap<String, String> {
    let num = |v: f64| format!("{v}");
    let mut f: HashMap<String, String> = [
        (
            "detection",
            (if t.detection { "armed" } else { "disarmed" }).to_owned(),
        ),
        ("sensitivity", t.sensitivity.as_str().to_owned()),
        (
            "min_object_pct",
            t.min_object_pct.map(num).unwrap_or_default(),
        ),
        ("analysis_fps", num(t.analysis_fps)),
        ("pre_capture_s", num(t.pre_capture_s)),
        ("post_capture_s", num(t.post_capture_s)),
        ("max_total_mib", num(t.max_total_mib)),
        ("max_age_days", num(t.max_age_days)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    f.insert("masks".into(), polygons_text(&t.masks));
    f.insert("zones".into(), polygons_text(&t.zones));
    f
}

/// The page: `values` are the fields' text (the values in effect, or what was posted when it
/// is shown again with its `problems`).
pub fn settings(
    values: &HashMap<String, String>,
    problems: &[KeyError],
    notice: Notice<'_>,
    admin: &Tunables,
) -> String {
    let v = |k: &str| esc(values.get(k).map_or("", String::as_str));
    let err = |k: &str| -> String {
        problems
            .iter()
            .find(|e| field_of(&e.key) == k)
            .map(|e| {
                format!(
                    "<span class=\"bad err\" id=\"err-{k}\" role=\"alert\">{}</span>",
                    esc(&e.problem)
                )
            })
            .unwrap_or_default()
    };
    let number = |b: Bound, label: &str, unit: &str, help: &str, placeholder: &str| {
        format!(
            "<p><label for=\"{k}\">{label}</label><span class=\"field\"><input id=\"{k}\" name=\"{k}\" \
             type=\"number\" step=\"any\" inputmode=\"decimal\" min=\"{lo}\" max=\"{hi}\" value=\"{val}\" \
             placeholder=\"{placeholder}\" aria-describedby=\"help-{k}\"> {unit}</span>{e}\
             <small id=\"help-{k}\">{help} ({lo} to {hi})</small></p>",
            k = b.key,
            lo = b.lo,
            hi = b.hi,
            val = v(b.key),
            e = err(b.key),
        )
    };
    let armed = v("detection") != "disarmed";
    let check = |on: bool| if on { " checked" } else { "" };
    let presets: String = Sensitivity::ALL
        .iter()
        .map(|p| {
            let (obj, _, _) = p.numbers();
            format!(
                "<option value=\"{n}\"{sel}>{n} (objects from {obj} % of the height)</option>",
                n = p.as_str(),
                sel = if v("sensitivity") == p.as_str() {
                    " selected"
                } else {
                    ""
                },
            )
        })
        .collect();
    let notice = match notice {
        Notice::None => String::new(),
        Notice::Saved => "<p class=\"ok\" id=\"notice\">Saved. motion-svc applies it within a second, without a restart.</p>".into(),
        Notice::Reset => "<p class=\"ok\" id=\"notice\">Back to the administrator's values (/etc/mecam/mecam.toml).</p>".into(),
        Notice::Problem(p) => format!("<p class=\"bad\" id=\"notice\" role=\"alert\">{}</p>", esc(p)),
    };
    let preset_obj = admin.sensitivity.numbers().0;
    let body = format!(
        "<style>{CSS}</style><h1>Settings</h1>{notice}\
         <div class=\"tune-view\" id=\"view\"><img id=\"pic\" src=\"/snapshot.jpg\" alt=\"the camera's current picture\">\
         <svg id=\"ov\" viewBox=\"0 0 1 1\" preserveAspectRatio=\"none\" aria-hidden=\"true\"></svg></div>\
         <div id=\"tools\" class=\"tools\" hidden>\
         <button type=\"button\" id=\"draw-mask\" data-kind=\"masks\">Draw mask</button>\
         <button type=\"button\" id=\"draw-zone\" data-kind=\"zones\">Draw zone</button>\
         <button type=\"button\" id=\"undo\">Undo point</button>\
         <button type=\"button\" id=\"done\">Finish shape</button>\
         <button type=\"button\" id=\"del\">Delete selected</button>\
         <label class=\"live\"><input type=\"checkbox\" id=\"preview\"> Show what motion-svc sees</label>\
         <span id=\"hint\" class=\"hint\">Masks (red): nothing there counts. Zones (green): only there counts. Tap a shape to select it.</span></div>\
         <p id=\"preview-state\" class=\"hint\"></p>\
         <form method=\"post\" action=\"/settings\" id=\"settings\" novalidate>\
         <fieldset><legend>Detection</legend>\
         <p><label><input type=\"radio\" name=\"detection\" value=\"armed\" id=\"armed\"{a}> Armed</label> \
         <label><input type=\"radio\" name=\"detection\" value=\"disarmed\" id=\"disarmed\"{d}> Disarmed (no events, clips or hooks)</label>{e_det}</p>\
         <p><label for=\"sensitivity\">Sensitivity</label><select id=\"sensitivity\" name=\"sensitivity\">{presets}</select>{e_sens}</p>\
         {min_object}{fps}</fieldset>\
         <fieldset><legend>Recording</legend>{pre}{post}</fieldset>\
         <fieldset><legend>Keeping events</legend>{total}{age}</fieldset>\
         <fieldset><legend>Masks and zones</legend>\
         <p class=\"hint\">One shape a line: points <code>x,y</code> apart by spaces, in fractions of the picture \
         (0,0 top left, 1,1 bottom right). With JavaScript, draw them on the picture above.</p>\
         <p><label for=\"masks\">Masks (ignored areas)</label><textarea id=\"masks\" name=\"masks\" rows=\"3\" spellcheck=\"false\">{masks}</textarea>{e_masks}</p>\
         <p><label for=\"zones\">Zones (only these count; none: the whole picture)</label><textarea id=\"zones\" name=\"zones\" rows=\"3\" spellcheck=\"false\">{zones}</textarea>{e_zones}</p>\
         </fieldset><p><button type=\"submit\" id=\"save\">Save</button></p></form>\
         <form method=\"post\" action=\"/settings/reset\" id=\"reset\"><p><button type=\"submit\">Reset to defaults</button> \
         <small>the administrator's values from /etc/mecam/mecam.toml; armed or disarmed stays</small></p></form>\
         <script>{JS}</script>",
        a = check(armed),
        d = check(!armed),
        e_det = err("detection"),
        e_sens = err("sensitivity"),
        min_object = number(
            MIN_OBJECT_PCT,
            "Smallest object",
            "% of the picture's height",
            "a person at the far end of a garden is about 10; empty: the preset's",
            &format!("{preset_obj} (preset)"),
        ),
        fps = number(
            ANALYSIS_FPS,
            "Analysis rate",
            "frames/s",
            "more catches faster motion, costs CPU",
            ""
        ),
        pre = number(
            PRE_CAPTURE_S,
            "Before the motion",
            "s",
            "video kept before the motion starts, from the next event",
            ""
        ),
        post = number(
            POST_CAPTURE_S,
            "After the motion",
            "s",
            "video kept after the motion stops, from the next event",
            ""
        ),
        total = number(
            MAX_TOTAL_MIB,
            "At most",
            "MiB",
            "oldest events go first; 0: no limit",
            ""
        ),
        age = number(MAX_AGE_DAYS, "For at most", "days", "0: keep", ""),
        masks = v("masks"),
        zones = v("zones"),
        e_masks = err("masks"),
        e_zones = err("zones"),
    );
    page("Settings", true, &body)
}
