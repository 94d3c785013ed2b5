//! Consumer groups (SPEC 3): membership, generations, sticky assignment, session timeouts,
//! commits and their strategies, and the crash bound of each strategy.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tributary_core::*;

const STREAM: &str = "orders";
const GROUP: &str = "billing";

fn group_config(h: &Harness, commit: CommitStrategy) -> SubscriptionConfig {
    let mut cfg = h.sub_config(STREAM, GROUP, SubscriptionMode::ConsumerGroup);
    cfg.commit = commit;
    cfg
}

/// A harness with a persistent stream of `partitions` and a group subscription.
fn setup(partitions: u32, commit: CommitStrategy) -> Harness {
    let mut h = Harness::new();
    h.create_persistent(STREAM, partitions);
    let cfg = group_config(&h, commit);
    h.subscribe(cfg);
    h
}

/// Takes every assignment told so far: (consumer, assignment), in order.
fn assignments(h: &mut Harness) -> Vec<(String, GroupAssignment)> {
    let mut got = Vec::new();
    h.outputs.retain(|o| match o {
        Output::Assignment {
            consumer,
            assignment,
            ..
        } => {
            got.push((consumer.to_string(), assignment.clone()));
            false
        }
        _ => true,
    });
    got
}

/// The latest assignment told to each consumer.
fn latest(h: &mut Harness) -> BTreeMap<String, GroupAssignment> {
    assignments(h).into_iter().collect()
}

fn group(h: &mut Harness) -> GroupInfo {
    h.describe_sub(STREAM, GROUP).group.expect("a group")
}

fn commit(
    h: &mut Harness,
    conn: u64,
    consumer: &str,
    generation: u64,
    offsets: Vec<Position>,
) -> Result<Reply, Error> {
    h.cmd_on(
        conn,
        Command::Commit {
            stream: s(STREAM),
            subscription: sub(GROUP),
            consumer: c(consumer),
            generation,
            offsets,
        },
    )
}

fn heartbeat(h: &mut Harness, conn: u64, consumer: &str) -> Result<Reply, Error> {
    h.cmd_on(
        conn,
        Command::Heartbeat {
            stream: s(STREAM),
            subscription: sub(GROUP),
            consumer: c(consumer),
        },
    )
}

/// Appends `n` events to every partition (keys chosen so that each lands where wanted).
fn fill(h: &mut Harness, partitions: u32, n: usize) {
    let mut per: BTreeMap<u32, usize> = BTreeMap::new();
    let mut k = 0u32;
    let mut events = Vec::new();
    while per.values().sum::<usize>() < n * partitions as usize {
        let key = format!("k{k}").into_bytes();
        k += 1;
        let p = partition_of_key(&key, partitions);
        let have = per.entry(p).or_default();
        if *have < n {
            *have += 1;
            events.push(ev("t").with_key(key));
        }
    }
    for chunk in events.chunks(500) {
        h.append(STREAM, chunk.to_vec()).unwrap();
    }
}

#[test]
fn joins_start_generations_and_the_assignment_is_sticky() {
    let mut h = setup(8, CommitStrategy::AfterEach);
    h.attach(1, STREAM, GROUP, "a", None);
    let a1 = latest(&mut h);
    assert_eq!(a1["a"].generation, 1);
    assert_eq!(a1["a"].partitions, (0..8).collect::<Vec<_>>());
    h.attach(2, STREAM, GROUP, "b", None);
    let a2 = latest(&mut h);
    assert_eq!(a2["a"].generation, 2);
    assert_eq!(a2["b"].generation, 2);
    assert_eq!(a2["a"].partitions.len(), 4);
    assert_eq!(a2["b"].partitions.len(), 4);
    let all: BTreeSet<u32> = a2.values().flat_map(|a| a.partitions.clone()).collect();
    assert_eq!(all.len(), 8, "every partition has exactly one owner");
    h.attach(3, STREAM, GROUP, "c", None);
    let a3 = latest(&mut h);
    // 8 over 3: the newcomer takes 2 (one from each), nobody else loses more.
    assert_eq!(a3["c"].partitions.len(), 2);
    for m in ["a", "b"] {
        let kept: BTreeSet<_> = a3[m].partitions.iter().collect();
        assert!(
            kept.iter().all(|p| a2[m].partitions.contains(p)),
            "{m} got a partition it did not have"
        );
        assert_eq!(kept.len(), 3);
    }
    let n = h.notices();
    assert!(n.iter().any(|n| matches!(
        n,
        Notice::Rebalanced {
            generation: 3,
            members: 3,
            moved: 2,
            ..
        }
    )));
    let g = group(&mut h);
    assert_eq!(g.generation, 3);
    assert!(g.owners.iter().all(Option::is_some));
}

