//! Helpers shared by this crate's integration tests.

use tributary_core::{StorageReply, StorageRequest, StorageResult, StreamName};
use tributary_store_api::Store;
use tributary_store_sqlite::SqliteStore;

/// The stream the tests write to.
pub fn name() -> StreamName {
    match StreamName::new("orders") {
        Ok(n) => n,
        Err(e) => panic!("stream name: {e}"),
    }
}

/// Runs `req`, which must succeed.
pub async fn ok(store: &SqliteStore, req: StorageRequest) -> StorageReply {
    match store.execute(req).await {
        StorageResult::Ok(r) => r,
        other => panic!("expected success, got {other:?}"),
    }
}
