//! The settled v1 wire API (issue 23), end to end over real sockets on SQLite and on a real
//! PostgreSQL: per-partition positions, reading a whole stream, listing subscriptions,
//! settlements with reasons, in-band errors with the call statuses' details, the correlation
//! rule of a session, optional fields with one rule, and the server's limits.

mod common;

use common::*;
use pb::subscribe_request::Kind as In;
use pb::subscribe_response::Kind as Out;
use tonic::Code;
use tonic_types::StatusExt;
use tributary_grpc::pb;

on_both_stores!(
    per_partition_offsets_start_reset_and_replay,
    read_stream_pages_through_every_partition,
    list_subscriptions_names_each_with_its_configuration,
    settlements_name_every_position_and_why_it_was_skipped,
    session_errors_carry_the_status_details_and_the_request_id,
    the_correlation_rule_is_enforced,
    explicit_values_are_taken_or_refused_never_replaced,
    server_info_tells_the_limits_the_server_enforces,
);

// A client from elsewhere, on both runtimes' servers.
mod outsider {
    on_sqlite_both_runtimes!(a_python_client_generated_from_the_proto_runs_a_session);
    use super::*;
}

/// A client generated from the `.proto` in Python with grpcio-tools (`scripts/check-python-
/// client`), sharing none of our code or assumptions, runs a session: publish, `ReadStream`,
/// subscribe, ack with a position skipped and its reason, an in-band error and a call status
/// decoded as `google.rpc.Status`, `GetServerInfo`. Skipped without the Python packages,
/// unless `TRIBUTARY_REQUIRE_API_TOOLS` is set (CI installs them and sets it).
async fn a_python_client_generated_from_the_proto_runs_a_session(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "python");
    let target = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    tokio::task::spawn_blocking(move || {
        outside_check(
            "check-python-client",
            &[&target],
            &[],
            "TRIBUTARY_REQUIRE_API_TOOLS",
        )
    })
    .await
    .expect("join");
}

fn at(partition: u32, offset: u64) -> pb::Position {
    pb::Position { partition, offset }
}

fn offsets_at(positions: Vec<pb::Position>) -> pb::StartPosition {
    pb::StartPosition {
        at: Some(pb::start_position::At::Offsets(pb::PartitionOffsets {
            positions,
        })),
    }
}

/// Appends `n` events to partition `p` of `stream` (keys chosen to land there).
async fn fill_partition(c: &mut Client, stream: &str, partitions: u32, p: u32, n: usize) {
    let mut key = 0u32;
    let mut sent = 0;
    while sent < n {
        key += 1;
        let k = key.to_string();
        if tributary_core::partition_of_key(k.as_bytes(), partitions) != p {
            continue;
        }
        let mut e = json_event("t", "{}");
        e.key = Some(k.into_bytes().into());
        publish(c, stream, vec![e]).await;
        sent += 1;
    }
}