#[test]
fn members_get_only_their_partitions_in_order() {
    let mut h = setup(4, CommitStrategy::AfterEach);
    h.attach(1, STREAM, GROUP, "a", None);
    h.attach(2, STREAM, GROUP, "b", None);
    let a = latest(&mut h);
    fill(&mut h, 4, 5);
    let d = h.deliveries();
    assert_eq!(d.len(), 20);
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for (who, p, attempt) in d {
        assert_eq!(attempt, 1);
        assert!(
            a[&who].partitions.contains(&p.partition),
            "{who} got partition {}",
            p.partition
        );
        if let Some(prev) = last.insert(p.partition, p.offset) {
            assert_eq!(
                p.offset,
                prev + 1,
                "out of order in partition {}",
                p.partition
            );
        }
    }
}

#[test]
fn leaving_rebalances_and_in_flight_events_go_to_the_new_owner() {
    let mut h = setup(2, CommitStrategy::AfterEach);
    h.attach(1, STREAM, GROUP, "a", None);
    fill(&mut h, 2, 3);
    assert_eq!(h.deliveries().len(), 6, "a owns both partitions");
    h.attach(2, STREAM, GROUP, "b", None);
    let a = latest(&mut h);
    let moved = a["b"].partitions[0];
    // What a had in flight on the moved partition now goes to b, in order, as a redelivery.
    let d = h.deliveries();
    assert_eq!(
        d,
        (0..3)
            .map(|o| ("b".to_string(), pos(moved, o), 2))
            .collect::<Vec<_>>()
    );
    // a lost that partition: its ack is refused and moves nothing.
    let r = h.ack(1, STREAM, GROUP, "a", vec![pos(moved, 0)]);
    assert_eq!(
        r,
        Err(Error::NotAssigned {
            consumer: c("a"),
            partition: moved,
            generation: 2
        })
    );
    assert_eq!(
        h.describe_sub(STREAM, GROUP).cursors[0].floors[moved as usize],
        0
    );
    // b acks; then b leaves and a owns everything again (generation 3).
    let r = h.ack(
        2,
        STREAM,
        GROUP,
        "b",
        (0..3).map(|o| pos(moved, o)).collect(),
    );
    assert_eq!(counts(&r), Some((3, 0)));
    assert_eq!(
        h.cmd_on(
            2,
            Command::Detach {
                stream: s(STREAM),
                subscription: sub(GROUP),
                consumer: c("b"),
            }
        ),
        Ok(Reply::Done)
    );
    let a = latest(&mut h);
    assert_eq!(a["a"].generation, 3);
    assert_eq!(a["a"].partitions, vec![0, 1]);
    // Nothing of the moved partition is delivered again: it was acknowledged.
    assert!(h.deliveries().is_empty());
    // A closed connection leaves too.
    h.engine
        .handle_input(h.now, Input::ConnClosed { conn: ConnId(1) });
    h.pump();
    let g = group(&mut h);
    assert_eq!(g.generation, 4);
    assert!(g.owners.iter().all(Option::is_none));
}

