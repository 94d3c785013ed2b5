//! Property tests of the engine's invariants (SPEC 1-5): random operation sequences are run
//! on the harness (engine + in-memory store + virtual clock) and checked against a simple
//! model after every step.
//!
//! Failures are shrunk to a minimal operation sequence, printed, and persisted by proptest's
//! standard failure persistence (`proptest-regressions/`), so a failing case replays on the
//! next run.

mod common;

use common::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tributary_core::*;
use tributary_store_memory::MemoryStore;

// ---- helpers ----------------------------------------------------------------------------------

fn harness(config: Config) -> Harness {
    Harness::with(config, MemoryStore::new(), 11)
}

/// Every event of one partition, from its first available offset to its head, read in pages
/// of `page` events (small pages exercise paging and reads from the store).
fn read_partition(h: &mut Harness, stream: &str, partition: u32, page: u32) -> Vec<Arc<Event>> {
    let info = h.describe(stream);
    let part = info.partitions[partition as usize];
    let mut all = Vec::new();
    let mut from = part.first;
    while from < part.next {
        let got = match h.read(stream, partition, from, page) {
            Ok(got) => got,
            Err(e) => panic!("read {stream}/{partition} from {from}: {e:?}"),
        };
        assert!(
            !got.is_empty(),
            "empty page at {from} below the head {}",
            part.next
        );
        from = got.last().map_or(from, |e| e.offset + 1);
        all.extend(got);
    }
    all
}

/// Reads the event at one position.
fn read_at(h: &mut Harness, stream: &str, p: Position) -> Option<Arc<Event>> {
    h.read(stream, p.partition, p.offset, 1)
        .ok()
        .and_then(|mut v| v.pop())
        .filter(|e| e.offset == p.offset)
}

fn payload_of(n: u32) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// A unique producer id for the n-th event of a test.
fn unique_id(n: u32) -> EventId {
    let mut b = [0xEE; 16];
    b[..4].copy_from_slice(&n.to_le_bytes());
    EventId::from_bytes(b)
}

fn key_bytes(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// Selects elements of `items` by the bits of `mask` (bit i % 32 for element i); never empty
/// when `items` is not.
fn select<T: Clone>(items: &[T], mask: u32) -> Vec<T> {
    let mut out: Vec<T> = items
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << (i % 32)) != 0)
        .map(|(_, x)| x.clone())
        .collect();
    if out.is_empty()
        && let Some(first) = items.first()
    {
        out.push(first.clone());
    }
    out
}

// ---- 1. offsets are dense and increasing per partition ---------------------------------------

#[derive(Debug, Clone)]
enum DenseOp {
    /// Events with an optional key (from a small set) and a type index; with `Some(d)`, the
    /// append expects its first offset at the partition's head + d (optimistic concurrency;
    /// every event then takes the first event's key).
    Append(Vec<(Option<u8>, u8)>, Option<i8>),
    /// Moves the wall clock by this many ms (it may go back: timestamps are clamped).
    Wall(i64),
}

fn dense_op() -> impl Strategy<Value = DenseOp> {
    prop_oneof![
        4 => (vec((option::of(0u8..8), 0u8..3), 1..6), option::weighted(0.3, -1i8..=1))
            .prop_map(|(events, expect)| DenseOp::Append(events, expect)),
        1 => (-3_000i64..3_000).prop_map(DenseOp::Wall),
    ]
}

/// What the model expects at a position.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    payload: Vec<u8>,
    key: Option<Vec<u8>>,
    event_type: String,
    timestamp: UnixMillis,
}

