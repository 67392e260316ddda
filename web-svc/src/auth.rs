//! Who may look: the admin password (an argon2 hash in a 0600 file in the state directory),
//! browser sessions (a bounded in-memory table of random tokens that expire), HTTP Basic for
//! API clients, the login rate limiter (per address or IPv6 /64, exponential backoff, in a
//! bounded table) and the global ceiling on password checks, which slows, never refuses, a
//! fresh address.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Params, Version};

/// The one user name.
pub const ADMIN_USER: &str = "admin";
/// File name of the hash inside the state directory.
pub const PASSWORD_FILE: &str = "admin.argon2";
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted (argon2 takes any length; this bounds the work per attempt).
pub const MAX_PASSWORD_LEN: usize = 256;
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "mecam_session";
/// How long a verified Basic credential is remembered, so Home Assistant polling a snapshot
/// does not cost an argon2 hash per request.
pub const BASIC_CACHE_TTL: Duration = Duration::from_secs(600);

/// Why a password could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("the password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters long")]
    BadLength,
    /// First-visit setup after a password exists.
    #[error("a password is already set; log in, or use `web-svc set-password` to change it")]
    AlreadySet,
    /// The state directory is not writable.
    #[error(
        "cannot write the password file in {dir}: {source}; check that the state directory exists and belongs to the service user"
    )]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// argon2 refused (should not happen with these parameters).
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// First-visit setup while a password file exists but cannot be used.
    #[error(transparent)]
    Broken(PasswordFileError),
}

/// Why an existing password file cannot be used. Never treated as "no password": that would
/// reopen first-visit setup to anyone on the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordFileError {
    /// The file exists but cannot be read (owner, mode, a directory in its place).
    #[error(
        "cannot read the password file {path}: {reason}; it must be a file the service user can read: set the password again as that user (`sudo -u mecam web-svc set-password --state-dir {dir}`) or give it to them (`chown mecam: {path}`)"
    )]
    Unreadable {
        /// The password file.
        path: PathBuf,
        /// The state directory.
        dir: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The file does not hold an argon2id hash (damaged or edited).
    #[error(
        "the password file {path} does not hold an argon2id hash (damaged?); set the password again (`sudo -u mecam web-svc set-password --state-dir {dir}`)"
    )]
    Invalid {
        /// The password file.
        path: PathBuf,
        /// The state directory.
        dir: PathBuf,
    },
}

/// argon2id memory in KiB: 7 MiB with 5 passes (an OWASP-recommended pair), about a quarter
/// second on a Pi Zero 2 W.
pub const ARGON2_M_KIB: u32 = 7 * 1024;
/// argon2id passes.
pub const ARGON2_T: u32 = 5;
/// Largest memory cost accepted from a hash file (a bigger one is refused, not allocated).
pub const ARGON2_MAX_M_KIB: u32 = 64 * 1024;
/// Hash output length in bytes.
const HASH_LEN: usize = 32;

/// The argon2 working memory, allocated once and reused: freeing and re-allocating several
/// MiB per login would leave the allocator holding it in per-thread arenas, and resident
/// memory would climb with every login thread.
static ARGON2_MEMORY: Mutex<Vec<argon2::Block>> = Mutex::new(Vec::new());

fn argon2_raw(
    m_kib: u32,
    t: u32,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    if m_kib > ARGON2_MAX_M_KIB {
        return Err(format!(
            "argon2 memory cost {m_kib} KiB is over the limit {ARGON2_MAX_M_KIB}"
        ));
    }
    let params = Params::new(m_kib, t, 1, Some(out.len())).map_err(|e| e.to_string())?;
    let mut mem = ARGON2_MEMORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if mem.len() < params.block_count() {
        mem.resize(params.block_count(), argon2::Block::default());
    }
    let blocks = params.block_count();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(password, salt, out, &mut mem[..blocks])
        .map_err(|e| e.to_string())
}

/// A PHC string (`$argon2id$v=19$m=..,t=..,p=1$salt$hash`) for `password`.
fn hash_phc(password: &str) -> Result<String, String> {
    use base64::Engine as _;
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; HASH_LEN];
    argon2_raw(ARGON2_M_KIB, ARGON2_T, password.as_bytes(), &salt, &mut out)?;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    Ok(format!(
        "$argon2id$v=19$m={ARGON2_M_KIB},t={ARGON2_T},p=1${}${}",
        b64.encode(salt),
        b64.encode(out)
    ))
}

