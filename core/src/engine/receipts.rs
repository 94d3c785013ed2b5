//! Read receipts (SPEC 6): ReadReceipt subscriptions are Broadcast (one cursor per consumer)
//! plus a receipt per (consumer, event).
//!
//! - An ack records `Delivered(at)` (the ack's reply waits for the receipt to be stored) and,
//!   with `unread_timeout`, arms one timer for that delivery.
//! - `MarkRead` (positions, or everything up to an offset) records `Read(at)`; events still
//!   pending are acknowledged by it (read implies delivered).
//! - An unread timeout fires once per delivery: an `UnreadTimeout` notice to the operator and
//!   to the consumer, and with `redeliver_unread` the event is delivered again (its ack records
//!   a new delivery, with a new timeout). A consumer away at that time gets it when it attaches.
//! - Receipts whose last change is older than `receipt_ttl` are removed every
//!   `receipt_cleanup_interval` (the timer runs only while receipts are held).
//! - At most `max_receipts_per_consumer` per consumer: the oldest read receipts go first; when
//!   all are unread, acks and marks that would add one are refused with `Busy`.
//! - Persistent streams keep receipts in the store (`SaveReceipts`, merging, so saves commute)
//!   and load them back in pages at recovery (`LoadReceipts`).

use super::cursor::{CursorKey, SlotKey, SlotState};
use super::{Engine, Op, Origin, PendingOp, Timer};
use crate::api::{Delivered, MarkRead, Notice, Output, Position, Receipt, ReceiptStatus, Reply};
use crate::error::{Error, InvalidInput};
use crate::ids::SubId;
use crate::names::{ConsumerId, StreamName, SubscriptionName};
use crate::storage::{ReceiptRecord, StorageReply, StorageRequest, StorageResult};
use crate::subscription_config::SubscriptionMode;
use crate::time::{MonoNanos, UnixMillis};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One receipt held in memory.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) delivered_at: UnixMillis,
    pub(crate) read_at: Option<UnixMillis>,
    /// The unread timeout armed for the current delivery, until it fires.
    pub(crate) unread_deadline: Option<MonoNanos>,
    /// Deliveries made by unread timeouts.
    pub(crate) redeliveries: u32,
    /// Delivered again after an unread timeout, not yet acknowledged again.
    pub(crate) redelivered: bool,
    /// The delivery whose unread timeout fired.
    pub(crate) timed_out: Option<UnixMillis>,
}

impl Held {
    /// The time of its last change (what `receipt_ttl` counts from).
    fn changed_at(&self) -> UnixMillis {
        self.read_at
            .unwrap_or(self.delivered_at)
            .max(self.delivered_at)
    }
}

/// The receipts of one consumer (one cursor).
#[derive(Debug, Default)]
pub(crate) struct ConsumerReceipts {
    pub(crate) held: BTreeMap<(u32, u64), Held>,
    /// Read receipts by read time: forgotten oldest first at capacity.
    read_order: BTreeSet<(UnixMillis, u32, u64)>,
    unread: u64,
    /// Unread events whose timeout fired while the consumer was away: delivered at its attach.
    pub(crate) due: BTreeSet<(u32, u64)>,
}

impl ConsumerReceipts {
    fn remove(&mut self, at: (u32, u64)) -> Option<Held> {
        let h = self.held.remove(&at)?;
        match h.read_at {
            Some(r) => {
                self.read_order.remove(&(r, at.0, at.1));
            }
            None => self.unread = self.unread.saturating_sub(1),
        }
        self.due.remove(&at);
        Some(h)
    }

    /// Room for `new` more receipts (after forgetting read ones).
    fn has_room(&self, new: usize, max: usize) -> bool {
        self.held.len().saturating_sub(self.read_order.len()) + new <= max
    }

    /// Forgets the oldest read receipts until there is room for one more.
    fn make_room(&mut self, max: usize) -> Vec<(u32, u64)> {
        let mut gone = Vec::new();
        while self.held.len() >= max {
            let Some((_, p, o)) = self.read_order.pop_first() else {
                break;
            };
            self.held.remove(&(p, o));
            gone.push((p, o));
        }
        gone
    }
}

