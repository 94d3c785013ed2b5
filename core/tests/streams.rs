//! Streams and appends (SPEC 1, 2): validation, creation, partitions, offsets, timestamps,
//! optimistic concurrency, reads, ephemeral bounds, and the storage pipeline.

mod common;
use common::*;
use std::time::Duration;
use tributary_core::*;

#[test]
fn create_describe_list_delete() {
    let mut h = Harness::new();
    h.create_persistent("orders", 3);
    assert_eq!(
        h.cmd(Command::CreateStream(StreamConfig::persistent(s("orders")))),
        Err(Error::StreamExists(s("orders")))
    );
    let info = h.describe("orders");
    assert_eq!(info.partitions.len(), 3);
    assert_eq!(info.length(), 0);
    h.create(StreamConfig::ephemeral(
        s("ticks"),
        10,
        1000,
        Overflow::Reject,
    ));
    let Ok(Reply::Streams(list)) = h.cmd(Command::ListStreams) else {
        panic!()
    };
    let names: Vec<_> = list.iter().map(|i| i.config.name.to_string()).collect();
    assert_eq!(names, vec!["orders", "ticks"]);
    assert_eq!(h.cmd(Command::DeleteStream(s("orders"))), Ok(Reply::Done));
    assert_eq!(
        h.cmd(Command::DescribeStream(s("orders"))),
        Err(Error::StreamNotFound(s("orders")))
    );
    assert!(!h.store.has_stream(&s("orders")));
    assert_eq!(
        h.cmd(Command::DeleteStream(s("orders"))),
        Err(Error::StreamNotFound(s("orders")))
    );
}

#[test]
fn bad_stream_configs_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    let mut c = StreamConfig::persistent(s("a"));
    c.partitions = 0;
    assert!(matches!(
        h.cmd(Command::CreateStream(c.clone())),
        Err(Error::Invalid(InvalidInput::Range {
            field: "partitions",
            ..
        }))
    ));
    c.partitions = 5000;
    assert!(matches!(
        h.cmd(Command::CreateStream(c)),
        Err(Error::Invalid(InvalidInput::Range {
            field: "partitions",
            max: 1024,
            ..
        }))
    ));
    let mut e = StreamConfig::ephemeral(s("b"), 10, 10, Overflow::Reject);
    e.partitions = 2;
    assert!(matches!(
        h.cmd(Command::CreateStream(e)),
        Err(Error::Invalid(InvalidInput::Range { .. }))
    ));
    let long = StreamConfig::persistent(s(&"x".repeat(125)));
    assert!(matches!(
        h.cmd(Command::CreateStream(long)),
        Err(Error::Invalid(InvalidInput::Length { max: 124, .. }))
    ));
    // A dead letter stream made by hand has one persistent partition, where the engine writes
    // the letters and the management API reads them.
    let mut dlq = StreamConfig::persistent(s("orders.dlq"));
    dlq.partitions = 3;
    assert!(matches!(
        h.cmd(Command::CreateStream(dlq)),
        Err(Error::Invalid(InvalidInput::Range {
            field: "partitions (a dead letter stream <stream>.dlq has one)",
            value: 3,
            max: 1,
            ..
        }))
    ));
    let dlq = StreamConfig::ephemeral(s("orders.dlq"), 10, 10, Overflow::Reject);
    assert!(matches!(
        h.cmd(Command::CreateStream(dlq)),
        Err(Error::Invalid(InvalidInput::Conflict { field: "kind", .. }))
    ));
    let Ok(Reply::Streams(list)) = h.cmd(Command::ListStreams) else {
        panic!()
    };
    assert!(list.is_empty());
    assert_eq!(
        h.cmd(Command::CreateStream(StreamConfig::persistent(s(
            "orders.dlq"
        )))),
        Ok(Reply::Done)
    );
}

#[test]
fn appends_get_dense_offsets_and_are_readable() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let out = h.append_n("s", 3);
    assert_eq!(
        out,
        (0..3)
            .map(|o| AppendOutcome::Appended(pos(0, o)))
            .collect::<Vec<_>>()
    );
    let out = h.append_n("s", 2);
    assert_eq!(
        out,
        vec![
            AppendOutcome::Appended(pos(0, 3)),
            AppendOutcome::Appended(pos(0, 4))
        ]
    );
    let events = h.read("s", 0, 0, 100).unwrap();
    assert_eq!(
        events.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(events[1].event_type, "t1");
    assert_eq!(events[0].stream, s("s"));
    let stored = h.store.events(&s("s"), 0);
    assert_eq!(stored.len(), 5);
    let info = h.describe("s");
    assert_eq!(
        (
            info.partitions[0].first,
            info.partitions[0].next,
            info.length()
        ),
        (0, 5, 5)
    );
}

