//! The cases. Each takes a fresh, empty store and panics with a message naming what broke.

use crate::driver::Driver;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tributary_core::*;
use tributary_store_api::Store;

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid name")
}

fn event(stream: &str, partition: u32, offset: u64, id: u8, ts: u64) -> Arc<Event> {
    Arc::new(Event::from_new(
        NewEvent::new(format!("type-{id}"), vec![id; 8]),
        EventId::from_bytes([id; 16]),
        name(stream),
        partition,
        offset,
        UnixMillis(ts),
    ))
}

fn append(stream: &str, events: Vec<Arc<Event>>, dedup: Vec<DedupRecord>) -> StorageRequest {
    StorageRequest::Append(Arc::new(AppendWrite {
        stream: name(stream),
        seq: 0,
        after: None,
        events,
        dedup,
    }))
}

fn persistent(stream: &str, partitions: u32) -> StreamConfig {
    let mut c = StreamConfig::persistent(name(stream));
    c.partitions = partitions;
    c
}

async fn ok<S: Store>(s: &S, req: StorageRequest) -> StorageReply {
    let what = format!("{req:?}");
    match s.execute(req).await {
        StorageResult::Ok(r) => r,
        other => panic!(
            "{}: expected success, got {other:?}",
            &what[..what.len().min(200)]
        ),
    }
}

async fn recover<S: Store>(s: &S) -> RecoveredState {
    match ok(s, StorageRequest::Recover).await {
        StorageReply::Recovered(r) => r,
        other => panic!("Recover answered {other:?}"),
    }
}

/// Every dedup record of `stream` (up to 1,000), live at any time.
async fn all_dedup<S: Store>(s: &S, stream: &str) -> Vec<DedupRecord> {
    let load = StorageRequest::LoadDedup {
        stream: name(stream),
        live_at: UnixMillis(0),
        after: None,
        limit: 1000,
    };
    match ok(s, load).await {
        StorageReply::Dedup(ids) => ids,
        other => panic!("LoadDedup answered {other:?}"),
    }
}

async fn read<S: Store>(
    s: &S,
    stream: &str,
    partition: u32,
    from: u64,
    max: u32,
) -> Vec<Arc<Event>> {
    match ok(
        s,
        StorageRequest::Read {
            stream: name(stream),
            partition,
            from,
            max,
        },
    )
    .await
    {
        StorageReply::Events(e) => e,
        other => panic!("Read answered {other:?}"),
    }
}

/// Creating a stream twice with one configuration succeeds (a repeat after `Unknown`);
/// with another configuration it is a conflict.
pub async fn create_stream_is_idempotent_and_refuses_another_config<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 2))).await;
    ok(s, StorageRequest::CreateStream(persistent("a", 2))).await;
    let r = s
        .execute(StorageRequest::CreateStream(persistent("a", 3)))
        .await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::Conflict(_))),
        "another config: {r:?}"
    );
    let rec = recover(s).await;
    assert_eq!(rec.streams.len(), 1);
    assert_eq!(rec.streams[0].config, persistent("a", 2));
    assert_eq!(rec.streams[0].heads.len(), 2);
}

/// Appended events are read back in order and the heads of `Recover` follow them.
pub async fn append_then_read_and_recover_heads<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 2))).await;
    ok(s, StorageRequest::CreateStream(persistent("empty", 1))).await;
    let evs = vec![
        event("a", 0, 0, 1, 100),
        event("a", 1, 0, 2, 100),
        event("a", 0, 1, 3, 250),
    ];
    ok(s, append("a", evs.clone(), vec![])).await;
    ok(s, append("a", vec![event("a", 0, 2, 4, 300)], vec![])).await;
    let p0 = read(s, "a", 0, 0, 100).await;
    assert_eq!(
        p0.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(p0[1], evs[2], "an event reads back whole");
    let rec = recover(s).await;
    let a = rec
        .streams
        .iter()
        .find(|r| r.config.name == name("a"))
        .expect("stream a");
    assert_eq!(
        a.heads[0],
        PartitionHead {
            first: 0,
            next: 3,
            last_timestamp: UnixMillis(300)
        }
    );
    assert_eq!(
        a.heads[1],
        PartitionHead {
            first: 0,
            next: 1,
            last_timestamp: UnixMillis(100)
        }
    );
    let e = rec
        .streams
        .iter()
        .find(|r| r.config.name == name("empty"))
        .expect("stream empty");
    assert_eq!(
        e.heads[0],
        PartitionHead {
            first: 0,
            next: 0,
            last_timestamp: UnixMillis(0)
        }
    );
}

/// The same write twice succeeds once; other events at taken offsets are a conflict and
/// nothing of that request is written, not even its new offsets.
pub async fn a_repeated_append_is_idempotent_and_a_conflict_writes_nothing<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 1))).await;
    let w = vec![event("a", 0, 0, 1, 1), event("a", 0, 1, 2, 1)];
    ok(s, append("a", w.clone(), vec![])).await;
    ok(s, append("a", w, vec![])).await;
    assert_eq!(read(s, "a", 0, 0, 10).await.len(), 2);
    let r = s
        .execute(append(
            "a",
            vec![event("a", 0, 2, 3, 1), event("a", 0, 1, 9, 1)],
            vec![],
        ))
        .await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::Conflict(_))),
        "conflict expected: {r:?}"
    );
    let got = read(s, "a", 0, 0, 10).await;
    assert_eq!(
        got.len(),
        2,
        "offset 2 of the refused request is not written"
    );
    assert_eq!(got[1].event_id, EventId::from_bytes([2; 16]));
}

