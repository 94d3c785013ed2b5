//! The final checks, once the liveness phase converged: what the store holds against the
//! model, and what each subscription was given.

use crate::checker::{Checker, Violation, digest_event};
use crate::workload::Probe;
use std::collections::BTreeMap;
use tributary_core::{StorageReply, StorageRequest, StorageResult};
use tributary_store_memory::MemoryStore;

fn violation(oracle: &'static str, detail: String) -> Option<Violation> {
    Some(Violation { oracle, detail })
}

/// Checks the store and the deliveries of one node; the first broken rule, if any.
pub fn final_checks(
    store: &MemoryStore,
    checker: &Checker,
    probe: Option<&Probe>,
    clock_went_back: bool,
) -> Option<Violation> {
    let mut store = store.clone();
    let StorageResult::Ok(StorageReply::Recovered(state)) = store.execute(&StorageRequest::Recover)
    else {
        return violation("durable", "the store cannot recover".into());
    };
    let mut heads: BTreeMap<_, Vec<u64>> = BTreeMap::new();
    let mut firsts: BTreeMap<_, Vec<u64>> = BTreeMap::new();
    for rec in &state.streams {
        let name = &rec.config.name;
        let window = rec.config.dedup_window.as_millis() as u64;
        let mut ids = BTreeMap::new();
        for (p, head) in rec.heads.iter().enumerate() {
            let events = store.events(name, p as u32);
            let mut last_ts = 0;
            for (i, e) in events.iter().enumerate() {
                let want = head.first + i as u64;
                if e.offset != want || e.partition != p as u32 {
                    return violation(
                        "offsets-dense",
                        format!(
                            "{name}/{p}: the store holds offset {} where {want} belongs",
                            e.offset
                        ),
                    );
                }
                if e.timestamp.0 < last_ts {
                    return violation(
                        "durable",
                        format!(
                            "{name}/{p}/{}: timestamp {} after {last_ts}",
                            e.offset, e.timestamp.0
                        ),
                    );
                }
                last_ts = e.timestamp.0;
                // Timestamps of two copies of an id are at least a window apart (the second
                // was stamped after the first expired), unless the wall clock went back.
                if window > 0
                    && !clock_went_back
                    && let Some((q, o, ts)) = ids.insert(e.event_id, (p, e.offset, e.timestamp.0))
                    && e.timestamp.0.abs_diff(ts) < window
                {
                    return violation(
                        "dedup",
                        format!(
                            "{name}: id {} is stored at {q}/{o} and again at {p}/{} within the dedup window",
                            e.event_id, e.offset
                        ),
                    );
                }
            }
        }
        // Cross-service: once the broker is healthy, every event is confirmed and the saved
        // relay position reaches the head.
        if rec.config.scope == tributary_core::Scope::CrossService && checker.stream_is_stable(name)
        {
            for (p, head) in rec.heads.iter().enumerate() {
                let at = state
                    .relays
                    .iter()
                    .find(|r| &r.stream == name && r.partition == p as u32)
                    .map_or(0, |r| r.next);
                if at != head.next {
                    return violation(
                        "relay-confirmed",
                        format!(
                            "{name}/{p}: the saved relay position is {at}, the head {}",
                            head.next
                        ),
                    );
                }
            }
        }
        heads.insert(name.clone(), rec.heads.iter().map(|h| h.next).collect());
        firsts.insert(name.clone(), rec.heads.iter().map(|h| h.first).collect());
        if !checker.stream_is_stable(name) {
            continue;
        }
        for (p, o, id, digest) in checker.confirmed_events(name) {
            // Retention removed it (the oracles checked each cut when it was asked for).
            if rec.heads.get(p as usize).is_some_and(|h| o < h.first) {
                continue;
            }
            let got = store.events(name, p).into_iter().find(|e| e.offset == o);
            match got {
                None => {
                    return violation(
                        "durable",
                        format!("{name}/{p}/{o}: a committed event is not in the store"),
                    );
                }
                Some(e) if id.is_some_and(|id| id != e.event_id) || digest_event(&e) != digest => {
                    return violation(
                        "durable",
                        format!(
                            "{name}/{p}/{o}: the store holds another event than the one committed"
                        ),
                    );
                }
                Some(_) => {}
            }
        }
    }
    // At-least-once coverage: every cursor of every persistent subscription was given every
    // event from its start to the head (or it was dead-lettered after a delivery).
    // Only subscriptions the liveness phase saw converge (the others were deleted).
    let live: std::collections::BTreeSet<_> = probe
        .map(|p| {
            p.subs
                .values()
                .flatten()
                .map(|i| (i.config.stream.clone(), i.config.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    for c in checker.coverage() {
        if !checker.stream_is_stable(&c.stream)
            || !live.contains(&(c.stream.clone(), c.subscription.clone()))
        {
            continue;
        }
        let Some(head) = heads
            .get(&c.stream)
            .and_then(|h| h.get(c.partition as usize))
        else {
            continue;
        };
        // What retention removed is not required (each cut was checked when asked for).
        let first = firsts
            .get(&c.stream)
            .and_then(|f| f.get(c.partition as usize))
            .copied()
            .unwrap_or(0);
        if let Some(o) = (c.start.max(first)..*head).find(|o| !c.delivered.contains(o)) {
            return violation(
                "at-least-once",
                format!(
                    "{}/{} cursor {:?} partition {}: offset {o} (of {}..{head}) was never delivered",
                    c.stream, c.subscription, c.consumer, c.partition, c.start
                ),
            );
        }
    }
    // Dead letters are in the dead letter stream.
    for (stream, sub, pos) in checker.dead_letters() {
        let Some(dlq) = stream.dlq() else { continue };
        let found = store.events(&dlq, 0).iter().any(|e| {
            let h = |k: &str| e.headers.get(k).map(String::as_str);
            h("x-original-stream") == Some(stream.as_str())
                && h("x-original-partition") == Some(&pos.partition.to_string())
                && h("x-original-offset") == Some(&pos.offset.to_string())
                && h("x-subscription") == Some(sub.as_str())
        });
        if !found {
            return violation(
                "dead-letters",
                format!(
                    "{stream}/{sub}: {}/{} was announced dead-lettered but {dlq} does not hold it",
                    pos.partition, pos.offset
                ),
            );
        }
    }
    None
}