#[test]
fn a_session_times_out_without_heartbeats_and_the_stale_member_cannot_commit() {
    let mut h = setup(4, CommitStrategy::Manual);
    h.attach(1, STREAM, GROUP, "a", None);
    h.attach(2, STREAM, GROUP, "b", None);
    let a = latest(&mut h);
    let b_parts = a["b"].partitions.clone();
    for _ in 0..5 {
        h.advance(Duration::from_secs(10));
        let r = heartbeat(&mut h, 1, "a").unwrap();
        let Reply::Assignment(asg) = r else {
            panic!("heartbeat reply {r:?}")
        };
        assert!(asg.member);
        // b stopped heartbeating at 0 s: at 30 s its session ends.
        if h.now.mono.0 < 1_000_000_000 + 30_000_000_000 {
            assert_eq!(asg.generation, 2);
        } else {
            assert_eq!(asg.generation, 3);
            assert_eq!(asg.partitions, vec![0, 1, 2, 3]);
        }
    }
    let told = assignments(&mut h);
    assert!(told.iter().any(|(who, a)| who == "b" && !a.member));
    assert!(h.notices().iter().any(|n| matches!(
        n,
        Notice::SessionExpired { consumer, .. } if consumer.as_str() == "b"
    )));
    // b still holds generation 2: its commit is refused, and nothing moves.
    let floors = h.describe_sub(STREAM, GROUP).cursors[0].floors.clone();
    let r = commit(&mut h, 2, "b", 2, vec![pos(b_parts[0], 0)]);
    assert_eq!(
        r,
        Err(Error::StaleGeneration {
            consumer: c("b"),
            given: 2,
            current: 3
        })
    );
    assert_eq!(h.describe_sub(STREAM, GROUP).cursors[0].floors, floors);
    // It is no longer attached: heartbeats say so; attaching again rejoins (generation 4).
    assert_eq!(heartbeat(&mut h, 2, "b"), Err(Error::NotAttached(c("b"))));
    h.attach(2, STREAM, GROUP, "b", None);
    assert_eq!(latest(&mut h)["b"].generation, 4);
}

#[test]
fn acks_and_commits_keep_a_session_alive() {
    let mut h = setup(1, CommitStrategy::AfterEach);
    h.attach(1, STREAM, GROUP, "a", None);
    for i in 0..6 {
        h.append_n(STREAM, 1);
        h.advance(Duration::from_secs(20));
        let r = h.ack(1, STREAM, GROUP, "a", vec![pos(0, i)]);
        assert_eq!(counts(&r), Some((1, 0)));
    }
    assert_eq!(group(&mut h).generation, 1, "never expired");
}

#[test]
fn an_older_generation_cannot_commit() {
    let mut h = setup(2, CommitStrategy::Manual);
    h.attach(1, STREAM, GROUP, "a", None);
    fill(&mut h, 2, 2);
    h.attach(2, STREAM, GROUP, "b", None);
    let a = latest(&mut h);
    let mine = a["a"].partitions[0];
    let r = commit(&mut h, 1, "a", 1, vec![pos(mine, 2)]);
    assert_eq!(
        r,
        Err(Error::StaleGeneration {
            consumer: c("a"),
            given: 1,
            current: 2
        })
    );
    assert_eq!(h.describe_sub(STREAM, GROUP).cursors[0].floors, vec![0, 0]);
    // With the current generation it commits, durably.
    let r = commit(&mut h, 1, "a", 2, vec![pos(mine, 2)]);
    assert_eq!(r, Ok(Reply::Committed(vec![pos(mine, 2)])));
    assert_eq!(
        h.describe_sub(STREAM, GROUP).cursors[0].floors[mine as usize],
        2
    );
    // A partition it does not own, an offset past what was delivered, a partition named twice,
    // a generation from the future: refused, nothing changes.
    let other = 1 - mine;
    assert_eq!(
        commit(&mut h, 1, "a", 2, vec![pos(other, 1)]),
        Err(Error::NotAssigned {
            consumer: c("a"),
            partition: other,
            generation: 2
        })
    );
    assert_eq!(
        commit(&mut h, 1, "a", 2, vec![pos(mine, 3)]),
        Err(Error::Invalid(InvalidInput::Range {
            field: "offsets.offset",
            value: 3,
            min: 0,
            max: 2
        }))
    );
    assert!(matches!(
        commit(&mut h, 1, "a", 2, vec![pos(mine, 1), pos(mine, 2)]),
        Err(Error::Invalid(InvalidInput::Conflict {
            field: "offsets.partition",
            ..
        }))
    ));
    assert!(matches!(
        commit(&mut h, 1, "a", 9, vec![]),
        Err(Error::StaleGeneration {
            given: 9,
            current: 2,
            ..
        })
    ));
    assert_eq!(
        h.describe_sub(STREAM, GROUP).cursors[0].floors[other as usize],
        0
    );
}

