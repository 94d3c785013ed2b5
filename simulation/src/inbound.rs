//! The inbound half of cross-service delivery (SPEC 9), as `tributary-amqp`'s consumer does it:
//! a simulated broker queue of another service's messages is consumed into a local stream.
//! Each delivered message becomes one append whose event id is the message id, sent in
//! delivery order; the message is acknowledged (it leaves the queue) only once the append is
//! answered (appended, or a duplicate); one the engine refuses as invalid is dead-lettered; any
//! other refusal, a crash of the engine and a dropped broker connection requeue every
//! unacknowledged message at the front of the queue, in order (a broker redelivery), and the
//! replies still to come for them are ignored, though their appends may commit: "a crash
//! between the local commit and the broker's ack". The remote side also publishes a message
//! twice now and then (its relay is at least once), and sometimes one that cannot be an event.
//!
//! Oracle `inbound-once`: no message is ever answered `Appended` twice, and once the liveness
//! phase converged (the queue drained) the local stream holds every good message exactly once
//! and no poison one, and exactly the poison ones were dead-lettered. The local stream's dedup
//! window outlasts the run, so the rule holds whatever the timing (SPEC 5's window is the
//! documented limit of the real thing).

use crate::checker::Violation;
use crate::rng::SimRng;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use tributary_core::{
    AppendOutcome, AppendRequest, Command, Error, EventId, NewEvent, Reply, RetentionPolicy,
    StreamConfig, StreamName,
};
use tributary_store_memory::MemoryStore;

/// The inbound options of a run, drawn from their own sub-seed (so that the rest of the
/// run's options are the same with or without it).
#[derive(Debug, Clone)]
pub struct InboundOptions {
    /// Whether the run has an inbound binding per node.
    pub on: bool,
    /// Messages the remote service publishes at most, per node (kept below the engine's cap
    /// on dedup ids per stream: past it appends with ids are refused as busy until ids
    /// expire).
    pub messages: u64,
    /// The prefetch: messages delivered and not acknowledged at most.
    pub prefetch: usize,
    /// Chance (per mille, per inbound tick of the chaos phase) the remote publishes.
    pub publish: u32,
    /// Chance (per mille, per message) it is one published before again (same id).
    pub again: u32,
    /// Chance (per mille, per message) it cannot be an event.
    pub poison: u32,
    /// Chance (per mille, per inbound tick of the chaos phase) the broker connection drops.
    pub drop: u32,
    /// Partitions of the local stream.
    pub partitions: u32,
    /// Virtual time between two inbound ticks, ms.
    pub every_ms: u64,
}

impl InboundOptions {
    /// The options of `seed`, for engines that hold at most `max_dedup_ids` ids per stream.
    pub fn draw(seed: u64, max_dedup_ids: usize, max_partitions: u32) -> InboundOptions {
        let mut r = SimRng::new(seed, "inbound");
        let pick = |r: &mut SimRng, xs: &[u64]| xs[r.below(xs.len() as u64) as usize];
        InboundOptions {
            on: r.chance(500),
            messages: pick(&mut r, &[20, 200, 1000]).min(max_dedup_ids as u64 / 2),
            prefetch: pick(&mut r, &[1, 4, 50]) as usize,
            publish: pick(&mut r, &[100, 400, 900]) as u32,
            again: pick(&mut r, &[0, 50, 300]) as u32,
            poison: pick(&mut r, &[0, 20, 100]) as u32,
            drop: pick(&mut r, &[0, 10, 60]) as u32,
            partitions: r.range(1, u64::from(max_partitions.max(1))) as u32,
            every_ms: pick(&mut r, &[2, 20, 100]),
        }
    }
}

