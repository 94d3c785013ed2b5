//! The WAL is copied into the database beside the writer, and stays bounded while appends
//! keep coming.

mod common;

use common::{name, ok};
use std::sync::Arc;
use tributary_core::{
    AppendWrite, Event, EventId, NewEvent, StorageReply, StorageRequest, StreamConfig, UnixMillis,
};
use tributary_store_api::Durability;
use tributary_store_sqlite::{SqliteStore, SqliteStoreConfig};

const WRITES: u64 = 256;
const PER_WRITE: u64 = 256;

fn event(offset: u64) -> Arc<Event> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(offset + 1).to_le_bytes());
    Arc::new(Event::from_new(
        NewEvent::new("order.created", offset.to_le_bytes().repeat(32)),
        EventId::from_bytes(id),
        name(),
        0,
        offset,
        UnixMillis(1_000 + offset),
    ))
}

/// About 17 MB of event payloads in 256 commits, with the checkpoint threshold at 250 WAL
/// pages (1 MB; the default is 40 times that): the background passes run, the WAL is started
/// again over and over, and its file never outgrows the threshold by more than two appends'
/// pages, however long a background pass takes (past the threshold, the writer waits for the
/// pass in flight and copies the rest itself); every event reads back. The hand-over and the
/// wait are tested in `checkpoint.rs`.
#[tokio::test]
async fn the_wal_is_copied_beside_the_writer_and_stays_bounded() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temporary folder: {e}"),
    };
    let path = dir.path().join("ckpt.db");
    let mut config = SqliteStoreConfig::new(&path);
    config.durability = Durability::Normal;
    config.wal_checkpoint_pages = 250;
    let store = match SqliteStore::open(&config).await {
        Ok(s) => s,
        Err(e) => panic!("open: {e}"),
    };
    ok(
        &store,
        StorageRequest::CreateStream(StreamConfig::persistent(name())),
    )
    .await;
    let wal = dir.path().join("ckpt.db-wal");
    let (mut largest_wal, mut largest_growth, mut before) = (0, 0, 0);
    for w in 0..WRITES {
        let events = (w * PER_WRITE..(w + 1) * PER_WRITE).map(event).collect();
        let append = AppendWrite {
            stream: name(),
            seq: w,
            after: w.checked_sub(1),
            events,
            dedup: vec![],
        };
        ok(&store, StorageRequest::Append(Arc::new(append))).await;
        let now = std::fs::metadata(&wal).map_or(0, |m| m.len());
        largest_wal = largest_wal.max(now);
        largest_growth = largest_growth.max(now.saturating_sub(before));
        before = now;
    }
    assert!(
        store.checkpoint_passes() > 0,
        "no background checkpoint pass ran"
    );
    // The threshold in bytes: the WAL header, then a 24-byte header and a 4 KB page a frame.
    let limit = 32 + 250 * (24 + 4096);
    // The most one append made the WAL file grow (the first append at least).
    assert!(largest_growth > 0);
    assert!(
        largest_wal <= limit + 2 * largest_growth,
        "the WAL file grew to {largest_wal} bytes, past its limit of {limit} bytes and two \
         appends of up to {largest_growth} bytes"
    );
    let StorageReply::Recovered(state) = ok(&store, StorageRequest::Recover).await else {
        panic!("Recover answered something else")
    };
    assert_eq!(state.streams[0].heads[0].next, WRITES * PER_WRITE);
    for from in [0, WRITES * PER_WRITE - 1000] {
        let req = StorageRequest::Read {
            stream: name(),
            partition: 0,
            from,
            max: 1000,
        };
        let StorageReply::Events(got) = ok(&store, req).await else {
            panic!("Read answered something else")
        };
        assert_eq!(got.len(), 1000);
        for (k, g) in got.iter().enumerate() {
            let want = event(from + k as u64);
            assert_eq!((g.offset, &g.payload), (want.offset, &want.payload));
        }
    }
    store.close().await;
}