/// An append of hundreds of events and dedup ids (more than one statement's worth in the SQL
/// stores) is written whole, read back in order, repeated idempotently; a conflict in its last
/// rows writes none of it; a larger one (another path in the SQLite store) is written whole.
pub async fn a_large_append_is_written_whole_or_not_at_all<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("big", 3))).await;
    let big = |n: u64, id_base: u64| -> (Vec<Arc<Event>>, Vec<DedupRecord>) {
        let mut events = Vec::new();
        let mut dedup = Vec::new();
        for i in 0..n {
            let (p, o) = ((i % 3) as u32, i / 3);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(id_base + i).to_le_bytes());
            events.push(Arc::new(Event::from_new(
                NewEvent::new("big", vec![(i % 251) as u8; 40]),
                EventId::from_bytes(id),
                name("big"),
                p,
                o,
                UnixMillis(5),
            )));
            dedup.push(DedupRecord {
                event_id: EventId::from_bytes(id),
                partition: p,
                offset: o,
                expires_at: UnixMillis(1_000_000),
            });
        }
        (events, dedup)
    };
    // 3 x 70 events: partitions of 70 offsets each, 210 rows, not a multiple of 64.
    let (events, dedup) = big(210, 0);
    ok(s, append("big", events.clone(), dedup.clone())).await;
    ok(s, append("big", events.clone(), dedup.clone())).await;
    for p in 0..3u32 {
        let got = read(s, "big", p, 0, 1000).await;
        let want: Vec<_> = events.iter().filter(|e| e.partition == p).collect();
        assert_eq!(got.len(), 70, "partition {p} holds its 70 events once");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (g.offset, g.event_id, &g.payload),
                (w.offset, w.event_id, &w.payload)
            );
        }
    }
    let ids = all_dedup(s, "big").await;
    assert_eq!(ids.len(), 210, "every dedup id of the write is stored once");
    // The next 150 events, the last of which takes an offset that holds another event.
    let (mut more, more_dedup) = big(360, 1_000);
    let mut more: Vec<_> = more.drain(210..).collect();
    let last = more.len() - 1;
    more[last] = event("big", 0, 3, 99, 5);
    let r = s
        .execute(append("big", more, more_dedup[210..].to_vec()))
        .await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::Conflict(_))),
        "conflict expected: {r:?}"
    );
    for p in 0..3u32 {
        assert_eq!(
            read(s, "big", p, 0, 1000).await.len(),
            70,
            "nothing of the refused write is stored in partition {p}"
        );
    }
    let ids = all_dedup(s, "big").await;
    assert_eq!(ids.len(), 210, "no dedup id of the refused write is stored");
    // 300 more events with their ids: above what the SQLite store sends as one command.
    let (events, dedup) = big(510, 0);
    ok(
        s,
        append("big", events[210..].to_vec(), dedup[210..].to_vec()),
    )
    .await;
    for p in 0..3u32 {
        let got = read(s, "big", p, 0, 1000).await;
        assert_eq!(got.len(), 170, "partition {p} holds 70 + 100 events");
        assert!(got.iter().enumerate().all(|(i, e)| e.offset == i as u64));
    }
    let ids = all_dedup(s, "big").await;
    assert_eq!(ids.len(), 510, "the dedup ids of both writes are stored");
    // 150 events of 5,000 bytes in partition 1: a record batch each in the SQL stores, more
    // than the SQLite store sends as one command. Repeated, it is recognised.
    let large = |first: u64, seed: u8| -> Vec<Arc<Event>> {
        (0..150u64)
            .map(|i| {
                let mut id = [seed; 16];
                id[..8].copy_from_slice(&i.to_le_bytes());
                Arc::new(Event::from_new(
                    NewEvent::new("big", vec![(i % 251) as u8; 5_000]),
                    EventId::from_bytes(id),
                    name("big"),
                    1,
                    first + i,
                    UnixMillis(6),
                ))
            })
            .collect()
    };
    let first = large(170, 7);
    ok(s, append("big", first.clone(), vec![])).await;
    ok(s, append("big", first.clone(), vec![])).await;
    let got = read(s, "big", 1, 170, 1000).await;
    assert_eq!(got, first, "the 150 large events once");
    // The next 150, and one more in partition 2 at an offset that holds another event: its
    // batch comes after all of theirs, and none of the write is stored.
    let mut then = large(320, 8);
    then.push(event("big", 2, 169, 97, 6));
    let r = s.execute(append("big", then, vec![])).await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::Conflict(_))),
        "conflict expected: {r:?}"
    );
    assert_eq!(read(s, "big", 1, 170, 1000).await, first);
    assert_eq!(read(s, "big", 2, 0, 1000).await.len(), 170);
}

/// Requests naming a stream that does not exist answer `NotFound` and write nothing.
pub async fn requests_on_a_missing_stream_are_not_found<S: Store>(s: &S) {
    let r = s
        .execute(append("nope", vec![event("nope", 0, 0, 1, 1)], vec![]))
        .await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::NotFound(_))),
        "append: {r:?}"
    );
    let r = s
        .execute(StorageRequest::Read {
            stream: name("nope"),
            partition: 0,
            from: 0,
            max: 1,
        })
        .await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::NotFound(_))),
        "read: {r:?}"
    );
    let sub = SubscriptionRecord {
        id: SubId(1),
        config: SubscriptionConfig::new(
            name("nope"),
            SubscriptionName::new("s").expect("name"),
            SubscriptionMode::Exclusive,
        ),
        start_offsets: vec![0],
    };
    let r = s.execute(StorageRequest::SaveSubscription(sub)).await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::NotFound(_))),
        "subscription: {r:?}"
    );
    let cursor = CursorRecord {
        sub: SubId(77),
        consumer: None,
        partition: 0,
        floor: 1,
        acked: vec![],
    };
    let r = s.execute(StorageRequest::SaveCursor(cursor)).await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::NotFound(_))),
        "cursor: {r:?}"
    );
    assert!(recover(s).await.streams.is_empty());
}

/// Dedup ids are kept with their write and load in pages ordered by (partition, offset),
/// without the expired ones.
pub async fn dedup_ids_load_in_pages_and_expire<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 2))).await;
    let mut events = Vec::new();
    let mut dedup = Vec::new();
    for i in 0..6u8 {
        let (p, o) = (u32::from(i % 2), u64::from(i / 2));
        events.push(event("a", p, o, i + 1, 10));
        dedup.push(DedupRecord {
            event_id: EventId::from_bytes([i + 1; 16]),
            partition: p,
            offset: o,
            expires_at: UnixMillis(1000 + u64::from(i) * 10),
        });
    }
    ok(s, append("a", events, dedup.clone())).await;
    let load = |after, live_at, limit| StorageRequest::LoadDedup {
        stream: name("a"),
        live_at: UnixMillis(live_at),
        after,
        limit,
    };
    let StorageReply::Dedup(page1) = ok(s, load(None, 0, 4)).await else {
        panic!("LoadDedup")
    };
    let mut want = dedup.clone();
    want.sort_by_key(|d| (d.partition, d.offset));
    assert_eq!(page1, want[..4].to_vec());
    let last = page1.last().map(|d| (d.partition, d.offset));
    let StorageReply::Dedup(page2) = ok(s, load(last, 0, 4)).await else {
        panic!("LoadDedup")
    };
    assert_eq!(page2, want[4..].to_vec());
    let StorageReply::Dedup(live) = ok(s, load(None, 1020, 100)).await else {
        panic!("LoadDedup")
    };
    assert!(live.iter().all(|d| d.expires_at > UnixMillis(1020)));
    assert_eq!(live.len(), 3);
    let StorageReply::Dedup(none) = ok(
        s,
        StorageRequest::LoadDedup {
            stream: name("zz"),
            live_at: UnixMillis(0),
            after: None,
            limit: 9,
        },
    )
    .await
    else {
        panic!()
    };
    assert!(none.is_empty(), "a missing stream has no ids");
}

/// The answer to `FindOffset` in `stream`'s `partition` at time `at`.
async fn find_at<S: Store>(s: &S, stream: &str, partition: u32, at: u64) -> StorageReply {
    let req = StorageRequest::FindOffset {
        stream: name(stream),
        partition,
        at: UnixMillis(at),
    };
    ok(s, req).await
}

