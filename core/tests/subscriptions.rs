//! Subscriptions (SPEC 3): broadcast and exclusive modes, start positions, credit, acks,
//! nacks, ack wait, back-off, dead letters, ordered keys, resets, durability of positions.

mod common;
use common::*;
use std::time::Duration;
use tributary_core::*;

fn offsets(d: &[(String, Position, u32)]) -> Vec<u64> {
    d.iter().map(|x| x.1.offset).collect()
}

#[test]
fn broadcast_gives_every_event_to_every_consumer() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "b", SubscriptionMode::Broadcast));
    h.attach(1, "s", "b", "x", None);
    h.attach(2, "s", "b", "y", None);
    h.append_n("s", 3);
    let d = h.deliveries();
    let for_x: Vec<u64> = d
        .iter()
        .filter(|x| x.0 == "x")
        .map(|x| x.1.offset)
        .collect();
    let for_y: Vec<u64> = d
        .iter()
        .filter(|x| x.0 == "y")
        .map(|x| x.1.offset)
        .collect();
    assert_eq!(for_x, vec![0, 1, 2]);
    assert_eq!(for_y, vec![0, 1, 2]);
    // Each consumer has its own position.
    h.ack(1, "s", "b", "x", vec![pos(0, 0), pos(0, 1), pos(0, 2)])
        .unwrap();
    let info = h.describe_sub("s", "b");
    let floors: Vec<(String, u64)> = info
        .cursors
        .iter()
        .map(|c| (c.consumer.as_ref().unwrap().to_string(), c.floors[0]))
        .collect();
    assert_eq!(floors, vec![("x".into(), 3), ("y".into(), 0)]);
    // A consumer attaching later starts at the subscription's start.
    h.attach(3, "s", "b", "z", None);
    assert_eq!(offsets(&h.deliveries()), vec![0, 1, 2]);
}

#[test]
fn exclusive_gives_each_event_to_one_consumer_round_robin() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    h.attach(2, "s", "q", "b", None);
    h.append_n("s", 6);
    let d = h.deliveries();
    assert_eq!(d.len(), 6);
    let mut all = offsets(&d);
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3, 4, 5], "each event exactly once");
    let a = d.iter().filter(|x| x.0 == "a").count();
    assert_eq!(a, 3, "shared evenly");
}

#[test]
fn exclusive_skips_consumers_without_credit() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", Some(1));
    h.attach(2, "s", "q", "b", Some(10));
    h.append_n("s", 5);
    let d = h.deliveries();
    assert_eq!(d.iter().filter(|x| x.0 == "a").count(), 1);
    assert_eq!(d.iter().filter(|x| x.0 == "b").count(), 4);
}

#[test]
fn max_in_flight_is_credit_freed_by_acks() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", Some(2));
    h.append_n("s", 5);
    assert_eq!(offsets(&h.deliveries()), vec![0, 1]);
    assert_eq!(
        h.ack(1, "s", "q", "a", vec![pos(0, 0)]),
        Ok(settled(vec![pos(0, 0)], vec![]))
    );
    assert_eq!(offsets(&h.deliveries()), vec![2]);
    h.ack(1, "s", "q", "a", vec![pos(0, 1), pos(0, 2)]).unwrap();
    assert_eq!(offsets(&h.deliveries()), vec![3, 4]);
}

#[test]
fn start_positions() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    for i in 0..5u64 {
        h.set_wall(T0 + i * 1000);
        h.append_n("s", 1);
    }
    let cases = [
        ("beg", StartPosition::Beginning, vec![0, 1, 2, 3, 4]),
        ("end", StartPosition::End, vec![]),
        ("off", StartPosition::Offset(3), vec![3, 4]),
        ("past", StartPosition::Offset(99), vec![]),
        (
            "time",
            StartPosition::Time(UnixMillis(T0 + 1500)),
            vec![2, 3, 4],
        ),
        (
            "exact",
            StartPosition::Time(UnixMillis(T0 + 2000)),
            vec![2, 3, 4],
        ),
        (
            "future",
            StartPosition::Time(UnixMillis(T0 + 99_000)),
            vec![],
        ),
    ];
    for (i, (name, start, want)) in cases.into_iter().enumerate() {
        let mut cfg = h.sub_config("s", name, SubscriptionMode::Exclusive);
        cfg.start = start;
        h.subscribe(cfg);
        h.attach(10 + i as u64, "s", name, "w", None);
        assert_eq!(offsets(&h.deliveries()), want, "{name}");
    }
    // After the start, new events flow.
    h.append_n("s", 1);
    assert_eq!(h.deliveries().len(), 7);
}

