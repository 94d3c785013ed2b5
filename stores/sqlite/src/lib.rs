//! # tributary-store-sqlite
//!
//! Tributary's embedded default store: the core's storage requests on one SQLite file.
//!
//! - WAL journal, `synchronous = FULL` by default (every commit is fsynced: an acknowledged
//!   append survives a crash of the process or of the machine); `NORMAL` is an option (survives
//!   a crash of the process only).
//! - Versioned migrations (`migrations/`), applied at [`SqliteStore::open`] unless turned off;
//!   sqlx records the applied versions in `_sqlx_migrations`.
//! - One writer connection (SQLite has one writer at a time) and a pool of readers, which WAL
//!   lets read while a write commits.
//! - A third connection copies the WAL into the database beside the writer (`PASSIVE`
//!   checkpoints after commits) until the WAL nears its threshold; then the writer copies the
//!   little left after a commit, so that the WAL starts again from the top. A WAL file past
//!   the threshold's size makes the writer wait for the copy in flight and copy the rest
//!   itself: the WAL stays within the threshold and an append or two, while no read holds an
//!   older snapshot (`checkpoint.rs`).
//! - Events are stored in record batches (migration 0007): one row per partition and append,
//!   its events encoded together (`tributary_store_sql::batches`). An append is one
//!   transaction of multi-row `INSERT` statements, sent as one command when it is not large;
//!   the core merges the appends of many producers into one request per stream (group commit).
//!   A trigger refuses a batch that overlaps a stored one, so an append of taken offsets writes
//!   nothing; the stored events then tell an identical repeat from a conflict.
//! - The events of databases written before version 7 (one row per event) are moved into
//!   batches when the store opens ([`OpenError::Upgrade`] if they cannot be).
//! - A deleted stream disappears in one short transaction; its rows are removed afterwards in
//!   bounded batches (resumed at the next open after a crash).
//! - Build with `LIBSQLITE3_FLAGS=SQLITE_DEFAULT_MEMSTATUS=0` (this workspace's
//!   `.cargo/config.toml` sets it): SQLite's memory statistics put every allocation of every
//!   connection behind one process-wide mutex, which costs reads a third of their rate when
//!   several readers run.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod append_sql;
mod checkpoint;
mod cursor_sql;
mod dialect;
mod single;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::PathBuf;
use std::time::Duration;
use tributary_core::{StorageRequest, StorageResult};
use tributary_store_api::Store;
pub use tributary_store_api::{Durability, PREDECESSOR_TIMEOUT};
pub use tributary_store_sql::{DELETE_BATCH, UpgradeError};
use tributary_store_sql::{SqlBatches, SqlStore};

/// Where the database is and how it is used.
#[derive(Debug, Clone)]
pub struct SqliteStoreConfig {
    /// The database file (created if missing, with its folder).
    pub path: PathBuf,
    /// When a commit is durable.
    pub durability: Durability,
    /// Apply the migrations at open.
    pub migrate: bool,
    /// Reader connections.
    pub readers: u32,
    /// How long a statement waits for a lock before failing.
    pub busy_timeout: Duration,
    /// WAL pages around which the WAL starts again from the top: a connection of its own
    /// copies the WAL beside the writer until nine tenths of that, then the writer copies the
    /// rest after a commit (SQLite's own `wal_autocheckpoint` is set to it too, for when the
    /// background copies fail). It is also the WAL file's limit: past that many pages the
    /// writer waits for a slow copy in flight and copies the rest itself, and a WAL started
    /// again is cut back to it (`journal_size_limit`). Larger: fewer pauses of the writer, a
    /// larger WAL file.
    pub wal_checkpoint_pages: u32,
}

impl SqliteStoreConfig {
    /// Defaults for a file: full durability, migrations on, 4 readers, 5 s busy timeout, the
    /// writer's checkpoint every 10,000 WAL pages (40 MB).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteStoreConfig {
            path: path.into(),
            durability: Durability::Full,
            migrate: true,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            wal_checkpoint_pages: checkpoint::DEFAULT_WAL_CHECKPOINT_PAGES,
        }
    }
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The folder of the database cannot be created.
    #[error("cannot create the folder of {path}: {source}")]
    Folder {
        /// The database path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite cannot open the file.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The database path.
        path: PathBuf,
        /// Why.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The events of an earlier version could not be moved into record batches.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
}

/// The SQLite store: the shared SQL store (`tributary_store_sql::SqlStore`) on SQLite's
/// connections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore(SqlStore<dialect::SqliteSql>);

