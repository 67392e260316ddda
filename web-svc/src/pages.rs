//! HTML pages: small, server-rendered, no external assets, readable on a phone. Every value
//! from outside (event fields, reasons) goes through [`esc`].

use crate::events::{DiskState, EventInfo};

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
         <title>{} - mecam</title><style>{CSS}{health_css}</style></head><body>{menu}{banner}<main>{body}</main>{streams}</body></html>",
        esc(title),
        health_css = crate::health::CSS,
        banner = if nav {
            crate::health::banner_html()
        } else {
            String::new()
        },
        streams = if nav {
            crate::health::STREAMS_SCRIPT
        } else {
            ""
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

/// One event as a card (see [`crate::review::card`]), times at UTC until the page's script
/// shows them in the browser's zone.
pub fn event_card(e: &EventInfo) -> String {
    crate::review::card(
        e,
        &crate::review::View {
            offset_min: 0,
            now_ms: ::events::now_unix_ms(),
        },
        true,
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
             <style>{card_css}</style><script>{time_js}</script><script>{js}</script>",
            health = health.html(),
            js = crate::health::JS,
            time_js = crate::review::TIME_JS,
            card_css = crate::review::CSS,
        ),
    )
}