#[test]
fn time_start_below_the_tail_cache_asks_the_store() {
    let config = Config {
        tail_cache_events: 2,
        ..no_linger()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 3);
    h.create_persistent("s", 1);
    for i in 0..6u64 {
        h.set_wall(T0 + i * 1000);
        h.append_n("s", 1);
    }
    h.hold_storage = true;
    let mut cfg = h.sub_config("s", "t", SubscriptionMode::Exclusive);
    cfg.start = StartPosition::Time(UnixMillis(T0 + 1000));
    let req = h.send(1, Command::CreateSubscription(cfg));
    assert!(matches!(h.held[0].1, StorageRequest::FindOffset { .. }));
    h.complete(0, None);
    assert!(matches!(h.held[0].1, StorageRequest::SaveSubscription(_)));
    h.complete(0, None);
    assert_eq!(h.reply(req), Some(Ok(Reply::Done)));
    h.hold_storage = false;
    h.attach(1, "s", "t", "w", None);
    assert_eq!(offsets(&h.deliveries()), vec![1, 2, 3, 4, 5]);
}

#[test]
fn subscription_errors() {
    let mut h = Harness::new();
    h.create_persistent("s", 2);
    let cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    h.subscribe(cfg.clone());
    assert_eq!(
        h.cmd(Command::CreateSubscription(cfg)),
        Err(Error::SubscriptionExists {
            stream: s("s"),
            subscription: sub("q")
        })
    );
    assert_eq!(
        h.cmd(Command::CreateSubscription(h.sub_config(
            "nope",
            "q",
            SubscriptionMode::Exclusive
        ))),
        Err(Error::StreamNotFound(s("nope")))
    );
    let mut bad = h.sub_config("s", "b", SubscriptionMode::Broadcast);
    bad.ordered_by_key = true;
    assert!(matches!(
        h.cmd(Command::CreateSubscription(bad)),
        Err(Error::Invalid(InvalidInput::Conflict { .. }))
    ));
    let mut bad = h.sub_config("s", "b", SubscriptionMode::Broadcast);
    bad.max_deliveries = 0;
    assert!(matches!(
        h.cmd(Command::CreateSubscription(bad)),
        Err(Error::Invalid(InvalidInput::Range {
            field: "max_deliveries",
            ..
        }))
    ));
    h.attach(1, "s", "q", "a", None);
    assert_eq!(
        h.cmd_on(
            2,
            Command::Attach {
                stream: s("s"),
                subscription: sub("q"),
                consumer: c("a"),
                max_in_flight: None
            }
        ),
        Err(Error::AlreadyAttached(c("a")))
    );
    assert!(matches!(
        h.cmd_on(
            2,
            Command::Attach {
                stream: s("s"),
                subscription: sub("q"),
                consumer: c("b"),
                max_in_flight: Some(0)
            }
        ),
        Err(Error::Invalid(_))
    ));
    // Acks from a consumer not attached on this connection, or to a partition that does not exist.
    assert_eq!(
        h.ack(2, "s", "q", "a", vec![pos(0, 0)]),
        Err(Error::NotAttached(c("a")))
    );
    assert!(matches!(
        h.ack(1, "s", "q", "a", vec![pos(2, 0)]),
        Err(Error::Invalid(InvalidInput::Range {
            field: "partition",
            max: 1,
            ..
        }))
    ));
    assert!(matches!(
        h.ack(1, "s", "q", "a", vec![]),
        Err(Error::Invalid(InvalidInput::Length {
            field: "positions",
            ..
        }))
    ));
    // Acking what was never delivered is ignored, not an error.
    assert_eq!(
        h.ack(1, "s", "q", "a", vec![pos(0, 7)]),
        Ok(settled(vec![], vec![(pos(0, 7), SkipReason::NotDelivered)]))
    );
}

