//! The record batches in SQL: the reads, searches and removals that both SQL stores run the
//! same way on their `tributary_batches` table (an append's statements differ: each store
//! writes in its own way, see their `append_sql.rs`).
//!
//! The table: `(stream_id, partition, first_offset, last_offset, first_ts, last_ts, bytes,
//! body)`, unique on `(stream_id, partition, first_offset)` and indexed on
//! `(stream_id, partition, last_ts, first_offset)`. A partition's batches never overlap, so the
//! batch that may hold an offset is the one with the greatest first offset not above it: one
//! look-up in the unique index. The statements use `$n` placeholders, which both PostgreSQL
//! and SQLite (through sqlx) take.

use crate::{
    CodecError, EventRow, batch, batches, codec, decode_batch, decode_event, failed, i32_of,
    i64_of, next_offset, retained_bytes, u64_of,
};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use tributary_core::{
    AppendWrite, Event, StorageError, StorageReply, StorageResult, StreamName, UnixMillis,
};

type Res<T> = Result<T, StorageError>;

/// Recovery's heads: one row per partition (see [`crate::HeadRow`]), with the lowest and
/// highest stored offsets and the last timestamp, one index look-up each.
pub const RECOVER_HEADS: &str = r#"SELECT s.id, s.name, s.config, p.partition, p.first_offset, p.next_floor, p.last_ts,
     (SELECT b.first_offset FROM tributary_batches b WHERE b.stream_id = p.stream_id
        AND b.partition = p.partition ORDER BY b.first_offset ASC LIMIT 1) AS lo,
     (SELECT b.last_offset FROM tributary_batches b WHERE b.stream_id = p.stream_id
        AND b.partition = p.partition ORDER BY b.first_offset DESC LIMIT 1) AS hi,
     (SELECT b.last_ts FROM tributary_batches b WHERE b.stream_id = p.stream_id
        AND b.partition = p.partition ORDER BY b.first_offset DESC LIMIT 1) AS hi_ts
   FROM tributary_streams s JOIN tributary_partitions p ON p.stream_id = s.id
   ORDER BY s.name, p.partition"#;

/// Batches read per statement of a read.
const READ_BATCHES: i64 = 8;

/// A page of a read (`$3` the first offset wanted): from the batch that may hold it onwards,
/// so the statement walks the index from there instead of from the partition's start.
const READ: &str = r#"SELECT last_offset, body FROM tributary_batches
   WHERE stream_id = $1 AND partition = $2
     AND first_offset >= (SELECT COALESCE(MAX(first_offset), 0) FROM tributary_batches
       WHERE stream_id = $1 AND partition = $2 AND first_offset <= $3)
   ORDER BY first_offset LIMIT $4"#;

/// The bodies of the batches that hold offsets `$3..=$4`.
const RANGE: &str = r#"SELECT body FROM tributary_batches
   WHERE stream_id = $1 AND partition = $2 AND first_offset <= $4
     AND first_offset >= (SELECT COALESCE(MAX(first_offset), 0) FROM tributary_batches
       WHERE stream_id = $1 AND partition = $2 AND first_offset <= $3)
   ORDER BY first_offset"#;

/// The first batch whose last event is at or after the time `$3` (the index on `last_ts`).
const AT_TIME: &str = r#"SELECT body FROM tributary_batches
   WHERE stream_id = $1 AND partition = $2 AND last_ts >= $3
   ORDER BY last_ts, first_offset LIMIT 1"#;

/// The highest stored offset and the partition's next floor; no row when the partition does
/// not exist.
const NEXT: &str = r#"SELECT (SELECT b.last_offset FROM tributary_batches b
     WHERE b.stream_id = p.stream_id AND b.partition = p.partition
     ORDER BY b.first_offset DESC LIMIT 1), p.next_floor
   FROM tributary_partitions p WHERE p.stream_id = $1 AND p.partition = $2"#;

/// Batches read per statement of the size cut.
const TAIL_BATCHES: i64 = 1024;

/// A page of the size cut: the first offsets and sizes of up to `$4` batches that start below
/// `$3`, newest first.
const TAIL: &str = r#"SELECT first_offset, bytes FROM tributary_batches
   WHERE stream_id = $1 AND partition = $2 AND first_offset < $3
   ORDER BY first_offset DESC LIMIT $4"#;

/// The body of the batch that starts at `$3`.
const BODY_AT: &str = r#"SELECT body FROM tributary_batches
   WHERE stream_id = $1 AND partition = $2 AND first_offset = $3"#;