fn check_dense(
    partitions: u32,
    tail: usize,
    page: u32,
    ops: Vec<DenseOp>,
) -> Result<(), TestCaseError> {
    let mut h = harness(Config {
        tail_cache_events: tail,
        ..no_linger()
    });
    h.create_persistent("dense", partitions);
    let mut expected: BTreeMap<Position, Sent> = BTreeMap::new();
    let mut next = vec![0u64; partitions as usize];
    let mut last_ts = vec![UnixMillis(0); partitions as usize];
    let mut counter = 0u32;
    for op in ops {
        match op {
            DenseOp::Wall(d) => {
                let wall = h.now.wall.0.saturating_add_signed(d);
                h.set_wall(wall);
            }
            DenseOp::Append(mut specs, expect) => {
                let wall = h.now.wall;
                let mut expected_offset = None;
                if let Some(delta) = expect {
                    let key = specs[0].0;
                    for spec in &mut specs {
                        spec.0 = key;
                    }
                    let p = key.map_or(0, |k| partition_of_key(&key_bytes(k), partitions));
                    let head = next[p as usize];
                    let want = head.saturating_add_signed(delta.into());
                    expected_offset = Some(want);
                    if key.is_none() && partitions > 1 {
                        // Refused: the batch must map to one partition. Nothing written.
                        let r = h.cmd(Command::Append(AppendRequest {
                            stream: s("dense"),
                            events: vec![ev("x")],
                            expected_offset,
                        }));
                        prop_assert!(
                            matches!(
                                r,
                                Err(Error::Invalid(InvalidInput::Conflict {
                                    field: "expected_offset",
                                    ..
                                }))
                            ),
                            "keyless expected_offset on {} partitions: {:?}",
                            partitions,
                            r
                        );
                        continue;
                    }
                    if want != head {
                        let events = specs
                            .iter()
                            .map(|(k, _)| match k {
                                Some(k) => ev("x").with_key(key_bytes(*k)),
                                None => ev("x"),
                            })
                            .collect();
                        let r = h.cmd(Command::Append(AppendRequest {
                            stream: s("dense"),
                            events,
                            expected_offset,
                        }));
                        prop_assert_eq!(
                            r,
                            Err(Error::WrongExpectedOffset {
                                partition: p,
                                expected: want,
                                actual: head
                            })
                        );
                        continue;
                    }
                }
                let mut events = Vec::new();
                let mut sent = Vec::new();
                for (key, t) in &specs {
                    counter += 1;
                    let mut e = NewEvent::new(format!("type-{t}"), payload_of(counter));
                    if let Some(k) = key {
                        e = e.with_key(key_bytes(*k));
                    }
                    sent.push((
                        e.payload.to_vec(),
                        e.key.as_ref().map(|k| k.to_vec()),
                        e.event_type.clone(),
                    ));
                    events.push(e);
                }
                let outcomes = match h.cmd(Command::Append(AppendRequest {
                    stream: s("dense"),
                    events,
                    expected_offset,
                })) {
                    Ok(Reply::Appended(o)) => o,
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "append (expected offset {expected_offset:?}): {other:?}"
                        )));
                    }
                };
                prop_assert_eq!(outcomes.len(), sent.len());
                for ((payload, key, event_type), outcome) in sent.into_iter().zip(outcomes) {
                    let AppendOutcome::Appended(pos) = outcome else {
                        return Err(TestCaseError::fail(format!(
                            "no producer id, yet {outcome:?}"
                        )));
                    };
                    if let Some(k) = &key {
                        prop_assert_eq!(
                            pos.partition,
                            partition_of_key(k, partitions),
                            "a key picks its partition"
                        );
                    }
                    let p = pos.partition as usize;
                    prop_assert!(p < partitions as usize);
                    prop_assert_eq!(pos.offset, next[p], "offsets are dense and increasing");
                    next[p] += 1;
                    let timestamp = wall.max(last_ts[p]);
                    last_ts[p] = timestamp;
                    expected.insert(
                        pos,
                        Sent {
                            payload,
                            key,
                            event_type,
                            timestamp,
                        },
                    );
                }
            }
        }
    }
    let info = h.describe("dense");
    for (p, part) in info.partitions.iter().enumerate() {
        prop_assert_eq!(
            *part,
            PartitionInfo {
                first: 0,
                next: next[p]
            }
        );
        let events = read_partition(&mut h, "dense", p as u32, page);
        let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
        prop_assert_eq!(
            offsets,
            (0..next[p]).collect::<Vec<u64>>(),
            "partition {} has no gap",
            p
        );
        let mut prev = UnixMillis(0);
        for e in &events {
            let pos = Position {
                partition: p as u32,
                offset: e.offset,
            };
            let want = &expected[&pos];
            let got = Sent {
                payload: e.payload.to_vec(),
                key: e.key.as_ref().map(|k| k.to_vec()),
                event_type: e.event_type.clone(),
                timestamp: e.timestamp,
            };
            prop_assert_eq!(&got, want, "the event at {:?} is the one sent there", pos);
            prop_assert_eq!(e.partition, p as u32);
            prop_assert!(
                e.timestamp >= prev,
                "timestamps never decrease within a partition"
            );
            prev = e.timestamp;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn offsets_are_dense_and_hold_what_was_sent(
        partitions in 1u32..=4,
        tail in prop_oneof![Just(4096usize), 1usize..6],
        page in prop_oneof![Just(1000u32), 1u32..5],
        ops in vec(dense_op(), 1..30),
    ) {
        check_dense(partitions, tail, page, ops)?;
    }
}

// ---- storage faults ---------------------------------------------------------------------------

/// How the first store write of `appends_in_flight` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// It commits.
    None,
    /// It definitely fails: nothing written.
    Fails,
    /// It commits, but the reply is lost (`Unknown`): the core must repeat it.
    UnknownApplied,
    /// It does not commit and the reply is lost (`Unknown`).
    UnknownNotApplied,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::None),
        Just(Fault::Fails),
        Just(Fault::UnknownApplied),
        Just(Fault::UnknownNotApplied),
    ]
}

fn replied(h: &Harness, req: ReqId) -> bool {
    h.outputs
        .iter()
        .any(|o| matches!(o, Output::Reply { req: r, .. } if *r == req))
}

/// Sends several appends back to back while the store is held (the first one's write is in
/// flight while the others queue), then completes the store requests one at a time: the first
/// write ends as `fault` says, every other one (including repeats after `Unknown`) commits.
/// Returns each append's reply, in the order sent.
fn appends_in_flight(
    h: &mut Harness,
    stream: &str,
    batches: Vec<Vec<NewEvent>>,
    fault: Fault,
) -> Result<Vec<Result<Reply, Error>>, TestCaseError> {
    h.hold_storage = true;
    let reqs: Vec<ReqId> = batches
        .into_iter()
        .map(|events| {
            let a = AppendRequest {
                stream: s(stream),
                events,
                expected_offset: None,
            };
            h.send(1, Command::Append(a))
        })
        .collect();
    let mut first = true;
    for _ in 0..100 {
        if reqs.iter().all(|r| replied(h, *r)) {
            break;
        }
        let Some((_, req)) = h.held.front() else {
            // An `Unknown` write is repeated after a back-off.
            h.advance(Duration::from_millis(100));
            continue;
        };
        prop_assert!(
            matches!(req, StorageRequest::Append(_)),
            "unexpected storage request {:?}",
            req
        );
        let result = if std::mem::take(&mut first) {
            match fault {
                Fault::None => None,
                Fault::Fails => Some(StorageResult::Err(StorageError::Unavailable(
                    "disk on fire".into(),
                ))),
                Fault::UnknownApplied => {
                    let r = h.store.execute(&h.held[0].1);
                    prop_assert!(matches!(r, StorageResult::Ok(_)), "store: {:?}", r);
                    Some(StorageResult::Unknown)
                }
                Fault::UnknownNotApplied => Some(StorageResult::Unknown),
            }
        } else {
            None
        };
        h.complete(0, result);
    }
    h.hold_storage = false;
    let mut replies = Vec::new();
    for r in reqs {
        match h.reply(r) {
            Some(reply) => replies.push(reply),
            None => return Err(TestCaseError::fail(format!("no reply to append {r:?}"))),
        }
    }
    prop_assert!(h.held.is_empty(), "storage requests left: {:?}", h.held);
    Ok(replies)
}

// ---- 2. no acknowledged append is lost across a recovery ------------------------------------

