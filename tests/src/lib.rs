//! Shared pieces of Tributary's integration tests and benches: opening either SQL store from
//! a short description (`sqlite:PATH` or `postgres:URL[#schema]`) and running an executor on it.

#![forbid(unsafe_code)]

use tributary_core::{Config, Engine, StorageRequest, StorageResult};
use tributary_io_tokio::{Clock, ExecutorConfig, Handle, TokioRuntime, start};
use tributary_store_api::Store;
use tributary_store_postgres::{PgStore, PgStoreConfig};
use tributary_store_sqlite::{SqliteStore, SqliteStoreConfig};

/// Either SQL store.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

impl Store for AnyStore {
    fn writes_in_flight(&self) -> usize {
        match self {
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
                AnyStore::Sqlite(s) => s.execute(req).await,
                AnyStore::Postgres(s) => s.execute(req).await,
            }
        }
    }
}

/// Opens `sqlite:PATH` or `postgres:URL[#schema]` (fsync on for both).
pub async fn open_store(spec: &str) -> Result<AnyStore, String> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        let s = SqliteStore::open(&SqliteStoreConfig::new(path))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(AnyStore::Sqlite(s));
    }
    if let Some(rest) = spec.strip_prefix("postgres:") {
        let (url, schema) = match rest.split_once('#') {
            Some((u, s)) => (u, Some(s.to_string())),
            None => (rest, None),
        };
        let mut config = PgStoreConfig::new(url);
        config.schema = schema;
        config.pool_size = 32;
        let s = PgStore::open(&config).await.map_err(|e| e.to_string())?;
        return Ok(AnyStore::Postgres(s));
    }
    Err(format!(
        "store {spec:?}: expected sqlite:PATH or postgres:URL[#schema]"
    ))
}

/// Starts an engine with `config` on `store` under the tokio executor, with the store's
/// preferred number of appends in flight.
pub fn run_engine(store: AnyStore, mut config: Config, seed: u64) -> Result<Handle, String> {
    config.max_append_writes_in_flight = store.writes_in_flight();
    let clock = Clock::default();
    let engine = Engine::new(config, seed, clock.now()).map_err(|e| e.to_string())?;
    Ok(start(
        TokioRuntime,
        store,
        engine,
        clock,
        ExecutorConfig::default(),
    ))
}