/// The receipts of one subscription.
#[derive(Debug, Default)]
pub(crate) struct Receipts {
    /// By cursor index (one cursor per consumer).
    pub(crate) of: BTreeMap<u32, ConsumerReceipts>,
    /// When the next cleanup runs, if one is armed.
    cleanup_due: Option<MonoNanos>,
}

impl Engine {
    fn receipts_mut(&mut self, id: SubId) -> Option<&mut Receipts> {
        self.subs.get_mut(&id)?.receipts.as_mut()
    }

    /// Checks that a consumer has room for receipts of `positions` it has none for.
    pub(crate) fn receipt_room(
        &self,
        id: SubId,
        ci: u32,
        positions: &[Position],
    ) -> Result<(), Error> {
        let Some(r) = self.subs.get(&id).and_then(|s| s.receipts.as_ref()) else {
            return Ok(());
        };
        let max = self.cfg.max_receipts_per_consumer;
        let new = match r.of.get(&ci) {
            Some(cr) => positions
                .iter()
                .filter(|p| !cr.held.contains_key(&(p.partition, p.offset)))
                .count(),
            None => positions.len(),
        };
        let ok = r.of.get(&ci).map_or(new <= max, |cr| cr.has_room(new, max));
        if ok {
            Ok(())
        } else {
            Err(Error::Busy {
                what: "unread receipts of the consumer",
                limit: max as u64,
            })
        }
    }

    /// Receipts that an ack re-acknowledges (events delivered again after an unread timeout):
    /// they count as acknowledged.
    pub(crate) fn receipt_reacked(&self, id: SubId, ci: u32, pos: Position) -> bool {
        self.subs
            .get(&id)
            .and_then(|s| s.receipts.as_ref())
            .and_then(|r| r.of.get(&ci))
            .and_then(|cr| cr.held.get(&(pos.partition, pos.offset)))
            .is_some_and(|h| h.redelivered && h.read_at.is_none())
    }

    /// Records `Delivered(now)` for acknowledged events (`read`: also `Read(now)`). Arms the
    /// unread timeouts and the cleanup. Returns the records to store (persistent streams).
    pub(crate) fn record_receipts(
        &mut self,
        id: SubId,
        ci: u32,
        positions: &[Position],
        read: bool,
    ) -> Vec<ReceiptRecord> {
        let (now, wall) = (self.now.mono, self.now.wall);
        let max = self.cfg.max_receipts_per_consumer;
        let Some(sub) = self.subs.get_mut(&id) else {
            return Vec::new();
        };
        let (unread_timeout, durable) = (sub.config.unread_timeout, sub.durable);
        let cleanup_every = sub.config.receipt_cleanup_interval;
        let consumer = sub
            .cursors
            .get(ci as usize)
            .and_then(|c| c.consumer.clone());
        let Some(consumer) = consumer else {
            return Vec::new();
        };
        #[cfg(feature = "planted-bugs")]
        let keep_unread = self.planted == Some(crate::PlantedBug::UnreadKeptOnRead);
        #[cfg(not(feature = "planted-bugs"))]
        let keep_unread = false;
        let Some(r) = sub.receipts.as_mut() else {
            return Vec::new();
        };
        let cr = r.of.entry(ci).or_default();
        let mut arm = Vec::new();
        let mut disarm = Vec::new();
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for pos in positions {
            let at = (pos.partition, pos.offset);
            if !seen.insert(at) {
                continue;
            }
            if !cr.held.contains_key(&at) {
                cr.make_room(max);
            }
            let h = cr.held.entry(at).or_insert_with(|| {
                cr.unread += 1;
                Held {
                    delivered_at: wall,
                    read_at: None,
                    unread_deadline: None,
                    redeliveries: 0,
                    redelivered: false,
                    timed_out: None,
                }
            });
            // An ack is a (new) delivery; a mark of a delivered event keeps its time.
            if !read {
                h.delivered_at = h.delivered_at.max(wall);
                h.redelivered = false;
            }
            if (!read || h.read_at.is_none())
                && let Some(d) = h.unread_deadline.take()
            {
                disarm.push((d, at));
            }
            if read && h.read_at.is_none() {
                h.read_at = Some(wall);
                // PLANTED BUG unread-kept-on-read (test-only): the count is left as it was.
                if !keep_unread {
                    cr.unread = cr.unread.saturating_sub(1);
                }
                cr.read_order.insert((wall, at.0, at.1));
                cr.due.remove(&at);
            }
            if !read
                && h.read_at.is_none()
                && let Some(t) = unread_timeout
            {
                let d = now.saturating_add(t);
                h.unread_deadline = Some(d);
                arm.push((d, at));
            }
            out.push(ReceiptRecord {
                sub: id,
                consumer: consumer.clone(),
                partition: at.0,
                offset: at.1,
                delivered_at: h.delivered_at,
                read_at: h.read_at,
                timed_out: h.timed_out,
            });
        }
        let cleanup = if r.cleanup_due.is_none() {
            let d = now.saturating_add(cleanup_every);
            r.cleanup_due = Some(d);
            Some(d)
        } else {
            None
        };
        for (d, (p, o)) in disarm {
            self.timers.remove(&(d, unread_timer(id, ci, p, o)));
        }
        for (d, (p, o)) in arm {
            self.timers.insert((d, unread_timer(id, ci, p, o)));
        }
        if let Some(d) = cleanup {
            self.timers.insert((d, Timer::ReceiptCleanup(id)));
        }
        if durable { out } else { Vec::new() }
    }

