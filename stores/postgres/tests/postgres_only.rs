//! What only the PostgreSQL store does: migrations recorded, the events of an earlier version
//! moved into record batches, notifications after appends, the inbox, the outcome of a lost
//! commit, and a server that goes away and comes back.

mod common;

use std::sync::Arc;
use std::time::Duration;
use tributary_core::*;
use tributary_store_api::Store;
use tributary_store_conformance::Driver;
use tributary_store_postgres::{Inbox, InboxKey, Notifications, PgStore, Wakeup};

fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("name")
}

fn sub(name: &str) -> SubscriptionName {
    SubscriptionName::new(name).expect("name")
}

fn consumer(id: &str) -> ConsumerId {
    ConsumerId::new(id).expect("id")
}

async fn create(s: &PgStore, name: &str) {
    let r = s
        .execute(StorageRequest::CreateStream(StreamConfig::persistent(
            stream(name),
        )))
        .await;
    assert_eq!(r, StorageResult::Ok(StorageReply::Done));
}

fn one_event(name: &str, offset: u64, id: u8) -> StorageRequest {
    let e = Event::from_new(
        NewEvent::new("t", b"{}".to_vec()),
        EventId::from_bytes([id; 16]),
        stream(name),
        0,
        offset,
        UnixMillis(1),
    );
    StorageRequest::Append(Arc::new(AppendWrite {
        stream: stream(name),
        seq: 0,
        after: None,
        events: vec![Arc::new(e)],
        dedup: vec![],
    }))
}

#[tokio::test]
async fn migrations_are_recorded_and_can_be_skipped() {
    let config = common::fresh_config();
    let s = PgStore::open(&config).await.expect("open");
    assert_eq!(
        s.applied_migrations().await.expect("versions"),
        vec![1, 2, 3, 4, 5, 6, 7]
    );
    // Opening again applies nothing new.
    let again = PgStore::open(&config).await.expect("reopen");
    assert_eq!(
        again.applied_migrations().await.expect("versions"),
        vec![1, 2, 3, 4, 5, 6, 7]
    );
    // With migrations off, a fresh schema has no tables: requests fail, clearly.
    let mut off = common::fresh_config();
    off.migrate = false;
    let bare = PgStore::open(&off).await.expect("open without migrations");
    let r = bare.execute(StorageRequest::Recover).await;
    assert!(
        matches!(r, StorageResult::Err(StorageError::Unavailable(ref m)) if m.contains("tributary_streams")),
        "{r:?}"
    );
}

/// A row as schema version 5 stored an event: one row per event in `tributary_events`.
async fn insert_v5_row(s: &PgStore, stream_id: i64, e: &Event) {
    sqlx::query(
        r#"INSERT INTO tributary_events (stream_id, partition, "offset", event_id, ts, event_type,
             schema_version, key, correlation_id, causation_id, headers, content_type, payload)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"#,
    )
    .bind(stream_id)
    .bind(i32::try_from(e.partition).expect("partition"))
    .bind(i64::try_from(e.offset).expect("offset"))
    .bind(e.event_id.as_bytes().to_vec())
    .bind(i64::try_from(e.timestamp.0).expect("ts"))
    .bind(&e.event_type)
    .bind(i32::try_from(e.schema_version).expect("version"))
    .bind(e.key.as_ref().map(|k| k.to_vec()))
    .bind(&e.correlation_id)
    .bind(&e.causation_id)
    .bind((!e.headers.is_empty()).then(|| serde_json::to_string(&e.headers).expect("json")))
    .bind(&e.content_type)
    .bind(e.payload.to_vec())
    .execute(s.pool())
    .await
    .expect("a version 5 row");
}

async fn read_all(s: &PgStore, name: &str, partition: u32) -> Vec<Arc<Event>> {
    match s
        .execute(StorageRequest::Read {
            stream: stream(name),
            partition,
            from: 0,
            max: 1000,
        })
        .await
    {
        StorageResult::Ok(StorageReply::Events(e)) => e,
        other => panic!("read: {other:?}"),
    }
}

