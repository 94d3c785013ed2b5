//! The in-memory store behind the async [`Store`] trait, so it runs the same cases.

use std::sync::{Arc, Mutex};
use tributary_core::{StorageError, StorageRequest, StorageResult};
use tributary_store_api::Store;
use tributary_store_memory::MemoryStore;

/// A [`MemoryStore`] shared behind a mutex.
#[derive(Debug, Clone, Default)]
pub struct SharedMemoryStore(pub Arc<Mutex<MemoryStore>>);

impl Store for SharedMemoryStore {
    fn execute(
        &self,
        req: StorageRequest,
    ) -> impl std::future::Future<Output = StorageResult> + Send {
        let r = match self.0.lock() {
            Ok(mut s) => s.execute(&req),
            Err(_) => StorageResult::Err(StorageError::Unavailable("memory store poisoned".into())),
        };
        std::future::ready(r)
    }
}
