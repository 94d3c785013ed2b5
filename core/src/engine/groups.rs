//! Consumer groups (SPEC 3, Kafka style): membership by heartbeat, generations, the sticky
//! assignment of partitions to members, and commits with their strategies.
//!
//! A ConsumerGroup subscription has one shared cursor (like Exclusive), whose per-partition
//! ack floors are the group's committed offsets, saved as cursor records `(group, None,
//! partition)`. Attaching a consumer joins the group, detaching (or closing its connection,
//! or a session timeout) leaves it; every change of membership bumps the generation and
//! reassigns partitions with [`assign`]. A member is delivered only events of its own
//! partitions. When a partition changes owner, what the old owner had in flight becomes ready
//! for the new owner (in offset order) and the partition's acknowledged positions are
//! committed.
//!
//! Acks settle events in memory; the commit strategy decides when the floor is saved:
//! `AfterEach` (every ack, the reply waits), `AfterBatch(n)` (when n events of a partition were
//! acknowledged since its last commit), `Periodic(d)` (at most `d` after an ack), `Manual`
//! (only `Command::Commit`). A commit carrying another generation than the group's is refused
//! with `StaleGeneration`.

use super::cursor::{CursorKey, SlotKey, SlotState};
use super::{AckWait, Engine, Origin, Timer};
use crate::api::{GroupAssignment, GroupInfo, Notice, Output, Position, Reply};
use crate::error::{Error, InvalidInput};
use crate::ids::SubId;
use crate::names::{ConsumerId, StreamName, SubscriptionName};
use crate::subscription_config::{CommitStrategy, SubscriptionMode};
use crate::time::MonoNanos;
use std::collections::{BTreeMap, BTreeSet};

/// The state of one consumer group.
#[derive(Debug)]
pub(crate) struct Group {
    /// Bumped by every change of membership (0 before anyone joined).
    pub(crate) generation: u64,
    /// The owner of each partition in the current generation.
    pub(crate) owners: Vec<Option<ConsumerId>>,
    /// Each member's session deadline.
    pub(crate) sessions: BTreeMap<ConsumerId, MonoNanos>,
    /// Per partition: events acknowledged since its last commit.
    pub(crate) uncommitted: Vec<u64>,
    /// `Periodic`: when the pending commit runs.
    pub(crate) commit_due: Option<MonoNanos>,
}

impl Group {
    pub(crate) fn new(partitions: usize) -> Group {
        Group {
            generation: 0,
            owners: vec![None; partitions],
            sessions: BTreeMap::new(),
            uncommitted: vec![0; partitions],
            commit_due: None,
        }
    }

    /// The partitions `member` owns, ascending.
    pub(crate) fn partitions_of(&self, member: &ConsumerId) -> Vec<u32> {
        self.owners
            .iter()
            .enumerate()
            .filter(|(_, o)| o.as_ref() == Some(member))
            .map(|(p, _)| p as u32)
            .collect()
    }

    /// Whether `member` owns `partition`.
    pub(crate) fn owns(&self, member: &ConsumerId, partition: usize) -> bool {
        self.owners
            .get(partition)
            .is_some_and(|o| o.as_ref() == Some(member))
    }

    pub(crate) fn assignment(&self, member: &ConsumerId) -> GroupAssignment {
        GroupAssignment {
            generation: self.generation,
            partitions: self.partitions_of(member),
            member: self.sessions.contains_key(member),
        }
    }

    pub(crate) fn info(&self) -> GroupInfo {
        GroupInfo {
            generation: self.generation,
            owners: self.owners.clone(),
            uncommitted: self.uncommitted.clone(),
            members: Vec::new(),
        }
    }
}