/// `FindOffset` is the first offset with a timestamp at or after the time, or the next offset.
pub async fn find_offset_by_time<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 1))).await;
    let evs = (0..5u8)
        .map(|i| {
            event(
                "a",
                0,
                u64::from(i),
                i + 1,
                [10, 20, 20, 30, 40][usize::from(i)],
            )
        })
        .collect();
    ok(s, append("a", evs, vec![])).await;
    for (at, want) in [(0, 0), (10, 0), (11, 1), (20, 1), (21, 3), (40, 4), (41, 5)] {
        let r = find_at(s, "a", 0, at).await;
        assert_eq!(r, StorageReply::Offset(want), "time {at}");
    }

    // A longer partition (in several record batches in the SQL stores), with times repeated and skipped,
    // written in several appends, its first events removed, beside a partition of other times.
    ok(s, StorageRequest::CreateStream(persistent("b", 2))).await;
    let ts_of = |i: u64| 1_000 + i / 5 * 2;
    for chunk in 0..3u64 {
        let evs = (chunk * 200..(chunk + 1) * 200)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&i.to_be_bytes());
                Arc::new(Event::from_new(
                    NewEvent::new("long", vec![1; 8]),
                    EventId::from_bytes(id),
                    name("b"),
                    1,
                    i,
                    UnixMillis(ts_of(i)),
                ))
            })
            .collect();
        ok(s, append("b", evs, vec![])).await;
    }
    let others = (0..50u8)
        .map(|i| event("b", 0, u64::from(i), i + 1, 5_000))
        .collect();
    ok(s, append("b", others, vec![])).await;
    let truncate = StorageRequest::Truncate {
        stream: name("b"),
        partition: 1,
        before: 100,
    };
    ok(s, truncate).await;
    for at in 990..ts_of(600) + 3 {
        let want = (100..600).find(|&i| ts_of(i) >= at).unwrap_or(600);
        let r = find_at(s, "b", 1, at).await;
        assert_eq!(r, StorageReply::Offset(want), "long partition, time {at}");
    }
}

/// The byte cut over a long partition written in several appends (many record batches in the
/// SQL stores, the cut falling inside one of them or on its edge), with keys on some events,
/// against the cut counted event by event; and again after a truncation. Twice: 400 events of
/// 200 to 1,100 bytes, and 1,100 events of 4,000 bytes (a batch each in the SQL stores, more
/// than one page of the walk from the newest).
pub async fn the_byte_cut_counts_from_the_head_across_many_appends<S: Store>(s: &S) {
    byte_cuts(s, "z", 400, |i| 200 + (i * 37) % 900, 123).await;
    byte_cuts(s, "y", 1_100, |_| 4_000, 30).await;
}

async fn byte_cuts<S: Store>(s: &S, stream: &str, count: u64, size: fn(u64) -> u64, cut_at: u64) {
    ok(s, StorageRequest::CreateStream(persistent(stream, 1))).await;
    let events: Vec<Arc<Event>> = (0..count)
        .map(|i| {
            let mut n = NewEvent::new("z", vec![(i % 251) as u8; size(i) as usize]);
            if i.is_multiple_of(3) {
                n.key = Some(vec![1u8; 10].into());
            }
            let mut id = [3u8; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            Arc::new(Event::from_new(
                n,
                EventId::from_bytes(id),
                name(stream),
                0,
                i,
                UnixMillis(1),
            ))
        })
        .collect();
    for chunk in events.chunks(100) {
        ok(s, append(stream, chunk.to_vec(), vec![])).await;
    }
    let counted = |e: &Event| size(e.offset) + if e.offset.is_multiple_of(3) { 10 } else { 0 };
    let cut = |first: u64, max: u64| -> u64 {
        let mut total = 0;
        for e in events.iter().rev().filter(|e| e.offset >= first) {
            total += counted(e);
            if total > max {
                return e.offset + 1;
            }
        }
        first
    };
    for first in [0u64, cut_at] {
        if first > 0 {
            let truncate = StorageRequest::Truncate {
                stream: name(stream),
                partition: 0,
                before: first,
            };
            ok(s, truncate).await;
        }
        let whole: u64 = events.iter().skip(first as usize).map(|e| counted(e)).sum();
        for max in [
            0,
            1,
            199,
            1_000,
            7_899,
            7_900,
            50_000,
            123_457,
            4_200_000,
            whole - 1,
            whole,
            whole + 1,
        ] {
            let r = ok(
                s,
                StorageRequest::RetentionCut {
                    stream: name(stream),
                    partition: 0,
                    max_bytes: max,
                },
            )
            .await;
            assert_eq!(
                r,
                StorageReply::Offset(cut(first, max)),
                "stream {stream}, max_bytes {max}, first offset {first}"
            );
        }
    }
}

/// Retention: the byte cut counts payloads and keys from the head; a truncation removes a
/// prefix only, never lowers the first offset, and keeps the next offset and last timestamp
/// when nothing is left; expired dedup ids are removed.
pub async fn retention_cuts_truncates_prefixes_and_expires_dedup_ids<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("t", 1))).await;
    let evs = (0..10u8)
        .map(|i| event("t", 0, u64::from(i), i + 1, u64::from(i) * 10))
        .collect();
    let dedup = (0..10u8)
        .map(|i| DedupRecord {
            event_id: EventId::from_bytes([i + 1; 16]),
            partition: 0,
            offset: u64::from(i),
            expires_at: UnixMillis(u64::from(i) * 10),
        })
        .collect();
    ok(s, append("t", evs, dedup)).await;
    // Payloads are 8 bytes, no keys.
    for (max_bytes, keep) in [(24, 7), (23, 8), (1000, 0), (80, 0), (7, 10)] {
        let r = ok(
            s,
            StorageRequest::RetentionCut {
                stream: name("t"),
                partition: 0,
                max_bytes,
            },
        )
        .await;
        assert_eq!(r, StorageReply::Offset(keep), "max_bytes {max_bytes}");
    }
    let truncate = |before| StorageRequest::Truncate {
        stream: name("t"),
        partition: 0,
        before,
    };
    ok(s, truncate(4)).await;
    ok(s, truncate(4)).await;
    ok(s, truncate(2)).await;
    let heads = recover(s).await.streams[0].heads.clone();
    assert_eq!(
        (heads[0].first, heads[0].next),
        (4, 10),
        "a prefix went, once"
    );
    let got: Vec<u64> = read(s, "t", 0, 0, 100)
        .await
        .iter()
        .map(|e| e.offset)
        .collect();
    assert_eq!(got, (4..10).collect::<Vec<_>>(), "no hole");
    let r = ok(
        s,
        StorageRequest::RetentionCut {
            stream: name("t"),
            partition: 0,
            max_bytes: 1000,
        },
    )
    .await;
    assert_eq!(
        r,
        StorageReply::Offset(4),
        "everything fits: the first offset"
    );
    ok(s, truncate(10)).await;
    let heads = recover(s).await.streams[0].heads.clone();
    assert_eq!(
        heads[0],
        PartitionHead {
            first: 10,
            next: 10,
            last_timestamp: UnixMillis(90)
        },
        "empty, with its next offset and last timestamp"
    );
    ok(s, append("t", vec![event("t", 0, 10, 11, 95)], vec![])).await;
    let got: Vec<u64> = read(s, "t", 0, 0, 100)
        .await
        .iter()
        .map(|e| e.offset)
        .collect();
    assert_eq!(got, vec![10]);
    ok(
        s,
        StorageRequest::ExpireDedup {
            stream: name("t"),
            at: UnixMillis(45),
        },
    )
    .await;
    let left = match ok(
        s,
        StorageRequest::LoadDedup {
            stream: name("t"),
            live_at: UnixMillis(0),
            after: None,
            limit: 100,
        },
    )
    .await
    {
        StorageReply::Dedup(d) => d,
        other => panic!("LoadDedup answered {other:?}"),
    };
    let offsets: Vec<u64> = left.iter().map(|d| d.offset).collect();
    assert_eq!(
        offsets,
        vec![5, 6, 7, 8, 9],
        "ids expired at 45 or before are gone"
    );
    let r = s
        .execute(StorageRequest::RetentionCut {
            stream: name("missing"),
            partition: 0,
            max_bytes: 1,
        })
        .await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::NotFound(_))),
        "{r:?}"
    );
}

