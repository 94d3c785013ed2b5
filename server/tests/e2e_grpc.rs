//! End to end over real sockets: a `tributary serve` process per test, driven by the
//! generated tonic client, on SQLite and on a real PostgreSQL.

mod common;

use common::*;
use pb::subscribe_request::Kind as In;
use pb::subscribe_response::Kind as Out;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_types::StatusExt;
use tributary_grpc::pb;

on_both_stores!(
    publish_read_and_administer,
    broadcast_gives_every_consumer_every_event,
    exclusive_shares_events_among_consumers,
    nack_redelivers_then_dead_letters,
    term_dead_letters_at_once_and_ack_wait_redelivers,
    replay_honours_its_rate_and_reports_progress,
    offset_reset_is_seen_by_the_next_delivery,
    bad_input_is_refused_with_its_code_and_changes_nothing,
    server_streaming_variant_settles_by_session_id,
    sigterm_during_a_publish_storm_loses_no_acknowledged_event,
    consumer_group_shares_partitions_by_generation,
    remove_consumer_drops_a_detached_broadcast_position,
    a_member_that_stops_heartbeating_loses_its_partitions,
    read_receipts_track_delivered_and_read,
    upcasting_on_delivery_and_replay,
    pipelined_publish_answers_in_order_with_failures_in_place,
);

// The same service served by `tributary-async-std` (hyper on async-std sockets, sqlx on
// async-std): every test above that needs only gRPC.
on_async_std!(
    publish_read_and_administer,
    broadcast_gives_every_consumer_every_event,
    exclusive_shares_events_among_consumers,
    nack_redelivers_then_dead_letters,
    term_dead_letters_at_once_and_ack_wait_redelivers,
    replay_honours_its_rate_and_reports_progress,
    offset_reset_is_seen_by_the_next_delivery,
    bad_input_is_refused_with_its_code_and_changes_nothing,
    server_streaming_variant_settles_by_session_id,
    sigterm_during_a_publish_storm_loses_no_acknowledged_event,
    consumer_group_shares_partitions_by_generation,
    remove_consumer_drops_a_detached_broadcast_position,
    a_member_that_stops_heartbeating_loses_its_partitions,
    read_receipts_track_delivered_and_read,
    upcasting_on_delivery_and_replay,
    pipelined_publish_answers_in_order_with_failures_in_place,
);