#[test]
fn ack_wait_expiry_redelivers() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let mut cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    cfg.ack_wait = Duration::from_secs(10);
    h.subscribe(cfg);
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 2);
    h.deliveries();
    h.ack(1, "s", "q", "a", vec![pos(0, 1)]).unwrap();
    h.advance(Duration::from_millis(9_999));
    assert!(h.deliveries().is_empty());
    h.advance(Duration::from_millis(1));
    let d = h.deliveries();
    assert_eq!(
        d,
        vec![("a".into(), pos(0, 0), 2)],
        "only the unacknowledged event, attempt 2"
    );
}

#[test]
fn nack_with_a_delay_and_with_exponential_backoff() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let mut cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    cfg.max_deliveries = 10;
    cfg.ack_wait = Duration::from_secs(3600);
    h.subscribe(cfg);
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 1);
    h.deliveries();
    // An explicit delay.
    h.nack(
        1,
        "s",
        "q",
        "a",
        vec![pos(0, 0)],
        Some(Duration::from_millis(250)),
    )
    .unwrap();
    h.advance(Duration::from_millis(249));
    assert!(h.deliveries().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.deliveries(), vec![("a".into(), pos(0, 0), 2)]);
    // The default back-off: 1 s x 2^(attempt-1), so after attempt 2: 2 s, after 3: 4 s.
    for (attempt, wait) in [(2u32, 2000u64), (3, 4000), (4, 8000)] {
        h.nack(1, "s", "q", "a", vec![pos(0, 0)], None).unwrap();
        h.advance(Duration::from_millis(wait - 1));
        assert!(h.deliveries().is_empty(), "attempt {attempt}: too early");
        h.advance(Duration::from_millis(1));
        assert_eq!(h.deliveries(), vec![("a".into(), pos(0, 0), attempt + 1)]);
    }
    assert_eq!(
        Config::backoff(Duration::from_secs(1), Duration::from_secs(300), 20),
        Duration::from_secs(300)
    );
}

#[test]
fn max_deliveries_then_the_dead_letter_stream_with_its_headers() {
    let mut h = Harness::new();
    h.create_persistent("orders", 1);
    let mut cfg = h.sub_config("orders", "q", SubscriptionMode::Exclusive);
    cfg.max_deliveries = 2;
    h.subscribe(cfg);
    h.attach(1, "orders", "q", "a", None);
    h.append("orders", vec![ev("order-placed").with_key(b"k".to_vec())])
        .unwrap();
    h.deliveries();
    h.nack(1, "orders", "q", "a", vec![pos(0, 0)], Some(Duration::ZERO))
        .unwrap();
    assert_eq!(h.deliveries(), vec![("a".into(), pos(0, 0), 2)]);
    h.nack(1, "orders", "q", "a", vec![pos(0, 0)], Some(Duration::ZERO))
        .unwrap();
    assert!(h.deliveries().is_empty(), "dead-lettered, not redelivered");
    let dl = h.read("orders.dlq", 0, 0, 10).unwrap();
    assert_eq!(dl.len(), 1);
    let e = &dl[0];
    assert_eq!(e.event_type, "order-placed");
    assert_eq!(e.headers["x-original-stream"], "orders");
    assert_eq!(e.headers["x-original-offset"], "0");
    assert_eq!(e.headers["x-deliveries"], "2");
    assert_eq!(e.headers["x-last-error"], "boom");
    assert_eq!(e.key.as_deref(), Some(&b"k"[..]));
    assert!(
        h.notices()
            .iter()
            .any(|n| matches!(n, Notice::DeadLettered { deliveries: 2, .. }))
    );
    // The subscription moved past it.
    assert_eq!(h.describe_sub("orders", "q").cursors[0].floors, vec![1]);
    assert_eq!(h.describe("orders.dlq").config.kind, StreamKind::Persistent);
}