/// What the inbound bindings of a run did, summed over its nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// Messages the remote services published (a message published twice counts twice).
    pub published: u64,
    /// Messages appended as new events.
    pub appended: u64,
    /// Messages answered `Duplicate`: a redelivery after a commit, or a message published
    /// twice.
    pub duplicates: u64,
    /// Requeues of the unacknowledged messages (crashes, dropped connections, refusals).
    pub requeues: u64,
    /// Messages dead-lettered.
    pub dead: u64,
}

/// Whether the local stream exists yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Not asked for yet (or the last try failed).
    No,
    /// Asked for: waiting for the reply.
    Asking,
    /// There.
    Yes,
}

/// One node's inbound binding: the broker's queue and the consumer's state.
#[derive(Debug, Clone)]
pub struct InboundW {
    /// The local stream.
    pub stream: StreamName,
    /// Whether it exists.
    pub created: Created,
    /// The queue, in delivery order.
    queue: VecDeque<NewEvent>,
    /// Delivered and not acknowledged, in delivery order.
    unacked: VecDeque<NewEvent>,
    /// Bumped by every requeue: replies to appends of an earlier delivery are ignored.
    pub generation: u64,
    /// Every good message published, by id.
    good: BTreeMap<EventId, NewEvent>,
    /// Ids of the poison messages published.
    poison: BTreeSet<EventId>,
    /// Ids dead-lettered.
    dead: BTreeSet<EventId>,
    /// Ids answered `Appended`.
    appended: BTreeSet<EventId>,
    /// Messages published so far.
    published: u64,
    /// Requeues so far (broker redeliveries).
    pub requeues: u64,
    /// Messages answered `Duplicate` (a redelivery or a message published twice).
    pub duplicates: u64,
    /// The first broken rule seen.
    violation: Option<Violation>,
    /// Messages published, duplicates included.
    sent: u64,
    node: u64,
}

impl InboundW {
    /// A binding into `stream` on node `node`.
    pub fn new(node: usize) -> InboundW {
        InboundW {
            stream: StreamName::new("inbound").unwrap_or_else(|_| unreachable!()),
            created: Created::No,
            queue: VecDeque::new(),
            unacked: VecDeque::new(),
            generation: 0,
            good: BTreeMap::new(),
            poison: BTreeSet::new(),
            dead: BTreeSet::new(),
            appended: BTreeSet::new(),
            published: 0,
            requeues: 0,
            duplicates: 0,
            violation: None,
            sent: 0,
            node: node as u64,
        }
    }

    /// The local stream's configuration: persistent, deduplicating for longer than any run,
    /// and never cut by retention.
    pub fn stream_config(&self, o: &InboundOptions) -> StreamConfig {
        let mut c = StreamConfig::persistent(self.stream.clone());
        c.partitions = o.partitions;
        c.dedup_window = Duration::from_secs(30 * 24 * 3600);
        c.retention = Some(RetentionPolicy::default());
        c
    }

    /// The remote service publishes a few messages (chaos phase).
    pub fn publish(&mut self, o: &InboundOptions, r: &mut SimRng) {
        let n = r.range(1, 5);
        for _ in 0..n {
            if self.published >= o.messages {
                return;
            }
            self.published += 1;
            self.sent += 1;
            if r.chance(o.again)
                && let Some(prev) = pick_good(&self.good, r)
            {
                self.queue.push_back(prev);
                continue;
            }
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(b"inb-");
            id[4..12].copy_from_slice(&self.node.to_be_bytes());
            id[12..].copy_from_slice(&(self.published as u32).to_be_bytes());
            let id = EventId::from_bytes(id);
            let poison = r.chance(o.poison);
            let len = r.below(32) as usize;
            let payload: Vec<u8> = (0..len).map(|_| r.below(256) as u8).collect();
            // A message without an event type is refused by the engine as invalid.
            let mut e = NewEvent::new(if poison { "" } else { "remote.event" }, payload);
            e.event_id = Some(id);
            if r.coin() {
                e.key = Some(Bytes::from(format!("k{}", r.below(5))));
            }
            if poison {
                self.poison.insert(id);
            } else {
                self.good.insert(id, e.clone());
            }
            self.queue.push_back(e);
        }
    }

