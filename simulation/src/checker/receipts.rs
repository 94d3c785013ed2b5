//! Read receipts in the model (ReadReceipt subscriptions of persistent streams).
//!
//! The model holds, per (subscription, consumer), the receipts the engine has written: every
//! `SaveReceipts` record as it is issued (the engine issues it when its memory changes), and,
//! after a restart, exactly what `LoadReceipts` brought back from the store. It also keeps
//! every event ever delivered to the consumer (independently of the engine's records), and
//! which unread timeouts fired for the current delivery.

use super::{Checker, SubKey};
use std::collections::{BTreeMap, BTreeSet};
use tributary_core::{
    ConsumerId, Delivered, Notice, Position, ReceiptRecord, ReceiptStatus, SubId, SubscriptionMode,
};

/// One receipt as the model knows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RcM {
    /// Marked read.
    read: bool,
    /// The unread timeout of the current delivery fired.
    fired: bool,
    /// As loaded from the store at recovery, not written since.
    loaded: bool,
}

/// What the model knows of one consumer of a ReadReceipt subscription.
#[derive(Debug, Clone, Default)]
pub(crate) struct RcConsumer {
    /// Receipts, by (partition, offset).
    held: BTreeMap<(u32, u64), RcM>,
    /// Every event ever delivered to the consumer.
    delivered: BTreeSet<(u32, u64)>,
    /// Events an unread timeout announced as delivered again, not yet delivered.
    due: BTreeSet<(u32, u64)>,
    /// Events delivered again after an unread timeout (an ack of them records a new
    /// delivery).
    redelivered: BTreeSet<(u32, u64)>,
}

impl Checker {
    fn receipt_sub(&self, key: &SubKey) -> bool {
        self.subs
            .get(key)
            .is_some_and(|s| s.config.mode == SubscriptionMode::ReadReceipt)
    }

    /// Which of `positions` were delivered again to `consumer` after an unread timeout: an
    /// ack counts them as acknowledged.
    pub(super) fn unread_redelivered(
        &self,
        key: &SubKey,
        consumer: &ConsumerId,
        positions: &[Position],
    ) -> BTreeSet<(u32, u64)> {
        let Some(c) = self.receipts.get(&(key.clone(), consumer.clone())) else {
            return BTreeSet::new();
        };
        positions
            .iter()
            .map(|p| (p.partition, p.offset))
            .filter(|at| c.redelivered.contains(at))
            .collect()
    }

