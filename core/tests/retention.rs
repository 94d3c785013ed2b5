//! Retention (SPEC 8): limits by events, age and bytes, the default and dead letter policies,
//! keep_unconsumed, the cleanup interval and window, expired dedup ids, and the property that
//! retention only ever removes whole prefixes.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;
use tributary_core::*;
use tributary_store_memory::MemoryStore;

const HOUR: Duration = Duration::from_secs(3600);

fn with_policy(h: &mut Harness, name: &str, partitions: u32, policy: Option<RetentionPolicy>) {
    let mut cfg = StreamConfig::persistent(s(name));
    cfg.partitions = partitions;
    cfg.retention = policy;
    h.create(cfg);
}

fn firsts(h: &mut Harness, name: &str) -> Vec<u64> {
    h.describe(name)
        .partitions
        .iter()
        .map(|p| p.first)
        .collect()
}

/// The offsets the store holds for a partition.
fn stored(h: &Harness, name: &str, partition: u32) -> Vec<u64> {
    h.store
        .events(&s(name), partition)
        .iter()
        .map(|e| e.offset)
        .collect()
}

fn keyed(partition_key: &str, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| ev("t").with_key(partition_key.as_bytes().to_vec()))
        .collect()
}

#[test]
fn max_events_keeps_the_newest_events_of_each_partition() {
    let mut h = Harness::new();
    let policy = RetentionPolicy {
        max_events: Some(3),
        ..RetentionPolicy::default()
    };
    with_policy(&mut h, "s", 1, Some(policy));
    h.append_n("s", 10);
    h.advance(HOUR - Duration::from_millis(1));
    assert_eq!(firsts(&mut h, "s"), vec![0], "not before cleanup_interval");
    h.advance(Duration::from_millis(1));
    assert_eq!(firsts(&mut h, "s"), vec![7]);
    assert_eq!(stored(&h, "s", 0), vec![7, 8, 9]);
    assert!(h.notices().iter().any(|n| matches!(
        n,
        Notice::Truncated {
            partition: 0,
            first: 7,
            removed: 7,
            ..
        }
    )));
    assert_eq!(
        h.read("s", 0, 2, 10),
        Err(Error::Truncated { first_available: 7 })
    );
    // It runs again every interval.
    h.append_n("s", 2);
    h.advance(HOUR);
    assert_eq!(firsts(&mut h, "s"), vec![9]);
    // A restart keeps the first offset.
    let mut h = h.restart();
    assert_eq!(firsts(&mut h, "s"), vec![9]);
    assert_eq!(h.describe("s").partitions[0].next, 12);
}

#[test]
fn max_age_removes_events_older_than_the_limit() {
    let mut h = Harness::new();
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(90 * 60)),
        ..RetentionPolicy::default()
    };
    with_policy(&mut h, "s", 1, Some(policy));
    h.append_n("s", 5);
    h.advance(HOUR);
    h.append_n("s", 5);
    assert_eq!(firsts(&mut h, "s"), vec![0], "nothing is 90 min old at 1 h");
    h.advance(HOUR);
    assert_eq!(firsts(&mut h, "s"), vec![5], "the first five are 2 h old");
    h.advance(HOUR);
    assert_eq!(
        firsts(&mut h, "s"),
        vec![10],
        "all old: the partition is empty"
    );
    assert_eq!(h.describe("s").partitions[0].next, 10);
    // Appends go on from the head.
    let out = h.append_n("s", 1);
    assert_eq!(out, vec![AppendOutcome::Appended(pos(0, 10))]);
}

#[test]
fn max_bytes_counts_payloads_and_keys_from_the_head() {
    let mut h = Harness::new();
    let policy = RetentionPolicy {
        max_bytes: Some(10),
        ..RetentionPolicy::default()
    };
    with_policy(&mut h, "s", 1, Some(policy));
    // Payload "{}" (2 bytes) and a 1-byte key: 3 bytes each; 10 bytes hold three.
    h.append("s", keyed("k", 8)).unwrap();
    h.advance(HOUR);
    assert_eq!(firsts(&mut h, "s"), vec![5]);
}

#[test]
fn the_default_and_dead_letter_policies_apply_to_streams_without_one() {
    let config = Config {
        default_retention: RetentionPolicy {
            max_events: Some(2),
            ..RetentionPolicy::default()
        },
        dead_letter_retention: RetentionPolicy {
            max_events: Some(1),
            ..RetentionPolicy::default()
        },
        ..no_linger()
    };
    let mut h = Harness::with(config, MemoryStore::new(), 3);
    with_policy(&mut h, "plain", 1, None);
    with_policy(&mut h, "kept", 1, Some(RetentionPolicy::default()));
    with_policy(&mut h, "plain.dlq", 1, None);
    for name in ["plain", "kept", "plain.dlq"] {
        h.append_n(name, 5);
    }
    h.advance(HOUR);
    assert_eq!(firsts(&mut h, "plain"), vec![3]);
    assert_eq!(
        firsts(&mut h, "kept"),
        vec![0],
        "its own policy keeps everything"
    );
    assert_eq!(firsts(&mut h, "plain.dlq"), vec![4]);
}

