//! Removing one consumer's position (`RemoveConsumer`) from broadcast and read receipt
//! subscriptions: refusals, what goes (position, pending events, receipts), durability through
//! a restart, the order of the removal after saves in flight, and free slots taken again.

mod common;
use common::*;
use tributary_core::*;

fn remove(h: &mut Harness, name: &str, consumer: &str) -> Result<Reply, Error> {
    h.cmd(remove_cmd(name, consumer))
}

fn remove_cmd(name: &str, consumer: &str) -> Command {
    Command::RemoveConsumer {
        stream: s("s"),
        subscription: sub(name),
        consumer: c(consumer),
    }
}

fn detach(h: &mut Harness, conn: u64, name: &str, consumer: &str) {
    let r = h.cmd_on(
        conn,
        Command::Detach {
            stream: s("s"),
            subscription: sub(name),
            consumer: c(consumer),
        },
    );
    assert_eq!(r, Ok(Reply::Done));
}

/// The consumers with a position, in the description's order.
fn positions_of(h: &mut Harness, name: &str) -> Vec<(String, u64)> {
    h.describe_sub("s", name)
        .cursors
        .iter()
        .map(|c| (c.consumer.as_ref().unwrap().to_string(), c.floors[0]))
        .collect()
}

fn removed_notices(h: &mut Harness) -> Vec<(String, bool)> {
    h.notices()
        .into_iter()
        .filter_map(|n| match n {
            Notice::ConsumerRemoved {
                consumer, expired, ..
            } => Some((consumer.to_string(), expired)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_detached_broadcast_consumer_is_removed_for_good() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "b", SubscriptionMode::Broadcast));
    h.attach(1, "s", "b", "x", None);
    h.attach(2, "s", "b", "y", None);
    h.append_n("s", 3);
    h.deliveries();
    h.ack(1, "s", "b", "x", vec![pos(0, 0), pos(0, 1), pos(0, 2)])
        .unwrap();
    h.ack(2, "s", "b", "y", vec![pos(0, 0)]).unwrap();
    assert_eq!(
        positions_of(&mut h, "b"),
        vec![("x".into(), 3), ("y".into(), 1)]
    );
    assert_eq!(h.describe_sub("s", "b").figures.lag, 2, "y lags");

    // Refusals change nothing.
    assert_eq!(
        remove(&mut h, "b", "y"),
        Err(Error::ConsumerAttached(c("y")))
    );
    assert!(matches!(
        remove(&mut h, "b", "ghost"),
        Err(Error::ConsumerNotFound { .. })
    ));
    assert!(matches!(
        remove(&mut h, "nope", "y"),
        Err(Error::SubscriptionNotFound { .. })
    ));
    for mode in [SubscriptionMode::Exclusive, SubscriptionMode::ConsumerGroup] {
        let name = format!("{mode:?}").to_lowercase();
        h.subscribe(h.sub_config("s", &name, mode));
        let r = remove(&mut h, &name, "x");
        assert!(
            matches!(
                r,
                Err(Error::Invalid(InvalidInput::Conflict {
                    field: "consumer",
                    ..
                }))
            ),
            "{mode:?}: {r:?}"
        );
    }
    assert_eq!(
        positions_of(&mut h, "b"),
        vec![("x".into(), 3), ("y".into(), 1)]
    );

    // Detached, it is removed: its position no longer counts, in memory or in the store.
    detach(&mut h, 2, "b", "y");
    h.notices();
    assert_eq!(remove(&mut h, "b", "y"), Ok(Reply::Done));
    assert_eq!(removed_notices(&mut h), vec![("y".into(), false)]);
    assert_eq!(positions_of(&mut h, "b"), vec![("x".into(), 3)]);
    assert_eq!(h.describe_sub("s", "b").figures.lag, 0, "nothing lags now");
    assert!(
        h.store
            .cursors()
            .iter()
            .all(|r| r.consumer.as_ref() != Some(&c("y"))),
        "{:?}",
        h.store.cursors()
    );
    assert!(matches!(
        remove(&mut h, "b", "y"),
        Err(Error::ConsumerNotFound { .. })
    ));

    // It does not come back after a restart; attaching again starts afresh at the start.
    let mut h = h.restart();
    assert_eq!(positions_of(&mut h, "b"), vec![("x".into(), 3)]);
    h.attach(3, "s", "b", "y", None);
    let again: Vec<u64> = h.deliveries().iter().map(|d| d.1.offset).collect();
    assert_eq!(again, vec![0, 1, 2]);
    assert_eq!(
        positions_of(&mut h, "b"),
        vec![("x".into(), 3), ("y".into(), 0)]
    );
}

#[test]
fn what_was_pending_goes_and_the_free_slot_is_taken_again() {
    let mut h = Harness::new();
    h.create_persistent("s", 2);
    h.subscribe(h.sub_config("s", "b", SubscriptionMode::Broadcast));
    h.attach(1, "s", "b", "x", None);
    h.attach(2, "s", "b", "y", None);
    h.append_n("s", 6);
    h.deliveries();
    h.ack(1, "s", "b", "x", vec![pos(0, 0)]).unwrap();
    // y's events were in flight (ack wait timers): detached they wait, ready; removed they go.
    h.cmd_on(
        2,
        Command::Nack {
            stream: s("s"),
            subscription: sub("b"),
            consumer: c("y"),
            positions: vec![pos(0, 0)],
            delay: Some(std::time::Duration::from_secs(60)),
            error: "later".into(),
        },
    )
    .unwrap();
    detach(&mut h, 2, "b", "y");
    let timers = h.engine.timer_count();
    assert_eq!(remove(&mut h, "b", "y"), Ok(Reply::Done));
    assert_eq!(
        h.engine.timer_count(),
        timers - 1,
        "y's redelivery timer is gone"
    );
    // A new consumer takes y's slot; x's position is untouched, and each gets its own events.
    h.attach(3, "s", "b", "z", None);
    let d = h.deliveries();
    assert_eq!(d.len(), 6, "{d:?}");
    assert!(d.iter().all(|x| x.0 == "z"));
    let acked: Vec<Position> = d.iter().map(|x| x.1).collect();
    assert_eq!(
        h.ack(3, "s", "b", "z", acked.clone()),
        Ok(settled(acked, vec![]))
    );
    let info = h.describe_sub("s", "b");
    let view: Vec<(String, Vec<u64>)> = info
        .cursors
        .iter()
        .map(|c| (c.consumer.as_ref().unwrap().to_string(), c.floors.clone()))
        .collect();
    assert_eq!(
        view,
        vec![("x".into(), vec![1, 0]), ("z".into(), vec![3, 3])]
    );
    let mut h = h.restart();
    assert_eq!(
        h.describe_sub("s", "b")
            .cursors
            .iter()
            .map(|c| c.consumer.as_ref().unwrap().to_string())
            .collect::<Vec<_>>(),
        vec!["x", "z"]
    );
}

#[test]
fn the_removal_waits_for_saves_in_flight_so_none_lands_after_it() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "b", SubscriptionMode::Broadcast));
    h.attach(2, "s", "b", "y", None);
    h.append_n("s", 2);
    h.deliveries();
    h.hold_storage = true;
    let ack = h.send(
        2,
        Command::Ack {
            stream: s("s"),
            subscription: sub("b"),
            consumer: c("y"),
            positions: vec![pos(0, 0)],
        },
    );
    assert!(
        matches!(h.held.back(), Some((_, StorageRequest::SaveCursor(_)))),
        "{:?}",
        h.held
    );
    detach(&mut h, 2, "b", "y");
    let rm = h.send(1, remove_cmd("b", "y"));
    assert!(h.reply(rm).is_none(), "answered once the records are gone");
    assert!(
        !h.held
            .iter()
            .any(|(_, r)| matches!(r, StorageRequest::DeleteCursor { .. })),
        "no delete while a save of the cursor is in flight: {:?}",
        h.held
    );
    // The save lands, then the delete goes.
    h.complete(0, None);
    assert_eq!(h.reply(ack), Some(Ok(settled(vec![pos(0, 0)], vec![]))));
    let i = h
        .held
        .iter()
        .position(|(_, r)| matches!(r, StorageRequest::DeleteCursor { .. }))
        .expect("the delete, once the save is done");
    // A failed delete is tried again; the answer waits for it.
    h.complete(
        i,
        Some(StorageResult::Err(StorageError::Unavailable("down".into()))),
    );
    assert!(h.reply(rm).is_none());
    h.hold_storage = false;
    h.advance(std::time::Duration::from_secs(10));
    h.pump();
    while !h.held.is_empty() {
        h.complete(0, None);
    }
    assert_eq!(h.reply(rm), Some(Ok(Reply::Done)));
    assert!(h.store.cursors().is_empty(), "{:?}", h.store.cursors());
    // Attaching while it was being removed was refused; now it is a new consumer.
    h.attach(3, "s", "b", "y", None);
    let again: Vec<u64> = h.deliveries().iter().map(|d| d.1.offset).collect();
    assert_eq!(again, vec![0, 1]);
}

