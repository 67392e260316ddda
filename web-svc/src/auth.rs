//! Who may look: the admin password (an argon2 hash in a 0600 file in the state directory),
//! browser sessions (a bounded in-memory table of random tokens that expire), HTTP Basic for
//! API clients, and the login rate limiter (bounded per-address table plus an overall cap).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

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
/// Window of the login rate limiter.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

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

    /// The stored hash and the file's modification time, or `None` if there is no password
    /// file.
    ///
    /// # Errors
    /// The file exists but cannot be read, or holds no argon2id hash.
    pub fn load(&self) -> Result<Option<(String, SystemTime)>, PasswordFileError> {
        let path = self.path();
        let unreadable = |e: std::io::Error| PasswordFileError::Unreadable {
            path: path.clone(),
            dir: self.dir.clone(),
            reason: e.to_string(),
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        };
        let mtime = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(unreadable)?;
        let invalid = || PasswordFileError::Invalid {
            path: path.clone(),
            dir: self.dir.clone(),
        };
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let hash = text.trim();
        if !PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str() == "argon2id") {
            return Err(invalid());
        }
        Ok(Some((hash.to_owned(), mtime)))
    }

    /// The password file's modification time (a cheap `stat`), `None` without a password.
    pub fn mtime(&self) -> Option<SystemTime> {
        std::fs::metadata(self.path())
            .and_then(|m| m.modified())
            .ok()
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
    /// The password file's time when the sessions were made: a new password ends them all.
    password_stamp: Mutex<Option<SystemTime>>,
}

impl Sessions {
    /// A table of at most `max` sessions lasting `ttl` each.
    pub fn new(max: usize, ttl: Duration) -> Sessions {
        Sessions {
            max,
            ttl,
            table: Mutex::new(HashMap::with_capacity(max)),
            password_stamp: Mutex::new(None),
        }
    }

    /// Ends every session if the password changed since `stamp` was last seen (a
    /// `set-password` while running logs everyone out).
    pub fn password_is(&self, stamp: Option<SystemTime>) {
        let mut s = self.password_stamp.lock().expect("stamp lock");
        if *s != stamp {
            if s.is_some() {
                self.clear();
            }
            *s = stamp;
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

#[derive(Debug)]
struct Window {
    start: Instant,
    count: u32,
}

impl Window {
    fn current(&mut self, now: Instant) -> &mut u32 {
        if now.duration_since(self.start) >= RATE_WINDOW {
            self.start = now;
            self.count = 0;
        }
        &mut self.count
    }
}

/// Login rate limiter: failures per client address, and attempts overall, per minute.
#[derive(Debug)]
pub struct RateLimiter {
    per_client: u32,
    overall: u32,
    max_clients: usize,
    state: Mutex<(HashMap<IpAddr, Window>, Window)>,
}

impl RateLimiter {
    /// Allows `per_client` failures per address and `overall` attempts per minute, tracking at
    /// most `max_clients` addresses.
    pub fn new(per_client: u32, overall: u32, max_clients: usize) -> RateLimiter {
        RateLimiter {
            per_client,
            overall,
            max_clients,
            state: Mutex::new((
                HashMap::with_capacity(max_clients),
                Window {
                    start: Instant::now(),
                    count: 0,
                },
            )),
        }
    }

    /// Takes one attempt for `ip`; `Err(retry_after)` when it must be refused unchecked.
    ///
    /// # Errors
    /// The client or everyone is over the limit; the duration says when to try again.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut g = self.state.lock().expect("limiter lock");
        let (clients, overall) = &mut *g;
        if let Some(w) = clients.get_mut(&ip) {
            if *w.current(now) >= self.per_client {
                return Err(RATE_WINDOW.saturating_sub(now.duration_since(w.start)));
            }
        }
        let total = overall.current(now);
        if *total >= self.overall {
            return Err(RATE_WINDOW.saturating_sub(now.duration_since(overall.start)));
        }
        *total += 1;
        Ok(())
    }

    /// Records a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut g = self.state.lock().expect("limiter lock");
        let clients = &mut g.0;
        if !clients.contains_key(&ip) && clients.len() >= self.max_clients {
            clients.retain(|_, w| now.duration_since(w.start) < RATE_WINDOW);
            if clients.len() >= self.max_clients {
                let oldest = clients.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    clients.remove(&k);
                }
            }
        }
        let w = clients.entry(ip).or_insert(Window {
            start: now,
            count: 0,
        });
        *w.current(now) += 1;
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.state.lock().expect("limiter lock").0.len()
    }
}

/// Remembers the last verified Basic credential as a keyed hash (never the password), tied to
/// the password file's modification time, for [`BASIC_CACHE_TTL`].
#[derive(Debug)]
pub struct BasicCache {
    key: std::collections::hash_map::RandomState,
    last: Mutex<Option<(u64, SystemTime, Instant)>>,
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
    fn fingerprint(&self, password: &str) -> u64 {
        self.key.hash_one(password)
    }

    /// Whether `password` was verified recently against the file of `mtime`.
    pub fn hit(&self, password: &str, mtime: SystemTime) -> bool {
        let fp = self.fingerprint(password);
        self.last
            .lock()
            .expect("cache lock")
            .is_some_and(|(f, m, at)| f == fp && m == mtime && at.elapsed() < BASIC_CACHE_TTL)
    }

    /// Remembers a verified password.
    pub fn remember(&self, password: &str, mtime: SystemTime) {
        let fp = self.fingerprint(password);
        *self.last.lock().expect("cache lock") = Some((fp, mtime, Instant::now()));
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
        let (hash, _) = store.load().unwrap().unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify(&hash, "correct horse"));
        assert!(!verify(&hash, "correct horsf"));
        store.set("another one").unwrap();
        assert!(verify(&store.load().unwrap().unwrap().0, "another one"));
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

    #[test]
    fn limiter_blocks_a_client_and_everyone_and_stays_bounded() {
        let l = RateLimiter::new(3, 10, 4);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            l.attempt(a).unwrap();
            l.failed(a);
        }
        assert!(
            l.attempt(a).is_err(),
            "fourth failure in a minute is refused"
        );
        for i in 0..100u8 {
            let ip: IpAddr = [10, 0, 1, i].into();
            let _ = l.attempt(ip);
            l.failed(ip);
        }
        assert!(l.tracked() <= 4);
        assert!(
            l.attempt("10.9.9.9".parse().unwrap()).is_err(),
            "overall cap reached"
        );
    }
}