/// Relay positions are kept per partition, replaced, recovered, and go with their stream; a
/// position of a missing stream is `NotFound`.
pub async fn relay_positions_round_trip_and_go_with_their_stream<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("x", 2))).await;
    let rec = |partition, next| RelayRecord {
        stream: name("x"),
        partition,
        next,
    };
    ok(s, StorageRequest::SaveRelay(rec(0, 3))).await;
    ok(s, StorageRequest::SaveRelay(rec(1, 9))).await;
    ok(s, StorageRequest::SaveRelay(rec(0, 7))).await;
    ok(s, StorageRequest::SaveRelay(rec(0, 7))).await;
    let mut relays = recover(s).await.relays;
    relays.sort_by_key(|r| r.partition);
    assert_eq!(relays, vec![rec(0, 7), rec(1, 9)]);
    ok(s, StorageRequest::DeleteStream(name("x"))).await;
    assert!(recover(s).await.relays.is_empty(), "gone with the stream");
    let r = s.execute(StorageRequest::SaveRelay(rec(0, 1))).await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::NotFound(_))),
        "relay position of a missing stream: {r:?}"
    );
}

/// Subscriptions and cursors are kept, replaced, recovered, and go with their subscription.
pub async fn subscriptions_and_cursors_round_trip<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 2))).await;
    let mut config = SubscriptionConfig::new(
        name("a"),
        SubscriptionName::new("s").expect("name"),
        SubscriptionMode::Broadcast,
    );
    config.ack_wait = Duration::from_millis(1500);
    let sub = SubscriptionRecord {
        id: SubId(5),
        config: config.clone(),
        start_offsets: vec![3, 4],
    };
    ok(s, StorageRequest::SaveSubscription(sub.clone())).await;
    ok(s, StorageRequest::SaveSubscription(sub.clone())).await;
    let consumer = Some(ConsumerId::new("c-1").expect("id"));
    let c1 = CursorRecord {
        sub: SubId(5),
        consumer: consumer.clone(),
        partition: 1,
        floor: 7,
        acked: vec![9, 12],
    };
    ok(s, StorageRequest::SaveCursor(c1.clone())).await;
    let c1b = CursorRecord {
        floor: 10,
        acked: vec![12],
        ..c1.clone()
    };
    ok(s, StorageRequest::SaveCursor(c1b.clone())).await;
    let c0 = CursorRecord {
        sub: SubId(5),
        consumer: None,
        partition: 0,
        floor: 2,
        acked: vec![],
    };
    ok(s, StorageRequest::SaveCursor(c0.clone())).await;
    let rec = recover(s).await;
    assert_eq!(rec.subscriptions, vec![sub]);
    let mut cursors = rec.cursors.clone();
    cursors.sort_by_key(|c| (c.consumer.clone(), c.partition));
    assert_eq!(
        cursors,
        vec![c0, c1b],
        "the newer cursor replaced the older"
    );
    ok(s, StorageRequest::DeleteSubscription(SubId(5))).await;
    ok(s, StorageRequest::DeleteSubscription(SubId(5))).await;
    let rec = recover(s).await;
    assert!(
        rec.subscriptions.is_empty() && rec.cursors.is_empty(),
        "cursors go with their subscription"
    );
    let r = s.execute(StorageRequest::SaveCursor(c1)).await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::NotFound(_))),
        "cursor of a deleted subscription: {r:?}"
    );
}

/// Cursor saves in flight together are each kept, and one that is refused (its subscription
/// does not exist) refuses no other (a store may write saves that wait together in one
/// statement).
pub async fn cursor_saves_in_flight_together_are_answered_each_on_its_own<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("c", 4))).await;
    let sub = SubscriptionRecord {
        id: SubId(3),
        config: SubscriptionConfig::new(
            name("c"),
            SubscriptionName::new("s").expect("name"),
            SubscriptionMode::Exclusive,
        ),
        start_offsets: vec![0; 4],
    };
    ok(s, StorageRequest::SaveSubscription(sub)).await;
    let cursor = |sub: u64, partition: u32| CursorRecord {
        sub: SubId(sub),
        consumer: None,
        partition,
        floor: 10 + u64::from(partition),
        acked: vec![20 + u64::from(partition)],
    };
    let save = |c: CursorRecord| s.execute(StorageRequest::SaveCursor(c));
    let (a, b, missing, c, d) = tokio::join!(
        save(cursor(3, 0)),
        save(cursor(3, 1)),
        save(cursor(99, 0)),
        save(cursor(3, 2)),
        save(cursor(3, 3)),
    );
    for r in [a, b, c, d] {
        assert!(matches!(r, StorageResult::Ok(_)), "a valid save: {r:?}");
    }
    assert!(
        matches!(missing, StorageResult::Err(StorageError::NotFound(_))),
        "the save of a missing subscription: {missing:?}"
    );
    let mut cursors = recover(s).await.cursors;
    cursors.sort_by_key(|c| c.partition);
    assert_eq!(cursors, (0..4).map(|p| cursor(3, p)).collect::<Vec<_>>());
}

/// A consumer group subscription keeps its mode, session settings and commit strategy, and its
/// committed offsets are cursors without a consumer, one per partition.
pub async fn a_consumer_group_subscription_round_trips<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("g", 3))).await;
    let mut config = SubscriptionConfig::new(
        name("g"),
        SubscriptionName::new("billing").expect("name"),
        SubscriptionMode::ConsumerGroup,
    );
    config.session_timeout = Duration::from_millis(12_500);
    config.heartbeat_interval = Duration::from_millis(2_000);
    config.commit = CommitStrategy::Periodic(Duration::from_millis(750));
    let sub = SubscriptionRecord {
        id: SubId(9),
        config,
        start_offsets: vec![0, 0, 0],
    };
    ok(s, StorageRequest::SaveSubscription(sub.clone())).await;
    let commits: Vec<CursorRecord> = (0..3)
        .map(|p| CursorRecord {
            sub: SubId(9),
            consumer: None,
            partition: p,
            floor: u64::from(p) * 10,
            acked: vec![],
        })
        .collect();
    for c in &commits {
        ok(s, StorageRequest::SaveCursor(c.clone())).await;
    }
    let rec = recover(s).await;
    assert_eq!(rec.subscriptions, vec![sub], "group settings survive");
    let mut cursors = rec.cursors;
    cursors.sort_by_key(|c| c.partition);
    assert_eq!(cursors, commits, "committed offsets per (group, partition)");
}

