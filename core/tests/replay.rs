//! Replay (SPEC 4): offsets, times, time ranges, batches, limits, filters, the rate limit on
//! the core's clock, progress, truncation, bad input and cancellation.
//!
//! Everything runs on the harness's virtual clock: no sleeps, no wall time.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tributary_core::*;

// ---- helpers ----------------------------------------------------------------------------------

/// A harness whose persistent partitions keep only `tail` events in memory, so older events
/// are read from the store.
fn small_cache(tail: usize) -> Harness {
    let config = Config {
        tail_cache_events: tail,
        ..no_linger()
    };
    Harness::with(config, tributary_store_memory::MemoryStore::new(), 7)
}

fn opts() -> ReplayOptions {
    ReplayOptions::default()
}

/// Starts a replay on connection 1 and returns its id (or the error it was refused with).
fn replay(
    h: &mut Harness,
    stream: &str,
    from: ReplayFrom,
    options: ReplayOptions,
) -> Result<ReplayId, Error> {
    replay_on(h, 1, stream, from, options)
}

fn replay_on(
    h: &mut Harness,
    conn: u64,
    stream: &str,
    from: ReplayFrom,
    options: ReplayOptions,
) -> Result<ReplayId, Error> {
    match h.cmd_on(
        conn,
        Command::Replay {
            stream: s(stream),
            from,
            options,
        },
    )? {
        Reply::ReplayStarted(id) => Ok(id),
        other => panic!("replay answered {other:?}"),
    }
}

/// Takes the items of one replay from the outputs, in order.
fn items(h: &mut Harness, id: ReplayId) -> Vec<ReplayItem> {
    let mut got = Vec::new();
    h.outputs.retain(|o| match o {
        Output::Replay { replay, item, .. } if *replay == id => {
            got.push(item.clone());
            false
        }
        _ => true,
    });
    got
}