/// The sticky assignment: every member gets `P / M` or `P / M + 1` partitions, and as few
/// partitions as possible change owner.
///
/// 1. Partitions of members that left are unowned.
/// 2. The `P % M` members that own the most partitions now (ties: the smaller id) get the
///    larger quota `P / M + 1`, the others `P / M`. (Keeping `min(owned, quota)` partitions per
///    member is the most any balanced assignment keeps, and giving the larger quotas to the
///    largest owners maximises that sum.)
/// 3. A member above its quota gives up its highest partitions.
/// 4. Unowned partitions, ascending, fill the members below their quota, in id order.
///
/// Deterministic: the same owners and members always give the same result.
pub(crate) fn assign(
    prev: &[Option<ConsumerId>],
    members: &BTreeSet<ConsumerId>,
) -> Vec<Option<ConsumerId>> {
    let p = prev.len();
    let m = members.len();
    if m == 0 {
        return vec![None; p];
    }
    let mut owned: BTreeMap<&ConsumerId, Vec<usize>> =
        members.iter().map(|c| (c, vec![])).collect();
    let mut pool = Vec::new();
    for (i, o) in prev.iter().enumerate() {
        match o.as_ref().and_then(|o| owned.get_mut(o)) {
            Some(v) => v.push(i),
            None => pool.push(i),
        }
    }
    let (base, extra) = (p / m, p % m);
    let mut order: Vec<&ConsumerId> = members.iter().collect();
    order.sort_by(|a, b| owned[b].len().cmp(&owned[a].len()).then(a.cmp(b)));
    let quota: BTreeMap<&ConsumerId, usize> = order
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, base + usize::from(i < extra)))
        .collect();
    for (c, parts) in owned.iter_mut() {
        while parts.len() > quota[c] {
            if let Some(x) = parts.pop() {
                pool.push(x);
            }
        }
    }
    pool.sort_unstable();
    let mut pool = pool.into_iter();
    for (c, parts) in owned.iter_mut() {
        while parts.len() < quota[c] {
            match pool.next() {
                Some(x) => parts.push(x),
                None => break,
            }
        }
    }
    let mut out = vec![None; p];
    for (c, parts) in owned {
        for x in parts {
            out[x] = Some(c.clone());
        }
    }
    out
}

impl Engine {
    /// A consumer joined (attached to) a group: it gets a session, and the group rebalances.
    pub(crate) fn join_group(&mut self, id: SubId, consumer: &ConsumerId) {
        self.touch_member(id, consumer);
        self.rebalance(id);
    }

    /// A consumer left (detached, its connection closed, or its session timed out); what it
    /// had in flight is already ready again. The group rebalances.
    pub(crate) fn leave_group(&mut self, id: SubId, consumer: &ConsumerId) {
        let Some(g) = self.subs.get_mut(&id).and_then(|s| s.group.as_mut()) else {
            return;
        };
        // Its timer (possibly set for an earlier deadline) finds no session and does nothing.
        if let Some(deadline) = g.sessions.remove(consumer) {
            self.timers
                .remove(&(deadline, Timer::Session(id, consumer.clone())));
        }
        self.rebalance(id);
    }

    /// A member was heard from: its session starts again. The timer set at its join stays
    /// where it is; when it fires before the new deadline it is set again for it (so an ack
    /// costs no timer update).
    pub(crate) fn touch_member(&mut self, id: SubId, consumer: &ConsumerId) {
        let now = self.now.mono;
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let timeout = sub.config.session_timeout;
        let Some(g) = sub.group.as_mut() else {
            return;
        };
        let deadline = now.saturating_add(timeout);
        match g.sessions.get_mut(consumer) {
            Some(d) => *d = deadline,
            None => {
                g.sessions.insert(consumer.clone(), deadline);
                self.timers
                    .insert((deadline, Timer::Session(id, consumer.clone())));
            }
        }
    }