    /// The events of a partition up to `upto` the model has in flight at `consumer`.
    pub(super) fn in_flight_up_to(
        &self,
        key: &SubKey,
        consumer: &ConsumerId,
        upto: Position,
    ) -> Vec<Position> {
        let Some(sub) = self.subs.get(key) else {
            return Vec::new();
        };
        sub.cursors
            .get(&sub.cursor_key(consumer))
            .and_then(|c| c.parts.get(&upto.partition))
            .map(|cp| {
                cp.in_flight
                    .range(..=upto.offset)
                    .map(|(&offset, _)| Position {
                        partition: upto.partition,
                        offset,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Events delivered to a consumer: returns those that are unread redeliveries (after an
    /// unread timeout with `redeliver_unread`), which the cursor oracles do not count.
    pub(super) fn receipts_delivered(
        &mut self,
        key: &SubKey,
        consumer: &ConsumerId,
        events: &[Delivered],
    ) -> BTreeSet<(u32, u64)> {
        let mut redelivered = BTreeSet::new();
        if !self.receipt_sub(key) {
            return redelivered;
        }
        let c = self
            .receipts
            .entry((key.clone(), consumer.clone()))
            .or_default();
        for d in events {
            let at = (d.event.partition, d.event.offset);
            c.delivered.insert(at);
            // An event delivered again after an unread timeout was acknowledged on the cursor
            // before (its receipt says so): a delivery of it is taken as another unread
            // redelivery, as the engine may deliver one twice when two reads of it from the
            // store are in flight.
            let again = c.redelivered.contains(&at);
            if c.due.remove(&at) || again {
                redelivered.insert(at);
                c.redelivered.insert(at);
            }
            // A new delivery: its ack arms a new unread timeout.
            if let Some(h) = c.held.get_mut(&at) {
                h.fired = false;
            }
        }
        redelivered
    }

    /// A consumer acknowledges receipt: an accepted ack arms a new unread timeout (a timer
    /// armed by an earlier ack may still fire after the event was delivered again).
    pub(super) fn receipts_acked(
        &mut self,
        key: &SubKey,
        consumer: &ConsumerId,
        positions: &[Position],
    ) {
        if let Some(c) = self.receipts.get_mut(&(key.clone(), consumer.clone())) {
            for p in positions {
                if let Some(h) = c.held.get_mut(&(p.partition, p.offset)) {
                    h.fired = false;
                }
            }
        }
    }

    /// The engine writes receipts (`SaveReceipts`, issued as its memory changes).
    pub(super) fn receipts_saved(&mut self, records: &[ReceiptRecord]) {
        for rec in records {
            let Some(key) = self.sub_ids.get(&rec.sub).cloned() else {
                continue;
            };
            self.receipts_reloaded.remove(&key);
            let c = self
                .receipts
                .entry((key.clone(), rec.consumer.clone()))
                .or_default();
            let at = (rec.partition, rec.offset);
            let delivered = c.delivered.contains(&at);
            let h = c.held.entry(at).or_default();
            // Saves merge (a retried older save keeps a read receipt read).
            h.read |= rec.read_at.is_some();
            // An unread timeout's own record (saved just before its notice) changes nothing
            // of what was loaded.
            h.loaded &= rec.read_at.is_none() && rec.timed_out.is_some();
            if !delivered {
                self.fail(
                    "receipt-delivered",
                    format!(
                        "{}/{} ({}): a receipt ({}) for {}/{}, never delivered to the consumer",
                        key.0,
                        key.1,
                        rec.consumer,
                        if rec.read_at.is_some() {
                            "read"
                        } else {
                            "delivered"
                        },
                        rec.partition,
                        rec.offset
                    ),
                );
            }
        }
    }

    /// A page of receipts came back from the store at recovery: the model holds exactly them.
    pub(super) fn receipts_loaded(&mut self, sub: SubId, records: &[ReceiptRecord]) {
        let Some(key) = self.sub_ids.get(&sub).cloned() else {
            return;
        };
        self.receipts_reloaded.insert(key.clone());
        for rec in records {
            let c = self
                .receipts
                .entry((key.clone(), rec.consumer.clone()))
                .or_default();
            c.held.insert(
                (rec.partition, rec.offset),
                RcM {
                    read: rec.read_at.is_some(),
                    fired: rec.read_at.is_none()
                        && rec.timed_out.is_some_and(|f| f >= rec.delivered_at),
                    loaded: true,
                },
            );
        }
    }

    /// A new engine life: receipts are what the store gives back.
    pub(super) fn receipts_restart(&mut self) {
        for c in self.receipts.values_mut() {
            c.held.clear();
            c.due.clear();
        }
        self.receipts_reloaded.clear();
    }

    /// `Notice::UnreadTimeout`: at most once per delivery, never for a read event.
    pub(super) fn unread_timeout(&mut self, n: &Notice) {
        let Notice::UnreadTimeout {
            stream,
            subscription,
            consumer,
            position,
            redelivered,
            ..
        } = n
        else {
            return;
        };
        let key: SubKey = (stream.clone(), subscription.clone());
        let durable = self.subs.get(&key).is_some_and(|s| s.durable);
        let c = self.receipts.entry((key, consumer.clone())).or_default();
        let at = (position.partition, position.offset);
        if *redelivered {
            c.due.insert(at);
        }
        let name = format!(
            "{stream}/{subscription} ({consumer}) {}/{}",
            position.partition, position.offset
        );
        if !c.delivered.contains(&at) {
            return self.fail(
                "receipt-delivered",
                format!("{name}: an unread timeout for an event never delivered"),
            );
        }
        if !durable {
            return;
        }
        let h = c.held.entry(at).or_default();
        let (fired, read, loaded) = (h.fired, h.read, h.loaded);
        h.fired = true;
        if fired {
            self.fail(
                "unread-timeout-once",
                format!("{name}: a second unread timeout for one delivery"),
            );
        } else if read {
            self.fail(
                if loaded {
                    "receipts-durable"
                } else {
                    "receipt-unread"
                },
                format!("{name}: an unread timeout for an event marked read"),
            );
        }
    }

    /// A `ReceiptStatus` reply: the unread count is the model's delivered-minus-read, the last
    /// read offsets and the receipt asked about agree with the model's receipts.
    pub(super) fn receipt_status_reply(
        &mut self,
        key: &SubKey,
        consumer: &ConsumerId,
        position: Option<Position>,
        status: &ReceiptStatus,
    ) {
        let Some(sub) = self.subs.get(key) else {
            return;
        };
        if !sub.durable || sub.delete_requested || sub.resetting > 0 {
            return;
        }
        let oracle = if self.receipts_reloaded.contains(key) {
            "receipts-durable"
        } else {
            "receipt-unread"
        };
        let empty = RcConsumer::default();
        let c = self
            .receipts
            .get(&(key.clone(), consumer.clone()))
            .unwrap_or(&empty);
        let unread = c.held.values().filter(|h| !h.read).count() as u64;
        let mut last_read = vec![None; status.last_read.len()];
        for (&(p, o), h) in &c.held {
            if h.read
                && let Some(l) = last_read.get_mut(p as usize)
            {
                *l = Some(o);
            }
        }
        let name = format!("{}/{} ({consumer})", key.0, key.1);
        let mut errors = Vec::new();
        if status.unread != unread {
            errors.push(format!(
                "{name}: unread {} where the model has {unread} delivered and not read",
                status.unread
            ));
        }
        if status.last_read != last_read {
            errors.push(format!(
                "{name}: last read {:?} where the model has {last_read:?}",
                status.last_read
            ));
        }
        if let Some(p) = position {
            let model = c.held.get(&(p.partition, p.offset));
            let engine = status.receipt.map(|r| r.read_at.is_some());
            if engine != model.map(|h| h.read) {
                errors.push(format!(
                    "{name}: the receipt of {}/{} is {:?} (read?) where the model has {:?}",
                    p.partition,
                    p.offset,
                    engine,
                    model.map(|h| h.read)
                ));
            }
        }
        for e in errors {
            self.fail(oracle, e);
        }
    }
}
