//! A database written before a migration keeps every event after it.

mod common;

use common::{name, ok};
use std::sync::Arc;
use tributary_core::{
    AppendWrite, Event, EventId, NewEvent, StorageReply, StorageRequest, StreamConfig, UnixMillis,
};
use tributary_store_sqlite::{MIGRATOR, SqliteStore, SqliteStoreConfig};

/// A row as migrations 0001 to 0006 stored an event: one row per event in `tributary_events`.
async fn insert_old_row(pool: &sqlx::SqlitePool, stream_id: i64, e: &Event) {
    let r = sqlx::query(
        r#"INSERT INTO tributary_events (stream_id, partition, "offset", event_id, ts, event_type,
             schema_version, key, correlation_id, causation_id, headers, content_type, payload)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"#,
    )
    .bind(stream_id)
    .bind(i64::from(e.partition))
    .bind(e.offset as i64)
    .bind(e.event_id.as_bytes().to_vec())
    .bind(e.timestamp.0 as i64)
    .bind(&e.event_type)
    .bind(i64::from(e.schema_version))
    .bind(e.key.as_ref().map(|k| k.to_vec()))
    .bind(&e.correlation_id)
    .bind(&e.causation_id)
    .bind(tributary_store_sql::encode_headers(&e.headers))
    .bind(&e.content_type)
    .bind(e.payload.to_vec())
    .execute(pool)
    .await;
    if let Err(err) = r {
        panic!("an old row: {err}");
    }
}

