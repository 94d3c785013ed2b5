//! Read receipts (SPEC 6): Delivered/Read receipts, marking read, queries, unread timeouts
//! and their redelivery, the receipt cleanup, the per-consumer bound, and receipts through a
//! restart.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tributary_core::*;
use tributary_store_memory::MemoryStore;

const STREAM: &str = "chat";
const SUB: &str = "inbox";

fn config(h: &Harness, unread: Option<u64>, redeliver: bool) -> SubscriptionConfig {
    let mut c = h.sub_config(STREAM, SUB, SubscriptionMode::ReadReceipt);
    c.unread_timeout = unread.map(Duration::from_secs);
    c.redeliver_unread = redeliver;
    c
}

fn setup_with(h: &mut Harness, partitions: u32, unread: Option<u64>, redeliver: bool) {
    h.create_persistent(STREAM, partitions);
    let c = config(h, unread, redeliver);
    h.subscribe(c);
}

fn setup(unread: Option<u64>, redeliver: bool) -> Harness {
    let mut h = Harness::new();
    setup_with(&mut h, 1, unread, redeliver);
    h
}

fn mark(h: &mut Harness, conn: u64, consumer: &str, read: MarkRead) -> Result<Reply, Error> {
    h.cmd_on(
        conn,
        Command::MarkRead {
            stream: s(STREAM),
            subscription: sub(SUB),
            consumer: c(consumer),
            read,
        },
    )
}

fn status(h: &mut Harness, consumer: &str, position: Option<Position>) -> ReceiptStatus {
    match h.cmd(Command::ReceiptStatus {
        stream: s(STREAM),
        subscription: sub(SUB),
        consumer: c(consumer),
        position,
    }) {
        Ok(Reply::ReceiptStatus(st)) => st,
        other => panic!("status: {other:?}"),
    }
}

fn unread_notices(h: &mut Harness) -> Vec<(String, Position, bool)> {
    h.notices()
        .into_iter()
        .filter_map(|n| match n {
            Notice::UnreadTimeout {
                consumer,
                position,
                redelivered,
                ..
            } => Some((consumer.to_string(), position, redelivered)),
            _ => None,
        })
        .collect()
}

fn consumer_notices(h: &mut Harness) -> Vec<(String, Notice)> {
    let mut got = Vec::new();
    h.outputs.retain(|o| match o {
        Output::ConsumerNotice {
            consumer, notice, ..
        } => {
            got.push((consumer.to_string(), notice.clone()));
            false
        }
        _ => true,
    });
    got
}

fn ack_all(h: &mut Harness, consumer: &str, offsets: std::ops::Range<u64>) {
    let n = offsets.end - offsets.start;
    let r = h.ack(
        1,
        STREAM,
        SUB,
        consumer,
        offsets.map(|o| pos(0, o)).collect(),
    );
    assert_eq!(counts(&r), Some((n as usize, 0)));
}

#[test]
fn an_ack_records_delivered_and_marking_records_read() {
    let mut h = setup(None, false);
    h.attach(1, STREAM, SUB, "ann", None);
    h.append_n(STREAM, 5);
    assert_eq!(h.deliveries().len(), 5);
    let t0 = h.now.wall;
    ack_all(&mut h, "ann", 0..3);
    let st = status(&mut h, "ann", Some(pos(0, 1)));
    assert_eq!(st.unread, 3);
    assert_eq!(st.last_read, vec![None]);
    assert_eq!(
        st.receipt,
        Some(Receipt {
            delivered_at: t0,
            read_at: None
        })
    );
    assert_eq!(
        status(&mut h, "ann", Some(pos(0, 4))).receipt,
        None,
        "not acknowledged"
    );
    h.advance(Duration::from_secs(2));
    let t1 = h.now.wall;
    // One event.
    assert_eq!(
        mark(&mut h, 1, "ann", MarkRead::Positions(vec![pos(0, 1)])),
        Ok(Reply::MarkedRead {
            marked: 1,
            ignored: 0
        })
    );
    let st = status(&mut h, "ann", Some(pos(0, 1)));
    assert_eq!((st.unread, st.last_read.clone()), (2, vec![Some(1)]));
    assert_eq!(
        st.receipt,
        Some(Receipt {
            delivered_at: t0,
            read_at: Some(t1)
        })
    );
    // A list: one already read is ignored.
    assert_eq!(
        mark(
            &mut h,
            1,
            "ann",
            MarkRead::Positions(vec![pos(0, 0), pos(0, 1)])
        ),
        Ok(Reply::MarkedRead {
            marked: 1,
            ignored: 1
        })
    );
    // Up to an offset: 2 (acknowledged) and 3, 4 (pending: read implies delivered, so they
    // are acknowledged too).
    assert_eq!(
        mark(&mut h, 1, "ann", MarkRead::UpTo(pos(0, 4))),
        Ok(Reply::MarkedRead {
            marked: 3,
            ignored: 0
        })
    );
    let st = status(&mut h, "ann", Some(pos(0, 4)));
    assert_eq!((st.unread, st.last_read), (0, vec![Some(4)]));
    assert!(st.receipt.is_some_and(|r| r.read_at == Some(h.now.wall)));
    assert_eq!(h.describe_sub(STREAM, SUB).cursors[0].floors, vec![5]);
    // Nothing delivered is left to mark.
    assert_eq!(
        mark(&mut h, 1, "ann", MarkRead::UpTo(pos(0, 10))),
        Ok(Reply::MarkedRead {
            marked: 0,
            ignored: 1
        })
    );
}