    /// The broker delivers up to the prefetch: the appends to send, in order, with their
    /// message ids.
    pub fn deliver(&mut self, prefetch: usize) -> Vec<(Option<EventId>, Command)> {
        if self.created != Created::Yes {
            return Vec::new();
        }
        let mut out = Vec::new();
        while self.unacked.len() < prefetch.max(1) {
            let Some(e) = self.queue.pop_front() else {
                break;
            };
            out.push((e.event_id, append(&self.stream, &e)));
            self.unacked.push_back(e);
        }
        out
    }

    /// The channel closed (a dropped connection, a crash of the engine, a refused append):
    /// the broker puts every unacknowledged message back at the front, in order.
    pub fn requeue(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        self.generation += 1;
        self.requeues += 1;
        while let Some(e) = self.unacked.pop_back() {
            self.queue.push_front(e);
        }
    }

    /// The reply to the append of message `id`, sent in delivery `generation`.
    pub fn replied(&mut self, id: EventId, generation: u64, reply: &Result<Reply, Error>) {
        if let Ok(Reply::Appended(outs)) = reply
            && matches!(outs.first(), Some(AppendOutcome::Appended(_)))
            && !self.appended.insert(id)
            && self.violation.is_none()
        {
            self.violation = Some(Violation {
                oracle: "inbound-once",
                detail: format!("{}: message {id} appended a second time", self.stream),
            });
        }
        if generation != self.generation {
            // Requeued since: it comes again (and is then a duplicate if this committed).
            return;
        }
        let Some(at) = self.unacked.iter().position(|e| e.event_id == Some(id)) else {
            return;
        };
        match reply {
            Ok(Reply::Appended(outs)) => {
                if matches!(outs.first(), Some(AppendOutcome::Duplicate { .. })) {
                    self.duplicates += 1;
                }
                self.unacked.remove(at);
            }
            Err(Error::Invalid(_)) => {
                self.dead.insert(id);
                self.unacked.remove(at);
            }
            _ => self.requeue(),
        }
    }

    /// The reply to the creation of the local stream.
    pub fn create_replied(&mut self, reply: &Result<Reply, Error>) {
        self.created = match reply {
            Ok(_) | Err(Error::StreamExists(_)) => Created::Yes,
            Err(_) => Created::No,
        };
    }

    /// What it did.
    pub fn stats(&self) -> InboundStats {
        InboundStats {
            published: self.sent,
            appended: self.appended.len() as u64,
            duplicates: self.duplicates,
            requeues: self.requeues,
            dead: self.dead.len() as u64,
        }
    }

    /// Nothing left to consume.
    pub fn idle(&self) -> bool {
        self.created == Created::Yes && self.queue.is_empty() && self.unacked.is_empty()
    }

    /// What it is waiting for, for a liveness failure.
    pub fn describe(&self) -> String {
        format!(
            "inbound: created {:?}, {} queued, {} unacknowledged",
            self.created,
            self.queue.len(),
            self.unacked.len()
        )
    }

    /// The rule broken so far, if any (taken once).
    pub fn take_violation(&mut self) -> Option<Violation> {
        self.violation.take()
    }

