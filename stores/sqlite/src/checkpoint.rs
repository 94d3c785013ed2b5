//! WAL checkpoints beside the writer.
//!
//! A commit appends pages to the WAL; a checkpoint copies them into the database file and
//! syncs both files, and only once the WAL is wholly copied can the writer start it again
//! from the top. Left to SQLite, the writer runs that checkpoint itself every
//! [`WRITER_CHECKPOINT_FRAMES`] pages, inside a commit: every append in flight waits for the
//! copy and two fsyncs (the rate lost and the p99 of BENCHMARKS.md).
//!
//! Here a connection of its own copies the WAL as it grows, with `PASSIVE` checkpoints (which
//! never block the writer or the readers), on its own thread: after each commit it is asked
//! for a pass, and it makes passes until the WAL is nearly copied. It stops at
//! [`HANDOFF_FRAMES`], short of the writer's own threshold, so that the writer's checkpoint
//! (the one that lets the WAL start again) still runs, but finds little left to copy and
//! little to sync. A failed pass is harmless: the writer's own checkpoint copies what it left.

use crate::single::SingleConnection;
use sqlx::sqlite::SqliteConnectOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// WAL pages at which the writer checkpoints itself (SQLite's `wal_autocheckpoint`, set
/// explicitly on every connection).
pub(crate) const WRITER_CHECKPOINT_FRAMES: i64 = 1000;

/// WAL pages from which the background passes stop, leaving the rest of the WAL to the
/// writer's checkpoint at [`WRITER_CHECKPOINT_FRAMES`].
const HANDOFF_FRAMES: i64 = 900;

/// Pages not yet copied below which another pass is not worth its two fsyncs.
const MIN_FRAMES: i64 = 16;

/// The checkpointing connection and whether a pass is running. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Checkpointer {
    conn: Arc<SingleConnection>,
    running: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Opens the checkpointing connection with the writer's options.
    pub(crate) async fn open(options: SqliteConnectOptions) -> Result<Self, sqlx::Error> {
        Ok(Checkpointer {
            conn: Arc::new(SingleConnection::connect(&options).await?),
            running: Arc::default(),
            passes: Arc::default(),
        })
    }

    /// Called after a commit: starts passes in the background unless some are running.
    pub(crate) fn kick(&self) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let pass: Result<(i64, i64, i64), _> = match me.conn.hold().await {
                    Ok(mut c) => {
                        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                            .fetch_one(&mut *c)
                            .await
                    }
                    Err(e) => Err(e),
                };
                me.passes.fetch_add(1, Ordering::Relaxed);
                // (busy, pages in the WAL, pages copied): go on while the WAL grows and is
                // still short of the writer's own checkpoint.
                match pass {
                    Ok((0, log, copied)) if log - copied >= MIN_FRAMES && log < HANDOFF_FRAMES => {}
                    Ok(_) => break,
                    Err(e) => {
                        // Harmless (the writer's own checkpoint copies what is left), and a
                        // failing disk shows in the writes themselves.
                        tracing::debug!(error = %e, "background WAL checkpoint failed");
                        break;
                    }
                }
            }
            me.running.store(false, Ordering::Release);
        });
    }

    /// Passes made so far (for tests).
    pub(crate) fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Closes the connection: passes after this fail and stop.
    pub(crate) async fn close(&self) {
        self.conn.close().await;
    }
}
