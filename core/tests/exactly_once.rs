//! Exactly-once (SPEC 5) and recovery: idempotent appends within the dedup window, partial
//! duplicate batches, the window across restarts, no redelivery of acknowledged events, and
//! an engine rebuilt from its store behaving as if it never stopped.

mod common;
use common::*;
use std::time::Duration;
use tributary_core::*;

#[test]
fn a_repeated_event_id_is_a_duplicate_pointing_at_the_original() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    assert_eq!(
        h.append("s", vec![ev_id("t", 1)]),
        Ok(vec![AppendOutcome::Appended(pos(0, 0))])
    );
    assert_eq!(
        h.append("s", vec![ev_id("t", 1)]),
        Ok(vec![AppendOutcome::Duplicate {
            original: pos(0, 0)
        }])
    );
    assert_eq!(h.describe("s").length(), 1);
}

#[test]
fn a_partly_duplicate_batch_appends_only_the_new_events() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.append("s", vec![ev_id("t", 1), ev_id("t", 2)]).unwrap();
    let out = h
        .append(
            "s",
            vec![ev_id("t", 2), ev_id("t", 3), ev_id("t", 3), ev("anon")],
        )
        .unwrap();
    assert_eq!(
        out,
        vec![
            AppendOutcome::Duplicate {
                original: pos(0, 1)
            },
            AppendOutcome::Appended(pos(0, 2)),
            AppendOutcome::Duplicate {
                original: pos(0, 2)
            },
            AppendOutcome::Appended(pos(0, 3)),
        ]
    );
    let ids: Vec<EventId> = h
        .store
        .events(&s("s"), 0)
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids[..3], [id(1), id(2), id(3)]);
}

#[test]
fn duplicates_are_caught_between_requests_in_one_group_commit() {
    let mut h = Harness::with(one_write(), tributary_store_memory::MemoryStore::new(), 7);
    h.create_persistent("s", 1);
    h.hold_storage = true;
    h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev("x")],
            expected_offset: None,
        }),
    );
    let a = h.send(
        2,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev_id("t", 9)],
            expected_offset: None,
        }),
    );
    let b = h.send(
        3,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev_id("t", 9)],
            expected_offset: None,
        }),
    );
    h.hold_storage = false;
    h.complete(0, None);
    assert_eq!(
        h.reply(a),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
            0, 1
        ))])))
    );
    assert_eq!(
        h.reply(b),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Duplicate {
            original: pos(0, 1)
        }])))
    );
    assert_eq!(h.store.events(&s("s"), 0).len(), 2);
}

#[test]
fn an_all_duplicate_retry_succeeds_even_with_its_expected_offset() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let req = AppendRequest {
        stream: s("s"),
        events: vec![ev_id("t", 1)],
        expected_offset: Some(0),
    };
    assert!(h.cmd(Command::Append(req.clone())).is_ok());
    // The producer retries the same request (it never saw the answer).
    assert_eq!(
        h.cmd(Command::Append(req)),
        Ok(Reply::Appended(vec![AppendOutcome::Duplicate {
            original: pos(0, 0)
        }]))
    );
}

#[test]
fn the_window_expires_and_zero_turns_dedup_off() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("s"));
    cfg.dedup_window = Duration::from_secs(60);
    h.create(cfg);
    h.append("s", vec![ev_id("t", 1)]).unwrap();
    h.advance(Duration::from_secs(59));
    assert!(matches!(
        h.append("s", vec![ev_id("t", 1)]).unwrap()[0],
        AppendOutcome::Duplicate { .. }
    ));
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.append("s", vec![ev_id("t", 1)]).unwrap(),
        vec![AppendOutcome::Appended(pos(0, 1))]
    );
    let mut off = StreamConfig::persistent(s("o"));
    off.dedup_window = Duration::ZERO;
    h.create(off);
    h.append("o", vec![ev_id("t", 1)]).unwrap();
    assert_eq!(
        h.append("o", vec![ev_id("t", 1)]).unwrap(),
        vec![AppendOutcome::Appended(pos(0, 1))]
    );
    assert_eq!(
        h.engine.dedup_ids(),
        1,
        "only the window of 's' holds an id"
    );
}