async fn per_partition_offsets_start_reset_and_replay(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "offsets");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 2).await;
    fill_partition(&mut c, "s", 2, 0, 4).await;
    fill_partition(&mut c, "s", 2, 1, 4).await;

    // Start: partition 0 at 3, partition 1 (not named) at the beginning.
    let mut o = open("s", "q", "a");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        start: Some(offsets_at(vec![at(0, 3)])),
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o).await;
    let got = s.events(5).await;
    let mut seen: Vec<(u32, u64)> = positions(&got)
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect();
    seen.sort();
    assert_eq!(seen, vec![(0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]);
    assert_eq!(s.ack(&got).await.applied.len(), 5);

    // Reset: partition 1 back to 2; partition 0 (not named) stays where it is (at its end).
    c.reset_offset(pb::ResetOffsetRequest {
        stream: "s".into(),
        subscription: "q".into(),
        consumer: String::new(),
        to: Some(offsets_at(vec![at(1, 2)])),
    })
    .await
    .expect("reset");
    let again = s.events(2).await;
    assert_eq!(
        positions(&again),
        vec![at(1, 2), at(1, 3)],
        "only the named partition moved"
    );

    // A partition that does not exist, or one named twice, is refused and changes nothing.
    for bad in [vec![at(2, 0)], vec![at(0, 1), at(0, 2)]] {
        let e = c
            .reset_offset(pb::ResetOffsetRequest {
                stream: "s".into(),
                subscription: "q".into(),
                consumer: String::new(),
                to: Some(offsets_at(bad.clone())),
            })
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        let field = &e
            .get_details_bad_request()
            .expect("bad request")
            .field_violations[0];
        assert!(field.field.starts_with("offsets"), "{field:?}");
    }

    // Replay: partition 0 from 2, partition 1 (not named) from its first offset.
    let mut replay = c
        .replay(pb::ReplayRequest {
            stream: "s".into(),
            from: Some(pb::replay_request::From::Offsets(pb::PartitionOffsets {
                positions: vec![at(0, 2)],
            })),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(m) = within("replay", replay.message()).await.expect("replay") {
        match m.kind {
            Some(pb::replay_response::Kind::Events(d)) => replayed.extend(positions(&d.events)),
            Some(pb::replay_response::Kind::Done(_)) => break,
            _ => {}
        }
    }
    replayed.sort_by_key(|p| (p.partition, p.offset));
    assert_eq!(
        replayed,
        vec![at(0, 2), at(0, 3), at(1, 0), at(1, 1), at(1, 2), at(1, 3)]
    );
}

async fn read_stream_pages_through_every_partition(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "readstream");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 3).await;
    fill_partition(&mut c, "s", 3, 0, 3).await;
    fill_partition(&mut c, "s", 3, 2, 2).await;

    // Pages of 2, each continuing from the last page's `next`, until `end`.
    let mut from = Vec::new();
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let page = c
            .read_stream(pb::ReadStreamRequest {
                stream: "s".into(),
                from: from.clone(),
                max: Some(2),
            })
            .await
            .expect("read stream")
            .into_inner();
        pages += 1;
        assert!(page.events.len() <= 2, "{page:?}");
        assert_eq!(page.next.len(), 3, "a position for every partition");
        all.extend(page.events.iter().map(|e| (e.partition, e.offset)));
        from = page.next;
        if page.end {
            break;
        }
        assert!(pages < 10, "no end after {pages} pages");
    }
    assert_eq!(all, vec![(0, 0), (0, 1), (0, 2), (2, 0), (2, 1)]);
    assert_eq!(from, vec![at(0, 3), at(1, 0), at(2, 2)]);

    // What is appended later is found from the last `next`.
    fill_partition(&mut c, "s", 3, 1, 1).await;
    let page = c
        .read_stream(pb::ReadStreamRequest {
            stream: "s".into(),
            from,
            max: None,
        })
        .await
        .expect("read stream")
        .into_inner();
    assert_eq!(
        page.events
            .iter()
            .map(|e| (e.partition, e.offset))
            .collect::<Vec<_>>(),
        vec![(1, 0)]
    );
    assert!(page.end);

    // max 0 is refused: an explicit value is never replaced by the default.
    let e = c
        .read_stream(pb::ReadStreamRequest {
            stream: "s".into(),
            from: Vec::new(),
            max: Some(0),
        })
        .await
        .expect_err("max 0");
    assert_eq!(e.code(), Code::InvalidArgument);
}

async fn list_subscriptions_names_each_with_its_configuration(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "listsubs");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 1).await;
    for (name, mode) in [
        ("b", pb::SubscriptionMode::Broadcast),
        ("a", pb::SubscriptionMode::Exclusive),
    ] {
        c.create_subscription(pb::SubscriptionConfig {
            stream: "s".into(),
            name: name.into(),
            mode: mode as i32,
            max_deliveries: Some(3),
            ..Default::default()
        })
        .await
        .expect("create subscription");
    }
    let list = c
        .list_subscriptions(pb::ListSubscriptionsRequest { stream: "s".into() })
        .await
        .expect("list")
        .into_inner()
        .subscriptions;
    let names: Vec<(String, i32, Option<u32>)> = list
        .iter()
        .filter_map(|s| s.config.as_ref())
        .map(|c| (c.name.clone(), c.mode, c.max_deliveries))
        .collect();
    assert_eq!(
        names,
        vec![
            ("a".into(), pb::SubscriptionMode::Exclusive as i32, Some(3)),
            ("b".into(), pb::SubscriptionMode::Broadcast as i32, Some(3)),
        ]
    );
    let e = c
        .list_subscriptions(pb::ListSubscriptionsRequest {
            stream: "nope".into(),
        })
        .await
        .expect_err("no such stream");
    assert_eq!(e.code(), Code::NotFound);
}

fn skipped(s: &pb::Settled) -> Vec<(pb::Position, pb::SkipReason)> {
    s.skipped
        .iter()
        .map(|k| {
            (
                k.position.unwrap_or_default(),
                pb::SkipReason::try_from(k.reason).unwrap_or(pb::SkipReason::Unspecified),
            )
        })
        .collect()
}

async fn settle(s: &mut Session, kind: In) -> pb::Settled {
    let id = s.send(kind).await;
    match s.answer(id).await.0 {
        Out::Settled(r) => r,
        other => panic!("answered {other:?}"),
    }
}

