//! Subscriptions in the model: deliveries, acks, nacks, terms, resets, saved positions.

use super::model::{Flight, lost_ack, position_of};
use super::{Checker, SubKey};
use std::time::Duration;
use tributary_core::{
    Config, ConnId, ConsumerId, CursorRecord, Delivered, DeliverySemantics, Error, Notice,
    Position, Reply, StreamName, SubscriptionInfo, SubscriptionMode, SubscriptionName,
};

impl Checker {
    /// Events delivered to a consumer.
    pub(super) fn deliver(
        &mut self,
        conn: ConnId,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: &ConsumerId,
        events: &[Delivered],
    ) {
        let key: SubKey = (stream.clone(), subscription.clone());
        let attachment = self.attached.get(&(key.clone(), consumer.clone())).cloned();
        if attachment.as_ref().is_none_or(|a| a.conn != conn) {
            self.fail(
                "delivered-to-attached",
                format!(
                    "{} events of {stream}/{subscription} delivered to {consumer} on connection {}, where it is not attached",
                    events.len(),
                    conn.0
                ),
            );
        }
        let reader = self
            .subs
            .get(&key)
            .map(|s| (s.config.schema_versions.clone(), s.config.strict_versions))
            .unwrap_or_default();
        for d in events {
            self.check_content("no-redelivery", &d.event, Some(&reader));
        }
        let unread_redeliveries = self.receipts_delivered(&key, consumer, events);
        let now = self.now.mono;
        let retry_max = self.cfg.storage_retry_max;
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        let cursor = sub.cursor_key(consumer);
        let ack_wait = sub.config.ack_wait;
        let ordered = sub.config.ordered_by_key;
        let max_deliveries = sub.config.max_deliveries;
        let amo = sub.delivery == DeliverySemantics::AtMostOnce;
        let durable = sub.durable;
        let resetting = sub.resetting > 0;
        let mut errors: Vec<(&'static str, String)> = Vec::new();
        let name = format!("{stream}/{subscription} ({consumer})");
        for d in events {
            let (p, o) = (d.event.partition, d.event.offset);
            let cp = sub.part(cursor.clone(), p);
            cp.delivered.insert(o);
            cp.delivered_now.insert(o);
            // Read receipts: delivered again after an unread timeout, outside the cursor.
            if unread_redeliveries.contains(&(p, o)) {
                continue;
            }
            let first_now = !amo || cp.amo_sent.insert(o);
            let last = cp.last_attempt.insert(o, d.attempt);
            let flight = cp.in_flight.insert(
                o,
                Flight {
                    consumer: consumer.clone(),
                    deadline: now.saturating_add(ack_wait),
                },
            );
            let not_before = cp.not_before.remove(&o);
            let other_key = match (&d.event.key, ordered) {
                (Some(k), true) if !amo => {
                    let set = cp.pending_keys.entry(k.clone()).or_default();
                    let other = set.iter().copied().find(|&x| x != o);
                    set.insert(o);
                    other
                }
                _ => None,
            };
            // While a reset of this subscription is unanswered, deliveries are only recorded.
            if resetting {
                continue;
            }
            // At-most-once saves the position before sending: covered is not delivered.
            if cp.is_acked(o) && !amo {
                errors.push((
                    "no-redelivery",
                    format!(
                        "{name}: {p}/{o} delivered again (attempt {}) after it was acknowledged",
                        d.attempt
                    ),
                ));
            }
            if amo {
                cp.in_flight.remove(&o);
                let again = durable && !cp.amo_ever.insert(o);
                if !first_now || again || d.attempt != 1 {
                    errors.push((
                        "no-redelivery",
                        format!(
                            "{name}: at-most-once {p}/{o} delivered again (attempt {})",
                            d.attempt
                        ),
                    ));
                }
                continue;
            }
            if let Some(f) = flight {
                if f.deadline > now {
                    errors.push((
                        "exclusive",
                        format!(
                            "{name}: {p}/{o} delivered while in flight at {} until {} (now {})",
                            f.consumer, f.deadline.0, now.0
                        ),
                    ));
                } else if last.is_some_and(|a| a >= max_deliveries)
                    && now < f.deadline.saturating_add(retry_max)
                {
                    errors.push((
                        "exclusive",
                        format!(
                            "{name}: {p}/{o} delivered again after {} deliveries (max_deliveries {max_deliveries}) without a dead letter failure",
                            last.unwrap_or(0)
                        ),
                    ));
                }
            }
            if let Some(nb) = not_before
                && nb > now
            {
                errors.push((
                    "exclusive",
                    format!("{name}: {p}/{o} redelivered at {} before {} (nack delay or dead letter retry)", now.0, nb.0),
                ));
            }
            if let Some(a) = last
                && d.attempt != a + 1
            {
                errors.push((
                    "exclusive",
                    format!(
                        "{name}: {p}/{o} delivered as attempt {} after attempt {a}",
                        d.attempt
                    ),
                ));
            }
            if let Some(other) = other_key {
                errors.push((
                    "ordered-by-key",
                    format!(
                        "{name}: {p}/{o} delivered while {p}/{other} of the same key is pending"
                    ),
                ));
            }
        }
        if !amo
            && !resetting
            && let Some(a) = attachment
            && let Some(c) = sub.cursors.get(&cursor)
        {
            let held: usize = c
                .parts
                .values()
                .map(|cp| {
                    cp.in_flight
                        .values()
                        .filter(|f| &f.consumer == consumer && f.deadline > now)
                        .count()
                })
                .sum();
            if held > a.max_in_flight as usize {
                errors.push((
                    "credit",
                    format!(
                        "{name}: {held} events in flight, over max_in_flight {}",
                        a.max_in_flight
                    ),
                ));
            }
        }
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    /// Whether the engine takes this list of positions (else it refuses the whole command and
    /// changes nothing): 1 to `max_ack_pending` positions, each in a partition of the stream.
    pub(super) fn positions_valid(&self, stream: &StreamName, positions: &[Position]) -> bool {
        let parts = self.streams.get(stream).map_or(0, |s| s.config.partitions);
        !positions.is_empty()
            && positions.len() as u64 <= self.cfg.max_ack_pending
            && positions.iter().all(|p| p.partition < parts)
    }

    /// Consumer groups: whether every position is of a partition `consumer` owns (the engine
    /// refuses the whole ack, nack or term otherwise). Other modes: true.
    pub(super) fn owns_all(
        &self,
        key: &SubKey,
        consumer: &ConsumerId,
        positions: &[Position],
    ) -> bool {
        let group = self
            .subs
            .get(key)
            .is_some_and(|s| s.config.mode == SubscriptionMode::ConsumerGroup);
        if !group {
            return true;
        }
        let owned = self.owned.get(&(key.clone(), consumer.clone()));
        positions
            .iter()
            .all(|p| owned.is_some_and(|o| o.contains(&p.partition)))
    }

    /// Whether `consumer` is attached on `conn` as the model knows it.
    /// `consumer` is attached on `conn` and the engine takes its commands (no delete of the
    /// subscription in flight: the engine refuses them, seed 8811133099873901841).
    pub(super) fn attached_on(&self, conn: ConnId, key: &SubKey, consumer: &ConsumerId) -> bool {
        self.attached
            .get(&(key.clone(), consumer.clone()))
            .is_some_and(|a| a.conn == conn)
            && self.subs.get(key).is_some_and(|s| !s.deleting)
    }

    pub(super) fn ack_in(
        &mut self,
        conn: ConnId,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: &ConsumerId,
        positions: &[Position],
    ) {
        let key = (stream.clone(), subscription.clone());
        if !self.attached_on(conn, &key, consumer) || !self.owns_all(&key, consumer, positions) {
            return;
        }
        self.receipts_acked(&key, consumer, positions);
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        let cursor = sub.cursor_key(consumer);
        for pos in positions {
            let cp = sub.part(cursor.clone(), pos.partition);
            cp.in_flight.remove(&pos.offset);
            cp.not_before.remove(&pos.offset);
            cp.unpend_key(pos.offset);
            cp.ack_asked.insert(pos.offset);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn nack_in(
        &mut self,
        conn: ConnId,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: &ConsumerId,
        positions: &[Position],
        delay: Option<Duration>,
        judged: bool,
    ) {
        let key = (stream.clone(), subscription.clone());
        if !self.attached_on(conn, &key, consumer)
            || !self.positions_valid(stream, positions)
            || !self.owns_all(&key, consumer, positions)
        {
            return;
        }
        let now = self.now.mono;
        let (base, max, retry_max) = (
            self.cfg.backoff_base,
            self.cfg.backoff_max,
            self.cfg.storage_retry_max,
        );
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        let cursor = sub.cursor_key(consumer);
        let max_deliveries = sub.config.max_deliveries;
        for pos in positions {
            let cp = sub.part(cursor.clone(), pos.partition);
            let o = pos.offset;
            if let Some(f) = cp.in_flight.remove(&o)
                && f.deadline > now
            {
                let attempt = cp.last_attempt.get(&o).copied().unwrap_or(1);
                let wait = if attempt >= max_deliveries {
                    retry_max
                } else {
                    delay.unwrap_or_else(|| Config::backoff(base, max, attempt.saturating_sub(1)))
                };
                // Seed 2303 (after a delete that failed): not judged, the nack may have been
                // refused, so no redelivery delay is expected of it.
                if judged {
                    cp.not_before.insert(o, now.saturating_add(wait));
                }
            }
        }
    }

    pub(super) fn term_in(
        &mut self,
        conn: ConnId,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: &ConsumerId,
        positions: &[Position],
        judged: bool,
    ) {
        let key = (stream.clone(), subscription.clone());
        if !self.attached_on(conn, &key, consumer)
            || !self.positions_valid(stream, positions)
            || !self.owns_all(&key, consumer, positions)
        {
            return;
        }
        let now = self.now.mono;
        let retry_max = self.cfg.storage_retry_max;
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        let cursor = sub.cursor_key(consumer);
        for pos in positions {
            let cp = sub.part(cursor.clone(), pos.partition);
            cp.not_before.remove(&pos.offset);
            if let Some(f) = cp.in_flight.remove(&pos.offset)
                && f.deadline > now
                && judged
            {
                cp.not_before
                    .insert(pos.offset, now.saturating_add(retry_max));
            }
        }
    }

    /// A consumer detached (or its connection closed): what it held is ready for others.
    pub(super) fn release_consumer(&mut self, key: &SubKey, consumer: &ConsumerId) {
        let Some(sub) = self.subs.get_mut(key) else {
            return;
        };
        let cursor = sub.cursor_key(consumer);
        if let Some(c) = sub.cursors.get_mut(&cursor) {
            for cp in c.parts.values_mut() {
                cp.in_flight.retain(|_, f| &f.consumer != consumer);
            }
        }
    }

    /// A consumer group member was told its share: what it held of other partitions was
    /// taken from it (ready for their new owner).
    pub(super) fn assignment(
        &mut self,
        key: &SubKey,
        consumer: &ConsumerId,
        generation: u64,
        partitions: &[u32],
    ) {
        self.owned
            .insert((key.clone(), consumer.clone()), partitions.to_vec());
        let (gen_now, owners) = self
            .generation_owners
            .entry(key.clone())
            .or_insert_with(|| (generation, std::collections::BTreeMap::new()));
        if *gen_now != generation {
            *gen_now = generation;
            owners.clear();
        }
        let mut clash = None;
        for p in partitions {
            match owners.get(p) {
                Some(other) if other != consumer => clash = Some((*p, other.clone())),
                _ => {
                    owners.insert(*p, consumer.clone());
                }
            }
        }
        if let Some((p, other)) = clash {
            self.fail(
                "group-owner",
                format!(
                    "{}/{}: partition {p} given to {consumer} and {other} in generation {generation}",
                    key.0, key.1
                ),
            );
        }
        let Some(sub) = self.subs.get_mut(key) else {
            return;
        };
        let cursor = sub.cursor_key(consumer);
        if let Some(c) = sub.cursors.get_mut(&cursor) {
            for (p, cp) in c.parts.iter_mut() {
                if !partitions.contains(p) {
                    cp.in_flight.retain(|_, f| &f.consumer != consumer);
                }
            }
        }
    }

    /// Forgets what a reset voids, for the cursors it moves.
    /// At the reply (`keep_deliveries`), saved positions are kept: they are the reset's.
    fn forget_reset(&mut self, key: &SubKey, consumer: Option<&ConsumerId>, keep_deliveries: bool) {
        let Some(sub) = self.subs.get_mut(key) else {
            return;
        };
        let one = match (consumer, sub.config.mode) {
            (Some(c), SubscriptionMode::Broadcast) => Some(Some(c.clone())),
            _ => None,
        };
        for (k, c) in sub.cursors.iter_mut() {
            if one.as_ref().is_some_and(|o| o != k) {
                continue;
            }
            c.reset = true;
            for cp in c.parts.values_mut() {
                // Deliveries stay possibly pending (an upper bound for ack counts): the reset
                // may fail, or deliver them again from its new position.
                let delivered = std::mem::take(&mut cp.delivered_now);
                let sent = cp.last_sent.take();
                cp.forget_volatile();
                cp.amo_ever.clear();
                cp.acked.clear();
                cp.delivered_now = delivered;
                if keep_deliveries {
                    // At the reply the reset is saved: the last confirmed position is the
                    // new one (or the reset failed and it is the old one).
                    cp.last_sent = sent;
                } else {
                    cp.saved = None;
                }
            }
        }
    }

    pub(super) fn reset_in(
        &mut self,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: Option<&ConsumerId>,
    ) {
        let key = (stream.clone(), subscription.clone());
        if let Some(sub) = self.subs.get_mut(&key) {
            sub.resetting += 1;
            sub.resets += 1;
        }
        self.forget_reset(&key, consumer, false);
    }

    pub(super) fn reset_done(
        &mut self,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: Option<&ConsumerId>,
    ) {
        let key = (stream.clone(), subscription.clone());
        if let Some(sub) = self.subs.get_mut(&key) {
            sub.resetting = sub.resetting.saturating_sub(1);
        }
        self.forget_reset(&key, consumer, true);
    }

    pub(super) fn ack_reply(
        &mut self,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: &ConsumerId,
        positions: &[Position],
        epoch: u64,
        r: &Result<Reply, Error>,
    ) {
        let Some((acked, ignored)) = r.as_ref().ok().and_then(Reply::settled_counts) else {
            return;
        };
        let key = (stream.clone(), subscription.clone());
        let reacked = self.unread_redelivered(&key, consumer, positions);
        // Acks of events delivered again after an unread timeout may not touch the cursor.
        let uncertain = |p: &Position| reacked.contains(&(p.partition, p.offset));
        let mut errors = Vec::new();
        let name = format!("{stream}/{subscription} ({consumer})");
        if acked + ignored != positions.len() {
            errors.push((
                "ack-durable",
                format!(
                    "{name}: Acked {{ acked {acked}, ignored {ignored} }} for {} positions",
                    positions.len()
                ),
            ));
        }
        if let Some(sub) = self.subs.get_mut(&key)
            && sub.resetting == 0
            && sub.resets == epoch
        {
            let cursor = sub.cursor_key(consumer);
            let durable = sub.durable;
            let ordered = sub.config.ordered_by_key;
            // A consumer group commits as its strategy says: only `AfterEach` answers an ack
            // once it is saved; the others answer at once and commit later.
            let commits_later = sub.config.mode == SubscriptionMode::ConsumerGroup
                && sub.config.commit != tributary_core::CommitStrategy::AfterEach;
            let distinct: std::collections::BTreeSet<Position> =
                positions.iter().copied().collect();
            let possible = distinct
                .iter()
                .filter(|p| {
                    let cp = sub.part(cursor.clone(), p.partition);
                    cp.delivered_now.contains(&p.offset) && !cp.acked.contains(&p.offset)
                })
                .count();
            if !ordered && acked > possible + reacked.len() {
                errors.push((
                    "ack-durable",
                    format!("{name}: {acked} positions acknowledged, but only {possible} of them were delivered and not yet acknowledged"),
                ));
            }
            if acked == positions.len() && !positions.is_empty() {
                for p in positions.iter().filter(|p| !uncertain(p)) {
                    let cp = sub.part(cursor.clone(), p.partition);
                    if commits_later {
                        cp.acked_uncommitted.insert(p.offset);
                        continue;
                    }
                    if durable
                        && !cp
                            .saved
                            .as_ref()
                            .is_some_and(|s| super::model::covers(s, p.offset))
                    {
                        errors.push((
                            "ack-durable",
                            format!(
                                "{name}: ack of {}/{} answered before a saved position covers it",
                                p.partition, p.offset
                            ),
                        ));
                    }
                    cp.acked.insert(p.offset);
                }
            }
        }
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    pub(super) fn sub_info(
        &mut self,
        stream: &StreamName,
        subscription: &SubscriptionName,
        info: &SubscriptionInfo,
    ) {
        let key = (stream.clone(), subscription.clone());
        let heads = self.heads_of(stream);
        let persistent = self.streams.get(stream).is_some_and(|s| !s.ephemeral());
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        if sub.resetting > 0 || sub.delete_requested {
            return;
        }
        let mut errors = Vec::new();
        for c in &info.cursors {
            for (p, (&floor, &next)) in c.floors.iter().zip(&c.next).enumerate() {
                let name = format!(
                    "{stream}/{subscription} cursor {:?} partition {p}",
                    c.consumer
                );
                if floor > next {
                    errors.push((
                        "ack-floor",
                        format!("{name}: floor {floor} above next {next}"),
                    ));
                }
                if persistent && heads.get(p).is_some_and(|&h| next > h) {
                    errors.push((
                        "ack-floor",
                        format!("{name}: next {next} above the head {:?}", heads.get(p)),
                    ));
                }
                let cp = sub.part(c.consumer.clone(), p as u32);
                if let Some(df) = cp.describe_floor
                    && floor < df
                {
                    errors.push((
                        "ack-floor",
                        format!("{name}: ack floor moved back from {df} to {floor}"),
                    ));
                }
                if let Some((saved, _)) = &cp.saved
                    && floor < *saved
                {
                    errors.push((
                        "ack-floor",
                        format!("{name}: ack floor {floor} is below the saved floor {saved}"),
                    ));
                }
                cp.describe_floor = Some(floor);
            }
        }
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    /// A position sent to the store: it must keep every acknowledged offset.
    pub(super) fn cursor_out(&mut self, rec: &CursorRecord) {
        let Some(key) = self.sub_ids.get(&rec.sub).cloned() else {
            return;
        };
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        if sub.resetting > 0 {
            return;
        }
        let cp = sub.part(rec.consumer.clone(), rec.partition);
        let new = position_of(rec);
        let mut errors = Vec::new();
        for (what, old) in [("saved", &cp.saved), ("last sent", &cp.last_sent)] {
            if let Some(old) = old
                && let Some(o) = lost_ack(&new, old)
            {
                errors.push((
                    "ack-floor",
                    format!(
                        "{}/{} cursor {:?} partition {}: saving floor {} loses offset {o}, acknowledged by the {what} position (floor {})",
                        key.0, key.1, rec.consumer, rec.partition, rec.floor, old.0
                    ),
                ));
            }
        }
        cp.last_sent = Some(new);
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    pub(super) fn notice(&mut self, n: &Notice) {
        if let Notice::DeadLettered {
            stream,
            subscription,
            position,
            ..
        } = n
        {
            self.dead_letters
                .push((stream.clone(), subscription.clone(), *position));
            let key = (stream.clone(), subscription.clone());
            if let Some(sub) = self.subs.get_mut(&key)
                && sub.config.mode.shared_position()
            {
                let cp = sub.part(None, position.partition);
                cp.unpend_key(position.offset);
                cp.in_flight.remove(&position.offset);
            }
        }
    }
}
