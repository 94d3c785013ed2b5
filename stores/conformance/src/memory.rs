//! The in-memory store behind the async [`Store`] trait, so it runs the same cases.

use std::sync::{Arc, Mutex};
use tributary_core::{StorageError, StorageRequest, StorageResult};
use tributary_store_api::Store;
use tributary_store_memory::MemoryStore;

/// A [`MemoryStore`] shared behind a mutex. A pipelined append waits for the one before it
/// (the synchronous store refuses an append whose predecessor has not committed yet).
#[derive(Debug, Clone, Default)]
pub struct SharedMemoryStore(pub Arc<Mutex<MemoryStore>>, Arc<tokio::sync::Notify>);

impl SharedMemoryStore {
    fn outcome(&self, stream: &tributary_core::StreamName, seq: u64) -> Option<bool> {
        self.0
            .lock()
            .ok()
            .and_then(|s| s.append_outcome(stream, seq))
    }
}

impl Store for SharedMemoryStore {
    fn execute(
        &self,
        req: StorageRequest,
    ) -> impl std::future::Future<Output = StorageResult> + Send {
        let this = self.clone();
        async move {
            if let StorageRequest::Append(w) = &req
                && let Some(after) = w.after
            {
                loop {
                    let notified = this.1.notified();
                    let mut notified = std::pin::pin!(notified);
                    notified.as_mut().enable();
                    if this.outcome(&w.stream, after).is_some() {
                        break;
                    }
                    notified.await;
                }
            }
            let r = match this.0.lock() {
                Ok(mut s) => s.execute(&req),
                Err(_) => {
                    StorageResult::Err(StorageError::Unavailable("memory store poisoned".into()))
                }
            };
            this.1.notify_waiters();
            r
        }
    }
}
