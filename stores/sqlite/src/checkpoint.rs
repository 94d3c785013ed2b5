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
//!
//! A pass can also be slow: its fsync of the database file waits behind every other write of
//! the machine, while the writer's commits (which do not fsync at `synchronous = NORMAL`) go
//! on, and the WAL grew by all of them (16 MB in one second on a loaded CI machine). So the
//! WAL has a hard limit, the threshold's size in bytes: the writer's connection keeps the WAL
//! file at it (`journal_size_limit`: a WAL started again is cut back to it), and a commit that
//! finds the file larger makes the writer wait for the pass in flight and copy the rest itself.
//! The writer thus cannot outrun the copy, as when SQLite checkpoints inside its commits, and
//! the WAL stays within the limit and an append or two, while no read holds an older snapshot
//! (no checkpoint can copy the pages such a read may still need). Writes other than appends
//! (cursor saves, stream changes) do not look at the limit: the next append does.

use crate::single::SingleConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The default of [`crate::SqliteStoreConfig::wal_checkpoint_pages`]: 40 MB of 4 KB pages.
/// The writer's checkpoint, with its two fsyncs inside a commit, then comes once every
/// 10,000 pages rather than every 1,000: publishing's p99 measured 8–11 ms against 14–18
/// (BENCHMARKS.md).
pub(crate) const DEFAULT_WAL_CHECKPOINT_PAGES: u32 = 10_000;

/// Pages not yet copied below which another pass is not worth its two fsyncs.
const MIN_FRAMES: i64 = 16;

/// Bytes of the WAL file's header, and of each frame's header before its page.
const WAL_HEADER: u64 = 32;
const FRAME_HEADER: u64 = 24;

