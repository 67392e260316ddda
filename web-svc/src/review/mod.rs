//! The event review pages: the list grouped by the viewer's day (today, yesterday, a day
//! filter), one event with its player, prev/next and "Save as MP4", and the event card in
//! words with its poster's boxes drawn over it (SVG, nothing re-encoded).
//!
//! Every page works without JavaScript (posters, cards, day headings at the server's offset,
//! downloads, the MP4 form); the pages' small scripts (`assets/review.js` and
//! `assets/player.js`, embedded) localise every `<time>` to the browser's zone, tell the
//! server the browser's offset (the `mecam_tz` cookie) and run the player.

pub mod day;
pub mod words;

use ::events::EventMeta;

use crate::events::{EventInfo, Shown};
use crate::mp4::Mp4Status;
use crate::pages::{esc, page};
use day::{Local, iso_utc};

/// The review pages' style (embedded in each page with event cards, a few KB).
pub const CSS: &str = include_str!("../../assets/review.css");
/// Localises `<time>` and keeps the `mecam_tz` cookie current (every page with event times).
pub const TIME_JS: &str = include_str!("../../assets/review.js");
/// The player and the MP4 button (the event page).
const PLAYER_JS: &str = include_str!("../../assets/player.js");
/// Days offered by the day filter at most (the newest days that have events).
pub const MAX_FILTER_DAYS: usize = 14;

/// How the viewer reads times: their offset from UTC and now.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Minutes east of UTC.
    pub offset_min: i32,
    /// Now, ms since the epoch.
    pub now_ms: u64,
}

impl View {
    /// `unix_ms` at the viewer's offset.
    pub fn local(&self, unix_ms: u64) -> Local {
        Local::new(unix_ms, self.offset_min)
    }

    fn now(&self) -> Local {
        self.local(self.now_ms)
    }

    /// `UTC` or `+01:00`: said after a time the server wrote (the script writes the
    /// browser's own, without it).
    fn zone(&self) -> String {
        match self.offset_min {
            0 => "UTC".into(),
            m => format!(
                "{}{:02}:{:02}",
                if m < 0 { '-' } else { '+' },
                m.abs() / 60,
                m.abs() % 60
            ),
        }
    }

    /// A `<time>` the script localises; `fmt` is `t` (clock) or `dt` (day and clock).
    fn time(&self, unix_ms: u64, fmt: &str) -> String {
        let l = self.local(unix_ms);
        let text = match fmt {
            "t" => format!("{} {}", l.clock(), self.zone()),
            _ => format!("{}, {} {}", l.day_words(self.now()), l.clock(), self.zone()),
        };
        format!(
            "<time datetime=\"{}\" data-t=\"{unix_ms}\" data-f=\"{fmt}\">{text}</time>",
            iso_utc(unix_ms)
        )
    }
}

/// When an event started: its `event.json`, else its id.
fn start_ms(e: &EventInfo) -> Option<u64> {
    e.meta
        .as_ref()
        .map(|m| m.start_unix_ms)
        .or_else(|| ::events::parse_id(&e.id))
}

/// An SVG drawing `boxes` (`[x, y, w, h]`, fractions) over the picture it is laid on.
fn boxes_svg(boxes: &[[f32; 4]], id: &str) -> String {
    let rects: String = boxes
        .iter()
        .filter(|b| b.iter().all(|v| v.is_finite()))
        .map(|b| {
            let k = |v: f32| (v.clamp(0.0, 1.0) * 1000.0).round() as u32;
            format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
                k(b[0]),
                k(b[1]),
                k(b[2]),
                k(b[3])
            )
        })
        .collect();
    format!(
        "<svg class=\"boxes\"{id} viewBox=\"0 0 1000 1000\" preserveAspectRatio=\"none\" aria-hidden=\"true\">{rects}</svg>"
    )
}

/// The poster with the boxes of the event's peak drawn over it.
fn poster(e: &EventInfo, img_id: &str, svg_id: &str) -> String {
    if !e.has_poster {
        return if e.state == Shown::Recording {
            // The poster is written at the end: meanwhile the picture of now.
            "<div class=\"shot\"><img loading=\"lazy\" src=\"/snapshot.jpg\" alt=\"live picture of the event being recorded\"></div>".into()
        } else {
            "<p class=\"noposter\">(no poster)</p>".into()
        };
    }
    let boxes = e.meta.as_ref().map_or(&[][..], |m| &m.boxes[..]);
    format!(
        "<div class=\"shot\"><img{img_id} loading=\"lazy\" src=\"/events/{0}/poster.jpg\" alt=\"poster of {0}\">{1}</div>",
        esc(&e.id),
        boxes_svg(boxes, svg_id)
    )
}