    /// Once converged: the store holds every good message once and no poison one, and the
    /// poison ones were dead-lettered.
    pub fn final_check(&self, store: &MemoryStore, partitions: u32) -> Option<Violation> {
        let v = |detail: String| {
            Some(Violation {
                oracle: "inbound-once",
                detail,
            })
        };
        let mut count: BTreeMap<EventId, usize> = BTreeMap::new();
        for p in 0..partitions {
            for e in store.events(&self.stream, p) {
                *count.entry(e.event_id).or_default() += 1;
            }
        }
        for id in self.good.keys() {
            match count.get(id) {
                Some(1) => {}
                Some(n) => return v(format!("{}: message {id} is held {n} times", self.stream)),
                None => return v(format!("{}: message {id} was never appended", self.stream)),
            }
        }
        if let Some(id) = self.poison.iter().find(|id| count.contains_key(id)) {
            return v(format!("{}: poison message {id} was appended", self.stream));
        }
        if count.len() != self.good.len() {
            return v(format!(
                "{}: holds {} ids for {} messages",
                self.stream,
                count.len(),
                self.good.len()
            ));
        }
        if self.dead != self.poison {
            return v(format!(
                "{}: dead-lettered {:?}, poison {:?}",
                self.stream, self.dead, self.poison
            ));
        }
        None
    }
}

fn append(stream: &StreamName, e: &NewEvent) -> Command {
    Command::Append(AppendRequest {
        stream: stream.clone(),
        events: vec![e.clone()],
        expected_offset: None,
    })
}

fn pick_good(good: &BTreeMap<EventId, NewEvent>, r: &mut SimRng) -> Option<NewEvent> {
    if good.is_empty() {
        return None;
    }
    let i = r.below(good.len() as u64) as usize;
    good.values().nth(i).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::Position;

    fn options() -> InboundOptions {
        InboundOptions {
            on: true,
            messages: 10,
            prefetch: 3,
            publish: 1000,
            again: 0,
            poison: 0,
            drop: 0,
            partitions: 1,
            every_ms: 1,
        }
    }

    fn appended(offset: u64) -> Result<Reply, Error> {
        Ok(Reply::Appended(vec![AppendOutcome::Appended(Position {
            partition: 0,
            offset,
        })]))
    }

    fn duplicate() -> Result<Reply, Error> {
        Ok(Reply::Appended(vec![AppendOutcome::Duplicate {
            original: Position {
                partition: 0,
                offset: 0,
            },
        }]))
    }

    fn ids(cmds: &[(Option<EventId>, Command)]) -> Vec<EventId> {
        cmds.iter().filter_map(|(id, _)| *id).collect()
    }

    #[test]
    fn a_requeue_delivers_the_unacknowledged_again_in_order_and_ignores_late_replies() {
        let o = options();
        let mut ib = InboundW::new(0);
        let mut r = SimRng::new(1, "t");
        while ib.queue.len() < 5 {
            ib.publish(&o, &mut r);
        }
        assert!(ib.deliver(3).is_empty(), "nothing before the stream exists");
        ib.create_replied(&Ok(Reply::Done));
        let first = ids(&ib.deliver(3));
        assert_eq!(first.len(), 3);
        ib.replied(first[0], 0, &appended(0));
        // The engine crashes: its replies are lost, though the second append committed.
        ib.requeue();
        ib.replied(first[1], 0, &appended(1));
        let again = ids(&ib.deliver(3));
        assert_eq!(again[..2], first[1..], "the unacknowledged first, in order");
        // The redelivered message is a duplicate: acknowledged, no violation.
        ib.replied(again[0], 1, &duplicate());
        assert!(ib.take_violation().is_none());
        assert_eq!((ib.duplicates, ib.requeues), (1, 1));
        // A second `Appended` for one id is a second event.
        ib.replied(again[0], 1, &appended(2));
        let v = ib.take_violation().expect("caught");
        assert_eq!(v.oracle, "inbound-once");
    }

    #[test]
    fn the_final_check_wants_every_good_message_once() {
        let o = options();
        let mut ib = InboundW::new(0);
        let mut r = SimRng::new(2, "t");
        ib.publish(&o, &mut r);
        let v = ib
            .final_check(&MemoryStore::default(), 1)
            .expect("nothing appended");
        assert!(v.detail.contains("never appended"), "{v:?}");
        let empty = InboundW::new(0);
        assert!(empty.final_check(&MemoryStore::default(), 1).is_none());
    }
}
