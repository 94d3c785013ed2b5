//! The order of pipelined appends (see `tributary_core::AppendWrite`): a store commits an
//! append only once the append it names in `after` has committed, and fails it (writing
//! nothing) when that one did not commit. Every store shares this bookkeeping.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tributary_core::{AppendWrite, StorageError, StreamName};

/// Outcomes remembered per stream (the core has at most a few writes in flight).
const KEPT: usize = 256;

#[derive(Debug, Default)]
struct Chain {
    outcomes: BTreeMap<u64, bool>,
    order: VecDeque<u64>,
}

/// The writes of every stream: committed or not.
#[derive(Debug, Default)]
pub struct WriteChains {
    chains: Mutex<BTreeMap<StreamName, Chain>>,
    changed: tokio::sync::Notify,
}

/// Records the outcome of a write when dropped: not committed, unless [`Finish::committed`]
/// was called. Early returns and panics thus never leave a successor waiting.
#[derive(Debug)]
pub struct Finish<'a> {
    chains: &'a WriteChains,
    stream: StreamName,
    seq: u64,
    committed: bool,
}

impl Finish<'_> {
    /// Marks the write as committed.
    pub fn committed(&mut self) {
        self.committed = true;
    }
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let (seq, committed) = (self.seq, self.committed);
        self.chains.update(&self.stream, |c| {
            if c.outcomes.insert(seq, committed).is_none() {
                c.order.push_back(seq);
            }
            while c.order.len() > KEPT {
                if let Some(old) = c.order.pop_front() {
                    c.outcomes.remove(&old);
                }
            }
        });
    }
}

/// Why an append may not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredecessorFailed(pub String);

impl WriteChains {
    /// No writes yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&self, stream: &StreamName, f: impl FnOnce(&mut Chain)) {
        if let Ok(mut m) = self.chains.lock() {
            f(m.entry(stream.clone()).or_default());
        }
        self.changed.notify_waiters();
    }

    async fn wait_for<T>(
        &self,
        stream: &StreamName,
        timeout: Duration,
        f: impl Fn(&Chain) -> Option<T>,
    ) -> Option<T> {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                let found = self
                    .chains
                    .lock()
                    .ok()
                    .and_then(|m| m.get(stream).and_then(&f));
                if let Some(v) = found {
                    return v;
                }
                notified.await;
            }
        };
        sqlx_core::rt::timeout(timeout, wait).await.ok()
    }

    /// Begins a write (or a new attempt of one, whose earlier outcome is forgotten): its
    /// outcome is recorded when the returned guard is dropped.
    pub fn begin(&self, stream: &StreamName, seq: u64) -> Finish<'_> {
        if let Ok(mut m) = self.chains.lock()
            && let Some(c) = m.get_mut(stream)
        {
            c.outcomes.remove(&seq);
        }
        Finish {
            chains: self,
            stream: stream.clone(),
            seq,
            committed: false,
        }
    }

    /// Forgets a deleted stream's writes.
    pub fn forget(&self, stream: &StreamName) {
        if let Ok(mut m) = self.chains.lock() {
            m.remove(stream);
        }
    }

    /// Waits until the write `w` names in `after` has committed (at once when it names none):
    /// `Unavailable` when that one did not commit or did not finish within
    /// [`PREDECESSOR_TIMEOUT`](crate::PREDECESSOR_TIMEOUT); then `w` must write nothing.
    pub async fn wait_predecessor(&self, w: &AppendWrite) -> Result<(), StorageError> {
        match w.after {
            None => Ok(()),
            Some(after) => self
                .wait_committed(&w.stream, after, crate::PREDECESSOR_TIMEOUT)
                .await
                .map_err(|e| StorageError::Unavailable(e.0)),
        }
    }

    /// Waits for the predecessor's outcome: `Ok` if it committed.
    pub async fn wait_committed(
        &self,
        stream: &StreamName,
        after: u64,
        timeout: Duration,
    ) -> Result<(), PredecessorFailed> {
        match self
            .wait_for(stream, timeout, |c| c.outcomes.get(&after).copied())
            .await
        {
            Some(true) => Ok(()),
            Some(false) => Err(PredecessorFailed(format!(
                "write {after} of stream {stream} did not commit"
            ))),
            None => Err(PredecessorFailed(format!(
                "write {after} of stream {stream} did not finish in {timeout:?}"
            ))),
        }
    }
}