#[test]
fn commands_of_groups_are_refused_on_other_modes() {
    let mut h = Harness::new();
    h.create_persistent(STREAM, 1);
    let cfg = h.sub_config(STREAM, GROUP, SubscriptionMode::Exclusive);
    h.subscribe(cfg);
    h.attach(1, STREAM, GROUP, "a", None);
    assert!(matches!(
        commit(&mut h, 1, "a", 0, vec![]),
        Err(Error::Invalid(InvalidInput::Conflict {
            field: "subscription",
            ..
        }))
    ));
    assert!(matches!(
        heartbeat(&mut h, 1, "a"),
        Err(Error::Invalid(InvalidInput::Conflict {
            field: "subscription",
            ..
        }))
    ));
    assert_eq!(h.describe_sub(STREAM, GROUP).group, None);
}

#[test]
fn bad_group_configurations_are_refused() {
    let mut h = Harness::new();
    h.create_persistent(STREAM, 1);
    let mut cfg = group_config(&h, CommitStrategy::AfterBatch(0));
    assert!(matches!(
        h.cmd(Command::CreateSubscription(cfg.clone())),
        Err(Error::Invalid(InvalidInput::Range {
            field: "commit.after_batch",
            ..
        }))
    ));
    cfg.commit = CommitStrategy::Periodic(Duration::ZERO);
    assert!(matches!(
        h.cmd(Command::CreateSubscription(cfg.clone())),
        Err(Error::Invalid(InvalidInput::Range {
            field: "commit.periodic (ms)",
            ..
        }))
    ));
    cfg.commit = CommitStrategy::default();
    cfg.heartbeat_interval = cfg.session_timeout;
    assert!(matches!(
        h.cmd(Command::CreateSubscription(cfg.clone())),
        Err(Error::Invalid(InvalidInput::Range {
            field: "heartbeat_interval (ms)",
            ..
        }))
    ));
    cfg.heartbeat_interval = Duration::from_secs(1);
    cfg.session_timeout = Duration::ZERO;
    assert!(matches!(
        h.cmd(Command::CreateSubscription(cfg)),
        Err(Error::Invalid(InvalidInput::Range {
            field: "session_timeout (ms)",
            ..
        }))
    ));
    assert!(matches!(
        h.cmd(Command::DescribeSubscription {
            stream: s(STREAM),
            subscription: sub(GROUP)
        }),
        Err(Error::SubscriptionNotFound { .. })
    ));
}

/// Acks `n` events of partition 0 one at a time, from `from`; returns the offsets acked.
fn ack_one_by_one(h: &mut Harness, from: u64, n: u64) {
    for o in from..from + n {
        let r = h.ack(1, STREAM, GROUP, "a", vec![pos(0, o)]);
        assert_eq!(counts(&r), Some((1, 0)), "ack {o}");
    }
}

/// Restarts the engine and attaches `a` again; returns the offsets delivered again.
fn restart_and_redeliveries(h: Harness) -> (Harness, Vec<u64>) {
    let mut h = h.restart();
    h.attach(1, STREAM, GROUP, "a", None);
    let d = h
        .deliveries()
        .into_iter()
        .map(|(_, p, _)| p.offset)
        .collect();
    (h, d)
}

#[test]
fn after_batch_loses_at_most_one_batch_on_a_crash() {
    let mut h = setup(1, CommitStrategy::AfterBatch(100));
    h.attach(1, STREAM, GROUP, "a", None);
    h.append_n(STREAM, 250);
    assert_eq!(h.deliveries().len(), 250);
    ack_one_by_one(&mut h, 0, 250);
    assert_eq!(group(&mut h).uncommitted, vec![50]);
    let (_, again) = restart_and_redeliveries(h);
    assert_eq!(
        again,
        (200..250).collect::<Vec<_>>(),
        "exactly the uncommitted part"
    );
}

#[test]
fn after_each_loses_nothing_on_a_crash() {
    let mut h = setup(1, CommitStrategy::AfterEach);
    h.attach(1, STREAM, GROUP, "a", None);
    h.append_n(STREAM, 30);
    h.deliveries();
    ack_one_by_one(&mut h, 0, 30);
    let (_, again) = restart_and_redeliveries(h);
    assert!(again.is_empty());
}

#[test]
fn manual_commits_only_what_was_committed() {
    let mut h = setup(1, CommitStrategy::Manual);
    h.attach(1, STREAM, GROUP, "a", None);
    let generation = latest(&mut h)["a"].generation;
    h.append_n(STREAM, 40);
    h.deliveries();
    ack_one_by_one(&mut h, 0, 30);
    assert_eq!(group(&mut h).uncommitted, vec![30]);
    // Kafka style: committing 35 marks everything delivered below it processed.
    let r = commit(&mut h, 1, "a", generation, vec![pos(0, 35)]);
    assert_eq!(r, Ok(Reply::Committed(vec![pos(0, 35)])));
    ack_one_by_one(&mut h, 35, 3);
    let (_, again) = restart_and_redeliveries(h);
    assert_eq!(again, (35..40).collect::<Vec<_>>());
}

