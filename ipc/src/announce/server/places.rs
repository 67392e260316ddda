//! Every connection's place on the server: the handshake queue, the shared pool and the
//! reserved places, each bounded, and the kicks that close a connection from outside its task.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::Shared;
use super::peer::Peer;

#[derive(Debug)]
pub(super) enum Kick {
    /// [`ServerConfig::max_handshakes`] newer connections are waiting to subscribe.
    Crowded,
    /// A newer connection under the same reserved name took the place; from this peer.
    Replaced(Peer),
}

/// Every connection's place. Bounded: at most `max_handshakes` waiting, `max_subscribers` in
/// the pool, one per reserved name.
#[derive(Debug)]
pub(super) struct Places {
    next_id: u64,
    /// Oldest first, each with the way to close it.
    handshaking: VecDeque<Waiting>,
    pool: usize,
    reserved: Vec<ReservedPlace>,
}

impl Places {
    /// No connection yet; a place for each of the `reserved` names.
    pub(super) fn new(reserved: &[String]) -> Places {
        Places {
            next_id: 0,
            handshaking: VecDeque::new(),
            pool: 0,
            reserved: reserved
                .iter()
                .map(|name| ReservedPlace {
                    name: name.clone(),
                    holder: None,
                })
                .collect(),
        }
    }

    /// Subscribers (in the pool and in reserved places) and connections handshaking.
    pub(super) fn counts(&self) -> (usize, usize) {
        let reserved = self.reserved.iter().filter(|r| r.holder.is_some());
        (self.pool + reserved.count(), self.handshaking.len())
    }
}

/// A connection that has not said who it is yet.
#[derive(Debug)]
pub(super) struct Waiting {
    id: u64,
    /// Its peer [`Peer::may_reserve`]: dropped only when no stranger is left to drop.
    trusted: bool,
    kick: oneshot::Sender<Kick>,
}

#[derive(Debug)]
pub(super) struct ReservedPlace {
    name: String,
    holder: Option<Holder>,
}

#[derive(Debug)]
pub(super) struct Holder {
    id: u64,
    peer: Peer,
    kick: oneshot::Sender<Kick>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Handshake,
    Pool,
    Reserved(usize),
    /// Refused or kicked: holds nothing.
    Nothing,
}

/// What taking a subscriber's place gave.
pub(super) enum Taken {
    /// A place in the pool; `not_trusted`: the name is reserved, but not for this peer.
    Pool { not_trusted: bool },
    /// A reserved place; the peer of the connection it was taken from, if any.
    Reserved(Option<Peer>),
}

/// Why a subscriber got no place.
pub(super) enum NoPlace {
    Full,
    /// Kicked from the handshake queue just before; the kick is in its receiver.
    Crowded,
}

/// A connection's place, given back on drop: however its task ends (returns, panics, is
/// aborted), the place is freed.
pub(super) struct Place {
    shared: Arc<Shared>,
    id: u64,
    kind: Kind,
    /// A pool subscriber keeps its own kick sender, so its receiver never fires.
    _kick: Option<oneshot::Sender<Kick>>,
}

impl Place {
    /// A place among the connections that have not said who they are; when
    /// [`ServerConfig::max_handshakes`] are already waiting one is kicked (counted): the oldest
    /// from a peer that may not hold a reserved place, else the oldest. So strangers flooding
    /// the socket cannot push a consumer's handshake out.
    pub(super) fn handshake(shared: &Arc<Shared>, peer: Peer) -> (Place, oneshot::Receiver<Kick>) {
        let (tx, rx) = oneshot::channel();
        let mut places = shared.places();
        let id = places.next_id;
        places.next_id += 1;
        while places.handshaking.len() >= shared.config.max_handshakes {
            let victim = places.handshaking.iter().position(|w| !w.trusted);
            let Some(oldest) = places.handshaking.remove(victim.unwrap_or(0)) else {
                break;
            };
            shared.dropped_handshakes.fetch_add(1, Ordering::Relaxed);
            let _ = oldest.kick.send(Kick::Crowded);
        }
        places.handshaking.push_back(Waiting {
            id,
            trusted: peer.may_reserve(shared.ids),
            kick: tx,
        });
        let place = Place {
            shared: Arc::clone(shared),
            id,
            kind: Kind::Handshake,
            _kick: None,
        };
        (place, rx)
    }

    /// Moves a handshaking connection to a subscriber's place: its reserved one if `name` is
    /// reserved (taking it over from any holder, who is kicked), else one from the pool.
    pub(super) fn subscribe(&mut self, name: &str, peer: Peer) -> Result<Taken, NoPlace> {
        let shared = Arc::clone(&self.shared);
        let mut places = shared.places();
        let Some(at) = places.handshaking.iter().position(|w| w.id == self.id) else {
            self.kind = Kind::Nothing;
            return Err(NoPlace::Crowded);
        };
        let kick = places
            .handshaking
            .remove(at)
            .expect("index from position")
            .kick;
        let reserved = places.reserved.iter().position(|r| r.name == name);
        if let Some(i) = reserved.filter(|_| peer.may_reserve(shared.ids)) {
            let holder = Holder {
                id: self.id,
                peer,
                kick,
            };
            let old = places.reserved[i].holder.replace(holder);
            self.kind = Kind::Reserved(i);
            let replaced = old.map(|old| {
                let _ = old.kick.send(Kick::Replaced(peer));
                old.peer
            });
            return Ok(Taken::Reserved(replaced));
        }
        if places.pool < shared.config.max_subscribers {
            places.pool += 1;
            self.kind = Kind::Pool;
            self._kick = Some(kick);
            Ok(Taken::Pool {
                not_trusted: reserved.is_some(),
            })
        } else {
            self.kind = Kind::Nothing;
            Err(NoPlace::Full)
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut places = self.shared.places();
        match self.kind {
            Kind::Handshake => {
                if let Some(at) = places.handshaking.iter().position(|w| w.id == self.id) {
                    places.handshaking.remove(at);
                }
            }
            Kind::Pool => places.pool -= 1,
            Kind::Reserved(i) => {
                let place = &mut places.reserved[i];
                if place.holder.as_ref().is_some_and(|h| h.id == self.id) {
                    place.holder = None;
                }
            }
            Kind::Nothing => {}
        }
    }
}