#[tokio::test]
async fn events_stored_one_row_each_by_version_5_are_moved_into_batches_at_open() {
    let config = common::fresh_config();
    let s = PgStore::open(&config).await.expect("open");
    let mut config_2 = StreamConfig::persistent(stream("old"));
    config_2.partitions = 2;
    let r = s.execute(StorageRequest::CreateStream(config_2)).await;
    assert_eq!(r, StorageResult::Ok(StorageReply::Done));
    let id: i64 = sqlx::query_scalar("SELECT id FROM tributary_streams WHERE name = 'old'")
        .fetch_one(s.pool())
        .await
        .expect("the stream's id");
    // 70 events of about 250 bytes in partition 0 (more than one batch), 3 in partition 1,
    // every field used.
    let mut written = Vec::new();
    for (partition, count) in [(0u32, 70u64), (1, 3)] {
        for offset in 0..count {
            let payload = format!("{{\"n\":{offset},\"pad\":\"{}\"}}", "x".repeat(200));
            let mut n = NewEvent::new("old.type", payload.into_bytes());
            n.key = Some(format!("k{offset}").into_bytes().into());
            n.correlation_id = Some(format!("c{offset}"));
            n.causation_id = offset.is_multiple_of(2).then(|| "cause".to_string());
            if offset.is_multiple_of(3) {
                n.headers.insert("h".into(), format!("{offset}"));
            }
            let byte = u8::try_from(offset).expect("small") + if partition == 0 { 0 } else { 100 };
            let e = Event::from_new(
                n,
                EventId::from_bytes([byte; 16]),
                stream("old"),
                partition,
                offset,
                UnixMillis(1_000 + offset),
            );
            insert_v5_row(&s, id, &e).await;
            written.push(e);
        }
    }
    drop(s);
    let s = PgStore::open(&config).await.expect("reopen moves the rows");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tributary_events")
        .fetch_one(s.pool())
        .await
        .expect("count");
    assert_eq!(left, 0, "every row moved");
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM tributary_batches")
        .fetch_one(s.pool())
        .await
        .expect("count");
    assert!(
        batches >= 3,
        "70 events of partition 0 in more than one batch: {batches} in all"
    );
    let mut back: Vec<Event> = Vec::new();
    for p in [0, 1] {
        back.extend(read_all(&s, "old", p).await.iter().map(|e| (**e).clone()));
    }
    assert_eq!(back, written, "every event, every field, in order");
    let StorageResult::Ok(StorageReply::Recovered(r)) = s.execute(StorageRequest::Recover).await
    else {
        panic!("recover");
    };
    let heads = &r.streams[0].heads;
    assert_eq!((heads[0].first, heads[0].next), (0, 70));
    assert_eq!((heads[1].first, heads[1].next), (0, 3));
    assert_eq!(heads[0].last_timestamp, UnixMillis(1_069));
    // An append after the move carries on, and a repeat of a moved event is recognised.
    let r = s.execute(one_event("old", 70, 9)).await;
    assert_eq!(r, StorageResult::Ok(StorageReply::Done));
    let repeat = StorageRequest::Append(Arc::new(AppendWrite {
        stream: stream("old"),
        seq: 1,
        after: None,
        events: vec![Arc::new(written[5].clone())],
        dedup: vec![],
    }));
    assert_eq!(
        s.execute(repeat).await,
        StorageResult::Ok(StorageReply::Done)
    );
    assert_eq!(read_all(&s, "old", 0).await.len(), 71);
}

#[tokio::test]
async fn a_bad_schema_name_is_refused() {
    let mut config = common::fresh_config();
    config.schema = Some("x; DROP TABLE y".into());
    let r = PgStore::open(&config).await;
    assert!(
        matches!(r, Err(tributary_store_postgres::OpenError::Schema(_))),
        "{r:?}"
    );
}