#[test]
fn ack_wait_expiry_counts_toward_max_deliveries() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let mut cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    cfg.max_deliveries = 2;
    cfg.ack_wait = Duration::from_secs(1);
    h.subscribe(cfg);
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 1);
    h.advance(Duration::from_secs(1));
    h.advance(Duration::from_secs(1));
    assert_eq!(offsets(&h.deliveries()), vec![0, 0]);
    let dl = h.read("s.dlq", 0, 0, 10).unwrap();
    assert_eq!(dl[0].headers["x-last-error"], "ack wait expired");
}

#[test]
fn term_sends_to_the_dead_letter_stream_at_once() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 2);
    h.deliveries();
    let r = h.cmd(Command::Term {
        stream: s("s"),
        subscription: sub("q"),
        consumer: c("a"),
        positions: vec![pos(0, 1)],
        reason: "poison".into(),
    });
    assert_eq!(r, Ok(settled(vec![pos(0, 1)], vec![])));
    let dl = h.read("s.dlq", 0, 0, 10).unwrap();
    assert_eq!(
        (
            dl[0].headers["x-original-offset"].as_str(),
            dl[0].headers["x-deliveries"].as_str()
        ),
        ("1", "1")
    );
    assert_eq!(dl[0].headers["x-last-error"], "poison");
    h.ack(1, "s", "q", "a", vec![pos(0, 0)]).unwrap();
    assert_eq!(h.describe_sub("s", "q").cursors[0].floors, vec![2]);
}

#[test]
fn a_failed_dead_letter_write_redelivers_later() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let mut cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    cfg.max_deliveries = 1;
    h.subscribe(cfg);
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 1);
    h.deliveries();
    h.hold_storage = true;
    h.nack(1, "s", "q", "a", vec![pos(0, 0)], None).unwrap();
    assert!(matches!(h.held[0].1, StorageRequest::CreateStream(_)));
    h.complete(0, None);
    assert!(matches!(h.held[0].1, StorageRequest::Append(_)));
    h.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable("down".into()))),
    );
    h.hold_storage = false;
    assert_eq!(
        h.describe_sub("s", "q").cursors[0].floors,
        vec![0],
        "not acknowledged"
    );
    h.advance(Duration::from_secs(5));
    assert_eq!(h.deliveries(), vec![("a".into(), pos(0, 0), 2)]);
    h.nack(1, "s", "q", "a", vec![pos(0, 0)], None).unwrap();
    assert_eq!(h.read("s.dlq", 0, 0, 10).unwrap().len(), 1);
}

#[test]
fn detach_makes_in_flight_events_available_to_others() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 2);
    assert_eq!(h.deliveries().len(), 2);
    h.attach(2, "s", "q", "b", None);
    assert!(h.deliveries().is_empty());
    h.engine
        .handle_input(h.now, Input::ConnClosed { conn: ConnId(1) });
    h.pump();
    assert_eq!(
        h.deliveries(),
        vec![("b".into(), pos(0, 0), 2), ("b".into(), pos(0, 1), 2)]
    );
    assert_eq!(h.describe_sub("s", "q").attached, vec![c("b")]);
    assert_eq!(
        h.cmd_on(
            2,
            Command::Detach {
                stream: s("s"),
                subscription: sub("q"),
                consumer: c("b")
            }
        ),
        Ok(Reply::Done)
    );
    assert_eq!(
        h.ack(2, "s", "q", "b", vec![pos(0, 0)]),
        Err(Error::NotAttached(c("b")))
    );
}

