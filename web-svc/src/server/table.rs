//! The connection table: who is connected from which client address, which connections wait
//! on their client, and whom a newcomer evicts or is refused for.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{Limits, MAX_CLOSING};
use crate::fanout::Hub;

/// The address a per-client bound counts by: an IPv4 address (also when written as an
/// IPv4-mapped IPv6 one), or the /64 of an IPv6 one (one host usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

pub(super) fn now_ms() -> u64 {
    ipc::service::monotonic_ns() / 1_000_000
}

/// One connection's record in the table, shared with its task and its requests.
#[derive(Debug)]
pub(super) struct Slot {
    /// Requests being served (head read, answer not yet fully sent); idle at 0.
    in_flight: AtomicUsize,
    /// Monotonic ms since which it has been idle (its accept, or its last answer's end).
    idle_since_ms: AtomicU64,
    /// Monotonic ms since which its request's handler has been waiting for more of the body
    /// from the client; [`NOT_WAITING`] while it is not.
    pub(super) body_wait_since_ms: AtomicU64,
    /// Told when the connection is evicted: its task closes it.
    pub(super) evict: Notify,
}

pub(super) const NOT_WAITING: u64 = u64::MAX;

impl Slot {
    /// Whether the client owes the next move: no request being served (a head to come), or
    /// a request whose body the handler is waiting for. Since when, if so.
    fn waiting_on_client_since(&self) -> Option<u64> {
        // Relaxed: see `Busy::drop`.
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            return Some(self.idle_since_ms.load(Ordering::Relaxed));
        }
        let since = self.body_wait_since_ms.load(Ordering::Relaxed);
        (since != NOT_WAITING).then_some(since)
    }
}

/// Marks its connection busy while a request is served: from its head until its answer's
/// body is dropped (sent in full, or the connection ended).
#[derive(Debug)]
pub(super) struct Busy(Arc<Slot>);

impl Busy {
    pub(super) fn start(slot: &Arc<Slot>) -> Busy {
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(slot.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Relaxed: the idle state is a hint for choosing whom to evict, read under the table
        // lock; a request that starts just as its connection is evicted is closed with it.
        self.0.idle_since_ms.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Entry {
    peer: SocketAddr,
    key: IpAddr,
    slot: Arc<Slot>,
    /// Evicted and closing: no longer counted against either bound.
    evicted: bool,
}

/// The open connections: at most `max_connections` counted ones plus [`MAX_CLOSING`]
/// evicted ones closing; `per_client` has one entry per client address with a counted one.
#[derive(Debug, Default)]
pub(super) struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_client: HashMap<IpAddr, usize>,
    counted: usize,
    pub(super) closing: usize,
}

impl Table {
    /// The counted connection to evict, among those waiting on their client (see
    /// `Slot::waiting_on_client_since`: a head or a body to come): of `key` if given, the one
    /// waiting longest; otherwise the one waiting longest of the client address holding the
    /// most connections. So a flood spread over many addresses evicts its own connections
    /// first, and a new client (one connection at its address) is evicted only if every
    /// address holds just one and it waited longest: an attacker would need more addresses
    /// (IPv6: /64s) than `max_connections`.
    fn victim(&self, key: Option<IpAddr>) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.evicted && key.is_none_or(|k| e.key == k))
            .filter_map(|(id, e)| Some((*id, e, e.slot.waiting_on_client_since()?)))
            .min_by_key(|(id, e, since)| {
                let held = self.per_client.get(&e.key).copied().unwrap_or(0);
                (std::cmp::Reverse(held), *since, *id)
            })
            .map(|(id, _, _)| id)
    }

    /// Evicts `id`: it stops counting now and its task closes it.
    fn evict(&mut self, id: u64) -> SocketAddr {
        let e = self
            .entries
            .get_mut(&id)
            .expect("evicting a listed connection");
        e.evicted = true;
        e.slot.evict.notify_one();
        let (peer, key) = (e.peer, e.key);
        self.uncount(key);
        self.closing += 1;
        peer
    }

    fn uncount(&mut self, key: IpAddr) {
        self.counted -= 1;
        if let Some(n) = self.per_client.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&key);
            }
        }
    }
}