#[test]
fn bad_appends_are_refused_with_the_field_and_limit_and_write_nothing() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let cases: Vec<(Vec<NewEvent>, &str)> = vec![
        (vec![], "events"),
        (vec![ev("t"); 1001], "events"),
        (vec![NewEvent::new("", vec![])], "event_type"),
        (
            vec![ev("t"), NewEvent::new("t", vec![0u8; (1 << 20) + 1])],
            "payload",
        ),
        (vec![ev("t").with_key(vec![1u8; 1025])], "key"),
    ];
    for (events, field) in cases {
        let r = h.append("s", events);
        match r {
            Err(Error::Invalid(InvalidInput::Length { field: f, .. })) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(h.describe("s").length(), 0);
    assert!(h.store.events(&s("s"), 0).is_empty());
    assert_eq!(
        h.append("nope", vec![ev("t")]),
        Err(Error::StreamNotFound(s("nope")))
    );
}

#[test]
fn keys_pick_stable_partitions_and_keyless_events_spread() {
    let mut h = Harness::new();
    h.create_persistent("s", 4);
    let keyed: Vec<NewEvent> = (0..40)
        .map(|i| ev("t").with_key(format!("k{}", i % 5).into_bytes()))
        .collect();
    let out = h.append("s", keyed.clone()).unwrap();
    for (e, o) in keyed.iter().zip(&out) {
        let AppendOutcome::Appended(p) = o else {
            panic!()
        };
        assert_eq!(p.partition, partition_of_key(e.key.as_ref().unwrap(), 4));
    }
    // The hash is fixed: a known key always lands on the same partition.
    assert_eq!(
        partition_of_key(b"customer-42", 4),
        partition_of_key(b"customer-42", 4)
    );
    assert_eq!(
        partition_of_key(b"k0", 7),
        (xxhash_rust::xxh3::xxh3_64(b"k0") % 7) as u32,
        "documented: xxh3-64, seed 0, modulo"
    );
    let out = h.append_n("s", 8);
    let mut per = [0; 4];
    for o in out {
        let AppendOutcome::Appended(p) = o else {
            panic!()
        };
        per[p.partition as usize] += 1;
    }
    assert_eq!(per, [2, 2, 2, 2], "keyless events go round-robin");
}

#[test]
fn the_append_is_answered_only_when_the_store_commits() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let req = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("a")],
            expected_offset: None,
        }),
    );
    assert_eq!(h.held.len(), 1);
    assert!(
        h.reply(req).is_none(),
        "no reply before the store committed"
    );
    assert_eq!(h.describe("s").length(), 0, "the head moves only on commit");
    h.hold_storage = false;
    h.complete(0, None);
    assert_eq!(
        h.reply(req),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
            0, 0
        ))])))
    );
    assert_eq!(h.describe("s").length(), 1);
}

#[test]
fn appends_in_flight_together_share_one_write_and_a_failed_write_leaves_no_hole() {
    let mut h = Harness::with(one_write(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let a = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("a")],
            expected_offset: None,
        }),
    );
    let b = h.send(
        2,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("b")],
            expected_offset: None,
        }),
    );
    let c = h.send(
        3,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("c"), ev("d")],
            expected_offset: None,
        }),
    );
    assert_eq!(h.held.len(), 1, "one write in flight per stream");
    // The first write fails: its producer is told, nothing is written.
    h.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable("disk".into()))),
    );
    assert!(matches!(h.reply(a), Some(Err(Error::Unavailable(_)))));
    // The two queued requests go out together, from offset 0 again.
    assert_eq!(h.held.len(), 1);
    let StorageRequest::Append(w) = &h.held[0].1 else {
        panic!()
    };
    assert_eq!(
        w.events.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    h.complete(0, None);
    assert_eq!(
        h.reply(b),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
            0, 0
        ))])))
    );
    assert_eq!(
        h.reply(c),
        Some(Ok(Reply::Appended(vec![
            AppendOutcome::Appended(pos(0, 1)),
            AppendOutcome::Appended(pos(0, 2))
        ])))
    );
    let stored: Vec<String> = h
        .store
        .events(&s("s"), 0)
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    assert_eq!(stored, vec!["b", "c", "d"]);
}