#[test]
fn ordered_by_key_never_has_two_events_of_a_key_in_flight() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let mut cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    cfg.ordered_by_key = true;
    h.subscribe(cfg);
    h.attach(1, "s", "q", "a", None);
    h.attach(2, "s", "q", "b", None);
    let k = |x: &str| ev("t").with_key(x.as_bytes().to_vec());
    // offsets: 0 A, 1 B, 2 A, 3 C, 4 A, 5 (no key)
    h.append("s", vec![k("A"), k("B"), k("A"), k("C"), k("A"), ev("t")])
        .unwrap();
    let mut got = offsets(&h.deliveries());
    got.sort();
    assert_eq!(got, vec![0, 1, 3, 5], "2 and 4 wait behind 0 (same key)");
    // A slow key blocks only itself; a nack keeps it blocked until it is resolved.
    h.nack(
        1,
        "s",
        "q",
        "a",
        vec![pos(0, 0)],
        Some(Duration::from_secs(1)),
    )
    .unwrap();
    h.nack(
        2,
        "s",
        "q",
        "b",
        vec![pos(0, 0)],
        Some(Duration::from_secs(1)),
    )
    .unwrap();
    assert!(h.deliveries().is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(offsets(&h.deliveries()), vec![0]);
    for conn in [1, 2] {
        for consumer in ["a", "b"] {
            let _ = h.ack(conn, "s", "q", consumer, vec![pos(0, 0)]);
        }
    }
    assert_eq!(offsets(&h.deliveries()), vec![2]);
    for (conn, consumer) in [(1, "a"), (2, "b")] {
        let _ = h.ack(conn, "s", "q", consumer, vec![pos(0, 2)]);
    }
    assert_eq!(offsets(&h.deliveries()), vec![4]);
}

#[test]
fn the_ack_floor_is_durable_and_survives_a_restart() {
    let mut h = Harness::new();
    h.create_persistent("s", 2);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    let k0 = b"zero".to_vec();
    let events: Vec<NewEvent> = (0..6).map(|_| ev("t").with_key(k0.clone())).collect();
    h.append("s", events).unwrap();
    let p = partition_of_key(&k0, 2);
    h.deliveries();
    // Ack 0, 1 and 3: the floor is 2, and 3 is acknowledged above it.
    h.ack(1, "s", "q", "a", vec![pos(p, 0), pos(p, 1), pos(p, 3)])
        .unwrap();
    let rec = h
        .store
        .cursors()
        .into_iter()
        .find(|c| c.partition == p)
        .unwrap();
    assert_eq!((rec.floor, rec.acked.clone()), (2, vec![3]));
    let mut h = h.restart();
    h.attach(1, "s", "q", "a", None);
    assert_eq!(
        offsets(&h.deliveries()),
        vec![2, 4, 5],
        "acknowledged events are not delivered again"
    );
}

#[test]
fn an_ack_is_answered_once_the_position_is_saved() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 3);
    h.deliveries();
    h.hold_storage = true;
    let a1 = h.send(
        1,
        Command::Ack {
            stream: s("s"),
            subscription: sub("q"),
            consumer: c("a"),
            positions: vec![pos(0, 0)],
        },
    );
    let a2 = h.send(
        1,
        Command::Ack {
            stream: s("s"),
            subscription: sub("q"),
            consumer: c("a"),
            positions: vec![pos(0, 1)],
        },
    );
    assert_eq!(
        h.held.len(),
        1,
        "one save in flight per cursor; the second ack waits"
    );
    assert!(h.reply(a1).is_none());
    h.complete(0, Some(StorageResult::Unknown));
    h.advance(Duration::from_millis(60));
    h.complete(0, None);
    assert_eq!(h.reply(a1), Some(Ok(settled(vec![pos(0, 0)], vec![]))));
    assert!(h.reply(a2).is_none());
    let StorageRequest::SaveCursor(rec) = &h.held[0].1 else {
        panic!()
    };
    assert_eq!(rec.floor, 2);
    h.complete(0, None);
    assert_eq!(h.reply(a2), Some(Ok(settled(vec![pos(0, 1)], vec![]))));
}