fn events_of(items: &[ReplayItem]) -> Vec<Arc<Event>> {
    items
        .iter()
        .filter_map(|i| match i {
            ReplayItem::Events(e) => Some(e.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn batch_sizes(items: &[ReplayItem]) -> Vec<usize> {
    items
        .iter()
        .filter_map(|i| match i {
            ReplayItem::Events(e) => Some(e.len()),
            _ => None,
        })
        .collect()
}

fn offsets(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.offset).collect()
}

/// Asserts that the replay ended with exactly one `Done`, as its last item, and returns its
/// total.
fn done_total(items: &[ReplayItem]) -> u64 {
    let dones: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i, ReplayItem::Done { .. }))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(dones.len(), 1, "exactly one Done expected: {items:?}");
    assert_eq!(
        dones[0],
        items.len() - 1,
        "Done must be the last item: {items:?}"
    );
    assert!(
        !items.iter().any(|i| matches!(i, ReplayItem::Failed(_))),
        "no failure expected: {items:?}"
    );
    match items.last() {
        Some(ReplayItem::Done { total }) => *total,
        _ => unreachable!(),
    }
}

/// Lets `total` of virtual time pass in steps of 100 ms (a rate-limited replay wakes up at
/// every step).
fn run_for(h: &mut Harness, total: Duration) {
    let step = Duration::from_millis(100);
    let mut passed = Duration::ZERO;
    while passed < total {
        h.advance(step);
        passed += step;
    }
}

fn is_done(items: &[ReplayItem]) -> bool {
    items
        .iter()
        .any(|i| matches!(i, ReplayItem::Done { .. } | ReplayItem::Failed(_)))
}

/// Appends `n` events one by one on a single-partition stream, the i-th at wall time
/// `T0 + 1000 * (i + 1)` ms, with type `t<i>`.
fn append_timed(h: &mut Harness, stream: &str, n: u64) {
    for i in 0..n {
        h.set_wall(T0 + 1000 * (i + 1));
        let out = h.append(stream, vec![ev(&format!("t{i}"))]).unwrap();
        assert_eq!(out.len(), 1);
    }
}

/// All events of a stream, read back partition by partition.
fn read_all(h: &mut Harness, stream: &str) -> Vec<Arc<Event>> {
    let info = h.describe(stream);
    let mut all = Vec::new();
    for (p, part) in info.partitions.iter().enumerate() {
        let mut from = part.first;
        while from < part.next {
            let page = h.read(stream, p as u32, from, 1000).unwrap();
            assert!(!page.is_empty());
            from = page.last().unwrap().offset + 1;
            all.extend(page);
        }
    }
    all
}

// ---- offsets and batches ----------------------------------------------------------------------

fn offset_replay_in_batches(mut h: Harness) {
    h.create_persistent("orders", 1);
    h.append_n("orders", 23);
    let stored = read_all(&mut h, "orders");
    assert_eq!(stored.len(), 23);

    let id = replay(
        &mut h,
        "orders",
        ReplayFrom::Offset(5),
        ReplayOptions {
            batch_size: Some(4),
            ..opts()
        },
    )
    .expect("replay starts");
    let got = items(&mut h, id);
    assert_eq!(done_total(&got), 18);
    assert_eq!(batch_sizes(&got), vec![4, 4, 4, 4, 2]);
    let events = events_of(&got);
    assert_eq!(offsets(&events), (5..23).collect::<Vec<u64>>());
    for e in &events {
        let original = &stored[e.offset as usize];
        assert_eq!(e.event_id, original.event_id);
        assert_eq!(e.event_type, format!("t{}", e.offset));
        assert_eq!(e.partition, 0);
    }
    // Nothing else comes later.
    h.advance(Duration::from_secs(10));
    assert!(items(&mut h, id).is_empty());
}

#[test]
fn offset_replay_returns_the_events_from_n_in_order_in_batches_from_the_tail_cache() {
    offset_replay_in_batches(Harness::new());
}

#[test]
fn offset_replay_returns_the_events_from_n_in_order_in_batches_from_the_store() {
    // Only 3 events in memory: everything below offset 20 is read from the store.
    offset_replay_in_batches(small_cache(3));
}

#[test]
fn offset_replay_uses_the_default_batch_size_and_handles_an_offset_past_the_end() {
    let mut h = Harness::new();
    h.create_persistent("orders", 1);
    h.append_n("orders", 250);
    let id = replay(&mut h, "orders", ReplayFrom::Offset(0), opts()).unwrap();
    let got = items(&mut h, id);
    assert_eq!(done_total(&got), 250);
    assert_eq!(batch_sizes(&got), vec![100, 100, 50]);
    assert_eq!(offsets(&events_of(&got)), (0..250).collect::<Vec<u64>>());

    // From the head (or beyond it): nothing to send, but the replay finishes.
    for from in [250, 1_000] {
        let id = replay(&mut h, "orders", ReplayFrom::Offset(from), opts()).unwrap();
        let got = items(&mut h, id);
        assert_eq!(got, vec![ReplayItem::Done { total: 0 }]);
    }
}

#[test]
fn multi_partition_replay_sends_every_event_of_every_partition_exactly_once() {
    let mut h = small_cache(4);
    h.create_persistent("clicks", 3);
    for i in 0..40u32 {
        // Keys spread events unevenly; every 5th event has no key (round-robin).
        let e = if i % 5 == 0 {
            ev("click")
        } else {
            ev("click").with_key(format!("user-{}", i % 7))
        };
        h.append("clicks", vec![e]).unwrap();
    }
    let stored = read_all(&mut h, "clicks");
    assert_eq!(stored.len(), 40);
    let counts: Vec<u64> = h
        .describe("clicks")
        .partitions
        .iter()
        .map(|p| p.next)
        .collect();
    assert!(
        counts.iter().filter(|&&n| n > 4).count() >= 2,
        "at least two partitions go to the store: {counts:?}"
    );

    let id = replay(
        &mut h,
        "clicks",
        ReplayFrom::Offset(0),
        ReplayOptions {
            batch_size: Some(3),
            ..opts()
        },
    )
    .unwrap();
    let got = items(&mut h, id);
    assert_eq!(done_total(&got), 40);
    assert!(batch_sizes(&got).iter().all(|&n| (1..=3).contains(&n)));
    let events = events_of(&got);
    assert_eq!(events.len(), 40);
    let replayed: BTreeSet<(u32, u64)> = events.iter().map(|e| (e.partition, e.offset)).collect();
    assert_eq!(replayed.len(), 40, "no event is sent twice");
    let expected: BTreeSet<(u32, u64)> = stored.iter().map(|e| (e.partition, e.offset)).collect();
    assert_eq!(replayed, expected);
    // Same events (ids), and within a partition in offset order.
    let ids: BTreeSet<EventId> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, stored.iter().map(|e| e.event_id).collect());
    for p in 0..3 {
        let offs: Vec<u64> = events
            .iter()
            .filter(|e| e.partition == p)
            .map(|e| e.offset)
            .collect();
        assert_eq!(
            offs,
            (0..counts[p as usize]).collect::<Vec<u64>>(),
            "partition {p}"
        );
    }

    // From offset 2 of every partition.
    let id = replay(&mut h, "clicks", ReplayFrom::Offset(2), opts()).unwrap();
    let got = items(&mut h, id);
    let expected: u64 = counts.iter().map(|n| n.saturating_sub(2)).sum();
    assert_eq!(done_total(&got), expected);
    let events = events_of(&got);
    assert_eq!(events.len() as u64, expected);
    assert!(events.iter().all(|e| e.offset >= 2));
}

// ---- time -------------------------------------------------------------------------------------

