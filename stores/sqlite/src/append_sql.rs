//! The SQL of an append: statement texts, built once, and the arguments of each write.
//!
//! Every multi-row INSERT of an append has exactly [`ROWS_PER_INSERT`] rows, the last one
//! padded with rows of NULLs that it skips: an append of any size is then made of a few
//! statement shapes, which stay prepared in the connection's statement cache (a shape per row
//! count would be prepared again and again, which costs more than the rows). As the shapes are
//! few, their texts are built once for the process; a write only binds its values, without
//! formatting a placeholder per value.

use sqlx::Arguments;
use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteArguments;
use std::sync::{Arc, OnceLock};
use tributary_core::{DedupRecord, Event};
use tributary_store_api::{encode_headers, i64_of};

/// Rows per multi-row INSERT of an append.
pub(crate) const ROWS_PER_INSERT: usize = 64;

/// The most INSERTs of events, and the most of dedup records, in an append sent as one
/// command.
const AT_ONCE_INSERTS: usize = 4;

/// The most events, and the most dedup records, of an append sent as one command: its script
/// then has one of 20 shapes (1 to 4 INSERTs of events, 0 to 4 of dedup records), each kept
/// prepared, whatever the sizes of the writes (a bound on the statement cache's memory).
const AT_ONCE_ROWS: usize = AT_ONCE_INSERTS * ROWS_PER_INSERT;

const EVENT_COLUMNS: usize = 13;
const EVENT_HEAD: &str = r#"INTO tributary_events (stream_id, partition, "offset", event_id, ts,
    event_type, schema_version, key, correlation_id, causation_id, headers, content_type, payload)"#;

const DEDUP_COLUMNS: usize = 5;
const DEDUP_HEAD: &str = r#"INSERT OR IGNORE INTO tributary_dedup (stream_id, partition, "offset", event_id, expires_at)"#;

/// `head` fed from `SELECT * FROM (VALUES ...)` of [`ROWS_PER_INSERT`] rows of `columns`
/// placeholders, skipping the rows of NULLs that pad the last statement of a write.
fn padded_insert(head: &str, columns: usize) -> String {
    let mut row = String::from("(?");
    row.push_str(&", ?".repeat(columns - 1));
    row.push(')');
    let rows = vec![row; ROWS_PER_INSERT].join(", ");
    format!("{head} SELECT * FROM (VALUES {rows}) WHERE column1 IS NOT NULL")
}

/// An INSERT of one chunk of events: `INSERT` (a taken offset fails it) or, with `or_ignore`,
/// `INSERT OR IGNORE` (rows whose offsets are taken are skipped).
pub(crate) fn events_insert(or_ignore: bool) -> &'static str {
    static TEXTS: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    TEXTS[usize::from(or_ignore)].get_or_init(|| {
        let verb = if or_ignore {
            "INSERT OR IGNORE"
        } else {
            "INSERT"
        };
        padded_insert(&format!("{verb} {EVENT_HEAD}"), EVENT_COLUMNS)
    })
}

/// An `INSERT OR IGNORE` of one chunk of dedup records.
pub(crate) fn dedup_insert() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| padded_insert(DEDUP_HEAD, DEDUP_COLUMNS))
}

