//! # tributary-store-any
//!
//! Which store a server runs on, named by one string: `sqlite` (the embedded default, in the
//! data folder), `sqlite:PATH`, or a PostgreSQL URL (`postgres://...`, optionally ending in
//! `#schema` to keep Tributary's tables in that schema); and [`AnyStore`], either of them
//! behind the `Store` trait. Shared by the tokio server (`tributary-server`) and the
//! async-std one (`tributary-io-async-std`): the feature `runtime-tokio` (default) or
//! `runtime-async-std` picks sqlx's runtime.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use tributary_core::{StorageRequest, StorageResult};
use tributary_store_api::{Durability, Store};
use tributary_store_postgres::{PgStore, PgStoreConfig};
use tributary_store_sqlite::{SqliteStore, SqliteStoreConfig};

/// The database file of the embedded store inside a data folder.
pub const SQLITE_FILE: &str = "tributary.db";

/// A store, as named on the command line or in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// SQLite in this file; `None`: `tributary.db` in the data folder.
    Sqlite(Option<PathBuf>),
    /// PostgreSQL at this URL, in this schema (`None`: `public`).
    Postgres {
        /// `postgres://user@host:port/db`.
        url: String,
        /// The schema.
        schema: Option<String>,
    },
}

/// How the server uses a PostgreSQL store (`[postgres]` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// Connections in the pool (1 to [`PgOptions::MAX_POOL`]).
    pub pool_size: u32,
    /// The server-side limit of one statement.
    pub statement_timeout: Duration,
    /// How long a request waits for a connection before it fails as unavailable.
    pub acquire_timeout: Duration,
}

impl PgOptions {
    /// The largest pool accepted (PostgreSQL's own default `max_connections` is 100).
    pub const MAX_POOL: u32 = 1000;

    /// Checks the values; the error names the field and its limit.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=Self::MAX_POOL).contains(&self.pool_size) {
            return Err(format!(
                "pool_size {} is outside 1..={}",
                self.pool_size,
                Self::MAX_POOL
            ));
        }
        for (name, d) in [
            ("statement_timeout", self.statement_timeout),
            ("acquire_timeout", self.acquire_timeout),
        ] {
            if d < Duration::from_millis(1) || d > Duration::from_secs(24 * 3600) {
                return Err(format!(
                    "{name} {} is outside 1ms..=24h",
                    humantime::format_duration(d)
                ));
            }
        }
        Ok(())
    }
}

impl Default for PgOptions {
    /// 32 connections, statements limited to 30 s, 5 s to get a connection.
    fn default() -> Self {
        PgOptions {
            pool_size: 32,
            statement_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A store name that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store {0:?}: expected `sqlite`, `sqlite:PATH` or `postgres://USER@HOST:PORT/DB[#SCHEMA]`")]
pub struct BadStoreSpec(pub String);

impl std::str::FromStr for StoreSpec {
    type Err = BadStoreSpec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "sqlite" {
            return Ok(StoreSpec::Sqlite(None));
        }
        if let Some(path) = s.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
            return Ok(StoreSpec::Sqlite(Some(PathBuf::from(path))));
        }
        // `postgres:URL` (the benches' form) or the URL itself.
        let url = match s.strip_prefix("postgres:") {
            Some(rest) if !rest.starts_with("//") => rest,
            _ => s,
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (url, schema) = match url.split_once('#') {
                Some((u, schema)) => (u, Some(schema.to_string())),
                None => (url, None),
            };
            return Ok(StoreSpec::Postgres {
                url: url.to_string(),
                schema,
            });
        }
        Err(BadStoreSpec(s.to_string()))
    }
}

impl StoreSpec {
    /// What to print about it (a PostgreSQL URL without its password).
    pub fn describe(&self, data_dir: &Path) -> String {
        match self {
            StoreSpec::Sqlite(p) => format!("sqlite:{}", self.sqlite_path(p, data_dir).display()),
            StoreSpec::Postgres { url, schema } => {
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(s), Some(at)) if at > s => {
                        let user = &url[s + 3..at];
                        let user = user.split(':').next().unwrap_or("");
                        format!("{}{user}{}", &url[..s + 3], &url[at..])
                    }
                    _ => url.clone(),
                };
                match schema {
                    Some(sc) => format!("{shown}#{sc}"),
                    None => shown,
                }
            }
        }
    }

    fn sqlite_path(&self, p: &Option<PathBuf>, data_dir: &Path) -> PathBuf {
        p.clone().unwrap_or_else(|| data_dir.join(SQLITE_FILE))
    }

    /// Opens the store (migrations applied, fsync on), PostgreSQL with the default options.
    pub async fn open(&self, data_dir: &Path) -> Result<AnyStore, String> {
        self.open_with(data_dir, &PgOptions::default(), Durability::Full)
            .await
    }

    /// Opens the store (migrations applied) with `durability`, PostgreSQL with `pg`.
    pub async fn open_with(
        &self,
        data_dir: &Path,
        pg: &PgOptions,
        durability: Durability,
    ) -> Result<AnyStore, String> {
        match self {
            StoreSpec::Sqlite(p) => {
                let mut config = SqliteStoreConfig::new(self.sqlite_path(p, data_dir));
                config.durability = durability;
                let s = SqliteStore::open(&config)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(AnyStore::Sqlite(s))
            }
            StoreSpec::Postgres { url, schema } => {
                let mut config = PgStoreConfig::new(url.clone());
                config.schema = schema.clone();
                config.pool_size = pg.pool_size;
                config.statement_timeout = pg.statement_timeout;
                config.acquire_timeout = pg.acquire_timeout;
                config.durability = durability;
                let s = PgStore::open(&config).await.map_err(|e| e.to_string())?;
                Ok(AnyStore::Postgres(s))
            }
        }
    }
}