#[test]
fn expected_offset_is_checked_and_a_mismatch_writes_nothing() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.append_n("s", 2);
    let r = h.cmd(Command::Append(AppendRequest {
        stream: s("s"),
        events: vec![ev("x")],
        expected_offset: Some(1),
    }));
    assert_eq!(
        r,
        Err(Error::WrongExpectedOffset {
            partition: 0,
            expected: 1,
            actual: 2
        })
    );
    assert_eq!(h.describe("s").length(), 2);
    let r = h.cmd(Command::Append(AppendRequest {
        stream: s("s"),
        events: vec![ev("x")],
        expected_offset: Some(2),
    }));
    assert_eq!(
        r,
        Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(0, 2))]))
    );
    // Several partitions: the batch must map to one partition through its keys.
    h.create_persistent("m", 4);
    let r = h.cmd(Command::Append(AppendRequest {
        stream: s("m"),
        events: vec![ev("x")],
        expected_offset: Some(0),
    }));
    assert!(matches!(
        r,
        Err(Error::Invalid(InvalidInput::Conflict {
            field: "expected_offset",
            ..
        }))
    ));
    let k = b"key-1".to_vec();
    let p = partition_of_key(&k, 4);
    let r = h.cmd(Command::Append(AppendRequest {
        stream: s("m"),
        events: vec![ev("x").with_key(k.clone()), ev("y").with_key(k)],
        expected_offset: Some(0),
    }));
    assert_eq!(
        r,
        Ok(Reply::Appended(vec![
            AppendOutcome::Appended(pos(p, 0)),
            AppendOutcome::Appended(pos(p, 1))
        ]))
    );
}

#[test]
fn timestamps_come_from_now_and_never_go_back_within_a_partition() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.set_wall(T0 + 5000);
    h.append_n("s", 1);
    h.set_wall(T0 + 1000); // the wall clock steps back
    h.append_n("s", 1);
    h.set_wall(T0 + 9000);
    h.append_n("s", 1);
    let ts: Vec<u64> = h
        .read("s", 0, 0, 10)
        .unwrap()
        .iter()
        .map(|e| e.timestamp.0)
        .collect();
    assert_eq!(ts, vec![T0 + 5000, T0 + 5000, T0 + 9000]);
}

#[test]
fn reads_check_their_range() {
    let mut h = Harness::new();
    h.create_persistent("s", 2);
    h.append_n("s", 4);
    assert!(matches!(
        h.read("s", 2, 0, 10),
        Err(Error::Invalid(InvalidInput::Range {
            field: "partition",
            max: 1,
            ..
        }))
    ));
    assert!(matches!(
        h.read("s", 0, 0, 0),
        Err(Error::Invalid(InvalidInput::Range { field: "max", .. }))
    ));
    assert!(matches!(
        h.read("s", 0, 0, 1001),
        Err(Error::Invalid(InvalidInput::Range {
            field: "max",
            max: 1000,
            ..
        }))
    ));
    assert!(matches!(
        h.read("s", 0, 3, 10),
        Err(Error::Invalid(InvalidInput::Range {
            field: "from",
            max: 2,
            ..
        }))
    ));
    assert_eq!(
        h.read("s", 0, 2, 10).unwrap().len(),
        0,
        "reading at the head gives an empty page"
    );
    assert_eq!(
        h.read("s", 0, 1, 1)
            .unwrap()
            .iter()
            .map(|e| e.offset)
            .collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn reads_below_the_tail_cache_go_to_the_store() {
    let config = Config {
        tail_cache_events: 2,
        ..no_linger()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 1);
    h.create_persistent("s", 1);
    h.append_n("s", 10);
    h.hold_storage = true;
    let req = h.send(
        1,
        Command::Read {
            stream: s("s"),
            partition: 0,
            from: 1,
            max: 3,
        },
    );
    assert_eq!(h.held.len(), 1, "offset 1 is not cached");
    h.complete(0, None);
    let Some(Ok(Reply::Events(e))) = h.reply(req) else {
        panic!()
    };
    assert_eq!(
        e.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let req = h.send(
        1,
        Command::Read {
            stream: s("s"),
            partition: 0,
            from: 8,
            max: 3,
        },
    );
    assert!(h.held.is_empty(), "the tail is served from memory");
    let Some(Ok(Reply::Events(e))) = h.reply(req) else {
        panic!()
    };
    assert_eq!(e.len(), 2);
    // A read the store fails is answered Unavailable.
    let req = h.send(
        1,
        Command::Read {
            stream: s("s"),
            partition: 0,
            from: 0,
            max: 3,
        },
    );
    h.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable("down".into()))),
    );
    assert!(matches!(h.reply(req), Some(Err(Error::Unavailable(_)))));
}

