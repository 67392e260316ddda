//! What waits for the broker: a few *slots* that hold the latest value of a retained topic
//! (discovery, availability, motion, state, poster: only the newest matters, so a week
//! without a broker still costs one value each), and a bounded *queue* of event messages
//! (every start and end matters: kept in order, at most `capacity`; past it the oldest is
//! dropped and counted).
//!
//! One message is in flight at a time and stays where it is until the broker acknowledges it
//! (QoS 1): a connection lost before the `PUBACK` sends it again on the next connection, so
//! the link itself never holds a message that the bound does not count.

use std::collections::VecDeque;

/// One MQTT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Retained by the broker.
    pub retain: bool,
}

/// A retained topic's latest value, and which version of it the broker has.
#[derive(Debug, Default)]
struct Slot {
    message: Option<Message>,
    version: u64,
    acked: u64,
}

/// What is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    Slot(usize, u64),
    Queued(u64),
}

/// Counters of the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Connected to the broker now.
    pub connected: bool,
    /// Event messages waiting.
    pub queued: usize,
    /// Event messages dropped because the queue was full (oldest first).
    pub dropped: u64,
    /// Messages the broker acknowledged.
    pub delivered: u64,
}

/// The slots and the queue; see the module's comment.
#[derive(Debug)]
pub struct Outbox {
    slots: Vec<Slot>,
    queue: VecDeque<(u64, Message)>,
    capacity: usize,
    next_seq: u64,
    in_flight: Option<InFlight>,
    stats: OutboxStats,
}

impl Outbox {
    /// `slots` retained topics (indexes `0..slots`, lower sent first), and a queue of at
    /// most `capacity` event messages.
    pub fn new(slots: usize, capacity: usize) -> Outbox {
        Outbox {
            slots: (0..slots).map(|_| Slot::default()).collect(),
            queue: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            next_seq: 0,
            in_flight: None,
            stats: OutboxStats::default(),
        }
    }

    /// Sets slot `i`'s value; it is sent (again) once the link is free.
    pub fn set(&mut self, i: usize, message: Message) {
        let slot = &mut self.slots[i];
        slot.message = Some(message);
        slot.version += 1;
    }

    /// Slot `i`'s payload, to be rewritten in place (its buffer is reused; the slot is marked
    /// changed). `None` until the slot was [`set`](Self::set) once.
    pub fn payload_mut(&mut self, i: usize) -> Option<&mut Vec<u8>> {
        let slot = &mut self.slots[i];
        slot.version += 1;
        slot.message.as_mut().map(|m| &mut m.payload)
    }

    /// Queues an event message; a full queue drops its oldest first. Returns whether one
    /// was dropped.
    pub fn push(&mut self, message: Message) -> bool {
        let dropped = self.queue.len() >= self.capacity;
        if dropped {
            self.queue.pop_front();
            self.stats.dropped += 1;
        }
        self.queue.push_back((self.next_seq, message));
        self.next_seq += 1;
        dropped
    }

    /// The link is up: every slot is sent again (a broker may have lost its retained
    /// messages, and the session is new).
    pub fn connected(&mut self) {
        self.stats.connected = true;
        self.in_flight = None;
        self.resend_slots();
    }

    /// Every slot is sent again (Home Assistant restarted and asks for discovery).
    pub fn resend_slots(&mut self) {
        for s in &mut self.slots {
            s.acked = 0;
        }
    }

    /// The link is down: what was in flight stays where it is, to be sent again.
    pub fn disconnected(&mut self) {
        self.stats.connected = false;
        self.in_flight = None;
    }