#[tokio::test]
async fn each_append_notifies_readers_and_they_poll_without_notifications() {
    let s = common::fresh_store().await;
    // Notifications are database-wide and other tests append at the same time, to streams of
    // their own schemas: only this test's stream, of a name no other test uses, counts.
    let ours = common::unique_schema("notified");
    create(&s, &ours).await;
    let mut n = Notifications::listen(&s, Duration::from_secs(30))
        .await
        .expect("listen");
    assert_eq!(
        s.execute(one_event(&ours, 0, 1)).await,
        StorageResult::Ok(StorageReply::Done)
    );
    loop {
        match n.next().await {
            Wakeup::Appended(stream) if stream == ours => break,
            Wakeup::Appended(_) => {}
            Wakeup::Poll => panic!("no notification of the append within 30 s"),
        }
    }
    let mut quiet = Notifications::listen(&s, Duration::from_millis(50))
        .await
        .expect("listen");
    loop {
        match quiet.next().await {
            Wakeup::Poll => break,
            Wakeup::Appended(stream) if stream != ours => {}
            Wakeup::Appended(stream) => panic!("no append, yet a notification for {stream}"),
        }
    }
}

#[tokio::test]
async fn the_inbox_records_an_event_once_inside_the_callers_transaction() {
    let s = common::fresh_store().await;
    let mut c = s.pool().acquire().await.expect("connection");
    sqlx::query("CREATE TABLE ledger (n INT)")
        .execute(&mut *c)
        .await
        .expect("table");
    let id = EventId::from_bytes([7; 16]);
    let billing = InboxKey::shared(&stream("orders"), &sub("billing"));
    let shipping = InboxKey::shared(&stream("orders"), &sub("shipping"));
    let process = |commit: bool| {
        let pool = s.pool().clone();
        let key = billing.clone();
        async move {
            let mut tx = pool.begin().await.expect("begin");
            let first = Inbox::record(&mut tx, &key, id).await.expect("record");
            if first {
                sqlx::query("INSERT INTO ledger VALUES (1)")
                    .execute(&mut *tx)
                    .await
                    .expect("effect");
            }
            if commit {
                tx.commit().await.expect("commit");
            } else {
                tx.rollback().await.expect("rollback");
            }
            first
        }
    };
    assert!(
        process(false).await,
        "a rolled back attempt records nothing"
    );
    assert!(process(true).await, "the first committed processing");
    assert!(!process(true).await, "a redelivery is recognised");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&mut *c)
        .await
        .expect("count");
    assert_eq!(n, 1, "the side effect happened once");
    assert!(
        Inbox::contains(&mut c, &billing, id)
            .await
            .expect("contains")
    );
    assert!(
        !Inbox::contains(&mut c, &shipping, id)
            .await
            .expect("contains")
    );
    assert_eq!(
        Inbox::forget_older_than(&mut c, Duration::from_secs(3600))
            .await
            .expect("forget"),
        0
    );
    assert_eq!(
        Inbox::forget_older_than(&mut c, Duration::ZERO)
            .await
            .expect("forget"),
        1
    );
}

