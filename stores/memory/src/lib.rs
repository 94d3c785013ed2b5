//! # tributary-store-memory
//!
//! A synchronous store that carries out every [`StorageRequest`] of `tributary-core` in
//! memory, with the semantics every store must have (see `tributary_core::storage`): writes
//! are atomic and idempotent when repeated identically, an append at taken offsets with other
//! events is a `Conflict`, a cursor of a deleted subscription is `NotFound`.
//!
//! It serves the core's tests, examples, benchmarks and the simulator. It is not a stand-in
//! for the SQLite or PostgreSQL stores: nothing here survives the process.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use tributary_core::{
    AppendWrite, ConsumerId, CursorRecord, DedupRecord, Engine, Event, Input, Now, Output,
    PartitionHead, ReceiptRecord, RecoveredState, RelayRecord, SchemaRecord, StorageError,
    StorageReply, StorageRequest, StorageResult, StreamConfig, StreamName, StreamRecord, SubId,
    SubscriptionRecord, UnixMillis,
};

#[derive(Debug, Clone, Default)]
struct StoredPartition {
    first: u64,
    events: Vec<Arc<Event>>,
    /// The timestamp of the last event removed by retention (kept when none is left).
    removed_ts: UnixMillis,
}

impl StoredPartition {
    fn next(&self) -> u64 {
        self.first + self.events.len() as u64
    }
    fn get(&self, offset: u64) -> Option<&Arc<Event>> {
        offset
            .checked_sub(self.first)
            .and_then(|i| self.events.get(i as usize))
    }
}

#[derive(Debug, Clone)]
struct StoredStream {
    config: StreamConfig,
    parts: Vec<StoredPartition>,
    dedup: BTreeMap<(u32, u64), DedupRecord>,
}

/// Outcomes of the last appends per stream, kept to order pipelined writes.
const OUTCOMES_KEPT: usize = 256;

/// The in-memory store. Clone it to keep a snapshot (the simulator does, to model a crash).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    streams: BTreeMap<StreamName, StoredStream>,
    /// Per stream: whether each recent append (by `seq`) committed.
    outcomes: BTreeMap<StreamName, BTreeMap<u64, bool>>,
    subs: BTreeMap<SubId, SubscriptionRecord>,
    cursors: BTreeMap<(SubId, Option<ConsumerId>, u32), CursorRecord>,
    receipts: BTreeMap<(SubId, ConsumerId, u32, u64), ReceiptRecord>,
    relays: BTreeMap<(StreamName, u32), RelayRecord>,
    schemas: BTreeMap<(String, u32), SchemaRecord>,
}

fn ok(r: StorageReply) -> StorageResult {
    StorageResult::Ok(r)
}