async fn settlements_name_every_position_and_why_it_was_skipped(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "settled");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 1).await;
    publish(
        &mut c,
        "s",
        vec![json_event("t", "1"), json_event("t", "2")],
    )
    .await;
    let mut o = open("s", "q", "a");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o).await;
    let got = s.events(2).await;

    // Ack 0 and a position never delivered.
    let r = settle(
        &mut s,
        In::Ack(pb::Ack {
            positions: vec![at(0, 0), at(0, 9)],
        }),
    )
    .await;
    assert_eq!(r.applied, vec![at(0, 0)]);
    assert_eq!(skipped(&r), vec![(at(0, 9), pb::SkipReason::NotDelivered)]);

    // Nack 1 with a long delay: it waits for its redelivery, so a second nack is skipped.
    let nack = || {
        In::Nack(pb::Nack {
            positions: vec![at(0, 1)],
            delay_ms: Some(3_600_000),
            error: "later".into(),
        })
    };
    let r = settle(&mut s, nack()).await;
    assert_eq!(r.applied, positions(&got[1..]));
    let r = settle(&mut s, nack()).await;
    assert!(r.applied.is_empty());
    assert_eq!(skipped(&r), vec![(at(0, 1), pb::SkipReason::NotInFlight)]);

    // Term of what is acknowledged already.
    let r = settle(
        &mut s,
        In::Term(pb::Term {
            positions: vec![at(0, 0)],
            reason: "done twice".into(),
        }),
    )
    .await;
    assert_eq!(
        skipped(&r),
        vec![(at(0, 0), pb::SkipReason::AlreadySettled)]
    );

    // Credit is answered with what was granted.
    let id = s.send(In::Credit(pb::Credit { events: 7 })).await;
    assert!(
        matches!(
            s.answer(id).await.0,
            Out::Credited(pb::Credited { granted: 7 })
        ),
        "credit answered"
    );
}

async fn session_errors_carry_the_status_details_and_the_request_id(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "sessionerr");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 1).await;
    let mut o = open("s", "q", "a");
    o.create = Some(pb::SubscriptionConfig::default());
    let mut s = Session::open(&mut c, o).await;
    // An ack without positions: bad input, answered in-band with the call status's details.
    let id = s.send(In::Ack(pb::Ack { positions: vec![] })).await;
    let (answer, _) = s.answer(id).await;
    let Out::Error(e) = answer else {
        panic!("answered {answer:?}")
    };
    let status = tributary_grpc::status_of(&e);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        e.code,
        Code::InvalidArgument as i32,
        "a google.rpc.Code value"
    );
    let info = status.get_details_error_info().expect("error info");
    assert_eq!(info.domain, "tributary");
    let bad = status.get_details_bad_request().expect("bad request");
    assert_eq!(bad.field_violations[0].field, "positions");
    // The session goes on.
    publish(&mut c, "s", vec![json_event("t", "{}")]).await;
    let got = s.events(1).await;
    assert_eq!(s.ack(&got).await.applied.len(), 1);

    // PublishPipelined reports a refusal the same way.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::PipelinedPublish {
        request_id: 5,
        batch: Some(pb::PublishRequest {
            stream: "missing".into(),
            events: vec![json_event("t", "{}")],
            expected_offset: None,
        }),
    })
    .await
    .expect("send");
    drop(tx);
    let mut answers = c
        .publish_pipelined(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("pipelined")
        .into_inner();
    let a = within("answer", answers.message())
        .await
        .expect("stream")
        .expect("answer");
    assert_eq!(a.request_id, 5);
    let Some(pb::pipelined_answer::Kind::Error(e)) = a.kind else {
        panic!("answered {a:?}")
    };
    let status = tributary_grpc::status_of(&e);
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.get_details_error_info().map(|i| i.reason),
        Some("STREAM_NOT_FOUND".into())
    );
}