fn receipt(
    consumer: &str,
    partition: u32,
    offset: u64,
    delivered: u64,
    read: Option<u64>,
) -> ReceiptRecord {
    ReceiptRecord {
        sub: SubId(4),
        consumer: ConsumerId::new(consumer).expect("id"),
        partition,
        offset,
        delivered_at: UnixMillis(delivered),
        read_at: read.map(UnixMillis),
        timed_out: None,
    }
}

async fn load_receipts<S: Store>(
    s: &S,
    after: Option<(ConsumerId, u32, u64)>,
    limit: u32,
) -> Vec<ReceiptRecord> {
    match ok(
        s,
        StorageRequest::LoadReceipts {
            sub: SubId(4),
            after,
            limit,
        },
    )
    .await
    {
        StorageReply::Receipts(r) => r,
        other => panic!("LoadReceipts answered {other:?}"),
    }
}

/// Read receipts: saves merge (the later delivery, the first read) in any order and when
/// repeated; they load in pages ordered by (consumer, partition, offset); expiry removes those
/// last changed before the cutoff; they go with their subscription, and a save for a missing
/// subscription writes nothing.
pub async fn read_receipts_merge_page_expire_and_go_with_their_subscription<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("r", 2))).await;
    let config = SubscriptionConfig::new(
        name("r"),
        SubscriptionName::new("inbox").expect("name"),
        SubscriptionMode::ReadReceipt,
    );
    let sub = SubscriptionRecord {
        id: SubId(4),
        config,
        start_offsets: vec![0, 0],
    };
    ok(s, StorageRequest::SaveSubscription(sub)).await;
    let first = vec![
        receipt("bob", 0, 1, 100, None),
        receipt("alice", 1, 7, 100, None),
        receipt("alice", 0, 3, 100, Some(150)),
        receipt("alice", 0, 2, 90, None),
    ];
    ok(s, StorageRequest::SaveReceipts(first.clone())).await;
    ok(s, StorageRequest::SaveReceipts(first)).await;
    // A read saved, then an older delivery arriving late: the read and the later time stay.
    ok(
        s,
        StorageRequest::SaveReceipts(vec![receipt("alice", 0, 2, 200, Some(210))]),
    )
    .await;
    ok(
        s,
        StorageRequest::SaveReceipts(vec![
            receipt("alice", 0, 2, 95, None),
            receipt("alice", 0, 3, 100, Some(400)),
        ]),
    )
    .await;
    // A fired unread timeout is kept (the later one wins).
    let fired = |t| ReceiptRecord {
        timed_out: Some(UnixMillis(t)),
        ..receipt("alice", 1, 7, 100, None)
    };
    ok(s, StorageRequest::SaveReceipts(vec![fired(100)])).await;
    ok(
        s,
        StorageRequest::SaveReceipts(vec![receipt("alice", 1, 7, 100, None)]),
    )
    .await;
    ok(s, StorageRequest::SaveReceipts(vec![fired(50)])).await;
    let all = load_receipts(s, None, 100).await;
    assert_eq!(
        all,
        vec![
            receipt("alice", 0, 2, 200, Some(210)),
            receipt("alice", 0, 3, 100, Some(150)),
            fired(100),
            receipt("bob", 0, 1, 100, None),
        ],
        "merged and ordered by (consumer, partition, offset)"
    );
    let p1 = load_receipts(s, None, 2).await;
    let last = p1
        .last()
        .map(|r| (r.consumer.clone(), r.partition, r.offset));
    let p2 = load_receipts(s, last, 2).await;
    assert_eq!([p1, p2].concat(), all, "pages");
    // Last changes: 210, 150, 100, 100. A cutoff of 150 removes those changed before it.
    ok(
        s,
        StorageRequest::ExpireReceipts {
            sub: SubId(4),
            before: UnixMillis(150),
        },
    )
    .await;
    assert_eq!(
        load_receipts(s, None, 100).await,
        vec![
            receipt("alice", 0, 2, 200, Some(210)),
            receipt("alice", 0, 3, 100, Some(150)),
        ]
    );
    ok(s, StorageRequest::DeleteSubscription(SubId(4))).await;
    assert!(
        load_receipts(s, None, 100).await.is_empty(),
        "gone with the subscription"
    );
    let r = s
        .execute(StorageRequest::SaveReceipts(vec![receipt(
            "carol", 0, 0, 1, None,
        )]))
        .await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::NotFound(_))),
        "receipts of a deleted subscription: {r:?}"
    );
    assert!(load_receipts(s, None, 100).await.is_empty());
}

/// `DeleteCursor` removes one consumer's cursor rows (every partition) and receipts of one
/// subscription, and nothing else; repeating it, or naming a missing subscription, is `Done`.
pub async fn one_consumers_cursor_and_receipts_are_deleted<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("k", 2))).await;
    for (id, sub) in [(6, "inbox"), (7, "other")] {
        let config = SubscriptionConfig::new(
            name("k"),
            SubscriptionName::new(sub).expect("name"),
            SubscriptionMode::ReadReceipt,
        );
        let rec = SubscriptionRecord {
            id: SubId(id),
            config,
            start_offsets: vec![0, 0],
        };
        ok(s, StorageRequest::SaveSubscription(rec)).await;
    }
    let who = |c: &str| ConsumerId::new(c).expect("id");
    let cursor = |sub: u64, c: &str, partition: u32| CursorRecord {
        sub: SubId(sub),
        consumer: Some(who(c)),
        partition,
        floor: 3,
        acked: vec![5],
    };
    let receipt = |sub: u64, c: &str, offset: u64| ReceiptRecord {
        sub: SubId(sub),
        consumer: who(c),
        partition: 0,
        offset,
        delivered_at: UnixMillis(100),
        read_at: None,
        timed_out: None,
    };
    for c in [
        cursor(6, "alice", 0),
        cursor(6, "alice", 1),
        cursor(6, "bob", 0),
        cursor(7, "alice", 0),
    ] {
        ok(s, StorageRequest::SaveCursor(c)).await;
    }
    for (sub, c) in [(6, "alice"), (6, "bob"), (7, "alice")] {
        let list = vec![receipt(sub, c, 1), receipt(sub, c, 2)];
        ok(s, StorageRequest::SaveReceipts(list)).await;
    }
    let delete = |sub: u64, c: &str| StorageRequest::DeleteCursor {
        sub: SubId(sub),
        consumer: who(c),
    };
    ok(s, delete(6, "alice")).await;
    ok(s, delete(6, "alice")).await;
    ok(s, delete(99, "alice")).await;
    let mut cursors = recover(s).await.cursors;
    cursors.sort_by_key(|c| (c.sub, c.consumer.clone(), c.partition));
    assert_eq!(
        cursors,
        vec![cursor(6, "bob", 0), cursor(7, "alice", 0)],
        "only alice's cursors of subscription 6 are gone"
    );
    let receipts = |sub: u64| StorageRequest::LoadReceipts {
        sub: SubId(sub),
        after: None,
        limit: 100,
    };
    for (sub, left) in [(6, "bob"), (7, "alice")] {
        match ok(s, receipts(sub)).await {
            StorageReply::Receipts(r) => assert_eq!(
                r,
                vec![receipt(sub, left, 1), receipt(sub, left, 2)],
                "subscription {sub}: only alice's receipts of subscription 6 are gone"
            ),
            other => panic!("LoadReceipts answered {other:?}"),
        }
    }
}