#[test]
fn manual_commit_without_offsets_commits_what_was_acknowledged() {
    let mut h = setup(1, CommitStrategy::Manual);
    h.attach(1, STREAM, GROUP, "a", None);
    let generation = latest(&mut h)["a"].generation;
    h.append_n(STREAM, 10);
    h.deliveries();
    ack_one_by_one(&mut h, 0, 6);
    let r = commit(&mut h, 1, "a", generation, vec![]);
    assert_eq!(r, Ok(Reply::Committed(vec![pos(0, 6)])));
    let (_, again) = restart_and_redeliveries(h);
    assert_eq!(again, (6..10).collect::<Vec<_>>());
}

#[test]
fn periodic_commits_within_one_interval() {
    let mut h = setup(1, CommitStrategy::Periodic(Duration::from_secs(5)));
    h.attach(1, STREAM, GROUP, "a", None);
    h.append_n(STREAM, 20);
    h.deliveries();
    ack_one_by_one(&mut h, 0, 10);
    h.advance(Duration::from_millis(4_999));
    assert_eq!(group(&mut h).uncommitted, vec![10], "not yet due");
    h.advance(Duration::from_millis(1));
    assert_eq!(
        group(&mut h).uncommitted,
        vec![0],
        "committed at the interval"
    );
    ack_one_by_one(&mut h, 10, 5);
    // A crash before the next commit delivers again only what was acknowledged since.
    let (_, again) = restart_and_redeliveries(h);
    assert_eq!(again, (10..20).collect::<Vec<_>>());
}

#[test]
fn a_partition_that_changes_owner_is_committed() {
    let mut h = setup(2, CommitStrategy::Manual);
    h.attach(1, STREAM, GROUP, "a", None);
    fill(&mut h, 2, 4);
    h.deliveries();
    let all: Vec<Position> = (0..2)
        .flat_map(|p| (0..4).map(move |o| pos(p, o)))
        .collect();
    assert_eq!(counts(&h.ack(1, STREAM, GROUP, "a", all)), Some((8, 0)));
    assert_eq!(group(&mut h).uncommitted, vec![4, 4]);
    h.attach(2, STREAM, GROUP, "b", None);
    assert_eq!(group(&mut h).uncommitted, vec![0, 0], "a rebalance commits");
    let mut h = h.restart();
    h.attach(1, STREAM, GROUP, "a", None);
    assert!(h.deliveries().is_empty());
}

#[test]
fn a_group_recovers_its_committed_positions_and_starts_a_new_generation() {
    let mut h = setup(4, CommitStrategy::AfterEach);
    h.attach(1, STREAM, GROUP, "a", None);
    fill(&mut h, 4, 2);
    let d = h.deliveries();
    let firsts: Vec<Position> = d.iter().map(|x| x.1).filter(|p| p.offset == 0).collect();
    assert_eq!(firsts.len(), 4);
    h.ack(1, STREAM, GROUP, "a", firsts).unwrap();
    let mut h = h.restart();
    let g = group(&mut h);
    assert_eq!(g.generation, 0);
    assert!(g.owners.iter().all(Option::is_none));
    assert_eq!(h.describe_sub(STREAM, GROUP).cursors[0].floors, vec![1; 4]);
    h.attach(1, STREAM, GROUP, "a", None);
    h.attach(2, STREAM, GROUP, "b", None);
    // a got all four partitions first, then handed two to b with what it had in flight.
    let d = h.deliveries();
    let at: BTreeSet<Position> = d.iter().map(|x| x.1).collect();
    assert_eq!(
        at,
        (0..4).map(|p| pos(p, 1)).collect(),
        "only the unacknowledged second event of each partition"
    );
    let to_b: Vec<u32> = d
        .iter()
        .filter(|x| x.0 == "b")
        .map(|x| x.1.partition)
        .collect();
    assert_eq!(to_b, latest(&mut h)["b"].partitions);
}