#[test]
fn attaching_or_removing_again_during_a_removal_is_refused() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "b", SubscriptionMode::Broadcast));
    h.attach(2, "s", "b", "y", None);
    detach(&mut h, 2, "b", "y");
    h.hold_storage = true;
    let rm = h.send(1, remove_cmd("b", "y"));
    assert!(h.reply(rm).is_none());
    assert_eq!(
        h.cmd_on(
            3,
            Command::Attach {
                stream: s("s"),
                subscription: sub("b"),
                consumer: c("y"),
                max_in_flight: None,
            }
        ),
        Err(Error::ConsumerRemoving(c("y")))
    );
    assert_eq!(
        remove(&mut h, "b", "y"),
        Err(Error::ConsumerRemoving(c("y")))
    );
    assert!(matches!(
        h.cmd(Command::ResetSubscription {
            stream: s("s"),
            subscription: sub("b"),
            consumer: Some(c("y")),
            to: StartPosition::Beginning,
        }),
        Err(Error::ConsumerRemoving(_))
    ));
    // Deleting the subscription meanwhile answers the removal: the position is gone.
    h.hold_storage = false;
    let del = h.send(
        1,
        Command::DeleteSubscription {
            stream: s("s"),
            subscription: sub("b"),
        },
    );
    while !h.held.is_empty() {
        h.complete(0, None);
    }
    assert_eq!(h.reply(del), Some(Ok(Reply::Done)));
    assert_eq!(h.reply(rm), Some(Ok(Reply::Done)));
}

