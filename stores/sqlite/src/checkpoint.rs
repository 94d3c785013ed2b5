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
//! for a pass, and it makes passes until the WAL is nearly copied. Once a pass finds the WAL
//! at nine tenths of the writer's threshold, the passes stop and the next append's commit is
//! followed, on the writer's connection, by one last `PASSIVE` checkpoint, which finds little
//! left to copy and nothing to wait for: no commit can come between, and no pass runs until it
//! is done. That one copies the WAL whole, so the write after it starts the WAL again.
//!
//! The hand-over matters: SQLite lets one checkpoint run at a time and a `PASSIVE` one that
//! finds another running gives up. Left to race, a pass in flight made the writer's own
//! checkpoint give up commit after commit on a loaded machine, and the WAL grew past twice
//! its threshold. SQLite's own checkpoint stays set at the threshold, for when the passes fail.
//! A failed pass is harmless: the writer's checkpoint copies what it left.

use crate::single::SingleConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
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
    /// A pass found the WAL at `handoff`: the writer checkpoints after its next commit, and
    /// no pass starts until it has.
    writers_turn: Arc<AtomicBool>,
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
            writers_turn: Arc::default(),
            passes: Arc::default(),
        })
    }

    /// Called after a commit: starts passes in the background unless some are running or it
    /// is the writer's turn.
    pub(crate) fn kick(&self) {
        if self.writers_turn.load(Ordering::Acquire) || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.run_passes().await });
    }

    /// Makes passes while the WAL grows and is short of the hand-over, then clears `running`.
    async fn run_passes(&self) {
        loop {
            let pass = match self.conn.hold().await {
                Ok(mut c) => passive_checkpoint(&mut c).await,
                Err(e) => Err(e),
            };
            self.passes.fetch_add(1, Ordering::Relaxed);
            // (busy, pages in the WAL, pages copied)
            match pass {
                Ok((_, log, _)) if log >= self.handoff => {
                    self.writers_turn.store(true, Ordering::Release);
                    break;
                }
                Ok((0, log, copied)) if log - copied >= MIN_FRAMES => {}
                Ok(_) => break,
                Err(e) => {
                    // Harmless (SQLite's own checkpoint copies what is left), and a failing
                    // disk shows in the writes themselves.
                    tracing::debug!(error = %e, "background WAL checkpoint failed");
                    break;
                }
            }
        }
        self.running.store(false, Ordering::Release);
    }

    /// Called by the writer after a commit, on its connection: when a pass found the WAL at
    /// the hand-over, copies the rest of it, so that the next write starts it again. No pass
    /// is running then. Until the WAL is copied whole (a reader on an older snapshot can hold
    /// back its newest pages) it stays the writer's turn, and the next commit tries again.
    pub(crate) async fn writers_checkpoint(&self, writer: &mut SqliteConnection) {
        if !self.writers_turn.load(Ordering::Acquire) {
            return;
        }
        match passive_checkpoint(writer).await {
            Ok((0, log, copied)) if copied >= log => {
                self.writers_turn.store(false, Ordering::Release);
            }
            // A reader on an older snapshot keeps the newest pages from being copied.
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "the writer's WAL checkpoint failed"),
        }
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

