//! Waiting by polling with a deadline: never by sleeping a guessed time, never for ever.

use std::time::{Duration, Instant};

/// How often [`until`] re-checks.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// Poll `check` every [`INTERVAL`] until it returns `Some`, or fail after `timeout` with
/// `what` in the message.
///
/// # Errors
/// The deadline passed; the error carries the last reason `check` gave, if any.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>, String>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        std::thread::sleep(INTERVAL);
    }
}

/// [`until`] for a condition without a value.
///
/// # Errors
/// The deadline passed.
pub fn until_true(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    until(what, timeout, || Ok(check().then_some(())))
}

/// [`until_true`] for a test body: panics with the timeout's message.
///
/// # Panics
/// The deadline passed.
pub fn wait(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    if let Err(e) = until_true(what, timeout, check) {
        panic!("{e}");
    }
}
