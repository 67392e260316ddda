//! Browser sessions: a bounded in-memory table of random tokens that expire, all ended by a
//! new password.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
