//! The order of pipelined appends (see `tributary_core::AppendWrite`): a store commits an
//! append only once the append it names in `after` has committed, and fails it (writing
//! nothing) when that one did not commit. Every store shares this bookkeeping.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;
use tributary_core::{AppendWrite, StorageError, StreamName};

/// `fut`'s output, or `None` when `timeout` passes first. The timer needs no runtime (a
/// thread of `futures-timer` keeps the time), so any executor can drive a store; it is set
/// only once `fut` has to wait.
async fn within<T>(timeout: Duration, fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    let mut delay: Option<futures_timer::Delay> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        let delay = delay.get_or_insert_with(|| futures_timer::Delay::new(timeout));
        Pin::new(delay).poll(cx).map(|()| None)
    })
    .await
}

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
        within(timeout, wait).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::StreamName;

    fn stream() -> StreamName {
        StreamName::new("s").expect("a valid name")
    }

    #[tokio::test]
    async fn a_successor_waits_for_its_predecessors_outcome() {
        let chains = WriteChains::new();
        let name = stream();
        let mut first = chains.begin(&name, 1);
        let wait = chains.wait_committed(&name, 1, Duration::from_secs(30));
        let mut wait = std::pin::pin!(wait);
        assert!(
            futures_poll(wait.as_mut()).is_pending(),
            "the predecessor is still running"
        );
        first.committed();
        drop(first);
        assert_eq!(wait.await, Ok(()));
        drop(chains.begin(&stream(), 2));
        let failed = chains
            .wait_committed(&stream(), 2, Duration::from_secs(30))
            .await;
        assert!(failed.is_err_and(|e| e.0.contains("did not commit")));
    }

    #[tokio::test]
    async fn a_predecessor_that_never_finishes_times_out() {
        let chains = WriteChains::new();
        let _running = chains.begin(&stream(), 1);
        let r = chains
            .wait_committed(&stream(), 1, Duration::from_millis(20))
            .await;
        assert!(r.is_err_and(|e| e.0.contains("did not finish")));
        assert_eq!(within(Duration::from_millis(5), async { 7 }).await, Some(7));
    }

    /// Polls `f` once.
    fn futures_poll<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.poll(&mut cx)
    }
}