/// Checks `password` against a PHC hash string. CPU-heavy: call from a blocking thread.
pub fn verify(hash: &str, password: &str) -> bool {
    use base64::Engine as _;
    if password.len() > MAX_PASSWORD_LEN * 4 {
        return false;
    }
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    if h.algorithm.as_str() != "argon2id" || params.p_cost() != 1 {
        return false;
    }
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(salt) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(salt.as_str()) else {
        return false;
    };
    let expected = expected.as_bytes();
    let mut out = vec![0u8; expected.len()];
    if argon2_raw(
        params.m_cost(),
        params.t_cost(),
        password.as_bytes(),
        &salt,
        &mut out,
    )
    .is_err()
    {
        return false;
    }
    // Constant-time comparison.
    out.iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The password file.
#[derive(Debug, Clone)]
pub struct PasswordStore {
    dir: PathBuf,
}

impl PasswordStore {
    /// The store in `state_dir`.
    pub fn new(state_dir: &Path) -> PasswordStore {
        PasswordStore {
            dir: state_dir.to_owned(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(PASSWORD_FILE)
    }

    /// The stored hash, or `None` if there is no password file.
    ///
    /// # Errors
    /// The file exists but cannot be read, or holds no argon2id hash.
    pub fn load(&self) -> Result<Option<String>, PasswordFileError> {
        let path = self.path();
        let unreadable = |e: std::io::Error| PasswordFileError::Unreadable {
            path: path.clone(),
            dir: self.dir.clone(),
            reason: e.to_string(),
        };
        // Read on every logged-in request: a FIFO or device in its place must not hang it
        // (opening a FIFO blocks), nor a huge file cost much.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(unreadable(std::io::Error::other("not a regular file")));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        }
        let mut bytes = Vec::new();
        match std::fs::File::open(&path)
            .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 4096), &mut bytes))
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        }
        let invalid = || PasswordFileError::Invalid {
            path: path.clone(),
            dir: self.dir.clone(),
        };
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let hash = text.trim();
        if !PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str() == "argon2id") {
            return Err(invalid());
        }
        Ok(Some(hash.to_owned()))
    }

    /// Stores `password`, replacing any old one (`set-password`).
    ///
    /// # Errors
    /// See [`PasswordError`].
    pub fn set(&self, password: &str) -> Result<(), PasswordError> {
        let tmp = self.write_tmp(password)?;
        std::fs::rename(&tmp, self.path()).map_err(|source| PasswordError::Io {
            dir: self.dir.clone(),
            source,
        })
    }

    /// Stores `password` only if none is set (first-visit setup); atomic against a race.
    ///
    /// # Errors
    /// [`PasswordError::AlreadySet`] if one is set, else see [`PasswordError`].
    pub fn set_if_absent(&self, password: &str) -> Result<(), PasswordError> {
        match self.load() {
            Ok(None) => {}
            Ok(Some(_)) => return Err(PasswordError::AlreadySet),
            Err(e) => return Err(PasswordError::Broken(e)),
        }
        let tmp = self.write_tmp(password)?;
        let linked = std::fs::hard_link(&tmp, self.path());
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(PasswordError::AlreadySet)
            }
            Err(source) => Err(PasswordError::Io {
                dir: self.dir.clone(),
                source,
            }),
        }
    }

    fn write_tmp(&self, password: &str) -> Result<PathBuf, PasswordError> {
        let len = password.chars().count();
        if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&len) {
            return Err(PasswordError::BadLength);
        }
        let hash = hash_phc(password).map_err(PasswordError::Hash)?;
        let io = |source| PasswordError::Io {
            dir: self.dir.clone(),
            source,
        };
        let tmp = self
            .dir
            .join(format!("{PASSWORD_FILE}.{}.tmp", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        // Run as root (`sudo web-svc set-password`), the file would be root's and the
        // service could not read it: give it to the owner of the state directory.
        if let (Ok(dm), Ok(fm)) = (std::fs::metadata(&self.dir), f.metadata()) {
            if (fm.uid(), fm.gid()) != (dm.uid(), dm.gid()) {
                std::os::unix::fs::fchown(&f, Some(dm.uid()), Some(dm.gid())).map_err(io)?;
            }
        }
        writeln!(f, "{hash}").map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(tmp)
    }
}