fn time_replays(mut h: Harness) {
    h.create_persistent("temps", 1);
    // Offset i has timestamp T0 + 1000 * (i + 1).
    append_timed(&mut h, "temps", 10);
    let stored = read_all(&mut h, "temps");
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.timestamp, UnixMillis(T0 + 1000 * (i as u64 + 1)));
    }
    let ts = |i: u64| UnixMillis(T0 + 1000 * (i + 1));
    let run = |h: &mut Harness, from: ReplayFrom| -> Vec<u64> {
        let id = replay(
            h,
            "temps",
            from,
            ReplayOptions {
                batch_size: Some(3),
                ..opts()
            },
        )
        .expect("replay starts");
        let got = items(h, id);
        let events = events_of(&got);
        assert_eq!(done_total(&got), events.len() as u64);
        offsets(&events)
    };

    // Time(t): the first event with timestamp >= t, then everything after it.
    assert_eq!(
        run(&mut h, ReplayFrom::Time(ts(3))),
        (3..10).collect::<Vec<u64>>()
    );
    assert_eq!(
        run(&mut h, ReplayFrom::Time(UnixMillis(ts(3).0 - 1))),
        (3..10).collect::<Vec<u64>>()
    );
    assert_eq!(
        run(&mut h, ReplayFrom::Time(UnixMillis(ts(3).0 + 1))),
        (4..10).collect::<Vec<u64>>()
    );
    assert_eq!(
        run(&mut h, ReplayFrom::Time(UnixMillis(0))),
        (0..10).collect::<Vec<u64>>()
    );
    assert_eq!(run(&mut h, ReplayFrom::Time(ts(8))), vec![8, 9]);
    assert_eq!(
        run(&mut h, ReplayFrom::Time(UnixMillis(ts(9).0 + 1))),
        Vec::<u64>::new()
    );

    // TimeRange(start, end): start <= timestamp < end.
    assert_eq!(
        run(&mut h, ReplayFrom::TimeRange(ts(2), ts(6))),
        vec![2, 3, 4, 5]
    );
    assert_eq!(
        run(
            &mut h,
            ReplayFrom::TimeRange(ts(2), UnixMillis(ts(6).0 + 1))
        ),
        vec![2, 3, 4, 5, 6]
    );
    assert_eq!(
        run(
            &mut h,
            ReplayFrom::TimeRange(UnixMillis(ts(2).0 + 1), ts(3))
        ),
        Vec::<u64>::new()
    );
    assert_eq!(
        run(
            &mut h,
            ReplayFrom::TimeRange(ts(7), UnixMillis(ts(9).0 + 1_000))
        ),
        vec![7, 8, 9]
    );
    assert_eq!(
        run(&mut h, ReplayFrom::TimeRange(UnixMillis(0), ts(1))),
        vec![0]
    );
}

#[test]
fn time_and_time_range_replays_from_the_tail_cache() {
    time_replays(Harness::new());
}

#[test]
fn time_and_time_range_replays_of_events_older_than_the_tail_cache() {
    // Only the last 4 events are in memory: times before them are found in the store.
    time_replays(small_cache(4));
}

#[test]
fn time_range_replay_over_several_partitions() {
    let mut h = small_cache(2);
    h.create_persistent("temps", 2);
    // Round-robin: offset k of partition p is event 2k + p, at T0 + 1000 * (2k + p + 1).
    append_timed(&mut h, "temps", 12);
    let stored = read_all(&mut h, "temps");
    let start = UnixMillis(T0 + 3_500);
    let end = UnixMillis(T0 + 9_000);
    let expected: BTreeSet<(u32, u64)> = stored
        .iter()
        .filter(|e| e.timestamp >= start && e.timestamp < end)
        .map(|e| (e.partition, e.offset))
        .collect();
    assert_eq!(expected.len(), 5);
    let id = replay(
        &mut h,
        "temps",
        ReplayFrom::TimeRange(start, end),
        ReplayOptions {
            batch_size: Some(2),
            ..opts()
        },
    )
    .unwrap();
    let got = items(&mut h, id);
    let events = events_of(&got);
    assert_eq!(done_total(&got), 5);
    let replayed: BTreeSet<(u32, u64)> = events.iter().map(|e| (e.partition, e.offset)).collect();
    assert_eq!(events.len(), 5);
    assert_eq!(replayed, expected);
}

// ---- limits and filters -----------------------------------------------------------------------

#[test]
fn max_events_stops_the_replay_early() {
    for tail in [4096, 2] {
        let mut h = small_cache(tail);
        h.create_persistent("orders", 1);
        h.append_n("orders", 20);
        let id = replay(
            &mut h,
            "orders",
            ReplayFrom::Offset(3),
            ReplayOptions {
                batch_size: Some(3),
                max_events: Some(7),
                ..opts()
            },
        )
        .unwrap();
        let got = items(&mut h, id);
        assert_eq!(done_total(&got), 7, "tail cache {tail}");
        assert_eq!(batch_sizes(&got), vec![3, 3, 1], "tail cache {tail}");
        assert_eq!(offsets(&events_of(&got)), (3..10).collect::<Vec<u64>>());
        h.advance(Duration::from_secs(5));
        assert!(items(&mut h, id).is_empty());
    }
}

#[test]
fn event_types_filter_passes_only_the_listed_types() {
    for tail in [4096, 3] {
        let mut h = small_cache(tail);
        h.create_persistent("mixed", 2);
        let types = ["created", "updated", "deleted", "archived"];
        let batch: Vec<NewEvent> = (0..40).map(|i| ev(types[i % 4])).collect();
        h.append("mixed", batch).unwrap();
        let stored = read_all(&mut h, "mixed");
        let wanted = ["created".to_string(), "deleted".to_string()];
        let expected: BTreeSet<(u32, u64)> = stored
            .iter()
            .filter(|e| wanted.contains(&e.event_type))
            .map(|e| (e.partition, e.offset))
            .collect();
        assert_eq!(expected.len(), 20);

        let id = replay(
            &mut h,
            "mixed",
            ReplayFrom::Offset(0),
            ReplayOptions {
                batch_size: Some(4),
                event_types: wanted.to_vec(),
                ..opts()
            },
        )
        .unwrap();
        let got = items(&mut h, id);
        let events = events_of(&got);
        assert_eq!(done_total(&got), 20, "tail cache {tail}");
        assert!(
            events.iter().all(|e| wanted.contains(&e.event_type)),
            "tail cache {tail}"
        );
        assert!(batch_sizes(&got).iter().all(|&n| (1..=4).contains(&n)));
        let replayed: BTreeSet<(u32, u64)> =
            events.iter().map(|e| (e.partition, e.offset)).collect();
        assert_eq!(events.len(), 20);
        assert_eq!(replayed, expected);

        // A type nobody wrote: nothing, and the replay still finishes.
        let id = replay(
            &mut h,
            "mixed",
            ReplayFrom::Offset(0),
            ReplayOptions {
                event_types: vec!["nope".into()],
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(items(&mut h, id), vec![ReplayItem::Done { total: 0 }]);

        // Filter and max_events together: max_events counts events sent.
        let id = replay(
            &mut h,
            "mixed",
            ReplayFrom::Offset(0),
            ReplayOptions {
                event_types: vec!["archived".into()],
                max_events: Some(3),
                ..opts()
            },
        )
        .unwrap();
        let got = items(&mut h, id);
        assert_eq!(done_total(&got), 3);
        let events = events_of(&got);
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.event_type == "archived"));
    }
}