/// Rows a reader connection's thread sends back ahead of the caller (sqlx's default: 50).
const READ_ROW_BUFFER: usize = 1024;

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl SqliteStore {
    /// Opens (or creates) the database, applies the migrations (unless turned off) and resumes
    /// unfinished deletions.
    pub async fn open(config: &SqliteStoreConfig) -> Result<SqliteStore, OpenError> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Folder {
                path: config.path.clone(),
                source,
            })?;
        }
        let open_err = |source| OpenError::Open {
            path: config.path.clone(),
            source,
        };
        let checkpoint_pages = config.wal_checkpoint_pages.max(1);
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout)
            // Statements that need a temporary table (the padded VALUES of an append) keep
            // it in memory rather than in a file.
            .pragma("temp_store", "memory")
            .pragma("wal_autocheckpoint", checkpoint_pages.to_string());
        if config.migrate {
            // On a pool of its own, closed before the writer opens: sqlx's migrator runs on
            // a pool (or a connection borrowed in a way that makes `open` not `Send`).
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .map_err(open_err)?;
            let migrated = MIGRATOR.run(&pool).await.map_err(OpenError::Migrate);
            pool.close().await;
            migrated?;
        }
        let writer = single::SingleConnection::connect(&options)
            .await
            .map_err(open_err)?;
        let moved = move_event_rows(&mut *writer.hold().await.map_err(open_err)?).await?;
        if moved > 0 {
            tracing::info!(
                events = moved,
                "events of an earlier version moved into record batches"
            );
        }
        let wal = checkpoint::limit_wal(
            &mut *writer.hold().await.map_err(open_err)?,
            checkpoint_pages,
        )
        .await
        .map_err(open_err)?;
        let checkpointer = checkpoint::Checkpointer::open(options.clone(), wal, checkpoint_pages)
            .await
            .map_err(open_err)?;
        // The connections are in this process: no ping before handing one out (a ping is a
        // round trip to the connection's thread, a wake-up of it, for every request).
        let readers = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(config.readers.max(1))
            .connect_with(
                options
                    .read_only(true)
                    // A read of a page of events (512 by default) is sent back by the
                    // connection's thread row by row: with room for the whole page, that
                    // thread never waits for the caller in the middle of a read (and is not
                    // woken again for each slice of it).
                    .row_buffer_size(READ_ROW_BUFFER),
            )
            .await
            .map_err(open_err)?;
        let store = SqlStore::new(dialect::SqliteSql {
            writer,
            readers,
            checkpointer,
        });
        store.resume_deletions().await;
        Ok(SqliteStore(store))
    }

    /// The versions of the migrations applied to the database, ascending.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&self.0.dialect().readers)
            .await
    }

    /// The durability the writer connection really has (`PRAGMA synchronous`: `FULL` or
    /// `EXTRA` is [`Durability::Full`], anything weaker [`Durability::Normal`]).
    pub async fn durability(&self) -> Result<Durability, sqlx::Error> {
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *self.0.dialect().writer.hold().await?)
            .await?;
        Ok(if level >= 2 {
            Durability::Full
        } else {
            Durability::Normal
        })
    }

    /// Background WAL checkpoint passes made since the store opened (a diagnostic: the WAL is
    /// copied into the database beside the writer, which then finds little left to copy).
    pub fn checkpoint_passes(&self) -> u64 {
        self.0.dialect().checkpointer.passes()
    }

    /// Closes the connections (the file stays consistent either way).
    pub async fn close(&self) {
        let sqlite = self.0.dialect();
        sqlite.checkpointer.close().await;
        sqlite.readers.close().await;
        sqlite.writer.close().await;
    }
}

/// Moves the events of versions before 7 (one row per event) into record batches; nothing to
/// do when the database has not both tables (migrations off on an empty file).
async fn move_event_rows(c: &mut sqlx::SqliteConnection) -> Result<u64, UpgradeError> {
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('tributary_events', 'tributary_batches')",
    )
    .fetch_one(&mut *c)
    .await?;
    if tables < 2 {
        return Ok(0);
    }
    SqlBatches::<sqlx::Sqlite>::move_event_rows(c).await
}

impl Store for SqliteStore {
    fn execute(
        &self,
        req: StorageRequest,
    ) -> impl std::future::Future<Output = StorageResult> + Send {
        let store = self.0.clone();
        async move { store.run(req).await }
    }

    /// One writer: a second write in flight would only wait for the first, and smaller writes
    /// cost more (measured in BENCHMARKS.md).
    fn writes_in_flight(&self) -> usize {
        1
    }
}