    /// `Command::MarkRead`.
    pub(crate) fn mark_read(
        &mut self,
        origin: Origin,
        stream: StreamName,
        name: SubscriptionName,
        consumer: ConsumerId,
        read: MarkRead,
    ) {
        let id = match self.attached(origin.0, &stream, &name, &consumer) {
            Ok(id) => id,
            Err(e) => return self.reply_to(origin, Err(e)),
        };
        if let Err(e) = self.require_receipts(id) {
            return self.reply_to(origin, Err(e));
        }
        let Some(sub) = self.subs.get(&id) else {
            return;
        };
        let ci = sub.consumers.get(&consumer).map_or(0, |c| c.cursor);
        let parts = sub.start_offsets.len() as u32;
        let max = self.cfg.max_ack_pending as usize;
        let asked: Vec<Position> = match &read {
            MarkRead::Positions(p) if p.is_empty() || p.len() > max => {
                let e = InvalidInput::Length {
                    field: "read.positions",
                    len: p.len(),
                    min: 1,
                    max,
                };
                return self.reply_to(origin, Err(e.into()));
            }
            MarkRead::Positions(p) => p.clone(),
            MarkRead::UpTo(p) => vec![*p],
        };
        if let Some(bad) = asked.iter().find(|p| p.partition >= parts) {
            let e = InvalidInput::Range {
                field: "read.partition",
                value: bad.partition.into(),
                min: 0,
                max: u64::from(parts.saturating_sub(1)),
            };
            return self.reply_to(origin, Err(e.into()));
        }
        // The events it applies to: pending slots (acknowledged by it) and unread receipts.
        let Some(cursor) = sub.cursors.get(ci as usize) else {
            return;
        };
        let cr = sub.receipts.as_ref().and_then(|r| r.of.get(&ci));
        let pending_at = |p: &Position| {
            cursor
                .parts
                .get(p.partition as usize)
                .and_then(|pc| {
                    pc.window
                        .binary_search_by_key(&p.offset, |s| s.offset)
                        .ok()
                        .and_then(|i| pc.window.get(i))
                })
                .and_then(|s| s.pending.as_ref())
                .is_some_and(|pe| {
                    !matches!(pe.state, SlotState::Blocked | SlotState::DeadLettering)
                })
        };
        let unread_at = |p: &Position| {
            cr.and_then(|cr| cr.held.get(&(p.partition, p.offset)))
                .is_some_and(|h| h.read_at.is_none())
        };
        let targets: Vec<Position> = match read {
            MarkRead::Positions(list) => {
                let mut seen = BTreeSet::new();
                list.into_iter()
                    .filter(|p| seen.insert(*p))
                    .filter(|p| pending_at(p) || unread_at(p))
                    .collect()
            }
            MarkRead::UpTo(upto) => {
                let mut set = BTreeSet::new();
                if let Some(pc) = cursor.parts.get(upto.partition as usize) {
                    for s in pc.window.iter().take_while(|s| s.offset <= upto.offset) {
                        let p = Position {
                            partition: upto.partition,
                            offset: s.offset,
                        };
                        if pending_at(&p) {
                            set.insert(p);
                        }
                    }
                }
                // PLANTED BUG read-undelivered (test-only): the offset itself, delivered or not.
                #[cfg(feature = "planted-bugs")]
                if self.planted == Some(crate::PlantedBug::ReadUndelivered) {
                    set.insert(upto);
                }
                if let Some(cr) = cr {
                    for (&(pa, o), h) in cr
                        .held
                        .range((upto.partition, 0)..=(upto.partition, upto.offset))
                    {
                        if h.read_at.is_none() {
                            set.insert(Position {
                                partition: pa,
                                offset: o,
                            });
                        }
                    }
                }
                set.into_iter().collect()
            }
        };
        let ignored = asked_len(&asked, &targets);
        if let Err(e) = self.receipt_room(id, ci, &targets) {
            return self.reply_to(origin, Err(e));
        }
        self.touch_member(id, &consumer);
        let mut touched = BTreeSet::new();
        for p in &targets {
            let key = SlotKey {
                key: CursorKey {
                    sub: id,
                    cursor: ci,
                    partition: p.partition,
                },
                offset: p.offset,
            };
            if self.settle(key, |s| {
                !matches!(s, SlotState::Blocked | SlotState::DeadLettering)
            }) {
                touched.insert(key.key);
            }
        }
        let records = self.record_receipts(id, ci, &targets, true);
        let marked = targets.len() as u32;
        let durable = self.subs.get(&id).is_some_and(|s| s.durable);
        if durable && (!touched.is_empty() || !records.is_empty()) {
            self.wait_for_saves_and_receipts(
                origin,
                Reply::MarkedRead { marked, ignored },
                touched,
                records,
            );
        } else {
            self.reply_to(origin, Ok(Reply::MarkedRead { marked, ignored }));
        }
        self.pump(id);
    }