/// What the event was, in words, or what is wrong with it.
fn what(e: &EventInfo) -> String {
    match (&e.meta, e.state) {
        (Some(m), Shown::Recording) => {
            let so_far = ::events::now_unix_ms().saturating_sub(m.start_unix_ms) / 1000;
            esc(&words::describe(m, Some(so_far)))
        }
        (Some(m), _) => esc(&words::describe(m, None)),
        (None, _) => "Details unknown (see the event).".into(),
    }
}

fn state_badge(s: Shown) -> String {
    match s {
        Shown::Recording => "<b class=\"bad\">motion now</b>".to_owned(),
        Shown::Complete => String::new(),
        other => format!("<span class=\"bad\">{}</span>", other.as_str()),
    }
}

/// One event as a card: poster with boxes, start time (with its day unless the card is under
/// its day's heading), what was seen.
pub fn card(e: &EventInfo, view: &View, with_day: bool) -> String {
    let fmt = if with_day { "dt" } else { "t" };
    let when = start_ms(e).map_or_else(|| "unknown time".into(), |ms| view.time(ms, fmt));
    format!(
        "<div class=\"card\"><a href=\"/events/{id}\">{poster}</a><div>{when} {state}</div>\
         <div class=\"what\">{what}</div></div>",
        id = esc(&e.id),
        poster = poster(e, "", ""),
        state = state_badge(e.state),
        what = what(e),
    )
}

/// The event list's query, as the page shows it.
#[derive(Debug)]
pub struct ListView<'a> {
    /// The page number (from 0).
    pub page: usize,
    /// Whether an older page follows.
    pub more: bool,
    /// The day shown, `YYYY-MM-DD`, or all.
    pub day: Option<&'a str>,
    /// The newest days that have events (at most [`MAX_FILTER_DAYS`]).
    pub days: &'a [String],
    /// The viewer.
    pub view: View,
}

fn day_link(day: Option<&str>, page: usize) -> String {
    match (day, page) {
        (None, 0) => "/events".into(),
        (None, p) => format!("/events?page={p}"),
        (Some(d), 0) => format!("/events?day={d}"),
        (Some(d), p) => format!("/events?day={d}&amp;page={p}"),
    }
}

/// Words for a `YYYY-MM-DD` day: "Today", "Yesterday", "Tuesday 24 November 2026".
fn day_words(day: &str, view: &View) -> String {
    ::events::parse_id(&format!("{}T120000Z-0001", day.replace('-', ""))).map_or_else(
        || day.to_owned(),
        |noon| Local::new(noon, 0).day_words(view.now()),
    )
}

/// The event list: events grouped by the viewer's day, newest first, with a day filter.
pub fn events(list: &[EventInfo], q: &ListView<'_>) -> String {
    let v = &q.view;
    let mut body = String::with_capacity(4096 + list.len() * 600);
    body.push_str(&format!("<style>{CSS}</style><h1>Events</h1>"));
    // The day filter: the newest days with events, and any day by date.
    body.push_str("<nav class=\"days\" aria-label=\"days\">");
    let chip = |href: String, text: &str, on: bool| {
        format!(
            "<a class=\"chip{}\" href=\"{href}\">{}</a>",
            if on { " on" } else { "" },
            esc(text)
        )
    };
    body.push_str(&chip("/events".into(), "All", q.day.is_none()));
    for d in q.days {
        let words = day_words(d, v);
        let short = words.split(' ').take(3).collect::<Vec<_>>().join(" ");
        body.push_str(&chip(
            format!("/events?day={d}"),
            &short,
            q.day == Some(d.as_str()),
        ));
    }
    body.push_str(&format!(
        "</nav><form class=\"dayf\" method=\"get\" action=\"/events\"><label>Day \
         <input type=\"date\" name=\"day\" value=\"{}\"></label> <button>Show</button></form>",
        q.day.map(esc).unwrap_or_default()
    ));
    if list.is_empty() {
        body.push_str(match q.day {
            Some(_) => "<p>No events on this day.</p>",
            None => "<p>No events.</p>",
        });
    }
    let mut current: Option<String> = None;
    for e in list {
        let day = start_ms(e).map(|ms| v.local(ms));
        let key = day.map(Local::day);
        if current.is_none() || key != current {
            if current.is_some() {
                body.push_str("</div></section>");
            }
            let heading = day.map_or_else(|| "Unknown day".into(), |d| d.day_words(v.now()));
            body.push_str(&format!(
                "<section class=\"day\" data-day=\"{}\"><h2>{}</h2><div class=\"grid\">",
                key.as_deref().unwrap_or(""),
                esc(&heading)
            ));
            current = Some(key.unwrap_or_default());
        }
        body.push_str(&card(e, v, false));
    }
    if current.is_some() {
        body.push_str("</div></section>");
    }
    body.push_str("<p class=\"pager\">");
    if q.page > 0 {
        body.push_str(&format!(
            "<a href=\"{}\">newer</a> ",
            day_link(q.day, q.page - 1)
        ));
    }
    if q.more {
        body.push_str(&format!(
            "<a href=\"{}\">older</a>",
            day_link(q.day, q.page + 1)
        ));
    }
    body.push_str(&format!("</p><script>{TIME_JS}</script>"));
    page("Events", true, &body)
}