#[test]
fn keep_unconsumed_never_removes_what_a_subscription_has_not_acknowledged() {
    let mut h = Harness::new();
    let policy = RetentionPolicy {
        max_events: Some(2),
        keep_unconsumed: true,
        ..RetentionPolicy::default()
    };
    with_policy(&mut h, "s", 1, Some(policy));
    let cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    h.subscribe(cfg);
    h.attach(1, "s", "q", "a", Some(5));
    h.append_n("s", 10);
    assert_eq!(h.deliveries().len(), 5);
    h.ack(1, "s", "q", "a", (0..5).map(|o| pos(0, o)).collect())
        .unwrap();
    h.deliveries();
    h.advance(HOUR);
    // Offsets 5..9 are delivered or waiting, none acknowledged: only 0..4 may go.
    assert_eq!(firsts(&mut h, "s"), vec![5]);
    h.ack(1, "s", "q", "a", (5..10).map(|o| pos(0, o)).collect())
        .unwrap();
    h.advance(HOUR);
    assert_eq!(firsts(&mut h, "s"), vec![8], "now max_events decides");
}

#[test]
fn retention_runs_only_inside_the_cleanup_window() {
    // T0 is 22:13:20 UTC; the window is 02:00 to 03:00.
    let config = Config {
        cleanup_window: Some(CleanupWindow {
            start: 2 * 3600,
            end: 3 * 3600,
        }),
        ..no_linger()
    };
    let mut h = Harness::with(config, MemoryStore::new(), 3);
    let policy = RetentionPolicy {
        max_events: Some(1),
        ..RetentionPolicy::default()
    };
    with_policy(&mut h, "s", 1, Some(policy));
    h.append_n("s", 4);
    h.advance(HOUR);
    assert_eq!(
        firsts(&mut h, "s"),
        vec![0],
        "23:13:20 is outside the window"
    );
    let wait = Duration::from_secs(2 * 3600 + 46 * 60 + 40);
    assert_eq!(
        h.engine.retention_due(),
        Some(h.now.mono.saturating_add(wait)),
        "it waits for 02:00"
    );
    h.advance(wait - Duration::from_secs(1));
    assert_eq!(firsts(&mut h, "s"), vec![0]);
    h.advance(Duration::from_secs(1));
    assert_eq!(firsts(&mut h, "s"), vec![3]);
}

#[test]
fn a_cleanup_window_past_midnight_wraps() {
    let w = CleanupWindow {
        start: 22 * 3600,
        end: 2 * 3600,
    };
    let at = |h: u64, m: u64| (h * 3600 + m * 60) * 1000 + 19_675 * 86_400_000;
    assert_eq!(w.wait_from(at(23, 0)), Duration::ZERO);
    assert_eq!(w.wait_from(at(1, 59)), Duration::ZERO);
    assert_eq!(w.wait_from(at(2, 0)), Duration::from_secs(20 * 3600));
    assert_eq!(w.wait_from(at(21, 30)), Duration::from_secs(30 * 60));
    let day = CleanupWindow {
        start: 3600,
        end: 7200,
    };
    assert_eq!(day.wait_from(at(0, 0)), Duration::from_secs(3600));
    assert_eq!(day.wait_from(at(2, 0)), Duration::from_secs(23 * 3600));
    assert!(matches!(
        CleanupWindow { start: 5, end: 5 }.validate(),
        Err(InvalidInput::Conflict {
            field: "cleanup_window",
            ..
        })
    ));
    assert!(matches!(
        CleanupWindow {
            start: 0,
            end: 86_400
        }
        .validate(),
        Err(InvalidInput::Range {
            field: "cleanup_window.end",
            ..
        })
    ));
}

#[test]
fn expired_dedup_ids_leave_the_store() {
    let mut h = Harness::new();
    with_policy(&mut h, "s", 1, None);
    h.append("s", vec![ev_id("t", 1), ev_id("t", 2)]).unwrap();
    assert_eq!(h.store.dedup_ids(&s("s")), 2);
    h.advance(HOUR);
    assert_eq!(h.store.dedup_ids(&s("s")), 0, "the 10 min window is over");
    assert_eq!(
        firsts(&mut h, "s"),
        vec![0],
        "no retention policy: events stay"
    );
}

