//! Cursor saves that wait together are written together.
//!
//! A cursor save (the durable half of an acknowledgement) is one small upsert, but on SQLite it
//! is a whole command to the writer connection's thread and a commit of its own (a wake-up of
//! that thread and back, and a page in the WAL). The core keeps one save in flight per
//! subscription cursor and partition, so the saves of a subscription's partitions, or of
//! several consumers, usually wait for the writer connection at the same time. Each save is
//! queued here before it waits; whoever gets the connection writes every queued save (up to
//! [`MAX_ROWS`]) in one statement and answers them all. A save that finds its record already
//! written takes its answer without a statement of its own.

use sqlx::Arguments;
use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteArguments;
use std::sync::{Mutex, OnceLock};
use tokio::sync::oneshot;
use tributary_core::{CursorRecord, StorageResult};
use tributary_store_api::encode_acked;

use crate::append_sql::i64_of;

/// The most cursor records in one statement (and the number of statement shapes kept).
pub(crate) const MAX_ROWS: usize = 8;

/// Saves waiting for the writer connection, with where their answers go.
#[derive(Debug, Default)]
pub(crate) struct CursorSaves {
    queue: Mutex<Vec<(CursorRecord, oneshot::Sender<StorageResult>)>>,
}

impl CursorSaves {
    /// Queues `rec`; the receiver gets the outcome of the statement that writes it.
    pub(crate) fn push(&self, rec: CursorRecord) -> oneshot::Receiver<StorageResult> {
        let (tx, rx) = oneshot::channel();
        self.lock().push((rec, tx));
        rx
    }

    /// Takes up to [`MAX_ROWS`] queued saves, oldest first.
    pub(crate) fn take(&self) -> Vec<(CursorRecord, oneshot::Sender<StorageResult>)> {
        let mut q = self.lock();
        let n = q.len().min(MAX_ROWS);
        q.drain(..n).collect()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(CursorRecord, oneshot::Sender<StorageResult>)>> {
        // The queue holds no invariant a panicking holder could break: keep using it.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The upsert of `rows` cursor records (1 to [`MAX_ROWS`]).
pub(crate) fn upsert_sql(rows: usize) -> &'static str {
    static TEXTS: [OnceLock<String>; MAX_ROWS] = [const { OnceLock::new() }; MAX_ROWS];
    let rows = rows.clamp(1, MAX_ROWS);
    TEXTS[rows - 1].get_or_init(|| {
        let values = vec!["(?, ?, ?, ?, ?)"; rows].join(", ");
        format!(
            r#"INSERT INTO tributary_cursors (sub_id, consumer, partition, floor, acked) VALUES {values}
               ON CONFLICT (sub_id, consumer, partition) DO UPDATE SET floor = excluded.floor, acked = excluded.acked"#
        )
    })
}

/// Binds `records` for [`upsert_sql`].
pub(crate) fn bind_cursors<'a>(
    args: &mut SqliteArguments,
    records: impl Iterator<Item = &'a CursorRecord>,
) -> Result<(), BoxDynError> {
    for c in records {
        args.add(i64_of(c.sub.0))?;
        args.add(c.consumer.as_ref().map_or(String::new(), |c| c.to_string()))?;
        args.add(i64::from(c.partition))?;
        args.add(i64_of(c.floor))?;
        args.add(encode_acked(&c.acked))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::SubId;

    fn rec(partition: u32) -> CursorRecord {
        CursorRecord {
            sub: SubId(1),
            consumer: None,
            partition,
            floor: 5,
            acked: vec![7],
        }
    }

    #[test]
    fn saves_are_taken_oldest_first_at_most_a_statement_at_a_time() {
        let saves = CursorSaves::default();
        let _rx: Vec<_> = (0..MAX_ROWS as u32 + 3)
            .map(|p| saves.push(rec(p)))
            .collect();
        let first = saves.take();
        assert_eq!(first.len(), MAX_ROWS);
        assert_eq!(first[0].0.partition, 0);
        let rest = saves.take();
        assert_eq!(
            rest.iter().map(|(r, _)| r.partition).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        assert!(saves.take().is_empty());
    }

    #[test]
    fn each_shape_has_one_placeholder_per_bound_value() {
        for rows in 1..=MAX_ROWS {
            let mut args = SqliteArguments::default();
            let recs: Vec<_> = (0..rows as u32).map(rec).collect();
            bind_cursors(&mut args, recs.iter()).expect("binds");
            assert_eq!(upsert_sql(rows).matches('?').count(), args.len());
        }
    }
}