/// Browser sessions: random tokens with an expiry, at most `max` at once.
#[derive(Debug)]
pub struct Sessions {
    max: usize,
    ttl: Duration,
    table: Mutex<HashMap<String, Instant>>,
    /// The password hash the sessions were made under: a new password ends them all.
    password: Mutex<Option<String>>,
}

impl Sessions {
    /// A table of at most `max` sessions lasting `ttl` each.
    pub fn new(max: usize, ttl: Duration) -> Sessions {
        Sessions {
            max,
            ttl,
            table: Mutex::new(HashMap::with_capacity(max)),
            password: Mutex::new(None),
        }
    }

    /// Ends every session if the password hash changed since it was last seen (a
    /// `set-password` while running logs everyone out, whatever the file's time says).
    /// `None`: no usable password.
    pub fn password_is(&self, hash: Option<&str>) {
        let mut s = self.password.lock().expect("password lock");
        if s.as_deref() != hash {
            if s.is_some() {
                self.clear();
            }
            *s = hash.map(str::to_owned);
        }
    }

    /// Starts a session and returns its token. Past the bound the oldest session ends.
    pub fn create(&self) -> String {
        let token: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let now = Instant::now();
        let mut t = self.table.lock().expect("sessions lock");
        t.retain(|_, exp| *exp > now);
        while t.len() >= self.max {
            let oldest = t
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => t.remove(&k),
                None => break,
            };
        }
        t.insert(token.clone(), now + self.ttl);
        token
    }

    /// Whether `token` is a live session.
    pub fn check(&self, token: &str) -> bool {
        let mut t = self.table.lock().expect("sessions lock");
        match t.get(token) {
            Some(exp) if *exp > Instant::now() => true,
            Some(_) => {
                t.remove(token);
                false
            }
            None => false,
        }
    }

    /// Ends the session `token` (logout).
    pub fn end(&self, token: &str) {
        self.table.lock().expect("sessions lock").remove(token);
    }

    /// Ends every session (the password changed).
    pub fn clear(&self) {
        self.table.lock().expect("sessions lock").clear();
    }

    /// Sessions in the table.
    pub fn len(&self) -> usize {
        self.table.lock().expect("sessions lock").len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Who a login attempt counts against: an IPv4 address, or an IPv6 /64 (one home network, or
/// one host's many privacy addresses, which it can change at will). An IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`, from a dual-stack listener) is its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 /64: the address with its low 64 bits cleared.
    V6Net(Ipv6Addr),
}

impl ClientKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(a) => ClientKey::V4(a),
            IpAddr::V6(a) => {
                ClientKey::V6Net(Ipv6Addr::from(u128::from(a) & !u128::from(u64::MAX)))
            }
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::V4(a) => write!(f, "{a}"),
            ClientKey::V6Net(a) => write!(f, "{a}/64"),
        }
    }
}

/// An address that has not failed for this long starts afresh (its failures are forgotten).
pub const FORGET_FAILURES_AFTER: Duration = Duration::from_secs(24 * 3600);
/// What a client is told to wait when it already has as many checks under way as it may.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The login limiter's settings (from `[web]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoginPolicy {
    /// Wrong passwords an address may try before it has to wait.
    pub free_failures: u32,
    /// The first wait after those; it doubles with each further failure.
    pub backoff_first: Duration,
    /// The longest wait.
    pub backoff_max: Duration,
    /// Addresses remembered; past it the stalest entry is forgotten.
    pub max_clients: usize,
    /// Failures a minute (all addresses together) past which checks for addresses that
    /// already failed are spaced out to this many a minute.
    pub slow_after_per_min: u32,
}

impl LoginPolicy {
    /// How long an address with `failures` failures waits after its last one.
    pub fn backoff(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.free_failures)?;
        let factor = 1u32 << over.min(24);
        Some(
            self.backoff_first
                .saturating_mul(factor)
                .min(self.backoff_max),
        )
    }

    /// The spacing of checks for addresses that already failed while the global ceiling is
    /// reached.
    pub fn slow_spacing(&self) -> Duration {
        Duration::from_secs(60) / self.slow_after_per_min.max(1)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// Checks admitted and not yet decided.
    pending: u32,
    last_failure: Option<Instant>,
    last_seen: Instant,
}

