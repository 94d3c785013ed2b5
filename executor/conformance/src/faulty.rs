//! A store that fails appends on demand, around any store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tributary_core::{StorageError, StorageRequest, StorageResult};
use tributary_store_api::Store;

/// What the next append meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refused, nothing written (`Err(Unavailable)`).
    Fail,
    /// Written, then the answer is lost (`Unknown`).
    WriteThenUnknown,
    /// Not written, and the answer is lost (`Unknown`).
    UnknownWithoutWrite,
}

/// `inner`, with the faults planned for the next appends, one per append, in order.
#[derive(Debug, Clone)]
pub struct FaultyStore<S> {
    inner: S,
    plan: Arc<Mutex<VecDeque<Fault>>>,
}

impl<S> FaultyStore<S> {
    /// No faults planned yet.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            plan: Arc::default(),
        }
    }

    /// The next append not yet met by a fault meets `f`.
    pub fn plan(&self, f: Fault) {
        if let Ok(mut p) = self.plan.lock() {
            p.push_back(f);
        }
    }

    fn next_fault(&self, req: &StorageRequest) -> Option<Fault> {
        if !matches!(req, StorageRequest::Append(_)) {
            return None;
        }
        self.plan.lock().ok().and_then(|mut p| p.pop_front())
    }
}

impl<S: Store + Clone> Store for FaultyStore<S> {
    fn writes_in_flight(&self) -> usize {
        self.inner.writes_in_flight()
    }

    fn execute(
        &self,
        req: StorageRequest,
    ) -> impl std::future::Future<Output = StorageResult> + Send {
        let fault = self.next_fault(&req);
        let inner = self.inner.clone();
        async move {
            match fault {
                None => inner.execute(req).await,
                Some(Fault::Fail) => {
                    StorageResult::Err(StorageError::Unavailable("planted failure".into()))
                }
                Some(Fault::WriteThenUnknown) => {
                    let _ = inner.execute(req).await;
                    StorageResult::Unknown
                }
                Some(Fault::UnknownWithoutWrite) => StorageResult::Unknown,
            }
        }
    }
}