#[derive(Debug, Clone)]
enum RecoveryOp {
    /// Events with an optional key and whether the producer gives an id.
    Append(Vec<(Option<u8>, bool)>),
    /// The engine stops with an append in flight; the store applied it or not. No reply came,
    /// so nothing of it was acknowledged.
    CrashDuringAppend {
        events: Vec<Option<u8>>,
        applied: bool,
    },
    /// Appends sent together; the first write ends as `Fault` says.
    InFlight(Vec<Vec<(Option<u8>, bool)>>, Fault),
    Restart,
    Advance(u32),
}

fn recovery_event() -> impl Strategy<Value = (Option<u8>, bool)> {
    (option::of(0u8..8), any::<bool>())
}

fn recovery_op() -> impl Strategy<Value = RecoveryOp> {
    prop_oneof![
        6 => vec(recovery_event(), 1..5).prop_map(RecoveryOp::Append),
        3 => (vec(vec(recovery_event(), 1..4), 1..4), fault())
            .prop_map(|(batches, fault)| RecoveryOp::InFlight(batches, fault)),
        1 => (vec(option::of(0u8..8), 1..4), any::<bool>())
            .prop_map(|(events, applied)| RecoveryOp::CrashDuringAppend { events, applied }),
        2 => Just(RecoveryOp::Restart),
        1 => (0u32..5_000).prop_map(RecoveryOp::Advance),
    ]
}

fn check_recovered(
    h: &mut Harness,
    acked: &BTreeMap<Position, (EventId, Vec<u8>)>,
) -> Result<(), TestCaseError> {
    for (pos, (id, payload)) in acked {
        let e = read_at(h, "durable", *pos);
        prop_assert!(e.is_some(), "acknowledged event at {:?} is gone", pos);
        let e = e.unwrap();
        prop_assert_eq!(e.event_id, *id, "event id at {:?}", pos);
        prop_assert_eq!(e.payload.to_vec(), payload.clone(), "payload at {:?}", pos);
    }
    Ok(())
}

/// What was sent for one event: the producer's id (if any) and the payload.
type SentEvent = (Option<EventId>, Vec<u8>);

/// Builds the events of one append: unique payloads, ids when asked for, keys.
fn recovery_events(
    specs: &[(Option<u8>, bool)],
    counter: &mut u32,
) -> (Vec<NewEvent>, Vec<SentEvent>) {
    let mut events = Vec::new();
    let mut sent = Vec::new();
    for (key, with_id) in specs {
        *counter += 1;
        let mut e = NewEvent::new("t", payload_of(*counter));
        if *with_id {
            e = e.with_id(unique_id(*counter));
        }
        if let Some(k) = key {
            e = e.with_key(key_bytes(*k));
        }
        sent.push((e.event_id, e.payload.to_vec()));
        events.push(e);
    }
    (events, sent)
}

/// Records the acknowledged events of one append, checking each is readable where the
/// engine said (and learning the id the core assigned when the producer gave none).
fn record_acked(
    h: &mut Harness,
    sent: Vec<SentEvent>,
    outcomes: Vec<AppendOutcome>,
    acked: &mut BTreeMap<Position, (EventId, Vec<u8>)>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(outcomes.len(), sent.len());
    for ((given, payload), outcome) in sent.into_iter().zip(outcomes) {
        let AppendOutcome::Appended(pos) = outcome else {
            return Err(TestCaseError::fail(format!("unique ids, yet {outcome:?}")));
        };
        prop_assert!(!acked.contains_key(&pos), "position {:?} given twice", pos);
        let e = read_at(h, "durable", pos);
        prop_assert!(e.is_some(), "appended event at {:?} not readable", pos);
        let e = e.unwrap();
        prop_assert_eq!(e.payload.to_vec(), payload.clone());
        if let Some(id) = given {
            prop_assert_eq!(e.event_id, id);
        }
        acked.insert(pos, (e.event_id, payload));
    }
    Ok(())
}