#[derive(Debug)]
struct LimiterState {
    clients: HashMap<ClientKey, Entry>,
    /// A leaky bucket of failures, all addresses together: +1 per failure, draining at
    /// `slow_after_per_min` a minute; the global slowing is on while it holds that many.
    level: f64,
    level_at: Instant,
    evictions: u64,
}

/// Which queue an admitted check waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// An address with no failure and nothing under way: checked as soon as a hash is free,
    /// never slowed by what other addresses do.
    Fresh,
    /// An address that failed before, or has a check under way: one such check at a time,
    /// spaced out while the global ceiling is reached.
    Suspect,
}

/// Login rate limiter: per client address (per /64 for IPv6) a few free failures, then an
/// exponential backoff, in a table of at most `max_clients` addresses; and a global ceiling
/// on failures that slows checks for addresses that already failed, never refusing an
/// address that did not.
///
/// It answers before anything looks at the password (no cache), so a limited client
/// learns nothing about its guess.
#[derive(Debug)]
pub struct RateLimiter {
    policy: LoginPolicy,
    state: Mutex<LimiterState>,
}

impl RateLimiter {
    /// A limiter with `policy`.
    pub fn new(policy: LoginPolicy) -> RateLimiter {
        RateLimiter {
            policy,
            state: Mutex::new(LimiterState {
                clients: HashMap::with_capacity(policy.max_clients),
                level: 0.0,
                level_at: Instant::now(),
                evictions: 0,
            }),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &LoginPolicy {
        &self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        // Every update below leaves the table consistent at each step.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits one check for `ip` now; see [`RateLimiter::admit_at`].
    ///
    /// # Errors
    /// The address must wait (how long).
    pub fn admit(&self, ip: IpAddr) -> Result<Attempt<'_>, Duration> {
        self.admit_at(ip, Instant::now())
    }

    /// Admits one check for `ip` at `now`, in a [`Lane`]; the returned [`Attempt`] must be
    /// told the outcome (dropped undecided, it only frees its place).
    ///
    /// # Errors
    /// The address is in its backoff, or already has as many checks under way as it may
    /// fail: it must wait this long, and nothing looks at its password.
    pub fn admit_at(&self, ip: IpAddr, now: Instant) -> Result<Attempt<'_>, Duration> {
        let key = ClientKey::of(ip);
        let mut st = self.lock();
        if st.clients.get(&key).is_some_and(|e| {
            e.pending == 0
                && e.last_failure
                    .is_some_and(|t| now.saturating_duration_since(t) >= FORGET_FAILURES_AFTER)
        }) {
            st.clients.remove(&key);
        }
        if !st.clients.contains_key(&key) {
            Self::make_room(&mut st, self.policy.max_clients);
        }
        let e = st.clients.entry(key).or_insert(Entry {
            failures: 0,
            pending: 0,
            last_failure: None,
            last_seen: now,
        });
        e.last_seen = now;
        if let (Some(last), Some(wait)) = (e.last_failure, self.policy.backoff(e.failures)) {
            let until = last + wait;
            if now < until {
                return Err(until - now);
            }
        }
        let allowance = self.policy.free_failures.saturating_sub(e.failures).max(1);
        if e.pending >= allowance {
            return Err(BUSY_RETRY);
        }
        let lane = if e.failures == 0 && e.pending == 0 {
            Lane::Fresh
        } else {
            Lane::Suspect
        };
        e.pending += 1;
        Ok(Attempt {
            limiter: self,
            key,
            lane,
            decided: false,
            hashing: false,
        })
    }

    /// Forgets the stalest address when the table is full.
    fn make_room(st: &mut LimiterState, max: usize) {
        while st.clients.len() >= max.max(1) {
            let stalest = st
                .clients
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| *k);
            match stalest {
                Some(k) => {
                    st.clients.remove(&k);
                    st.evictions += 1;
                }
                None => break,
            }
        }
    }

    fn decide(&self, key: ClientKey, failed_at: Option<Instant>) {
        let mut st = self.lock();
        let Some(now) = failed_at else {
            // A right password: the address starts afresh.
            st.clients.remove(&key);
            return;
        };
        let per_sec = f64::from(self.policy.slow_after_per_min) / 60.0;
        let drained = now.saturating_duration_since(st.level_at).as_secs_f64() * per_sec;
        st.level = (st.level - drained).max(0.0) + 1.0;
        st.level_at = now;
        if !st.clients.contains_key(&key) {
            // Forgotten while its check ran (the table was full): it is remembered again.
            Self::make_room(&mut st, self.policy.max_clients);
        }
        let e = st.clients.entry(key).or_insert(Entry {
            failures: 0,
            pending: 1,
            last_failure: None,
            last_seen: now,
        });
        e.failures = e.failures.saturating_add(1);
        e.pending = e.pending.saturating_sub(1);
        e.last_failure = Some(now);
        e.last_seen = now;
    }