// ---- rate limit and progress ------------------------------------------------------------------

#[test]
fn rate_limit_releases_events_as_virtual_time_passes() {
    let mut h = Harness::new();
    h.create_persistent("bulk", 1);
    h.append_n("bulk", 35);
    let started = h.now.mono;
    let id = replay(
        &mut h,
        "bulk",
        ReplayFrom::Offset(0),
        ReplayOptions {
            max_events_per_second: Some(10),
            progress_interval: Some(Duration::from_secs(3600)),
            ..opts()
        },
    )
    .unwrap();

    // The bucket starts full: one burst of at most its capacity.
    let first = items(&mut h, id);
    let mut sent = events_of(&first).len();
    assert!(sent > 0 && sent <= 10, "first burst {sent}");
    assert!(!is_done(&first));

    // With no time passing, nothing more.
    h.advance(Duration::ZERO);
    assert!(events_of(&items(&mut h, id)).is_empty());

    // Half a second: about 5 more.
    h.advance(Duration::from_millis(500));
    let more = events_of(&items(&mut h, id)).len();
    assert!((4..=6).contains(&more), "after 0.5 s: {more}");
    sent += more;

    // One more second: about 10 more.
    h.advance(Duration::from_secs(1));
    let more = events_of(&items(&mut h, id)).len();
    assert!((9..=11).contains(&more), "after 1 s more: {more}");
    sent += more;

    // Then in steps of 100 ms until done, never ahead of the rate.
    let mut all = Vec::new();
    for _ in 0..100 {
        h.advance(Duration::from_millis(100));
        let got = items(&mut h, id);
        sent += events_of(&got).len();
        let elapsed = h.now.mono.since(started) as f64 / 1e9;
        assert!(
            sent as f64 <= 10.0 + 10.0 * elapsed + 1e-9,
            "{sent} events after {elapsed} s"
        );
        all.extend(got);
        if is_done(&all) {
            break;
        }
    }
    assert_eq!(done_total(&all), 35);
    assert_eq!(sent, 35);
    let elapsed = h.now.mono.since(started);
    assert!(
        (2_400_000_000..=2_600_000_000).contains(&elapsed),
        "35 events at 10/s after a burst of 10 take about 2.5 s of virtual time, took {elapsed} ns"
    );
}

#[test]
fn rate_limited_replay_with_large_batches_never_sends_more_than_the_rate() {
    let mut h = small_cache(8);
    h.create_persistent("bulk", 2);
    h.append_n("bulk", 60);
    let started = h.now.mono;
    let id = replay(
        &mut h,
        "bulk",
        ReplayFrom::Offset(0),
        ReplayOptions {
            batch_size: Some(50),
            max_events_per_second: Some(20),
            ..opts()
        },
    )
    .unwrap();
    let mut all = items(&mut h, id);
    for _ in 0..1000 {
        if is_done(&all) {
            break;
        }
        h.advance(Duration::from_millis(37));
        let sent = events_of(&all).len() as f64;
        let elapsed = h.now.mono.since(started) as f64 / 1e9;
        assert!(
            sent <= 20.0 + 20.0 * elapsed + 1e-9,
            "{sent} events after {elapsed} s"
        );
        all.extend(items(&mut h, id));
    }
    assert_eq!(done_total(&all), 60);
    assert!(batch_sizes(&all).iter().all(|&n| n <= 20));
    // 40 events after the first burst of 20, at 20/s: about 2 s.
    let elapsed = h.now.mono.since(started);
    assert!(
        (1_900_000_000..=2_100_000_000).contains(&elapsed),
        "took {elapsed} ns"
    );
}

/// Runs a rate-limited replay of 35 events (10/s, progress every second) in 100 ms steps;
/// returns every item with the virtual time (ns since the start) it came at.
fn progress_run(h: &mut Harness) -> Vec<(u64, ReplayItem)> {
    h.create_persistent("bulk", 1);
    h.append_n("bulk", 35);
    let started = h.now.mono;
    let id = replay(
        h,
        "bulk",
        ReplayFrom::Offset(0),
        ReplayOptions {
            max_events_per_second: Some(10),
            progress_interval: Some(Duration::from_secs(1)),
            ..opts()
        },
    )
    .unwrap();
    let mut all: Vec<(u64, ReplayItem)> = items(h, id).into_iter().map(|i| (0, i)).collect();
    for _ in 0..100 {
        if all
            .iter()
            .any(|(_, i)| matches!(i, ReplayItem::Done { .. }))
        {
            break;
        }
        h.advance(Duration::from_millis(100));
        let t = h.now.mono.since(started);
        all.extend(items(h, id).into_iter().map(|i| (t, i)));
    }
    all
}

