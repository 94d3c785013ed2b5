//! The SQL of an append: statement texts, built once, and the arguments of each write.
//!
//! An append writes its record batches (one row per partition, cut again past
//! [`tributary_store_sql::BATCH_BYTES`], see `tributary_store_sql::batches`) and its dedup
//! records. Every multi-row INSERT has exactly [`BATCHES_PER_INSERT`] (or, for dedup records,
//! [`ROWS_PER_INSERT`]) rows, the last one padded with rows of NULLs that it skips: an append
//! of any size is then made of a few statement shapes, which stay prepared in the connection's
//! statement cache (a shape per row count would be prepared again and again, which costs more
//! than the rows). As the shapes are few, their texts are built once for the process; a write
//! only binds its values, without formatting a placeholder per value.

use sqlx::Arguments;
use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteArguments;
use std::sync::OnceLock;
use tributary_core::DedupRecord;
use tributary_store_sql::{EventBatch, i64_of};

/// Rows per multi-row INSERT of dedup records (and of read receipts).
pub(crate) const ROWS_PER_INSERT: usize = 64;

/// Batches per multi-row INSERT of an append (a batch holds up to about 8 KB of events).
pub(crate) const BATCHES_PER_INSERT: usize = 16;

/// The most INSERTs of batches, and the most of dedup records, in an append sent as one
/// command: its script then has one of 25 shapes (0 to 4 INSERTs of each), each kept prepared,
/// whatever the sizes of the writes (a bound on the statement cache's memory).
const AT_ONCE_INSERTS: usize = 4;

const BATCH_COLUMNS: usize = 8;
const BATCH_HEAD: &str = r#"INSERT INTO tributary_batches (stream_id, partition, first_offset,
    last_offset, first_ts, last_ts, bytes, body)"#;

const DEDUP_COLUMNS: usize = 5;
const DEDUP_HEAD: &str = r#"INSERT OR IGNORE INTO tributary_dedup (stream_id, partition, "offset", event_id, expires_at)"#;

/// `head` fed from `SELECT * FROM (VALUES ...)` of `rows` rows of `columns` placeholders,
/// skipping the rows of NULLs that pad the last statement of a write.
fn padded_insert(head: &str, columns: usize, rows: usize) -> String {
    let mut row = String::from("(?");
    row.push_str(&", ?".repeat(columns - 1));
    row.push(')');
    let rows = vec![row; rows].join(", ");
    format!("{head} SELECT * FROM (VALUES {rows}) WHERE column1 IS NOT NULL")
}

/// An INSERT of up to [`BATCHES_PER_INSERT`] batches. A batch that overlaps a stored one
/// fails it (the trigger of migration 0007), as does a first offset already taken.
pub(crate) fn batches_insert() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| padded_insert(BATCH_HEAD, BATCH_COLUMNS, BATCHES_PER_INSERT))
}

/// An `INSERT OR IGNORE` of up to [`ROWS_PER_INSERT`] dedup records.
pub(crate) fn dedup_insert() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| padded_insert(DEDUP_HEAD, DEDUP_COLUMNS, ROWS_PER_INSERT))
}

/// The script of an append of `batches` batches and `dedup` dedup records sent as one
/// command: `BEGIN IMMEDIATE`, the INSERTs, `COMMIT`. `None` when the write is larger than
/// [`AT_ONCE_INSERTS`] statements of either.
pub(crate) fn at_once_script(batches: usize, dedup: usize) -> Option<&'static str> {
    const SHAPES: usize = AT_ONCE_INSERTS + 1;
    static TEXTS: [OnceLock<String>; SHAPES * SHAPES] =
        [const { OnceLock::new() }; SHAPES * SHAPES];
    let (b, d) = (
        batches.div_ceil(BATCHES_PER_INSERT),
        dedup.div_ceil(ROWS_PER_INSERT),
    );
    if b > AT_ONCE_INSERTS || d > AT_ONCE_INSERTS {
        return None;
    }
    Some(TEXTS[b * SHAPES + d].get_or_init(|| {
        let mut s = String::from("BEGIN IMMEDIATE; ");
        for _ in 0..b {
            s.push_str(batches_insert());
            s.push_str("; ");
        }
        for _ in 0..d {
            s.push_str(dedup_insert());
            s.push_str("; ");
        }
        s.push_str("COMMIT");
        s
    }))
}