#[test]
fn reset_to_an_offset_or_a_time_is_seen_by_the_next_delivery() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    for i in 0..5u64 {
        h.set_wall(T0 + i * 1000);
        h.append_n("s", 1);
    }
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    h.deliveries();
    h.ack(1, "s", "q", "a", (0..5).map(|o| pos(0, o)).collect())
        .unwrap();
    let reset = |to| Command::ResetSubscription {
        stream: s("s"),
        subscription: sub("q"),
        consumer: None,
        to,
    };
    assert_eq!(h.cmd(reset(StartPosition::Offset(1))), Ok(Reply::Done));
    assert_eq!(offsets(&h.deliveries()), vec![1, 2, 3, 4]);
    assert_eq!(
        h.describe_sub("s", "q").cursors[0].floors,
        vec![1],
        "a reset may move the floor back"
    );
    assert_eq!(
        h.cmd(reset(StartPosition::Time(UnixMillis(T0 + 3000)))),
        Ok(Reply::Done)
    );
    assert_eq!(offsets(&h.deliveries()), vec![3, 4]);
    // Acks of deliveries made before the reset no longer count.
    assert_eq!(
        h.ack(1, "s", "q", "a", vec![pos(0, 1)]),
        Ok(settled(
            vec![],
            vec![(pos(0, 1), SkipReason::AlreadySettled)]
        ))
    );
    assert_eq!(h.store.cursors()[0].floor, 3, "the reset is durable");
    // Broadcast: one consumer, or an unknown one.
    h.subscribe(h.sub_config("s", "b", SubscriptionMode::Broadcast));
    h.attach(2, "s", "b", "x", None);
    h.deliveries();
    let r = h.cmd(Command::ResetSubscription {
        stream: s("s"),
        subscription: sub("b"),
        consumer: Some(c("ghost")),
        to: StartPosition::Beginning,
    });
    assert_eq!(r, Err(Error::NotAttached(c("ghost"))));
    let r = h.cmd(Command::ResetSubscription {
        stream: s("s"),
        subscription: sub("b"),
        consumer: Some(c("x")),
        to: StartPosition::Offset(4),
    });
    assert_eq!(r, Ok(Reply::Done));
    assert_eq!(offsets(&h.deliveries()), vec![4]);
}

#[test]
fn a_subscription_can_be_deleted() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 1);
    h.deliveries();
    assert_eq!(
        h.cmd(Command::DeleteSubscription {
            stream: s("s"),
            subscription: sub("q")
        }),
        Ok(Reply::Done)
    );
    assert_eq!(h.describe("s").subscriptions, 0);
    assert_eq!(h.engine.timer_count(), 0, "its timers are gone");
    h.append_n("s", 1);
    assert!(h.deliveries().is_empty());
    let mut h = h.restart();
    assert!(matches!(
        h.cmd(Command::DescribeSubscription {
            stream: s("s"),
            subscription: sub("q")
        }),
        Err(Error::SubscriptionNotFound { .. })
    ));
}

#[test]
fn at_most_once_persistent_positions_move_on_delivery() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("s"));
    cfg.delivery = DeliverySemantics::AtMostOnce;
    h.create(cfg);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", Some(2));
    h.append_n("s", 5);
    assert_eq!(
        offsets(&h.deliveries()),
        vec![0, 1, 2, 3, 4],
        "no credit is held"
    );
    assert_eq!(h.store.cursors()[0].floor, 5);
    let mut h = h.restart();
    h.attach(1, "s", "q", "a", None);
    assert!(h.deliveries().is_empty(), "delivered once, never again");
}

#[test]
fn reads_for_a_lagging_subscription_come_from_the_store() {
    let config = Config {
        tail_cache_events: 3,
        read_batch_events: 4,
        ..no_linger()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 5);
    h.create_persistent("s", 1);
    h.append_n("s", 20);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    assert_eq!(offsets(&h.deliveries()), (0..20).collect::<Vec<_>>());
    // A read that fails is tried again.
    let mut h2 = Harness::with(
        Config {
            tail_cache_events: 1,
            ..no_linger()
        },
        tributary_store_memory::MemoryStore::new(),
        5,
    );
    h2.create_persistent("s", 1);
    h2.append_n("s", 3);
    h2.subscribe(h2.sub_config("s", "q", SubscriptionMode::Exclusive));
    h2.hold_storage = true;
    h2.attach(1, "s", "q", "a", None);
    assert!(matches!(h2.held[0].1, StorageRequest::Read { from: 0, .. }));
    h2.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable("x".into()))),
    );
    h2.hold_storage = false;
    h2.advance(Duration::from_millis(50));
    assert_eq!(offsets(&h2.deliveries()), vec![0, 1, 2]);
}