#[test]
fn ephemeral_reject_overflow_refuses_whole_appends() {
    let mut h = Harness::new();
    h.create(StreamConfig::ephemeral(
        s("e"),
        3,
        1 << 20,
        Overflow::Reject,
    ));
    h.subscribe(h.sub_config("e", "keep", SubscriptionMode::Exclusive));
    h.append_n("e", 2);
    let r = h.append("e", vec![ev("a"), ev("b")]);
    assert_eq!(
        r,
        Err(Error::StreamFull {
            stream: s("e"),
            limit: "max_events 3".into()
        })
    );
    assert_eq!(h.describe("e").length(), 2);
    h.append_n("e", 1);
    assert_eq!(h.describe("e").length(), 3);
    // Bytes too.
    h.create(StreamConfig::ephemeral(s("b"), 100, 10, Overflow::Reject));
    h.subscribe(h.sub_config("b", "keep", SubscriptionMode::Exclusive));
    assert!(
        h.append("b", vec![NewEvent::new("t", vec![0u8; 8])])
            .is_ok()
    );
    assert_eq!(
        h.append("b", vec![NewEvent::new("t", vec![0u8; 3])]),
        Err(Error::StreamFull {
            stream: s("b"),
            limit: "max_bytes 10".into()
        })
    );
}

#[test]
fn ephemeral_drop_oldest_makes_room() {
    let mut h = Harness::new();
    h.create(StreamConfig::ephemeral(
        s("e"),
        3,
        1 << 20,
        Overflow::DropOldest,
    ));
    h.subscribe(h.sub_config("e", "keep", SubscriptionMode::Exclusive));
    h.append_n("e", 3);
    assert!(h.notices().is_empty());
    h.append_n("e", 2);
    let info = h.describe("e");
    assert_eq!((info.partitions[0].first, info.partitions[0].next), (2, 5));
    assert_eq!(
        h.notices(),
        vec![Notice::Dropped {
            stream: s("e"),
            count: 2
        }]
    );
    assert_eq!(
        h.read("e", 0, 0, 10),
        Err(Error::Truncated { first_available: 2 })
    );
    // The subscription, which never saw 0 and 1, starts at what is left.
    h.attach(1, "e", "keep", "w", None);
    let got: Vec<u64> = h.deliveries().iter().map(|d| d.1.offset).collect();
    assert_eq!(got, vec![2, 3, 4]);
    // A batch larger than the stream can never fit.
    assert!(matches!(
        h.append("e", vec![ev("a"); 4]),
        Err(Error::StreamFull { .. })
    ));
}

#[test]
fn ephemeral_events_leave_once_every_subscription_acknowledged_them() {
    let mut h = Harness::new();
    h.create(StreamConfig::ephemeral(
        s("e"),
        100,
        1 << 20,
        Overflow::Reject,
    ));
    h.subscribe(h.sub_config("e", "a", SubscriptionMode::Exclusive));
    h.subscribe(h.sub_config("e", "b", SubscriptionMode::Exclusive));
    h.append_n("e", 3);
    h.attach(1, "e", "a", "w1", None);
    h.attach(2, "e", "b", "w2", None);
    h.deliveries();
    h.ack(1, "e", "a", "w1", vec![pos(0, 0), pos(0, 1), pos(0, 2)])
        .unwrap();
    assert_eq!(h.describe("e").length(), 3, "b has not acknowledged yet");
    h.ack(2, "e", "b", "w2", vec![pos(0, 0), pos(0, 1)])
        .unwrap();
    let info = h.describe("e");
    assert_eq!((info.partitions[0].first, info.length()), (2, 1));
    // A subscription created later does not hold events appended before it existed.
    h.append_n("e", 1);
    h.subscribe(h.sub_config("e", "late", SubscriptionMode::Exclusive));
    h.ack(2, "e", "b", "w2", vec![pos(0, 2), pos(0, 3)])
        .unwrap();
    h.deliveries();
    h.ack(1, "e", "a", "w1", vec![pos(0, 3)]).unwrap();
    assert_eq!(h.describe("e").length(), 0);
}