#[test]
fn progress_is_reported_as_virtual_time_passes_with_done_increasing() {
    let mut h = Harness::new();
    let all = progress_run(&mut h);
    let plain: Vec<ReplayItem> = all.iter().map(|(_, i)| i.clone()).collect();
    assert_eq!(done_total(&plain), 35);

    let mut sent = 0u64;
    let mut progress = Vec::new();
    for (t, item) in &all {
        match item {
            ReplayItem::Events(e) => sent += e.len() as u64,
            ReplayItem::Progress {
                done,
                rate,
                remaining,
                ..
            } => {
                assert_eq!(*done, sent, "progress counts the events sent before it");
                assert!(*remaining <= 35);
                progress.push((*t, *done, *rate));
            }
            _ => {}
        }
    }
    // 2.5 s of replay, progress every second: at 1 s and 2 s.
    assert!(progress.len() >= 2, "progress items: {progress:?}");
    assert!(progress.len() <= 3, "progress items: {progress:?}");
    for w in progress.windows(2) {
        assert!(w[1].1 > w[0].1, "done increases: {progress:?}");
        assert!(
            w[1].0 - w[0].0 >= 1_000_000_000,
            "at most one report per interval: {progress:?}"
        );
    }
    let (t, done, rate) = progress[0];
    assert!(
        t >= 1_000_000_000,
        "no report before the first interval: {progress:?}"
    );
    assert!(done > 0 && rate > 0, "{progress:?}");
    // The reported rate is events per second since the start: about 10 (+ the first burst).
    for &(t, done, rate) in &progress {
        let expected = done * 1_000_000_000 / t;
        assert!(
            rate.abs_diff(expected) <= 1,
            "rate {rate}, expected about {expected} at {t} ns"
        );
        assert!(rate <= 20, "rate {rate}");
    }
}

#[test]
fn progress_remaining_counts_the_events_not_yet_sent() {
    let mut h = Harness::new();
    let all = progress_run(&mut h);
    let mut sent = 0u64;
    let mut seen = 0;
    for (_, item) in &all {
        match item {
            ReplayItem::Events(e) => sent += e.len() as u64,
            ReplayItem::Progress {
                done,
                remaining,
                eta,
                ..
            } => {
                seen += 1;
                assert_eq!(*done, sent);
                // No filter: every event not yet sent is still to come.
                assert_eq!(*remaining, 35 - done, "done {done}, remaining {remaining}");
                assert!(!eta.is_zero(), "events remain, so the estimate is not zero");
            }
            _ => {}
        }
    }
    assert!(seen >= 2);
}

// ---- truncation -------------------------------------------------------------------------------

/// An ephemeral stream of at most 5 events (drop oldest) with a subscription that holds
/// everything: after 8 appends, offsets 0..3 were dropped.
fn truncated_stream(h: &mut Harness) {
    h.create(StreamConfig::ephemeral(
        s("live"),
        5,
        1 << 20,
        Overflow::DropOldest,
    ));
    let config = h.sub_config("live", "holder", SubscriptionMode::Exclusive);
    h.subscribe(config);
    h.append_n("live", 5);
    h.append_n("live", 3);
    let info = h.describe("live");
    assert_eq!(info.partitions[0], PartitionInfo { first: 3, next: 8 });
    assert!(h.notices().contains(&Notice::Dropped {
        stream: s("live"),
        count: 3
    }));
}

#[test]
fn replay_below_the_first_available_offset_is_truncated() {
    let mut h = Harness::new();
    truncated_stream(&mut h);
    for from in [0, 2] {
        let r = replay(&mut h, "live", ReplayFrom::Offset(from), opts());
        assert_eq!(r, Err(Error::Truncated { first_available: 3 }));
    }
    assert!(
        h.replay_items().is_empty(),
        "a refused replay sends nothing"
    );
    // From the first available offset itself: fine.
    let id = replay(&mut h, "live", ReplayFrom::Offset(3), opts()).unwrap();
    let got = items(&mut h, id);
    assert_eq!(done_total(&got), 5);
    assert_eq!(offsets(&events_of(&got)), vec![3, 4, 5, 6, 7]);
}

