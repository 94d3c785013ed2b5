//! The stores the suite runs on: a fresh one per case, which a case may open again (an engine
//! restarted on it).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use tributary_core::{StorageRequest, StorageResult};
use tributary_store_api::Store;
use tributary_store_conformance::SharedMemoryStore;
use tributary_store_postgres::{PgStore, PgStoreConfig};
use tributary_store_sqlite::{SqliteStore, SqliteStoreConfig};

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The memory store (shared behind a mutex).
    Memory,
    /// SQLite in a temporary folder.
    Sqlite,
    /// The PostgreSQL of `TRIBUTARY_TEST_DATABASE_URL`, in a schema of its own.
    Postgres,
}

/// Where a case's store lives: opened as often as the case needs, always the same data.
#[derive(Debug)]
pub struct Place {
    backend: Backend,
    dir: tempfile::TempDir,
    memory: SharedMemoryStore,
    pg: Option<PgStoreConfig>,
}

static SCHEMAS: AtomicU32 = AtomicU32::new(0);

impl Place {
    /// A new, empty place. Panics (failing the case) when PostgreSQL is asked for without
    /// `TRIBUTARY_TEST_DATABASE_URL`.
    pub fn new(backend: Backend) -> Place {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let pg = (backend == Backend::Postgres).then(|| {
            let url = match std::env::var("TRIBUTARY_TEST_DATABASE_URL") {
                Ok(u) if !u.is_empty() => u,
                _ => panic!(
                    "TRIBUTARY_TEST_DATABASE_URL is not set: the PostgreSQL cases need a server \
                     (scripts/pg-test-cluster start prints a URL; scripts/test does it for you)"
                ),
            };
            let n = SCHEMAS.fetch_add(1, Ordering::Relaxed);
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            let mut c = PgStoreConfig::new(url);
            c.schema = Some(format!("exec_{}_{t}_{n}", std::process::id()));
            c.pool_size = 8;
            c
        });
        Place {
            backend,
            dir,
            memory: SharedMemoryStore::default(),
            pg,
        }
    }

    fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("tributary.db")
    }

    /// Opens the store (the same data each time).
    pub async fn open(&self) -> AnyStore {
        match self.backend {
            Backend::Memory => AnyStore::Memory(self.memory.clone()),
            Backend::Sqlite => AnyStore::Sqlite(
                SqliteStore::open(&SqliteStoreConfig::new(self.sqlite_path()))
                    .await
                    .expect("SQLite opens"),
            ),
            Backend::Postgres => {
                let c = self.pg.as_ref().expect("a PostgreSQL configuration");
                AnyStore::Postgres(PgStore::open(c).await.expect("PostgreSQL opens"))
            }
        }
    }
}

/// One of the stores.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// Memory.
    Memory(SharedMemoryStore),
    /// SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

impl AnyStore {
    /// Closes it once the requests in flight are done.
    pub async fn close(&self) {
        match self {
            AnyStore::Memory(_) => {}
            AnyStore::Sqlite(s) => s.close().await,
            AnyStore::Postgres(s) => s.pool().close().await,
        }
    }
}

impl Store for AnyStore {
    fn writes_in_flight(&self) -> usize {
        match self {
            AnyStore::Memory(s) => s.writes_in_flight(),
            AnyStore::Sqlite(s) => s.writes_in_flight(),
            AnyStore::Postgres(s) => s.writes_in_flight(),
        }
    }

    fn execute(
        &self,
        req: StorageRequest,
    ) -> impl std::future::Future<Output = StorageResult> + Send {
        let s = self.clone();
        async move {
            match s {
                AnyStore::Memory(s) => s.execute(req).await,
                AnyStore::Sqlite(s) => s.execute(req).await,
                AnyStore::Postgres(s) => s.execute(req).await,
            }
        }
    }
}