#[test]
fn ephemeral_at_most_once_events_leave_when_delivered() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::ephemeral(s("e"), 100, 1 << 20, Overflow::Reject);
    cfg.delivery = DeliverySemantics::AtMostOnce;
    h.create(cfg);
    h.subscribe(h.sub_config("e", "a", SubscriptionMode::Exclusive));
    h.append_n("e", 3);
    assert_eq!(h.describe("e").length(), 3);
    h.attach(1, "e", "a", "w", None);
    assert_eq!(h.deliveries().len(), 3);
    h.append_n("e", 1);
    assert_eq!(h.deliveries().len(), 1);
    assert_eq!(h.describe("e").length(), 0);
    // Nothing is in flight: at-most-once keeps no acks.
    assert_eq!(h.describe_sub("e", "a").cursors[0].pending, 0);
    h.advance(Duration::from_secs(60));
    assert!(h.deliveries().is_empty(), "no redelivery");
}

#[test]
fn ephemeral_streams_are_gone_after_a_restart() {
    let mut h = Harness::new();
    h.create(StreamConfig::ephemeral(
        s("e"),
        100,
        1 << 20,
        Overflow::Reject,
    ));
    h.create_persistent("p", 1);
    let mut h = h.restart();
    assert_eq!(
        h.cmd(Command::DescribeStream(s("e"))),
        Err(Error::StreamNotFound(s("e")))
    );
    assert_eq!(h.describe("p").partitions.len(), 1);
}

#[test]
fn deleting_a_stream_waits_for_the_write_in_flight() {
    let mut h = Harness::with(one_write(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let a = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("a")],
            expected_offset: None,
        }),
    );
    let b = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("b")],
            expected_offset: None,
        }),
    );
    let d = h.send(2, Command::DeleteStream(s("s")));
    assert_eq!(
        h.reply(b),
        Some(Err(Error::StreamNotFound(s("s")))),
        "queued appends fail at once"
    );
    assert_eq!(h.held.len(), 1, "the delete waits for the append in flight");
    assert_eq!(
        h.cmd_on(
            3,
            Command::Append(AppendRequest {
                stream: s("s"),
                events: vec![ev("c")],
                expected_offset: None
            })
        ),
        Err(Error::StreamNotFound(s("s")))
    );
    h.complete(0, None);
    assert!(matches!(h.reply(a), Some(Ok(Reply::Appended(_)))));
    assert!(matches!(h.held[0].1, StorageRequest::DeleteStream(_)));
    h.complete(0, None);
    assert_eq!(h.reply(d), Some(Ok(Reply::Done)));
    assert!(!h.store.has_stream(&s("s")));
}

#[test]
fn pending_appends_are_bounded() {
    let config = Config {
        max_pending_append_events: 3,
        ..one_write()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 1);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("a")],
            expected_offset: None,
        }),
    );
    let b = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("b"); 3],
            expected_offset: None,
        }),
    );
    let c = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("c")],
            expected_offset: None,
        }),
    );
    assert!(h.reply(b).is_none(), "3 events fit in the queue");
    assert_eq!(
        h.reply(c),
        Some(Err(Error::Busy {
            what: "appends waiting for the store",
            limit: 3
        }))
    );
}