    fn require_receipts(&self, id: SubId) -> Result<(), Error> {
        match self.subs.get(&id).map(|s| s.config.mode) {
            Some(SubscriptionMode::ReadReceipt) => Ok(()),
            _ => Err(InvalidInput::Conflict {
                field: "subscription",
                reason: "only read receipt subscriptions keep receipts",
            }
            .into()),
        }
    }

    /// `Command::ReceiptStatus`.
    pub(crate) fn receipt_status(
        &mut self,
        origin: Origin,
        stream: StreamName,
        name: SubscriptionName,
        consumer: ConsumerId,
        position: Option<Position>,
    ) {
        let r = self.receipt_status_of(&stream, &name, &consumer, position);
        self.reply_to(origin, r.map(Reply::ReceiptStatus));
    }

    fn receipt_status_of(
        &self,
        stream: &StreamName,
        name: &SubscriptionName,
        consumer: &ConsumerId,
        position: Option<Position>,
    ) -> Result<ReceiptStatus, Error> {
        let id = self.sub_id(stream, name)?;
        self.require_receipts(id)?;
        let sub = self
            .subs
            .get(&id)
            .ok_or_else(|| Error::NotAttached(consumer.clone()))?;
        let ci = *sub
            .cursor_of
            .get(consumer)
            .ok_or_else(|| Error::NotAttached(consumer.clone()))?;
        let parts = sub.start_offsets.len();
        let cr = sub.receipts.as_ref().and_then(|r| r.of.get(&ci));
        let mut last_read = vec![None; parts];
        if let Some(cr) = cr {
            for (&(p, o), h) in &cr.held {
                if h.read_at.is_some()
                    && let Some(l) = last_read.get_mut(p as usize)
                {
                    *l = Some(o);
                }
            }
        }
        let receipt = position.and_then(|p| {
            cr.and_then(|cr| cr.held.get(&(p.partition, p.offset)))
                .map(|h| Receipt {
                    delivered_at: h.delivered_at,
                    read_at: h.read_at,
                })
        });
        Ok(ReceiptStatus {
            unread: cr.map_or(0, |cr| cr.unread),
            last_read,
            receipt,
        })
    }

