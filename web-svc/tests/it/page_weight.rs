//! Page weight: every page's HTML, with the CSS and JavaScript it loads, stays under
//! [`MAX_PAGE_BYTES`] (phones on a weak Wi-Fi at the edge of the garden). The pages are listed
//! once, in [`PAGES`]: a new page is one line there and one row in the README's table.

use std::sync::Arc;

use mecam_system_tests::http;

use crate::events::write_event;
use crate::harness::{Camera, Dirs, Web, make_frames, set_password};

/// The most bytes of HTML, CSS and JavaScript one page may weigh (images are not counted).
/// 50 KB as the issue counts it, in thousands: every page test holds to this one number.
pub const MAX_PAGE_BYTES: usize = 50_000;

/// Every page: its name in the README's table, its path, and whether it needs a login.
/// `{event}` is an event's id.
pub(crate) const PAGES: &[(&str, &str, bool)] = &[
    ("login", "/login", false),
    ("dashboard", "/", true),
    ("events", "/events", true),
    ("event", "/events/{event}", true),
    ("settings", "/settings", true),
];

const PW: &str = "page weight test password";
/// An event of the fixture.
const EVENT: &str = "20261124T182900Z-0001";

/// The `src` of every `<script src=...>` and the `href` of every `<link rel="stylesheet">`.
fn assets(html: &str) -> Vec<String> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[start..].split('"').next()?.to_owned())
    };
    html.split('<')
        .filter_map(|t| t.split('>').next())
        .filter_map(|tag| {
            if tag.starts_with("script") {
                attr(tag, "src")
            } else if tag.starts_with("link") && tag.contains("stylesheet") {
                attr(tag, "href")
            } else {
                None
            }
        })
        .collect()
}

/// The pages at their heaviest: more events than a page shows, one being recorded, the
/// banner up (no status records: capture and motion are shown as down).
#[test]
fn every_page_with_its_css_and_js_is_under_50_kb() {
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(3, 160, 120, 0);
    for k in 1..=40 {
        let state = if k == 40 { "recording" } else { "complete" };
        write_event(
            &dirs.events(),
            &format!("20261124T18{:02}00Z-{k:04}", k % 60),
            state,
            &frames,
        );
    }
    write_event(&dirs.events(), EVENT, "complete", &frames);
    let _camera = Camera::start(&dirs.run(), Arc::new(frames), 160, 120, 10.0);
    let web = Web::start(&dirs);
    let cookie = http::login(web.addr, "admin", PW).unwrap();
    let mut table = String::from(
        "| page | path | HTML | CSS + JS loaded apart | total |\n| --- | --- | --- | --- | --- |\n",
    );
    for &(name, path, login) in PAGES {
        let path = path.replace("{event}", EVENT);
        let c = login.then_some(cookie.as_str());
        let r = http::get(web.addr, &path, c).unwrap();
        assert_eq!(r.status, 200, "{path}");
        let html = r.text();
        let mut apart = 0;
        for asset in assets(&html) {
            let a = http::get(web.addr, &asset, c).unwrap();
            assert_eq!(a.status, 200, "{path} loads {asset}");
            apart += a.body.len();
        }
        let total = r.body.len() + apart;
        table.push_str(&format!(
            "| {name} | `{}` | {} | {apart} | {total} |\n",
            path.replace(EVENT, "<id>"),
            r.body.len()
        ));
        assert!(
            total < MAX_PAGE_BYTES,
            "{path} weighs {total} bytes of HTML, CSS and JS, over {MAX_PAGE_BYTES}"
        );
    }
    println!("{table}");
    let readme = include_str!("../../README.md");
    for &(name, path, _) in PAGES {
        let row = format!("| {name} | `{}` |", path.replace("{event}", "<id>"));
        assert!(
            readme.contains(&row),
            "the README's page-weight table has no row starting {row}\n{table}"
        );
    }
}
