//! The password checks behind the limiter: one argon2 hash at a time, the lane of addresses
//! that already failed spaced out, and the last Basic credential remembered so polling costs
//! no hash per request.

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::limiter::{Attempt, Lane, RateLimiter};
use super::password::verify;

use super::BASIC_CACHE_TTL;

/// Password hashes computed at once (the argon2 work area is one, reused).
pub const MAX_CONCURRENT_CHECKS: usize = 1;
/// Longest a check for an address that already failed waits for its turn (less if a quarter
/// of the request timeout is less, so the answer comes well within it); then it is answered
/// "too many attempts" without a check.
pub const SUSPECT_WAIT_MAX: Duration = Duration::from_secs(5);

/// The global ceiling on password checks: at most [`MAX_CONCURRENT_CHECKS`] hashes at once
/// (others wait in turn), and checks for addresses that already failed go one at a time,
/// spaced [`LoginPolicy::slow_spacing`](super::LoginPolicy::slow_spacing) apart while the limiter says the ceiling is
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
    fn the_basic_cache_is_keyed_on_the_hash_too() {
        let c = BasicCache::default();
        c.remember("pw", "$argon2id$one");
        assert!(c.hit("pw", "$argon2id$one"));
        assert!(!c.hit("pw", "$argon2id$two"), "another hash, same password");
        assert!(!c.hit("pw2", "$argon2id$one"));
    }
}
