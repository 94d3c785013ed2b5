//! # tributary-store-postgres
//!
//! Tributary's production store: carries out the core's storage requests on PostgreSQL.
//!
//! - Versioned migrations (`migrations/`, applied at [`PgStore::open`] unless turned off; sqlx
//!   records the applied versions in `_sqlx_migrations`). Events stored one row each by
//!   versions before 6 are moved into record batches at open ([`UpgradeError`] if they cannot
//!   be).
//! - Events are stored in record batches: one row per partition and append, its events encoded
//!   in one value (`tributary_store_sql::batches`), so the database writes a row and an index
//!   entry per batch, not per event.
//! - Appends are one statement each: the batches by a multi-row `INSERT ... SELECT` of unnested
//!   arrays, written only if none overlaps a stored batch, then the dedup ids, then one
//!   `pg_notify` (a wake-up hint for readers in other processes, see [`Notifications`]). The
//!   core already merges the appends of many producers into one request per stream (group
//!   commit).
//! - An outcome that cannot be known (the connection dropped during `COMMIT`) is `Unknown`.
//! - A deleted stream disappears in one short transaction; its events are then removed in
//!   bounded batches in the background (resumed at the next open after a crash).
//! - [`Inbox`] records "event processed" inside a consumer's own transaction (exactly-once
//!   processing, SPEC 5), keyed by [`InboxKey`] (stream, subscription, consumer where
//!   broadcast) and the event id.
//! - The store's sessions run with `enable_seqscan = off`: every statement of the store reads
//!   through an index, and a generic plan made while a table looked empty would otherwise scan
//!   it whole on every append until the next analyze. Queries of your own on [`PgStore::pool`]
//!   run with it too.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod append_sql;
mod dialect;
mod inbox;
mod notify;
mod upgrade;

pub use inbox::{Inbox, InboxKey};
pub use notify::{Notifications, Wakeup};
pub use tributary_store_sql::UpgradeError;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;
use tributary_core::{StorageRequest, StorageResult};
use tributary_store_api::Store;
pub use tributary_store_api::{Durability, PREDECESSOR_TIMEOUT};
pub use tributary_store_sql::DELETE_BATCH;
use tributary_store_sql::SqlStore;

/// A pooled connection idle this long is pinged before it is handed out again.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// The channel of the wake-up notifications sent after each append.
pub const NOTIFY_CHANNEL: &str = "tributary_events";

/// How to reach and use the database.
#[derive(Debug, Clone)]
pub struct PgStoreConfig {
    /// `postgres://user@host:port/db`.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Server-side limit of one statement.
    pub statement_timeout: Duration,
    /// How long to wait for a connection from the pool before answering `Unavailable`.
    pub acquire_timeout: Duration,
    /// When a commit is durable: `Normal` sets `synchronous_commit = off` on every
    /// connection (see [`Durability`]).
    pub durability: Durability,
    /// Apply the migrations at open.
    pub migrate: bool,
    /// Send a `pg_notify` after each append.
    pub notify: bool,
    /// Keep Tributary's tables in this schema (created if missing) instead of `public`.
    /// Letters, digits and `_`, starting with a letter or `_`.
    pub schema: Option<String>,
}

impl PgStoreConfig {
    /// Defaults for a URL: 16 connections, 30 s statement timeout, 5 s acquire timeout,
    /// full durability, migrations and notifications on.
    pub fn new(url: impl Into<String>) -> Self {
        PgStoreConfig {
            url: url.into(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(5),
            durability: Durability::Full,
            migrate: true,
            notify: true,
            schema: None,
        }
    }
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL does not parse.
    #[error("bad PostgreSQL URL: {0}")]
    Url(#[source] sqlx::Error),
    /// The server cannot be reached or refused us.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    /// The schema name is not a plain identifier.
    #[error("schema name {0:?}: use letters, digits and _, starting with a letter or _")]
    Schema(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The events of an earlier version could not be moved into record batches.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
}

/// The PostgreSQL store: the shared SQL store (`tributary_store_sql::SqlStore`) on a pool.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStore(SqlStore<dialect::PgSql>);

impl PgStore {
    /// Connects, applies the migrations (unless turned off) and resumes unfinished deletions.
    pub async fn open(config: &PgStoreConfig) -> Result<PgStore, OpenError> {
        let timeout_ms = config.statement_timeout.as_millis().to_string();
        let mut options = PgConnectOptions::from_str(&config.url)
            .map_err(OpenError::Url)?
            .options([("statement_timeout", timeout_ms.as_str())])
            // Every statement of the store reads through an index. A prepared statement keeps
            // the generic plan it made first: made when the statistics said a table was empty
            // (vacuumed once empty, as after retention removed everything), that plan scans
            // the whole table, and keeps doing so on every append while the table grows, until
            // the next analyze (measured: appends of 256 events 5 times slower, the server's
            // CPU per event 8 times higher). Sequential scans off, the planner takes the index
            // even then (no cost measured otherwise, BENCHMARKS.md).
            .options([("enable_seqscan", "off")]);
        if config.durability == Durability::Normal {
            options = options.options([("synchronous_commit", "off")]);
        }
        if let Some(schema) = &config.schema {
            let plain = schema
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !plain || schema.len() > 63 {
                return Err(OpenError::Schema(schema.clone()));
            }
            let mut admin = PgConnection::connect_with(&options)
                .await
                .map_err(OpenError::Connect)?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&mut admin)
            .await
            .map_err(OpenError::Connect)?;
            let _ = admin.close().await;
            options = options.options([("search_path", schema.as_str())]);
        }
        // A connection is checked before it is handed out only after it sat idle: a check is
        // a round trip to its server process, which would double those of every append.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .max_connections(config.pool_size.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        if config.migrate {
            MIGRATOR.run(&pool).await.map_err(OpenError::Migrate)?;
        }
        let moved = upgrade::move_event_rows(&pool).await?;
        if moved > 0 {
            tracing::info!(
                events = moved,
                "events of an earlier version moved into record batches"
            );
        }
        let store = SqlStore::new(dialect::PgSql {
            pool,
            notify: config.notify,
            cursor_turn: tokio::sync::Mutex::default(),
        });
        store.resume_deletions().await;
        Ok(PgStore(store))
    }

    /// The pool, for callers that keep their own data next to Tributary's (the inbox). Its
    /// sessions run with `enable_seqscan = off` (see the crate's documentation).
    pub fn pool(&self) -> &PgPool {
        &self.0.dialect().pool
    }

    /// The versions of the migrations applied to the database, ascending.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(self.pool())
            .await
    }
}

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store for PgStore {
    fn execute(
        &self,
        req: StorageRequest,
    ) -> impl std::future::Future<Output = StorageResult> + Send {
        let store = self.0.clone();
        async move { store.run(req).await }
    }
}
