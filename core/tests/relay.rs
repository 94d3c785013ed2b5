//! The relay of cross-service streams (SPEC 9) against a fake publisher: offset order, the
//! window of unconfirmed publishes, the position that moves only on confirms, re-sending after
//! a failure and after a restart, and retention that never removes what is not relayed.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tributary_core::*;
use tributary_store_memory::MemoryStore;

/// A fake broker publisher: what the engine asked to publish, in order.
fn publishes(h: &mut Harness) -> Vec<(OpId, Position)> {
    let mut got = Vec::new();
    h.outputs.retain(|o| match o {
        Output::Publish { op, event, .. } => {
            got.push((*op, pos(event.partition, event.offset)));
            false
        }
        _ => true,
    });
    got
}

fn answer(h: &mut Harness, op: OpId, result: PublishResult) {
    h.engine
        .handle_input(h.now, Input::PublishDone { op, result });
    h.pump();
}

fn confirm_all(h: &mut Harness, sent: &[(OpId, Position)]) {
    for (op, _) in sent {
        answer(h, *op, PublishResult::Confirmed);
    }
}

fn cross(h: &mut Harness, name: &str, partitions: u32) {
    let mut cfg = StreamConfig::persistent(s(name));
    cfg.partitions = partitions;
    cfg.scope = Scope::CrossService;
    h.create(cfg);
}

fn relay_of(h: &mut Harness, name: &str) -> Vec<u64> {
    h.describe(name).relay.expect("a cross-service stream")
}

fn small_window() -> Config {
    Config {
        relay_window: 3,
        ..no_linger()
    }
}

#[test]
fn events_are_published_in_order_within_the_window_and_the_position_moves_on_confirms() {
    let mut h = Harness::with(small_window(), MemoryStore::new(), 1);
    cross(&mut h, "orders", 1);
    h.append_n("orders", 5);
    let sent = publishes(&mut h);
    assert_eq!(
        sent.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![pos(0, 0), pos(0, 1), pos(0, 2)],
        "at most relay_window unconfirmed"
    );
    assert_eq!(relay_of(&mut h, "orders"), vec![0]);
    // Confirms out of order: the position moves over the confirmed prefix only.
    answer(&mut h, sent[1].0, PublishResult::Confirmed);
    assert_eq!(relay_of(&mut h, "orders"), vec![0]);
    let more = publishes(&mut h);
    assert_eq!(
        more.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![pos(0, 3)]
    );
    answer(&mut h, sent[0].0, PublishResult::Confirmed);
    assert_eq!(relay_of(&mut h, "orders"), vec![2]);
    let rest = publishes(&mut h);
    assert_eq!(
        rest.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![pos(0, 4)]
    );
    confirm_all(&mut h, &[sent[2], more[0], rest[0]]);
    assert_eq!(relay_of(&mut h, "orders"), vec![5]);
    // Durable: a restart sends nothing again.
    let mut h = h.restart();
    assert!(publishes(&mut h).is_empty());
    assert_eq!(relay_of(&mut h, "orders"), vec![5]);
}

#[test]
fn a_failed_publish_is_sent_again_with_everything_after_it_after_a_back_off() {
    let mut h = Harness::with(small_window(), MemoryStore::new(), 1);
    cross(&mut h, "orders", 1);
    h.append_n("orders", 4);
    let sent = publishes(&mut h);
    assert_eq!(sent.len(), 3);
    answer(&mut h, sent[0].0, PublishResult::Confirmed);
    let third = publishes(&mut h);
    assert_eq!(
        third.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![pos(0, 3)]
    );
    answer(&mut h, sent[1].0, PublishResult::Failed("nack".into()));
    assert!(h.notices().iter().any(|n| matches!(
        n,
        Notice::PublishFailed { position, .. } if *position == pos(0, 1)
    )));
    // Late answers to publishes the go-back voided change nothing but free their room.
    answer(&mut h, sent[2].0, PublishResult::Confirmed);
    answer(&mut h, third[0].0, PublishResult::Failed("late".into()));
    assert_eq!(relay_of(&mut h, "orders"), vec![1]);
    assert!(publishes(&mut h).is_empty(), "paused for the back-off");
    h.advance(Duration::from_millis(100));
    let again = publishes(&mut h);
    assert_eq!(
        again.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![pos(0, 1), pos(0, 2), pos(0, 3)],
        "from the failed one, in order"
    );
    confirm_all(&mut h, &again);
    assert_eq!(relay_of(&mut h, "orders"), vec![4]);
}

#[test]
fn unconfirmed_events_are_sent_again_after_a_restart() {
    let mut h = Harness::new();
    cross(&mut h, "orders", 2);
    h.append(
        "orders",
        vec![
            ev("a").with_key(b"x".to_vec()),
            ev("b").with_key(b"y".to_vec()),
        ],
    )
    .unwrap();
    let sent = publishes(&mut h);
    assert_eq!(sent.len(), 2);
    answer(&mut h, sent[0].0, PublishResult::Confirmed);
    let mut h = h.restart();
    let again = publishes(&mut h);
    assert_eq!(
        again.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![sent[1].1]
    );
    let (p, o) = (sent[1].1.partition as usize, sent[1].1.offset);
    assert_eq!(
        relay_of(&mut h, "orders")[p],
        o,
        "not confirmed before the restart"
    );
    confirm_all(&mut h, &again);
    assert_eq!(relay_of(&mut h, "orders")[p], o + 1);
}