fn err(e: StorageError) -> StorageResult {
    StorageResult::Err(e)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Carries out one request.
    pub fn execute(&mut self, req: &StorageRequest) -> StorageResult {
        match req {
            StorageRequest::Recover => ok(StorageReply::Recovered(self.recovered())),
            StorageRequest::LoadDedup {
                stream,
                live_at,
                after,
                limit,
            } => {
                let Some(s) = self.streams.get(stream) else {
                    return ok(StorageReply::Dedup(Vec::new()));
                };
                let from = after.map_or((0, 0), |(p, o)| (p, o.saturating_add(1)));
                let page = s
                    .dedup
                    .range(from..)
                    .map(|(_, r)| *r)
                    .filter(|r| r.expires_at > *live_at)
                    .take(*limit as usize)
                    .collect();
                ok(StorageReply::Dedup(page))
            }
            StorageRequest::CreateStream(config) => match self.streams.get(&config.name) {
                Some(s) if s.config == *config => ok(StorageReply::Done),
                Some(_) => err(StorageError::Conflict(format!(
                    "stream {} exists with another configuration",
                    config.name
                ))),
                None => {
                    let parts = vec![StoredPartition::default(); config.partitions as usize];
                    self.streams.insert(
                        config.name.clone(),
                        StoredStream {
                            config: config.clone(),
                            parts,
                            dedup: BTreeMap::new(),
                        },
                    );
                    ok(StorageReply::Done)
                }
            },
            StorageRequest::DeleteStream(name) => {
                self.streams.remove(name);
                self.outcomes.remove(name);
                self.relays.retain(|(s, _), _| s != name);
                let gone: Vec<SubId> = self
                    .subs
                    .iter()
                    .filter(|(_, s)| s.config.stream == *name)
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    self.delete_subscription(id);
                }
                ok(StorageReply::Done)
            }
            StorageRequest::Append(w) => {
                let r = match w.after {
                    // Pipelined: commit only after the write before it committed.
                    Some(p) if self.append_outcome(&w.stream, p) != Some(true) => {
                        err(StorageError::Unavailable(format!(
                            "write {p} of stream {} did not commit before write {}",
                            w.stream, w.seq
                        )))
                    }
                    _ => self.append(w),
                };
                let kept = self.outcomes.entry(w.stream.clone()).or_default();
                kept.insert(w.seq, matches!(r, StorageResult::Ok(_)));
                while kept.len() > OUTCOMES_KEPT {
                    kept.pop_first();
                }
                r
            }
            StorageRequest::Read {
                stream,
                partition,
                from,
                max,
            } => {
                let Some(part) = self
                    .streams
                    .get(stream)
                    .and_then(|s| s.parts.get(*partition as usize))
                else {
                    return err(StorageError::NotFound(format!(
                        "stream {stream} partition {partition}"
                    )));
                };
                let start = from
                    .saturating_sub(part.first)
                    .min(part.events.len() as u64) as usize;
                let end = (start + *max as usize).min(part.events.len());
                ok(StorageReply::Events(part.events[start..end].to_vec()))
            }
            StorageRequest::FindOffset {
                stream,
                partition,
                at,
            } => {
                let Some(part) = self
                    .streams
                    .get(stream)
                    .and_then(|s| s.parts.get(*partition as usize))
                else {
                    return err(StorageError::NotFound(format!(
                        "stream {stream} partition {partition}"
                    )));
                };
                let i = part.events.partition_point(|e| e.timestamp < *at);
                ok(StorageReply::Offset(part.first + i as u64))
            }
            StorageRequest::SaveSubscription(rec) => {
                if !self.streams.contains_key(&rec.config.stream) {
                    return err(StorageError::NotFound(format!(
                        "stream {}",
                        rec.config.stream
                    )));
                }
                self.subs.insert(rec.id, rec.clone());
                ok(StorageReply::Done)
            }
            StorageRequest::DeleteSubscription(id) => {
                self.delete_subscription(*id);
                ok(StorageReply::Done)
            }
            StorageRequest::SaveCursor(c) => {
                if !self.subs.contains_key(&c.sub) {
                    return err(StorageError::NotFound(format!("subscription {:?}", c.sub)));
                }
                self.cursors
                    .insert((c.sub, c.consumer.clone(), c.partition), c.clone());
                ok(StorageReply::Done)
            }
            StorageRequest::RetentionCut {
                stream,
                partition,
                max_bytes,
            } => {
                let Some(part) = self
                    .streams
                    .get(stream)
                    .and_then(|s| s.parts.get(*partition as usize))
                else {
                    return err(StorageError::NotFound(format!("stream {stream}")));
                };
                let mut tail = 0u64;
                let mut keep = part.first;
                for e in part.events.iter().rev() {
                    tail += (e.payload.len() + e.key.as_ref().map_or(0, |k| k.len())) as u64;
                    if tail > *max_bytes {
                        keep = e.offset + 1;
                        break;
                    }
                }
                ok(StorageReply::Offset(keep))
            }
            StorageRequest::Truncate {
                stream,
                partition,
                before,
            } => {
                let Some(part) = self
                    .streams
                    .get_mut(stream)
                    .and_then(|s| s.parts.get_mut(*partition as usize))
                else {
                    return err(StorageError::NotFound(format!("stream {stream}")));
                };
                let before = *before;
                if before > part.first {
                    let n = ((before - part.first) as usize).min(part.events.len());
                    if let Some(last) = part.events.get(n.saturating_sub(1)) {
                        part.removed_ts = part.removed_ts.max(last.timestamp);
                    }
                    part.events.drain(..n);
                    part.first = before;
                }
                ok(StorageReply::Done)
            }
            StorageRequest::ExpireDedup { stream, at } => {
                if let Some(s) = self.streams.get_mut(stream) {
                    s.dedup.retain(|_, r| r.expires_at > *at);
                }
                ok(StorageReply::Done)
            }
            StorageRequest::SaveRelay(r) => {
                if !self.streams.contains_key(&r.stream) {
                    return err(StorageError::NotFound(format!("stream {}", r.stream)));
                }
                self.relays
                    .insert((r.stream.clone(), r.partition), r.clone());
                ok(StorageReply::Done)
            }
            StorageRequest::SaveReceipts(list) => {
                if let Some(r) = list.iter().find(|r| !self.subs.contains_key(&r.sub)) {
                    return err(StorageError::NotFound(format!("subscription {:?}", r.sub)));
                }
                for r in list {
                    let k = (r.sub, r.consumer.clone(), r.partition, r.offset);
                    match self.receipts.get_mut(&k) {
                        Some(old) => {
                            old.delivered_at = old.delivered_at.max(r.delivered_at);
                            old.read_at = old.read_at.or(r.read_at);
                            old.timed_out = old.timed_out.max(r.timed_out);
                        }
                        None => {
                            self.receipts.insert(k, r.clone());
                        }
                    }
                }
                ok(StorageReply::Done)
            }
            StorageRequest::LoadReceipts { sub, after, limit } => {
                let page = self
                    .receipts
                    .iter()
                    .filter(|(k, _)| k.0 == *sub)
                    .filter(|(k, _)| {
                        after
                            .as_ref()
                            .is_none_or(|(c, p, o)| (&k.1, k.2, k.3) > (c, *p, *o))
                    })
                    .take(*limit as usize)
                    .map(|(_, r)| r.clone())
                    .collect();
                ok(StorageReply::Receipts(page))
            }
            StorageRequest::SaveSchemas(list) => {
                for r in list {
                    self.schemas
                        .insert((r.event_type.clone(), r.version), r.clone());
                }
                ok(StorageReply::Done)
            }
            StorageRequest::LoadSchemas { after, limit } => {
                let page = self
                    .schemas
                    .values()
                    .filter(|r| {
                        after
                            .as_ref()
                            .is_none_or(|(t, v)| (&r.event_type, r.version) > (t, *v))
                    })
                    .take(*limit as usize)
                    .cloned()
                    .collect();
                ok(StorageReply::Schemas(page))
            }
            StorageRequest::DeleteCursor { sub, consumer } => {
                self.cursors
                    .retain(|(s, c, _), _| *s != *sub || c.as_ref() != Some(consumer));
                self.receipts
                    .retain(|(s, c, _, _), _| *s != *sub || c != consumer);
                ok(StorageReply::Done)
            }
            StorageRequest::ExpireReceipts { sub, before } => {
                self.receipts.retain(|k, r| {
                    k.0 != *sub
                        || r.read_at.unwrap_or(r.delivered_at).max(r.delivered_at) >= *before
                });
                ok(StorageReply::Done)
            }
        }
    }

    fn delete_subscription(&mut self, id: SubId) {
        self.subs.remove(&id);
        self.cursors.retain(|(s, _, _), _| *s != id);
        self.receipts.retain(|(s, _, _, _), _| *s != id);
    }

    fn append(&mut self, w: &AppendWrite) -> StorageResult {
        let Some(s) = self.streams.get_mut(&w.stream) else {
            return err(StorageError::NotFound(format!("stream {}", w.stream)));
        };
        // Check everything before changing anything: the write is atomic.
        let mut nexts: Vec<u64> = s.parts.iter().map(StoredPartition::next).collect();
        let mut new = Vec::new();
        for e in &w.events {
            let Some(part) = s.parts.get(e.partition as usize) else {
                return err(StorageError::NotFound(format!("partition {}", e.partition)));
            };
            let next = &mut nexts[e.partition as usize];
            if let Some(existing) = part.get(e.offset) {
                if existing.event_id != e.event_id {
                    return err(StorageError::Conflict(format!(
                        "partition {} offset {} holds another event",
                        e.partition, e.offset
                    )));
                }
            } else if e.offset == *next {
                *next += 1;
                new.push(e.clone());
            } else {
                return err(StorageError::Conflict(format!(
                    "partition {} offset {}: the next offset is {}",
                    e.partition, e.offset, next
                )));
            }
        }
        for e in new {
            s.parts[e.partition as usize].events.push(e);
        }
        for r in &w.dedup {
            s.dedup.insert((r.partition, r.offset), *r);
        }
        ok(StorageReply::Done)
    }

    fn recovered(&self) -> RecoveredState {
        RecoveredState {
            streams: self
                .streams
                .values()
                .map(|s| StreamRecord {
                    config: s.config.clone(),
                    heads: s
                        .parts
                        .iter()
                        .map(|p| PartitionHead {
                            first: p.first,
                            next: p.next(),
                            last_timestamp: p
                                .events
                                .last()
                                .map_or(p.removed_ts, |e| e.timestamp.max(p.removed_ts)),
                        })
                        .collect(),
                })
                .collect(),
            subscriptions: self.subs.values().cloned().collect(),
            cursors: self.cursors.values().cloned().collect(),
            relays: self.relays.values().cloned().collect(),
        }
    }

    /// Whether the append `seq` of `stream` committed (`None`: not seen, or long ago).
    pub fn append_outcome(&self, stream: &StreamName, seq: u64) -> Option<bool> {
        self.outcomes.get(stream).and_then(|o| o.get(&seq).copied())
    }

    /// The dedup ids stored for a stream, for tests.
    pub fn dedup_ids(&self, stream: &StreamName) -> usize {
        self.streams.get(stream).map_or(0, |s| s.dedup.len())
    }

    /// The events stored in a partition, for tests and oracles.
    pub fn events(&self, stream: &StreamName, partition: u32) -> Vec<Arc<Event>> {
        self.streams
            .get(stream)
            .and_then(|s| s.parts.get(partition as usize))
            .map(|p| p.events.clone())
            .unwrap_or_default()
    }

    /// The cursor records stored, for tests and oracles.
    pub fn cursors(&self) -> Vec<CursorRecord> {
        self.cursors.values().cloned().collect()
    }

    /// Whether a stream is stored.
    pub fn has_stream(&self, name: &StreamName) -> bool {
        self.streams.contains_key(name)
    }
}

