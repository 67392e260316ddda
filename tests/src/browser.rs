//! Headless Chromium driven over the DevTools protocol, for whole-system page tests: open a
//! page at a phone's or a laptop's size, evaluate JavaScript, wait for what a user would see,
//! and write screenshots.

use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::poll;

/// How long Chromium gets to start and a page to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The most DevTools messages read while waiting for one answer (events come in between).
pub const MAX_MESSAGES_PER_CALL: usize = 10_000;

/// A screen size to test at.
#[derive(Debug, Clone, Copy)]
pub struct Screen {
    /// For file names: `phone`, `laptop`.
    pub name: &'static str,
    /// CSS pixels.
    pub width: u32,
    /// CSS pixels.
    pub height: u32,
    /// A touch screen with a mobile viewport.
    pub mobile: bool,
}

/// A phone (iPhone 12 to 14 size).
pub const PHONE: Screen = Screen {
    name: "phone",
    width: 390,
    height: 844,
    mobile: true,
};
/// The most common laptop screen.
pub const LAPTOP: Screen = Screen {
    name: "laptop",
    width: 1366,
    height: 900,
    mobile: false,
};

/// The Chromium binary on `PATH` (Debian's `chromium`).
pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| PathBuf::from(d).join(name))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium with one page; its process group is killed on drop.
pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile, on loopback only.
    ///
    /// # Errors
    /// It would not start, or its DevTools endpoint did not answer within [`START_TIMEOUT`].
    pub fn start(chromium: &Path) -> anyhow::Result<Browser> {
        let profile = tempfile::Builder::new()
            .prefix("mecam-chromium-")
            .tempdir()?;
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
                "--hide-scrollbars",
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
            .context("starting chromium")?;
        // Killed on any error below.
        let guard = ChildGuard(Some(child));
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = poll::until("chromium's DevToolsActivePort", START_TIMEOUT, || {
            Ok(std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok())))
        })?;
        let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let ws_url: String = poll::until("a page target", START_TIMEOUT, || {
            let Ok(r) = crate::http::get(devtools, "/json/list", None) else {
                return Ok(None);
            };
            let list: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            Ok(list.as_array().and_then(|a| {
                a.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            }))
        })?;
        let (ws, _) = tungstenite::connect(ws_url.as_str()).context("DevTools websocket")?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
        }
        Ok(Browser {
            child: guard.take(),
            ws,
            next_id: 0,
            _profile: profile,
        })
    }

    /// Calls DevTools method `method`; its result.
    ///
    /// # Errors
    /// The browser answered with an error, or not at all.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg))?;
        for _ in 0..MAX_MESSAGES_PER_CALL {
            let Message::Text(t) = self.ws.read()? else {
                continue;
            };
            let v: Value = serde_json::from_str(&t)?;
            if v["id"] == id {
                anyhow::ensure!(v.get("error").is_none(), "{method}: {v}");
                return Ok(v["result"].clone());
            }
        }
        anyhow::bail!("no answer to {method}")
    }

    /// The value of the JavaScript expression `expr` in the page (`null` on an exception).
    ///
    /// # Errors
    /// See [`Browser::call`].
    pub fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        )?;
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expr` is `true` in the page, for at most `limit`.
    ///
    /// # Errors
    /// It was not, within `limit` (the error names `what`).
    pub fn wait_for(&mut self, what: &str, limit: Duration, expr: &str) -> anyhow::Result<()> {
        poll::until(what, limit, || {
            Ok((self.eval(expr).map_err(|e| e.to_string())? == json!(true)).then_some(()))
        })
    }

    /// Sets the page's size to `screen`.
    ///
    /// # Errors
    /// See [`Browser::call`].
    pub fn resize(&mut self, screen: Screen) -> anyhow::Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": screen.width, "height": screen.height,
                   "deviceScaleFactor": 1, "mobile": screen.mobile}),
        )?;
        Ok(())
    }

    /// Opens `url` and waits until the page has loaded.
    ///
    /// # Errors
    /// It did not load within [`START_TIMEOUT`].
    pub fn open(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({ "url": url }))?;
        self.wait_for(
            url,
            START_TIMEOUT,
            &format!(
                "document.readyState === 'complete' && location.href.startsWith({})",
                json!(url.split('?').next().unwrap_or(url))
            ),
        )
    }

    /// Writes what the screen shows (the visible part) as a PNG to `path`.
    ///
    /// # Errors
    /// The browser or the file system failed.
    pub fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("no screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

/// A child killed on drop unless taken.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn take(mut self) -> Child {
        self.0.take().expect("taken once")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let pgid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// Where the tests write screenshots: `target/screenshots` beside the binaries' profile
/// directory (`$MECAM_SCREENSHOT_DIR` when set).
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("MECAM_SCREENSHOT_DIR").map_or_else(
        || crate::bins::bin_dir().join("..").join("screenshots"),
        PathBuf::from,
    )
}
