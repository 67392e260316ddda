//! End to end in a real browser: headless Debian `chromium`, driven over the DevTools
//! protocol, sets the password through the first-visit form with the one-time setup code,
//! logs in through the login form and sees the live image change.

use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::harness::{Camera, Dirs, Web, make_frames, poll, print_setup_code};

const PW: &str = "browser test password";

pub(crate) fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| PathBuf::from(d).join(name))
            .find(|p| p.is_file())
    })
}

/// The browser process group; killed on drop.
pub(crate) struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

pub(crate) struct Cdp {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    pub(crate) fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// [`Cdp::call`], with DevTools' error as an `Err` (an evaluation cut by a page load).
    pub(crate) fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).unwrap();
        for _ in 0..10_000 {
            let m = self.ws.read().expect("DevTools answer");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
        panic!("no answer to {method}");
    }

    pub(crate) fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }
}

/// Starts headless `chromium` on a fresh profile and connects to its page over DevTools.
pub(crate) fn launch(chromium: PathBuf) -> (Browser, Cdp) {
    let profile = tempfile::Builder::new()
        .prefix("web-svc-chromium-")
        .tempdir()
        .unwrap();
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let browser = Browser {
        child,
        _profile: profile,
    };
    let port_file = browser._profile.path().join("DevToolsActivePort");
    let mut port = 0u16;
    poll(
        Duration::from_secs(60),
        "chromium's DevToolsActivePort",
        || {
            port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
                .unwrap_or(0);
            port != 0
        },
    );
    let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut ws_url = String::new();
    poll(Duration::from_secs(30), "a page target", || {
        let Ok(r) = mecam_system_tests::http::get(devtools, "/json/list", None) else {
            return false;
        };
        let list: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let page = list
            .as_array()
            .and_then(|a| a.iter().find(|t| t["type"] == "page").cloned());
        ws_url = page
            .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            .unwrap_or_default();
        !ws_url.is_empty()
    });
    let (ws, _) = tungstenite::connect(ws_url.as_str()).unwrap();
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    (browser, Cdp { ws, next_id: 0 })
}

/// `chromium`, or `None` after a loud skip line (under CI, a failure: CI installs it).
pub(crate) fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium missing: CI must install it"
        );
        eprintln!(
            "\n!!!!! SKIPPED {test}: chromium is not installed.\n\
             !!!!! Lead: add `apt-get install -y chromium` to .ci/run so this test runs.\n"
        );
    }
    found
}

const FRAME_HASH_JS: &str = "(() => { const i = document.getElementById('live');
  if (!i || !i.complete || !i.naturalWidth) return 'none';
  const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
  const x = c.getContext('2d'); x.drawImage(i, 0, 0);
  const d = x.getImageData(0, 0, c.width, c.height).data; let h = 0;
  for (let k = 0; k < d.length; k += 61) { h = (h * 31 + d[k]) | 0; }
  return c.width + 'x' + c.height + ':' + h; })()";

#[test]
fn a_real_browser_logs_in_and_sees_the_live_image_change() {
    let Some(chromium) = chromium_or_skip("a_real_browser_logs_in_and_sees_the_live_image_change")
    else {
        return;
    };
    let dirs = Dirs::new("");
    let frames = Arc::new(make_frames(6, 320, 240, 0));
    let _camera = Camera::start(&dirs.run(), frames, 320, 240, 10.0);
    let web = Web::start(&dirs);

    let (browser, mut cdp) = launch(chromium);

    // First visit: the setup form, which takes the one-time code printed at install.
    let code = print_setup_code(&dirs).1.expect("a setup code");
    cdp.call(
        "Page.navigate",
        json!({"url": format!("http://{}/", web.addr)}),
    );
    poll(Duration::from_secs(30), "the setup page", || {
        cdp.eval("document.readyState === 'complete' && location.pathname === '/setup' && !!document.getElementById('code')") == json!(true)
    });
    cdp.eval(&format!(
        "document.getElementById('code').value = {}; \
         document.querySelector('input[name=password]').value = {pw}; \
         document.querySelector('input[name=confirm]').value = {pw}; \
         document.querySelector('form').submit(); true",
        json!(code),
        pw = json!(PW)
    ));
    poll(Duration::from_secs(30), "the dashboard after setup", || {
        cdp.eval("location.pathname === '/' && !!document.getElementById('live')") == json!(true)
    });
    assert!(dirs.state().join("admin.argon2").exists());
    cdp.call("Network.clearBrowserCookies", json!({}));

    // Logged out, the dashboard sends the browser to the login form.
    cdp.call(
        "Page.navigate",
        json!({"url": format!("http://{}/", web.addr)}),
    );
    poll(Duration::from_secs(30), "the login page", || {
        cdp.eval("document.readyState === 'complete' && location.pathname === '/login' && !!document.getElementById('password')") == json!(true)
    });
    cdp.eval(&format!(
        "document.getElementById('password').value = {}; document.querySelector('form').submit(); true",
        json!(PW)
    ));
    poll(Duration::from_secs(30), "the dashboard", || {
        cdp.eval("location.pathname === '/' && !!document.getElementById('live')") == json!(true)
    });
    let first = {
        let mut v = String::new();
        poll(Duration::from_secs(30), "a live image", || {
            v = cdp
                .eval(FRAME_HASH_JS)
                .as_str()
                .unwrap_or("none")
                .to_owned();
            v != "none"
        });
        v
    };
    assert!(first.starts_with("320x240:"), "{first}");
    let start = Instant::now();
    poll(Duration::from_secs(30), "the live image to change", || {
        let now = cdp.eval(FRAME_HASH_JS);
        now.as_str().is_some_and(|s| s != "none" && s != first)
    });
    eprintln!(
        "live image changed {:?} after the first look",
        start.elapsed()
    );
    poll(Duration::from_secs(30), "the status line", || {
        cdp.eval("document.getElementById('cam').textContent") == json!("streaming")
    });
    // The logout form (a cookie-authenticated POST) passes the same-origin rule: the browser
    // sends its Origin.
    cdp.eval("document.querySelector('form[action=\"/logout\"]').submit(); true");
    poll(
        Duration::from_secs(30),
        "the login page after logout",
        || {
            cdp.eval("document.readyState === 'complete' && location.pathname === '/login'")
                == json!(true)
        },
    );
    cdp.call(
        "Page.navigate",
        json!({"url": format!("http://{}/", web.addr)}),
    );
    poll(Duration::from_secs(30), "the session to be over", || {
        cdp.eval("document.readyState === 'complete' && location.pathname === '/login'")
            == json!(true)
    });
    drop(browser);
}
