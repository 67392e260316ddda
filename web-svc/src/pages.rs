//! HTML pages: small, server-rendered, no external assets, readable on a phone. Every value
//! from outside (event fields, reasons) goes through [`esc`].

use ::events::EndReason;

use crate::events::{DiskState, EventInfo, Shown};
use crate::offline::format_utc;

/// HTML-escapes `s`.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}\
header{display:flex;gap:1em;align-items:center;padding:.6em 1em;background:#222}\
header a{color:#9cf;text-decoration:none}main{padding:1em;max-width:60em;margin:auto}\
img.live{width:100%;height:auto;background:#000;display:block}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(10em,1fr));gap:.8em}\
.card{background:#1c1c1c;padding:.5em;border-radius:.4em}.card img{width:100%}\
.bad{color:#f88}.ok{color:#8f8}form.inline{display:inline}\
input,button{font-size:1.1em;padding:.4em;margin:.2em 0}a{color:#9cf}\
table{border-collapse:collapse}td{padding:.2em .6em}";

/// Wraps `body` in the page frame; `nav` adds the menu and logout button.
pub fn page(title: &str, nav: bool, body: &str) -> String {
    let menu = if nav {
        "<header><b>mecam</b><a href=\"/\">Live</a><a href=\"/events\">Events</a><a href=\"/settings\">Settings</a>\
         <form class=\"inline\" method=\"post\" action=\"/logout\"><button>Log out</button></form></header>"
    } else {
        "<header><b>mecam</b></header>"
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} - mecam</title><style>{CSS}{health_css}</style></head><body>{menu}{banner}<main>{body}</main></body></html>",
        esc(title),
        health_css = crate::health::CSS,
        banner = if nav {
            crate::health::banner_html()
        } else {
            String::new()
        },
    )
}

/// The login form, with an optional message.
pub fn login(message: Option<&str>) -> String {
    let msg = message
        .map(|m| format!("<p class=\"bad\" id=\"message\">{}</p>", esc(m)))
        .unwrap_or_default();
    page(
        "Log in",
        false,
        &format!(
            "<h1>Log in</h1>{msg}<form method=\"post\" action=\"/login\">\
             <p><label>User name<br><input id=\"username\" name=\"username\" value=\"admin\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required></label></p>\
             <p><label>Password<br><input id=\"password\" type=\"password\" name=\"password\" autocomplete=\"current-password\" autofocus required></label></p>\
             <p><button id=\"login\" type=\"submit\">Log in</button></p></form>"
        ),
    )
}

/// The first-visit form.
pub fn setup(message: Option<&str>) -> String {
    let msg = message
        .map(|m| format!("<p class=\"bad\">{}</p>", esc(m)))
        .unwrap_or_default();
    page(
        "Set the password",
        false,
        &format!(
            "<h1>Welcome</h1><p>No password is set yet. Enter the one-time setup code and choose the \
             password of the user <b>admin</b> (at least {} characters).</p>\
             <p>The code was printed when mecam was installed; on the camera, \
             <code>sudo web-svc --print-setup-code</code> prints it again \
             (it is also in <code>journalctl -u mecam-web</code>).</p>{msg}<form method=\"post\" action=\"/setup\">\
             <p><label>Setup code<br><input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" autocapitalize=\"characters\" spellcheck=\"false\" autofocus required></label></p>\
             <p><label>Password<br><input type=\"password\" name=\"password\" autocomplete=\"new-password\" required></label></p>\
             <p><label>Again<br><input type=\"password\" name=\"confirm\" autocomplete=\"new-password\" required></label></p>\
             <p><button type=\"submit\">Set password</button></p></form>",
            crate::auth::MIN_PASSWORD_LEN
        ),
    )
}

fn when(ms: Option<u64>) -> String {
    ms.map_or_else(|| "unknown time".into(), |ms| format_utc(ms / 1000))
}

/// One event as a card.
pub fn event_card(e: &EventInfo) -> String {
    let recording = e.state == Shown::Recording;
    let poster = if e.has_poster {
        format!(
            "<img loading=\"lazy\" src=\"/events/{0}/poster.jpg\" alt=\"poster of {0}\">",
            esc(&e.id)
        )
    } else if recording {
        // The poster is written at the end: meanwhile the picture of now.
        "<img loading=\"lazy\" src=\"/snapshot.jpg\" alt=\"live picture of the event being recorded\">".into()
    } else {
        "<p>(no poster)</p>".into()
    };
    let state = match e.state {
        Shown::Recording => "<b class=\"bad\">motion now</b>".to_owned(),
        Shown::Complete => String::new(),
        other => format!("<span class=\"bad\">{}</span>", other.as_str()),
    };
    let m = e.meta.as_ref();
    format!(
        "<div class=\"card\"><a href=\"/events/{id}\">{poster}</a><div>{when} {state}</div>\
         <div>{dur} s, largest object {score} % of the frame</div></div>",
        id = esc(&e.id),
        when = when(m.map(|m| m.start_unix_ms)),
        dur = m.map_or("?".into(), |m| if recording {
            // duration_s is written at the end: the time so far.
            let so_far = ::events::now_unix_ms().saturating_sub(m.start_unix_ms) / 1000;
            format!("recording for {so_far}")
        } else {
            format!("{:.1}", m.duration_s)
        }),
        score = m.map_or("?".into(), |m| format!("{:.1}", m.peak_score)),
    )
}

/// The dashboard; `disk` says whether events can be recorded (a banner when not), `health`
/// how each service is (`crate::health`); the status area is kept current by its script.
pub fn dashboard(latest: &[EventInfo], disk: &DiskState, health: &crate::health::Health) -> String {
    let cards: String = latest.iter().map(event_card).collect();
    let (hidden, problem) = match &disk.problem {
        Some(p) => ("", esc(p)),
        None => (" hidden", String::new()),
    };
    page(
        "Live",
        true,
        &format!(
            "<p class=\"bad\" id=\"disk\"{hidden}><b>{problem}</b></p>\
             <p id=\"status\">camera: <span id=\"cam\">?</span> · <span id=\"fps\">?</span> fps · \
             motion: <span id=\"motion\">?</span> · viewers: <span id=\"viewers\">?</span></p>{health}\
             <img class=\"live\" id=\"live\" src=\"/stream.mjpg\" alt=\"live view\">\
             <h2>Latest events</h2><div class=\"grid\">{cards}</div><p><a href=\"/events\">All events</a></p>\
             <script>{js}</script>",
            health = health.html(),
            js = crate::health::JS,
        ),
    )
}

/// A page of the event list.
pub fn events(list: &[EventInfo], page_no: usize, has_more: bool) -> String {
    let cards: String = list.iter().map(event_card).collect();
    let prev = if page_no > 0 {
        format!("<a href=\"/events?page={}\">newer</a> ", page_no - 1)
    } else {
        String::new()
    };
    let next = if has_more {
        format!("<a href=\"/events?page={}\">older</a>", page_no + 1)
    } else {
        String::new()
    };
    let empty = if list.is_empty() {
        "<p>No events.</p>"
    } else {
        ""
    };
    page(
        "Events",
        true,
        &format!("<h1>Events</h1>{empty}<div class=\"grid\">{cards}</div><p>{prev}{next}</p>"),
    )
}

/// Why an event ended, in words.
fn ended(reason: Option<EndReason>) -> &'static str {
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

/// One event.
pub fn event(e: &EventInfo) -> String {
    let id = esc(&e.id);
    let player = if e.has_clip {
        format!(
            "<img class=\"live\" src=\"/events/{id}/play.mjpg\" alt=\"clip replay\">\
             <p><a href=\"/events/{id}/clip.avi\" download>Download clip (AVI)</a></p>"
        )
    } else if e.has_poster {
        format!(
            "<img class=\"live\" src=\"/events/{id}/poster.jpg\" alt=\"poster\"><p>No clip.</p>"
        )
    } else {
        "<p>No clip or poster.</p>".into()
    };
    let problem = e
        .problem
        .iter()
        .chain(e.meta.iter().filter_map(|m| m.clip_error.as_ref()))
        .map(|p| format!("<p class=\"bad\">{}</p>", esc(p)))
        .collect::<String>();
    let m = e.meta.as_ref();
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
    page(
        &e.id,
        true,
        &format!(
            "<h1>{id}</h1>{problem}{player}<table>\
             <tr><td>state</td><td>{state}</td></tr><tr><td>start</td><td>{start}</td></tr>\
             <tr><td>duration</td><td>{dur} s</td></tr><tr><td>largest object</td><td>{score} % of the frame</td></tr>\
             <tr><td>moving area</td><td>{area} %</td></tr><tr><td>frames</td><td>{frames}</td></tr>\
             <tr><td>dropped frames</td><td>{dropped}</td></tr><tr><td>ended</td><td>{ended}</td></tr></table>{delete}",
            state = e.state.as_str(),
            start = when(m.map(|m| m.start_unix_ms)),
            dur = m.map_or("?".into(), |m| format!("{:.1}", m.duration_s)),
            score = m.map_or("?".into(), |m| format!("{:.1}", m.peak_score)),
            area = m.map_or("?".into(), |m| format!("{:.1}", m.peak_area_pct)),
            frames = m.map_or("?".into(), |m| m.frames.to_string()),
            dropped = m.map_or("?".into(), |m| m.dropped_frames.to_string()),
            ended = ended(m.and_then(|m| m.end_reason)),
        ),
    )
}
