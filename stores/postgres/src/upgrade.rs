//! Moving the events of stores written before schema version 6 (one row per event in
//! `tributary_events`) into record batches, when the store opens (the move itself is
//! `tributary_store_sql::SqlBatches::move_event_rows`).

use sqlx::{PgPool, Postgres};
use tributary_store_sql::{SqlBatches, UpgradeError};

/// Moves every row of live streams from `tributary_events` into `tributary_batches`; answers
/// how many were moved. Nothing to do when the schema has not both tables (migrations off on
/// an empty schema).
pub(crate) async fn move_event_rows(pool: &PgPool) -> Result<u64, UpgradeError> {
    let both: bool = sqlx::query_scalar(
        "SELECT to_regclass('tributary_events') IS NOT NULL AND to_regclass('tributary_batches') IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    if !both {
        return Ok(0);
    }
    let mut c = pool.acquire().await?;
    SqlBatches::<Postgres>::move_event_rows(&mut c).await
}