#[test]
fn an_ephemeral_stream_group_commits_at_once() {
    let mut h = Harness::new();
    h.create(StreamConfig::ephemeral(
        s(STREAM),
        100,
        1 << 20,
        Overflow::Reject,
    ));
    let cfg = group_config(&h, CommitStrategy::Manual);
    h.subscribe(cfg);
    h.attach(1, STREAM, GROUP, "a", None);
    h.append_n(STREAM, 3);
    h.deliveries();
    let r = commit(&mut h, 1, "a", 1, vec![pos(0, 3)]);
    assert_eq!(r, Ok(Reply::Committed(vec![pos(0, 3)])));
    assert_eq!(
        h.describe(STREAM).length(),
        0,
        "committed events leave the ephemeral stream"
    );
}

// ---- property: ownership and stale commits under any membership history ----------------------

mod props {
    use super::*;
    use proptest::prelude::*;

    const MEMBERS: [&str; 4] = ["m0", "m1", "m2", "m3"];

    #[derive(Debug, Clone)]
    enum Op {
        Join(usize),
        Leave(usize),
        Close(usize),
        Heartbeat(usize),
        Advance(u64),
        Append(usize),
        Ack(usize),
        Commit(usize, bool),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        let m = 0..MEMBERS.len();
        prop_oneof![
            4 => m.clone().prop_map(Op::Join),
            1 => m.clone().prop_map(Op::Leave),
            1 => m.clone().prop_map(Op::Close),
            3 => m.clone().prop_map(Op::Heartbeat),
            2 => (0u64..40).prop_map(Op::Advance),
            3 => (1usize..6).prop_map(Op::Append),
            3 => m.clone().prop_map(Op::Ack),
            2 => (m, any::<bool>()).prop_map(|(m, s)| Op::Commit(m, s)),
            1 => Just(Op::Restart),
        ]
    }

    /// What the test saw: the last assignment told to each member, the owner of each
    /// (engine life, generation, partition), the last generation each member was given, and
    /// what each member was delivered and has not acknowledged.
    #[derive(Default)]
    struct Seen {
        life: u64,
        told: BTreeMap<usize, GroupAssignment>,
        owner: BTreeMap<(u64, u64, u32), usize>,
        last_gen: BTreeMap<usize, u64>,
        unacked: BTreeMap<usize, BTreeSet<Position>>,
    }

    fn who(name: &str) -> usize {
        MEMBERS
            .iter()
            .position(|m| *m == name)
            .expect("a known member")
    }