#[test]
fn receipts_are_per_consumer_like_broadcast() {
    let mut h = setup(None, false);
    h.attach(1, STREAM, SUB, "ann", None);
    h.attach(1, STREAM, SUB, "bob", None);
    h.append_n(STREAM, 2);
    let d = h.deliveries();
    assert_eq!(d.len(), 4, "every consumer gets every event");
    ack_all(&mut h, "ann", 0..2);
    ack_all(&mut h, "bob", 0..1);
    mark(&mut h, 1, "bob", MarkRead::UpTo(pos(0, 1))).unwrap();
    assert_eq!(status(&mut h, "ann", None).unread, 2);
    assert_eq!(status(&mut h, "bob", None).unread, 0);
    assert_eq!(status(&mut h, "bob", None).last_read, vec![Some(1)]);
}

#[test]
fn bad_marks_and_queries_are_refused_and_change_nothing() {
    let mut h = setup(None, false);
    h.attach(1, STREAM, SUB, "ann", None);
    h.append_n(STREAM, 1);
    h.deliveries();
    assert!(matches!(
        mark(&mut h, 1, "ann", MarkRead::Positions(vec![])),
        Err(Error::Invalid(InvalidInput::Length {
            field: "read.positions",
            ..
        }))
    ));
    assert!(matches!(
        mark(&mut h, 1, "ann", MarkRead::UpTo(pos(3, 0))),
        Err(Error::Invalid(InvalidInput::Range {
            field: "read.partition",
            ..
        }))
    ));
    assert_eq!(
        mark(&mut h, 2, "ann", MarkRead::UpTo(pos(0, 0))),
        Err(Error::NotAttached(c("ann"))),
        "another connection"
    );
    assert_eq!(h.describe_sub(STREAM, SUB).cursors[0].floors, vec![0]);
    assert_eq!(status(&mut h, "ann", Some(pos(0, 0))).receipt, None);
    // Other modes have no receipts.
    let cfg = h.sub_config(STREAM, "plain", SubscriptionMode::Broadcast);
    h.subscribe(cfg);
    h.attach(1, STREAM, "plain", "ann", None);
    let r = h.cmd(Command::MarkRead {
        stream: s(STREAM),
        subscription: sub("plain"),
        consumer: c("ann"),
        read: MarkRead::UpTo(pos(0, 0)),
    });
    assert!(matches!(
        r,
        Err(Error::Invalid(InvalidInput::Conflict {
            field: "subscription",
            ..
        }))
    ));
    // A configuration that cannot hold.
    let mut bad = config(&h, None, true);
    bad.name = sub("bad");
    assert!(matches!(
        h.cmd(Command::CreateSubscription(bad.clone())),
        Err(Error::Invalid(InvalidInput::Conflict {
            field: "redeliver_unread",
            ..
        }))
    ));
    bad.redeliver_unread = false;
    bad.receipt_ttl = Duration::ZERO;
    assert!(matches!(
        h.cmd(Command::CreateSubscription(bad)),
        Err(Error::Invalid(InvalidInput::Range {
            field: "receipt_ttl (ms)",
            ..
        }))
    ));
}

