//! The login limiter: per address or IPv6 /64, a few free failures then exponential backoff,
//! in a bounded table; and the global ceiling that slows addresses that already failed while
//! failures come too fast, never a fresh one.

use std::collections::HashMap;
use std::net::IpAddr;

use super::client::ClientKey;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