#[test]
fn a_read_receipt_consumer_goes_with_its_receipts() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let mut cfg = h.sub_config("s", "r", SubscriptionMode::ReadReceipt);
    cfg.unread_timeout = Some(std::time::Duration::from_secs(60));
    h.subscribe(cfg);
    h.attach(2, "s", "r", "y", None);
    h.append_n("s", 2);
    h.deliveries();
    h.ack(2, "s", "r", "y", vec![pos(0, 0), pos(0, 1)]).unwrap();
    let receipts = |h: &mut Harness| match h.store.execute(&StorageRequest::LoadReceipts {
        sub: SubId(1),
        after: None,
        limit: 100,
    }) {
        StorageResult::Ok(StorageReply::Receipts(r)) => r.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(receipts(&mut h), 2);
    detach(&mut h, 2, "r", "y");
    let timers = h.engine.timer_count();
    assert_eq!(remove(&mut h, "r", "y"), Ok(Reply::Done));
    assert_eq!(receipts(&mut h), 0, "its receipts are gone from the store");
    assert_eq!(
        h.engine.timer_count(),
        timers - 2,
        "and their unread timeouts"
    );
    // Stored receipts would bring a cursor back at recovery: none does.
    let mut h = h.restart();
    assert!(h.describe_sub("s", "r").cursors.is_empty());
    h.advance(std::time::Duration::from_secs(120));
    assert!(
        h.notices()
            .iter()
            .all(|n| !matches!(n, Notice::UnreadTimeout { .. }))
    );
}

#[test]
fn an_ephemeral_stream_frees_at_once_and_trims_what_only_the_removed_consumer_held() {
    let mut h = Harness::new();
    h.create(StreamConfig::ephemeral(
        s("s"),
        3,
        1 << 20,
        Overflow::Reject,
    ));
    h.subscribe(h.sub_config("s", "b", SubscriptionMode::Broadcast));
    h.attach(1, "s", "b", "x", None);
    h.attach(2, "s", "b", "y", None);
    h.append_n("s", 3);
    h.deliveries();
    h.ack(1, "s", "b", "x", vec![pos(0, 0), pos(0, 1), pos(0, 2)])
        .unwrap();
    // y holds every event: the stream is full.
    assert!(matches!(
        h.append("s", vec![ev("t")]),
        Err(Error::StreamFull { .. })
    ));
    detach(&mut h, 2, "b", "y");
    assert_eq!(remove(&mut h, "b", "y"), Ok(Reply::Done));
    assert!(
        h.append("s", vec![ev("t")]).is_ok(),
        "room once y's position is gone"
    );
}

// ---- consumer_expiry --------------------------------------------------------------------------

fn expiring(h: &Harness, name: &str, after: Option<u64>) -> SubscriptionConfig {
    let mut cfg = h.sub_config("s", name, SubscriptionMode::Broadcast);
    cfg.consumer_expiry = after.map(std::time::Duration::from_secs);
    cfg
}

fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n)
}