    /// An unread timeout of one delivery fired.
    pub(crate) fn unread_expired(&mut self, at: MonoNanos, key: SlotKey) {
        let id = key.key.sub;
        let (p, o) = (key.key.partition, key.offset);
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let redeliver = sub.config.redeliver_unread;
        #[cfg(feature = "planted-bugs")]
        let unread_timeout = sub.config.unread_timeout;
        let consumer = sub
            .cursors
            .get(key.key.cursor as usize)
            .and_then(|c| c.consumer.clone());
        let (stream, subscription) = (sub.config.stream.clone(), sub.config.name.clone());
        let attached = consumer
            .as_ref()
            .and_then(|c| sub.consumers.get(c))
            .map(|c| c.conn);
        let Some(h) = sub
            .receipts
            .as_mut()
            .and_then(|r| r.of.get_mut(&key.key.cursor))
            .and_then(|cr| cr.held.get_mut(&(p, o)))
        else {
            return;
        };
        if h.read_at.is_some() || h.unread_deadline != Some(at) {
            return;
        }
        h.unread_deadline = None;
        h.timed_out = Some(h.delivered_at);
        // PLANTED BUG unread-timeout-twice (test-only): armed again for the same delivery.
        #[cfg(feature = "planted-bugs")]
        let rearm = match (self.planted, unread_timeout) {
            (Some(crate::PlantedBug::UnreadTimeoutTwice), Some(t)) => {
                let d = at.saturating_add(t);
                h.unread_deadline = Some(d);
                Some(d)
            }
            _ => None,
        };
        let Some(consumer) = consumer else {
            return;
        };
        // Remember it fired, so that a restart does not fire it again (a crash before this
        // is stored fires it again at recovery: at least once).
        let record = ReceiptRecord {
            sub: id,
            consumer: consumer.clone(),
            partition: p,
            offset: o,
            delivered_at: h.delivered_at,
            read_at: h.read_at,
            timed_out: h.timed_out,
        };
        if sub.durable {
            self.storage(
                Op::SaveReceipts {
                    sub: id,
                    wait: None,
                },
                StorageRequest::SaveReceipts(vec![record]),
            );
        }
        #[cfg(feature = "planted-bugs")]
        if let Some(d) = rearm {
            self.timers.insert((d, Timer::Unread(key)));
        }
        let position = Position {
            partition: p,
            offset: o,
        };
        let event = self.cached_ids(&stream, position);
        let notice = Notice::UnreadTimeout {
            stream,
            subscription,
            consumer: consumer.clone(),
            position,
            redelivered: redeliver,
            event,
        };
        if let Some(conn) = attached {
            self.out.push_back(Output::ConsumerNotice {
                conn,
                consumer,
                notice: notice.clone(),
            });
        }
        self.notice(notice);
        if redeliver {
            if let Some(cr) = self
                .receipts_mut(id)
                .and_then(|r| r.of.get_mut(&key.key.cursor))
            {
                cr.due.insert((p, o));
            }
            self.redeliver_receipts(id, key.key.cursor);
        }
    }

