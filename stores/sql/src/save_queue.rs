//! Small saves that wait together are written together.
//!
//! A cursor save (the durable half of an acknowledgement) is one small upsert, but each is a
//! commit of its own: on SQLite a command to the writer connection's thread and back, and a
//! page in the WAL; on PostgreSQL a round trip and a flush of the WAL. The core keeps one save
//! in flight per subscription cursor and partition, so the saves of a subscription's
//! partitions, or of several consumers, usually wait at the same time. A store queues each
//! save here before it waits for its turn to write; whoever gets the turn writes every queued
//! save (up to a bound) in one statement and answers them all. A save that finds its record
//! already written takes its answer without a statement of its own.

use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;
use tributary_core::StorageResult;

type Queued<T> = (T, oneshot::Sender<StorageResult>);

/// Saves waiting for their turn, with where their answers go.
#[derive(Debug)]
pub struct SaveQueue<T> {
    queue: Mutex<Vec<Queued<T>>>,
    max: usize,
}

/// The answer to a queued save, once a statement wrote it (or was refused).
#[derive(Debug)]
pub struct Answer(oneshot::Receiver<StorageResult>);

impl Answer {
    /// Waits for the outcome. A save whose writer stopped before it answered (its task ended
    /// mid-statement) is `Unknown`.
    pub async fn outcome(self) -> StorageResult {
        self.0.await.unwrap_or(StorageResult::Unknown)
    }
}

/// Saves taken together, to be written in one statement and answered.
#[derive(Debug)]
#[must_use = "every save taken must be answered"]
pub struct Batch<T>(Vec<Queued<T>>);

impl<T> Batch<T> {
    /// No save was taken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The records, for the statement.
    pub fn records(&self) -> Vec<&T> {
        self.0.iter().map(|(r, _)| r).collect()
    }

    /// Answers every save with the statement's outcome `r`; but a refused statement wrote
    /// nothing, so with more than one save they come back, each to be written on its own and
    /// answered (one save's refusal, its subscription deleted, is not the others').
    pub fn answer(self, r: &StorageResult) -> Vec<Single<T>> {
        if self.0.len() > 1 && matches!(r, StorageResult::Err(_)) {
            return self
                .0
                .into_iter()
                .map(|(rec, tx)| Single { rec, tx })
                .collect();
        }
        for (_, tx) in self.0 {
            let _ = tx.send(r.clone());
        }
        Vec::new()
    }

    /// Answers every save with `r`, written by nobody (no turn to write could be had).
    pub fn fail(self, r: &StorageResult) {
        for (_, tx) in self.0 {
            let _ = tx.send(r.clone());
        }
    }
}

/// One save of a refused statement, to be written alone.
#[derive(Debug)]
#[must_use = "every save taken must be answered"]
pub struct Single<T> {
    rec: T,
    tx: oneshot::Sender<StorageResult>,
}

impl<T> Single<T> {
    /// The record.
    pub fn record(&self) -> &T {
        &self.rec
    }

    /// Answers the save with its own statement's outcome.
    pub fn answer(self, r: StorageResult) {
        let _ = self.tx.send(r);
    }
}

impl<T> SaveQueue<T> {
    /// An empty queue whose statements hold at most `max` saves (at least 1).
    pub fn new(max: usize) -> Self {
        SaveQueue {
            queue: Mutex::new(Vec::new()),
            max: max.max(1),
        }
    }

    /// Queues `rec`; wait for the turn to write, then [`SaveQueue::take`] and write what it
    /// gives, then wait for the answer.
    pub fn push(&self, rec: T) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.lock().push((rec, tx));
        Answer(rx)
    }

    /// Takes up to `max` queued saves, oldest first, for one statement (empty when nothing
    /// is queued: a save before took this one's record and answers it).
    pub fn take(&self) -> Batch<T> {
        let mut q = self.lock();
        let n = q.len().min(self.max);
        Batch(q.drain(..n).collect())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Queued<T>>> {
        // The queue holds no invariant that a panicking holder could break: keep using it.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::{StorageError, StorageReply};

    fn done() -> StorageResult {
        StorageResult::Ok(StorageReply::Done)
    }

    /// Writes what `q` gives with `write`, as a store does.
    async fn write_queued(q: &SaveQueue<i32>, write: &mut impl FnMut(&[&i32]) -> StorageResult) {
        let batch = q.take();
        if batch.is_empty() {
            return;
        }
        let r = write(&batch.records());
        for one in batch.answer(&r) {
            let r = write(&[one.record()]);
            one.answer(r);
        }
    }

    #[tokio::test]
    async fn one_statement_writes_what_waits_oldest_first_up_to_the_bound() {
        let q = SaveQueue::new(3);
        let answers: Vec<Answer> = (0..5).map(|i| q.push(i)).collect();
        let mut statements = Vec::new();
        let mut write = |recs: &[&i32]| {
            statements.push(recs.iter().map(|r| **r).collect::<Vec<_>>());
            done()
        };
        for _ in 0..3 {
            write_queued(&q, &mut write).await;
        }
        assert_eq!(
            statements,
            vec![vec![0, 1, 2], vec![3, 4]],
            "nothing left after two"
        );
        for a in answers {
            assert_eq!(a.outcome().await, done());
        }
    }

    #[tokio::test]
    async fn a_refused_statement_is_redone_save_by_save() {
        let q = SaveQueue::new(8);
        let answers: Vec<Answer> = (0..3).map(|i| q.push(i)).collect();
        let mut statements = 0;
        let mut write = |recs: &[&i32]| {
            statements += 1;
            if recs.contains(&&1) {
                StorageResult::Err(StorageError::NotFound("no such subscription".into()))
            } else {
                done()
            }
        };
        write_queued(&q, &mut write).await;
        assert_eq!(statements, 4, "the statement of three, then each alone");
        let mut got = Vec::new();
        for a in answers {
            got.push(matches!(a.outcome().await, StorageResult::Ok(_)));
        }
        assert_eq!(got, vec![true, false, true]);
    }

    #[tokio::test]
    async fn saves_without_a_writer_fail_or_are_unknown() {
        let q = SaveQueue::new(8);
        let failed = q.push(1);
        let refused = StorageResult::Err(StorageError::Unavailable("no connection".into()));
        q.take().fail(&refused);
        assert_eq!(failed.outcome().await, refused);
        let dropped = q.push(2);
        drop(q);
        assert_eq!(dropped.outcome().await, StorageResult::Unknown);
    }
}
