//! Who may look: the admin password (an argon2 hash in a 0600 file in the state directory),
//! browser sessions (a bounded in-memory table of random tokens that expire), HTTP Basic for
//! API clients, the login rate limiter (per address or IPv6 /64, exponential backoff, in a
//! bounded table) and the global ceiling on password checks, which slows, never refuses, a
//! fresh address. Until a password is set, the first-visit form asks for a one-time setup
//! code kept beside it.

mod checker;
mod client;
mod limiter;
mod password;
mod sessions;
mod setup_code;

use std::time::Duration;

pub use checker::{BasicCache, Checker, MAX_CONCURRENT_CHECKS, SUSPECT_WAIT_MAX};
pub use client::ClientKey;
pub use limiter::{Attempt, BUSY_RETRY, FORGET_FAILURES_AFTER, Lane, LoginPolicy, RateLimiter};
pub use password::{
    ARGON2_M_KIB, ARGON2_MAX_M_KIB, ARGON2_T, PasswordError, PasswordFileError, PasswordStore,
    hash_phc, verify,
};
pub use sessions::Sessions;
pub use setup_code::{SETUP_CODE_LEN, SetupCode, SetupCodeError, codes_match};

/// The one user name.
pub const ADMIN_USER: &str = "admin";
/// File name of the hash inside the state directory.
pub const PASSWORD_FILE: &str = "admin.argon2";
/// File name of the one-time setup code inside the state directory.
pub const SETUP_CODE_FILE: &str = "setup-code";
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted (argon2 takes any length; this bounds the work per attempt).
pub const MAX_PASSWORD_LEN: usize = 256;
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "mecam_session";
/// How long a verified Basic credential is remembered, so Home Assistant polling a snapshot
/// does not cost an argon2 hash per request.
pub const BASIC_CACHE_TTL: Duration = Duration::from_secs(600);
