//! Retention in the model (SPEC 8): every truncation the engine asks the store for is checked
//! when it leaves the engine.
//!
//! Oracles: `retention-prefix` (a cut never passes the committed head, so no hole can open; a
//! stream's first offset never goes back), `retention-limits` (a cut removes only what a
//! limit of the stream's policy allows: `max_events`, `max_age` against the latest wall
//! time seen, `max_bytes` over payloads and keys), `retention-keeps-unconsumed` (with
//! `keep_unconsumed`, nothing below a cut is unacknowledged by a subscription), and, for
//! cross-service streams, nothing below a cut is unconfirmed by the broker (`relay-order`).

use super::Checker;
use super::model::covers;
use tributary_core::{RetentionPolicy, StreamName};

impl Checker {
    /// A `Truncate` leaves the engine.
    pub(super) fn truncate_out(&mut self, stream: &StreamName, partition: u32, before: u64) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        if s.delete_requested {
            return;
        }
        let p = partition as usize;
        let head = s.heads.get(p).copied().unwrap_or(0);
        let mut errors: Vec<(&'static str, String)> = Vec::new();
        let at = format!("{stream}/{partition}");
        if before > head {
            errors.push((
                "retention-prefix",
                format!("{at}: a cut keeps from {before}, past the committed head {head}"),
            ));
        }
        let policy: Option<RetentionPolicy> = s.config.retention;
        let allowed = match policy.filter(|p| !p.is_unlimited()) {
            None if stream.is_dlq() => u64::MAX,
            None => 0,
            Some(pol) => {
                let mut allowed = 0u64;
                if let Some(m) = pol.max_events {
                    allowed = allowed.max(head.saturating_sub(m));
                }
                let evs: Vec<(u64, &super::model::EvM)> = s
                    .events
                    .range((partition, 0)..(partition, u64::MAX))
                    .map(|(&(_, o), e)| (o, e))
                    .collect();
                if let Some(age) = pol.max_age {
                    let threshold = self.max_wall.saturating_sub(age.as_millis() as u64);
                    let cut = evs
                        .iter()
                        .filter(|(o, _)| *o < head)
                        .find(|(_, e)| e.ts >= threshold)
                        .map_or(head, |(o, _)| *o);
                    allowed = allowed.max(cut);
                }
                if let Some(max_bytes) = pol.max_bytes {
                    // Over every event written (a store may hold some the engine has not
                    // confirmed): more tail events only raise the cut.
                    let mut tail = 0u64;
                    let mut cut = evs.first().map_or(0, |(o, _)| *o);
                    for (o, e) in evs.iter().rev() {
                        tail += e.bytes;
                        if tail > max_bytes {
                            cut = o + 1;
                            break;
                        }
                    }
                    allowed = allowed.max(cut);
                }
                allowed
            }
        };
        if before > allowed {
            errors.push((
                "retention-limits",
                format!(
                    "{at}: a cut keeps from {before}, but the policy {policy:?} allows removing only below {allowed} (head {head})"
                ),
            ));
        }
        // A cut asked for before (repeated after a failure) was checked then.
        let from = s.cut_sent.get(p).copied().unwrap_or(0);
        if policy.is_some_and(|p| p.keep_unconsumed) && before > from {
            for d in self.unconsumed_below(stream, partition, from, before) {
                errors.push((
                    "retention-keeps-unconsumed",
                    format!("{at}: a cut keeps from {before}, but {d}"),
                ));
            }
        }
        if let Some(d) = self.unrelayed_below(stream, partition, before) {
            errors.push((
                "relay-order",
                format!("{at}: a cut keeps from {before}, but {d}"),
            ));
        }
        if let Some(s) = self.streams.get_mut(stream)
            && let Some(c) = s.cut_sent.get_mut(p)
        {
            *c = (*c).max(before);
        }
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    /// `MarkRead::UpTo`: every event delivered up to there is read, hence acknowledged (also
    /// one nacked and waiting to be sent again).
    pub(super) fn read_up_to_asked(
        &mut self,
        key: &super::SubKey,
        consumer: &tributary_core::ConsumerId,
        upto: tributary_core::Position,
    ) {
        if let Some(sub) = self.subs.get_mut(key) {
            let cursor = sub.cursor_key(consumer);
            let cp = sub.part(cursor, upto.partition);
            let read: Vec<u64> = cp.delivered.range(..=upto.offset).copied().collect();
            cp.ack_asked.extend(read);
        }
    }

    /// A truncation the store confirmed (or the engine announced).
    pub(super) fn truncated(&mut self, stream: &StreamName, partition: u32, first: u64) {
        if let Some(s) = self.streams.get_mut(stream) {
            let p = partition as usize;
            if let Some(f) = s.first.get_mut(p) {
                *f = (*f).max(first);
            }
            if let Some(c) = s.cut_sent.get_mut(p) {
                *c = (*c).max(first);
            }
        }
    }

    /// Offsets in `from..before` some subscription has not acknowledged, described.
    fn unconsumed_below(
        &self,
        stream: &StreamName,
        partition: u32,
        from: u64,
        before: u64,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for ((st, name), sub) in &self.subs {
            // At-most-once: an event is consumed when the engine decides to send it (its
            // position moves first, in memory, and is saved before the send), which the model
            // cannot see while the send is held for the save.
            if st != stream
                || !sub.exists
                || sub.delete_requested
                || sub.resets > 0
                || sub.delivery == tributary_core::DeliverySemantics::AtMostOnce
            {
                continue;
            }
            let Some(start) = sub
                .start_offsets
                .as_ref()
                .and_then(|s| s.get(partition as usize).copied())
            else {
                continue;
            };
            let dead = |o: u64| {
                self.dead_letters.iter().any(|(s, n, pos)| {
                    s == stream && n == name && pos.partition == partition && pos.offset == o
                })
            };
            // A consumer's own position (broadcast, read receipts) is known to the engine once
            // saved, or while it has deliveries in this life; one never saved is forgotten by
            // a restart, and starts again like a new consumer.
            let parts: Vec<_> = sub
                .cursors
                .iter()
                .filter(|(k, c)| {
                    !c.reset
                        && (k.is_none()
                            || c.parts.values().any(|p| {
                                p.saved.is_some()
                                    || p.last_sent.is_some()
                                    || !p.delivered_now.is_empty()
                            }))
                })
                .map(|(k, c)| (k, c.parts.get(&partition)))
                .collect();
            if parts.is_empty() && before > start.max(from) {
                out.push(format!("{name} starts at {start} and has no position yet"));
                continue;
            }
            for (consumer, cp) in parts {
                let first_unacked = (from.max(start)..before).find(|&o| {
                    let acked = cp.is_some_and(|cp| {
                        cp.is_acked(o)
                            || cp.ack_asked.contains(&o)
                            || cp.last_sent.as_ref().is_some_and(|s| covers(s, o))
                    });
                    !acked && !dead(o)
                });
                if let Some(o) = first_unacked {
                    out.push(format!(
                        "{name} cursor {consumer:?} has not acknowledged offset {o}"
                    ));
                }
            }
        }
        out
    }
}