/// The last batch that starts below `$3`.
const LAST_BELOW: &str = r#"SELECT first_offset, last_offset, last_ts, body FROM tributary_batches
   WHERE stream_id = $1 AND partition = $2 AND first_offset < $3
   ORDER BY first_offset DESC LIMIT 1"#;

/// A truncation's new partition row: the first offset and next floor at least `$3`, the last
/// timestamp at least `$4` (`CASE` rather than `GREATEST` or `MAX`, which the two dialects
/// spell differently).
const RAISE_PARTITION: &str = r#"UPDATE tributary_partitions SET
     first_offset = CASE WHEN first_offset > $3 THEN first_offset ELSE $3 END,
     next_floor = CASE WHEN next_floor > $3 THEN next_floor ELSE $3 END,
     last_ts = CASE WHEN last_ts > $4 THEN last_ts ELSE $4 END
   WHERE stream_id = $1 AND partition = $2"#;

/// The batch that started at `$3` without its events below the cut.
const REWRITE: &str = r#"UPDATE tributary_batches SET first_offset = $4, first_ts = $5, bytes = $6,
     body = $7
   WHERE stream_id = $1 AND partition = $2 AND first_offset = $3"#;

/// Up to `$4` batches wholly below `$3`, answering their first offsets (both dialects have
/// `RETURNING`; sqlx has no trait for the count of rows changed).
const DELETE_BELOW: &str = r#"DELETE FROM tributary_batches WHERE stream_id = $1 AND partition = $2
   AND first_offset IN (SELECT first_offset FROM tributary_batches
     WHERE stream_id = $1 AND partition = $2 AND first_offset < $3 AND last_offset < $3
     LIMIT $4)
   RETURNING first_offset"#;

/// Inserts one batch (the move of rows of earlier versions; appends have statements of their
/// own).
const INSERT_ONE: &str = r#"INSERT INTO tributary_batches (stream_id, partition, first_offset,
     last_offset, first_ts, last_ts, bytes, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#;

/// Rows of earlier versions moved per transaction.
const MOVE_ROWS: i64 = 4096;

/// Why the rows of an earlier version could not be moved into batches.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The database refused or failed.
    #[error("moving events into record batches: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row cannot be read as an event.
    #[error("moving events into record batches: {0}")]
    Row(String),
}

impl From<CodecError> for UpgradeError {
    fn from(e: CodecError) -> Self {
        UpgradeError::Row(e.0)
    }
}

/// The record-batch statements on a connection of database `DB`: `SqlBatches::<Postgres>` or
/// `SqlBatches::<Sqlite>`. Every function takes the stream's name and its id in the store.
pub struct SqlBatches<DB>(PhantomData<DB>);