#[test]
fn an_unknown_write_is_repeated_until_definite_and_never_doubles() {
    let mut h = Harness::with(one_write(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let a = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("a"), ev("b")],
            expected_offset: None,
        }),
    );
    // The store applies the write but the reply is lost.
    let (op, req) = h.held.pop_front().unwrap();
    assert!(matches!(h.store.execute(&req), StorageResult::Ok(_)));
    h.engine.handle_input(
        h.now,
        Input::StorageDone {
            op,
            result: StorageResult::Unknown,
        },
    );
    h.pump();
    assert!(
        h.reply(a).is_none(),
        "an unknown outcome answers nothing yet"
    );
    // A second append waits behind the uncertain one.
    let b = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("c")],
            expected_offset: None,
        }),
    );
    assert!(h.held.is_empty(), "the repeat waits for its back-off");
    h.advance(Duration::from_millis(60));
    assert_eq!(h.held.len(), 1);
    assert_eq!(h.held[0].1, req, "the repeat is the identical write");
    h.hold_storage = false;
    h.complete(0, None);
    assert_eq!(
        h.reply(a),
        Some(Ok(Reply::Appended(vec![
            AppendOutcome::Appended(pos(0, 0)),
            AppendOutcome::Appended(pos(0, 1))
        ])))
    );
    assert_eq!(
        h.reply(b),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
            0, 2
        ))])))
    );
    let stored: Vec<String> = h
        .store
        .events(&s("s"), 0)
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    assert_eq!(stored, vec!["a", "b", "c"]);
}

#[test]
fn an_unknown_write_that_did_not_happen_is_written_by_the_repeat() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let a = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("a")],
            expected_offset: None,
        }),
    );
    h.complete(0, Some(StorageResult::Unknown));
    h.advance(Duration::from_millis(60));
    // The repeat fails too: still uncertain, so it is repeated again rather than reported.
    h.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable("down".into()))),
    );
    assert!(h.reply(a).is_none());
    h.advance(Duration::from_millis(200));
    h.complete(0, None);
    assert_eq!(
        h.reply(a),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
            0, 0
        ))])))
    );
    assert_eq!(h.store.events(&s("s"), 0).len(), 1);
    let _ = h.notices();
}

/// Sends an append of one event of type `t` to stream `s` on connection 1.
fn append_one(h: &mut Harness, t: &str) -> ReqId {
    h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev(t)],
            expected_offset: None,
        }),
    )
}

#[test]
fn group_commit_waits_briefly_for_as_many_appends_as_the_last_write_had() {
    let config = Config {
        append_linger: Duration::from_millis(1),
        ..one_write()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 3);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let a = append_one(&mut h, "a");
    assert_eq!(
        h.held.len(),
        1,
        "the first write goes at once (the last write had no request)"
    );
    let (b, c) = (append_one(&mut h, "b"), append_one(&mut h, "c"));
    h.complete(0, None);
    assert!(h.reply(a).is_some());
    assert_eq!(
        h.held.len(),
        1,
        "b and c (two, at least the one request of the last write) go at once"
    );
    h.complete(0, None);
    assert!(h.reply(b).is_some() && h.reply(c).is_some());
    // The last write had two requests: one append waits for a second, within the linger.
    let d = append_one(&mut h, "d");
    assert!(h.held.is_empty(), "d waits for company");
    let e = append_one(&mut h, "e");
    assert_eq!(
        h.held.len(),
        1,
        "e makes two: the write goes without waiting for the linger"
    );
    let StorageRequest::Append(w) = &h.held[0].1 else {
        panic!()
    };
    assert_eq!(w.events.len(), 2);
    h.complete(0, None);
    assert!(h.reply(d).is_some() && h.reply(e).is_some());
    // Alone, an append waits at most the linger.
    let f = append_one(&mut h, "f");
    assert!(h.held.is_empty());
    h.advance(Duration::from_micros(999));
    assert!(h.held.is_empty());
    h.advance(Duration::from_micros(1));
    assert_eq!(
        h.held.len(),
        1,
        "the linger ran out: the write goes with what is queued"
    );
    h.complete(0, None);
    assert_eq!(
        h.reply(f),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
            0, 5
        ))])))
    );
    assert_eq!(h.engine.timer_count(), 0, "no linger timer is left behind");
}