/// The script of an append of `events` events and `dedup` dedup records (at most
/// [`AT_ONCE_ROWS`] each) sent as one command: `BEGIN IMMEDIATE`, the INSERTs, `COMMIT`.
/// `None` when the write is larger.
pub(crate) fn at_once_script(events: usize, dedup: usize) -> Option<&'static str> {
    const SHAPES: usize = AT_ONCE_INSERTS + 1;
    static TEXTS: [OnceLock<String>; SHAPES * SHAPES] =
        [const { OnceLock::new() }; SHAPES * SHAPES];
    if events > AT_ONCE_ROWS || dedup > AT_ONCE_ROWS {
        return None;
    }
    let (e, d) = (
        events.div_ceil(ROWS_PER_INSERT),
        dedup.div_ceil(ROWS_PER_INSERT),
    );
    Some(TEXTS[e * SHAPES + d].get_or_init(|| {
        let mut s = String::from("BEGIN IMMEDIATE; ");
        for _ in 0..e {
            s.push_str(events_insert(false));
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

/// The last text bound in a column, shared by the rows that repeat it.
#[derive(Default)]
struct SharedText(Option<Arc<str>>);

impl SharedText {
    /// `text` as a shared string: the last one when equal, else a new one.
    fn get(&mut self, text: &str) -> Arc<str> {
        match &self.0 {
            Some(last) if **last == *text => last.clone(),
            _ => self.0.insert(Arc::from(text)).clone(),
        }
    }
}

/// Binds `rows` (padded with rows of `columns` NULLs up to a multiple of
/// [`ROWS_PER_INSERT`]) to `args`; `bind` binds one row.
fn bind_padded<T>(
    args: &mut SqliteArguments,
    columns: usize,
    rows: &[T],
    mut bind: impl FnMut(&mut SqliteArguments, &T) -> Result<(), BoxDynError>,
) -> Result<(), BoxDynError> {
    for row in rows {
        bind(args, row)?;
    }
    let padding = rows.len().next_multiple_of(ROWS_PER_INSERT) - rows.len();
    for _ in 0..padding * columns {
        args.add(None::<i64>)?;
    }
    Ok(())
}

/// Binds the events of stream `id` for [`events_insert`] statements (one per
/// [`ROWS_PER_INSERT`] events).
pub(crate) fn bind_events(
    args: &mut SqliteArguments,
    id: i64,
    rows: &[Arc<Event>],
) -> Result<(), BoxDynError> {
    args.reserve(
        rows.len().next_multiple_of(ROWS_PER_INSERT) * EVENT_COLUMNS,
        0,
    );
    // Event types and content types repeat from event to event: each distinct one is copied
    // once per write and shared by its rows (an `Arc<str>` binds without a copy).
    let (mut event_type, mut content_type) = (SharedText::default(), SharedText::default());
    bind_padded(args, EVENT_COLUMNS, rows, |a, e| {
        a.add(id)?;
        a.add(i64::from(e.partition))?;
        a.add(i64_of(e.offset))?;
        a.add(e.event_id.as_bytes().to_vec())?;
        a.add(i64_of(e.timestamp.0))?;
        a.add(event_type.get(&e.event_type))?;
        a.add(i64::from(e.schema_version))?;
        a.add(e.key.as_ref().map(|k| k.to_vec()))?;
        a.add(e.correlation_id.clone())?;
        a.add(e.causation_id.clone())?;
        a.add(encode_headers(&e.headers))?;
        a.add(content_type.get(&e.content_type))?;
        a.add(e.payload.to_vec())
    })
}

/// Binds the dedup records of stream `id` for [`dedup_insert`] statements.
pub(crate) fn bind_dedup(
    args: &mut SqliteArguments,
    id: i64,
    rows: &[DedupRecord],
) -> Result<(), BoxDynError> {
    bind_padded(args, DEDUP_COLUMNS, rows, |a, d| {
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
        assert_eq!(count(events_insert(false)), ROWS_PER_INSERT * EVENT_COLUMNS);
        assert_eq!(count(events_insert(true)), ROWS_PER_INSERT * EVENT_COLUMNS);
        assert_eq!(count(dedup_insert()), ROWS_PER_INSERT * DEDUP_COLUMNS);
        let script = at_once_script(ROWS_PER_INSERT + 1, 1).expect("within the bound");
        assert_eq!(
            count(script),
            2 * ROWS_PER_INSERT * EVENT_COLUMNS + ROWS_PER_INSERT * DEDUP_COLUMNS
        );
        assert!(script.starts_with("BEGIN IMMEDIATE; ") && script.ends_with("; COMMIT"));
        assert!(at_once_script(AT_ONCE_ROWS, AT_ONCE_ROWS).is_some());
        assert!(at_once_script(AT_ONCE_ROWS + 1, 0).is_none());
        assert!(at_once_script(0, AT_ONCE_ROWS + 1).is_none());
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
    }
}