#[test]
fn bad_retention_settings_are_refused() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("s"));
    cfg.retention = Some(RetentionPolicy {
        max_events: Some(0),
        ..RetentionPolicy::default()
    });
    assert!(matches!(
        h.cmd(Command::CreateStream(cfg)),
        Err(Error::Invalid(InvalidInput::Range {
            field: "retention.max_events",
            ..
        }))
    ));
    let mut eph = StreamConfig::ephemeral(s("e"), 10, 1000, Overflow::Reject);
    eph.retention = Some(RetentionPolicy::default());
    assert!(matches!(
        h.cmd(Command::CreateStream(eph)),
        Err(Error::Invalid(InvalidInput::Conflict {
            field: "retention",
            ..
        }))
    ));
    assert!(h.cmd(Command::ListStreams) == Ok(Reply::Streams(vec![])));
    let bad = Config {
        cleanup_interval: Duration::ZERO,
        ..Config::default()
    };
    assert!(matches!(
        Engine::new(bad, 1, h.now),
        Err(InvalidInput::Range {
            field: "cleanup_interval (ms)",
            ..
        })
    ));
}

// ---- property: whole prefixes only; keep_unconsumed keeps what is unacknowledged -----------

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8, usize),
        AckSome(u32),
        Advance(u64),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..4, 1usize..8).prop_map(|(k, n)| Op::Append(k, n)),
            2 => any::<u32>().prop_map(Op::AckSome),
            3 => (1u64..120).prop_map(Op::Advance),
            1 => Just(Op::Restart),
        ]
    }

    fn policy() -> impl Strategy<Value = RetentionPolicy> {
        (
            proptest::option::of(1u64..8),
            proptest::option::of(1u64..90),
            proptest::option::of(3u64..30),
            any::<bool>(),
        )
            .prop_map(|(e, age, bytes, keep)| RetentionPolicy {
                max_events: e,
                max_age: age.map(|m| Duration::from_secs(m * 60)),
                max_bytes: bytes,
                keep_unconsumed: keep,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn retention_removes_whole_prefixes_and_keeps_what_is_unacknowledged(
            ops in proptest::collection::vec(op(), 1..40),
            policy in policy(),
        ) {
            let config = Config { cleanup_interval: Duration::from_secs(30 * 60), ..no_linger() };
            let mut h = Harness::with(config, MemoryStore::new(), 5);
            with_policy(&mut h, "s", 2, Some(policy));
            let cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
            h.subscribe(cfg);
            h.attach(1, "s", "q", "a", Some(1000));
            let mut delivered: BTreeSet<Position> = BTreeSet::new();
            let mut acked: BTreeSet<Position> = BTreeSet::new();
            let mut appended: Vec<Vec<u64>> = vec![vec![], vec![]];
            let mut prev_first = [0u64, 0];
            for op in ops {
                match op {
                    Op::Append(k, n) => {
                        let out = h.append("s", keyed(&format!("k{k}"), n)).unwrap();
                        for o in out {
                            if let AppendOutcome::Appended(p) = o {
                                appended[p.partition as usize].push(p.offset);
                            }
                        }
                    }
                    Op::AckSome(mask) => {
                        let pending: Vec<Position> = delivered.difference(&acked).copied().collect();
                        let some: Vec<Position> = pending
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << (i % 32)) != 0)
                            .map(|(_, p)| *p)
                            .collect();
                        if !some.is_empty()
                            && let Ok(Reply::Settled(_)) = h.ack(1, "s", "q", "a", some.clone())
                        {
                            acked.extend(some);
                        }
                    }
                    Op::Advance(min) => h.advance(Duration::from_secs(min * 60)),
                    Op::Restart => {
                        h = h.restart();
                        h.attach(1, "s", "q", "a", Some(1000));
                        // What was in flight is delivered again; nothing acknowledged is lost.
                    }
                }
                for (_, p, _) in h.deliveries() {
                    delivered.insert(p);
                }
                // A dead-lettered event is settled for the subscription (it moved to s.dlq).
                for n in h.notices() {
                    if let Notice::DeadLettered { position, .. } = n {
                        acked.insert(position);
                    }
                }
                let info = h.describe("s");
                for (p, part) in info.partitions.iter().enumerate() {
                    // The store holds exactly first..next: a prefix went, never a hole.
                    let held = stored(&h, "s", p as u32);
                    prop_assert_eq!(&held, &(part.first..part.next).collect::<Vec<_>>(), "partition {}", p);
                    prop_assert!(part.first >= prev_first[p], "first went back in {}", p);
                    prev_first[p] = part.first;
                    prop_assert_eq!(part.next, appended[p].len() as u64);
                    if policy.keep_unconsumed {
                        for o in 0..part.first {
                            prop_assert!(
                                acked.contains(&pos(p as u32, o)),
                                "unacknowledged {}/{} was removed", p, o
                            );
                        }
                    }
                }
            }
        }
    }
}