#[test]
fn the_dedup_window_survives_a_restart_and_loads_in_pages() {
    let config = Config {
        recovery_page: 3,
        ..no_linger()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 9);
    h.create_persistent("s", 2);
    let events: Vec<NewEvent> = (1..=10).map(|n| ev_id("t", n).with_key(vec![n])).collect();
    let first = h.append("s", events.clone()).unwrap();
    let mut h = h.restart();
    assert_eq!(h.engine.dedup_ids(), 10);
    let again = h.append("s", events).unwrap();
    for (a, b) in first.iter().zip(&again) {
        let AppendOutcome::Appended(p) = a else {
            panic!()
        };
        assert_eq!(*b, AppendOutcome::Duplicate { original: *p });
    }
    assert_eq!(h.describe("s").length(), 10);
}

#[test]
fn ids_past_their_expiry_are_not_loaded_on_recovery() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("s"));
    cfg.dedup_window = Duration::from_secs(10);
    h.create(cfg);
    h.append("s", vec![ev_id("t", 1)]).unwrap();
    h.advance(Duration::from_secs(11));
    let mut h = h.restart();
    assert_eq!(h.engine.dedup_ids(), 0);
    assert!(matches!(
        h.append("s", vec![ev_id("t", 1)]).unwrap()[0],
        AppendOutcome::Appended(_)
    ));
}

#[test]
fn the_dedup_window_is_bounded() {
    let config = Config {
        max_dedup_ids_per_stream: 2,
        ..no_linger()
    };
    let mut h = Harness::with(config, tributary_store_memory::MemoryStore::new(), 1);
    h.create_persistent("s", 1);
    h.append("s", vec![ev_id("t", 1), ev_id("t", 2)]).unwrap();
    assert_eq!(
        h.append("s", vec![ev_id("t", 3)]),
        Err(Error::Busy {
            what: "dedup window",
            limit: 2
        })
    );
    assert!(
        h.append("s", vec![ev("no-id")]).is_ok(),
        "events without ids need no room"
    );
    assert!(matches!(
        h.append("s", vec![ev_id("t", 2)]).unwrap()[0],
        AppendOutcome::Duplicate { .. }
    ));
}

#[test]
fn a_retry_after_unknown_with_the_same_id_makes_no_second_copy() {
    // The producer's own retry after a lost reply, while the engine's repeat is also going on.
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let a = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev_id("t", 5)],
            expected_offset: None,
        }),
    );
    h.complete(0, Some(StorageResult::Unknown));
    let b = h.send(
        2,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev_id("t", 5)],
            expected_offset: None,
        }),
    );
    h.hold_storage = false;
    h.advance(Duration::from_millis(60));
    assert_eq!(
        h.reply(a),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
            0, 0
        ))])))
    );
    assert_eq!(
        h.reply(b),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Duplicate {
            original: pos(0, 0)
        }])))
    );
    assert_eq!(h.store.events(&s("s"), 0).len(), 1);
}

#[test]
fn exactly_once_subscriptions_never_redeliver_an_acknowledged_event() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("s"));
    cfg.delivery = DeliverySemantics::ExactlyOnce;
    h.create(cfg);
    let mut sc = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    sc.ack_wait = Duration::from_secs(1);
    h.subscribe(sc);
    h.attach(1, "s", "q", "a", None);
    h.append("s", (1..=4).map(|i| ev_id("t", i)).collect())
        .unwrap();
    h.deliveries();
    h.ack(1, "s", "q", "a", vec![pos(0, 0), pos(0, 2)]).unwrap();
    h.advance(Duration::from_secs(1));
    let mut again: Vec<u64> = h.deliveries().iter().map(|d| d.1.offset).collect();
    again.sort();
    assert_eq!(again, vec![1, 3]);
    // A late ack from before the redelivery still counts; a second ack of the same event is ignored.
    assert_eq!(
        h.ack(1, "s", "q", "a", vec![pos(0, 1), pos(0, 0)]),
        Ok(settled(
            vec![pos(0, 1)],
            vec![(pos(0, 0), SkipReason::AlreadySettled)]
        ))
    );
    let mut h = h.restart();
    h.attach(1, "s", "q", "a", None);
    assert_eq!(
        h.deliveries()
            .iter()
            .map(|d| d.1.offset)
            .collect::<Vec<_>>(),
        vec![3]
    );
}