    /// Delivers again the unread events due for a consumer, if it is attached.
    pub(crate) fn redeliver_receipts(&mut self, id: SubId, ci: u32) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let Some(consumer) = sub
            .cursors
            .get(ci as usize)
            .and_then(|c| c.consumer.clone())
        else {
            return;
        };
        let Some(conn) = sub.consumers.get(&consumer).map(|c| c.conn) else {
            return;
        };
        let (stream_name, subscription, durable) = (
            sub.config.stream.clone(),
            sub.config.name.clone(),
            sub.durable,
        );
        let Some(cr) = sub.receipts.as_mut().and_then(|r| r.of.get_mut(&ci)) else {
            return;
        };
        let due = std::mem::take(&mut cr.due);
        let Some(stream) = self.streams.get(&stream_name) else {
            return;
        };
        let mut events = Vec::new();
        let mut fetch = Vec::new();
        for (p, o) in due {
            let Some(h) = cr.held.get_mut(&(p, o)) else {
                continue;
            };
            if h.read_at.is_some() {
                continue;
            }
            match stream.parts.get(p as usize).and_then(|part| part.cached(o)) {
                Some(ev) => {
                    h.redeliveries += 1;
                    h.redelivered = true;
                    events.push(Delivered {
                        event: ev.clone(),
                        attempt: h.redeliveries + 1,
                    });
                }
                None if durable => fetch.push((p, o)),
                // An ephemeral stream no longer holds it: nothing to deliver.
                None => {}
            }
        }
        if !events.is_empty() {
            let before = self.out.len();
            self.out.push_back(Output::Deliver {
                conn,
                stream: stream_name.clone(),
                subscription,
                consumer,
                events,
            });
            self.shape_deliveries(id, before);
        }
        for (p, o) in fetch {
            let key = SlotKey {
                key: CursorKey {
                    sub: id,
                    cursor: ci,
                    partition: p,
                },
                offset: o,
            };
            self.storage(
                Op::ReceiptFetch { key },
                StorageRequest::Read {
                    stream: stream_name.clone(),
                    partition: p,
                    from: o,
                    max: 1,
                },
            );
        }
    }

    /// The event of a redelivery was read from the store.
    pub(crate) fn receipt_fetch_done(&mut self, p: PendingOp, result: StorageResult) {
        let Op::ReceiptFetch { key } = p.op else {
            return;
        };
        let events = match result {
            StorageResult::Ok(StorageReply::Events(e)) => e,
            StorageResult::Ok(_)
            | StorageResult::Err(crate::storage::StorageError::NotFound(_)) => {
                return;
            }
            StorageResult::Err(e) => return self.retry_later(p, "receipt read", e.to_string()),
            StorageResult::Unknown => {
                return self.retry_later(p, "receipt read", "outcome unknown".into());
            }
        };
        let Some(ev) = events.into_iter().find(|e| e.offset == key.offset) else {
            return;
        };
        let Some(sub) = self.subs.get_mut(&key.key.sub) else {
            return;
        };
        let Some(consumer) = sub
            .cursors
            .get(key.key.cursor as usize)
            .and_then(|c| c.consumer.clone())
        else {
            return;
        };
        let Some(conn) = sub.consumers.get(&consumer).map(|c| c.conn) else {
            // Away again: delivered at its next attach.
            if let Some(cr) = sub
                .receipts
                .as_mut()
                .and_then(|r| r.of.get_mut(&key.key.cursor))
            {
                cr.due.insert((key.key.partition, key.offset));
            }
            return;
        };
        let (stream, subscription) = (sub.config.stream.clone(), sub.config.name.clone());
        let Some(h) = sub
            .receipts
            .as_mut()
            .and_then(|r| r.of.get_mut(&key.key.cursor))
            .and_then(|cr| cr.held.get_mut(&(key.key.partition, key.offset)))
        else {
            return;
        };
        if h.read_at.is_some() {
            return;
        }
        h.redeliveries += 1;
        h.redelivered = true;
        let attempt = h.redeliveries + 1;
        let before = self.out.len();
        self.out.push_back(Output::Deliver {
            conn,
            stream,
            subscription,
            consumer,
            events: vec![Delivered { event: ev, attempt }],
        });
        self.shape_deliveries(key.key.sub, before);
    }

    /// Removes receipts older than `receipt_ttl`, in memory and in the store; runs again while
    /// receipts are held.
    pub(crate) fn receipt_cleanup(&mut self, id: SubId) {
        let (now, wall) = (self.now.mono, self.now.wall);
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let ttl = sub.config.receipt_ttl;
        let every = sub.config.receipt_cleanup_interval;
        let durable = sub.durable;
        let Some(r) = sub.receipts.as_mut() else {
            return;
        };
        r.cleanup_due = None;
        let before = UnixMillis(wall.0.saturating_sub(ttl.as_millis() as u64));
        let mut disarm = Vec::new();
        let mut any_left = false;
        for (&ci, cr) in r.of.iter_mut() {
            let old: Vec<(u32, u64)> = cr
                .held
                .iter()
                .filter(|(_, h)| h.changed_at() < before)
                .map(|(k, _)| *k)
                .collect();
            for at in old {
                if let Some(h) = cr.remove(at)
                    && let Some(d) = h.unread_deadline
                {
                    disarm.push((d, unread_timer(id, ci, at.0, at.1)));
                }
            }
            any_left |= !cr.held.is_empty();
        }
        if any_left {
            let d = now.saturating_add(every);
            r.cleanup_due = Some(d);
            self.timers.insert((d, Timer::ReceiptCleanup(id)));
        }
        for t in disarm {
            self.timers.remove(&t);
        }
        if durable {
            self.storage(
                Op::ExpireReceipts { sub: id },
                StorageRequest::ExpireReceipts { sub: id, before },
            );
        }
    }

    pub(crate) fn receipts_op_done(&mut self, mut p: PendingOp, result: StorageResult) {
        match (&p.op, result) {
            (Op::SaveReceipts { wait, .. }, StorageResult::Ok(_)) => {
                if let Some(w) = *wait {
                    self.ack_wait_saved(w);
                }
            }
            (Op::ExpireReceipts { .. }, StorageResult::Ok(_)) => {}
            // The subscription is gone: whoever waits is told.
            (
                Op::SaveReceipts { sub, wait },
                StorageResult::Err(crate::storage::StorageError::NotFound(_)),
            ) => {
                let sub = *sub;
                if let Some(aw) = wait.and_then(|w| self.ack_waits.remove(&w))
                    && let Some(origin) = aw.origin
                {
                    let e = Error::Unavailable(format!("subscription {sub:?} deleted"));
                    self.reply_to(origin, Err(e));
                }
            }
            (
                Op::ExpireReceipts { .. },
                StorageResult::Err(crate::storage::StorageError::NotFound(_)),
            ) => {}
            (_, StorageResult::Ok(_)) => {}
            (_, StorageResult::Err(e)) => self.retry_later(p, "receipts", e.to_string()),
            (_, StorageResult::Unknown) => {
                p.uncertain = true;
                self.retry_later(p, "receipts", "outcome unknown".into());
            }
        }
    }

    // ---- recovery --------------------------------------------------------------------------

    /// Asks for a page of a subscription's receipts (recovery).
    pub(crate) fn load_receipts(&mut self, id: SubId, after: Option<(ConsumerId, u32, u64)>) {
        let limit = self.cfg.recovery_page;
        self.storage(
            Op::LoadReceipts { sub: id },
            StorageRequest::LoadReceipts {
                sub: id,
                after,
                limit,
            },
        );
    }

    /// A page of receipts came back: holds them (forgetting the oldest read ones past the
    /// limit) and arms their timers. Returns where to continue, if the page was full.
    pub(crate) fn receipts_loaded(
        &mut self,
        id: SubId,
        records: Vec<ReceiptRecord>,
    ) -> Option<(ConsumerId, u32, u64)> {
        let full = records.len() >= self.cfg.recovery_page as usize;
        let last = records
            .last()
            .map(|r| (r.consumer.clone(), r.partition, r.offset));
        let (now, wall) = (self.now.mono, self.now.wall);
        let max = self.cfg.max_receipts_per_consumer;
        let sub = self.subs.get_mut(&id)?;
        let unread_timeout = sub.config.unread_timeout;
        let every = sub.config.receipt_cleanup_interval;
        let mut arm = Vec::new();
        for rec in records {
            // PLANTED BUG receipts-forget-reads (test-only): every receipt loads unread.
            #[cfg(feature = "planted-bugs")]
            let rec = if self.planted == Some(crate::PlantedBug::ReceiptsForgetReads) {
                ReceiptRecord {
                    read_at: None,
                    ..rec
                }
            } else {
                rec
            };
            let ci = match sub.cursor_of.get(&rec.consumer) {
                Some(&ci) => ci,
                None => sub.new_cursor(Some(rec.consumer.clone())),
            };
            let r = sub.receipts.as_mut()?;
            let cr = r.of.entry(ci).or_default();
            let at = (rec.partition, rec.offset);
            if cr.held.contains_key(&at) {
                continue;
            }
            cr.make_room(max);
            if cr.held.len() >= max {
                // Every receipt held is unread: this one is not kept.
                continue;
            }
            let mut h = Held {
                delivered_at: rec.delivered_at,
                read_at: rec.read_at,
                unread_deadline: None,
                redeliveries: 0,
                redelivered: false,
                timed_out: rec.timed_out,
            };
            match rec.read_at {
                Some(t) => {
                    cr.read_order.insert((t, at.0, at.1));
                }
                None => {
                    cr.unread += 1;
                    // What is left of its unread timeout, on the monotonic clock (unless it
                    // fired for this delivery already).
                    if let Some(t) = unread_timeout
                        && rec.timed_out.is_none_or(|f| f < rec.delivered_at)
                    {
                        let end = rec.delivered_at.0.saturating_add(t.as_millis() as u64);
                        let left = Duration::from_millis(end.saturating_sub(wall.0));
                        let d = now.saturating_add(left);
                        h.unread_deadline = Some(d);
                        arm.push((d, unread_timer(id, ci, at.0, at.1)));
                    }
                }
            }
            cr.held.insert(at, h);
        }
        if let Some(r) = sub.receipts.as_mut()
            && r.cleanup_due.is_none()
            && r.of.values().any(|cr| !cr.held.is_empty())
        {
            let d = now.saturating_add(every);
            r.cleanup_due = Some(d);
            arm.push((d, Timer::ReceiptCleanup(id)));
        }
        for t in arm {
            self.timers.insert(t);
        }
        if full { last } else { None }
    }

    /// Forgets the receipts of one cursor (its consumer's position is being removed), with
    /// their unread timers.
    pub(crate) fn forget_receipts(&mut self, id: SubId, ci: u32) {
        let Some(cr) = self.receipts_mut(id).and_then(|r| r.of.remove(&ci)) else {
            return;
        };
        for (&(p, o), h) in &cr.held {
            if let Some(d) = h.unread_deadline {
                self.timers.remove(&(d, unread_timer(id, ci, p, o)));
            }
        }
    }

    /// Clears the timers of a subscription's receipts (it is being removed).
    pub(crate) fn clear_receipt_timers(&mut self, id: SubId, r: &Receipts) {
        for (&ci, cr) in &r.of {
            for (&(p, o), h) in &cr.held {
                if let Some(d) = h.unread_deadline {
                    self.timers.remove(&(d, unread_timer(id, ci, p, o)));
                }
            }
        }
        if let Some(d) = r.cleanup_due {
            self.timers.remove(&(d, Timer::ReceiptCleanup(id)));
        }
    }
}

fn unread_timer(sub: SubId, cursor: u32, partition: u32, offset: u64) -> Timer {
    Timer::Unread(SlotKey {
        key: CursorKey {
            sub,
            cursor,
            partition,
        },
        offset,
    })
}

/// Positions asked for that are not among `targets` (not delivered, or already read).
fn asked_len(asked: &[Position], targets: &[Position]) -> u32 {
    if asked.len() == 1 && targets.len() > 1 {
        // `UpTo`: one position asked, many marked.
        return 0;
    }
    asked.len().saturating_sub(targets.len()) as u32
}