/// A `PASSIVE` checkpoint: (busy, pages in the WAL, pages copied).
async fn passive_checkpoint(c: &mut SqliteConnection) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(c)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
    use sqlx::{ConnectOptions, Connection};

    /// The pages in the WAL, as a checkpoint reports them.
    async fn wal_pages(c: &mut SqliteConnection) -> i64 {
        match passive_checkpoint(c).await {
            Ok((_, log, _)) => log,
            Err(e) => panic!("checkpoint: {e}"),
        }
    }

    /// Background passes, run here rather than spawned, as `kick` would start them.
    async fn passes_now(ck: &Checkpointer) {
        ck.running.store(true, Ordering::Release);
        ck.run_passes().await;
    }

    async fn commit(c: &mut SqliteConnection) {
        if let Err(e) = sqlx::query("INSERT INTO t (x) VALUES (zeroblob(6000))")
            .execute(c)
            .await
        {
            panic!("insert: {e}");
        }
    }

    /// A database with SQLite's own checkpoint off, so that only the hand-over copies the WAL;
    /// a writer connection and a checkpointer handing over at 90 pages.
    async fn setup() -> (
        tempfile::TempDir,
        SqliteConnectOptions,
        SqliteConnection,
        Checkpointer,
    ) {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temporary folder: {e}"),
        };
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("handover.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("wal_autocheckpoint", "0");
        let mut writer = match options.connect().await {
            Ok(c) => c,
            Err(e) => panic!("open: {e}"),
        };
        if let Err(e) = sqlx::query("CREATE TABLE t (x BLOB)")
            .execute(&mut writer)
            .await
        {
            panic!("create: {e}");
        }
        let ck = match Checkpointer::open(options.clone(), 100).await {
            Ok(c) => c,
            Err(e) => panic!("checkpointer: {e}"),
        };
        (dir, options, writer, ck)
    }

    /// Past the hand-over, the passes stop and leave the rest to the writer; no pass starts
    /// while it is the writer's turn; the writer's checkpoint copies the WAL whole and the
    /// write after it starts the WAL again.
    #[tokio::test]
    async fn a_pass_at_the_hand_over_leaves_the_rest_to_the_writer() {
        let (_dir, _, mut writer, ck) = setup().await;
        // Below the hand-over: a pass copies everything and it is not the writer's turn.
        commit(&mut writer).await;
        passes_now(&ck).await;
        assert!(!ck.writers_turn.load(Ordering::Acquire));
        for _ in 0..50 {
            commit(&mut writer).await;
        }
        passes_now(&ck).await;
        assert!(
            ck.writers_turn.load(Ordering::Acquire),
            "a pass found the WAL past 90 pages and did not hand over"
        );
        let passes = ck.passes();
        ck.kick();
        assert!(
            !ck.running.load(Ordering::Acquire),
            "a pass started during the writer's turn"
        );
        commit(&mut writer).await;
        ck.writers_checkpoint(&mut writer).await;
        assert!(!ck.writers_turn.load(Ordering::Acquire));
        assert_eq!(ck.passes(), passes);
        commit(&mut writer).await;
        let pages = wal_pages(&mut writer).await;
        assert!(
            pages < 10,
            "the WAL holds {pages} pages after the writer's checkpoint: it was not started again"
        );
        ck.close().await;
    }

    /// A reader on an older snapshot keeps the writer's checkpoint from copying the WAL whole:
    /// it stays the writer's turn until a checkpoint after the reader copies it.
    #[tokio::test]
    async fn the_writers_turn_lasts_until_the_wal_is_copied_whole() {
        let (_dir, options, mut writer, ck) = setup().await;
        for _ in 0..50 {
            commit(&mut writer).await;
        }
        passes_now(&ck).await;
        assert!(ck.writers_turn.load(Ordering::Acquire));
        let mut reader = match options.connect().await {
            Ok(c) => c,
            Err(e) => panic!("reader: {e}"),
        };
        let mut snapshot = match reader.begin().await {
            Ok(t) => t,
            Err(e) => panic!("begin: {e}"),
        };
        if let Err(e) = sqlx::query("SELECT count(*) FROM t")
            .fetch_one(&mut *snapshot)
            .await
        {
            panic!("read: {e}");
        }
        commit(&mut writer).await;
        ck.writers_checkpoint(&mut writer).await;
        assert!(
            ck.writers_turn.load(Ordering::Acquire),
            "the turn ended with pages a reader held back still in the WAL"
        );
        if let Err(e) = snapshot.rollback().await {
            panic!("rollback: {e}");
        }
        commit(&mut writer).await;
        ck.writers_checkpoint(&mut writer).await;
        assert!(!ck.writers_turn.load(Ordering::Acquire));
        ck.close().await;
    }
}