/// Why a newcomer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Its address holds its limit, none of them waiting on it.
    Client,
    /// Every connection is busy.
    Full,
    /// Too many evicted connections are still closing.
    Closing,
}

/// The connection table with its bounds; [`Connections::admit`] decides for each newcomer.
#[derive(Debug)]
pub(super) struct Connections {
    pub(super) limits: Limits,
    table: Mutex<Table>,
    /// Its `connections` gauge is set under the table lock, so it is never stale.
    hub: Arc<Hub>,
    /// Told when an evicted connection has closed (the accept loop waits for one while
    /// [`MAX_CLOSING`] are closing).
    pub(super) closed: Notify,
}

/// A counted connection; dropping it (its task ends) frees its place.
#[derive(Debug)]
pub(super) struct Admitted {
    table: Arc<Connections>,
    id: u64,
    pub(super) slot: Arc<Slot>,
}

impl Connections {
    pub(super) fn new(limits: Limits, hub: Arc<Hub>) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            table: Mutex::new(Table::default()),
            hub,
            closed: Notify::new(),
        })
    }

    fn publish(&self, t: &Table) {
        self.hub
            .metrics
            .connections
            .store(t.counted, Ordering::Relaxed);
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every update below keeps the table consistent before anything that could panic.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a newcomer from `peer`, evicting an idle connection if a bound is reached (its
    /// own address's oldest first); the evicted peers are returned for the log.
    pub(super) fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
    ) -> Result<(Admitted, Vec<SocketAddr>), Refusal> {
        let key = client_key(peer.ip());
        let per_client = self.limits.max_per_client.min(self.limits.max_connections);
        let mut t = self.lock();
        let mut evicted = Vec::new();
        if t.per_client.get(&key).copied().unwrap_or(0) >= per_client {
            if t.closing >= MAX_CLOSING {
                return Err(Refusal::Closing);
            }
            let id = t.victim(Some(key)).ok_or(Refusal::Client)?;
            evicted.push(t.evict(id));
        }
        if t.counted >= self.limits.max_connections {
            if t.closing >= MAX_CLOSING {
                return Err(Refusal::Closing);
            }
            let id = t.victim(None).ok_or(Refusal::Full)?;
            evicted.push(t.evict(id));
        }
        let id = t.next_id;
        t.next_id += 1;
        let slot = Arc::new(Slot {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms()),
            body_wait_since_ms: AtomicU64::new(NOT_WAITING),
            evict: Notify::new(),
        });
        t.entries.insert(
            id,
            Entry {
                peer,
                key,
                slot: slot.clone(),
                evicted: false,
            },
        );
        *t.per_client.entry(key).or_insert(0) += 1;
        t.counted += 1;
        self.publish(&t);
        Ok((
            Admitted {
                table: self.clone(),
                id,
                slot,
            },
            evicted,
        ))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        if let Some(e) = t.entries.remove(&self.id) {
            if e.evicted {
                t.closing -= 1;
                self.table.closed.notify_one();
            } else {
                t.uncount(e.key);
            }
        }
        self.table.publish(&t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_connections: usize, max_per_client: usize) -> Arc<Connections> {
        Connections::new(
            Limits {
                max_connections,
                max_per_client,
            },
            Arc::new(Hub::default()),
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn clients_are_counted_by_ipv4_address_or_ipv6_slash_64() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("192.0.2.7"), k("::ffff:192.0.2.7"), "mapped IPv4 is IPv4");
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(
            k("2001:db8:1:2:aaaa::1"),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn one_ipv6_slash_64_is_one_client_and_its_oldest_idle_connection_goes_first() {
        let t = table(100, 3);
        let mut held = Vec::new();
        for i in 1..=3 {
            let (a, evicted) = t.admit(addr(&format!("[2001:db8::{i}]:1000"))).unwrap();
            assert!(evicted.is_empty());
            held.push(a);
        }
        // A fourth address of the same /64: the oldest of the three makes room.
        let (_d, evicted) = t.admit(addr("[2001:db8::ffff]:1000")).unwrap();
        assert_eq!(evicted, [addr("[2001:db8::1]:1000")]);
        // Another /64 is another client.
        let (_e, evicted) = t.admit(addr("[2001:db8:0:1::1]:1000")).unwrap();
        assert!(evicted.is_empty());
        // Busy ones are never evicted: with the rest busy, the newcomer is refused.
        let _busy: Vec<Busy> = held[1..].iter().map(|a| Busy::start(&a.slot)).collect();
        let (f, evicted) = t.admit(addr("[2001:db8::5]:1000")).unwrap();
        assert_eq!(
            evicted,
            [addr("[2001:db8::ffff]:1000")],
            "the only idle one"
        );
        let _f_busy = Busy::start(&f.slot);
        assert_eq!(
            t.admit(addr("[2001:db8::6]:1000")).unwrap_err(),
            Refusal::Client
        );
    }

    #[test]
    fn at_the_global_bound_the_oldest_idle_of_anyone_goes_and_busy_ones_stay() {
        let t = table(4, 4);
        let held: Vec<Admitted> = (1..=4)
            .map(|i| t.admit(addr(&format!("192.0.2.{i}:1"))).unwrap().0)
            .collect();
        // The first becomes busy, then idle again later than the others: it is the youngest.
        drop(Busy::start(&held[0].slot));
        held[0]
            .slot
            .idle_since_ms
            .store(now_ms() + 1, Ordering::Relaxed);
        let (_n, evicted) = t.admit(addr("192.0.2.9:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.2:1")]);
        let _busy: Vec<Busy> = held.iter().map(|a| Busy::start(&a.slot)).collect();
        let (m, evicted) = t.admit(addr("192.0.2.10:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.9:1")]);
        let _also_busy = Busy::start(&m.slot);
        assert_eq!(t.admit(addr("192.0.2.11:1")).unwrap_err(), Refusal::Full);
        assert_eq!(t.lock().counted, 4);
        assert_eq!(t.hub.metrics.connections.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn at_the_global_bound_the_address_holding_the_most_gives_way_first() {
        let t = table(4, 4);
        let _old = t.admit(addr("192.0.2.1:1")).unwrap();
        let _flood: Vec<Admitted> = (0..3)
            .map(|i| t.admit(addr(&format!("192.0.2.66:{i}"))).unwrap().0)
            .collect();
        // 192.0.2.1 is the oldest, but 192.0.2.66 holds three: its oldest goes.
        let (_n, evicted) = t.admit(addr("192.0.2.2:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.66:0")]);
        let (_m, evicted) = t.admit(addr("192.0.2.3:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.66:1")]);
        // Now every address holds one: the oldest of all goes.
        let (_k, evicted) = t.admit(addr("192.0.2.4:1")).unwrap();
        assert_eq!(evicted, [addr("192.0.2.1:1")]);
    }

    #[test]
    fn evicted_connections_still_closing_are_bounded() {
        let t = table(1, 1);
        let mut closing = Vec::new();
        let mut refused = 0;
        // Every newcomer evicts the one before, whose task (here) never ends.
        for i in 0..MAX_CLOSING + 10 {
            match t.admit(addr(&format!("192.0.2.1:{}", 1000 + i))) {
                Ok((a, _)) => closing.push(a),
                Err(why) => {
                    assert_eq!(why, Refusal::Closing);
                    refused += 1;
                }
            }
        }
        assert_eq!(t.lock().closing, MAX_CLOSING);
        assert_eq!(refused, 9, "past MAX_CLOSING newcomers are refused");
        // Once they close, a newcomer gets in again.
        let last = closing.pop().unwrap();
        assert!(
            futures_util::FutureExt::now_or_never(t.closed.notified()).is_none(),
            "nothing closed yet"
        );
        drop(closing);
        assert_eq!(t.lock().closing, 0);
        assert!(
            futures_util::FutureExt::now_or_never(t.closed.notified()).is_some(),
            "the accept loop is woken when an evicted one closes"
        );
        drop(last);
        let _again = t.admit(addr("192.0.2.1:2000")).unwrap();
        assert_eq!(t.lock().entries.len(), 1);
    }
}