/// Processes every delivery the driver holds as a consumer with an inbox does: in one
/// transaction, `Inbox::record` and (the first time only) a ledger row naming who processed
/// it; commit; then ack, except on the subscriptions of `crash_before_ack` (a crash between
/// the commit and the ack). Returns (subscription, consumer, whether the effect ran), sorted.
async fn process_deliveries(
    d: &mut Driver<'_, PgStore>,
    s: &PgStore,
    modes: &[(&str, SubscriptionMode)],
    crash_before_ack: &[&str],
) -> Vec<(String, String, bool)> {
    let outputs = std::mem::take(&mut d.outputs);
    let mut done = Vec::new();
    for o in outputs {
        let Output::Deliver {
            stream,
            subscription,
            consumer,
            events,
            ..
        } = o
        else {
            continue;
        };
        let mode = modes
            .iter()
            .find(|(n, _)| *n == subscription.as_str())
            .map(|(_, m)| *m)
            .expect("a subscription of the test");
        let key = InboxKey::new(mode, &stream, &subscription, &consumer);
        for e in events {
            let mut tx = s.pool().begin().await.expect("begin");
            let first = Inbox::record(&mut tx, &key, e.event.event_id)
                .await
                .expect("record");
            if first {
                sqlx::query("INSERT INTO ledger VALUES ($1, $2, $3)")
                    .bind(subscription.as_str())
                    .bind(consumer.as_str())
                    .bind(e.event.offset as i64)
                    .execute(&mut *tx)
                    .await
                    .expect("effect");
            }
            tx.commit().await.expect("commit");
            if !crash_before_ack.contains(&subscription.as_str()) {
                let r = d
                    .cmd(Command::Ack {
                        stream: stream.clone(),
                        subscription: subscription.clone(),
                        consumer: consumer.clone(),
                        positions: vec![Position {
                            partition: e.event.partition,
                            offset: e.event.offset,
                        }],
                    })
                    .await;
                assert_eq!(r.map(|r| r.settled_counts()), Ok(Some((1, 0))));
            }
            done.push((subscription.to_string(), consumer.to_string(), first));
        }
    }
    done.sort();
    done
}

fn row(subscription: &str, consumer: &str, effect: bool) -> (String, String, bool) {
    (subscription.to_string(), consumer.to_string(), effect)
}

#[tokio::test]
async fn the_inbox_gives_each_broadcast_consumer_its_effect_and_skips_a_redelivery() {
    let s = common::fresh_store().await;
    sqlx::query("CREATE TABLE ledger (subscription TEXT, consumer TEXT, event BIGINT)")
        .execute(s.pool())
        .await
        .expect("table");
    let wall = 1_767_225_600_000;
    let modes = [
        ("audit", SubscriptionMode::Broadcast),
        ("billing", SubscriptionMode::Exclusive),
    ];
    let consumers = [("audit", "a"), ("audit", "b"), ("billing", "w")];
    let attach = |subscription: &str, id: &str| Command::Attach {
        stream: stream("payments"),
        subscription: sub(subscription),
        consumer: consumer(id),
        max_in_flight: None,
    };
    {
        let mut d = Driver::start(&s, Config::default(), wall).await;
        let mut config = StreamConfig::persistent(stream("payments"));
        config.delivery = DeliverySemantics::ExactlyOnce;
        assert_eq!(d.cmd(Command::CreateStream(config)).await, Ok(Reply::Done));
        for (name, mode) in modes {
            let c = SubscriptionConfig::new(stream("payments"), sub(name), mode);
            assert_eq!(d.cmd(Command::CreateSubscription(c)).await, Ok(Reply::Done));
        }
        for (subscription, id) in consumers {
            assert_eq!(d.cmd(attach(subscription, id)).await, Ok(Reply::Done));
        }
        let event = NewEvent::new("paid", b"{}".to_vec()).with_id(EventId::from_bytes([9; 16]));
        let append = Command::Append(AppendRequest {
            stream: stream("payments"),
            events: vec![event],
            expected_offset: None,
        });
        assert!(matches!(d.cmd(append).await, Ok(Reply::Appended(_))));
        // Billing's consumer commits its effect, then the engine stops before its ack.
        let done = process_deliveries(&mut d, &s, &modes, &["billing"]).await;
        assert_eq!(
            done,
            vec![
                row("audit", "a", true),
                row("audit", "b", true),
                row("billing", "w", true)
            ],
            "each broadcast consumer made its own side effect"
        );
    }
    // After the restart only billing's unacknowledged event comes again: the inbox
    // recognises it, the effect is skipped, and the ack goes out.
    let mut d = Driver::start(&s, Config::default(), wall + 1_000).await;
    for (subscription, id) in consumers {
        assert_eq!(d.cmd(attach(subscription, id)).await, Ok(Reply::Done));
    }
    let again = process_deliveries(&mut d, &s, &modes, &[]).await;
    assert_eq!(again, vec![row("billing", "w", false)]);
    // Acknowledging it once more (a retried ack) changes nothing and is not refused.
    let ack = Command::Ack {
        stream: stream("payments"),
        subscription: sub("billing"),
        consumer: consumer("w"),
        positions: vec![Position {
            partition: 0,
            offset: 0,
        }],
    };
    assert_eq!(
        d.cmd(ack).await.map(|r| r.settled_counts()),
        Ok(Some((0, 1)))
    );
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT subscription, consumer FROM ledger ORDER BY 1, 2")
            .fetch_all(s.pool())
            .await
            .expect("ledger");
    let want = [("audit", "a"), ("audit", "b"), ("billing", "w")]
        .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(rows, want, "every side effect happened exactly once");
}