/// Binds `rows` (padded with rows of `columns` NULLs up to a multiple of `per_insert`) to
/// `args`; `bind` binds one row.
fn bind_padded<I: IntoIterator>(
    args: &mut SqliteArguments,
    columns: usize,
    per_insert: usize,
    rows: I,
    mut bind: impl FnMut(&mut SqliteArguments, I::Item) -> Result<(), BoxDynError>,
) -> Result<(), BoxDynError> {
    let mut count = 0usize;
    for row in rows {
        bind(args, row)?;
        count += 1;
    }
    let padding = count.next_multiple_of(per_insert) - count;
    for _ in 0..padding * columns {
        args.add(None::<i64>)?;
    }
    Ok(())
}

/// Binds the batches of stream `id` for [`batches_insert`] statements (one per
/// [`BATCHES_PER_INSERT`] batches); the bodies move into the arguments without a copy.
pub(crate) fn bind_batches(
    args: &mut SqliteArguments,
    id: i64,
    rows: Vec<EventBatch>,
) -> Result<(), BoxDynError> {
    args.reserve(
        rows.len().next_multiple_of(BATCHES_PER_INSERT) * BATCH_COLUMNS,
        0,
    );
    bind_padded(args, BATCH_COLUMNS, BATCHES_PER_INSERT, rows, |a, b| {
        a.add(id)?;
        a.add(i64::from(b.partition))?;
        a.add(i64_of(b.first_offset))?;
        a.add(i64_of(b.last_offset))?;
        a.add(i64_of(b.first_ts))?;
        a.add(i64_of(b.last_ts))?;
        a.add(i64_of(b.bytes))?;
        a.add(b.body)
    })
}

/// Binds the dedup records of stream `id` for [`dedup_insert`] statements.
pub(crate) fn bind_dedup(
    args: &mut SqliteArguments,
    id: i64,
    rows: &[DedupRecord],
) -> Result<(), BoxDynError> {
    bind_padded(args, DEDUP_COLUMNS, ROWS_PER_INSERT, rows, |a, d| {
        a.add(id)?;
        a.add(i64::from(d.partition))?;
        a.add(i64_of(d.offset))?;
        a.add(d.event_id.as_bytes().to_vec())?;
        a.add(i64_of(d.expires_at.0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_has_one_placeholder_per_bound_value() {
        let count = |s: &str| s.matches('?').count();
        assert_eq!(count(batches_insert()), BATCHES_PER_INSERT * BATCH_COLUMNS);
        assert_eq!(count(dedup_insert()), ROWS_PER_INSERT * DEDUP_COLUMNS);
        let script = at_once_script(BATCHES_PER_INSERT + 1, 1).expect("within the bound");
        assert_eq!(
            count(script),
            2 * BATCHES_PER_INSERT * BATCH_COLUMNS + ROWS_PER_INSERT * DEDUP_COLUMNS
        );
        assert!(script.starts_with("BEGIN IMMEDIATE; ") && script.ends_with("; COMMIT"));
        let most = AT_ONCE_INSERTS * BATCHES_PER_INSERT;
        assert!(at_once_script(most, AT_ONCE_INSERTS * ROWS_PER_INSERT).is_some());
        assert!(at_once_script(most + 1, 0).is_none());
        assert!(at_once_script(0, AT_ONCE_INSERTS * ROWS_PER_INSERT + 1).is_none());
    }

    #[test]
    fn padding_fills_the_last_statement() {
        let mut args = SqliteArguments::default();
        bind_dedup(&mut args, 7, &[]).expect("nothing to bind");
        assert_eq!(args.len(), 0, "no rows, no statement");
        let rec = DedupRecord {
            event_id: tributary_core::EventId::from_random([1; 16]),
            partition: 0,
            offset: 3,
            expires_at: tributary_core::UnixMillis(9),
        };
        bind_dedup(&mut args, 7, &[rec, rec]).expect("binds");
        assert_eq!(args.len(), ROWS_PER_INSERT * DEDUP_COLUMNS);
        let mut args = SqliteArguments::default();
        let b = EventBatch {
            partition: 1,
            first_offset: 0,
            last_offset: 0,
            first_ts: 1,
            last_ts: 1,
            bytes: 0,
            body: vec![1],
        };
        bind_batches(&mut args, 7, vec![b.clone(); BATCHES_PER_INSERT + 1]).expect("binds");
        assert_eq!(args.len(), 2 * BATCHES_PER_INSERT * BATCH_COLUMNS);
    }
}
