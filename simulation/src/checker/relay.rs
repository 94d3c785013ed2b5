//! The cross-service relay in the model (SPEC 9). The simulator is the broker's publisher: it
//! answers each `Output::Publish` with `Input::PublishDone` (confirmed or failed, sometimes
//! twice), and the checker follows both.
//!
//! Oracles: `relay-order` (per partition, publishes go in offset order: each is the next
//! offset, or after a failure the failed one again, or after a restart the saved position; a
//! publish carries the stored event, so a duplicate has the same message id; retention never
//! removes what the broker has not confirmed) and `relay-confirmed` (a saved relay position
//! never goes back and covers only offsets the broker confirmed). The final checks add that
//! every position reached its partition's head once the publisher is healthy.

use super::Checker;
use std::collections::{BTreeMap, BTreeSet};
use tributary_core::{
    Event, EventId, OpId, PublishResult, RecoveredState, RelayRecord, Scope, StreamName,
};

/// One partition of a cross-service stream, as the model sees its relay.
#[derive(Debug, Clone, Default)]
pub struct RelayPartM {
    /// The offset the next publish must carry (ephemeral streams may skip dropped events).
    pub expected: u64,
    /// Publishes waiting for the broker, by offset.
    pub flying: BTreeMap<u64, OpId>,
    /// Every offset below is known confirmed (the position recovered or saved).
    pub floor: u64,
    /// The last position the engine asked to save.
    pub saved: u64,
    /// The highest position a save of which committed.
    pub saved_ok: u64,
    /// Offsets the broker confirmed (it has them), in any engine life.
    pub confirmed: BTreeSet<u64>,
    /// The message id each offset was first published with.
    pub ids: BTreeMap<u64, EventId>,
}

impl Checker {
    fn relay_part(&mut self, stream: &StreamName, p: u32) -> &mut RelayPartM {
        self.relays
            .entry(stream.clone())
            .or_default()
            .entry(p)
            .or_default()
    }

    /// `Output::Publish`.
    pub(super) fn publish_out(&mut self, op: OpId, stream: &StreamName, event: &Event) {
        self.check_content("relay-order", event, None);
        let ephemeral = self.streams.get(stream).is_some_and(|s| s.ephemeral());
        let cross = self
            .streams
            .get(stream)
            .is_some_and(|s| s.config.scope == Scope::CrossService);
        let (p, o) = (event.partition, event.offset);
        let mut errors = Vec::new();
        if !cross && self.streams.contains_key(stream) {
            errors.push(format!(
                "{stream}: published, but the stream is not cross-service"
            ));
        }
        let model_id = self
            .streams
            .get(stream)
            .and_then(|s| s.events.get(&(p, o)))
            .and_then(|e| e.id);
        let rp = self.relay_part(stream, p);
        let in_order = o == rp.expected || (ephemeral && o > rp.expected);
        if !in_order {
            errors.push(format!(
                "{stream}/{p}: published offset {o} where {} comes next",
                rp.expected
            ));
        }
        let first_id = *rp.ids.entry(o).or_insert(event.event_id);
        if first_id != event.event_id || model_id.is_some_and(|id| id != event.event_id) {
            errors.push(format!(
                "{stream}/{p}/{o}: published with message id {}, before with {first_id} (written {model_id:?})",
                event.event_id
            ));
        }
        rp.expected = o + 1;
        rp.flying.insert(o, op);
        self.publishes.insert(op, (stream.clone(), p, o));
        for d in errors {
            self.fail("relay-order", d);
        }
    }

    /// `Input::PublishDone`.
    pub(super) fn publish_done(&mut self, op: OpId, result: &PublishResult) {
        // A second answer to one publish (a duplicate confirm) changes nothing.
        let Some((stream, p, o)) = self.publishes.remove(&op) else {
            return;
        };
        let rp = self.relay_part(&stream, p);
        if matches!(result, PublishResult::Confirmed) {
            rp.confirmed.insert(o);
        }
        // An answer to a publish a go-back voided only frees room.
        if rp.flying.get(&o) != Some(&op) {
            return;
        }
        rp.flying.remove(&o);
        if let PublishResult::Failed(_) = result {
            rp.flying.retain(|&x, _| x < o);
            rp.expected = rp.expected.min(o);
        }
    }

    /// `SaveRelay` leaves the engine.
    pub(super) fn relay_save_out(&mut self, rec: &RelayRecord) {
        let rp = self.relay_part(&rec.stream, rec.partition);
        let mut errors = Vec::new();
        if rec.next < rp.saved {
            errors.push(format!(
                "{}/{}: relay position saved at {} after {}",
                rec.stream, rec.partition, rec.next, rp.saved
            ));
        }
        if let Some(o) = (rp.floor..rec.next).find(|o| !rp.confirmed.contains(o)) {
            errors.push(format!(
                "{}/{}: relay position {} saved, but the broker never confirmed offset {o}",
                rec.stream, rec.partition, rec.next
            ));
        }
        rp.saved = rp.saved.max(rec.next);
        for d in errors {
            self.fail("relay-confirmed", d);
        }
    }

    /// A `SaveRelay` committed.
    pub(super) fn relay_saved(&mut self, rec: &RelayRecord) {
        let rp = self.relay_part(&rec.stream, rec.partition);
        rp.saved_ok = rp.saved_ok.max(rec.next);
    }

    /// Recovery: each cross-service partition starts again from its saved position (zero
    /// without one), which covers every position saved before.
    pub(super) fn relays_recovered(&mut self, state: &RecoveredState) {
        self.publishes.clear();
        let saved: BTreeMap<(StreamName, u32), u64> = state
            .relays
            .iter()
            .map(|r| ((r.stream.clone(), r.partition), r.next))
            .collect();
        let mut errors = Vec::new();
        for rec in &state.streams {
            if rec.config.scope != Scope::CrossService {
                continue;
            }
            for p in 0..rec.config.partitions {
                // Retention may have removed more than the saved position covers (a cut the
                // engine made over confirms whose save a crash lost): what it removed was
                // confirmed (checked at the cut), and the relay goes on from the first event.
                let first = rec.heads.get(p as usize).map_or(0, |h| h.first);
                let next = saved
                    .get(&(rec.config.name.clone(), p))
                    .copied()
                    .unwrap_or(0);
                let next = next.max(first);
                let rp = self.relay_part(&rec.config.name, p);
                if next < rp.saved_ok {
                    errors.push(format!(
                        "{}/{p}: relay position recovered at {next}, below the saved {}",
                        rec.config.name, rp.saved_ok
                    ));
                }
                rp.expected = next;
                rp.flying.clear();
                rp.floor = next;
                rp.saved = next;
            }
        }
        for d in errors {
            self.fail("relay-confirmed", d);
        }
    }

    /// Offsets below `before` of a cross-service stream the broker has not confirmed.
    pub(super) fn unrelayed_below(
        &self,
        stream: &StreamName,
        partition: u32,
        before: u64,
    ) -> Option<String> {
        let s = self.streams.get(stream)?;
        if s.config.scope != Scope::CrossService || s.ephemeral() {
            return None;
        }
        let rp = self.relays.get(stream)?.get(&partition);
        let floor = rp.map_or(0, |r| r.floor);
        let from = s.cut_sent.get(partition as usize).copied().unwrap_or(0);
        (from.max(floor)..before)
            .find(|o| !rp.is_some_and(|r| r.confirmed.contains(o)))
            .map(|o| format!("the broker has not confirmed offset {o}"))
    }
}