fn check_recovery(partitions: u32, tail: usize, ops: Vec<RecoveryOp>) -> Result<(), TestCaseError> {
    let mut h = harness(Config {
        tail_cache_events: tail,
        ..no_linger()
    });
    h.create_persistent("durable", partitions);
    let mut acked: BTreeMap<Position, (EventId, Vec<u8>)> = BTreeMap::new();
    let mut counter = 0u32;
    for op in ops {
        match op {
            RecoveryOp::Advance(ms) => h.advance(Duration::from_millis(ms.into())),
            RecoveryOp::Restart => {
                h = h.restart();
                check_recovered(&mut h, &acked)?;
            }
            RecoveryOp::CrashDuringAppend { events, applied } => {
                let events: Vec<NewEvent> = events
                    .into_iter()
                    .map(|k| {
                        counter += 1;
                        let e = NewEvent::new("t", payload_of(counter)).with_id(unique_id(counter));
                        match k {
                            Some(k) => e.with_key(key_bytes(k)),
                            None => e,
                        }
                    })
                    .collect();
                h.hold_storage = true;
                let req = h.send(
                    1,
                    Command::Append(AppendRequest {
                        stream: s("durable"),
                        events,
                        expected_offset: None,
                    }),
                );
                prop_assert!(h.reply(req).is_none(), "no reply before the store commits");
                prop_assert_eq!(h.held.len(), 1);
                if applied {
                    let (_, write) = h.held.pop_front().expect("held append");
                    let r = h.store.execute(&write);
                    prop_assert!(matches!(r, StorageResult::Ok(_)), "store: {:?}", r);
                }
                h = h.restart();
                check_recovered(&mut h, &acked)?;
            }
            RecoveryOp::Append(specs) => {
                let (events, sent) = recovery_events(&specs, &mut counter);
                let outcomes = h
                    .append("durable", events)
                    .map_err(|e| TestCaseError::fail(format!("append: {e:?}")))?;
                record_acked(&mut h, sent, outcomes, &mut acked)?;
            }
            RecoveryOp::InFlight(batches, fault) => {
                let mut all = Vec::new();
                let mut sents = Vec::new();
                for specs in &batches {
                    let (events, sent) = recovery_events(specs, &mut counter);
                    all.push(events);
                    sents.push(sent);
                }
                let replies = appends_in_flight(&mut h, "durable", all, fault)?;
                for (reply, sent) in replies.into_iter().zip(sents) {
                    match reply {
                        Ok(Reply::Appended(outcomes)) => {
                            record_acked(&mut h, sent, outcomes, &mut acked)?
                        }
                        Err(Error::Unavailable(_)) if fault == Fault::Fails => {}
                        other => {
                            return Err(TestCaseError::fail(format!(
                                "append with fault {fault:?} answered {other:?}"
                            )));
                        }
                    }
                }
            }
        }
    }
    h = h.restart();
    check_recovered(&mut h, &acked)?;
    // Still dense: no hole, whatever was applied without an acknowledgement.
    let info = h.describe("durable");
    for (p, part) in info.partitions.iter().enumerate() {
        let events = read_partition(&mut h, "durable", p as u32, 1000);
        let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
        prop_assert_eq!(offsets, (part.first..part.next).collect::<Vec<u64>>());
        let ids: BTreeSet<EventId> = events.iter().map(|e| e.event_id).collect();
        prop_assert_eq!(ids.len(), events.len(), "no event stored twice");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_acknowledged_append_is_lost_across_restarts(
        partitions in 1u32..=4,
        tail in prop_oneof![Just(4096usize), 1usize..4],
        ops in vec(recovery_op(), 1..30),
    ) {
        check_recovery(partitions, tail, ops)?;
    }
}

// ---- 3. no duplicate within the dedup window -------------------------------------------------

const POOL: u8 = 5;

fn pool_id(k: u8) -> EventId {
    id(100 + k)
}

#[derive(Debug, Clone)]
enum DedupOp {
    /// Events with an optional id from the pool and an optional key.
    Append(Vec<(Option<u8>, Option<u8>)>),
    /// An append whose reply is lost because the engine stops; the store applied it or not.
    CrashDuringAppend {
        events: Vec<(Option<u8>, Option<u8>)>,
        applied: bool,
    },
    /// Appends sent together; the first write ends as `Fault` says.
    InFlight(Vec<Vec<(Option<u8>, Option<u8>)>>, Fault),
    Restart,
    /// Less than the window (10 min) in total over a whole case.
    Advance(u32),
}

fn dedup_event() -> impl Strategy<Value = (Option<u8>, Option<u8>)> {
    (
        prop_oneof![4 => (0..POOL).prop_map(Some), 1 => Just(None)],
        option::of(0u8..8),
    )
}

fn dedup_op() -> impl Strategy<Value = DedupOp> {
    prop_oneof![
        6 => vec(dedup_event(), 1..5).prop_map(DedupOp::Append),
        3 => (vec(vec(dedup_event(), 1..4), 1..4), fault())
            .prop_map(|(batches, fault)| DedupOp::InFlight(batches, fault)),
        1 => (vec(dedup_event(), 1..4), any::<bool>())
            .prop_map(|(events, applied)| DedupOp::CrashDuringAppend { events, applied }),
        2 => Just(DedupOp::Restart),
        1 => (0u32..10_000).prop_map(DedupOp::Advance),
    ]
}

fn dedup_events(specs: &[(Option<u8>, Option<u8>)], counter: &mut u32) -> Vec<NewEvent> {
    specs
        .iter()
        .map(|(idk, key)| {
            *counter += 1;
            let mut e = NewEvent::new("t", payload_of(*counter));
            if let Some(k) = idk {
                e = e.with_id(pool_id(*k));
            }
            if let Some(k) = key {
                e = e.with_key(key_bytes(*k));
            }
            e
        })
        .collect()
}

/// Checks the outcomes of one append against the model: a known id is a `Duplicate` of where
/// it is stored, a new one is `Appended` (and becomes known), an id that an unacknowledged
/// append may have stored is either.
fn check_dedup_outcomes(
    ids: &[Option<EventId>],
    outcomes: Vec<AppendOutcome>,
    stored: &mut BTreeMap<EventId, Position>,
    maybe: &mut BTreeSet<EventId>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(outcomes.len(), ids.len());
    for (id, outcome) in ids.iter().copied().zip(outcomes) {
        match (id, outcome) {
            (None, AppendOutcome::Appended(_)) => {}
            (Some(id), AppendOutcome::Duplicate { original }) if stored.contains_key(&id) => {
                prop_assert_eq!(
                    original,
                    stored[&id],
                    "Duplicate of {} points to its original",
                    id
                );
            }
            (Some(id), AppendOutcome::Duplicate { original }) if maybe.contains(&id) => {
                // Stored by the append whose reply was lost: this is its original.
                maybe.remove(&id);
                stored.insert(id, original);
            }
            (Some(id), AppendOutcome::Appended(pos))
                if !stored.contains_key(&id) && !maybe.contains(&id) =>
            {
                stored.insert(id, pos);
            }
            (id, outcome) => {
                let known = id.and_then(|i| stored.get(&i).copied());
                return Err(TestCaseError::fail(format!(
                    "id {id:?} (stored at {known:?}, maybe stored: {}) answered {outcome:?}",
                    id.is_some_and(|i| maybe.contains(&i))
                )));
            }
        }
    }
    Ok(())
}

fn check_dedup(
    partitions: u32,
    recovery_page: u32,
    ops: Vec<DedupOp>,
) -> Result<(), TestCaseError> {
    let config = Config {
        recovery_page,
        ..no_linger()
    };
    let mut h = harness(config);
    h.create_persistent("idem", partitions);
    // Where each pool id is stored, as acknowledged to the producer.
    let mut stored: BTreeMap<EventId, Position> = BTreeMap::new();
    // Ids that may have been stored by an append whose reply was lost.
    let mut maybe: BTreeSet<EventId> = BTreeSet::new();
    let mut counter = 0u32;
    let mut advanced = 0u64;
    for op in ops {
        match op {
            DedupOp::Advance(ms) => {
                // Stay inside the window: the property is about ids within it.
                if advanced + u64::from(ms) < 500_000 {
                    advanced += u64::from(ms);
                    h.advance(Duration::from_millis(ms.into()));
                }
            }
            DedupOp::Restart => h = h.restart(),
            DedupOp::InFlight(batches, fault) => {
                let mut all = Vec::new();
                let mut idss = Vec::new();
                for specs in &batches {
                    let events = dedup_events(specs, &mut counter);
                    idss.push(events.iter().map(|e| e.event_id).collect::<Vec<_>>());
                    all.push(events);
                }
                let replies = appends_in_flight(&mut h, "idem", all, fault)?;
                for (reply, ids) in replies.into_iter().zip(idss) {
                    match reply {
                        Ok(Reply::Appended(outcomes)) => {
                            check_dedup_outcomes(&ids, outcomes, &mut stored, &mut maybe)?
                        }
                        // Nothing written: its ids are not taken.
                        Err(Error::Unavailable(_)) if fault == Fault::Fails => {}
                        other => {
                            return Err(TestCaseError::fail(format!(
                                "append with fault {fault:?} answered {other:?}"
                            )));
                        }
                    }
                }
            }
            DedupOp::CrashDuringAppend { events, applied } => {
                let events = dedup_events(&events, &mut counter);
                let ids: Vec<EventId> = events.iter().filter_map(|e| e.event_id).collect();
                h.hold_storage = true;
                let req = h.send(
                    1,
                    Command::Append(AppendRequest {
                        stream: s("idem"),
                        events,
                        expected_offset: None,
                    }),
                );
                match h.reply(req) {
                    // Only duplicates: answered at once, nothing to write.
                    Some(Ok(Reply::Appended(outcomes))) => {
                        prop_assert!(h.held.is_empty());
                        let ids: Vec<Option<EventId>> = ids.into_iter().map(Some).collect();
                        let all_dup = outcomes
                            .iter()
                            .all(|o| matches!(o, AppendOutcome::Duplicate { .. }));
                        prop_assert!(all_dup, "answered before the store: {:?}", outcomes);
                        check_dedup_outcomes(&ids, outcomes, &mut stored, &mut maybe)?;
                    }
                    Some(other) => {
                        return Err(TestCaseError::fail(format!(
                            "append answered {other:?} before the store did"
                        )));
                    }
                    None => {
                        prop_assert_eq!(h.held.len(), 1);
                        if let Some((_, write)) = h.held.pop_front()
                            && applied
                        {
                            let r = h.store.execute(&write);
                            prop_assert!(matches!(r, StorageResult::Ok(_)), "store: {:?}", r);
                            maybe.extend(ids.into_iter().filter(|id| !stored.contains_key(id)));
                        }
                    }
                }
                h = h.restart();
            }
            DedupOp::Append(specs) => {
                let events = dedup_events(&specs, &mut counter);
                let ids: Vec<Option<EventId>> = events.iter().map(|e| e.event_id).collect();
                let outcomes = h
                    .append("idem", events)
                    .map_err(|e| TestCaseError::fail(format!("append: {e:?}")))?;
                check_dedup_outcomes(&ids, outcomes, &mut stored, &mut maybe)?;
            }
        }
    }
    // Each id at most once across all partitions, where the duplicates said it was.
    let mut seen: BTreeMap<EventId, Position> = BTreeMap::new();
    for p in 0..partitions {
        for e in read_partition(&mut h, "idem", p, 1000) {
            let pos = Position {
                partition: p,
                offset: e.offset,
            };
            if let Some(first) = seen.insert(e.event_id, pos) {
                return Err(TestCaseError::fail(format!(
                    "id {} stored twice: {first:?} and {pos:?}",
                    e.event_id
                )));
            }
        }
    }
    for (id, pos) in &stored {
        prop_assert_eq!(seen.get(id), Some(pos), "id {} is where the core said", id);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_duplicate_within_the_dedup_window_even_across_restarts(
        partitions in 1u32..=4,
        recovery_page in prop_oneof![Just(10_000u32), 1u32..4],
        ops in vec(dedup_op(), 1..30),
    ) {
        check_dedup(partitions, recovery_page, ops)?;
    }
}

// ---- 4. the ack floor never moves back -------------------------------------------------------

const CONSUMERS: [&str; 2] = ["alice", "bob"];

#[derive(Debug, Clone)]
enum SubOp {
    Append(Vec<Option<u8>>),
    Ack {
        who: usize,
        mask: u32,
    },
    Nack {
        who: usize,
        mask: u32,
        delay_ms: Option<u32>,
    },
    Term {
        who: usize,
        mask: u32,
    },
    Advance(u32),
    Detach(usize),
    Attach(usize),
    Restart,
}

fn sub_op() -> impl Strategy<Value = SubOp> {
    prop_oneof![
        4 => vec(option::of(0u8..6), 1..5).prop_map(SubOp::Append),
        5 => (0..2usize, any::<u32>()).prop_map(|(who, mask)| SubOp::Ack { who, mask }),
        2 => (0..2usize, any::<u32>(), option::of(0u32..3_000))
            .prop_map(|(who, mask, delay_ms)| SubOp::Nack { who, mask, delay_ms }),
        1 => (0..2usize, any::<u32>()).prop_map(|(who, mask)| SubOp::Term { who, mask }),
        3 => (0u32..8_000).prop_map(SubOp::Advance),
        1 => (0..2usize).prop_map(SubOp::Detach),
        1 => (0..2usize).prop_map(SubOp::Attach),
        1 => Just(SubOp::Restart),
    ]
}

/// Floors per cursor (consumer for broadcast, `None` for exclusive).
fn floors(h: &mut Harness) -> BTreeMap<Option<ConsumerId>, Vec<u64>> {
    h.describe_sub("work", "workers")
        .cursors
        .into_iter()
        .map(|c| (c.consumer, c.floors))
        .collect()
}

/// A nack or term of positions once delivered to `who`: settled (every position applied or
/// skipped as settled already, or as not in flight for a nack), or (where consumers share a
/// position) refused because one of them is in flight to the other consumer now.
fn done_or_not_holder(r: &Result<Reply, Error>, who: usize, mode: SubscriptionMode) -> bool {
    match r {
        Ok(Reply::Settled(s)) => s.skipped.iter().all(|(_, reason)| {
            matches!(reason, SkipReason::AlreadySettled | SkipReason::NotInFlight)
        }),
        Err(Error::NotHolder {
            consumer, holder, ..
        }) => {
            mode.shared_position()
                && consumer == &c(CONSUMERS[who])
                && holder == &c(CONSUMERS[1 - who])
        }
        _ => false,
    }
}

/// Gives `e` a producer id (the next of `ids`) on an exactly-once stream, which needs one.
fn producer_id(e: NewEvent, delivery: DeliverySemantics, ids: &mut u64) -> NewEvent {
    if delivery != DeliverySemantics::ExactlyOnce {
        return e;
    }
    *ids += 1;
    e.with_id(EventId::from_bytes(u128::from(*ids).to_le_bytes()))
}

/// `exact`: also check that each floor is at least the first offset not acknowledged
/// (SPEC 3: the ack floor is the lowest offset not yet acknowledged).
fn check_floors(
    partitions: u32,
    mode: SubscriptionMode,
    delivery: DeliverySemantics,
    max_in_flight: u32,
    ops: Vec<SubOp>,
    exact: bool,
) -> Result<(), TestCaseError> {
    let mut h = harness(no_linger());
    let mut config = StreamConfig::persistent(s("work"));
    config.partitions = partitions;
    config.delivery = delivery;
    h.create(config);
    let mut sc = h.sub_config("work", "workers", mode);
    sc.ack_wait = Duration::from_secs(5);
    sc.max_deliveries = 3;
    h.subscribe(sc);
    for (who, name) in CONSUMERS.iter().enumerate() {
        h.attach(who as u64 + 1, "work", "workers", name, Some(max_in_flight));
    }
    let mut attached = [true; 2];
    // Positions delivered to each consumer since it attached (acked or not).
    let mut delivered: [Vec<Position>; 2] = [Vec::new(), Vec::new()];
    let mut prev = floors(&mut h);
    // The model: per cursor and partition, the offsets whose acknowledgement was confirmed
    // (`Acked`). They are never delivered again, and the floor is at least the first offset
    // not among them.
    let cursor_of = |who: usize| match mode {
        SubscriptionMode::Exclusive | SubscriptionMode::ConsumerGroup => None,
        SubscriptionMode::Broadcast | SubscriptionMode::ReadReceipt => Some(c(CONSUMERS[who])),
    };
    let mut settled: BTreeMap<Option<ConsumerId>, Vec<BTreeSet<u64>>> = BTreeMap::new();
    let mut ids = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            SubOp::Append(keys) => {
                let events = keys
                    .into_iter()
                    .map(|k| {
                        let e = match k {
                            Some(k) => ev("job").with_key(key_bytes(k)),
                            None => ev("job"),
                        };
                        producer_id(e, delivery, &mut ids)
                    })
                    .collect();
                h.append("work", events)
                    .map_err(|e| TestCaseError::fail(format!("append: {e:?}")))?;
            }
            SubOp::Ack { who, mask } => {
                let positions = select(&delivered[who], mask);
                if positions.is_empty() {
                    continue;
                }
                let n = positions.len() as u32;
                let r = h.ack(
                    who as u64 + 1,
                    "work",
                    "workers",
                    CONSUMERS[who],
                    positions.clone(),
                );
                if attached[who] {
                    match r {
                        Ok(Reply::Settled(s)) => {
                            prop_assert_eq!(s.applied.len() + s.skipped.len(), n as usize);
                            // Every position named was delivered: none is skipped as not
                            // delivered.
                            prop_assert!(
                                s.skipped
                                    .iter()
                                    .all(|(_, r)| *r == SkipReason::AlreadySettled),
                                "{:?}",
                                s
                            );
                        }
                        other => return Err(TestCaseError::fail(format!("ack: {other:?}"))),
                    }
                    // Every position was delivered to this cursor: acked now, or before.
                    let sets = settled
                        .entry(cursor_of(who))
                        .or_insert_with(|| vec![BTreeSet::new(); partitions as usize]);
                    for p in positions {
                        sets[p.partition as usize].insert(p.offset);
                    }
                } else {
                    prop_assert_eq!(r, Err(Error::NotAttached(c(CONSUMERS[who]))));
                }
            }
            SubOp::Nack {
                who,
                mask,
                delay_ms,
            } => {
                let positions = select(&delivered[who], mask);
                if positions.is_empty() {
                    continue;
                }
                let delay = delay_ms.map(|ms| Duration::from_millis(ms.into()));
                let r = h.nack(
                    who as u64 + 1,
                    "work",
                    "workers",
                    CONSUMERS[who],
                    positions,
                    delay,
                );
                if attached[who] {
                    prop_assert!(done_or_not_holder(&r, who, mode), "{:?}", r);
                } else {
                    prop_assert_eq!(r, Err(Error::NotAttached(c(CONSUMERS[who]))));
                }
            }
            SubOp::Term { who, mask } => {
                let positions = select(&delivered[who], mask);
                if positions.is_empty() {
                    continue;
                }
                let r = h.cmd_on(
                    who as u64 + 1,
                    Command::Term {
                        stream: s("work"),
                        subscription: sub("workers"),
                        consumer: c(CONSUMERS[who]),
                        positions,
                        reason: "poison".into(),
                    },
                );
                if attached[who] {
                    prop_assert!(done_or_not_holder(&r, who, mode), "{:?}", r);
                } else {
                    prop_assert_eq!(r, Err(Error::NotAttached(c(CONSUMERS[who]))));
                }
            }
            SubOp::Advance(ms) => h.advance(Duration::from_millis(ms.into())),
            SubOp::Detach(who) => {
                if attached[who] {
                    let r = h.cmd_on(
                        who as u64 + 1,
                        Command::Detach {
                            stream: s("work"),
                            subscription: sub("workers"),
                            consumer: c(CONSUMERS[who]),
                        },
                    );
                    prop_assert_eq!(r, Ok(Reply::Done));
                    attached[who] = false;
                    delivered[who].clear();
                }
            }
            SubOp::Attach(who) => {
                if !attached[who] {
                    h.attach(
                        who as u64 + 1,
                        "work",
                        "workers",
                        CONSUMERS[who],
                        Some(max_in_flight),
                    );
                    attached[who] = true;
                }
            }
            SubOp::Restart => {
                h = h.restart();
                delivered = [Vec::new(), Vec::new()];
                for (who, on) in attached.iter().enumerate() {
                    if *on {
                        h.attach(
                            who as u64 + 1,
                            "work",
                            "workers",
                            CONSUMERS[who],
                            Some(max_in_flight),
                        );
                    }
                }
            }
        }
        for (who, name) in CONSUMERS.iter().enumerate() {
            for d in h.delivered_events(name) {
                let p = pos(d.event.partition, d.event.offset);
                let acked_before = settled
                    .get(&cursor_of(who))
                    .is_some_and(|sets| sets[p.partition as usize].contains(&p.offset));
                prop_assert!(
                    !acked_before,
                    "step {}: {:?} delivered to {} again after its ack was confirmed",
                    step,
                    p,
                    name
                );
                if !delivered[who].contains(&p) {
                    delivered[who].push(p);
                }
            }
        }
        let now = floors(&mut h);
        let heads: Vec<u64> = h
            .describe("work")
            .partitions
            .iter()
            .map(|p| p.next)
            .collect();
        for (cursor, fl) in &now {
            if let Some(sets) = settled.get(cursor).filter(|_| exact) {
                for (p, f) in fl.iter().enumerate() {
                    let acked_prefix = (0u64..).find(|o| !sets[p].contains(o)).unwrap_or(0);
                    prop_assert!(
                        *f >= acked_prefix,
                        "step {}: floor {} of {:?} in partition {} is below {}, though every offset under it was acknowledged",
                        step,
                        f,
                        cursor,
                        p,
                        acked_prefix
                    );
                }
            }
            for (p, f) in fl.iter().enumerate() {
                prop_assert!(
                    *f <= heads[p],
                    "step {}: floor {} above the head {} ({:?})",
                    step,
                    f,
                    heads[p],
                    cursor
                );
            }
            if let Some(before) = prev.get(cursor) {
                for (p, (b, a)) in before.iter().zip(fl).enumerate() {
                    prop_assert!(
                        a >= b,
                        "step {}: the ack floor of {:?} in partition {} went back from {} to {}",
                        step,
                        cursor,
                        p,
                        b,
                        a
                    );
                }
            }
        }
        for (cursor, fl) in &prev {
            // A cursor may be missing after a restart only if it never had a saved position
            // beyond its start; it may never come back lower.
            if !now.contains_key(cursor) {
                prop_assert!(
                    fl.iter().all(|&f| f == 0),
                    "step {}: cursor {:?} lost at floors {:?}",
                    step,
                    cursor,
                    fl
                );
            }
        }
        for (cursor, fl) in now {
            prev.insert(cursor, fl);
        }
    }
    Ok(())
}