/// With two writes allowed, producers that all waited for one write split into two groups whose
/// writes overlap: after a write of four with none other in flight, the next goes with two.
#[test]
fn group_commit_splits_the_producers_among_the_writes_of_the_pipeline() {
    let config = Config {
        append_linger: Duration::from_millis(1),
        max_append_writes_in_flight: 2,
        ..no_linger()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 3);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    // a and b fill the pipeline; c to f wait and then share one write.
    let early: Vec<ReqId> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|t| append_one(&mut h, t))
        .collect();
    assert_eq!(h.held.len(), 2, "a and b each fill a place of the pipeline");
    h.complete(0, None);
    assert_eq!(
        held_write(&h, 1).events.len(),
        4,
        "c to f share the next write"
    );
    h.complete(0, None);
    h.complete(0, None);
    assert!(early.iter().all(|r| h.reply(*r).is_some()));
    // The last write had four requests and nothing is in flight: two make the next write.
    let g = append_one(&mut h, "g");
    assert!(h.held.is_empty(), "g waits for company");
    let i = append_one(&mut h, "i");
    assert_eq!(h.held.len(), 1, "g and i go without waiting for four");
    assert_eq!(held_write(&h, 0).events.len(), 2);
    // With a write in flight, the next waits for as many as the last write had (two).
    let j = append_one(&mut h, "j");
    assert_eq!(h.held.len(), 1, "j waits for company");
    let k = append_one(&mut h, "k");
    assert_eq!(h.held.len(), 2, "j and k overlap the write of g and i");
    assert_eq!(held_write(&h, 1).events.len(), 2);
    h.complete(0, None);
    h.complete(0, None);
    assert!([g, i, j, k].iter().all(|r| h.reply(*r).is_some()));
    assert_eq!(h.engine.timer_count(), 0, "no linger timer is left behind");
}

/// Up to four writes in flight per stream, no linger.
fn pipelined() -> Config {
    Config {
        max_append_writes_in_flight: 4,
        ..no_linger()
    }
}

fn held_write(h: &Harness, i: usize) -> std::sync::Arc<AppendWrite> {
    match &h.held[i].1 {
        StorageRequest::Append(w) => w.clone(),
        other => panic!("not an append: {other:?}"),
    }
}

fn send_append(h: &mut Harness, events: Vec<NewEvent>) -> ReqId {
    h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events,
            expected_offset: None,
        }),
    )
}

#[test]
fn pipelined_writes_name_their_predecessor_and_are_answered_in_order() {
    let mut h = Harness::with(pipelined(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let reqs: Vec<ReqId> = ["a", "b", "c"]
        .iter()
        .map(|t| send_append(&mut h, vec![ev(t)]))
        .collect();
    assert_eq!(h.held.len(), 3, "three writes in flight at once");
    let w: Vec<_> = (0..3).map(|i| held_write(&h, i)).collect();
    assert_eq!(w[0].after, None);
    assert_eq!(w[1].after, Some(w[0].seq));
    assert_eq!(w[2].after, Some(w[1].seq));
    assert_eq!(
        w.iter().map(|w| w.events[0].offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // The store commits them in order; the answers arrive in reverse order.
    let done: Vec<(OpId, StorageResult)> = h
        .held
        .drain(..)
        .map(|(op, req)| (op, h.store.execute(&req)))
        .collect();
    for (op, result) in done.into_iter().rev().take(2) {
        h.engine
            .handle_input(h.now, Input::StorageDone { op, result });
    }
    h.pump();
    assert!(
        reqs.iter().all(|r| h.reply(*r).is_none()),
        "nothing is answered before the first write"
    );
    assert_eq!(h.describe("s").length(), 0);
    assert_eq!(
        h.engine.storage_in_flight(),
        1,
        "the first write is still in flight"
    );
}

#[test]
fn answers_follow_the_order_of_the_writes() {
    let mut h = Harness::with(pipelined(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let reqs: Vec<ReqId> = ["a", "b", "c"]
        .iter()
        .map(|t| send_append(&mut h, vec![ev(t)]))
        .collect();
    let done: Vec<(OpId, StorageResult)> = h
        .held
        .drain(..)
        .map(|(op, req)| (op, h.store.execute(&req)))
        .collect();
    for (op, result) in done.into_iter().rev() {
        h.engine
            .handle_input(h.now, Input::StorageDone { op, result });
    }
    h.pump();
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(
            h.reply(*r),
            Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
                0, i as u64
            ))])))
        );
    }
    assert_eq!(h.describe("s").length(), 3);
}

