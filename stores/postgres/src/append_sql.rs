//! An append as one statement: its record batches (one per partition, see
//! [`tributary_store_sql::batches`]), its dedup ids and the notification.
//!
//! The batches go in as one array per column, unnested by the server in the select list
//! (`SELECT unnest($4), unnest($5), ...`, run in step), so the rows stream into the insert.
//! Before anything is written the statement looks for a stored batch that overlaps one of the
//! new ones (the batch with the greatest first offset not above the new last offset: batches of
//! a partition never overlap, so if any does, that one does). When there is one, nothing is
//! written and the statement answers how many overlap; the store then tells an identical repeat
//! from a conflict. The dedup ids go in a second data-modifying CTE when the write has any.

use crate::NOTIFY_CHANNEL;
use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use tributary_core::{AppendWrite, StorageError};
use tributary_store_sql::{EventBatch, batches, codec, i32_of, i64_of};

/// The statement without dedup ids.
const APPEND: &str = r#"WITH new AS (
      SELECT unnest($4::int[]) AS partition, unnest($5::bigint[]) AS first_offset,
             unnest($6::bigint[]) AS last_offset, unnest($7::bigint[]) AS first_ts,
             unnest($8::bigint[]) AS last_ts, unnest($9::bigint[]) AS bytes,
             unnest($10::bytea[]) AS body
    ), overlap AS (
      SELECT 1 FROM new n JOIN LATERAL (
        SELECT b.last_offset FROM tributary_batches b
        WHERE b.stream_id = $1 AND b.partition = n.partition AND b.first_offset <= n.last_offset
        ORDER BY b.first_offset DESC LIMIT 1) b ON b.last_offset >= n.first_offset
    ), written AS (
      INSERT INTO tributary_batches (stream_id, partition, first_offset, last_offset, first_ts,
          last_ts, bytes, body)
      SELECT $1, partition, first_offset, last_offset, first_ts, last_ts, bytes, body FROM new
      WHERE NOT EXISTS (SELECT 1 FROM overlap)
    )"#;

/// The dedup ids' part of the statement, when the write has some.
const DEDUP: &str = r#", dedup AS (
      INSERT INTO tributary_dedup (stream_id, partition, "offset", event_id, expires_at)
      SELECT $1, * FROM UNNEST($11::int[], $12::bigint[], $13::bytea[], $14::bigint[])
      WHERE NOT EXISTS (SELECT 1 FROM overlap)
      ON CONFLICT DO NOTHING
    )"#;

/// The answer: how many new batches overlap stored ones (then nothing was written), and the
/// notification when something was.
const ANSWER: &str = r#" SELECT (SELECT count(*) FROM overlap) AS overlaps,
      (SELECT count(*) FROM (SELECT pg_notify($2, $3)
         WHERE $2 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM overlap)) n) AS notified"#;

/// The statement texts, without and with dedup ids.
fn text(dedup: bool) -> &'static str {
    static TEXTS: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        [
            format!("{APPEND}{ANSWER}"),
            format!("{APPEND}{DEDUP}{ANSWER}"),
        ]
    });
    &texts[usize::from(dedup)]
}

/// An append's columns: its batches and dedup ids.
pub(crate) struct Columns {
    /// The batches, one per partition.
    pub(crate) batches: Vec<EventBatch>,
    partition: Vec<i32>,
    first_offset: Vec<i64>,
    last_offset: Vec<i64>,
    first_ts: Vec<i64>,
    last_ts: Vec<i64>,
    bytes: Vec<i64>,
    dedup_partition: Vec<i32>,
    dedup_offset: Vec<i64>,
    dedup_id: Vec<Vec<u8>>,
    dedup_expiry: Vec<i64>,
}

impl Columns {
    /// The columns of `w`.
    pub(crate) fn of(w: &AppendWrite) -> Result<Self, StorageError> {
        let batches = batches(w.events.iter().map(|e| &**e)).map_err(codec)?;
        Ok(Columns {
            partition: batches.iter().map(|b| i32_of(b.partition)).collect(),
            first_offset: batches.iter().map(|b| i64_of(b.first_offset)).collect(),
            last_offset: batches.iter().map(|b| i64_of(b.last_offset)).collect(),
            first_ts: batches.iter().map(|b| i64_of(b.first_ts)).collect(),
            last_ts: batches.iter().map(|b| i64_of(b.last_ts)).collect(),
            bytes: batches.iter().map(|b| i64_of(b.bytes)).collect(),
            dedup_partition: w.dedup.iter().map(|d| i32_of(d.partition)).collect(),
            dedup_offset: w.dedup.iter().map(|d| i64_of(d.offset)).collect(),
            dedup_id: w
                .dedup
                .iter()
                .map(|d| d.event_id.as_bytes().to_vec())
                .collect(),
            dedup_expiry: w.dedup.iter().map(|d| i64_of(d.expires_at.0)).collect(),
            batches,
        })
    }

    /// The append's statement, bound: into the stream of id `stream_id`, notifying `stream` on
    /// [`NOTIFY_CHANNEL`] when `notify`. Its one row: (overlapping batches, notifications).
    pub(crate) fn query<'q>(
        &'q self,
        stream_id: i64,
        notify: bool,
        stream: &'q str,
    ) -> Query<'q, Postgres, PgArguments> {
        let dedup = !self.dedup_partition.is_empty();
        let bodies: Vec<&[u8]> = self.batches.iter().map(|b| b.body.as_slice()).collect();
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text(dedup)))
            .bind(stream_id)
            .bind(notify.then_some(NOTIFY_CHANNEL))
            .bind(stream)
            .bind(&self.partition)
            .bind(&self.first_offset)
            .bind(&self.last_offset)
            .bind(&self.first_ts)
            .bind(&self.last_ts)
            .bind(&self.bytes)
            .bind(bodies);
        if dedup {
            q = q
                .bind(&self.dedup_partition)
                .bind(&self.dedup_offset)
                .bind(&self.dedup_id)
                .bind(&self.dedup_expiry);
        }
        q
    }
}