#[test]
fn an_exactly_once_stream_needs_a_dedup_window_and_producer_ids() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("s"));
    cfg.delivery = DeliverySemantics::ExactlyOnce;
    cfg.dedup_window = Duration::ZERO;
    assert_eq!(
        h.cmd(Command::CreateStream(cfg.clone())),
        Err(Error::Invalid(InvalidInput::Conflict {
            field: "dedup_window",
            reason: "an exactly-once stream needs a producer dedup window above 0 (0 turns dedup off)",
        }))
    );
    assert_eq!(
        h.cmd(Command::DescribeStream(s("s"))),
        Err(Error::StreamNotFound(s("s"))),
        "a refused stream is not created"
    );
    // AtLeastOnce may turn dedup off; ExactlyOnce with a window is accepted.
    let mut off = cfg.clone();
    off.name = s("t");
    off.delivery = DeliverySemantics::AtLeastOnce;
    h.create(off);
    cfg.dedup_window = Duration::from_secs(60);
    h.create(cfg);
    // Every event of an append needs its producer's id: one without refuses the whole batch.
    let refused = h.append("s", vec![ev_id("t", 1), ev("anon")]);
    assert!(
        matches!(
            refused,
            Err(Error::Invalid(InvalidInput::Conflict {
                field: "event_id",
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(h.describe("s").length(), 0, "nothing of it was written");
    assert_eq!(
        h.append("s", vec![ev_id("t", 1)]),
        Ok(vec![AppendOutcome::Appended(pos(0, 0))])
    );
    assert_eq!(
        h.append("s", vec![ev_id("t", 1)]),
        Ok(vec![AppendOutcome::Duplicate {
            original: pos(0, 0)
        }]),
        "a producer's retry within the window is a duplicate"
    );
    // An AtLeastOnce stream still gives an id to an event that has none.
    assert_eq!(
        h.append("t", vec![ev("anon")]),
        Ok(vec![AppendOutcome::Appended(pos(0, 0))])
    );
}

#[test]
fn recovery_rebuilds_heads_subscriptions_and_positions() {
    let mut h = Harness::new();
    h.create_persistent("a", 3);
    h.create_persistent("b", 1);
    for i in 0..9u8 {
        h.append("a", vec![ev("t").with_key(vec![i])]).unwrap();
    }
    h.set_wall(T0 + 10_000);
    h.append_n("b", 2);
    h.subscribe(h.sub_config("b", "bc", SubscriptionMode::Broadcast));
    h.attach(1, "b", "bc", "x", None);
    h.attach(2, "b", "bc", "y", None);
    h.deliveries();
    h.ack(1, "b", "bc", "x", vec![pos(0, 0), pos(0, 1)])
        .unwrap();
    h.ack(2, "b", "bc", "y", vec![pos(0, 0)]).unwrap();
    let before_a = h.describe("a");
    let mut h = h.restart();
    assert_eq!(h.describe("a"), before_a);
    assert_eq!(h.describe("b").subscriptions, 1);
    // Appends continue at the recovered heads, with timestamps that do not go back.
    h.set_wall(T0);
    assert_eq!(h.append_n("b", 1), vec![AppendOutcome::Appended(pos(0, 2))]);
    assert_eq!(
        h.read("b", 0, 2, 1).unwrap()[0].timestamp,
        UnixMillis(T0 + 10_000)
    );
    // Each broadcast consumer resumes at its own position.
    h.attach(1, "b", "bc", "x", None);
    h.attach(2, "b", "bc", "y", None);
    let d = h.deliveries();
    let x: Vec<u64> = d
        .iter()
        .filter(|d| d.0 == "x")
        .map(|d| d.1.offset)
        .collect();
    let y: Vec<u64> = d
        .iter()
        .filter(|d| d.0 == "y")
        .map(|d| d.1.offset)
        .collect();
    assert_eq!((x, y), (vec![2], vec![1, 2]));
    // New subscriptions get fresh ids: creating one does not collide with the recovered one.
    h.subscribe(h.sub_config("b", "other", SubscriptionMode::Exclusive));
    h.attach(3, "b", "other", "z", None);
    assert_eq!(h.deliveries().len(), 3);
}

#[test]
fn commands_sent_during_recovery_wait_and_a_failed_recovery_is_retried() {
    let now = Now {
        mono: MonoNanos(0),
        wall: UnixMillis(T0),
    };
    let mut store = tributary_store_memory::MemoryStore::new();
    let mut e = Engine::new(
        Config {
            max_queued_commands: 1,
            ..no_linger()
        },
        1,
        now,
    )
    .unwrap();
    let Some(Output::Storage {
        op,
        req: StorageRequest::Recover,
    }) = e.poll_output()
    else {
        panic!()
    };
    let cmd = Command::CreateStream(StreamConfig::persistent(s("s")));
    e.handle_input(
        now,
        Input::Client {
            conn: ConnId(1),
            req: ReqId(1),
            cmd: cmd.clone(),
        },
    );
    e.handle_input(
        now,
        Input::Client {
            conn: ConnId(1),
            req: ReqId(2),
            cmd,
        },
    );
    let Some(Output::Reply {
        req: ReqId(2),
        reply: Err(Error::Busy { .. }),
        ..
    }) = e.poll_output()
    else {
        panic!()
    };
    assert!(e.poll_output().is_none(), "the first command waits");
    e.handle_input(
        now,
        Input::StorageDone {
            op,
            result: StorageResult::Err(StorageError::Unavailable("x".into())),
        },
    );
    let Some(Output::Notice(Notice::StorageRetry { .. })) = e.poll_output() else {
        panic!()
    };
    assert!(!e.is_ready());
    let later = Now {
        mono: MonoNanos(e.poll_timeout().unwrap().0),
        wall: now.wall,
    };
    let outs = tributary_store_memory::run(&mut e, &mut store, later, Input::Tick);
    assert!(e.is_ready());
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Reply {
            req: ReqId(1),
            reply: Ok(Reply::Done),
            ..
        }
    )));
    assert!(store.has_stream(&s("s")));
}

#[test]
fn bad_engine_configs_are_refused() {
    let now = Now::default();
    let e = Engine::new(
        Config {
            max_batch_events: 0,
            ..no_linger()
        },
        1,
        now,
    );
    assert!(matches!(
        e,
        Err(InvalidInput::Range {
            field: "max_batch_events",
            ..
        })
    ));
    let e = Engine::new(
        Config {
            max_write_events: 10,
            ..no_linger()
        },
        1,
        now,
    );
    assert!(matches!(
        e,
        Err(InvalidInput::Conflict {
            field: "max_write_events",
            ..
        })
    ));
}

#[test]
fn poll_timeout_says_now_while_outputs_wait_and_never_goes_back() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let mut sc = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    sc.ack_wait = Duration::from_secs(5);
    h.subscribe(sc);
    h.attach(1, "s", "q", "a", None);
    h.append_n("s", 1);
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now.mono.saturating_add(Duration::from_secs(5)))
    );
    h.engine.handle_input(
        h.now,
        Input::Client {
            conn: ConnId(9),
            req: ReqId(99),
            cmd: Command::ListStreams,
        },
    );
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now.mono),
        "output is waiting"
    );
    h.pump();
    // Time passed far beyond the deadline: the timeout is clamped to now, not in the past.
    let late = Now {
        mono: h.now.mono.saturating_add(Duration::from_secs(60)),
        wall: h.now.wall,
    };
    h.now = late;
    assert!(h.engine.poll_timeout().unwrap() <= late.mono);
    h.engine.handle_input(late, Input::Tick);
    h.pump();
    assert!(h.engine.poll_timeout().unwrap() >= late.mono);
}