/// Events stored one row each in the table of migration 0001 (ordered by stream, partition
/// and offset) are all there after 0005 moved them to a rowid table, 0006 dropped the index on
/// their times and the open after 0007 moved them into record batches: every field, by
/// offset, by time and in the heads; appends carry on after them and a repeat of one of them
/// is recognised.
#[tokio::test]
async fn events_written_one_row_each_survive_every_migration_into_batches() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temporary folder: {e}"),
    };
    let path = dir.path().join("old.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = match sqlx::SqlitePool::connect_with(options).await {
        Ok(p) => p,
        Err(e) => panic!("open: {e}"),
    };
    if let Err(e) = MIGRATOR.run_to(4, &pool).await {
        panic!("migrations up to 0004: {e}");
    }
    let mut stream = StreamConfig::persistent(name());
    stream.partitions = 2;
    let config_json = match tributary_store_sql::to_json(&stream) {
        Ok(j) => j,
        Err(e) => panic!("config: {e}"),
    };
    let id: i64 = match sqlx::query_scalar(
        "INSERT INTO tributary_streams (name, config, partitions) VALUES (?, ?, 2) RETURNING id",
    )
    .bind(name().as_str())
    .bind(config_json)
    .fetch_one(&pool)
    .await
    {
        Ok(id) => id,
        Err(e) => panic!("stream row: {e}"),
    };
    for p in 0..2i64 {
        if let Err(e) =
            sqlx::query("INSERT INTO tributary_partitions (stream_id, partition) VALUES (?, ?)")
                .bind(id)
                .bind(p)
                .execute(&pool)
                .await
        {
            panic!("partition row: {e}");
        }
    }
    // 100 events of about 250 bytes over two partitions (more than one batch each), every
    // field used; partition 1 holds the odd timestamps 1001, 1003, ...
    let events: Vec<Event> = (0..100u64)
        .map(|i| {
            let payload = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200));
            let mut n = NewEvent::new("order.created", payload.into_bytes());
            n.key = Some(format!("k{i}").into_bytes().into());
            n.correlation_id = Some(format!("c{i}"));
            n.causation_id = i.is_multiple_of(2).then(|| "cause".to_string());
            if i.is_multiple_of(3) {
                n.headers.insert("h".into(), format!("{i}"));
            }
            Event::from_new(
                n,
                EventId::from_bytes([i as u8 + 1; 16]),
                name(),
                (i % 2) as u32,
                i / 2,
                UnixMillis(1_000 + i),
            )
        })
        .collect();
    for e in &events {
        insert_old_row(&pool, id, e).await;
    }
    pool.close().await;

    let store = match SqliteStore::open(&SqliteStoreConfig::new(&path)).await {
        Ok(s) => s,
        Err(e) => panic!("open and migrate: {e}"),
    };
    match store.applied_migrations().await {
        Ok(v) => assert_eq!(v, (1..=7).collect::<Vec<i64>>()),
        Err(e) => panic!("applied migrations: {e}"),
    }
    let look = match sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(&path),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => panic!("a second connection: {e}"),
    };
    let count = |sql: &'static str| {
        let look = &look;
        async move {
            match sqlx::query_scalar::<_, i64>(sql).fetch_one(look).await {
                Ok(n) => n,
                Err(e) => panic!("{sql}: {e}"),
            }
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM tributary_events").await,
        0,
        "every row moved"
    );
    assert!(
        count("SELECT count(*) FROM tributary_batches").await >= 4,
        "50 events of 250 bytes per partition take more than one batch each"
    );
    look.close().await;
    for p in 0..2u32 {
        let req = StorageRequest::Read {
            stream: name(),
            partition: p,
            from: 0,
            max: 1000,
        };
        let StorageReply::Events(got) = ok(&store, req).await else {
            panic!("Read answered something else")
        };
        let got: Vec<Event> = got.iter().map(|e| (**e).clone()).collect();
        let want: Vec<Event> = events
            .iter()
            .filter(|e| e.partition == p)
            .cloned()
            .collect();
        assert_eq!(
            got, want,
            "partition {p}: every event, every field, in order"
        );
    }
    // 1050 falls between the timestamps of offsets 24 (1049) and 25 (1051) of partition 1.
    let find = StorageRequest::FindOffset {
        stream: name(),
        partition: 1,
        at: UnixMillis(1_050),
    };
    assert!(matches!(ok(&store, find).await, StorageReply::Offset(25)));
    let StorageReply::Recovered(state) = ok(&store, StorageRequest::Recover).await else {
        panic!("Recover answered something else")
    };
    let heads = &state.streams[0].heads;
    assert_eq!(heads.len(), 2);
    assert!(
        heads.iter().all(|h| h.first == 0 && h.next == 50),
        "the heads follow the moved events: {heads:?}"
    );
    assert_eq!(heads[1].last_timestamp, UnixMillis(1_099));
    // A repeat of a moved event is recognised; an append after them carries on.
    let repeat = AppendWrite {
        stream: name(),
        seq: 0,
        after: None,
        events: vec![Arc::new(events[11].clone())],
        dedup: vec![],
    };
    ok(&store, StorageRequest::Append(Arc::new(repeat))).await;
    let next = Event::from_new(
        NewEvent::new("order.created", b"{}".to_vec()),
        EventId::from_bytes([200; 16]),
        name(),
        1,
        50,
        UnixMillis(2_000),
    );
    let append = AppendWrite {
        stream: name(),
        seq: 1,
        after: None,
        events: vec![Arc::new(next)],
        dedup: vec![],
    };
    ok(&store, StorageRequest::Append(Arc::new(append))).await;
    let read = StorageRequest::Read {
        stream: name(),
        partition: 1,
        from: 49,
        max: 10,
    };
    let StorageReply::Events(tail) = ok(&store, read).await else {
        panic!("Read answered something else")
    };
    assert_eq!(
        tail.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![49, 50]
    );
    store.close().await;
}

/// Opening the store is a future a runtime can spawn (a server opens it inside a task).
#[test]
fn opening_is_send() {
    fn spawnable<T: Send + 'static>(_: &T) {}
    let config = SqliteStoreConfig::new("never-opened.db");
    spawnable(&async move { SqliteStore::open(&config).await.map(|_| ()) });
}
