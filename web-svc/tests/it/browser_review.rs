//! Reviewing an event in a real browser (headless Debian `chromium` over the DevTools
//! protocol), at a phone's size and a laptop's: log in, the list by day, open an event, play,
//! pause, seek, and "Save as MP4" down to a file ffprobe reads as H.264; then the event page
//! without JavaScript (poster, boxes, downloads). Each page is written
//! as a screenshot to `target/tmp/screenshots/` (the phone ones are in `docs/screenshots/`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::browser::{Cdp, chromium_or_skip, launch};
use crate::harness::{Dirs, Web, make_frames, poll, set_password};
use crate::review::{have_ffmpeg, probe, write_event};

const PW: &str = "review browser password";

/// Where the screenshots go.
fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn screenshot(cdp: &mut Cdp, name: &str) {
    use base64::Engine as _;
    let r = cdp.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(r["data"].as_str().unwrap())
        .unwrap();
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// Whether every card's box overlay covers exactly its poster (so a box is drawn where the
/// object was).
const OVERLAYS_FIT: &str = "[...document.querySelectorAll('.card .shot')].every(s => { \
    const i = s.querySelector('img').getBoundingClientRect(); \
    const o = s.querySelector('svg.boxes').getBoundingClientRect(); \
    return i.height > 20 && Math.abs(i.left - o.left) < 1 && Math.abs(i.top - o.top) < 1 \
        && Math.abs(i.width - o.width) < 1 && Math.abs(i.height - o.height) < 1; })";

fn wait_for(cdp: &mut Cdp, what: &str, expr: &str) {
    poll(Duration::from_secs(30), what, || {
        cdp.eval(expr) == json!(true)
    });
}

fn open(cdp: &mut Cdp, web: &Web, path: &str, ready: &str) {
    cdp.call(
        "Page.navigate",
        json!({"url": format!("http://{}{path}", web.addr)}),
    );
    wait_for(
        cdp,
        path,
        &format!(
            "document.readyState === 'complete' && location.pathname === {} && ({ready})",
            json!(path)
        ),
    );
}

#[test]
fn a_phone_and_a_laptop_review_an_event_play_pause_seek_and_save_it_as_mp4() {
    const TEST: &str = "a_phone_and_a_laptop_review_an_event_play_pause_seek_and_save_it_as_mp4";
    let Some(chromium) = chromium_or_skip(TEST) else {
        return;
    };
    if !have_ffmpeg(TEST) {
        return;
    }
    let dirs = Dirs::new("");
    set_password(&dirs, PW);
    let frames = make_frames(40, 320, 240, 10);
    let now = ::events::now_unix_ms();
    // Two events today, one yesterday (in UTC; the browser's zone may say otherwise, which
    // the page follows).
    // And one at 20:00 UTC yesterday, 05:00 today in Tokyo: a day apart in the two zones.
    let evening = now - now % 86_400_000 - 4 * 3_600_000;
    let mut ids: Vec<String> = [(20 * 60_000, 3), (90 * 60_000, 2), (25 * 3_600_000, 1)]
        .iter()
        .map(|&(ago, n)| ::events::format_id(now - ago, n))
        .collect();
    ids.push(::events::format_id(evening, 4));
    for id in &ids {
        write_event(&dirs.events(), id, &frames, 320, 240);
    }
    let web = Web::start(&dirs);
    let mut cdp = launch(chromium);

    open(
        &mut cdp,
        &web,
        "/login",
        "!!document.getElementById('password')",
    );
    // The browser's offset, as the review pages' script keeps it (so that they need not
    // reload to tell the server while the test drives them).
    cdp.eval("document.cookie = 'mecam_tz=' + -new Date().getTimezoneOffset() + '; path=/'; true");
    cdp.eval(&format!(
        "document.getElementById('password').value = {}; document.querySelector('form').submit(); true",
        json!(PW)
    ));
    wait_for(&mut cdp, "logged in", "location.pathname === '/'");
    let cookies = cdp.call("Network.getCookies", json!({}));
    let session = cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}={}",
                c["name"].as_str().unwrap(),
                c["value"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");

    for (size, w, h, mobile, event) in [
        ("phone", 390, 844, true, &ids[0]),
        ("laptop", 1366, 900, false, &ids[1]),
    ] {
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile}),
        );
        // The dashboard's latest events: each poster's boxes lie on the poster itself.
        open(
            &mut cdp,
            &web,
            "/",
            "document.querySelectorAll('.card img').length === 4 && \
             [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth)",
        );
        assert_eq!(cdp.eval(OVERLAYS_FIT), json!(true), "{size}: dashboard");
        // The list: grouped by day, cards in words.
        open(
            &mut cdp,
            &web,
            "/events",
            "document.querySelectorAll('.card').length === 4",
        );
        let headings = cdp.eval(
            "[...document.querySelectorAll('section.day h2')].map(h => h.textContent).join('|')",
        );
        assert!(
            headings.as_str().unwrap().contains("Today"),
            "{size}: {headings}"
        );
        let words = cdp.eval("document.querySelector('.card .what').textContent");
        assert_eq!(
            words,
            json!("A large object (12 % of the frame) in the bottom left, for 2 s."),
            "{size}"
        );
        assert_eq!(
            cdp.eval("document.querySelectorAll('.card svg.boxes rect').length"),
            json!(4),
            "{size}: every poster has its box"
        );
        wait_for(
            &mut cdp,
            "the posters",
            "[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth)",
        );
        assert_eq!(cdp.eval(OVERLAYS_FIT), json!(true), "{size}: list");
        screenshot(&mut cdp, &format!("review-{size}-events"));

        // Open the event its card links to (navigated to, so that no evaluation races the
        // page change).
        let card = format!("/events/{event}");
        assert_eq!(
            cdp.eval(&format!(
                "!!document.querySelector('.card a[href=\"{card}\"]')"
            )),
            json!(true),
            "{size}: a card links to {card}"
        );
        open(
            &mut cdp,
            &web,
            &card,
            "!!document.getElementById('player') && document.getElementById('player').dataset.ready === '1'",
        );
        assert_eq!(
            cdp.eval("document.getElementById('fcount').textContent"),
            json!("40")
        );
        screenshot(&mut cdp, &format!("review-{size}-event"));

        // Play: the frames move on; pause: they stop.
        cdp.eval("document.getElementById('play').click(); true");
        wait_for(
            &mut cdp,
            "playing",
            "document.getElementById('player').dataset.playing === '1' && +document.getElementById('player').dataset.frame >= 5",
        );
        cdp.eval("document.getElementById('play').click(); true");
        wait_for(
            &mut cdp,
            "paused",
            "document.getElementById('player').dataset.playing === ''",
        );
        let at = cdp.eval("document.getElementById('player').dataset.frame");
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(
            cdp.eval("document.getElementById('player').dataset.frame"),
            at,
            "{size}: paused means still"
        );
        // Seek on the scrubber: frame 30 is shown, with its time.
        cdp.eval(
            "const s = document.getElementById('seek'); s.value = 30; \
             s.dispatchEvent(new Event('input')); true",
        );
        wait_for(
            &mut cdp,
            "frame 30",
            "(() => { const i = document.getElementById('frame'); \
             return i.src.endsWith('/frames/30') && i.complete && i.naturalWidth === 320; })()",
        );
        assert_eq!(
            cdp.eval("document.getElementById('fno').textContent"),
            json!("31")
        );
        assert!(
            cdp.eval("document.getElementById('ftime').textContent")
                .as_str()
                .is_some_and(|t| t.contains(':')),
            "{size}: the frame's time is shown"
        );
        // A step back.
        cdp.eval("document.getElementById('back').click(); true");
        wait_for(
            &mut cdp,
            "frame 29",
            "document.getElementById('player').dataset.frame === '29'",
        );

        // Loop at 4x: the replay comes back to the start by itself; boxes off.
        cdp.eval(
            "document.getElementById('loop').checked = true; \
             const sp = document.getElementById('speed'); sp.value = '4'; \
             document.getElementById('play').click(); true",
        );
        let mut seen_end = false;
        poll(Duration::from_secs(30), "the loop to come round", || {
            let f = cdp
                .eval("+document.getElementById('player').dataset.frame")
                .as_u64()
                .unwrap_or(0);
            seen_end |= f >= 35;
            seen_end && f < 10
        });
        cdp.eval("document.getElementById('play').click(); document.getElementById('showboxes').click(); true");
        assert_eq!(
            cdp.eval("document.getElementById('player').classList.contains('noboxes')"),
            json!(true)
        );
        cdp.eval("document.getElementById('showboxes').click(); true");

        // Save as MP4: progress, then the link; the file is H.264.
        cdp.eval("document.getElementById('mp4btn').click(); true");
        poll(Duration::from_secs(90), "the MP4", || {
            let st = cdp.eval("document.getElementById('mp4').dataset.state");
            assert!(
                st != json!("failed") && st != json!("refused"),
                "{size}: {}",
                cdp.eval("document.getElementById('mp4msg').textContent")
            );
            st == json!("done")
        });
        assert_eq!(
            cdp.eval("document.getElementById('mp4link').hidden"),
            json!(false)
        );
        screenshot(&mut cdp, &format!("review-{size}-event-mp4"));
        let href = cdp.eval("document.getElementById('mp4link').getAttribute('href')");
        let mp4 = mecam_system_tests::http::get(web.addr, href.as_str().unwrap(), Some(&session))
            .unwrap();
        assert_eq!(mp4.status, 200, "{size}");
        let file = dirs.tmp.path().join(format!("{size}.mp4"));
        std::fs::write(&file, &mp4.body).unwrap();
        assert_eq!(probe(&file), "h264,yuv420p,40", "{size}");

        // Prev/next: the older event is one tap away.
        let older = cdp.eval("document.getElementById('next') && document.getElementById('next').getAttribute('href')");
        assert!(
            older.as_str().is_some_and(|h| h.starts_with("/events/")),
            "{size}: {older}"
        );
    }
    // In Tokyo (UTC+9), a first visit: the list's script tells the server the browser's
    // offset and reloads once, and the day headings are Tokyo's days.
    cdp.call("Emulation.clearDeviceMetricsOverride", json!({}));
    cdp.call(
        "Emulation.setTimezoneOverride",
        json!({"timezoneId": "Asia/Tokyo"}),
    );
    cdp.call(
        "Network.deleteCookies",
        json!({"name": "mecam_tz", "url": format!("http://{}/", web.addr)}),
    );
    cdp.eval("sessionStorage.clear(); true");
    cdp.call(
        "Page.navigate",
        json!({"url": format!("http://{}/events", web.addr)}),
    );
    let tokyo_day = |id: &str| {
        let ms = ::events::parse_id(id).unwrap() + 9 * 3_600_000;
        let s = ::events::utc_stamp(ms);
        format!("{}-{}-{}", &s[0..4], &s[4..6], &s[6..8])
    };
    assert_ne!(
        tokyo_day(&ids[3]).replace('-', ""),
        ::events::utc_stamp(evening)[..8]
    );
    let want = json!([tokyo_day(&ids[3]), "540"]);
    let expr = format!(
        "document.readyState === 'complete' && \
         [document.querySelector('a[href=\"/events/{}\"]').closest('section').dataset.day, \
          (document.cookie.match(/mecam_tz=(-?\\d+)/) || [])[1]]",
        ids[3]
    );
    poll(Duration::from_secs(30), "Tokyo's day headings", || {
        // An evaluation the reload cuts short is simply tried again.
        cdp.try_call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        )
        .is_ok_and(|r| r["result"]["value"] == want)
    });
    cdp.call("Emulation.setTimezoneOverride", json!({"timezoneId": ""}));

    // Without JavaScript the event page still shows the poster with its boxes, the downloads
    // and the MP4 form; the player's controls stay hidden.
    cdp.call(
        "Emulation.setScriptExecutionDisabled",
        json!({"value": true}),
    );
    let plain = format!("/events/{}", ids[2]);
    open(&mut cdp, &web, &plain, "!!document.getElementById('frame')");
    let shown = cdp.call(
        "Runtime.evaluate",
        json!({"expression": "[document.getElementById('frame').getAttribute('src'),             document.querySelectorAll('#boxes rect').length, document.getElementById('controls').hidden,             !!document.querySelector('a[href$=\"/clip.avi\"]'), !!document.getElementById('mp4form')]",
            "returnByValue": true}),
    );
    assert_eq!(
        shown["result"]["value"],
        json!([
            format!("/events/{}/poster.jpg", ids[2]),
            1,
            true,
            true,
            true
        ]),
        "{shown}"
    );
    screenshot(&mut cdp, "review-laptop-event-nojs");
    drop(cdp);
}
