//! Moving the events of stores written before schema version 6 (one row per event in
//! `tributary_events`) into record batches, when the store opens.
//!
//! One partition's run of up to [`MOVE_ROWS`] rows per transaction: its rows are read in offset
//! order, written as batches as an append writes them, and deleted, so a crash in
//! between leaves each row either moved or not, and the next open carries on. Rows of deleted
//! streams are left to the purge of deleted streams.

use sqlx::PgPool;
use tributary_core::StreamName;
use tributary_store_api::{EventRow, batches, decode_event, i32_of, i64_of};

/// Rows moved per transaction.
const MOVE_ROWS: i64 = 4096;

/// Why the rows could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The database refused or failed.
    #[error("moving events into record batches: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row cannot be read as an event.
    #[error("moving events into record batches: {0}")]
    Row(String),
}

/// Moves every row of live streams from `tributary_events` into `tributary_batches`; answers
/// how many were moved. Nothing to do when the schema has not both tables (migrations off on an empty schema).
pub(crate) async fn move_event_rows(pool: &PgPool) -> Result<u64, UpgradeError> {
    let both: bool = sqlx::query_scalar(
        "SELECT to_regclass('tributary_events') IS NOT NULL AND to_regclass('tributary_batches') IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    if !both {
        return Ok(0);
    }
    let mut moved = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let next: Option<(i64, String, i32)> = sqlx::query_as(
            r#"SELECT e.stream_id, s.name, e.partition FROM tributary_events e
               JOIN tributary_streams s ON s.id = e.stream_id LIMIT 1"#,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, name, partition)) = next else {
            return Ok(moved);
        };
        let stream = StreamName::new(&name)
            .map_err(|e| UpgradeError::Row(format!("stream name {name:?}: {e}")))?;
        let rows: Vec<EventRow> = sqlx::query_as(
            r#"SELECT partition, "offset", event_id, ts, event_type, schema_version, key,
                 correlation_id, causation_id, headers, content_type, payload
               FROM tributary_events WHERE stream_id = $1 AND partition = $2
               ORDER BY "offset" LIMIT $3"#,
        )
        .bind(id)
        .bind(partition)
        .bind(MOVE_ROWS)
        .fetch_all(&mut *tx)
        .await?;
        let (Some(lo), Some(hi)) = (
            rows.first().map(|r| r.offset),
            rows.last().map(|r| r.offset),
        ) else {
            return Ok(moved);
        };
        let events = rows
            .into_iter()
            .map(|r| decode_event(&stream, r).map_err(|e| UpgradeError::Row(e.0)))
            .collect::<Result<Vec<_>, _>>()?;
        for b in batches(events.iter().map(|e| &**e)).map_err(|e| UpgradeError::Row(e.0))? {
            sqlx::query(
                r#"INSERT INTO tributary_batches (stream_id, partition, first_offset, last_offset,
                     first_ts, last_ts, bytes, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
            )
            .bind(id)
            .bind(i32_of(b.partition))
            .bind(i64_of(b.first_offset))
            .bind(i64_of(b.last_offset))
            .bind(i64_of(b.first_ts))
            .bind(i64_of(b.last_ts))
            .bind(i64_of(b.bytes))
            .bind(&b.body)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            r#"DELETE FROM tributary_events WHERE stream_id = $1 AND partition = $2
               AND "offset" BETWEEN $3 AND $4"#,
        )
        .bind(id)
        .bind(partition)
        .bind(lo)
        .bind(hi)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        moved += u64::try_from(events.len()).unwrap_or(0);
    }
}