#[test]
fn retention_never_removes_what_is_not_relayed() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("orders"));
    cfg.scope = Scope::CrossService;
    cfg.retention = Some(RetentionPolicy {
        max_events: Some(1),
        ..RetentionPolicy::default()
    });
    h.create(cfg);
    h.append_n("orders", 5);
    let sent = publishes(&mut h);
    confirm_all(&mut h, &sent[..2]);
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.describe("orders").partitions[0].first, 2);
    confirm_all(&mut h, &sent[2..]);
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.describe("orders").partitions[0].first, 4);
}

#[test]
fn internal_streams_are_not_relayed() {
    let mut h = Harness::new();
    h.create_persistent("local", 1);
    h.append_n("local", 3);
    assert!(publishes(&mut h).is_empty());
    assert_eq!(h.describe("local").relay, None);
}

#[test]
fn events_read_back_from_the_store_are_relayed_too() {
    let config = Config {
        tail_cache_events: 2,
        relay_window: 100,
        ..no_linger()
    };
    let mut h = Harness::with(config, MemoryStore::new(), 1);
    cross(&mut h, "orders", 1);
    h.append_n("orders", 6);
    publishes(&mut h);
    // A restart empties the tail cache: the relay reads the events from the store.
    let mut h = h.restart();
    let again = publishes(&mut h);
    assert_eq!(
        again.iter().map(|x| x.1.offset).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
}

// ---- property: every event is published in order, at least once -------------------------

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8, usize),
        Confirm(u32),
        Fail(u32),
        Advance(u64),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..3, 1usize..6).prop_map(|(k, n)| Op::Append(k, n)),
            4 => any::<u32>().prop_map(Op::Confirm),
            1 => any::<u32>().prop_map(Op::Fail),
            2 => (1u64..2000).prop_map(Op::Advance),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_relay_publishes_every_event_in_order_at_least_once(
            ops in proptest::collection::vec(op(), 1..50),
            window in 1usize..5,
        ) {
            let config = Config { relay_window: window, tail_cache_events: 4, ..no_linger() };
            let mut h = Harness::with(config, MemoryStore::new(), 9);
            cross(&mut h, "x", 2);
            // The broker: every publish in the order it was sent, and the ones it confirmed.
            let mut sent_log: Vec<(OpId, Position)> = Vec::new();
            let mut confirmed: BTreeSet<OpId> = BTreeSet::new();
            let mut waiting: Vec<(OpId, Position)> = Vec::new();
            let mut appended: BTreeMap<u32, u64> = BTreeMap::new();
            let step = |h: &mut Harness,
                        waiting: &mut Vec<(OpId, Position)>,
                        sent_log: &mut Vec<(OpId, Position)>|
             -> Result<(), TestCaseError> {
                let sent = publishes(h);
                let unconfirmed = waiting.len() + sent.len();
                prop_assert!(unconfirmed <= window || sent.is_empty(), "window exceeded: {unconfirmed}");
                sent_log.extend(sent.iter().copied());
                waiting.extend(sent);
                h.notices();
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Append(k, n) => {
                        let events = (0..n).map(|_| ev("t").with_key(format!("k{k}").into_bytes())).collect();
                        for o in h.append("x", events).unwrap() {
                            if let AppendOutcome::Appended(p) = o {
                                *appended.entry(p.partition).or_default() = p.offset + 1;
                            }
                        }
                    }
                    Op::Confirm(mask) | Op::Fail(mask) if !waiting.is_empty() => {
                        let i = mask as usize % waiting.len();
                        let (id, p) = waiting.remove(i);
                        let _ = p;
                        let result = if matches!(op, Op::Confirm(_)) {
                            confirmed.insert(id);
                            PublishResult::Confirmed
                        } else {
                            PublishResult::Failed("nack".into())
                        };
                        answer(&mut h, id, result);
                    }
                    Op::Confirm(_) | Op::Fail(_) => {}
                    Op::Advance(ms) => h.advance(Duration::from_millis(ms)),
                    Op::Restart => {
                        h = h.restart();
                        waiting.clear();
                    }
                }
                step(&mut h, &mut waiting, &mut sent_log)?;
            }
            // Liveness: the broker confirms everything from now on.
            for _ in 0..10_000 {
                if waiting.is_empty() {
                    h.advance(Duration::from_secs(60));
                    step(&mut h, &mut waiting, &mut sent_log)?;
                    if waiting.is_empty() {
                        break;
                    }
                }
                let (id, _) = waiting.remove(0);
                confirmed.insert(id);
                answer(&mut h, id, PublishResult::Confirmed);
                step(&mut h, &mut waiting, &mut sent_log)?;
            }
            let relay = relay_of(&mut h, "x");
            for (p, next) in appended {
                prop_assert_eq!(relay[p as usize], next, "partition {} not fully relayed", p);
                // What the broker took, in the order it was sent, holds every event of the
                // partition in offset order (as a subsequence: repeats are allowed).
                let log: Vec<u64> = sent_log
                    .iter()
                    .filter(|(id, q)| q.partition == p && confirmed.contains(id))
                    .map(|(_, q)| q.offset)
                    .collect();
                let mut expected = 0;
                for o in &log {
                    if *o == expected {
                        expected += 1;
                    }
                }
                prop_assert_eq!(expected, next, "partition {}: {:?}", p, log);
            }
        }
    }
}