#[test]
fn a_failed_write_fails_the_writes_behind_it_and_leaves_no_hole() {
    let mut h = Harness::with(pipelined(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let reqs: Vec<ReqId> = [1u8, 2, 3]
        .iter()
        .map(|n| send_append(&mut h, vec![ev_id("t", *n)]))
        .collect();
    // The first fails; the store refuses the others, which were to commit after it.
    h.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable("disk".into()))),
    );
    h.complete(0, None);
    h.complete(0, None);
    for r in &reqs {
        assert!(
            matches!(h.reply(*r), Some(Err(Error::Unavailable(_)))),
            "{r:?}"
        );
    }
    assert!(h.store.events(&s("s"), 0).is_empty());
    assert_eq!(h.engine.dedup_ids(), 0, "their ids left the window");
    // The stream goes on from offset 0, and the ids can be written.
    h.hold_storage = false;
    assert_eq!(
        h.append("s", vec![ev_id("t", 2)]),
        Ok(vec![AppendOutcome::Appended(pos(0, 0))])
    );
}

#[test]
fn writes_behind_an_unknown_one_are_sent_again_once_it_committed() {
    let mut h = Harness::with(pipelined(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let reqs: Vec<ReqId> = ["a", "b", "c"]
        .iter()
        .map(|t| send_append(&mut h, vec![ev(t)]))
        .collect();
    // The first write's reply is lost (it was not applied); the store refuses the two behind it.
    h.complete(0, Some(StorageResult::Unknown));
    h.complete(0, None);
    h.complete(0, None);
    assert!(
        reqs.iter().all(|r| h.reply(*r).is_none()),
        "nobody is told anything yet"
    );
    // The first is repeated and commits; the others go again, in order, and commit.
    h.hold_storage = false;
    h.advance(Duration::from_millis(60));
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(
            h.reply(*r),
            Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
                0, i as u64
            ))])))
        );
    }
    let stored: Vec<String> = h
        .store
        .events(&s("s"), 0)
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    assert_eq!(stored, vec!["a", "b", "c"]);
}

#[test]
fn a_duplicate_of_an_event_in_flight_waits_for_its_write() {
    let mut h = Harness::with(pipelined(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let a = send_append(&mut h, vec![ev_id("t", 7)]);
    let b = send_append(&mut h, vec![ev_id("t", 7)]);
    assert_eq!(
        h.held.len(),
        1,
        "the repeat is not planned while the original is in flight"
    );
    assert!(h.reply(b).is_none());
    h.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable("disk".into()))),
    );
    assert!(matches!(h.reply(a), Some(Err(Error::Unavailable(_)))));
    // The original failed: the repeat is written, not answered as a duplicate of nothing.
    h.complete(0, None);
    assert_eq!(
        h.reply(b),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
            0, 0
        ))])))
    );
}

#[test]
fn an_unknown_write_behind_a_failed_one_fails_and_is_not_sent_again() {
    let mut h = Harness::with(pipelined(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let a = send_append(&mut h, vec![ev_id("t", 1)]);
    let b = send_append(&mut h, vec![ev_id("t", 2)]);
    assert_eq!(h.held.len(), 2);
    // B's reply is lost, then A definitely fails: B, sent to commit after A, cannot have
    // committed.
    h.complete(1, Some(StorageResult::Unknown));
    h.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable("disk".into()))),
    );
    assert!(matches!(h.reply(a), Some(Err(Error::Unavailable(_)))));
    h.advance(Duration::from_secs(1));
    assert!(
        h.held.is_empty(),
        "B is not sent again (alone it would commit past a hole)"
    );
    assert!(matches!(h.reply(b), Some(Err(Error::Unavailable(_)))));
    assert!(h.store.events(&s("s"), 0).is_empty());
    assert_eq!(h.engine.dedup_ids(), 0);
    h.hold_storage = false;
    assert_eq!(
        h.append("s", vec![ev_id("t", 2)]),
        Ok(vec![AppendOutcome::Appended(pos(0, 0))])
    );
}

#[test]
fn a_stream_created_again_never_reuses_a_write_number() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.hold_storage = true;
    send_append(&mut h, vec![ev("a")]);
    let first = held_write(&h, 0).seq;
    h.complete(0, None);
    h.hold_storage = false;
    assert_eq!(h.cmd(Command::DeleteStream(s("s"))), Ok(Reply::Done));
    assert_eq!(
        h.store.append_outcome(&s("s"), first),
        None,
        "the store forgot the deleted stream's writes"
    );
    h.create_persistent("s", 1);
    h.hold_storage = true;
    send_append(&mut h, vec![ev("b")]);
    let again = held_write(&h, 0).seq;
    assert!(
        again.wrapping_sub(first) >= 1 << 32,
        "a fresh range of write numbers: {first} then {again}"
    );
}