/// The events either side of one in the list (newest first).
#[derive(Debug, Default)]
pub struct Neighbours {
    /// The next newer event.
    pub newer: Option<String>,
    /// The next older event.
    pub older: Option<String>,
}

/// Why an event ended, in words.
fn ended(reason: Option<::events::EndReason>) -> &'static str {
    use ::events::EndReason;
    match reason {
        None => "?",
        Some(EndReason::Quiet) => "motion stopped",
        Some(EndReason::MaxDuration) => "longest event length reached",
        Some(EndReason::Interrupted) => "camera went away",
        Some(EndReason::Shutdown) => "motion-svc was stopped",
        Some(EndReason::Crash) => "motion-svc died; closed when it came back",
        Some(EndReason::WriteFailed) => {
            "the recording could not be written (events disk full, read-only or failing)"
        }
    }
}

/// The MP4 part of the event page: the form (it works without JavaScript), the state of the
/// job, and the download once made.
fn mp4_block(id: &str, st: &Mp4Status) -> String {
    let text = match st.state {
        "running" => format!(
            "Making the MP4: {:.0} % (reload to follow)",
            st.progress * 100.0
        ),
        "done" => String::new(),
        "failed" => format!(
            "The MP4 could not be made: {}",
            st.message.as_deref().unwrap_or("?")
        ),
        _ => st.message.clone().unwrap_or_default(),
    };
    let done = st.state == "done";
    let size = st
        .bytes
        .map(|b| {
            if b < 1_000_000 {
                format!(" ({} KB)", b.div_ceil(1000))
            } else {
                format!(" ({:.1} MB)", b as f64 / 1e6)
            }
        })
        .unwrap_or_default();
    format!(
        "<div class=\"downloads\" id=\"mp4\" data-state=\"{state}\">\
         <a class=\"btn\" href=\"/events/{id}/clip.avi\" download>Download AVI</a>\
         <form method=\"post\" action=\"/events/{id}/mp4\" id=\"mp4form\"{form_hidden}>\
         <button id=\"mp4btn\">Save as MP4</button></form>\
         <a class=\"btn\" id=\"mp4link\" href=\"/events/{id}/clip.mp4\" download{link_hidden}>Download MP4<span id=\"mp4size\">{size}</span></a>\
         <progress id=\"mp4prog\" max=\"1\" value=\"{p}\"{prog_hidden}></progress>\
         <span id=\"mp4msg\" role=\"status\">{text}</span></div>",
        state = st.state,
        form_hidden = if done { " hidden" } else { "" },
        link_hidden = if done { "" } else { " hidden" },
        prog_hidden = if st.state == "running" { "" } else { " hidden" },
        p = st.progress,
        text = esc(&text),
    )
}

/// The player: the poster with its boxes until the script loads the frames; the controls
/// appear only with JavaScript.
fn player(e: &EventInfo, m: Option<&EventMeta>) -> String {
    let id = esc(&e.id);
    let frames = m.map_or(0, |m| m.frames);
    format!(
        "<div class=\"player\" id=\"player\" data-id=\"{id}\" data-frames=\"{frames}\"{fit}>{poster}\
         <div class=\"controls\" id=\"controls\" hidden>\
         <input id=\"seek\" type=\"range\" min=\"0\" max=\"0\" value=\"0\" step=\"1\" aria-label=\"position\">\
         <div class=\"row\"><button id=\"play\" type=\"button\">Play</button>\
         <button id=\"back\" type=\"button\" aria-label=\"previous frame\">&#9664;&#9646;</button>\
         <button id=\"fwd\" type=\"button\" aria-label=\"next frame\">&#9646;&#9654;</button>\
         <select id=\"speed\" aria-label=\"speed\"><option value=\"0.25\">0.25x</option><option value=\"0.5\">0.5x</option>\
         <option value=\"1\" selected>1x</option><option value=\"2\">2x</option><option value=\"4\">4x</option></select>\
         <label><input id=\"loop\" type=\"checkbox\"> Loop</label>\
         <label><input id=\"showboxes\" type=\"checkbox\" checked> Boxes</label></div>\
         <div class=\"ftime\"><span id=\"ftime\"></span> &middot; frame <span id=\"fno\">1</span> of <span id=\"fcount\">?</span></div>\
         </div></div>",
        // Wide enough for the page, low enough that the controls stay on a laptop's screen.
        fit = m
            .filter(|m| m.width > 0 && m.height > 0)
            .map(|m| format!(
                " style=\"max-width:calc(55vh * {} / {})\"",
                m.width, m.height
            ))
            .unwrap_or_default(),
        poster = if e.has_poster {
            poster(e, " id=\"frame\"", " id=\"boxes\"")
        } else {
            format!(
                "<div class=\"shot\"><img id=\"frame\" alt=\"clip frame\">{}</div>",
                boxes_svg(&[], " id=\"boxes\"")
            )
        },
    )
}

