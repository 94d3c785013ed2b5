//! One connection that requests take turns on, without a pool.
//!
//! The writer (and the checkpointer) each have one connection. A sqlx pool of one would do,
//! but a pool pings every connection given back to it, from a task of its own, before the next
//! request may have it: for SQLite a round trip to the connection's thread between any two
//! writes, on the path of every append. Here the turn is a fair async mutex, and a request
//! gives the connection back by dropping its guard.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

/// The connection while a request holds it.
pub(crate) type Held<'a> = MappedMutexGuard<'a, SqliteConnection>;

/// One connection, one request at a time, in the order they asked; gone once closed.
#[derive(Debug)]
pub(crate) struct SingleConnection(Mutex<Option<SqliteConnection>>);

impl SingleConnection {
    /// Opens the connection.
    pub(crate) async fn connect(options: &SqliteConnectOptions) -> Result<Self, sqlx::Error> {
        Ok(SingleConnection(Mutex::new(Some(options.connect().await?))))
    }

    /// The connection, once the requests before this one have given it back;
    /// `PoolClosed` once [`SingleConnection::close`] ran.
    pub(crate) async fn hold(&self) -> Result<Held<'_>, sqlx::Error> {
        MutexGuard::try_map(self.0.lock().await, Option::as_mut)
            .map_err(|_| sqlx::Error::PoolClosed)
    }

    /// Closes the connection once the requests before have given it back.
    pub(crate) async fn close(&self) {
        if let Some(c) = self.0.lock().await.take() {
            let _ = c.close().await;
        }
    }
}