    fn abandon(&self, key: ClientKey) {
        let mut st = self.lock();
        if let Some(e) = st.clients.get_mut(&key) {
            e.pending = e.pending.saturating_sub(1);
            if e.pending == 0 && e.failures == 0 {
                st.clients.remove(&key);
            }
        }
    }

    /// Whether the global ceiling is reached at `now`: failures (all addresses together)
    /// came faster than `slow_after_per_min` for long enough.
    pub fn slowing_at(&self, now: Instant) -> bool {
        let st = self.lock();
        let per_sec = f64::from(self.policy.slow_after_per_min) / 60.0;
        let drained = now.saturating_duration_since(st.level_at).as_secs_f64() * per_sec;
        st.level - drained >= f64::from(self.policy.slow_after_per_min)
    }

    /// Whether the global ceiling is reached now.
    pub fn slowing(&self) -> bool {
        self.slowing_at(Instant::now())
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().clients.len()
    }

    /// Addresses forgotten because the table was full, ever.
    pub fn evictions(&self) -> u64 {
        self.lock().evictions
    }
}

/// One admitted check: tell it the outcome with [`Attempt::succeeded`] or
/// [`Attempt::failed`]. Dropped undecided (the client hung up) it frees its place and counts
/// nothing if no hash had started, and counts as a failure if one had: hanging up mid-check
/// must not be a way to have passwords hashed without failures counted.
#[derive(Debug)]
#[must_use = "an attempt is decided, or dropped to free its place"]
pub struct Attempt<'a> {
    limiter: &'a RateLimiter,
    key: ClientKey,
    lane: Lane,
    decided: bool,
    hashing: bool,
}

impl Attempt<'_> {
    /// The queue this check waits in.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// The client's key (for the log).
    pub fn key(&self) -> ClientKey {
        self.key
    }

    /// A hash of the password starts: from now on, dropped undecided counts as a failure.
    pub fn hashing(&mut self) {
        self.hashing = true;
    }

    /// The password was right: the address starts afresh.
    pub fn succeeded(mut self) {
        self.decided = true;
        self.limiter.decide(self.key, None);
    }

    /// The password was wrong (at `now`).
    pub fn failed_at(mut self, now: Instant) {
        self.decided = true;
        self.limiter.decide(self.key, Some(now));
    }

    /// The password was wrong.
    pub fn failed(self) {
        self.failed_at(Instant::now());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        match (self.decided, self.hashing) {
            (true, _) => {}
            (false, true) => self.limiter.decide(self.key, Some(Instant::now())),
            (false, false) => self.limiter.abandon(self.key),
        }
    }
}

/// Password hashes computed at once (the argon2 work area is one, reused).
pub const MAX_CONCURRENT_CHECKS: usize = 1;
/// Longest a check for an address that already failed waits for its turn (less if a quarter
/// of the request timeout is less, so the answer comes well within it); then it is answered
/// "too many attempts" without a check.
pub const SUSPECT_WAIT_MAX: Duration = Duration::from_secs(5);

/// The global ceiling on password checks: at most [`MAX_CONCURRENT_CHECKS`] hashes at once
/// (others wait in turn), and checks for addresses that already failed go one at a time,
/// spaced [`LoginPolicy::slow_spacing`] apart while the limiter says the ceiling is
/// reached. A fresh address only ever waits for the hash in progress and other fresh ones.
#[derive(Debug)]
pub struct Checker {
    hashes: std::sync::Arc<tokio::sync::Semaphore>,
    /// When the next check of the suspect lane may start; the lock is the lane (tokio's
    /// mutex is fair: first come, first served).
    suspects: tokio::sync::Mutex<tokio::time::Instant>,
    checks: std::sync::atomic::AtomicU64,
    suspect_wait: Duration,
}