#[tokio::test]
async fn an_inbox_record_from_before_version_7_still_counts_for_its_subscription() {
    let s = common::fresh_store().await;
    let id = EventId::from_bytes([3; 16]);
    // A record as version 6's `Inbox::record` wrote it: subscription and event id only.
    sqlx::query("INSERT INTO tributary_inbox (subscription, event_id) VALUES ($1, $2)")
        .bind("billing")
        .bind(id.as_bytes().as_slice())
        .execute(s.pool())
        .await
        .expect("old record");
    let key = InboxKey::shared(&stream("orders"), &sub("billing"));
    let mut c = s.pool().acquire().await.expect("connection");
    assert!(Inbox::contains(&mut c, &key, id).await.expect("contains"));
    assert!(
        !Inbox::record(&mut c, &key, id).await.expect("record"),
        "processed before the upgrade"
    );
    let other = InboxKey::shared(&stream("orders"), &sub("shipping"));
    assert!(Inbox::record(&mut c, &other, id).await.expect("record"));
}

#[tokio::test]
async fn a_commit_that_loses_its_connection_is_unknown() {
    // The mapping the stores apply to the outcome of COMMIT: a refusal by the server means
    // nothing was written; a lost connection means nobody knows.
    use tributary_store_sql::committed;
    assert_eq!(committed(Ok(())), StorageResult::Ok(StorageReply::Done));
    let lost = sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    ));
    assert_eq!(committed(Err(lost)), StorageResult::Unknown);
    assert_eq!(
        committed(Err(sqlx::Error::PoolClosed)),
        StorageResult::Unknown
    );
    // A real refusal at commit: a deferred constraint that fails when the transaction commits.
    let s = common::fresh_store().await;
    let mut c = s.pool().acquire().await.expect("connection");
    sqlx::query("CREATE TABLE p (id INT PRIMARY KEY)")
        .execute(&mut *c)
        .await
        .expect("p");
    sqlx::query("CREATE TABLE ch (p INT REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)")
        .execute(&mut *c)
        .await
        .expect("ch");
    let mut tx = s.pool().begin().await.expect("begin");
    sqlx::query("INSERT INTO ch VALUES (42)")
        .execute(&mut *tx)
        .await
        .expect("insert");
    let r = committed(tx.commit().await);
    assert!(
        matches!(r, StorageResult::Err(StorageError::NotFound(_))),
        "{r:?}"
    );
}