/// Either SQL store.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

impl AnyStore {
    /// Whether the store answers and every migration this build knows is applied (readiness).
    pub async fn readiness(&self) -> Result<(), String> {
        let (applied, known) = match self {
            AnyStore::Sqlite(s) => (
                s.applied_migrations().await,
                &tributary_store_sqlite::MIGRATOR,
            ),
            AnyStore::Postgres(s) => (
                s.applied_migrations().await,
                &tributary_store_postgres::MIGRATOR,
            ),
        };
        let applied = applied.map_err(|e| format!("the store does not answer: {e}"))?;
        let missing: Vec<i64> = known
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("migrations not applied: {missing:?}"))
        }
    }

    /// Closes the connections.
    pub async fn close(&self) {
        match self {
            AnyStore::Sqlite(s) => s.close().await,
            AnyStore::Postgres(s) => s.pool().close().await,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_parse() {
        assert_eq!("sqlite".parse(), Ok(StoreSpec::Sqlite(None)));
        assert_eq!(
            "sqlite:/tmp/x.db".parse(),
            Ok(StoreSpec::Sqlite(Some("/tmp/x.db".into())))
        );
        assert_eq!(
            "postgres://u:secret@h:5/db#s1".parse(),
            Ok(StoreSpec::Postgres {
                url: "postgres://u:secret@h:5/db".into(),
                schema: Some("s1".into())
            })
        );
        assert_eq!(
            "postgres:postgres://h/db".parse::<StoreSpec>().map(|_| ()),
            Ok(())
        );
        assert!("mysql://h/db".parse::<StoreSpec>().is_err());
        assert!("sqlite:".parse::<StoreSpec>().is_err());
    }

    #[test]
    fn postgres_options_are_checked() {
        assert_eq!(PgOptions::default().validate(), Ok(()));
        let zero = PgOptions {
            pool_size: 0,
            ..PgOptions::default()
        };
        assert_eq!(
            zero.validate(),
            Err("pool_size 0 is outside 1..=1000".into())
        );
        let instant = PgOptions {
            statement_timeout: Duration::ZERO,
            ..PgOptions::default()
        };
        assert_eq!(
            instant.validate(),
            Err("statement_timeout 0s is outside 1ms..=24h".into())
        );
    }

    /// The options reach the pool and every connection (needs TRIBUTARY_TEST_DATABASE_URL).
    #[tokio::test]
    async fn postgres_options_reach_the_connections() {
        let Ok(url) = std::env::var("TRIBUTARY_TEST_DATABASE_URL") else {
            panic!("TRIBUTARY_TEST_DATABASE_URL must name a PostgreSQL for this test");
        };
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let schema = format!("options_{}_{at}", std::process::id());
        let spec: StoreSpec = format!("{url}#{schema}")
            .parse()
            .expect("a PostgreSQL spec");
        let pg = PgOptions {
            pool_size: 3,
            statement_timeout: Duration::from_millis(1500),
            acquire_timeout: Duration::from_secs(2),
        };
        let store = spec
            .open_with(Path::new("."), &pg, Durability::Normal)
            .await
            .expect("PostgreSQL opens");
        let AnyStore::Postgres(s) = &store else {
            panic!("a PostgreSQL spec opens PostgreSQL");
        };
        assert_eq!(s.pool().options().get_max_connections(), 3);
        assert_eq!(
            s.pool().options().get_acquire_timeout(),
            Duration::from_secs(2)
        );
        let shown: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(s.pool())
            .await
            .expect("SHOW answers");
        assert_eq!(shown, "1500ms");
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(s.pool())
            .await
            .expect("SHOW answers");
        assert_eq!(
            sync, "off",
            "durability normal leaves the fsync to PostgreSQL"
        );
        store.close().await;
        let full = spec.open(Path::new(".")).await.expect("PostgreSQL opens");
        let AnyStore::Postgres(f) = &full else {
            panic!("a PostgreSQL spec opens PostgreSQL");
        };
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(f.pool())
            .await
            .expect("SHOW answers");
        assert_eq!(sync, "on", "full durability by default");
        full.close().await;
    }

    #[tokio::test]
    async fn sqlite_durability_reaches_the_writer() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        for d in [Durability::Normal, Durability::Full] {
            let store = StoreSpec::Sqlite(None)
                .open_with(dir.path(), &PgOptions::default(), d)
                .await
                .expect("SQLite opens");
            let AnyStore::Sqlite(s) = &store else {
                panic!("a SQLite spec opens SQLite");
            };
            assert_eq!(s.durability().await.expect("PRAGMA answers"), d);
            store.close().await;
        }
    }

    #[test]
    fn the_password_is_not_shown() {
        let s: StoreSpec = "postgres://u:secret@h:5/db".parse().expect("valid");
        let shown = s.describe(Path::new("."));
        assert_eq!(shown, "postgres://u@h:5/db");
    }
}