async fn publish_read_and_administer(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "admin");
    let mut c = server.client().await;
    create_stream(&mut c, "orders", 2).await;
    let id = "6f1c1f0e-8a57-4c47-9a45-0c6d7a1f5d01";
    let mut e = json_event("created", r#"{"n":1}"#);
    e.event_id = id.into();
    e.key = Some(b"k".to_vec().into());
    let first = publish(&mut c, "orders", vec![e.clone()]).await;
    assert!(!first[0].duplicate);
    // The same id again: a duplicate pointing at the original, nothing written.
    let again = publish(&mut c, "orders", vec![e]).await;
    assert!(again[0].duplicate);
    assert_eq!(again[0].position, first[0].position);
    let p = first[0].position.expect("position");
    let read = c
        .read(pb::ReadRequest {
            stream: "orders".into(),
            partition: p.partition,
            from: 0,
            max: Some(10),
        })
        .await
        .expect("read")
        .into_inner();
    assert_eq!(read.events.len(), 1);
    assert_eq!(read.events[0].event_id, id);
    assert_eq!(read.events[0].payload.as_ref(), br#"{"n":1}"#);
    let info = c
        .get_stream(pb::GetStreamRequest {
            name: "orders".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.length, 1);
    assert_eq!(info.partitions.len(), 2);
    let list = c.list_streams(()).await.expect("list").into_inner();
    assert_eq!(list.streams.len(), 1);
    // Survives a restart.
    let server = server.restart();
    let mut c = server.client().await;
    let info = c
        .get_stream(pb::GetStreamRequest {
            name: "orders".into(),
        })
        .await
        .expect("get after restart")
        .into_inner();
    assert_eq!(info.length, 1);
    c.delete_stream(pb::DeleteStreamRequest {
        name: "orders".into(),
    })
    .await
    .expect("delete");
    let gone = c
        .get_stream(pb::GetStreamRequest {
            name: "orders".into(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
}

async fn broadcast_gives_every_consumer_every_event(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "broadcast");
    let mut c = server.client().await;
    create_stream(&mut c, "news", 1).await;
    let mut sub = open("news", "all", "a");
    sub.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Broadcast as i32,
        ..Default::default()
    });
    let mut a = Session::open(&mut c, sub.clone()).await;
    sub.consumer = "b".into();
    let mut bb = Session::open(&mut c, sub).await;
    let events = (0..5)
        .map(|i| json_event("n", &format!("{{\"i\":{i}}}")))
        .collect();
    publish(&mut c, "news", events).await;
    let got_a = a.events(5).await;
    let got_b = bb.events(5).await;
    assert_eq!(offsets(&got_a), vec![0, 1, 2, 3, 4]);
    assert_eq!(offsets(&got_b), vec![0, 1, 2, 3, 4]);
    assert_eq!(a.ack(&got_a).await.applied.len(), 5);
    assert_eq!(bb.ack(&got_b[..2]).await.applied.len(), 2);
    let info = c
        .get_subscription(pb::SubscriptionRef {
            stream: "news".into(),
            subscription: "all".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    let mut floors: Vec<(String, Vec<u64>, u64)> = info
        .cursors
        .iter()
        .map(|c| (c.consumer.clone(), c.floors.clone(), c.lag))
        .collect();
    floors.sort();
    assert_eq!(
        floors,
        vec![("a".into(), vec![5], 0), ("b".into(), vec![2], 3)]
    );
}

async fn exclusive_shares_events_among_consumers(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "exclusive");
    let mut c = server.client().await;
    create_stream(&mut c, "jobs", 1).await;
    c.create_subscription(pb::SubscriptionConfig {
        stream: "jobs".into(),
        name: "workers".into(),
        mode: pb::SubscriptionMode::Exclusive as i32,
        ..Default::default()
    })
    .await
    .expect("create subscription");
    let mut o = open("jobs", "workers", "w1");
    o.max_in_flight = Some(3);
    let mut w1 = Session::open(&mut c, o.clone()).await;
    o.consumer = "w2".into();
    let mut w2 = Session::open(&mut c, o).await;
    let events = (0..6).map(|i| json_event("job", &format!("{i}"))).collect();
    publish(&mut c, "jobs", events).await;
    // Each holds at most 3 in flight, so 6 events fill both.
    let a = w1.events(3).await;
    let bb = w2.events(3).await;
    let mut all: Vec<u64> = offsets(&a).into_iter().chain(offsets(&bb)).collect();
    all.sort();
    assert_eq!(
        all,
        vec![0, 1, 2, 3, 4, 5],
        "each event to exactly one worker"
    );
    // w2 may not nack or term what is in flight to w1: refused, and w1 keeps it.
    for kind in [
        In::Nack(pb::Nack {
            positions: positions(&a[..1]),
            ..Default::default()
        }),
        In::Term(pb::Term {
            positions: positions(&a[..1]),
            ..Default::default()
        }),
    ] {
        let id = w2.send(kind).await;
        match w2.answer(id).await {
            (Out::Error(e), extra) => {
                assert_eq!(e.code, Code::FailedPrecondition as i32, "{e:?}");
                assert_eq!(reason(&e), "NOT_HOLDER", "{e:?}");
                assert!(e.message.contains("w1"), "{e:?}");
                assert!(extra.is_empty(), "nothing redelivered: {extra:?}");
            }
            other => panic!("a non-holder's settle answered {other:?}"),
        }
    }
    assert_eq!(w1.ack(&a).await.applied.len(), 3);
    assert_eq!(w2.ack(&bb).await.applied.len(), 3);
}

async fn nack_redelivers_then_dead_letters(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "nack");
    let mut c = server.client().await;
    create_stream(&mut c, "pay", 1).await;
    let mut o = open("pay", "billing", "c1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        max_deliveries: Some(2),
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o).await;
    publish(&mut c, "pay", vec![json_event("charge", r#"{"eur":5}"#)]).await;
    let first = s.events(1).await;
    assert_eq!(first[0].attempt, 1);
    let nack = |ds: &[pb::Delivery]| {
        In::Nack(pb::Nack {
            positions: positions(ds),
            delay_ms: Some(0),
            error: "card declined".into(),
        })
    };
    let id = s.send(nack(&first)).await;
    let (answer, mut early) = s.answer(id).await;
    let Out::Settled(settled) = answer else {
        panic!("nack answered {answer:?}")
    };
    assert_eq!(settled.applied, positions(&first), "the nack applied");
    assert!(settled.skipped.is_empty());
    if early.is_empty() {
        early = s.events(1).await;
    }
    assert_eq!(early[0].attempt, 2, "redelivered after the nack");
    let id = s.send(nack(&early)).await;
    s.answer(id).await;
    // The second failure of an event delivered max_deliveries times: the dead letter stream.
    let dlq = within("dead letter", async {
        loop {
            let r = c
                .read(pb::ReadRequest {
                    stream: "pay.dlq".into(),
                    partition: 0,
                    from: 0,
                    max: Some(10),
                })
                .await;
            if let Ok(r) = r {
                let events = r.into_inner().events;
                if !events.is_empty() {
                    return events;
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let h = &dlq[0].headers;
    assert_eq!(h.get("x-original-stream").map(String::as_str), Some("pay"));
    assert_eq!(h.get("x-original-offset").map(String::as_str), Some("0"));
    assert_eq!(h.get("x-deliveries").map(String::as_str), Some("2"));
    assert_eq!(
        h.get("x-last-error").map(String::as_str),
        Some("card declined")
    );
    assert_eq!(dlq[0].payload.as_ref(), br#"{"eur":5}"#);
}

async fn term_dead_letters_at_once_and_ack_wait_redelivers(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "term");
    let mut c = server.client().await;
    create_stream(&mut c, "mail", 1).await;
    let mut o = open("mail", "senders", "c1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        ack_wait_ms: Some(300),
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o).await;
    publish(
        &mut c,
        "mail",
        vec![json_event("poison", "{}"), json_event("slow", "{}")],
    )
    .await;
    let got = s.events(2).await;
    let id = s
        .send(In::Term(pb::Term {
            positions: positions(&got[..1]),
            reason: "malformed".into(),
        }))
        .await;
    let (answer, mut more) = s.answer(id).await;
    let Out::Settled(settled) = answer else {
        panic!("term answered {answer:?}")
    };
    assert_eq!(settled.applied, positions(&got[..1]));
    // The second event is not acknowledged: after ack_wait it comes again.
    if more.is_empty() {
        more = s.events(1).await;
    }
    assert_eq!(offsets(&more), vec![1]);
    assert_eq!(more[0].attempt, 2);
    // The dead letter is written by an append of its own, which may commit after the
    // redelivery on a loaded machine: its stream holds it once that append has committed.
    let length = within("dead letter", async {
        loop {
            let dlq = c
                .get_stream(pb::GetStreamRequest {
                    name: "mail.dlq".into(),
                })
                .await
                .expect("dead letter stream")
                .into_inner();
            if dlq.length > 0 {
                return dlq.length;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(length, 1);
}

async fn replay_honours_its_rate_and_reports_progress(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "replay");
    let mut c = server.client().await;
    create_stream(&mut c, "log", 1).await;
    let events = (0..30)
        .map(|i| json_event("line", &format!("{i}")))
        .collect();
    publish(&mut c, "log", events).await;
    let started = Instant::now();
    let mut s = c
        .replay(pb::ReplayRequest {
            stream: "log".into(),
            from: Some(pb::replay_request::From::Offset(5)),
            batch_size: Some(5),
            max_events_per_second: Some(20),
            progress_interval_ms: Some(100),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    let (mut got, mut progress, mut total) = (Vec::new(), 0, None);
    while let Some(m) = within("replay item", s.message())
        .await
        .expect("replay stream")
    {
        match m.kind {
            Some(pb::replay_response::Kind::Events(d)) => got.extend(offsets(&d.events)),
            Some(pb::replay_response::Kind::Progress(_)) => progress += 1,
            Some(pb::replay_response::Kind::Done(d)) => {
                total = Some(d.total);
                break;
            }
            None => {}
        }
    }
    assert_eq!(got, (5..30).collect::<Vec<u64>>());
    assert_eq!(total, Some(25));
    assert!(progress >= 1, "progress was reported");
    // A bucket of 20 tokens at 20/s: the 5 events past the first 20 take at least 0.25 s.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "rate limit not applied: {:?}",
        started.elapsed()
    );
    // Beyond the end of a time range: nothing.
    let mut s = c
        .replay(pb::ReplayRequest {
            stream: "log".into(),
            from: Some(pb::replay_request::From::Range(pb::TimeRange {
                start: 0,
                end: 1,
            })),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    let m = within("replay done", s.message())
        .await
        .expect("ok")
        .expect("item");
    assert!(
        matches!(
            m.kind,
            Some(pb::replay_response::Kind::Done(pb::ReplayDone { total: 0 }))
        ),
        "{m:?}"
    );
}

async fn offset_reset_is_seen_by_the_next_delivery(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "reset");
    let mut c = server.client().await;
    create_stream(&mut c, "ledger", 1).await;
    let events = (0..5)
        .map(|i| json_event("entry", &format!("{i}")))
        .collect();
    publish(&mut c, "ledger", events).await;
    let mut o = open("ledger", "audit", "c1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o.clone()).await;
    let got = s.events(5).await;
    assert_eq!(s.ack(&got).await.applied.len(), 5);
    drop(s);
    wait_detached(&mut c, "ledger", "audit", "c1").await;
    c.reset_offset(pb::ResetOffsetRequest {
        stream: "ledger".into(),
        subscription: "audit".into(),
        consumer: String::new(),
        to: Some(pb::StartPosition {
            at: Some(pb::start_position::At::Offset(2)),
        }),
    })
    .await
    .expect("reset");
    let mut s = Session::open(&mut c, o).await;
    let again = s.events(3).await;
    assert_eq!(offsets(&again), vec![2, 3, 4]);
}

async fn bad_input_is_refused_with_its_code_and_changes_nothing(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "bad");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 1).await;
    publish(&mut c, "s", vec![json_event("t", "{}")]).await;

    let e = c
        .create_stream(pb::CreateStreamRequest {
            name: "Bad Name".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad name");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.get_details_bad_request().is_some(),
        "names the field: {e:?}"
    );

    let e = c
        .create_stream(pb::CreateStreamRequest {
            name: "s".into(),
            ..Default::default()
        })
        .await
        .expect_err("exists");
    assert_eq!(e.code(), Code::AlreadyExists);

    // A dead letter stream made by hand has one partition.
    let e = c
        .create_stream(pb::CreateStreamRequest {
            name: "s.dlq".into(),
            partitions: Some(3),
            ..Default::default()
        })
        .await
        .expect_err("a dead letter stream of 3 partitions");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("partitions"), "{}", e.message());

    // An option the subscription's mode would ignore is refused, naming it.
    for (mode, config, field) in [
        (
            pb::SubscriptionMode::Exclusive,
            pb::SubscriptionConfig {
                heartbeat_interval_ms: Some(1000),
                ..Default::default()
            },
            "heartbeat_interval",
        ),
        (
            pb::SubscriptionMode::Broadcast,
            pb::SubscriptionConfig {
                commit: Some(pb::CommitStrategy {
                    kind: Some(pb::commit_strategy::Kind::AfterBatch(5)),
                }),
                ..Default::default()
            },
            "commit",
        ),
        (
            pb::SubscriptionMode::ConsumerGroup,
            pb::SubscriptionConfig {
                receipt_ttl_ms: Some(1000),
                ..Default::default()
            },
            "receipt_ttl",
        ),
    ] {
        let e = c
            .create_subscription(pb::SubscriptionConfig {
                stream: "s".into(),
                name: "q".into(),
                mode: mode as i32,
                ..config
            })
            .await
            .expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let bad = e.get_details_bad_request().expect("names the field");
        assert_eq!(bad.field_violations[0].field, field, "{e:?}");
    }

    let mut long_type = json_event(&"x".repeat(257), "{}");
    long_type.key = None;
    let e = c
        .publish(pb::PublishRequest {
            stream: "s".into(),
            events: vec![json_event("ok", "{}"), long_type],
            expected_offset: None,
        })
        .await
        .expect_err("type too long");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("event_type"), "{}", e.message());

    let mut bad_id = json_event("t", "{}");
    bad_id.event_id = "42".into();
    let e = c
        .publish(pb::PublishRequest {
            stream: "s".into(),
            events: vec![bad_id],
            expected_offset: None,
        })
        .await
        .expect_err("bad id");
    assert_eq!(e.code(), Code::InvalidArgument);

    let e = c
        .publish(pb::PublishRequest {
            stream: "s".into(),
            events: vec![json_event("t", "{}")],
            expected_offset: Some(7),
        })
        .await
        .expect_err("wrong expected offset");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let info = e.get_details_error_info().expect("error info");
    assert_eq!(info.reason, "WRONG_EXPECTED_OFFSET");
    assert_eq!(info.metadata.get("actual").map(String::as_str), Some("1"));

    let e = c
        .publish(pb::PublishRequest {
            stream: "nowhere".into(),
            events: vec![json_event("t", "{}")],
            expected_offset: None,
        })
        .await
        .expect_err("no stream");
    assert_eq!(e.code(), Code::NotFound);

    let e = c
        .publish(pb::PublishRequest {
            stream: "s".into(),
            events: vec![],
            expected_offset: None,
        })
        .await
        .expect_err("empty batch");
    assert_eq!(e.code(), Code::InvalidArgument);

    c.create_stream(pb::CreateStreamRequest {
        name: "tiny".into(),
        ephemeral: Some(pb::Ephemeral {
            max_events: 1,
            max_bytes: 1000,
            overflow: pb::Overflow::Reject as i32,
        }),
        ..Default::default()
    })
    .await
    .expect("ephemeral");
    // With no subscription an event leaves at once; one that nobody acknowledged stays.
    c.create_subscription(pb::SubscriptionConfig {
        stream: "tiny".into(),
        name: "holder".into(),
        ..Default::default()
    })
    .await
    .expect("subscription");
    publish(&mut c, "tiny", vec![json_event("t", "{}")]).await;
    let e = c
        .publish(pb::PublishRequest {
            stream: "tiny".into(),
            events: vec![json_event("t", "{}")],
            expected_offset: None,
        })
        .await
        .expect_err("full");
    assert_eq!(e.code(), Code::ResourceExhausted);

    // A subscribe stream whose first message is not `open`.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SubscribeRequest {
        request_id: 1,
        kind: Some(In::Credit(pb::Credit { events: 1 })),
    })
    .await
    .expect("send");
    let e = c
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("must open first");
    assert_eq!(e.code(), Code::InvalidArgument);

    // Nothing of the refused requests was written.
    let info = c
        .get_stream(pb::GetStreamRequest { name: "s".into() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.length, 1);
    let list = c.list_streams(()).await.expect("list").into_inner();
    assert_eq!(list.streams.len(), 2);
}

async fn server_streaming_variant_settles_by_session_id(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "settle");
    let mut c = server.client().await;
    create_stream(&mut c, "web", 1).await;
    let mut o = open("web", "browser", "tab1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        ..Default::default()
    });
    o.initial_credit = Some(2);
    let mut rx = c
        .subscribe_server_stream(o)
        .await
        .expect("subscribe")
        .into_inner();
    let first = within("subscribed", rx.message())
        .await
        .expect("ok")
        .expect("msg");
    let Some(Out::Subscribed(pb::Subscribed { session_id })) = first.kind else {
        panic!("first message {first:?}");
    };
    let events = (0..3)
        .map(|i| json_event("click", &format!("{i}")))
        .collect();
    publish(&mut c, "web", events).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = within("events", rx.message())
            .await
            .expect("ok")
            .expect("msg");
        if let Some(Out::Events(d)) = m.kind {
            got.extend(d.events);
        }
    }
    assert_eq!(offsets(&got), vec![0, 1], "credit 2: two events only");
    let r = c
        .settle(pb::SettleRequest {
            session_id: session_id.clone(),
            kind: Some(pb::settle_request::Kind::Ack(pb::Ack {
                positions: positions(&got),
            })),
        })
        .await
        .expect("settle")
        .into_inner();
    assert!(
        matches!(
            r.kind,
            Some(pb::settle_response::Kind::Settled(pb::Settled { ref applied, .. }))
                if applied.len() == 2
        ),
        "{r:?}"
    );
    c.settle(pb::SettleRequest {
        session_id: session_id.clone(),
        kind: Some(pb::settle_request::Kind::Credit(pb::Credit { events: 5 })),
    })
    .await
    .expect("credit");
    let third = loop {
        let m = within("third", rx.message())
            .await
            .expect("ok")
            .expect("msg");
        if let Some(Out::Events(d)) = m.kind {
            break d.events;
        }
    };
    assert_eq!(offsets(&third), vec![2]);
    let e = c
        .settle(pb::SettleRequest {
            session_id: "no-such-session".into(),
            kind: Some(pb::settle_request::Kind::Ack(pb::Ack {
                positions: positions(&third),
            })),
        })
        .await
        .expect_err("unknown session");
    assert_eq!(e.code(), Code::NotFound);
}

async fn sigterm_during_a_publish_storm_loses_no_acknowledged_event(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(b, dir.path(), "sigterm");
    let mut c = server.client().await;
    create_stream(&mut c, "storm", 2).await;
    let (acked_tx, acked_rx) = std::sync::mpsc::channel::<(u32, u64, String)>();
    let mut producers = Vec::new();
    for p in 0..8 {
        let mut c = c.clone();
        let acked_tx = acked_tx.clone();
        producers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let mut e = json_event("tick", &format!("{{\"p\":{p},\"i\":{i}}}"));
                e.key = Some(format!("{p}").into_bytes().into());
                let r = c
                    .publish(pb::PublishRequest {
                        stream: "storm".into(),
                        events: vec![e],
                        expected_offset: None,
                    })
                    .await;
                match r {
                    Ok(r) => {
                        let o = &r.into_inner().outcomes[0];
                        let pos = o.position.expect("position");
                        let _ = acked_tx.send((pos.partition, pos.offset, format!("{p}/{i}")));
                    }
                    Err(_) => return i,
                }
            }
            0
        }));
    }
    drop(acked_tx);
    // Let the storm run until some appends were acknowledged, then stop the server.
    let mut acked = Vec::new();
    while acked.len() < 200 {
        acked.push(acked_rx.recv().expect("acks"));
    }
    assert!(server.terminate(), "the server exits cleanly on SIGTERM");
    for p in producers {
        within("producer ends", p).await.expect("producer");
    }
    acked.extend(acked_rx.try_iter());
    let server = server.restart();
    let mut c = server.client().await;
    for (partition, offset, body) in &acked {
        let r = c
            .read(pb::ReadRequest {
                stream: "storm".into(),
                partition: *partition,
                from: *offset,
                max: Some(1),
            })
            .await
            .expect("read back")
            .into_inner();
        let (p, i) = body.split_once('/').expect("body");
        let want = format!("{{\"p\":{p},\"i\":{i}}}");
        assert_eq!(
            r.events.first().map(|e| e.payload.as_ref()),
            Some(want.as_bytes()),
            "acknowledged event {body} at {partition}/{offset}"
        );
    }
}

/// `--max-payload-bytes` is the engine's payload limit: one byte over is refused, naming the
/// field and the limit, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_limit_is_the_servers_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(Backend::Sqlite, dir.path(), "payload");
    let server = Server::start_on(dir.path(), &store, &["--max-payload-bytes", "100"]);
    let mut c = server.client().await;
    create_stream(&mut c, "p", 1).await;
    let fits = json_event("t", &format!("\"{}\"", "x".repeat(98)));
    publish(&mut c, "p", vec![fits]).await;
    let over = json_event("t", &format!("\"{}\"", "x".repeat(99)));
    let e = c
        .publish(pb::PublishRequest {
            stream: "p".into(),
            events: vec![over],
            expected_offset: None,
        })
        .await
        .expect_err("101 bytes");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("payload") && e.message().contains("100"),
        "{}",
        e.message()
    );
    let info = c
        .get_stream(pb::GetStreamRequest { name: "p".into() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.partitions[0].next, 1, "only the event that fits");
}

/// A journal recorded by the server replays in the simulator, and its checker finds every
/// rule kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_journal_replays_in_the_simulator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("engine.journal");
    let store = new_store(Backend::Sqlite, dir.path(), "journal");
    let journal_arg = journal.display().to_string();
    let mut server = Server::start_on(dir.path(), &store, &["--journal", &journal_arg]);
    let mut c = server.client().await;
    create_stream(&mut c, "j", 2).await;
    let mut o = open("j", "sub", "c1");
    o.create = Some(pb::SubscriptionConfig::default());
    let mut s = Session::open(&mut c, o).await;
    let events = (0..10).map(|i| json_event("t", &format!("{i}"))).collect();
    publish(&mut c, "j", events).await;
    let got = s.events(10).await;
    assert_eq!(s.ack(&got).await.applied.len(), 10);
    drop(s);
    assert!(server.terminate(), "clean stop");
    let file = std::fs::File::open(&journal).expect("journal written");
    let report = tributary_simulation::replay::check_journals([std::io::BufReader::new(file)])
        .expect("journal readable");
    assert!(report.failure.is_none(), "{:?}", report.failure);
    let bytes = std::fs::read(&journal).expect("read journal");
    let (_, records) = tributary_simulation::journal::read_all(&bytes).expect("decode");
    assert_eq!(report.records, records.len() as u64);
    use tributary_core::{Command, Input};
    let appended: usize = records
        .iter()
        .map(|(_, i)| match i {
            Input::Client {
                cmd: Command::Append(a),
                ..
            } => a.events.len(),
            _ => 0,
        })
        .sum();
    let acked: usize = records
        .iter()
        .map(|(_, i)| match i {
            Input::Client {
                cmd: Command::Ack { positions, .. },
                ..
            } => positions.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(
        (appended, acked),
        (10, 10),
        "the journal holds the publish and the ack"
    );
}

/// The next assignment message of a session (events in between are kept aside).
async fn assignment(s: &mut Session) -> pb::Assignment {
    loop {
        if let Some(Out::Assignment(a)) = s.next().await.kind {
            return a;
        }
    }
}

async fn consumer_group_shares_partitions_by_generation(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "group");
    let mut c = server.client().await;
    create_stream(&mut c, "clicks", 4).await;
    let mut o = open("clicks", "analytics", "m1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::ConsumerGroup as i32,
        commit: Some(pb::CommitStrategy {
            kind: Some(pb::commit_strategy::Kind::Manual(())),
        }),
        ..Default::default()
    });
    let mut m1 = Session::open(&mut c, o.clone()).await;
    let first = assignment(&mut m1).await;
    assert_eq!(
        first.partitions,
        vec![0, 1, 2, 3],
        "alone, it owns everything"
    );
    o.consumer = "m2".into();
    let mut m2 = Session::open(&mut c, o).await;
    let a2 = assignment(&mut m2).await;
    let a1 = assignment(&mut m1).await;
    assert!(
        a1.generation > first.generation,
        "a join starts a new generation"
    );
    assert_eq!(a1.generation, a2.generation);
    let mut all: Vec<u32> = a1
        .partitions
        .iter()
        .chain(&a2.partitions)
        .copied()
        .collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3], "each partition has one owner");
    assert_eq!((a1.partitions.len(), a2.partitions.len()), (2, 2));

    // A commit carrying the old generation is refused and changes nothing.
    let id = m1
        .send(In::Commit(pb::Commit {
            generation: first.generation,
            offsets: vec![],
        }))
        .await;
    match m1.answer(id).await.0 {
        Out::Error(e) => assert_eq!(reason(&e), "STALE_GENERATION", "{e:?}"),
        other => panic!("stale commit answered {other:?}"),
    }

    let events = (0..16)
        .map(|i| {
            let mut e = json_event("click", &format!("{i}"));
            e.key = Some(format!("user-{i}").into_bytes().into());
            e
        })
        .collect();
    publish(&mut c, "clicks", events).await;
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    within("group deliveries", async {
        while got1.len() + got2.len() < 16 {
            tokio::select! {
                m = m1.rx.message() => if let Ok(Some(pb::SubscribeResponse { kind: Some(Out::Events(d)), .. })) = m { got1.extend(d.events) },
                m = m2.rx.message() => if let Ok(Some(pb::SubscribeResponse { kind: Some(Out::Events(d)), .. })) = m { got2.extend(d.events) },
            }
        }
    })
    .await;
    let parts = |ds: &[pb::Delivery]| -> Vec<u32> {
        ds.iter()
            .map(|d| d.event.as_ref().expect("event").partition)
            .collect()
    };
    assert!(
        parts(&got1).iter().all(|p| a1.partitions.contains(p)),
        "m1 reads only its partitions"
    );
    assert!(
        parts(&got2).iter().all(|p| a2.partitions.contains(p)),
        "m2 reads only its partitions"
    );
    assert_eq!(m1.ack(&got1).await.applied.len(), got1.len());
    let id = m1
        .send(In::Commit(pb::Commit {
            generation: a1.generation,
            offsets: vec![],
        }))
        .await;
    match m1.answer(id).await.0 {
        Out::Committed(_) => {}
        other => panic!("commit answered {other:?}"),
    }
    let info = c
        .get_subscription(pb::SubscriptionRef {
            stream: "clicks".into(),
            subscription: "analytics".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    let group = info.group.expect("group info");
    assert_eq!(group.generation, a1.generation);
    for p in &a1.partitions {
        assert_eq!(group.owners[*p as usize], "m1");
    }
}

/// Waits until `s` is assigned every partition in `all` (a generation after `after`),
/// heartbeating as a live member does; returns how long it took.
async fn takes_over(s: &mut Session, after: u64, all: &[u32], bound: Duration) -> Duration {
    let start = Instant::now();
    let mut beat = tokio::time::interval(Duration::from_millis(200));
    tokio::time::timeout(bound, async {
        loop {
            tokio::select! {
                _ = beat.tick() => { s.send(In::Heartbeat(pb::Heartbeat { time: 0 })).await; }
                m = s.rx.message() => match m.expect("session").expect("open").kind {
                    Some(Out::Assignment(a)) if a.generation > after && a.partitions == all => break,
                    _ => {}
                },
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the partitions did not move within {bound:?}"));
    start.elapsed()
}

/// SPEC 3: members heartbeat themselves. A member whose connection stays open but that sends
/// nothing loses its partitions after `session_timeout`; the server never heartbeats for it.
async fn a_member_that_stops_heartbeating_loses_its_partitions(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "liveness");
    let mut c = server.client().await;
    create_stream(&mut c, "clicks", 2).await;
    let mut o = open("clicks", "analytics", "hung");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::ConsumerGroup as i32,
        heartbeat_interval_ms: Some(300),
        session_timeout_ms: Some(1500),
        commit: Some(pb::CommitStrategy {
            kind: Some(pb::commit_strategy::Kind::Manual(())),
        }),
        ..Default::default()
    });
    let mut hung = Session::open(&mut c, o.clone()).await;
    assert_eq!(assignment(&mut hung).await.partitions, vec![0, 1]);
    o.consumer = "live".into();
    let mut live = Session::open(&mut c, o).await;
    let shared = assignment(&mut live).await;
    assert_eq!(shared.partitions.len(), 1, "{shared:?}");
    // `hung` keeps its stream open and says nothing from here on.
    takes_over(
        &mut live,
        shared.generation,
        &[0, 1],
        Duration::from_secs(20),
    )
    .await;
    // The hung member is told its session ended.
    let told = within("the expired member is told", async {
        loop {
            if let Some(Out::Assignment(a)) = hung.next().await.kind
                && !a.member
            {
                return a;
            }
        }
    })
    .await;
    assert!(told.partitions.is_empty(), "{told:?}");
}

/// A member whose process is frozen (SIGSTOP) answers no HTTP/2 ping: the server's keepalive
/// closes its connection and its partitions move to the other member long before its
/// session timeout (60 s here) would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_process_loses_its_partitions_through_keepalive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(Backend::Sqlite, dir.path(), "frozen");
    let server = Server::start_on(
        dir.path(),
        &store,
        &[
            "--grpc-keepalive-interval",
            "300ms",
            "--grpc-keepalive-timeout",
            "300ms",
        ],
    );
    let mut c = server.client().await;
    create_stream(&mut c, "clicks", 2).await;
    c.create_subscription(pb::SubscriptionConfig {
        stream: "clicks".into(),
        name: "analytics".into(),
        mode: pb::SubscriptionMode::ConsumerGroup as i32,
        heartbeat_interval_ms: Some(1000),
        session_timeout_ms: Some(60_000),
        ..Default::default()
    })
    .await
    .expect("create subscription");
    // The member to freeze: the CLI, a process of its own that heartbeats by itself.
    let mut member = std::process::Command::new(BIN)
        .args([
            "subscribe",
            "clicks",
            "--subscription",
            "analytics",
            "--mode",
            "group",
            "--consumer",
            "frozen",
        ])
        .env("TRIBUTARY_SERVER", &server.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the CLI");
    let owners = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.get_subscription(pb::SubscriptionRef {
                stream: "clicks".into(),
                subscription: "analytics".into(),
            })
            .await
            .expect("describe")
            .into_inner()
            .group
            .map(|g| g.owners)
            .unwrap_or_default()
        }
    };
    within("the CLI joins", async {
        while owners(&mut c).await != ["frozen", "frozen"] {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut live = Session::open(&mut c, open("clicks", "analytics", "live")).await;
    let shared = assignment(&mut live).await;
    assert_eq!(shared.partitions.len(), 1, "{shared:?}");
    let pid = member.id().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    assert!(stop.success());
    let took = takes_over(
        &mut live,
        shared.generation,
        &[0, 1],
        Duration::from_secs(20),
    )
    .await;
    let _ = member.kill();
    let _ = member.wait();
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(owners(&mut c).await, ["live", "live"]);
}

async fn read_receipts_track_delivered_and_read(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "receipts");
    let mut c = server.client().await;
    create_stream(&mut c, "inbox", 1).await;
    let mut o = open("inbox", "mail", "alice");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::ReadReceipt as i32,
        unread_timeout_ms: Some(200),
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o).await;
    let events = (0..3)
        .map(|i| json_event("message", &format!("{i}")))
        .collect();
    publish(&mut c, "inbox", events).await;
    let got = s.events(3).await;
    assert_eq!(s.ack(&got).await.applied.len(), 3, "delivered");
    let pos = |o: u64| pb::Position {
        partition: 0,
        offset: o,
    };
    let id = s
        .send(In::MarkRead(pb::MarkRead {
            positions: vec![pos(0)],
            up_to: None,
        }))
        .await;
    match s.answer(id).await.0 {
        Out::MarkedRead(m) => assert_eq!(m.marked, 1),
        other => panic!("mark read answered {other:?}"),
    }
    // The two unread events time out, once each.
    let mut timed_out = Vec::new();
    while timed_out.len() < 2 {
        if let Some(Out::Notice(n)) = s.next().await.kind {
            let Some(pb::consumer_notice::Kind::UnreadTimeout(u)) = n.kind else {
                panic!("notice {n:?}")
            };
            timed_out.push(u.position.expect("position").offset);
        }
    }
    timed_out.sort();
    assert_eq!(timed_out, vec![1, 2]);
    let id = s
        .send(In::ReceiptStatus(pb::ReceiptQuery {
            position: Some(pos(0)),
        }))
        .await;
    match s.answer(id).await.0 {
        Out::ReceiptStatus(r) => {
            assert_eq!(r.unread, 2);
            assert_eq!(r.last_read, vec![0]);
            assert!(
                r.receipt.and_then(|x| x.read_at).is_some(),
                "offset 0 was read"
            );
        }
        other => panic!("status answered {other:?}"),
    }
    let id = s
        .send(In::MarkRead(pb::MarkRead {
            positions: vec![],
            up_to: Some(pos(2)),
        }))
        .await;
    match s.answer(id).await.0 {
        Out::MarkedRead(m) => assert_eq!(m.marked, 2),
        other => panic!("mark read answered {other:?}"),
    }
    let id = s
        .send(In::ReceiptStatus(pb::ReceiptQuery { position: None }))
        .await;
    match s.answer(id).await.0 {
        Out::ReceiptStatus(r) => assert_eq!((r.unread, r.last_read), (0, vec![2])),
        other => panic!("status answered {other:?}"),
    }
}

async fn upcasting_on_delivery_and_replay(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "upcast");
    let mut c = server.client().await;
    let register = |version: u32, schema: &str, rules: &str| pb::RegisterSchemaRequest {
        event_type: "order.created".into(),
        version,
        json_schema: schema.into(),
        rules_json: rules.into(),
    };
    c.register_schema(register(1, r#"{"type":"object","required":["name"]}"#, ""))
        .await
        .expect("v1");
    c.register_schema(register(
        2,
        "",
        r#"[{"op":"rename","from":"name","to":"customer"}]"#,
    ))
    .await
    .expect("v2");
    c.register_schema(register(
        3,
        r#"{"type":"object","required":["customer","currency"]}"#,
        r#"[{"op":"add","field":"currency","default":"EUR"}]"#,
    ))
    .await
    .expect("v3");
    // v4 requires a field that neither v3 nor its upcaster gives: refused, naming it.
    let e = c
        .register_schema(register(4, r#"{"type":"object","required":["vat"]}"#, "[]"))
        .await
        .expect_err("incompatible");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.get_details_error_info().map(|i| i.reason),
        Some("SCHEMA_INCOMPATIBLE".into())
    );
    assert!(e.message().contains("vat"), "{}", e.message());
    let e = c
        .register_schema(register(7, "", ""))
        .await
        .expect_err("not next");
    assert_ne!(e.code(), Code::Ok);
    let listed = c.list_schemas(()).await.expect("list").into_inner();
    assert_eq!(
        listed.schemas[0].versions.len(),
        3,
        "nothing of the refused ones kept"
    );

    create_stream(&mut c, "orders", 1).await;
    let mut e = json_event("order.created", r#"{"name":"ann"}"#);
    e.schema_version = Some(1);
    publish(&mut c, "orders", vec![e]).await;
    let mut latest = open("orders", "billing", "c1");
    latest.create = Some(pb::SubscriptionConfig::default());
    let mut s = Session::open(&mut c, latest).await;
    let got = s.events(1).await;
    let ev = got[0].event.as_ref().expect("event");
    assert_eq!(ev.schema_version, 3, "upcast to the latest by default");
    let data: serde_json::Value = serde_json::from_slice(&ev.payload).expect("json");
    assert_eq!(
        data,
        serde_json::json!({"customer": "ann", "currency": "EUR"})
    );

    let mut v2 = open("orders", "legacy", "c2");
    v2.create = Some(pb::SubscriptionConfig {
        schema_versions: [("order.created".to_string(), 2)].into(),
        ..Default::default()
    });
    let mut s2 = Session::open(&mut c, v2).await;
    let got = s2.events(1).await;
    let ev = got[0].event.as_ref().expect("event");
    assert_eq!(ev.schema_version, 2);
    let data: serde_json::Value = serde_json::from_slice(&ev.payload).expect("json");
    assert_eq!(data, serde_json::json!({"customer": "ann"}));

    // Stored bytes never change: a read gives v1, a replay asking for v2 gives v2.
    let read = c
        .read(pb::ReadRequest {
            stream: "orders".into(),
            partition: 0,
            from: 0,
            max: Some(1),
        })
        .await
        .expect("read")
        .into_inner();
    assert_eq!(read.events[0].payload.as_ref(), br#"{"name":"ann"}"#);
    let mut r = c
        .replay(pb::ReplayRequest {
            stream: "orders".into(),
            schema_versions: [("order.created".to_string(), 2)].into(),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    loop {
        let m = within("replay", r.message())
            .await
            .expect("ok")
            .expect("item");
        if let Some(pb::replay_response::Kind::Events(d)) = m.kind {
            let ev = d.events[0].event.as_ref().expect("event");
            assert_eq!(ev.schema_version, 2);
            break;
        }
    }
}

/// `PublishPipelined`: more batches than the server awaits at once (back-pressure), among them
/// a missing batch, an invalid event and a wrong expected offset. Every batch is answered, in
/// the order sent, the failures in their places and nothing of theirs written; the stream ends
/// once the client has closed its side and the last answer is out.
async fn pipelined_publish_answers_in_order_with_failures_in_place(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "pipelined");
    let mut c = server.client().await;
    create_stream(&mut c, "p", 1).await;
    const BATCHES: u64 = 300;
    let (tx, rx) = tokio::sync::mpsc::channel(BATCHES as usize);
    let mut failing = Vec::new();
    for i in 0..BATCHES {
        let mut batch = pb::PublishRequest {
            stream: "p".into(),
            events: vec![json_event("t", &format!(r#"{{"i":{i}}}"#))],
            expected_offset: None,
        };
        let batch = match i % 50 {
            7 => {
                failing.push((i, Code::InvalidArgument));
                None
            }
            13 => {
                batch.events[0].event_type = String::new();
                failing.push((i, Code::InvalidArgument));
                Some(batch)
            }
            21 => {
                batch.expected_offset = Some(1_000_000);
                failing.push((i, Code::FailedPrecondition));
                Some(batch)
            }
            _ => Some(batch),
        };
        tx.send(pb::PipelinedPublish {
            request_id: 1000 + i,
            batch,
        })
        .await
        .expect("queue a batch");
    }
    drop(tx);
    let mut answers = c
        .publish_pipelined(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open the pipelined publish")
        .into_inner();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(a) = tokio::time::timeout_at(deadline.into(), answers.message())
        .await
        .expect("the answers end once the client has closed its side")
        .expect("answer")
    {
        got.push(a);
    }
    assert_eq!(got.len() as u64, BATCHES, "one answer per batch");
    let mut next_offset = 0;
    let mut written = Vec::new();
    for (i, a) in got.iter().enumerate() {
        let i = i as u64;
        assert_eq!(
            a.request_id,
            1000 + i,
            "answers in the order of the batches"
        );
        match (&a.kind, failing.iter().find(|(f, _)| *f == i)) {
            (Some(pb::pipelined_answer::Kind::Error(e)), Some((_, code))) => {
                assert_eq!(e.code, *code as i32, "batch {i}: {e:?}");
                assert!(!e.message.is_empty());
            }
            (Some(pb::pipelined_answer::Kind::Published(p)), None) => {
                let pos = p.outcomes[0].position.expect("position");
                assert_eq!(pos.offset, next_offset, "batch {i}");
                next_offset += 1;
                written.push(i);
            }
            (other, f) => panic!("batch {i}: answered {other:?}, expected failure {f:?}"),
        }
    }
    let mut read = Vec::new();
    loop {
        let page = c
            .read(pb::ReadRequest {
                stream: "p".into(),
                partition: 0,
                from: read.len() as u64,
                max: Some(100),
            })
            .await
            .expect("read")
            .into_inner()
            .events;
        if page.is_empty() {
            break;
        }
        read.extend(page);
    }
    let bodies: Vec<String> = read
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    let expected: Vec<String> = written.iter().map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    assert_eq!(bodies, expected, "exactly the accepted batches, in order");
}

/// The whole shutdown takes at most `shutdown_timeout`, however many of its steps are held:
/// here a `PublishStream` call whose client never ends its stream (it holds the gRPC server,
/// and through it the engine's handles) and an HTTP request whose body never finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_takes_at_most_shutdown_timeout() {
    use tokio::io::AsyncWriteExt;
    const TIMEOUT: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tributary.toml");
    std::fs::write(
        &config,
        format!("shutdown_timeout = \"{}s\"\n", TIMEOUT.as_secs()),
    )
    .expect("config");
    let store = new_store(Backend::Sqlite, dir.path(), "shutdown");
    let config_arg = config.display().to_string();
    let mut server = Server::start_on(
        dir.path(),
        &store,
        &["--config", &config_arg, "--log-format", "json"],
    );
    let mut c = server.client().await;
    create_stream(&mut c, "held", 1).await;
    // A client stream that stays open after its first batch.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::PublishRequest {
        stream: "held".into(),
        events: vec![json_event("t", "{}")],
        expected_offset: None,
    })
    .await
    .expect("queue the batch");
    let mut streaming = c.clone();
    let call = tokio::spawn(async move {
        streaming
            .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    // The call is being served once its batch is in the stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c
            .get_stream(pb::GetStreamRequest {
                name: "held".into(),
            })
            .await
            .expect("get stream")
            .into_inner();
        if s.length == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held call's batch never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An HTTP request whose body never comes whole.
    let addr = server.http.trim_start_matches("http://").to_string();
    let mut http = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    http.write_all(
        format!(
            "POST /api/event-streams HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .expect("send");

    let started = Instant::now();
    assert!(server.terminate(), "a clean exit");
    let took = started.elapsed();
    assert!(
        took < TIMEOUT + Duration::from_millis(1500),
        "the shutdown took {took:?} with shutdown_timeout {TIMEOUT:?}:\n{}",
        server.log()
    );
    // It did wait for the held call (the timeout was reached, and said so).
    assert!(took >= TIMEOUT - Duration::from_millis(100), "{took:?}");
    assert!(server.log().contains("\"code\":3"), "{}", server.log());
    drop((tx, http));
    let _ = call.await;
}

/// `RemoveConsumer`: refused with a typed status while attached, for a consumer without a
/// position and for an exclusive subscription; once detached the position goes, for good.
async fn remove_consumer_drops_a_detached_broadcast_position(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "remove");
    let mut c = server.client().await;
    create_stream(&mut c, "feed", 1).await;
    publish(
        &mut c,
        "feed",
        vec![json_event("t", "{}"), json_event("t", "{}")],
    )
    .await;
    let mut o = open("feed", "fan", "keep");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::ReadReceipt as i32,
        ..Default::default()
    });
    let mut keep = Session::open(&mut c, o).await;
    let got = keep.events(2).await;
    keep.ack(&got).await;
    let mut gone = Session::open(&mut c, open("feed", "fan", "gone")).await;
    let got = gone.events(2).await;
    gone.ack(&got[..1]).await;
    let remove = |consumer: &str, subscription: &str| pb::RemoveConsumerRequest {
        stream: "feed".into(),
        subscription: subscription.into(),
        consumer: consumer.into(),
    };
    let reason = |e: &tonic::Status| e.get_details_error_info().map(|i| i.reason);

    let e = c
        .remove_consumer(remove("gone", "fan"))
        .await
        .expect_err("attached");
    assert_eq!(
        (e.code(), reason(&e).as_deref()),
        (Code::FailedPrecondition, Some("CONSUMER_ATTACHED")),
        "{e:?}"
    );
    drop(gone);
    wait_detached(&mut c, "feed", "fan", "gone").await;
    let e = c
        .remove_consumer(remove("ghost", "fan"))
        .await
        .expect_err("no position");
    assert_eq!(
        (e.code(), reason(&e).as_deref()),
        (Code::NotFound, Some("CONSUMER_NOT_FOUND")),
        "{e:?}"
    );
    let e = c
        .remove_consumer(remove("Bad Name", "fan"))
        .await
        .expect_err("bad id");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    c.remove_consumer(remove("gone", "fan"))
        .await
        .expect("removed");
    let info = c
        .get_subscription(pb::SubscriptionRef {
            stream: "feed".into(),
            subscription: "fan".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    let who: Vec<&str> = info.cursors.iter().map(|c| c.consumer.as_str()).collect();
    assert_eq!(who, vec!["keep"]);
    let e = c
        .remove_consumer(remove("gone", "fan"))
        .await
        .expect_err("gone already");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Exclusive: one shared position, nothing per consumer to remove.
    let mut w = open("feed", "work", "w");
    w.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        ..Default::default()
    });
    drop(Session::open(&mut c, w).await);
    wait_detached(&mut c, "feed", "work", "w").await;
    let e = c
        .remove_consumer(remove("w", "work"))
        .await
        .expect_err("exclusive");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.get_details_bad_request().is_some(),
        "names the field: {e:?}"
    );
    drop(keep);

    // consumer_expiry_ms: a detached consumer's position goes by itself.
    let mut o = open("feed", "brief", "short");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Broadcast as i32,
        consumer_expiry_ms: Some(300),
        ..Default::default()
    });
    let mut short = Session::open(&mut c, o).await;
    let got = short.events(2).await;
    short.ack(&got[..1]).await;
    let describe = pb::SubscriptionRef {
        stream: "feed".into(),
        subscription: "brief".into(),
    };
    let info = c
        .get_subscription(describe.clone())
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        info.config.as_ref().and_then(|c| c.consumer_expiry_ms),
        Some(300)
    );
    assert_eq!(info.cursors.len(), 1);
    drop(short);
    within("the detached consumer's position expires", async {
        loop {
            let info = c
                .get_subscription(describe.clone())
                .await
                .expect("describe");
            if info.get_ref().cursors.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let e = c
        .create_subscription(pb::SubscriptionConfig {
            stream: "feed".into(),
            name: "work2".into(),
            mode: pb::SubscriptionMode::Exclusive as i32,
            consumer_expiry_ms: Some(300),
            ..Default::default()
        })
        .await
        .expect_err("no position per consumer");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}