    /// A member's session timed out: it is told, detached, and the group rebalances.
    pub(crate) fn session_expired(&mut self, id: SubId, consumer: ConsumerId) {
        let now = self.now.mono;
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let Some(g) = sub.group.as_mut() else {
            return;
        };
        match g.sessions.get(&consumer) {
            None => return,
            // Heard from since the timer was set: wait for the new deadline.
            Some(&d) if d > now => {
                self.timers.insert((d, Timer::Session(id, consumer)));
                return;
            }
            Some(_) => {}
        }
        // PLANTED BUG session-expiry-ignored (test-only): a silent member stays for ever.
        #[cfg(feature = "planted-bugs")]
        if self.planted == Some(crate::PlantedBug::SessionExpiryIgnored) {
            return;
        }
        g.sessions.remove(&consumer);
        let generation = g.generation;
        let (stream, subscription) = (sub.config.stream.clone(), sub.config.name.clone());
        let conn = sub.consumers.get(&consumer).map(|c| c.conn);
        if let Some(conn) = conn {
            self.out.push_back(Output::Assignment {
                conn,
                stream: stream.clone(),
                subscription: subscription.clone(),
                consumer: consumer.clone(),
                assignment: GroupAssignment {
                    generation,
                    partitions: Vec::new(),
                    member: false,
                },
            });
            if let Some(c) = self.conns.get_mut(&conn) {
                c.attached.remove(&(id, consumer.clone()));
            }
        }
        self.notice(Notice::SessionExpired {
            stream,
            subscription,
            consumer: consumer.clone(),
        });
        // Releases its events and rebalances (through `leave_group`).
        self.release_consumer(id, &consumer);
        self.pump(id);
    }