#[tokio::test]
async fn while_the_server_is_away_requests_fail_clearly_and_work_again_after() {
    // A server of its own, so that stopping it disturbs no other test.
    let dir = tempdir_path("away");
    // Above Linux's ephemeral range (32768–60999), which the other tests' connections take
    // their local ports from: one of them held this test's port once, and the server could
    // not start. The server binds the same port again after its restart.
    let port = 61000 + (std::process::id() % 4000) as u16;
    let start = || {
        std::process::Command::new("scripts/pg-test-cluster")
            .current_dir(workspace())
            .arg("start")
            .env("TRIBUTARY_PG_PORT", port.to_string())
            .env("TRIBUTARY_PG_DIR", &dir)
            .output()
            .expect("pg-test-cluster start")
    };
    let stop = || {
        std::process::Command::new("scripts/pg-test-cluster")
            .current_dir(workspace())
            .arg("stop")
            .env("TRIBUTARY_PG_PORT", port.to_string())
            .env("TRIBUTARY_PG_DIR", &dir)
            .status()
            .expect("pg-test-cluster stop")
    };
    let out = start();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut config = tributary_store_postgres::PgStoreConfig::new(url);
    config.acquire_timeout = Duration::from_secs(1);
    let s = PgStore::open(&config).await.expect("open");
    create(&s, "a").await;
    assert_eq!(
        s.execute(one_event("a", 0, 1)).await,
        StorageResult::Ok(StorageReply::Done)
    );
    assert!(stop().success());
    let r = s.execute(one_event("a", 1, 2)).await;
    assert!(
        matches!(
            r,
            StorageResult::Err(StorageError::Unavailable(_)) | StorageResult::Unknown
        ),
        "a write while the server is away: {r:?}"
    );
    let out = start();
    assert!(out.status.success());
    // The pool reconnects by itself; the acknowledged event is there.
    let mut last = StorageResult::Unknown;
    for _ in 0..50 {
        last = s.execute(one_event("a", 1, 2)).await;
        if last == StorageResult::Ok(StorageReply::Done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, StorageResult::Ok(StorageReply::Done));
    let r = s
        .execute(StorageRequest::Read {
            stream: stream("a"),
            partition: 0,
            from: 0,
            max: 10,
        })
        .await;
    let StorageResult::Ok(StorageReply::Events(events)) = r else {
        panic!("read: {r:?}")
    };
    assert_eq!(events.len(), 2);
    stop();
}

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tempdir_path(name: &str) -> String {
    format!("/tmp/tributary-pg-{name}-{}", std::process::id())
}

/// The look-ups of the record batches stay in the index when the table's statistics say it is
/// empty (it was vacuumed once empty, as after retention removed everything) and the plan is
/// the generic one a prepared statement keeps: a sequential scan, planned for an empty table,
/// would be kept while the table grows and read all of it on every append.
#[tokio::test]
async fn batch_look_ups_use_the_index_after_the_table_was_vacuumed_empty() {
    let s = common::fresh_store().await;
    create(&s, "v").await;
    assert_eq!(
        s.execute(one_event("v", 0, 1)).await,
        StorageResult::Ok(StorageReply::Done)
    );
    let cut = StorageRequest::Truncate {
        stream: stream("v"),
        partition: 0,
        before: 1,
    };
    assert_eq!(s.execute(cut).await, StorageResult::Ok(StorageReply::Done));
    let mut c = s.pool().acquire().await.expect("connection");
    sqlx::query("VACUUM tributary_batches")
        .execute(&mut *c)
        .await
        .expect("vacuum");
    for sql in [
        "SET plan_cache_mode = force_generic_plan",
        r#"PREPARE look_up(bigint, int, bigint) AS SELECT last_offset FROM tributary_batches
           WHERE stream_id = $1 AND partition = $2 AND first_offset <= $3
           ORDER BY first_offset DESC LIMIT 1"#,
    ] {
        sqlx::query(sql).execute(&mut *c).await.expect(sql);
    }
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE look_up(1, 0, 5)")
        .fetch_all(&mut *c)
        .await
        .expect("explain");
    for sql in ["DEALLOCATE look_up", "RESET plan_cache_mode"] {
        sqlx::query(sql).execute(&mut *c).await.expect(sql);
    }
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index") && !plan.contains("Seq Scan"),
        "{plan}"
    );
}