    impl Seen {
        /// Checks the outputs in order: every partition has at most one owner per generation,
        /// and a member is delivered only events of partitions it was told it owns.
        fn drain(&mut self, h: &mut Harness) -> Result<(), TestCaseError> {
            for o in std::mem::take(&mut h.outputs) {
                match o {
                    Output::Assignment {
                        consumer,
                        assignment,
                        ..
                    } => {
                        let m = who(consumer.as_str());
                        self.last_gen.insert(m, assignment.generation);
                        if !assignment.member {
                            self.told.remove(&m);
                            continue;
                        }
                        for &p in &assignment.partitions {
                            let k = (self.life, assignment.generation, p);
                            let prev = self.owner.insert(k, m);
                            prop_assert!(
                                prev.is_none_or(|x| x == m),
                                "partition {p} has two owners in generation {}",
                                assignment.generation
                            );
                        }
                        self.told.insert(m, assignment);
                    }
                    Output::Deliver {
                        consumer, events, ..
                    } => {
                        let m = who(consumer.as_str());
                        let mine = self.told.get(&m).map(|a| a.partitions.clone());
                        for d in events {
                            let p = d.event.partition;
                            prop_assert!(
                                mine.as_ref().is_some_and(|ps| ps.contains(&p)),
                                "{} was delivered partition {p} it does not own ({mine:?})",
                                MEMBERS[m]
                            );
                            self.unacked
                                .entry(m)
                                .or_default()
                                .insert(pos(p, d.event.offset));
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }

        /// The group as described agrees with what members were told, and is balanced.
        fn check(&self, h: &mut Harness) -> Result<(), TestCaseError> {
            let info = h.describe_sub(STREAM, GROUP);
            let g = info.group.expect("a group");
            let attached: BTreeSet<usize> = info.attached.iter().map(|c| who(c.as_str())).collect();
            let told: BTreeSet<usize> = self.told.keys().copied().collect();
            prop_assert_eq!(&attached, &told, "members attached vs told");
            let mut counts: BTreeMap<usize, usize> = attached.iter().map(|m| (*m, 0)).collect();
            for (p, o) in g.owners.iter().enumerate() {
                match o {
                    Some(o) => {
                        let m = who(o.as_str());
                        prop_assert!(attached.contains(&m), "owner {o} is not a member");
                        let a = &self.told[&m];
                        prop_assert_eq!(a.generation, g.generation);
                        prop_assert!(a.partitions.contains(&(p as u32)));
                        *counts.entry(m).or_default() += 1;
                    }
                    None => prop_assert!(attached.is_empty(), "partition {p} unowned"),
                }
            }
            if let (Some(lo), Some(hi)) = (counts.values().min(), counts.values().max()) {
                prop_assert!(hi - lo <= 1, "unbalanced: {counts:?}");
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn one_owner_per_generation_and_stale_members_cannot_commit(
            ops in proptest::collection::vec(op(), 1..60),
            partitions in 1u32..9,
        ) {
            let mut h = setup(partitions, CommitStrategy::Manual);
            let mut seen = Seen::default();
            for op in ops {
                match op {
                    Op::Join(m) => {
                        let _ = h.cmd_on(m as u64 + 1, Command::Attach {
                            stream: s(STREAM),
                            subscription: sub(GROUP),
                            consumer: c(MEMBERS[m]),
                            max_in_flight: Some(3),
                        });
                    }
                    Op::Leave(m) => {
                        let r = h.cmd_on(m as u64 + 1, Command::Detach {
                            stream: s(STREAM),
                            subscription: sub(GROUP),
                            consumer: c(MEMBERS[m]),
                        });
                        if r.is_ok() {
                            seen.told.remove(&m);
                            seen.unacked.remove(&m);
                        }
                    }
                    Op::Close(m) => {
                        h.engine.handle_input(h.now, Input::ConnClosed { conn: ConnId(m as u64 + 1) });
                        h.pump();
                        seen.told.remove(&m);
                        seen.unacked.remove(&m);
                    }
                    Op::Heartbeat(m) => {
                        let r = heartbeat(&mut h, m as u64 + 1, MEMBERS[m]);
                        if let Ok(Reply::Assignment(a)) = &r {
                            prop_assert_eq!(Some(a), seen.told.get(&m));
                        }
                    }
                    Op::Advance(secs) => h.advance(Duration::from_secs(secs)),
                    Op::Append(n) => {
                        let events = (0..n).map(|i| ev("t").with_key(format!("k{i}-{}", h.now.mono.0).into_bytes())).collect();
                        h.append(STREAM, events).unwrap();
                    }
                    Op::Ack(m) => {
                        let mine: Vec<Position> = seen.unacked.remove(&m).unwrap_or_default().into_iter().collect();
                        if !mine.is_empty() {
                            let owned = seen.told.get(&m).map(|a| a.partitions.clone()).unwrap_or_default();
                            let r = h.ack(m as u64 + 1, STREAM, GROUP, MEMBERS[m], mine.clone());
                            if mine.iter().any(|p| !owned.contains(&p.partition)) {
                                prop_assert!(r.is_err(), "an ack of a partition not owned was taken: {r:?}");
                            }
                        }
                    }
                    Op::Commit(m, stale) => {
                        let Some(&known) = seen.last_gen.get(&m) else { continue };
                        let generation = if stale { known.saturating_sub(1) } else { known };
                        let current = h.describe_sub(STREAM, GROUP).group.map_or(0, |g| g.generation);
                        let before = h.describe_sub(STREAM, GROUP).cursors[0].floors.clone();
                        let r = commit(&mut h, m as u64 + 1, MEMBERS[m], generation, vec![]);
                        if generation != current {
                            prop_assert_eq!(
                                r,
                                Err(Error::StaleGeneration { consumer: c(MEMBERS[m]), given: generation, current })
                            );
                            prop_assert_eq!(&h.describe_sub(STREAM, GROUP).cursors[0].floors, &before);
                        }
                    }
                    Op::Restart => {
                        seen.drain(&mut h)?;
                        h = h.restart();
                        seen.life += 1;
                        seen.told.clear();
                        seen.last_gen.clear();
                        seen.unacked.clear();
                    }
                }
                seen.drain(&mut h)?;
                seen.check(&mut h)?;
            }
        }
    }
}