    /// Starts a new generation: reassigns partitions, takes partitions away from their old
    /// owners (their events in flight are ready for the new owner), commits what was
    /// acknowledged on partitions that move, and tells every member its share.
    fn rebalance(&mut self, id: SubId) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let members: BTreeSet<ConsumerId> = sub.consumers.keys().cloned().collect();
        let Some(g) = sub.group.as_mut() else {
            return;
        };
        let new = assign(&g.owners, &members);
        let moved: Vec<(usize, Option<ConsumerId>)> = g
            .owners
            .iter()
            .zip(&new)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(p, (a, _))| (p, a.clone()))
            .collect();
        g.owners = new;
        g.generation += 1;
        let generation = g.generation;
        // Revoke: events in flight to an old owner of a moved partition are ready again.
        let mut released = Vec::new();
        for (p, old) in &moved {
            let Some(old) = old else { continue };
            let Some(pc) = sub.cursors.get_mut(0).and_then(|c| c.parts.get_mut(*p)) else {
                continue;
            };
            for slot in pc.window.iter_mut() {
                let Some(pending) = slot.pending.as_mut() else {
                    continue;
                };
                if let SlotState::InFlight { consumer, deadline } = &pending.state
                    && consumer == old
                {
                    released.push((
                        *deadline,
                        SlotKey {
                            key: CursorKey {
                                sub: id,
                                cursor: 0,
                                partition: *p as u32,
                            },
                            offset: slot.offset,
                        },
                    ));
                    pending.state = SlotState::Ready;
                    pc.ready.insert(slot.offset);
                }
            }
        }
        for (deadline, key) in &released {
            self.timers.remove(&(*deadline, Timer::AckWait(*key)));
        }
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        // Credit of old owners that are still members.
        for (p, old) in &moved {
            let Some(old) = old else { continue };
            let n = released
                .iter()
                .filter(|(_, k)| k.key.partition as usize == *p)
                .count() as u32;
            if let Some(c) = sub.consumers.get_mut(old) {
                c.in_flight = c.in_flight.saturating_sub(n);
            }
        }
        let (stream, subscription) = (sub.config.stream.clone(), sub.config.name.clone());
        let mut tell = Vec::new();
        let dirty: Vec<usize> = sub.group.as_ref().map_or(vec![], |g| {
            g.uncommitted
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(p, _)| p)
                .collect()
        });
        if let Some(g) = sub.group.as_ref() {
            for (c, consumer) in &sub.consumers {
                tell.push((consumer.conn, c.clone(), g.assignment(c)));
            }
        }
        let members = sub.consumers.len() as u32;
        for (conn, consumer, assignment) in tell {
            self.out.push_back(Output::Assignment {
                conn,
                stream: stream.clone(),
                subscription: subscription.clone(),
                consumer,
                assignment,
            });
        }
        self.notice(Notice::Rebalanced {
            stream,
            subscription,
            generation,
            members,
            moved: moved.len() as u32,
        });
        for p in dirty {
            self.save_cursor(CursorKey {
                sub: id,
                cursor: 0,
                partition: p as u32,
            });
        }
    }

    /// `Command::Heartbeat`.
    pub(crate) fn heartbeat(
        &mut self,
        origin: Origin,
        stream: StreamName,
        name: SubscriptionName,
        consumer: ConsumerId,
    ) {
        let id = match self.attached(origin.0, &stream, &name, &consumer) {
            Ok(id) => id,
            Err(e) => return self.reply_to(origin, Err(e)),
        };
        if let Err(e) = self.require_group(id) {
            return self.reply_to(origin, Err(e));
        }
        self.touch_member(id, &consumer);
        let Some(g) = self.subs.get(&id).and_then(|s| s.group.as_ref()) else {
            return;
        };
        let a = g.assignment(&consumer);
        self.reply_to(origin, Ok(Reply::Assignment(a)));
    }

    fn require_group(&self, id: SubId) -> Result<(), Error> {
        match self.subs.get(&id).map(|s| s.config.mode) {
            Some(SubscriptionMode::ConsumerGroup) => Ok(()),
            _ => Err(InvalidInput::Conflict {
                field: "subscription",
                reason: "only consumer group subscriptions have members, generations and commits",
            }
            .into()),
        }
    }

    /// Checks that every position of an ack names a partition `consumer` owns (consumer
    /// groups; other modes pass).
    pub(crate) fn check_owned(
        &self,
        id: SubId,
        consumer: &ConsumerId,
        positions: &[Position],
    ) -> Result<(), Error> {
        let Some(g) = self.subs.get(&id).and_then(|s| s.group.as_ref()) else {
            return Ok(());
        };
        match positions
            .iter()
            .find(|p| !g.owns(consumer, p.partition as usize))
        {
            Some(p) => Err(Error::NotAssigned {
                consumer: consumer.clone(),
                partition: p.partition,
                generation: g.generation,
            }),
            None => Ok(()),
        }
    }

    /// After an ack settled `settled` events per partition: counts them as uncommitted and
    /// commits as the strategy says. Returns `true` when the ack's reply must wait for its
    /// saves (`AfterEach`, or any subscription that is not a group).
    pub(crate) fn group_acked(&mut self, id: SubId, settled: &BTreeMap<u32, u64>) -> bool {
        let now = self.now.mono;
        let Some(sub) = self.subs.get_mut(&id) else {
            return true;
        };
        let strategy = sub.config.commit;
        let Some(g) = sub.group.as_mut() else {
            return true;
        };
        if strategy == CommitStrategy::AfterEach || !sub.durable {
            return true;
        }
        for (&p, &n) in settled {
            if let Some(u) = g.uncommitted.get_mut(p as usize) {
                *u += n;
            }
        }
        let mut commit = Vec::new();
        match strategy {
            CommitStrategy::AfterBatch(batch) => {
                for &p in settled.keys() {
                    if g.uncommitted
                        .get(p as usize)
                        .is_some_and(|&u| u >= batch.into())
                    {
                        commit.push(p);
                    }
                }
            }
            CommitStrategy::Periodic(every) => {
                if g.commit_due.is_none() && g.uncommitted.iter().any(|&u| u > 0) {
                    let due = now.saturating_add(every);
                    g.commit_due = Some(due);
                    self.timers.insert((due, Timer::Commit(id)));
                }
            }
            CommitStrategy::Manual | CommitStrategy::AfterEach => {}
        }
        for partition in commit {
            self.save_cursor(CursorKey {
                sub: id,
                cursor: 0,
                partition,
            });
        }
        false
    }

    /// `Periodic`: commits every partition with acknowledged, uncommitted events.
    pub(crate) fn periodic_commit(&mut self, id: SubId) {
        let Some(g) = self.subs.get_mut(&id).and_then(|s| s.group.as_mut()) else {
            return;
        };
        g.commit_due = None;
        let dirty: Vec<u32> = g
            .uncommitted
            .iter()
            .enumerate()
            .filter(|(_, u)| **u > 0)
            .map(|(p, _)| p as u32)
            .collect();
        for partition in dirty {
            self.save_cursor(CursorKey {
                sub: id,
                cursor: 0,
                partition,
            });
        }
    }

    /// `Command::Commit`.
    pub(crate) fn commit(
        &mut self,
        origin: Origin,
        stream: StreamName,
        name: SubscriptionName,
        consumer: ConsumerId,
        generation: u64,
        offsets: Vec<Position>,
    ) {
        let id = match self.sub_id(&stream, &name) {
            Ok(id) => id,
            Err(e) => return self.reply_to(origin, Err(e)),
        };
        if let Err(e) = self.require_group(id) {
            return self.reply_to(origin, Err(e));
        }
        let current = self
            .subs
            .get(&id)
            .and_then(|s| s.group.as_ref())
            .map_or(0, |g| g.generation);
        if generation != current {
            let e = Error::StaleGeneration {
                consumer,
                given: generation,
                current,
            };
            return self.reply_to(origin, Err(e));
        }
        if let Err(e) = self.attached(origin.0, &stream, &name, &consumer) {
            return self.reply_to(origin, Err(e));
        }
        let targets = match self.commit_targets(id, &consumer, &offsets) {
            Ok(t) => t,
            Err(e) => return self.reply_to(origin, Err(e)),
        };
        self.touch_member(id, &consumer);
        // Everything delivered below the committed offset counts as processed.
        let mut touched = BTreeSet::new();
        for (partition, upto) in &targets {
            let key = CursorKey {
                sub: id,
                cursor: 0,
                partition: *partition,
            };
            let below: Vec<u64> = self
                .subs
                .get(&id)
                .and_then(|s| s.cursors.first())
                .and_then(|c| c.parts.get(*partition as usize))
                .map(|pc| {
                    pc.window
                        .iter()
                        .filter(|s| upto.is_some_and(|u| s.offset < u) && s.pending.is_some())
                        .map(|s| s.offset)
                        .collect()
                })
                .unwrap_or_default();
            for offset in below {
                self.settle(SlotKey { key, offset }, |s| {
                    !matches!(s, SlotState::DeadLettering)
                });
            }
            touched.insert(key);
        }
        let positions: Vec<Position> = touched
            .iter()
            .map(|k| Position {
                partition: k.partition,
                offset: self
                    .subs
                    .get(&id)
                    .and_then(|s| s.cursors.first())
                    .and_then(|c| c.parts.get(k.partition as usize))
                    .map_or(0, |pc| pc.floor()),
            })
            .collect();
        let durable = self.subs.get(&id).is_some_and(|s| s.durable);
        if durable && !touched.is_empty() {
            self.wait_for_commit(origin, positions, touched);
        } else {
            self.reply_to(origin, Ok(Reply::Committed(positions)));
        }
        self.trim_ephemeral(&stream);
        self.pump(id);
    }

    /// The partitions a commit names with the offset each commits up to (`None`: what is
    /// acknowledged). Refuses partitions out of range, named twice, not owned, or offsets
    /// past what was delivered.
    fn commit_targets(
        &self,
        id: SubId,
        consumer: &ConsumerId,
        offsets: &[Position],
    ) -> Result<Vec<(u32, Option<u64>)>, Error> {
        let sub = self
            .subs
            .get(&id)
            .ok_or_else(|| Error::NotAttached(consumer.clone()))?;
        let Some(g) = sub.group.as_ref() else {
            return Ok(vec![]);
        };
        let parts = g.owners.len();
        if offsets.len() > parts {
            return Err(InvalidInput::Length {
                field: "offsets",
                len: offsets.len(),
                min: 0,
                max: parts,
            }
            .into());
        }
        if offsets.is_empty() {
            return Ok(g
                .partitions_of(consumer)
                .into_iter()
                .map(|p| (p, None))
                .collect());
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for pos in offsets {
            if pos.partition as usize >= parts {
                return Err(InvalidInput::Range {
                    field: "offsets.partition",
                    value: pos.partition.into(),
                    min: 0,
                    max: parts.saturating_sub(1) as u64,
                }
                .into());
            }
            if !seen.insert(pos.partition) {
                return Err(InvalidInput::Conflict {
                    field: "offsets.partition",
                    reason: "a partition is named twice",
                }
                .into());
            }
            if !g.owns(consumer, pos.partition as usize) {
                return Err(Error::NotAssigned {
                    consumer: consumer.clone(),
                    partition: pos.partition,
                    generation: g.generation,
                });
            }
            let next = sub
                .cursors
                .first()
                .and_then(|c| c.parts.get(pos.partition as usize))
                .map_or(0, |pc| pc.next);
            if pos.offset > next {
                return Err(InvalidInput::Range {
                    field: "offsets.offset",
                    value: pos.offset,
                    min: 0,
                    max: next,
                }
                .into());
            }
            out.push((pos.partition, Some(pos.offset)));
        }
        Ok(out)
    }

    /// Answers a commit with `Committed(positions)` once every cursor in `keys` is saved.
    fn wait_for_commit(
        &mut self,
        origin: Origin,
        positions: Vec<Position>,
        keys: BTreeSet<CursorKey>,
    ) {
        let w = self.next_ack_wait;
        self.next_ack_wait += 1;
        self.ack_waits.insert(
            w,
            AckWait {
                origin: Some(origin),
                release: Vec::new(),
                generations: Vec::new(),
                saves: keys.len() as u32,
                reply: Reply::Committed(positions),
            },
        );
        for key in keys {
            if let Some(pc) = self.part_cursor(key) {
                pc.save.waiting.push(w);
            }
            self.save_cursor(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: &str) -> ConsumerId {
        ConsumerId::new(n).unwrap()
    }

    fn counts(a: &[Option<ConsumerId>]) -> BTreeMap<ConsumerId, usize> {
        let mut m = BTreeMap::new();
        for o in a.iter().flatten() {
            *m.entry(o.clone()).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn balanced_and_sticky_when_a_member_joins() {
        let one: BTreeSet<_> = [c("a")].into();
        let a = assign(&vec![None; 8], &one);
        assert!(a.iter().all(|o| *o == Some(c("a"))));
        let two: BTreeSet<_> = [c("a"), c("b")].into();
        let b = assign(&a, &two);
        assert_eq!(counts(&b)[&c("a")], 4);
        assert_eq!(counts(&b)[&c("b")], 4);
        let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(moved, 4, "only the new member's share moves");
        let three: BTreeSet<_> = [c("a"), c("b"), c("c")].into();
        let d = assign(&b, &three);
        let moved = b.iter().zip(&d).filter(|(x, y)| x != y).count();
        assert_eq!(
            moved, 2,
            "8 partitions over 3: the newcomer takes 2, nobody else moves"
        );
        assert!(counts(&d).values().all(|&n| n == 2 || n == 3));
    }

    #[test]
    fn a_leaving_member_moves_only_its_partitions() {
        let three: BTreeSet<_> = [c("a"), c("b"), c("c")].into();
        let a = assign(&vec![None; 9], &three);
        let two: BTreeSet<_> = [c("a"), c("c")].into();
        let b = assign(&a, &two);
        for (x, y) in a.iter().zip(&b) {
            if x.as_ref() != Some(&c("b")) {
                assert_eq!(x, y, "a partition of a staying member moved");
            }
        }
        assert!(b.iter().all(|o| o.is_some()));
        let none = assign(&b, &BTreeSet::new());
        assert!(none.iter().all(Option::is_none));
    }

    #[test]
    fn the_larger_quota_goes_to_the_largest_owner() {
        // a owns 3, b owns 1 of 4 partitions; c joins: 4 over 3 means quotas 2,1,1. Giving
        // the 2 to `a` keeps 3 partitions in place (a keeps 2, b keeps 1).
        let prev = vec![Some(c("a")), Some(c("a")), Some(c("a")), Some(c("b"))];
        let three: BTreeSet<_> = [c("a"), c("b"), c("c")].into();
        let n = assign(&prev, &three);
        let moved = prev.iter().zip(&n).filter(|(x, y)| x != y).count();
        assert_eq!(moved, 1);
        assert_eq!(counts(&n)[&c("a")], 2);
    }
}
