//! WAL checkpoints beside the writer.
//!
//! A commit appends pages to the WAL; a checkpoint copies them into the database file and
//! syncs both files, and only once the WAL is wholly copied can the writer start it again
//! from the top. Left to SQLite, the writer runs that checkpoint itself every
//! `wal_autocheckpoint` pages ([`crate::SqliteStoreConfig::wal_checkpoint_pages`]), inside a
//! commit: every append in flight waits for the copy and two fsyncs (the rate lost and the p99
//! of BENCHMARKS.md).
//!
//! Here a connection of its own copies the WAL as it grows, with `PASSIVE` checkpoints (which
//! never block the writer or the readers), on its own thread: after each commit it is asked
//! for a pass, and it makes passes until the WAL is nearly copied. It stops at nine tenths of
//! the writer's own threshold, so that the writer's checkpoint
//! (the one that lets the WAL start again) still runs, but finds little left to copy and
//! little to sync. A failed pass is harmless: the writer's own checkpoint copies what it left.

use crate::single::SingleConnection;
use sqlx::sqlite::SqliteConnectOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The default of [`crate::SqliteStoreConfig::wal_checkpoint_pages`]: 40 MB of 4 KB pages.
/// The writer's checkpoint, with its two fsyncs inside a commit, then comes once every
/// 10,000 pages rather than every 1,000: publishing's p99 measured 8–11 ms against 14–18
/// (BENCHMARKS.md).
pub(crate) const DEFAULT_WAL_CHECKPOINT_PAGES: u32 = 10_000;

/// Pages not yet copied below which another pass is not worth its two fsyncs.
const MIN_FRAMES: i64 = 16;

/// The checkpointing connection and whether a pass is running. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Checkpointer {
    conn: Arc<SingleConnection>,
    /// WAL pages from which the background passes stop, leaving the rest of the WAL to the
    /// writer's own checkpoint.
    handoff: i64,
    running: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Opens the checkpointing connection with the writer's options; the writer checkpoints
    /// itself at `writer_pages`.
    pub(crate) async fn open(
        options: SqliteConnectOptions,
        writer_pages: u32,
    ) -> Result<Self, sqlx::Error> {
        Ok(Checkpointer {
            conn: Arc::new(SingleConnection::connect(&options).await?),
            handoff: i64::from(writer_pages) * 9 / 10,
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
                    Ok((0, log, copied)) if log - copied >= MIN_FRAMES && log < me.handoff => {}
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