/// The checkpointing connection and whether a pass is running. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Checkpointer {
    conn: Arc<SingleConnection>,
    /// WAL pages from which the background passes stop, leaving the rest of the WAL to the
    /// writer's own checkpoint.
    handoff: i64,
    /// The WAL file.
    wal: Arc<Path>,
    /// Its size in bytes past which the writer copies the WAL itself after a commit, waiting
    /// for a pass in flight; also the size a WAL started again is cut back to.
    limit: u64,
    running: Arc<AtomicBool>,
    /// A pass found the WAL at `handoff`: the writer checkpoints after its next commit, and
    /// no pass starts until it has.
    writers_turn: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Opens the checkpointing connection with the writer's options; the writer checkpoints
    /// itself at `writer_pages`, and its WAL is `wal` (see [`limit_wal`]).
    pub(crate) async fn open(
        options: SqliteConnectOptions,
        wal: WalLimit,
        writer_pages: u32,
    ) -> Result<Self, sqlx::Error> {
        Ok(Checkpointer {
            conn: Arc::new(SingleConnection::connect(&options).await?),
            handoff: i64::from(writer_pages) * 9 / 10,
            wal: Arc::from(wal.file),
            limit: wal.bytes,
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
        sqlx_core::rt::spawn(async move { me.run_passes().await });
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
    /// the hand-over, or the WAL file is past its limit, copies the rest of the WAL, so that
    /// the next write starts it again. It first waits for a pass in flight (whose checkpoint
    /// would make this one give up), and no pass starts until it is done. Until the WAL is
    /// copied whole (a reader on an older snapshot can hold back its newest pages) it stays
    /// the writer's turn, and the next commit tries again.
    pub(crate) async fn writers_checkpoint(&self, writer: &mut SqliteConnection) {
        if !self.writers_turn.load(Ordering::Acquire) && !self.wal_past_limit() {
            return;
        }
        // Closed: the store is closing, and SQLite's own checkpoint is there.
        let Ok(_no_pass) = self.conn.hold().await else {
            return;
        };
        match passive_checkpoint(writer).await {
            Ok((0, log, copied)) if copied >= log => {
                self.writers_turn.store(false, Ordering::Release);
            }
            // A reader on an older snapshot keeps the newest pages from being copied.
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "the writer's WAL checkpoint failed"),
        }
    }

    /// Whether the WAL file is larger than its limit: it grew past it since it last started
    /// again (an unreadable size counts as not).
    fn wal_past_limit(&self) -> bool {
        std::fs::metadata(&self.wal).is_ok_and(|m| m.len() > self.limit)
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

/// The WAL file of a database and its limit in bytes.
#[derive(Debug)]
pub(crate) struct WalLimit {
    file: PathBuf,
    bytes: u64,
}

/// Sets the writer's `journal_size_limit` to `pages` WAL pages in bytes (a WAL started again is
/// cut back to that), and tells where its WAL file is: beside the database file SQLite opened,
/// which for a symbolic link is the file it points to.
pub(crate) async fn limit_wal(
    writer: &mut SqliteConnection,
    pages: u32,
) -> Result<WalLimit, sqlx::Error> {
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *writer)
        .await?;
    let frame = u64::try_from(page_size).unwrap_or(4096) + FRAME_HEADER;
    let bytes = WAL_HEADER + u64::from(pages) * frame;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA journal_size_limit = {bytes}"
    )))
    .execute(&mut *writer)
    .await?;
    let db: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(&mut *writer)
            .await?;
    Ok(WalLimit {
        file: PathBuf::from(db + "-wal"),
        bytes,
    })
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
    /// a writer connection and a checkpointer handing over at 90 pages, the WAL's limit at
    /// 100.
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
        let wal = match limit_wal(&mut writer, 100).await {
            Ok(w) => w,
            Err(e) => panic!("WAL limit: {e}"),
        };
        let ck = match Checkpointer::open(options.clone(), wal, 100).await {
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

    /// A pass in flight (here the test holds the checkpointer's connection, as a pass does,
    /// while more is committed beside it) does not leave the WAL to grow: once the WAL file is
    /// past its limit, the writer's checkpoint waits for that pass, then copies the WAL whole,
    /// although it is not the writer's turn; the write after it starts the WAL again and cuts
    /// the file back to the limit.
    #[tokio::test]
    async fn past_its_limit_the_writer_waits_for_the_pass_in_flight_and_copies_the_wal() {
        let (_dir, options, mut writer, ck) = setup().await;
        let pass = match ck.conn.hold().await {
            Ok(p) => p,
            Err(e) => panic!("checkpointer: {e}"),
        };
        while !ck.wal_past_limit() {
            commit(&mut writer).await;
        }
        assert!(!ck.writers_turn.load(Ordering::Acquire));
        let checkpointing = {
            let ck = ck.clone();
            tokio::spawn(async move {
                ck.writers_checkpoint(&mut writer).await;
                writer
            })
        };
        // Committed by the pass's side after the writer asked to checkpoint: a writer that
        // did not wait for the pass would copy the WAL without these pages.
        let mut beside = match options.connect().await {
            Ok(c) => c,
            Err(e) => panic!("second connection: {e}"),
        };
        for _ in 0..5 {
            commit(&mut beside).await;
        }
        assert!(
            !checkpointing.is_finished(),
            "the writer's checkpoint ended while a pass was in flight"
        );
        drop(pass);
        let mut writer = match checkpointing.await {
            Ok(w) => w,
            Err(e) => panic!("the writer's checkpoint: {e}"),
        };
        commit(&mut writer).await;
        let pages = wal_pages(&mut writer).await;
        assert!(
            pages < 10,
            "the WAL holds {pages} pages after the writer's checkpoint: it was not started again"
        );
        let size = std::fs::metadata(&*ck.wal).map_or(0, |m| m.len());
        assert!(
            size <= ck.limit,
            "the WAL file stayed at {size} bytes, past its limit of {}",
            ck.limit
        );
        ck.close().await;
    }

    /// The WAL file measured is the one SQLite writes: for a database opened through a
    /// symbolic link, beside the file the link points to.
    #[cfg(unix)]
    #[tokio::test]
    async fn the_wal_measured_is_beside_the_file_a_link_points_to() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temporary folder: {e}"),
        };
        let real = dir.path().join("real.db");
        let link = dir.path().join("link.db");
        if let Err(e) =
            std::fs::File::create(&real).and_then(|_| std::os::unix::fs::symlink(&real, &link))
        {
            panic!("link: {e}");
        }
        let options = SqliteConnectOptions::new()
            .filename(&link)
            .journal_mode(SqliteJournalMode::Wal);
        let mut writer = match options.connect().await {
            Ok(c) => c,
            Err(e) => panic!("open: {e}"),
        };
        let wal = match limit_wal(&mut writer, 100).await {
            Ok(w) => w,
            Err(e) => panic!("WAL limit: {e}"),
        };
        let real = match real.canonicalize() {
            Ok(p) => p,
            Err(e) => panic!("canonical path: {e}"),
        };
        assert_eq!(wal.file, real.with_file_name("real.db-wal"));
        assert_eq!(wal.bytes, 32 + 100 * (4096 + 24));
        if let Err(e) = sqlx::query("CREATE TABLE t (x BLOB)")
            .execute(&mut writer)
            .await
        {
            panic!("create: {e}");
        }
        commit(&mut writer).await;
        assert!(wal.file.exists(), "no WAL file at {}", wal.file.display());
    }
}