/// A consumer's position removed by `RemoveConsumer` stays removed after a restart: the
/// engine recovers the other consumers only, and the consumer attaching again starts afresh.
pub async fn a_removed_consumer_stays_removed_after_a_restart<S: Store>(s: &S) {
    let wall = 1_767_225_600_000;
    let stream = name("feed");
    let sub = SubscriptionName::new("fan").expect("name");
    let who = |c: &str| ConsumerId::new(c).expect("id");
    let attach = |c: &str| Command::Attach {
        stream: stream.clone(),
        subscription: sub.clone(),
        consumer: who(c),
        max_in_flight: None,
    };
    let ack = |c: &str, offsets: &[u64]| Command::Ack {
        stream: stream.clone(),
        subscription: sub.clone(),
        consumer: who(c),
        positions: offsets
            .iter()
            .map(|&offset| Position {
                partition: 0,
                offset,
            })
            .collect(),
    };
    let detach = |c: &str| Command::Detach {
        stream: stream.clone(),
        subscription: sub.clone(),
        consumer: who(c),
    };
    let describe = Command::DescribeSubscription {
        stream: stream.clone(),
        subscription: sub.clone(),
    };
    let consumers = |r: Result<Reply, Error>| match r {
        Ok(Reply::Subscription(info)) => info
            .cursors
            .iter()
            .map(|c| {
                let who = c.consumer.as_ref().map(|c| c.to_string());
                (who.unwrap_or_default(), c.floors[0])
            })
            .collect::<Vec<_>>(),
        other => panic!("describe answered {other:?}"),
    };
    {
        let mut d = Driver::start(s, Config::default(), wall).await;
        let setup = vec![
            Command::CreateStream(StreamConfig::persistent(stream.clone())),
            Command::CreateSubscription(SubscriptionConfig::new(
                stream.clone(),
                sub.clone(),
                SubscriptionMode::ReadReceipt,
            )),
        ];
        for c in setup {
            assert_eq!(d.cmd(c).await, Ok(Reply::Done));
        }
        let append = Command::Append(AppendRequest {
            stream: stream.clone(),
            events: (0..3).map(|_| NewEvent::new("t", b"{}".to_vec())).collect(),
            expected_offset: None,
        });
        assert!(matches!(d.cmd(append).await, Ok(Reply::Appended(_))));
        for (c, offsets) in [("keep", &[0u64, 1][..]), ("gone", &[0][..])] {
            assert_eq!(d.cmd(attach(c)).await, Ok(Reply::Done));
            let r = d.cmd(ack(c, offsets)).await;
            assert!(matches!(r, Ok(Reply::Settled(_))), "{r:?}");
            assert_eq!(d.cmd(detach(c)).await, Ok(Reply::Done));
        }
        assert_eq!(
            consumers(d.cmd(describe.clone()).await),
            vec![("keep".to_string(), 2), ("gone".to_string(), 1)]
        );
        let remove = Command::RemoveConsumer {
            stream: stream.clone(),
            subscription: sub.clone(),
            consumer: who("gone"),
        };
        assert_eq!(d.cmd(remove).await, Ok(Reply::Done));
    }
    let mut d = Driver::start(s, Config::default(), wall + 1000).await;
    assert_eq!(
        consumers(d.cmd(describe.clone()).await),
        vec![("keep".to_string(), 2)],
        "the removed consumer (with its receipts) did not come back"
    );
    d.outputs.clear();
    assert_eq!(d.cmd(attach("gone")).await, Ok(Reply::Done));
    let delivered: Vec<u64> = d
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver { events, .. } => Some(events.iter().map(|e| e.event.offset)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(delivered, vec![0, 1, 2], "attaching again starts afresh");
}

/// A deleted stream is gone with its subscriptions, and a new stream of its name is empty.
pub async fn deleting_a_stream_removes_it_and_frees_the_name<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 1))).await;
    let d = DedupRecord {
        event_id: EventId::from_bytes([1; 16]),
        partition: 0,
        offset: 0,
        expires_at: UnixMillis(u64::MAX >> 2),
    };
    ok(s, append("a", vec![event("a", 0, 0, 1, 5)], vec![d])).await;
    let config = SubscriptionConfig::new(
        name("a"),
        SubscriptionName::new("s").expect("name"),
        SubscriptionMode::Exclusive,
    );
    ok(
        s,
        StorageRequest::SaveSubscription(SubscriptionRecord {
            id: SubId(1),
            config,
            start_offsets: vec![0],
        }),
    )
    .await;
    ok(s, StorageRequest::DeleteStream(name("a"))).await;
    ok(s, StorageRequest::DeleteStream(name("a"))).await;
    let rec = recover(s).await;
    assert!(rec.streams.is_empty() && rec.subscriptions.is_empty());
    ok(s, StorageRequest::CreateStream(persistent("a", 1))).await;
    assert!(
        read(s, "a", 0, 0, 10).await.is_empty(),
        "the new stream is empty"
    );
    let StorageReply::Dedup(ids) = ok(
        s,
        StorageRequest::LoadDedup {
            stream: name("a"),
            live_at: UnixMillis(0),
            after: None,
            limit: 10,
        },
    )
    .await
    else {
        panic!()
    };
    assert!(ids.is_empty(), "and has no dedup ids");
    ok(s, append("a", vec![event("a", 0, 0, 2, 5)], vec![])).await;
    assert_eq!(
        read(s, "a", 0, 0, 10).await[0].event_id,
        EventId::from_bytes([2; 16])
    );
}

/// Reads return at most `max` events from `from`, and nothing past the end.
pub async fn reads_page_through_a_partition<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 1))).await;
    let evs = (0..25u8)
        .map(|i| event("a", 0, u64::from(i), i + 1, 1))
        .collect();
    ok(s, append("a", evs, vec![])).await;
    let mut from = 0;
    let mut seen = Vec::new();
    loop {
        let page = read(s, "a", 0, from, 10).await;
        assert!(page.len() <= 10);
        if page.is_empty() {
            break;
        }
        from = page.last().map_or(from, |e| e.offset + 1);
        seen.extend(page.iter().map(|e| e.offset));
    }
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
    assert!(read(s, "a", 0, 100, 10).await.is_empty());
}