fn mode() -> impl Strategy<Value = SubscriptionMode> {
    prop_oneof![
        Just(SubscriptionMode::Exclusive),
        Just(SubscriptionMode::Broadcast)
    ]
}

fn delivery() -> impl Strategy<Value = DeliverySemantics> {
    prop_oneof![
        3 => Just(DeliverySemantics::AtLeastOnce),
        1 => Just(DeliverySemantics::ExactlyOnce),
        1 => Just(DeliverySemantics::AtMostOnce),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_ack_floor_never_moves_back(
        partitions in 1u32..=3,
        mode in mode(),
        delivery in delivery(),
        max_in_flight in 1u32..6,
        ops in vec(sub_op(), 1..40),
    ) {
        check_floors(partitions, mode, delivery, max_in_flight, ops, false)?;
    }
}

proptest! {
    // More cases: the failure needs a restart between acks plus a consumer out of credit.
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_ack_floor_is_at_least_the_first_unacknowledged_offset(
        partitions in 1u32..=3,
        mode in mode(),
        delivery in delivery(),
        max_in_flight in 1u32..6,
        ops in vec(sub_op(), 1..40),
    ) {
        check_floors(partitions, mode, delivery, max_in_flight, ops, true)?;
    }
}

// ---- 5. ephemeral bounds ---------------------------------------------------------------------

#[derive(Debug, Clone)]
enum EphOp {
    /// Events with these payload sizes.
    Append(Vec<u8>),
    Ack(u32),
    Nack(u32),
    Advance(u32),
    Detach,
    Attach,
}

fn eph_op() -> impl Strategy<Value = EphOp> {
    prop_oneof![
        5 => vec(0u8..40, 1..5).prop_map(EphOp::Append),
        4 => any::<u32>().prop_map(EphOp::Ack),
        1 => any::<u32>().prop_map(EphOp::Nack),
        2 => (0u32..8_000).prop_map(EphOp::Advance),
        1 => Just(EphOp::Detach),
        1 => Just(EphOp::Attach),
    ]
}

/// (events held, bytes held) of the ephemeral stream, from a describe and a read.
fn held(h: &mut Harness) -> (PartitionInfo, u64) {
    let info = h.describe("live").partitions[0];
    let bytes = read_partition(h, "live", 0, 1000)
        .iter()
        .map(|e| e.size() as u64)
        .sum();
    (info, bytes)
}

#[allow(clippy::too_many_arguments)]
fn check_ephemeral(
    max_events: u64,
    max_bytes: u64,
    overflow: Overflow,
    mode: SubscriptionMode,
    delivery: DeliverySemantics,
    max_in_flight: u32,
    ops: Vec<EphOp>,
) -> Result<(), TestCaseError> {
    let mut h = harness(no_linger());
    let mut config = StreamConfig::ephemeral(s("live"), max_events, max_bytes, overflow);
    config.delivery = delivery;
    h.create(config);
    let mut sc = h.sub_config("live", "watchers", mode);
    sc.ack_wait = Duration::from_secs(5);
    sc.max_deliveries = 3;
    h.subscribe(sc);
    h.attach(1, "live", "watchers", "w", Some(max_in_flight));
    let mut attached = true;
    let mut delivered: Vec<Position> = Vec::new();
    let mut counter = 0u32;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            EphOp::Append(sizes) => {
                let (before, bytes_before) = held(&mut h);
                let count = sizes.len() as u64;
                let bytes: u64 = sizes.iter().map(|&n| u64::from(n)).sum();
                let events = sizes
                    .iter()
                    .map(|&n| {
                        counter += 1;
                        let e = NewEvent::new("tick", vec![counter as u8; n as usize]);
                        if delivery == DeliverySemantics::ExactlyOnce {
                            e.with_id(EventId::from_bytes(u128::from(counter).to_le_bytes()))
                        } else {
                            e
                        }
                    })
                    .collect();
                let r = h.append("live", events);
                let fits = before.next - before.first + count <= max_events
                    && bytes_before + bytes <= max_bytes;
                let accepted = match overflow {
                    Overflow::Reject => fits,
                    Overflow::DropOldest => count <= max_events && bytes <= max_bytes,
                };
                match r {
                    Ok(outcomes) => {
                        prop_assert!(
                            accepted,
                            "step {}: accepted an append that cannot fit ({:?}, {} bytes held)",
                            step,
                            before,
                            bytes_before
                        );
                        let offsets: Vec<AppendOutcome> = outcomes;
                        let want: Vec<AppendOutcome> = (0..count)
                            .map(|i| AppendOutcome::Appended(pos(0, before.next + i)))
                            .collect();
                        prop_assert_eq!(offsets, want);
                        let after = h.describe("live").partitions[0];
                        prop_assert_eq!(after.next, before.next + count);
                    }
                    Err(Error::StreamFull { .. }) => {
                        prop_assert!(
                            !accepted,
                            "step {}: StreamFull although it fits ({:?}, {} bytes held, {} + {} bytes)",
                            step,
                            before,
                            bytes_before,
                            count,
                            bytes
                        );
                        let (after, bytes_after) = held(&mut h);
                        prop_assert_eq!(after, before, "a refused append changes nothing");
                        prop_assert_eq!(bytes_after, bytes_before);
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("append: {e:?}"))),
                }
            }
            EphOp::Ack(mask) => {
                let positions = select(&delivered, mask);
                if !positions.is_empty() {
                    let r = h.ack(1, "live", "watchers", "w", positions);
                    if attached {
                        prop_assert!(matches!(r, Ok(Reply::Settled(_))), "ack: {:?}", r);
                    } else {
                        prop_assert_eq!(r, Err(Error::NotAttached(c("w"))));
                    }
                }
            }
            EphOp::Nack(mask) => {
                let positions = select(&delivered, mask);
                if !positions.is_empty() {
                    let r = h.nack(
                        1,
                        "live",
                        "watchers",
                        "w",
                        positions.clone(),
                        Some(Duration::from_millis(500)),
                    );
                    if attached && delivery == DeliverySemantics::AtMostOnce {
                        // Settled when delivered, so nothing is left to nack.
                        let skipped = positions
                            .iter()
                            .map(|p| (*p, SkipReason::AlreadySettled))
                            .collect();
                        prop_assert_eq!(r, Ok(settled(vec![], skipped)));
                    } else if attached {
                        prop_assert_eq!(counts(&r).map(|(a, s)| a + s), Some(positions.len()));
                    } else {
                        prop_assert_eq!(r, Err(Error::NotAttached(c("w"))));
                    }
                }
            }
            EphOp::Advance(ms) => h.advance(Duration::from_millis(ms.into())),
            EphOp::Detach => {
                if attached {
                    let r = h.cmd(Command::Detach {
                        stream: s("live"),
                        subscription: sub("watchers"),
                        consumer: c("w"),
                    });
                    prop_assert_eq!(r, Ok(Reply::Done));
                    attached = false;
                    delivered.clear();
                }
            }
            EphOp::Attach => {
                if !attached {
                    h.attach(1, "live", "watchers", "w", Some(max_in_flight));
                    attached = true;
                }
            }
        }
        for d in h.delivered_events("w") {
            let p = pos(d.event.partition, d.event.offset);
            if !delivered.contains(&p) {
                delivered.push(p);
            }
        }
        let (info, bytes) = held(&mut h);
        prop_assert!(
            info.next - info.first <= max_events,
            "step {}: {} events held, max {}",
            step,
            info.next - info.first,
            max_events
        );
        prop_assert!(
            bytes <= max_bytes,
            "step {}: {} bytes held, max {}",
            step,
            bytes,
            max_bytes
        );
        // An event leaves once the subscription acknowledged it (at-most-once: once delivered);
        // with `Reject` nothing else removes events.
        let floor = h
            .describe_sub("live", "watchers")
            .cursors
            .iter()
            .filter_map(|c| c.floors.first().copied())
            .min();
        if let Some(floor) = floor {
            let floor = floor.min(info.next);
            prop_assert!(
                info.first >= floor,
                "step {}: acknowledged events still held: first {}, floor {}",
                step,
                info.first,
                floor
            );
            if overflow == Overflow::Reject {
                prop_assert_eq!(
                    info.first,
                    floor,
                    "step {}: unacknowledged events removed",
                    step
                );
            }
        }
    }
    Ok(())
}

fn overflow() -> impl Strategy<Value = Overflow> {
    prop_oneof![Just(Overflow::Reject), Just(Overflow::DropOldest)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ephemeral_bounds_hold(
        max_events in 1u64..8,
        max_bytes in 1u64..120,
        overflow in overflow(),
        mode in mode(),
        delivery in prop_oneof![Just(DeliverySemantics::AtLeastOnce), Just(DeliverySemantics::ExactlyOnce)],
        max_in_flight in 1u32..5,
        ops in vec(eph_op(), 1..40),
    ) {
        check_ephemeral(max_events, max_bytes, overflow, mode, delivery, max_in_flight, ops)?;
    }

    #[test]
    fn ephemeral_at_most_once_events_leave_when_delivered(
        max_events in 1u64..8,
        max_bytes in 1u64..120,
        overflow in overflow(),
        mode in mode(),
        max_in_flight in 1u32..5,
        ops in vec(eph_op(), 1..40),
    ) {
        check_ephemeral(max_events, max_bytes, overflow, mode, DeliverySemantics::AtMostOnce, max_in_flight, ops)?;
    }
}