/// One event: what was seen, the player, downloads, details, delete, and prev/next.
pub fn event(e: &EventInfo, nav: &Neighbours, mp4: &Mp4Status, view: &View) -> String {
    let id = esc(&e.id);
    let m = e.meta.as_ref();
    let link = |to: &Option<String>, text: &str, rel: &str| match to {
        Some(t) => format!(
            "<a class=\"btn\" rel=\"{rel}\" id=\"{rel}\" href=\"/events/{0}\">{text}</a>",
            esc(t)
        ),
        None => format!("<span class=\"btn off\">{text}</span>"),
    };
    let day = start_ms(e).map(|ms| view.local(ms).day());
    let nav_html = format!(
        "<nav class=\"evnav\">{}<a href=\"{}\">All events</a>{}</nav>",
        link(&nav.newer, "&larr; Newer", "prev"),
        day_link(day.as_deref(), 0),
        link(&nav.older, "Older &rarr;", "next"),
    );
    let title = start_ms(e).map_or_else(
        || format!("Event {id}"),
        |ms| format!("Motion {}", view.time(ms, "dt")),
    );
    let problem: String = e
        .problem
        .iter()
        .chain(m.and_then(|m| m.clip_error.as_ref()))
        .map(|p| format!("<p class=\"bad\">{}</p>", esc(p)))
        .collect();
    let media = if e.has_clip {
        format!("{}{}", player(e, m), mp4_block(&id, mp4))
    } else if e.has_poster {
        format!("{}<p>No clip.</p>", poster(e, "", ""))
    } else {
        "<p>No clip or poster.</p>".into()
    };
    let delete = if e.state == Shown::Recording {
        "<p>Being recorded now, so it cannot be deleted yet: it can be once motion-svc ends it \
         (when the motion stops, at the latest after <code>[motion] max_event_s</code>). To end it \
         now, stop motion-svc (<code>sudo systemctl stop mecam-motion</code>), which closes it.</p>"
            .into()
    } else {
        format!(
            "<form method=\"post\" action=\"/events/{id}/delete\" onsubmit=\"return confirm('Delete this event?')\"><button>Delete</button></form>"
        )
    };
    let num = |f: &dyn Fn(&EventMeta) -> String| m.map_or_else(|| "?".into(), f);
    let body = format!(
        "<style>{CSS}</style>{nav_html}<h1>{title}</h1><p class=\"what big\">{what}</p>{problem}{media}\
         <table class=\"details\"><tr><td>event</td><td>{id}</td></tr>\
         <tr><td>state</td><td>{state}</td></tr><tr><td>start</td><td>{start}</td></tr>\
         <tr><td>duration</td><td>{dur}</td></tr><tr><td>largest object</td><td>{score} % of the frame</td></tr>\
         <tr><td>moving area</td><td>{area} %</td></tr><tr><td>frames</td><td>{frames}</td></tr>\
         <tr><td>dropped frames</td><td>{dropped}</td></tr><tr><td>ended</td><td>{ended}</td></tr></table>{delete}\
         <script>{TIME_JS}</script><script>{PLAYER_JS}</script>",
        what = what(e),
        state = e.state.as_str(),
        start = start_ms(e).map_or_else(|| "?".into(), |ms| view.time(ms, "dt")),
        dur = num(&|m| words::duration(m.duration_s)),
        score = num(&|m| format!("{:.1}", m.peak_score)),
        area = num(&|m| format!("{:.1}", m.peak_area_pct)),
        frames = num(&|m| m.frames.to_string()),
        dropped = num(&|m| m.dropped_frames.to_string()),
        ended = ended(m.and_then(|m| m.end_reason)),
    );
    page(&format!("Event {}", e.id), true, &body)
}