#[test]
fn ids_of_a_failed_write_leave_the_window() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.hold_storage = true;
    let a = h.send(
        1,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev_id("t", 1), ev_id("t", 2)],
            expected_offset: None,
        }),
    );
    // A repeat of id 2 waits in the queue while the write is in flight.
    let b = h.send(
        2,
        Command::Append(AppendRequest {
            stream: s("s"),
            events: vec![ev_id("t", 2)],
            expected_offset: None,
        }),
    );
    h.complete(
        0,
        Some(StorageResult::Err(StorageError::Unavailable(
            "disk full".into(),
        ))),
    );
    assert!(matches!(h.reply(a), Some(Err(Error::Unavailable(_)))));
    // `b` was queued behind the failed write: it is planned afresh and written.
    h.hold_storage = false;
    h.complete(0, None);
    assert_eq!(
        h.reply(b),
        Some(Ok(Reply::Appended(vec![AppendOutcome::Appended(pos(
            0, 0
        ))])))
    );
    assert_eq!(h.engine.dedup_ids(), 1);
    assert_eq!(
        h.append("s", vec![ev_id("t", 1)]),
        Ok(vec![AppendOutcome::Appended(pos(0, 1))])
    );
}

#[test]
fn ids_of_a_full_ephemeral_append_leave_the_window() {
    let mut h = Harness::new();
    h.create(StreamConfig::ephemeral(
        s("e"),
        1,
        1 << 20,
        Overflow::Reject,
    ));
    h.subscribe(h.sub_config("e", "keep", SubscriptionMode::Exclusive));
    h.append("e", vec![ev_id("t", 1)]).unwrap();
    assert!(matches!(
        h.append("e", vec![ev_id("t", 2)]),
        Err(Error::StreamFull { .. })
    ));
    assert_eq!(h.engine.dedup_ids(), 1);
}