/// Feeds an input to the engine, carries out every storage request it makes on `store` at
/// once, and returns every other output (replies, deliveries, replay items, notices), until
/// the engine has nothing more to do at `now`.
pub fn run(engine: &mut Engine, store: &mut MemoryStore, now: Now, input: Input) -> Vec<Output> {
    engine.handle_input(now, input);
    settle(engine, store, now)
}

/// Drains the engine's outputs, carrying out storage requests on `store`, until it is idle.
pub fn settle(engine: &mut Engine, store: &mut MemoryStore, now: Now) -> Vec<Output> {
    let mut outs = Vec::new();
    while let Some(o) = engine.poll_output() {
        match o {
            Output::Storage { op, req } => {
                let result = store.execute(&req);
                engine.handle_input(now, Input::StorageDone { op, result });
            }
            other => outs.push(other),
        }
    }
    outs
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::{EventId, NewEvent};

    fn ev(stream: &StreamName, offset: u64, id: u8) -> Arc<Event> {
        Arc::new(Event::from_new(
            NewEvent::new("t", vec![]),
            EventId::from_bytes([id; 16]),
            stream.clone(),
            0,
            offset,
            UnixMillis(offset),
        ))
    }

    #[test]
    fn append_is_atomic_and_idempotent() {
        let name = StreamName::new("s").unwrap();
        let mut st = MemoryStore::new();
        st.execute(&StorageRequest::CreateStream(StreamConfig::persistent(
            name.clone(),
        )));
        let w = |events| {
            StorageRequest::Append(Arc::new(AppendWrite {
                stream: name.clone(),
                seq: 0,
                after: None,
                events,
                dedup: vec![],
            }))
        };
        assert_eq!(
            st.execute(&w(vec![ev(&name, 0, 1), ev(&name, 1, 2)])),
            ok(StorageReply::Done)
        );
        // The identical write again: accepted, nothing added.
        assert_eq!(
            st.execute(&w(vec![ev(&name, 0, 1), ev(&name, 1, 2)])),
            ok(StorageReply::Done)
        );
        assert_eq!(st.events(&name, 0).len(), 2);
        // Another event at a taken offset: conflict, and the new one after it is not written.
        assert!(matches!(
            st.execute(&w(vec![ev(&name, 2, 3), ev(&name, 1, 9)])),
            StorageResult::Err(StorageError::Conflict(_))
        ));
        assert_eq!(st.events(&name, 0).len(), 2);
        // A gap: conflict.
        assert!(matches!(
            st.execute(&w(vec![ev(&name, 5, 4)])),
            StorageResult::Err(StorageError::Conflict(_))
        ));
    }
}