#[test]
fn a_consumer_detached_longer_than_its_expiry_loses_its_position() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(expiring(&h, "b", Some(60)));
    h.attach(1, "s", "b", "x", None);
    h.attach(2, "s", "b", "y", None);
    h.append_n("s", 3);
    h.deliveries();
    h.ack(1, "s", "b", "x", vec![pos(0, 0), pos(0, 1), pos(0, 2)])
        .unwrap();
    h.ack(2, "s", "b", "y", vec![pos(0, 0)]).unwrap();
    detach(&mut h, 2, "b", "y");
    h.notices();
    // Attached again within the expiry, then detached: the time counts from the new detach.
    h.advance(secs(30));
    h.attach(3, "s", "b", "y", None);
    h.deliveries();
    h.advance(secs(40));
    detach(&mut h, 3, "b", "y");
    h.advance(secs(59));
    assert_eq!(
        positions_of(&mut h, "b"),
        vec![("x".into(), 3), ("y".into(), 1)],
        "59 s after its last detach"
    );
    assert!(removed_notices(&mut h).is_empty());
    h.advance(secs(2));
    assert_eq!(removed_notices(&mut h), vec![("y".into(), true)]);
    assert_eq!(
        positions_of(&mut h, "b"),
        vec![("x".into(), 3)],
        "x stays attached: it never expires"
    );
    assert!(
        h.store
            .cursors()
            .iter()
            .all(|r| r.consumer.as_ref() != Some(&c("y"))),
        "{:?}",
        h.store.cursors()
    );
    // Its timer is gone; x's detach arms its own.
    let timers = h.engine.timer_count();
    detach(&mut h, 1, "b", "x");
    assert_eq!(h.engine.timer_count(), timers + 1);
    h.advance(secs(61));
    assert_eq!(removed_notices(&mut h), vec![("x".into(), true)]);
    assert!(h.describe_sub("s", "b").cursors.is_empty());
}

#[test]
fn after_a_restart_the_expiry_counts_from_the_start() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(expiring(&h, "b", Some(60)));
    h.attach(2, "s", "b", "y", None);
    h.append_n("s", 2);
    h.deliveries();
    h.ack(2, "s", "b", "y", vec![pos(0, 0)]).unwrap();
    let mut h = h.restart();
    assert_eq!(positions_of(&mut h, "b"), vec![("y".into(), 1)]);
    h.advance(secs(59));
    assert_eq!(positions_of(&mut h, "b"), vec![("y".into(), 1)]);
    h.advance(secs(2));
    assert_eq!(removed_notices(&mut h), vec![("y".into(), true)]);
    let mut h = h.restart();
    assert!(
        h.describe_sub("s", "b").cursors.is_empty(),
        "expired for good"
    );
}

#[test]
fn the_engine_default_applies_unless_the_subscription_says_otherwise() {
    let config = Config {
        default_consumer_expiry: Some(secs(10)),
        ..no_linger()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.subscribe(expiring(&h, "default", None));
    h.subscribe(expiring(&h, "never", Some(0)));
    h.subscribe(expiring(&h, "longer", Some(100)));
    let mut r = h.sub_config("s", "receipts", SubscriptionMode::ReadReceipt);
    r.consumer_expiry = None;
    h.subscribe(r);
    for name in ["default", "never", "longer", "receipts"] {
        h.attach(2, "s", name, "y", None);
        detach(&mut h, 2, name, "y");
    }
    h.notices();
    h.advance(secs(11));
    let mut gone = removed_notices(&mut h);
    gone.sort();
    assert_eq!(gone, vec![("y".into(), true), ("y".into(), true)]);
    for (name, left) in [("default", 0), ("never", 1), ("longer", 1), ("receipts", 0)] {
        assert_eq!(h.describe_sub("s", name).cursors.len(), left, "{name}");
    }
    h.advance(secs(90));
    assert_eq!(h.describe_sub("s", "longer").cursors.len(), 0);
    assert_eq!(h.describe_sub("s", "never").cursors.len(), 1);
}

#[test]
fn consumer_expiry_is_refused_where_there_is_no_position_per_consumer() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    for mode in [SubscriptionMode::Exclusive, SubscriptionMode::ConsumerGroup] {
        let mut cfg = h.sub_config("s", "q", mode);
        cfg.consumer_expiry = Some(secs(60));
        assert_eq!(
            h.cmd(Command::CreateSubscription(cfg)),
            Err(Error::Invalid(InvalidInput::Conflict {
                field: "consumer_expiry",
                reason: "only broadcast and read receipt subscriptions keep a position per consumer",
            })),
            "{mode:?}"
        );
    }
    // With the engine's default set, exclusive positions do not expire.
    let config = Config {
        default_consumer_expiry: Some(secs(1)),
        ..no_linger()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(2, "s", "q", "w", None);
    h.append_n("s", 1);
    h.deliveries();
    h.ack(2, "s", "q", "w", vec![pos(0, 0)]).unwrap();
    detach(&mut h, 2, "q", "w");
    h.advance(secs(5));
    assert_eq!(h.describe_sub("s", "q").cursors[0].floors, vec![1]);
}