/// Every field of the envelope survives the store: ids, keys, headers, ids of correlation and
/// causation, content type, payload, schema version.
pub async fn events_keep_every_field<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 1))).await;
    let mut headers = BTreeMap::new();
    headers.insert("x-tenant".to_string(), "acme".to_string());
    headers.insert("trace".to_string(), "ünïcode ✓".to_string());
    let mut e =
        NewEvent::new("order.placed", b"\x00\x01binary\xff".to_vec()).with_key(b"\x00key".to_vec());
    e.schema_version = 3;
    e.correlation_id = Some("corr-1".into());
    e.causation_id = Some("cause-1".into());
    e.headers = headers;
    e.content_type = "application/octet-stream".into();
    let full = Arc::new(Event::from_new(
        e,
        EventId::from_bytes([9; 16]),
        name("a"),
        0,
        0,
        UnixMillis(1_767_225_600_123),
    ));
    let bare = event("a", 0, 1, 2, 1_767_225_600_124);
    ok(s, append("a", vec![full.clone(), bare.clone()], vec![])).await;
    assert_eq!(read(s, "a", 0, 0, 10).await, vec![full, bare]);
    // Writes in which only some events use a field, or one field alone, or all share a content
    // type that is not the default (a store may send only the columns a write uses).
    let with = |offset: u64, set: &dyn Fn(&mut NewEvent)| {
        let mut e = NewEvent::new("t", vec![offset as u8; 4]);
        e.content_type = "text/plain".into();
        set(&mut e);
        Arc::new(Event::from_new(
            e,
            EventId::from_bytes([offset as u8 + 10; 16]),
            name("a"),
            0,
            offset,
            UnixMillis(1_767_225_600_200 + offset),
        ))
    };
    let writes: Vec<Vec<Arc<Event>>> = vec![
        vec![
            with(2, &|e| e.key = Some(b"k".to_vec().into())),
            with(3, &|_| {}),
        ],
        vec![with(4, &|e| e.correlation_id = Some("c".into()))],
        vec![
            with(5, &|_| {}),
            with(6, &|e| e.causation_id = Some("d".into())),
        ],
        vec![with(7, &|e| {
            e.headers.insert("h".into(), "v".into());
        })],
        vec![
            with(8, &|_| {}),
            with(9, &|e| e.content_type = "text/csv".into()),
        ],
    ];
    let mut expected = Vec::new();
    for events in writes {
        let dedup = events
            .iter()
            .map(|e| DedupRecord {
                event_id: e.event_id,
                partition: 0,
                offset: e.offset,
                expires_at: UnixMillis(u64::MAX / 4),
            })
            .collect();
        ok(s, append("a", events.clone(), dedup)).await;
        expected.extend(events);
    }
    assert_eq!(read(s, "a", 0, 2, 10).await, expected);
    let mut ids: Vec<(u64, EventId)> = all_dedup(s, "a")
        .await
        .iter()
        .map(|d| (d.offset, d.event_id))
        .collect();
    ids.sort();
    let written: Vec<(u64, EventId)> = expected.iter().map(|e| (e.offset, e.event_id)).collect();
    assert_eq!(ids, written);
}

/// An engine on the store: appends with ids, a subscription with acks; a new engine on the
/// same store knows the heads, the dedup ids and the positions.
pub async fn an_engine_restarted_on_the_store_carries_on<S: Store>(s: &S) {
    let wall = 1_767_225_600_000;
    let stream = name("orders");
    let sub = SubscriptionName::new("billing").expect("name");
    let consumer = ConsumerId::new("w").expect("id");
    let ids: Vec<EventId> = (1..=6u8).map(|i| EventId::from_bytes([i; 16])).collect();
    let batch = |ids: &[EventId]| {
        Command::Append(AppendRequest {
            stream: stream.clone(),
            events: ids
                .iter()
                .map(|id| NewEvent::new("t", b"{}".to_vec()).with_id(*id))
                .collect(),
            expected_offset: None,
        })
    };
    {
        let mut d = Driver::start(s, Config::default(), wall).await;
        assert_eq!(
            d.cmd(Command::CreateStream(StreamConfig::persistent(
                stream.clone()
            )))
            .await,
            Ok(Reply::Done)
        );
        let r = d.cmd(batch(&ids)).await;
        assert!(
            matches!(&r, Ok(Reply::Appended(o)) if o.len() == 6),
            "{r:?}"
        );
        let config =
            SubscriptionConfig::new(stream.clone(), sub.clone(), SubscriptionMode::Exclusive);
        assert_eq!(
            d.cmd(Command::CreateSubscription(config)).await,
            Ok(Reply::Done)
        );
        let attach = Command::Attach {
            stream: stream.clone(),
            subscription: sub.clone(),
            consumer: consumer.clone(),
            max_in_flight: None,
        };
        assert_eq!(d.cmd(attach).await, Ok(Reply::Done));
        let positions = [0u64, 1, 3]
            .iter()
            .map(|&offset| Position {
                partition: 0,
                offset,
            })
            .collect();
        let ack = Command::Ack {
            stream: stream.clone(),
            subscription: sub.clone(),
            consumer: consumer.clone(),
            positions,
        };
        assert_eq!(
            d.cmd(ack).await.map(|r| r.settled_counts()),
            Ok(Some((3, 0)))
        );
    }
    let mut d = Driver::start(s, Config::default(), wall + 1000).await;
    let r = d.cmd(batch(&ids[4..])).await;
    let dups = vec![
        AppendOutcome::Duplicate {
            original: Position {
                partition: 0,
                offset: 4,
            },
        },
        AppendOutcome::Duplicate {
            original: Position {
                partition: 0,
                offset: 5,
            },
        },
    ];
    assert_eq!(
        r,
        Ok(Reply::Appended(dups)),
        "the dedup window survived the restart"
    );
    let r = d.cmd(batch(&[EventId::from_bytes([42; 16])])).await;
    assert_eq!(
        r,
        Ok(Reply::Appended(vec![AppendOutcome::Appended(Position {
            partition: 0,
            offset: 6
        })]))
    );
    let attach = Command::Attach {
        stream: stream.clone(),
        subscription: sub,
        consumer,
        max_in_flight: None,
    };
    assert_eq!(d.cmd(attach).await, Ok(Reply::Done));
    let delivered: Vec<u64> = d
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver { events, .. } => Some(events.iter().map(|e| e.event.offset)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        delivered,
        vec![2, 4, 5, 6],
        "acknowledged events are not delivered again"
    );
}

fn chained(stream: &str, seq: u64, after: Option<u64>, events: Vec<Arc<Event>>) -> StorageRequest {
    StorageRequest::Append(Arc::new(AppendWrite {
        stream: name(stream),
        seq,
        after,
        events,
        dedup: vec![],
    }))
}

/// A pipelined append that arrives before the one it names waits for it, then commits after it.
pub async fn a_pipelined_append_commits_after_the_one_it_names<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 1))).await;
    let second = s.execute(chained("a", 11, Some(10), vec![event("a", 0, 1, 2, 1)]));
    let first = s.execute(chained("a", 10, None, vec![event("a", 0, 0, 1, 1)]));
    let (second, first) = tokio::join!(second, first);
    assert_eq!(first, StorageResult::Ok(StorageReply::Done));
    assert_eq!(second, StorageResult::Ok(StorageReply::Done));
    let ids: Vec<EventId> = read(s, "a", 0, 0, 10)
        .await
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        ids,
        vec![EventId::from_bytes([1; 16]), EventId::from_bytes([2; 16])]
    );
}

