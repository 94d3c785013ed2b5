//! A database written before a migration keeps every event after it.

mod common;

use common::{name, ok};
use std::sync::Arc;
use tributary_core::{
    AppendWrite, Event, EventId, NewEvent, StorageReply, StorageRequest, StreamConfig, UnixMillis,
};
use tributary_store_sqlite::{MIGRATOR, SqliteStore, SqliteStoreConfig};

/// Events stored in the table of migration 0001 (ordered by stream, partition and offset) are
/// all there after 0005 moved them to a rowid table and 0006 dropped the index on their times:
/// by offset, by time and in the heads.
#[tokio::test]
async fn events_written_before_the_rowid_table_survive_its_migration() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temporary folder: {e}"),
    };
    let path = dir.path().join("old.db");
    let mut config = SqliteStoreConfig::new(&path);
    // The schema as it was before 0005, then a store that does not migrate writes into it.
    config.migrate = false;
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
    pool.close().await;
    let old = match SqliteStore::open(&config).await {
        Ok(s) => s,
        Err(e) => panic!("open the old schema: {e}"),
    };
    let mut stream = StreamConfig::persistent(name());
    stream.partitions = 2;
    ok(&old, StorageRequest::CreateStream(stream)).await;
    let events: Vec<Arc<Event>> = (0..100u64)
        .map(|i| {
            Arc::new(Event::from_new(
                NewEvent::new("order.created", vec![i as u8; 32]),
                EventId::from_bytes([i as u8 + 1; 16]),
                name(),
                (i % 2) as u32,
                i / 2,
                UnixMillis(1_000 + i),
            ))
        })
        .collect();
    let append = AppendWrite {
        stream: name(),
        seq: 0,
        after: None,
        events: events.clone(),
        dedup: vec![],
    };
    ok(&old, StorageRequest::Append(Arc::new(append))).await;
    old.close().await;

    config.migrate = true;
    let store = match SqliteStore::open(&config).await {
        Ok(s) => s,
        Err(e) => panic!("open and migrate: {e}"),
    };
    match store.applied_migrations().await {
        Ok(v) => assert_eq!(v.last(), Some(&6), "0005 and 0006 applied: {v:?}"),
        Err(e) => panic!("applied migrations: {e}"),
    }
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
        let want: Vec<_> = events.iter().filter(|e| e.partition == p).collect();
        assert_eq!(got.len(), want.len(), "partition {p} keeps its 50 events");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (g.offset, g.event_id, &g.payload, g.timestamp),
                (w.offset, w.event_id, &w.payload, w.timestamp)
            );
        }
    }
    // Partition 1 holds the odd timestamps 1001, 1003, ...: 1050 falls on offset 25 (1051).
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
        heads.iter().all(|h| h.next == 50),
        "the heads follow the migrated events: {heads:?}"
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