async fn the_correlation_rule_is_enforced(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "correlation");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 1).await;
    let mut o = open("s", "q", "a");
    o.create = Some(pb::SubscriptionConfig::default());

    // An open with request id 0 is refused: the call ends with INVALID_ARGUMENT.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::SubscribeRequest {
        request_id: 0,
        kind: Some(In::Open(o.clone())),
    })
    .await
    .expect("send");
    let r = within(
        "subscribe",
        c.subscribe(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await;
    let e = match r {
        Err(e) => e,
        Ok(resp) => within("first", resp.into_inner().message())
            .await
            .expect_err("refused"),
    };
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        e.get_details_bad_request()
            .expect("bad request")
            .field_violations[0]
            .field,
        "request_id"
    );

    // In a session: an id that does not grow is answered with an error carrying it, and
    // nothing else happens; the next good one is answered as usual.
    let mut s = Session::open(&mut c, o).await;
    s.tx.send(pb::SubscribeRequest {
        request_id: 1,
        kind: Some(In::Heartbeat(pb::Heartbeat { time: 0 })),
    })
    .await
    .expect("send");
    let (answer, _) = s.answer(1).await;
    let Out::Error(e) = answer else {
        panic!("a reused id answered {answer:?}")
    };
    assert_eq!(e.code, Code::InvalidArgument as i32);
    // A heartbeat outside a consumer group is answered by a heartbeat, with its id.
    let id = s.send(In::Heartbeat(pb::Heartbeat { time: 0 })).await;
    assert!(matches!(s.answer(id).await.0, Out::Heartbeat(h) if h.time > 0));
}

async fn explicit_values_are_taken_or_refused_never_replaced(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "explicit");
    let mut c = server.client().await;
    // partitions: 0 is refused (as HTTP refuses it); unset is 1.
    let e = c
        .create_stream(pb::CreateStreamRequest {
            name: "zero".into(),
            partitions: Some(0),
            ..Default::default()
        })
        .await
        .expect_err("zero partitions");
    assert_eq!(e.code(), Code::InvalidArgument);
    let info = c
        .create_stream(pb::CreateStreamRequest {
            name: "one".into(),
            ..Default::default()
        })
        .await
        .expect("default partitions")
        .into_inner();
    assert_eq!(info.partitions.len(), 1);
    assert_eq!(info.config.and_then(|c| c.partitions), Some(1));
    // max_deliveries and ack_wait_ms: 0 is refused; unset takes the server's default, which
    // GetSubscription then shows.
    for config in [
        pb::SubscriptionConfig {
            max_deliveries: Some(0),
            ..Default::default()
        },
        pb::SubscriptionConfig {
            ack_wait_ms: Some(0),
            ..Default::default()
        },
    ] {
        let e = c
            .create_subscription(pb::SubscriptionConfig {
                stream: "one".into(),
                name: "q".into(),
                ..config
            })
            .await
            .expect_err("zero refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    c.create_subscription(pb::SubscriptionConfig {
        stream: "one".into(),
        name: "q".into(),
        ..Default::default()
    })
    .await
    .expect("defaults");
    let defaults = c
        .get_server_info(())
        .await
        .expect("info")
        .into_inner()
        .defaults
        .expect("defaults");
    let sub = c
        .get_subscription(pb::SubscriptionRef {
            stream: "one".into(),
            subscription: "q".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .config
        .expect("config");
    assert_eq!(sub.max_deliveries, Some(defaults.max_deliveries));
    assert_eq!(sub.ack_wait_ms, Some(defaults.ack_wait_ms));
    // An explicit schema version 0 is refused, not read as 1.
    let mut e = json_event("t", "{}");
    e.schema_version = Some(0);
    let err = c
        .publish(pb::PublishRequest {
            stream: "one".into(),
            events: vec![e],
            expected_offset: None,
        })
        .await
        .expect_err("version 0");
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn server_info_tells_the_limits_the_server_enforces(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "info");
    let mut c = server.client().await;
    let info = c.get_server_info(()).await.expect("info").into_inner();
    assert!(!info.version.is_empty());
    assert_eq!(info.max_message_bytes, 8 << 20);
    create_stream(&mut c, "s", 1).await;
    // One event over the batch limit is refused, naming the limit the info gave.
    let n = info.max_batch_events as usize + 1;
    let e = c
        .publish(pb::PublishRequest {
            stream: "s".into(),
            events: (0..n).map(|_| json_event("t", "{}")).collect(),
            expected_offset: None,
        })
        .await
        .expect_err("over the batch limit");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains(&info.max_batch_events.to_string()),
        "{e:?}"
    );
    // A stream name of the longest length is taken; one byte more is refused.
    let longest = "a".repeat(info.max_stream_name_bytes as usize);
    create_stream(&mut c, &longest, 1).await;
    let e = c
        .create_stream(pb::CreateStreamRequest {
            name: format!("{longest}a"),
            ..Default::default()
        })
        .await
        .expect_err("name too long");
    assert_eq!(e.code(), Code::InvalidArgument);
    // The partition limit.
    let e = c
        .create_stream(pb::CreateStreamRequest {
            name: "wide".into(),
            partitions: Some(info.max_partitions + 1),
            ..Default::default()
        })
        .await
        .expect_err("too many partitions");
    assert_eq!(e.code(), Code::InvalidArgument);
}