#[test]
fn the_unacknowledged_window_is_bounded() {
    let config = Config {
        max_ack_pending: 3,
        ..no_linger()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 5);
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 10);
    assert_eq!(offsets(&h.deliveries()), vec![0, 1, 2]);
    h.ack(1, "s", "q", "a", vec![pos(0, 1), pos(0, 2)]).unwrap();
    assert!(h.deliveries().is_empty(), "offset 0 holds the window");
    h.ack(1, "s", "q", "a", vec![pos(0, 0)]).unwrap();
    assert_eq!(offsets(&h.deliveries()), vec![3, 4, 5]);
}

#[test]
fn at_most_once_events_go_out_only_after_their_position_is_saved() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("s"));
    cfg.delivery = DeliverySemantics::AtMostOnce;
    h.create(cfg);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.append_n("s", 3);
    h.hold_storage = true;
    h.attach(1, "s", "q", "a", None);
    assert!(
        h.deliveries().is_empty(),
        "nothing goes out before the position is saved"
    );
    assert!(matches!(&h.held[0].1, StorageRequest::SaveCursor(c) if c.floor == 3));
    // The engine crashes before the save: the events were never sent, and go out once after.
    let mut h = h.restart();
    h.attach(1, "s", "q", "a", None);
    assert_eq!(offsets(&h.deliveries()), vec![0, 1, 2]);
    let mut h = h.restart();
    h.attach(1, "s", "q", "a", None);
    assert!(h.deliveries().is_empty(), "delivered once: never again");
}

#[test]
fn a_reset_voids_at_most_once_deliveries_still_waiting_for_their_save() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("s"));
    cfg.delivery = DeliverySemantics::AtMostOnce;
    h.create(cfg);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.append_n("s", 3);
    h.hold_storage = true;
    h.attach(1, "s", "q", "a", None);
    let reset = h.send(
        1,
        Command::ResetSubscription {
            stream: s("s"),
            subscription: sub("q"),
            consumer: None,
            to: StartPosition::Beginning,
        },
    );
    h.hold_storage = false;
    while !h.held.is_empty() {
        h.complete(0, None);
    }
    assert_eq!(h.reply(reset), Some(Ok(Reply::Done)));
    assert_eq!(
        offsets(&h.deliveries()),
        vec![0, 1, 2],
        "each event once, from the reset position"
    );
}

#[test]
fn list_subscriptions_gives_a_streams_subscriptions_by_name_with_figures() {
    let mut h = Harness::new();
    h.create_persistent("a", 1);
    h.create_persistent("b", 1);
    h.subscribe(h.sub_config("a", "zeta", SubscriptionMode::Exclusive));
    h.subscribe(h.sub_config("a", "alpha", SubscriptionMode::Broadcast));
    h.subscribe(h.sub_config("b", "other", SubscriptionMode::Broadcast));
    h.append_n("a", 3);
    let Ok(Reply::Subscriptions(list)) = h.cmd(Command::ListSubscriptions(s("a"))) else {
        panic!("list");
    };
    let names: Vec<&str> = list.iter().map(|i| i.config.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "zeta"]);
    // The same figures as DescribeSubscription.
    assert_eq!(list[1], h.describe_sub("a", "zeta"));
    assert_eq!(list[1].figures.lag, 3);
    assert_eq!(
        h.cmd(Command::ListSubscriptions(s("missing"))),
        Err(Error::StreamNotFound(s("missing")))
    );
    let Ok(Reply::Subscriptions(none)) = h.cmd(Command::ListSubscriptions(s("b"))) else {
        panic!("list b");
    };
    assert_eq!(none.len(), 1);
}