#[test]
fn an_unread_timeout_fires_once_per_delivery() {
    let mut h = setup(Some(60), false);
    h.attach(1, STREAM, SUB, "ann", None);
    h.append_n(STREAM, 2);
    h.deliveries();
    ack_all(&mut h, "ann", 0..2);
    mark(&mut h, 1, "ann", MarkRead::Positions(vec![pos(0, 1)])).unwrap();
    h.advance(Duration::from_secs(59));
    assert!(unread_notices(&mut h).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(
        unread_notices(&mut h),
        vec![("ann".into(), pos(0, 0), false)]
    );
    let to_consumer = consumer_notices(&mut h);
    assert_eq!(to_consumer.len(), 1, "the consumer is told too");
    h.advance(Duration::from_secs(3600));
    assert!(unread_notices(&mut h).is_empty(), "once per delivery");
    assert!(
        h.deliveries().is_empty(),
        "no redelivery without redeliver_unread"
    );
}

#[test]
fn redeliver_unread_delivers_again_and_the_new_delivery_has_its_own_timeout() {
    let mut h = setup(Some(10), true);
    h.attach(1, STREAM, SUB, "ann", None);
    h.append_n(STREAM, 1);
    h.deliveries();
    ack_all(&mut h, "ann", 0..1);
    h.advance(Duration::from_secs(10));
    assert_eq!(
        unread_notices(&mut h),
        vec![("ann".into(), pos(0, 0), true)]
    );
    assert_eq!(h.deliveries(), vec![("ann".into(), pos(0, 0), 2)]);
    // Not acknowledged again: no new delivery is recorded, no new timeout.
    h.advance(Duration::from_secs(30));
    assert!(unread_notices(&mut h).is_empty());
    // Acknowledged again: a new delivery, and its own timeout.
    let t = h.now.wall;
    assert_eq!(
        counts(&h.ack(1, STREAM, SUB, "ann", vec![pos(0, 0)])),
        Some((1, 0))
    );
    assert_eq!(
        status(&mut h, "ann", Some(pos(0, 0)))
            .receipt
            .map(|r| r.delivered_at),
        Some(t)
    );
    h.advance(Duration::from_secs(10));
    assert_eq!(unread_notices(&mut h).len(), 1);
    assert_eq!(h.deliveries(), vec![("ann".into(), pos(0, 0), 3)]);
    // Read now: nothing more.
    mark(&mut h, 1, "ann", MarkRead::Positions(vec![pos(0, 0)])).unwrap();
    h.advance(Duration::from_secs(100));
    assert!(unread_notices(&mut h).is_empty());
    assert!(h.deliveries().is_empty());
}

#[test]
fn an_unread_event_of_an_absent_consumer_is_delivered_when_it_attaches() {
    let mut h = setup(Some(10), true);
    h.attach(1, STREAM, SUB, "ann", None);
    h.append_n(STREAM, 1);
    h.deliveries();
    ack_all(&mut h, "ann", 0..1);
    h.cmd_on(
        1,
        Command::Detach {
            stream: s(STREAM),
            subscription: sub(SUB),
            consumer: c("ann"),
        },
    )
    .unwrap();
    h.advance(Duration::from_secs(10));
    assert_eq!(unread_notices(&mut h).len(), 1);
    assert!(consumer_notices(&mut h).is_empty(), "nobody to tell");
    assert!(h.deliveries().is_empty());
    h.attach(1, STREAM, SUB, "ann", None);
    assert_eq!(h.deliveries(), vec![("ann".into(), pos(0, 0), 2)]);
}

#[test]
fn old_receipts_are_cleaned_up_on_their_interval() {
    let mut h = Harness::new();
    h.create_persistent(STREAM, 1);
    let mut cfg = config(&h, None, false);
    cfg.receipt_ttl = Duration::from_secs(100);
    cfg.receipt_cleanup_interval = Duration::from_secs(60);
    h.subscribe(cfg);
    h.attach(1, STREAM, SUB, "ann", None);
    h.append_n(STREAM, 3);
    h.deliveries();
    ack_all(&mut h, "ann", 0..2);
    h.advance(Duration::from_secs(50));
    ack_all(&mut h, "ann", 2..3);
    // Cleanups at 60 s (nothing older than 100 s) and 120 s (0 and 1, delivered at 0 s).
    h.advance(Duration::from_secs(10));
    assert_eq!(status(&mut h, "ann", None).unread, 3);
    h.advance(Duration::from_secs(60));
    let st = status(&mut h, "ann", Some(pos(0, 0)));
    assert_eq!((st.unread, st.receipt), (1, None));
    // Removed from the store too: a restart does not bring them back.
    let mut h = h.restart();
    let st = status(&mut h, "ann", Some(pos(0, 2)));
    assert_eq!(st.unread, 1);
    assert!(st.receipt.is_some());
    assert_eq!(status(&mut h, "ann", Some(pos(0, 0))).receipt, None);
    // The timer runs while receipts are held, and stops with none left.
    h.advance(Duration::from_secs(200));
    assert_eq!(status(&mut h, "ann", None).unread, 0);
    h.advance(Duration::from_secs(600));
    assert_eq!(h.engine.timer_count(), 0);
}

#[test]
fn receipts_and_unread_timeouts_survive_a_restart() {
    let mut h = setup(Some(60), false);
    h.attach(1, STREAM, SUB, "ann", None);
    h.append_n(STREAM, 3);
    h.deliveries();
    let t0 = h.now.wall;
    ack_all(&mut h, "ann", 0..3);
    mark(&mut h, 1, "ann", MarkRead::Positions(vec![pos(0, 2)])).unwrap();
    let before = status(&mut h, "ann", Some(pos(0, 0)));
    h.advance(Duration::from_secs(20));
    let mut h = h.restart();
    assert_eq!(status(&mut h, "ann", Some(pos(0, 0))), before);
    assert_eq!(
        status(&mut h, "ann", None).last_read,
        vec![Some(2)],
        "the read survived"
    );
    assert_eq!(before.receipt.map(|r| r.delivered_at), Some(t0));
    // 40 s of the 60 s timeout are left after the restart.
    h.advance(Duration::from_secs(39));
    assert!(unread_notices(&mut h).is_empty());
    h.advance(Duration::from_secs(1));
    let n: BTreeSet<Position> = unread_notices(&mut h).into_iter().map(|x| x.1).collect();
    assert_eq!(n, [pos(0, 0), pos(0, 1)].into());
}

#[test]
fn receipts_are_bounded_per_consumer() {
    let config_small = Config {
        max_receipts_per_consumer: 3,
        ..no_linger()
    };
    let mut h = Harness::with(config_small, MemoryStore::new(), 7);
    setup_with(&mut h, 1, None, false);
    h.attach(1, STREAM, SUB, "ann", None);
    h.append_n(STREAM, 5);
    h.deliveries();
    ack_all(&mut h, "ann", 0..3);
    // All three unread: no room, refused, nothing changes.
    let r = h.ack(1, STREAM, SUB, "ann", vec![pos(0, 3)]);
    assert_eq!(
        r,
        Err(Error::Busy {
            what: "unread receipts of the consumer",
            limit: 3
        })
    );
    assert_eq!(h.describe_sub(STREAM, SUB).cursors[0].floors, vec![3]);
    // One read: the oldest read receipt gives way.
    mark(&mut h, 1, "ann", MarkRead::Positions(vec![pos(0, 0)])).unwrap();
    ack_all(&mut h, "ann", 3..4);
    let st = status(&mut h, "ann", Some(pos(0, 0)));
    assert_eq!((st.unread, st.receipt), (3, None));
}

#[test]
fn an_ephemeral_stream_keeps_receipts_in_memory() {
    let mut h = Harness::new();
    h.create(StreamConfig::ephemeral(
        s(STREAM),
        100,
        1 << 20,
        Overflow::Reject,
    ));
    let cfg = config(&h, None, false);
    h.subscribe(cfg);
    h.attach(1, STREAM, SUB, "ann", None);
    h.append_n(STREAM, 2);
    h.deliveries();
    ack_all(&mut h, "ann", 0..2);
    assert_eq!(
        mark(&mut h, 1, "ann", MarkRead::UpTo(pos(0, 0))),
        Ok(Reply::MarkedRead {
            marked: 1,
            ignored: 0
        })
    );
    assert_eq!(status(&mut h, "ann", None).unread, 1);
}

// ---- property: an unread timeout fires once per delivery --------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8),
        AckAll,
        MarkSome(u64),
        MarkUpTo(u64),
        Advance(u64),
        Detach,
        Attach,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (1u8..4).prop_map(Op::Append),
            3 => Just(Op::AckAll),
            2 => (0u64..12).prop_map(Op::MarkSome),
            1 => (0u64..12).prop_map(Op::MarkUpTo),
            4 => (1u64..25).prop_map(Op::Advance),
            1 => Just(Op::Detach),
            1 => Just(Op::Attach),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every unread timeout follows its own delivery (never two for one), never comes for
        /// an event read before it was due, and every acknowledged event left unread gets one.
        #[test]
        fn an_unread_timeout_fires_once_per_delivery(
            ops in proptest::collection::vec(op(), 1..50),
            redeliver in any::<bool>(),
        ) {
            const TIMEOUT: u64 = 15;
            let mut h = setup(Some(TIMEOUT), redeliver);
            h.attach(1, STREAM, SUB, "ann", None);
            let mut attached = true;
            // Per offset: deliveries seen, timeouts seen, when it was last acknowledged (a
            // recorded delivery) and whether it is read.
            let mut delivered: BTreeMap<u64, u32> = BTreeMap::new();
            let mut timeouts: BTreeMap<u64, u32> = BTreeMap::new();
            let mut acked_at: BTreeMap<u64, u64> = BTreeMap::new();
            let mut read: BTreeSet<u64> = BTreeSet::new();
            let mut to_ack: BTreeSet<u64> = BTreeSet::new();
            let mut clock = 0u64;
            let drain = |h: &mut Harness,
                             delivered: &mut BTreeMap<u64, u32>,
                             timeouts: &mut BTreeMap<u64, u32>,
                             to_ack: &mut BTreeSet<u64>,
                             read: &BTreeSet<u64>|
             -> Result<(), TestCaseError> {
                for (_, p, _) in h.deliveries() {
                    *delivered.entry(p.offset).or_default() += 1;
                    to_ack.insert(p.offset);
                }
                for (_, p, _) in unread_notices(h) {
                    prop_assert!(!read.contains(&p.offset), "timeout of a read event {}", p.offset);
                    let t = timeouts.entry(p.offset).or_default();
                    *t += 1;
                    prop_assert!(
                        *t <= delivered.get(&p.offset).copied().unwrap_or(0),
                        "more timeouts than deliveries of {}", p.offset
                    );
                }
                consumer_notices(h);
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Append(n) => {
                        h.append_n(STREAM, n as usize);
                    }
                    Op::AckAll if attached && !to_ack.is_empty() => {
                        let list: Vec<Position> = to_ack.iter().map(|o| pos(0, *o)).collect();
                        let r = h.ack(1, STREAM, SUB, "ann", list.clone());
                        if matches!(r, Ok(Reply::Settled(s)) if s.applied.len() == list.len()) {
                            for o in &to_ack {
                                if !read.contains(o) {
                                    acked_at.insert(*o, clock);
                                }
                            }
                        }
                        to_ack.clear();
                    }
                    Op::AckAll => {}
                    Op::MarkSome(o) | Op::MarkUpTo(o) if attached => {
                        let r = match op {
                            Op::MarkSome(_) => mark(&mut h, 1, "ann", MarkRead::Positions(vec![pos(0, o)])),
                            _ => mark(&mut h, 1, "ann", MarkRead::UpTo(pos(0, o))),
                        };
                        prop_assert!(r.is_ok(), "{r:?}");
                        // What the engine now says is read.
                        for x in 0..=o {
                            if status(&mut h, "ann", Some(pos(0, x))).receipt.is_some_and(|r| r.read_at.is_some()) {
                                read.insert(x);
                                to_ack.remove(&x);
                            }
                        }
                    }
                    Op::MarkSome(_) | Op::MarkUpTo(_) => {}
                    Op::Advance(secs) => {
                        h.advance(Duration::from_secs(secs));
                        clock += secs;
                    }
                    Op::Detach if attached => {
                        h.cmd_on(1, Command::Detach { stream: s(STREAM), subscription: sub(SUB), consumer: c("ann") }).unwrap();
                        attached = false;
                        to_ack.clear();
                    }
                    Op::Attach if !attached => {
                        h.attach(1, STREAM, SUB, "ann", None);
                        attached = true;
                    }
                    Op::Detach | Op::Attach => {}
                    Op::Restart => {
                        drain(&mut h, &mut delivered, &mut timeouts, &mut to_ack, &read)?;
                        h = h.restart();
                        attached = false;
                        to_ack.clear();
                    }
                }
                drain(&mut h, &mut delivered, &mut timeouts, &mut to_ack, &read)?;
            }
            // Liveness: past the timeout, every acknowledged unread event got its notice.
            h.advance(Duration::from_secs(TIMEOUT + 1));
            drain(&mut h, &mut delivered, &mut timeouts, &mut to_ack, &read)?;
            for (o, _) in acked_at.iter().filter(|(o, _)| !read.contains(o)) {
                prop_assert!(timeouts.get(o).copied().unwrap_or(0) >= 1, "no timeout for unread {o}");
            }
        }
    }
}

#[test]
fn an_unread_timeout_names_the_event_while_the_tail_cache_holds_it() {
    let mut h = setup(Some(60), false);
    h.attach(1, STREAM, SUB, "ann", None);
    let mut e = ev_id("t", 9);
    e.correlation_id = Some("corr-9".into());
    h.append(STREAM, vec![e]).unwrap();
    h.deliveries();
    ack_all(&mut h, "ann", 0..1);
    h.advance(Duration::from_secs(60));
    let event = h.notices().into_iter().find_map(|n| match n {
        Notice::UnreadTimeout { event, .. } => Some(event),
        _ => None,
    });
    assert_eq!(event, Some(Some((id(9), Some("corr-9".to_string())))));
}