    /// The next message to send, if the link is up and nothing is in flight: changed slots
    /// first, then the oldest queued message. It is in flight until [`acked`](Self::acked).
    pub fn take_next(&mut self) -> Option<Message> {
        if !self.stats.connected || self.in_flight.is_some() {
            return None;
        }
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(m) = &s.message {
                if s.acked != s.version {
                    self.in_flight = Some(InFlight::Slot(i, s.version));
                    return Some(m.clone());
                }
            }
        }
        let (seq, m) = self.queue.front()?;
        self.in_flight = Some(InFlight::Queued(*seq));
        Some(m.clone())
    }

    /// The broker acknowledged the message in flight.
    pub fn acked(&mut self) {
        match self.in_flight.take() {
            Some(InFlight::Slot(i, version)) => self.slots[i].acked = version,
            Some(InFlight::Queued(seq)) => {
                // Unless a full queue dropped it meanwhile.
                if self.queue.front().is_some_and(|(s, _)| *s == seq) {
                    self.queue.pop_front();
                }
            }
            None => return,
        }
        self.stats.delivered += 1;
    }

    /// The counters.
    pub fn stats(&self) -> OutboxStats {
        OutboxStats {
            queued: self.queue.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: &str) -> Message {
        Message {
            topic: t.into(),
            payload: t.as_bytes().to_vec(),
            retain: false,
        }
    }

    #[test]
    fn nothing_goes_out_before_the_link_is_up_and_one_at_a_time_after() {
        let mut o = Outbox::new(1, 4);
        o.set(0, msg("slot"));
        o.push(msg("e1"));
        assert_eq!(o.take_next(), None);
        o.connected();
        assert_eq!(o.take_next().unwrap().topic, "slot");
        assert_eq!(o.take_next(), None, "one in flight at a time");
        o.acked();
        assert_eq!(o.take_next().unwrap().topic, "e1");
        o.acked();
        assert_eq!(o.take_next(), None);
        assert_eq!(o.stats().delivered, 2);
    }

    #[test]
    fn a_message_lost_with_the_link_is_sent_again() {
        let mut o = Outbox::new(1, 4);
        o.connected();
        o.push(msg("e1"));
        assert_eq!(o.take_next().unwrap().topic, "e1");
        o.disconnected();
        assert_eq!(o.take_next(), None);
        o.connected();
        assert_eq!(o.take_next().unwrap().topic, "e1");
        o.acked();
        assert_eq!(o.stats().queued, 0);
    }

    #[test]
    fn past_the_bound_the_oldest_is_dropped_and_counted() {
        let cap = 8;
        let mut o = Outbox::new(0, cap);
        for i in 0..(cap * 1000) {
            o.push(msg(&format!("e{i}")));
        }
        let s = o.stats();
        assert_eq!(s.queued, cap);
        assert_eq!(s.dropped, (cap * 999) as u64);
        o.connected();
        // The newest are kept, in order.
        for i in (cap * 999)..(cap * 1000) {
            assert_eq!(o.take_next().unwrap().topic, format!("e{i}"));
            o.acked();
        }
        assert!(o.queue.capacity() < cap * 4, "the queue did not grow");
    }

    #[test]
    fn a_dropped_in_flight_message_does_not_take_its_successor_with_its_ack() {
        let mut o = Outbox::new(0, 2);
        o.connected();
        o.push(msg("a"));
        assert_eq!(o.take_next().unwrap().topic, "a");
        o.push(msg("b"));
        o.push(msg("c")); // drops "a", in flight
        o.acked();
        assert_eq!(o.take_next().unwrap().topic, "b");
    }

    #[test]
    fn a_slot_changed_while_in_flight_is_sent_again_and_every_slot_after_a_reconnect() {
        let mut o = Outbox::new(2, 2);
        o.set(0, msg("s0"));
        o.set(1, msg("s1"));
        o.connected();
        assert_eq!(o.take_next().unwrap().topic, "s0");
        o.payload_mut(0).unwrap().push(b'!');
        o.acked();
        assert_eq!(o.take_next().unwrap().payload, b"s0!");
        o.acked();
        assert_eq!(o.take_next().unwrap().topic, "s1");
        o.acked();
        assert_eq!(o.take_next(), None);
        o.disconnected();
        o.connected();
        assert_eq!(o.take_next().unwrap().topic, "s0");
    }
}