/// An append whose predecessor did not commit fails and writes nothing: no hole.
pub async fn an_append_after_one_that_did_not_commit_writes_nothing<S: Store>(s: &S) {
    ok(s, StorageRequest::CreateStream(persistent("a", 1))).await;
    ok(s, chained("a", 20, None, vec![event("a", 0, 0, 1, 1)])).await;
    let r = s
        .execute(chained("a", 21, Some(20), vec![event("a", 0, 0, 9, 1)]))
        .await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::Conflict(_))),
        "{r:?}"
    );
    let r = s
        .execute(chained("a", 22, Some(21), vec![event("a", 0, 1, 3, 1)]))
        .await;
    assert!(
        matches!(r, StorageResult::Err(_)),
        "its predecessor failed: {r:?}"
    );
    assert_eq!(
        read(s, "a", 0, 0, 10).await.len(),
        1,
        "offset 1 is not written"
    );
    // A later write that names a committed one goes.
    ok(s, chained("a", 23, Some(20), vec![event("a", 0, 1, 4, 1)])).await;
}

fn schema_record(event_type: &str, version: u32, function: bool) -> SchemaRecord {
    SchemaRecord {
        event_type: event_type.into(),
        version,
        schema: (version % 2 == 1).then(|| {
            serde_json::json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}})
        }),
        rules: if version > 1 && !function {
            vec![
                Rule::Rename {
                    from: "name".into(),
                    to: "full_name".into(),
                },
                Rule::Add {
                    field: "address.country".into(),
                    default: serde_json::json!({"code": "NL", "eu": true}),
                },
            ]
        } else {
            Vec::new()
        },
        function,
    }
}

async fn load_schemas<S: Store>(
    s: &S,
    after: Option<(String, u32)>,
    limit: u32,
) -> Vec<SchemaRecord> {
    match s
        .execute(StorageRequest::LoadSchemas { after, limit })
        .await
    {
        StorageResult::Ok(StorageReply::Schemas(page)) => page,
        other => panic!("LoadSchemas: {other:?}"),
    }
}

/// Schema versions are upserted (a repeat changes nothing, new content replaces the row) and
/// load in pages ordered by (event type in byte order, version), every field intact.
pub async fn schema_versions_upsert_and_load_in_pages<S: Store>(s: &S) {
    assert!(load_schemas(s, None, 10).await.is_empty(), "empty at first");
    let all = vec![
        schema_record("B", 1, false),
        schema_record("a", 1, false),
        schema_record("a", 2, false),
        schema_record("a", 3, true),
        schema_record("a.x", 1, false),
    ];
    ok(
        s,
        StorageRequest::SaveSchemas(vec![all[1].clone(), all[2].clone()]),
    )
    .await;
    ok(
        s,
        StorageRequest::SaveSchemas(vec![all[2].clone(), all[3].clone(), all[0].clone()]),
    )
    .await;
    ok(s, StorageRequest::SaveSchemas(vec![all[4].clone()])).await;
    ok(s, StorageRequest::SaveSchemas(vec![all[4].clone()])).await;
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = load_schemas(s, after.clone(), 2).await;
        assert!(page.len() <= 2, "a page holds at most its limit");
        paged.extend(page.iter().cloned());
        match page.last() {
            Some(last) if page.len() == 2 => after = Some((last.event_type.clone(), last.version)),
            _ => break,
        }
    }
    assert_eq!(paged, all, "every version, in (event type, version) order");
    let replaced = SchemaRecord {
        schema: None,
        ..all[0].clone()
    };
    ok(s, StorageRequest::SaveSchemas(vec![replaced.clone()])).await;
    assert_eq!(load_schemas(s, None, 1).await, vec![replaced]);
}

/// Versions registered through an engine are there after a restart on the same store:
/// listed, upcasting, and registering one again with the same content is accepted while
/// other content is refused.
pub async fn registered_schemas_survive_a_restart<S: Store>(s: &S) {
    let wall = 1_767_225_600_000;
    let reg = |version: u32, rules: Vec<Rule>, required: &[&str]| SchemaRegistration {
        event_type: "user".into(),
        version,
        schema: Some(serde_json::json!({"type": "object", "required": required})),
        rules,
    };
    let v1 = reg(1, vec![], &["name"]);
    let v2 = reg(
        2,
        vec![Rule::Rename {
            from: "name".into(),
            to: "full_name".into(),
        }],
        &["full_name"],
    );
    let listed = {
        let mut d = Driver::start(s, Config::default(), wall).await;
        assert_eq!(
            d.cmd(Command::RegisterSchema(v1.clone())).await,
            Ok(Reply::Done)
        );
        assert_eq!(
            d.cmd(Command::RegisterSchema(v2.clone())).await,
            Ok(Reply::Done)
        );
        match d.cmd(Command::ListSchemas).await {
            Ok(Reply::Schemas(l)) => l,
            other => panic!("{other:?}"),
        }
    };
    let mut d = Driver::start(s, Config::default(), wall + 1000).await;
    match d.cmd(Command::ListSchemas).await {
        Ok(Reply::Schemas(l)) => assert_eq!(l, listed, "the registry after a restart"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        d.cmd(Command::RegisterSchema(v2.clone())).await,
        Ok(Reply::Done),
        "the same version again (a server's configured schemas at every start)"
    );
    let other = SchemaRegistration {
        rules: vec![],
        ..v2.clone()
    };
    let r = d.cmd(Command::RegisterSchema(other)).await;
    assert!(
        matches!(r, Err(Error::SchemaVersionConflict { version: 2, .. })),
        "version 2 with other rules: {r:?}"
    );
    let stream = name("users");
    assert_eq!(
        d.cmd(Command::CreateStream(StreamConfig::persistent(
            stream.clone()
        )))
        .await,
        Ok(Reply::Done)
    );
    let r = d
        .cmd(Command::Append(AppendRequest {
            stream: stream.clone(),
            events: vec![NewEvent::new("user", br#"{"name":"Ada"}"#.to_vec())],
            expected_offset: None,
        }))
        .await;
    assert!(matches!(r, Ok(Reply::Appended(_))), "{r:?}");
    let sub = SubscriptionName::new("s").expect("name");
    let config = SubscriptionConfig::new(stream.clone(), sub.clone(), SubscriptionMode::Broadcast);
    assert_eq!(
        d.cmd(Command::CreateSubscription(config)).await,
        Ok(Reply::Done)
    );
    let consumer = ConsumerId::new("c").expect("id");
    let attach = Command::Attach {
        stream: stream.clone(),
        subscription: sub,
        consumer,
        max_in_flight: None,
    };
    assert_eq!(d.cmd(attach).await, Ok(Reply::Done));
    d.settle().await;
    let delivered: Vec<Arc<Event>> = d
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver { events, .. } => Some(events.iter().map(|x| x.event.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(delivered.len(), 1, "{:?}", d.outputs);
    assert_eq!(
        delivered[0].schema_version, 2,
        "upcast by the recovered upcaster"
    );
    assert_eq!(&delivered[0].payload[..], br#"{"full_name":"Ada"}"#);
}