impl Checker {
    /// A checker whose suspects wait at most `suspect_wait` (and never more than
    /// [`SUSPECT_WAIT_MAX`]) for their turn: less than the request timeout, so a slowed
    /// client gets "too many attempts", not a timeout.
    pub fn new(suspect_wait: Duration) -> Checker {
        Checker {
            hashes: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CHECKS)),
            suspects: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            checks: std::sync::atomic::AtomicU64::new(0),
            suspect_wait: suspect_wait.min(SUSPECT_WAIT_MAX),
        }
    }

    /// Checks `password` against `hash` for `attempt` (in its lane) and tells it the
    /// outcome. `None`: a suspect waited its longest without its turn, so nothing was
    /// checked.
    pub async fn check(
        &self,
        limiter: &RateLimiter,
        mut attempt: Attempt<'_>,
        hash: &str,
        password: &str,
    ) -> Option<bool> {
        let ok = match attempt.lane() {
            Lane::Fresh => {
                let permit = self.hashes.clone().acquire_owned().await.ok()?;
                attempt.hashing();
                self.hash(permit, hash, password).await
            }
            Lane::Suspect => {
                let (mut next, permit) = tokio::time::timeout(self.suspect_wait, async {
                    let next = self.suspects.lock().await;
                    tokio::time::sleep_until(*next).await;
                    let permit = self.hashes.clone().acquire_owned().await;
                    (next, permit)
                })
                .await
                .ok()?;
                attempt.hashing();
                let ok = self.hash(permit.ok()?, hash, password).await;
                let now = tokio::time::Instant::now();
                *next = if !ok && limiter.slowing() {
                    now + limiter.policy().slow_spacing()
                } else {
                    now
                };
                ok
            }
        };
        if ok {
            attempt.succeeded();
        } else {
            attempt.failed();
        }
        Some(ok)
    }

    /// One argon2 check on a blocking thread. The permit goes with the hash, so a client
    /// that hangs up mid-check frees nothing before the hash is done.
    async fn hash(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        hash: &str,
        password: &str,
    ) -> bool {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (hash, password) = (hash.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify(&hash, &password)
        })
        .await
        .unwrap_or(false)
    }

    /// Password hashes computed, ever.
    pub fn checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Remembers the last verified Basic credential as a keyed hash (never the password), tied to
/// the password hash it was verified against, for [`BASIC_CACHE_TTL`]. Asked only after the
/// limiter admitted the client.
#[derive(Debug)]
pub struct BasicCache {
    key: std::collections::hash_map::RandomState,
    last: Mutex<Option<(u64, Instant)>>,
}

impl Default for BasicCache {
    fn default() -> Self {
        BasicCache {
            key: std::collections::hash_map::RandomState::new(),
            last: Mutex::new(None),
        }
    }
}

impl BasicCache {
    fn fingerprint(&self, password: &str, hash: &str) -> u64 {
        self.key.hash_one((password, hash))
    }

    /// Whether `password` was verified recently against `hash`.
    pub fn hit(&self, password: &str, hash: &str) -> bool {
        let fp = self.fingerprint(password, hash);
        self.last
            .lock()
            .expect("cache lock")
            .is_some_and(|(f, at)| f == fp && at.elapsed() < BASIC_CACHE_TTL)
    }