impl<DB> SqlBatches<DB>
where
    DB: sqlx::Database,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i32: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (i64, Vec<u8>): sqlx::FromRow<'r, DB::Row>,
    for<'r> (Vec<u8>,): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64, i64): sqlx::FromRow<'r, DB::Row>,
    for<'r> (Option<i64>,): sqlx::FromRow<'r, DB::Row>,
    for<'r> (Option<i64>, i64): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64, i64, i64, Vec<u8>): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64, String, i32): sqlx::FromRow<'r, DB::Row>,
    for<'r> EventRow: sqlx::FromRow<'r, DB::Row>,
{
    /// Up to `max` events of `partition` from offset `from`, a few batches per statement.
    pub async fn read(
        c: &mut DB::Connection,
        stream: &StreamName,
        id: i64,
        partition: u32,
        from: u64,
        max: u32,
    ) -> Res<Vec<Arc<Event>>> {
        let want = usize::try_from(max).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut next = from;
        while out.len() < want {
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(READ)
                .bind(id)
                .bind(i32_of(partition))
                .bind(i64_of(next))
                .bind(READ_BATCHES)
                .fetch_all(&mut *c)
                .await
                .map_err(|e| failed(&e))?;
            let Some(last) = rows.last().map(|r| u64_of(r.0)) else {
                break;
            };
            let full = rows.len() == usize::try_from(READ_BATCHES).unwrap_or(0);
            for (_, body) in rows {
                let events = decode_batch(stream, partition, &body).map_err(codec)?;
                out.extend(events.into_iter().filter(|e| e.offset >= next));
            }
            out.truncate(want);
            if !full {
                break;
            }
            next = last.saturating_add(1);
        }
        Ok(out)
    }

    /// The stored events of `partition` with offsets in `lo..=hi`, by offset.
    pub async fn stored_range(
        c: &mut DB::Connection,
        stream: &StreamName,
        id: i64,
        partition: u32,
        lo: u64,
        hi: u64,
    ) -> Res<BTreeMap<u64, Arc<Event>>> {
        let bodies: Vec<(Vec<u8>,)> = sqlx::query_as(RANGE)
            .bind(id)
            .bind(i32_of(partition))
            .bind(i64_of(lo))
            .bind(i64_of(hi))
            .fetch_all(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        let mut out = BTreeMap::new();
        for (body,) in bodies {
            for e in decode_batch(stream, partition, &body).map_err(codec)? {
                if (lo..=hi).contains(&e.offset) {
                    out.insert(e.offset, e);
                }
            }
        }
        Ok(out)
    }

    /// After an append that was refused because its batches overlap stored ones: success when
    /// every event of `w` is stored at its offset with its id (an identical repeat), a conflict
    /// otherwise.
    pub async fn repeat_or_conflict(
        c: &mut DB::Connection,
        id: i64,
        w: &AppendWrite,
    ) -> StorageResult {
        // Each partition's range of offsets in the write.
        let mut ranges: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for e in &w.events {
            let r = ranges.entry(e.partition).or_insert((e.offset, e.offset));
            *r = (r.0.min(e.offset), r.1.max(e.offset));
        }
        let mut all = true;
        for (partition, (lo, hi)) in ranges {
            let stored = match Self::stored_range(c, &w.stream, id, partition, lo, hi).await {
                Ok(s) => s,
                Err(e) => return StorageResult::Err(e),
            };
            all &= w
                .events
                .iter()
                .filter(|e| e.partition == partition)
                .all(|e| {
                    stored
                        .get(&e.offset)
                        .is_some_and(|s| s.event_id == e.event_id)
                });
        }
        if all {
            StorageResult::Ok(StorageReply::Done)
        } else {
            StorageResult::Err(StorageError::Conflict(format!(
                "stream {}: offsets of this write hold other events",
                w.stream
            )))
        }
    }

    /// The first offset of `partition` at or after `at`: the first batch whose last event is
    /// at or after it, then the event inside; the partition's next offset when every stored
    /// event is before it.
    pub async fn find_offset(
        c: &mut DB::Connection,
        stream: &StreamName,
        id: i64,
        partition: u32,
        at: UnixMillis,
    ) -> Res<u64> {
        let p = i32_of(partition);
        let body: Option<(Vec<u8>,)> = sqlx::query_as(AT_TIME)
            .bind(id)
            .bind(p)
            .bind(i64_of(at.0))
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        if let Some((body,)) = body {
            let events = decode_batch(stream, partition, &body).map_err(codec)?;
            if let Some(e) = events.iter().find(|e| e.timestamp >= at) {
                return Ok(e.offset);
            }
        }
        let (hi, floor): (Option<i64>, i64) = sqlx::query_as(NEXT)
            .bind(id)
            .bind(p)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| failed(&e))?
            .ok_or_else(|| {
                StorageError::NotFound(format!("stream {stream} partition {partition}"))
            })?;
        Ok(next_offset(hi, floor))
    }

    /// The first offset to keep so that the partition's tail holds at most `max_bytes` of
    /// payloads and keys: the batches' sizes are added up from the newest, a page at a time,
    /// until the one at which the total passes the limit (so the walk reads about as many
    /// batches as the limit keeps, whatever the partition's length), then its events are added
    /// up from its newest to the one where the total does. The lowest stored offset when the
    /// whole partition fits (0 when it is empty).
    pub async fn retention_cut(
        c: &mut DB::Connection,
        stream: &StreamName,
        id: i64,
        partition: u32,
        max_bytes: u64,
    ) -> Res<u64> {
        let part = i32_of(partition);
        let mut total = 0u64;
        let mut lowest = None;
        let mut below = i64::MAX;
        loop {
            let page: Vec<(i64, i64)> = sqlx::query_as(TAIL)
                .bind(id)
                .bind(part)
                .bind(below)
                .bind(TAIL_BATCHES)
                .fetch_all(&mut *c)
                .await
                .map_err(|e| failed(&e))?;
            let full = page.len() == usize::try_from(TAIL_BATCHES).unwrap_or(0);
            for (first, bytes) in page {
                if total.saturating_add(u64_of(bytes)) <= max_bytes {
                    total += u64_of(bytes);
                    lowest = Some(first);
                    below = first;
                    continue;
                }
                let (body,): (Vec<u8>,) = sqlx::query_as(BODY_AT)
                    .bind(id)
                    .bind(part)
                    .bind(first)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(|e| failed(&e))?;
                let events = decode_batch(stream, partition, &body).map_err(codec)?;
                for e in events.iter().rev() {
                    total = total.saturating_add(retained_bytes(e));
                    if total > max_bytes {
                        return Ok(e.offset + 1);
                    }
                }
                // The batch's stored size disagrees with its events: keep it whole.
                return Ok(u64_of(first));
            }
            if !full {
                return Ok(lowest.map_or(0, u64_of));
            }
        }
    }

    /// Removes the prefix of `partition` below `before`: the partition row first (first
    /// offset, next floor, last timestamp), then the batch that holds `before` loses its events
    /// below it, then the batches wholly below go, [`crate::DELETE_BATCH`] per statement. Each
    /// statement commits on its own, in an order that a crash between any two leaves readable.
    pub async fn truncate(
        c: &mut DB::Connection,
        stream: &StreamName,
        id: i64,
        partition: u32,
        before: u64,
    ) -> Res<()> {
        let part = i32_of(partition);
        let cut = i64_of(before);
        // The last batch that starts below `before`: it holds `before` (then its events below
        // go), or it is the last one wholly below.
        let last_below: Option<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(LAST_BELOW)
            .bind(id)
            .bind(part)
            .bind(cut)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        let (straddling, below) = match last_below {
            Some((first, last, _, body)) if last >= cut => {
                // The latest timestamp wholly below is that of the batch before it.
                let before_it: Option<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(LAST_BELOW)
                    .bind(id)
                    .bind(part)
                    .bind(first)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(|e| failed(&e))?;
                (Some((first, body)), before_it.map(|b| b.2))
            }
            Some((_, _, last_ts, _)) => (None, Some(last_ts)),
            None => (None, None),
        };
        let (dropped, kept) = match &straddling {
            Some((_, body)) => decode_batch(stream, partition, body)
                .map_err(codec)?
                .into_iter()
                .partition::<Vec<_>, _>(|e| e.offset < before),
            None => (Vec::new(), Vec::new()),
        };
        let last_ts = dropped
            .iter()
            .map(|e| e.timestamp.0)
            .chain(below.map(u64_of))
            .max()
            .unwrap_or(0);
        sqlx::query(RAISE_PARTITION)
            .bind(id)
            .bind(part)
            .bind(cut)
            .bind(i64_of(last_ts))
            .execute(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        if let Some((old_first, _)) = straddling {
            let refs: Vec<&Event> = kept.iter().map(|e| &**e).collect();
            let b = batch(partition, &refs).map_err(codec)?;
            sqlx::query(REWRITE)
                .bind(id)
                .bind(part)
                .bind(old_first)
                .bind(i64_of(b.first_offset))
                .bind(i64_of(b.first_ts))
                .bind(i64_of(b.bytes))
                .bind(b.body)
                .execute(&mut *c)
                .await
                .map_err(|e| failed(&e))?;
        }
        loop {
            let gone: Vec<(i64,)> = sqlx::query_as(DELETE_BELOW)
                .bind(id)
                .bind(part)
                .bind(cut)
                .bind(crate::DELETE_BATCH)
                .fetch_all(&mut *c)
                .await
                .map_err(|e| failed(&e))?;
            if gone.is_empty() {
                return Ok(());
            }
        }
    }

    /// Moves every row of live streams from `tributary_events` (one row per event, as schema
    /// versions before record batches stored them) into `tributary_batches`, answering how
    /// many were moved. One partition's run of up to `MOVE_ROWS` (4,096) rows per transaction: they
    /// are read in offset order, written as batches as an append writes them, and deleted, so
    /// a crash in between leaves each row either moved or not, and the next call carries on.
    /// Rows of deleted streams are left to the purge of deleted streams. The caller checks that
    /// both tables exist.
    pub async fn move_event_rows(c: &mut DB::Connection) -> Result<u64, UpgradeError> {
        let mut moved = 0u64;
        loop {
            let mut tx = sqlx::Connection::begin(&mut *c).await?;
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
                .map(|r| decode_event(&stream, r))
                .collect::<Result<Vec<_>, _>>()?;
            for b in batches(events.iter().map(|e| &**e))? {
                sqlx::query(INSERT_ONE)
                    .bind(id)
                    .bind(i32_of(b.partition))
                    .bind(i64_of(b.first_offset))
                    .bind(i64_of(b.last_offset))
                    .bind(i64_of(b.first_ts))
                    .bind(i64_of(b.last_ts))
                    .bind(i64_of(b.bytes))
                    .bind(b.body)
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
}