#[test]
fn replay_from_first_available_starts_at_the_first_retained_offset() {
    let mut h = Harness::new();
    truncated_stream(&mut h);
    let id = replay(
        &mut h,
        "live",
        ReplayFrom::Offset(0),
        ReplayOptions {
            from_first_available: true,
            batch_size: Some(2),
            ..opts()
        },
    )
    .unwrap();
    let got = items(&mut h, id);
    assert_eq!(done_total(&got), 5);
    assert_eq!(batch_sizes(&got), vec![2, 2, 1]);
    assert_eq!(offsets(&events_of(&got)), vec![3, 4, 5, 6, 7]);
    // An offset above the first available is not moved.
    let id = replay(
        &mut h,
        "live",
        ReplayFrom::Offset(6),
        ReplayOptions {
            from_first_available: true,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(offsets(&events_of(&items(&mut h, id))), vec![6, 7]);
}

// ---- bad input --------------------------------------------------------------------------------

#[test]
fn bad_replay_requests_are_refused_with_typed_errors_and_send_nothing() {
    let mut h = Harness::new();
    h.create_persistent("orders", 1);
    h.append_n("orders", 5);
    let timers = h.engine.timer_count();
    let t = |ms: u64| UnixMillis(T0 + ms);

    let r = replay(
        &mut h,
        "orders",
        ReplayFrom::Offset(0),
        ReplayOptions {
            batch_size: Some(0),
            ..opts()
        },
    );
    assert!(
        matches!(
            r,
            Err(Error::Invalid(InvalidInput::Range {
                field: "batch_size",
                value: 0,
                ..
            }))
        ),
        "{r:?}"
    );
    let too_big = h.engine.config().max_read_events + 1;
    let r = replay(
        &mut h,
        "orders",
        ReplayFrom::Offset(0),
        ReplayOptions {
            batch_size: Some(too_big),
            ..opts()
        },
    );
    assert!(
        matches!(
            r,
            Err(Error::Invalid(InvalidInput::Range {
                field: "batch_size",
                ..
            }))
        ),
        "{r:?}"
    );

    let r = replay(
        &mut h,
        "orders",
        ReplayFrom::Offset(0),
        ReplayOptions {
            max_events_per_second: Some(0),
            ..opts()
        },
    );
    assert!(
        matches!(
            r,
            Err(Error::Invalid(InvalidInput::Range {
                field: "max_events_per_second",
                value: 0,
                ..
            }))
        ),
        "{r:?}"
    );

    for (start, end) in [(t(5_000), t(5_000)), (t(6_000), t(5_000))] {
        let r = replay(&mut h, "orders", ReplayFrom::TimeRange(start, end), opts());
        assert!(
            matches!(r, Err(Error::Invalid(InvalidInput::Conflict { .. }))),
            "{start:?}..{end:?}: {r:?}"
        );
    }

    let r = replay(
        &mut h,
        "orders",
        ReplayFrom::Offset(0),
        ReplayOptions {
            progress_interval: Some(Duration::ZERO),
            ..opts()
        },
    );
    assert!(
        matches!(r, Err(Error::Invalid(InvalidInput::Range { .. }))),
        "{r:?}"
    );

    let r = replay(&mut h, "nope", ReplayFrom::Offset(0), opts());
    assert_eq!(r, Err(Error::StreamNotFound(s("nope"))));
    let r = replay(&mut h, "nope", ReplayFrom::Time(t(0)), opts());
    assert_eq!(r, Err(Error::StreamNotFound(s("nope"))));

    // No replay ran: no output, no timer, and no replay id was handed out.
    h.advance(Duration::from_secs(5));
    assert!(h.replay_items().is_empty());
    assert_eq!(h.engine.timer_count(), timers);
    let r = h.cmd(Command::CancelReplay(ReplayId(1)));
    assert_eq!(r, Err(Error::ReplayNotFound(ReplayId(1))));
    assert!(h.outputs.is_empty(), "{:?}", h.outputs);
}

// ---- cancellation -----------------------------------------------------------------------------

#[test]
fn cancel_replay_stops_its_output() {
    let mut h = Harness::new();
    h.create_persistent("bulk", 1);
    h.append_n("bulk", 35);
    let rate = ReplayOptions {
        max_events_per_second: Some(10),
        ..opts()
    };
    let id = replay(&mut h, "bulk", ReplayFrom::Offset(0), rate.clone()).unwrap();
    let other = replay(&mut h, "bulk", ReplayFrom::Offset(0), rate).unwrap();
    assert_ne!(id, other);
    assert_eq!(events_of(&items(&mut h, id)).len(), 10);
    assert_eq!(events_of(&items(&mut h, other)).len(), 10);

    // Another connection cannot cancel it.
    assert_eq!(
        h.cmd_on(2, Command::CancelReplay(id)),
        Err(Error::ReplayNotFound(id))
    );
    assert_eq!(h.cmd(Command::CancelReplay(id)), Ok(Reply::Done));
    run_for(&mut h, Duration::from_secs(5));
    assert!(
        items(&mut h, id).is_empty(),
        "a cancelled replay sends nothing more"
    );
    // The other replay is untouched and finishes.
    let rest = items(&mut h, other);
    assert_eq!(events_of(&rest).len(), 25);
    assert_eq!(done_total(&rest), 35);

    // Cancelling again, or an id never given: not found.
    assert_eq!(
        h.cmd(Command::CancelReplay(id)),
        Err(Error::ReplayNotFound(id))
    );
    assert_eq!(
        h.cmd(Command::CancelReplay(ReplayId(999))),
        Err(Error::ReplayNotFound(ReplayId(999)))
    );
    // A finished replay is gone too.
    assert_eq!(
        h.cmd(Command::CancelReplay(other)),
        Err(Error::ReplayNotFound(other))
    );
}

#[test]
fn cancel_while_a_store_read_is_in_flight_sends_nothing_when_it_completes() {
    let mut h = small_cache(2);
    h.create_persistent("bulk", 1);
    h.append_n("bulk", 10);
    h.hold_storage = true;
    let id = replay(&mut h, "bulk", ReplayFrom::Offset(0), opts()).unwrap();
    assert_eq!(h.held.len(), 1, "the replay reads from the store");
    assert!(matches!(h.held[0].1, StorageRequest::Read { from: 0, .. }));
    assert_eq!(h.cmd(Command::CancelReplay(id)), Ok(Reply::Done));
    h.complete(0, None);
    h.hold_storage = false;
    h.advance(Duration::from_secs(1));
    assert!(items(&mut h, id).is_empty());
}

#[test]
fn closing_the_connection_stops_its_replays() {
    let mut h = Harness::new();
    h.create_persistent("bulk", 1);
    h.append_n("bulk", 35);
    let id = replay_on(
        &mut h,
        3,
        "bulk",
        ReplayFrom::Offset(0),
        ReplayOptions {
            max_events_per_second: Some(10),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(events_of(&items(&mut h, id)).len(), 10);
    let now = h.now;
    h.engine
        .handle_input(now, Input::ConnClosed { conn: ConnId(3) });
    h.pump();
    run_for(&mut h, Duration::from_secs(5));
    assert!(items(&mut h, id).is_empty());
    // It is gone, not paused: a new connection with the same number cannot cancel it.
    assert_eq!(
        h.cmd_on(3, Command::CancelReplay(id)),
        Err(Error::ReplayNotFound(id))
    );
}

// ---- the end of a replay ----------------------------------------------------------------------

#[test]
fn replay_of_an_ephemeral_stream_skips_events_dropped_while_it_runs() {
    let mut h = Harness::new();
    h.create(StreamConfig::ephemeral(
        s("live"),
        5,
        1 << 20,
        Overflow::DropOldest,
    ));
    let config = h.sub_config("live", "holder", SubscriptionMode::Exclusive);
    h.subscribe(config);
    h.append_n("live", 5);
    // One event per batch and per second: offset 0 goes at once, offset 1 waits in the buffer.
    let id = replay(
        &mut h,
        "live",
        ReplayFrom::Offset(0),
        ReplayOptions {
            batch_size: Some(1),
            max_events_per_second: Some(1),
            ..opts()
        },
    )
    .unwrap();
    let mut all = items(&mut h, id);
    assert_eq!(offsets(&events_of(&all)), vec![0]);
    // Three more events push out offsets 0..3 (the subscription holds everything).
    h.append_n("live", 3);
    assert_eq!(h.describe("live").partitions[0].first, 3);
    for _ in 0..20 {
        if is_done(&all) {
            break;
        }
        h.advance(Duration::from_secs(1));
        all.extend(items(&mut h, id));
    }
    let total = done_total(&all);
    let got = offsets(&events_of(&all));
    assert_eq!(total, got.len() as u64);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "ascending, no repeat: {got:?}"
    );
    // Offset 2 was dropped before the replay reached it; 3 and 4 were still there; 5..8 were
    // appended after the replay started.
    assert!(!got.contains(&2), "{got:?}");
    assert!(got.contains(&3) && got.contains(&4), "{got:?}");
    assert!(got.iter().all(|&o| o < 5), "{got:?}");
}

/// A replay ends at the heads the stream had when it started: events appended while it runs
/// are not part of it.
fn replay_ignores_events_appended_while_it_runs(mut h: Harness) {
    h.create_persistent("bulk", 1);
    h.append_n("bulk", 10);
    let id = replay(
        &mut h,
        "bulk",
        ReplayFrom::Offset(0),
        ReplayOptions {
            batch_size: Some(4),
            max_events_per_second: Some(4),
            ..opts()
        },
    )
    .unwrap();
    let mut all = items(&mut h, id);
    assert_eq!(events_of(&all).len(), 4);
    h.append_n("bulk", 6);
    for _ in 0..10 {
        if is_done(&all) {
            break;
        }
        h.advance(Duration::from_secs(1));
        all.extend(items(&mut h, id));
    }
    assert_eq!(offsets(&events_of(&all)), (0..10).collect::<Vec<u64>>());
    assert_eq!(done_total(&all), 10);
}

#[test]
fn replay_from_the_tail_cache_ends_at_the_heads_it_started_with() {
    replay_ignores_events_appended_while_it_runs(Harness::new());
}

#[test]
fn replay_from_the_store_ends_at_the_heads_it_started_with() {
    replay_ignores_events_appended_while_it_runs(small_cache(4));
}

// ---- flow control (window) --------------------------------------------------------------------

/// Replays 3 partitions of 40 events in batches of 4 with a window of 3 to a reader that takes
/// one batch at a time: never more than 3 batches out, a stalled reader gets nothing more
/// (no progress either) while time passes, and the replay finishes with every event once, in
/// order per partition.
fn windowed_replay_to_a_slow_reader(mut h: Harness) {
    h.create_persistent("big", 3);
    for _ in 0..8 {
        h.append_n("big", 15);
    }
    let stored = read_all(&mut h, "big");
    assert_eq!(stored.len(), 120);
    let window = 3;
    let id = replay(
        &mut h,
        "big",
        ReplayFrom::Offset(0),
        ReplayOptions {
            batch_size: Some(4),
            window: Some(window),
            progress_interval: Some(Duration::from_millis(100)),
            ..opts()
        },
    )
    .unwrap();
    let mut all = Vec::new();
    // Batches received and not yet reported taken.
    let mut held = 0u32;
    let mut most_held = 0;
    for round in 0.. {
        assert!(round < 1000, "the replay did not finish");
        let got = items(&mut h, id);
        held += batch_sizes(&got).len() as u32;
        most_held = most_held.max(held);
        assert!(held <= window, "{held} batches out, window {window}");
        all.extend(got);
        if is_done(&all) {
            break;
        }
        if round == 0 {
            // At the window and stalled: time passes, nothing more comes, not even progress.
            assert_eq!(held, window);
            run_for(&mut h, Duration::from_secs(5));
            assert!(
                items(&mut h, id).is_empty(),
                "a paused replay sends nothing"
            );
        }
        if round == 5 {
            // Credit beyond what is out counts for nothing: still at most the window.
            assert_eq!(
                h.cmd(Command::ReplayCredit {
                    replay: id,
                    batches: u32::MAX
                }),
                Ok(Reply::Done)
            );
            held = 0;
            continue;
        }
        // The slow reader takes one batch.
        assert_eq!(
            h.cmd(Command::ReplayCredit {
                replay: id,
                batches: 1
            }),
            Ok(Reply::Done)
        );
        held -= 1;
    }
    assert_eq!(most_held, window);
    assert_eq!(done_total(&all), 120);
    let events = events_of(&all);
    assert_eq!(events.len(), 120);
    let seen: BTreeSet<(u32, u64)> = events.iter().map(|e| (e.partition, e.offset)).collect();
    assert_eq!(seen.len(), 120, "every event once");
    for p in 0..3 {
        let in_p: Vec<u64> = events
            .iter()
            .filter(|e| e.partition == p)
            .map(|e| e.offset)
            .collect();
        assert!(
            in_p.windows(2).all(|w| w[0] < w[1]),
            "partition {p} in order: {in_p:?}"
        );
    }
    // Taking batches of a replay that has ended: not found.
    assert_eq!(
        h.cmd(Command::ReplayCredit {
            replay: id,
            batches: 1
        }),
        Err(Error::ReplayNotFound(id))
    );
}

#[test]
fn windowed_replay_from_the_tail_cache_keeps_at_most_the_window_out() {
    windowed_replay_to_a_slow_reader(Harness::new());
}

#[test]
fn windowed_replay_from_the_store_keeps_at_most_the_window_out() {
    windowed_replay_to_a_slow_reader(small_cache(4));
}

#[test]
fn a_window_with_a_rate_honours_both() {
    let mut h = Harness::new();
    h.create_persistent("paced", 1);
    h.append_n("paced", 20);
    let id = replay(
        &mut h,
        "paced",
        ReplayFrom::Offset(0),
        ReplayOptions {
            batch_size: Some(2),
            max_events_per_second: Some(4),
            window: Some(1),
            ..opts()
        },
    )
    .unwrap();
    let mut all = items(&mut h, id);
    assert_eq!(batch_sizes(&all), vec![2], "one batch, the window");
    for _ in 0..100 {
        if is_done(&all) {
            break;
        }
        let before = events_of(&all).len();
        assert_eq!(
            h.cmd(Command::ReplayCredit {
                replay: id,
                batches: 1
            }),
            Ok(Reply::Done)
        );
        h.advance(Duration::from_secs(1));
        let got = items(&mut h, id);
        assert!(batch_sizes(&got).len() <= 1, "window 1: {got:?}");
        all.extend(got);
        // At most the bucket (4) plus what a second refills (4) in one second.
        assert!(events_of(&all).len() - before <= 8);
    }
    assert_eq!(done_total(&all), 20);
    assert_eq!(offsets(&events_of(&all)), (0..20).collect::<Vec<u64>>());
}

#[test]
fn replay_credit_is_refused_for_a_replay_of_another_connection_and_a_zero_window_is_bad_input() {
    let mut h = Harness::new();
    h.create_persistent("orders", 1);
    h.append_n("orders", 50);
    let r = replay(
        &mut h,
        "orders",
        ReplayFrom::Offset(0),
        ReplayOptions {
            window: Some(0),
            ..opts()
        },
    );
    assert!(
        matches!(
            r,
            Err(Error::Invalid(InvalidInput::Range {
                field: "window",
                value: 0,
                ..
            }))
        ),
        "{r:?}"
    );
    assert!(h.replay_items().is_empty());
    let id = replay(
        &mut h,
        "orders",
        ReplayFrom::Offset(0),
        ReplayOptions {
            batch_size: Some(5),
            window: Some(2),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(batch_sizes(&items(&mut h, id)), vec![5, 5]);
    // Connection 2 cannot take connection 1's batches: refused, nothing moves.
    assert_eq!(
        h.cmd_on(
            2,
            Command::ReplayCredit {
                replay: id,
                batches: 2
            }
        ),
        Err(Error::ReplayNotFound(id))
    );
    assert!(items(&mut h, id).is_empty());
    assert_eq!(
        h.cmd(Command::ReplayCredit {
            replay: ReplayId(999),
            batches: 1
        }),
        Err(Error::ReplayNotFound(ReplayId(999)))
    );
    // Its own connection can.
    assert_eq!(
        h.cmd(Command::ReplayCredit {
            replay: id,
            batches: 2
        }),
        Ok(Reply::Done)
    );
    assert_eq!(batch_sizes(&items(&mut h, id)), vec![5, 5]);
}