    /// Remembers `password`, verified against `hash`.
    pub fn remember(&self, password: &str, hash: &str) {
        let fp = self.fingerprint(password, hash);
        *self.last.lock().expect("cache lock") = Some((fp, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_is_private_and_first_setup_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = PasswordStore::new(dir.path());
        assert_eq!(store.load(), Ok(None));
        assert!(matches!(
            store.set_if_absent("short"),
            Err(PasswordError::BadLength)
        ));
        store.set_if_absent("correct horse").unwrap();
        let meta = std::fs::metadata(dir.path().join(PASSWORD_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(matches!(
            store.set_if_absent("another one"),
            Err(PasswordError::AlreadySet)
        ));
        let hash = store.load().unwrap().unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify(&hash, "correct horse"));
        assert!(!verify(&hash, "correct horsf"));
        store.set("another one").unwrap();
        assert!(verify(&store.load().unwrap().unwrap(), "another one"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn an_unusable_password_file_is_an_error_never_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = PasswordStore::new(dir.path());
        let file = dir.path().join(PASSWORD_FILE);
        // A FIFO in its place is refused without opening it (opening would block).
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = store.load().unwrap_err();
        assert!(matches!(e, PasswordFileError::Unreadable { .. }), "{e}");
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let e = store.load().unwrap_err();
        assert!(matches!(e, PasswordFileError::Unreadable { .. }), "{e}");
        assert!(
            e.to_string().contains("sudo -u mecam web-svc set-password"),
            "{e}"
        );
        assert!(matches!(
            store.set_if_absent("correct horse"),
            Err(PasswordError::Broken(_))
        ));
        std::fs::remove_dir(&file).unwrap();
        for bad in [
            &b"\xff\xfe\n"[..],
            b"",
            b"not a hash\n",
            b"$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = store.load().unwrap_err();
            assert!(
                matches!(e, PasswordFileError::Invalid { .. }),
                "{bad:?}: {e}"
            );
            assert!(matches!(
                store.set_if_absent("correct horse"),
                Err(PasswordError::Broken(_))
            ));
            assert_eq!(
                std::fs::read(&file).unwrap(),
                bad,
                "the file was left alone"
            );
        }
    }

    #[test]
    fn set_password_as_root_gives_the_file_to_the_state_directory_owner() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: set-password cannot change an owner; nothing to check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // `nobody`, standing in for the service user that owns the state directory.
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        PasswordStore::new(dir.path()).set("correct horse").unwrap();
        let meta = std::fs::metadata(dir.path().join(PASSWORD_FILE)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn sessions_are_bounded_expire_and_end() {
        let s = Sessions::new(3, Duration::from_secs(60));
        let first = s.create();
        let rest: Vec<_> = (0..5).map(|_| s.create()).collect();
        assert_eq!(s.len(), 3);
        assert!(!s.check(&first), "the oldest session gave way");
        assert!(s.check(&rest[4]));
        s.end(&rest[4]);
        assert!(!s.check(&rest[4]));
        let short = Sessions::new(3, Duration::ZERO);
        let t = short.create();
        assert!(!short.check(&t));
    }

    fn policy() -> LoginPolicy {
        LoginPolicy {
            free_failures: 3,
            backoff_first: Duration::from_secs(30),
            backoff_max: Duration::from_secs(900),
            max_clients: 4,
            slow_after_per_min: 10,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv6_64_is_one_client_and_mapped_ipv4_is_ipv4() {
        let a = ClientKey::of(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        assert_eq!(a, ClientKey::of(ip("2001:db8:1:2::1")));
        assert_eq!(a, ClientKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(a, ClientKey::of(ip("2001:db8:1:3::1")));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.7")),
            ClientKey::of(ip("192.0.2.7"))
        );
        assert_ne!(
            ClientKey::of(ip("192.0.2.7")),
            ClientKey::of(ip("192.0.2.8"))
        );
        // And the limiter counts a /64 as one client: failures from many of its addresses
        // add up.
        let l = RateLimiter::new(policy());
        let t0 = Instant::now();
        for i in 0..3 {
            l.admit_at(ip(&format!("2001:db8:1:2::{i}")), t0)
                .unwrap()
                .failed_at(t0);
        }
        assert!(l.admit_at(ip("2001:db8:1:2:dead::beef"), t0).is_err());
        assert!(l.admit_at(ip("2001:db8:1:3::1"), t0).is_ok());
    }

    #[test]
    fn an_address_waits_longer_after_each_failure_past_the_free_ones() {
        let l = RateLimiter::new(policy());
        let a = ip("10.0.0.1");
        let mut now = Instant::now();
        for _ in 0..3 {
            l.admit_at(a, now).unwrap().failed_at(now);
        }
        let mut waits = Vec::new();
        for _ in 0..8 {
            let wait = l
                .admit_at(a, now)
                .expect_err("limited after the free failures");
            waits.push(wait.as_secs());
            // Just before the end of the wait: still limited; at its end: one more check.
            assert!(
                l.admit_at(a, now + wait - Duration::from_millis(1))
                    .is_err()
            );
            now += wait;
            l.admit_at(a, now).unwrap().failed_at(now);
        }
        assert_eq!(waits, [30, 60, 120, 240, 480, 900, 900, 900]);
        // Another address is not affected; a right password starts the address afresh.
        assert!(l.admit_at(ip("10.0.0.2"), now).is_ok());
        now += Duration::from_secs(900);
        l.admit_at(a, now).unwrap().succeeded();
        for _ in 0..3 {
            l.admit_at(a, now).unwrap().failed_at(now);
        }
        assert_eq!(l.admit_at(a, now).unwrap_err(), Duration::from_secs(30));
        // A day without failing forgets them.
        assert!(l.admit_at(a, now + FORGET_FAILURES_AFTER).is_ok());
    }

    #[test]
    fn checks_under_way_count_against_the_allowance_and_a_dropped_one_frees_its_place() {
        let l = RateLimiter::new(policy());
        let a = ip("10.0.0.1");
        let now = Instant::now();
        let first = l.admit_at(a, now).unwrap();
        assert_eq!(first.lane(), Lane::Fresh);
        let second = l.admit_at(a, now).unwrap();
        assert_eq!(second.lane(), Lane::Suspect, "one under way already");
        let third = l.admit_at(a, now).unwrap();
        // Three free failures: a fourth at once could be a fourth failure.
        assert_eq!(l.admit_at(a, now).unwrap_err(), BUSY_RETRY);
        drop(third);
        let third = l.admit_at(a, now).unwrap();
        first.failed_at(now);
        second.failed_at(now);
        third.failed_at(now);
        assert!(l.admit_at(a, now).is_err(), "three failures: backoff");
        // An address that only ever hung up before its check leaves nothing behind.
        drop(l.admit_at(ip("10.0.0.9"), now).unwrap());
        assert_eq!(l.tracked(), 1);
        // Hanging up once the hash started counts as a failure.
        let b = ip("10.0.0.10");
        for _ in 0..3 {
            l.admit_at(b, now).unwrap().hashing();
        }
        assert!(l.admit_at(b, now).is_err(), "three hung-up checks: backoff");
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_stalest_address() {
        let l = RateLimiter::new(policy());
        let t0 = Instant::now();
        let limited = ip("10.0.0.1");
        for _ in 0..3 {
            l.admit_at(limited, t0).unwrap().failed_at(t0);
        }
        for i in 0..100u32 {
            let at = t0 + Duration::from_millis(u64::from(i) + 1);
            // The limited address keeps coming back, so it is never the stalest.
            assert!(l.admit_at(limited, at).is_err(), "{i}");
            let other = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            l.admit_at(other, at).unwrap().failed_at(at);
            assert!(l.tracked() <= 4, "{} tracked", l.tracked());
        }
        assert_eq!(l.tracked(), 4);
        assert!(l.evictions() >= 96);
        assert!(
            l.admit_at(limited, t0 + Duration::from_secs(1)).is_err(),
            "the address seen last was kept"
        );
    }

    #[test]
    fn the_global_ceiling_turns_on_past_its_rate_and_drains() {
        let l = RateLimiter::new(policy());
        let t0 = Instant::now();
        for i in 0..9u8 {
            l.admit_at(IpAddr::from([10, 2, 0, i]), t0)
                .unwrap()
                .failed_at(t0);
        }
        assert!(!l.slowing_at(t0), "nine failures, ceiling ten a minute");
        l.admit_at(ip("10.2.1.1"), t0).unwrap().failed_at(t0);
        assert!(l.slowing_at(t0), "ten failures at once");
        assert!(
            !l.slowing_at(t0 + Duration::from_secs(1)),
            "it drains at ten a minute"
        );
        assert_eq!(policy().slow_spacing(), Duration::from_secs(6));
        // A new address is admitted, in the fresh lane, while the ceiling is reached.
        let fresh = l.admit_at(ip("192.168.1.10"), t0).unwrap();
        assert_eq!(fresh.lane(), Lane::Fresh);
    }

    #[test]
    fn the_basic_cache_is_keyed_on_the_hash_too() {
        let c = BasicCache::default();
        c.remember("pw", "$argon2id$one");
        assert!(c.hit("pw", "$argon2id$one"));
        assert!(!c.hit("pw", "$argon2id$two"), "another hash, same password");
        assert!(!c.hit("pw2", "$argon2id$one"));
    }

    #[test]
    fn sessions_end_when_the_hash_changes_whatever_the_file_time() {
        let s = Sessions::new(3, Duration::from_secs(60));
        s.password_is(Some("$argon2id$one"));
        let t = s.create();
        s.password_is(Some("$argon2id$one"));
        assert!(s.check(&t));
        s.password_is(Some("$argon2id$two"));
        assert!(!s.check(&t));
        let t = s.create();
        s.password_is(None);
        assert!(!s.check(&t), "no usable password: every session ends");
    }
}