#[test]
fn a_dead_letter_replays_into_its_source_without_the_dead_letter_headers() {
    let mut h = Harness::new();
    h.create_persistent("orders", 1);
    h.subscribe(h.sub_config("orders", "q", SubscriptionMode::Exclusive));
    h.attach(1, "orders", "q", "a", None);
    let mut e = ev("order-placed").with_key(b"k".to_vec());
    e.correlation_id = Some("corr-1".into());
    e.headers.insert("tenant".into(), "t1".into());
    h.append("orders", vec![e]).unwrap();
    h.deliveries();
    h.cmd(Command::Term {
        stream: s("orders"),
        subscription: sub("q"),
        consumer: c("a"),
        positions: vec![pos(0, 0)],
        reason: "poison".into(),
    })
    .unwrap();
    let dl = h.read("orders.dlq", 0, 0, 10).unwrap();
    let (target, again) = dl[0].dead_letter_replay().expect("a dead letter");
    assert_eq!(target, s("orders"));
    assert_eq!(again.event_type, "order-placed");
    assert_eq!(again.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(again.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(again.headers.get("tenant").map(String::as_str), Some("t1"));
    assert_eq!(again.headers["x-replayed-from"], "orders.dlq/0/0");
    for dh in DEAD_LETTER_HEADERS {
        assert!(!again.headers.contains_key(*dh), "{dh} kept");
    }
    // Deterministic id: the same dead letter replayed twice is one event in the source.
    assert_eq!(
        dl[0].dead_letter_replay().unwrap().1.event_id,
        again.event_id
    );
    assert_ne!(again.event_id, Some(dl[0].event_id));
    let first = h.append("orders", vec![again.clone()]).unwrap();
    assert!(matches!(first[0], AppendOutcome::Appended(p) if p == pos(0, 1)));
    let second = h.append("orders", vec![again]).unwrap();
    assert!(matches!(second[0], AppendOutcome::Duplicate { .. }));
    // An event of an ordinary stream is not a dead letter.
    let plain = h.read("orders", 0, 0, 1).unwrap();
    assert!(plain[0].dead_letter_replay().is_err());
}

#[test]
fn only_the_consumer_an_event_is_in_flight_to_may_nack_or_term_it() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", Some(1));
    h.attach(2, "s", "q", "b", Some(1));
    h.append_n("s", 3);
    let d = h.deliveries();
    let held_by = |who: &str| d.iter().find(|x| x.0 == who).map(|x| x.1).unwrap();
    let (of_a, of_b) = (held_by("a"), held_by("b"));
    let refused = Err(Error::NotHolder {
        consumer: c("b"),
        partition: of_a.partition,
        offset: of_a.offset,
        holder: c("a"),
    });
    // b names a's event, alone or beside its own: refused whole, nothing changes.
    assert_eq!(
        h.nack(2, "s", "q", "b", vec![of_b, of_a], None),
        refused.clone()
    );
    let term = |positions| Command::Term {
        stream: s("s"),
        subscription: sub("q"),
        consumer: c("b"),
        positions,
        reason: "not mine".into(),
    };
    assert_eq!(h.cmd_on(2, term(vec![of_a])), refused);
    // a's credit was not returned: nothing more is delivered to a, nor redelivered to b.
    assert!(h.deliveries().is_empty());
    assert!(
        h.read("s.dlq", 0, 0, 10)
            .is_err_and(|e| matches!(e, Error::StreamNotFound(_)))
    );
    // The holder may; so may b for its own event.
    assert_eq!(
        h.nack(1, "s", "q", "a", vec![of_a], Some(Duration::ZERO)),
        Ok(settled(vec![of_a], vec![]))
    );
    assert_eq!(
        h.cmd_on(2, term(vec![of_b])),
        Ok(settled(vec![of_b], vec![]))
    );
    // Settled already: a second term, and a nack of what waits for its redelivery.
    assert_eq!(
        h.cmd_on(2, term(vec![of_b])),
        Ok(settled(vec![], vec![(of_b, SkipReason::AlreadySettled)]))
    );
    assert_eq!(
        h.nack(1, "s", "q", "a", vec![pos(0, 99)], None),
        Ok(settled(
            vec![],
            vec![(pos(0, 99), SkipReason::NotDelivered)]
        ))
    );
}
