//! An append as one statement: its columns, and the statement's text for the shape of the write.
//!
//! The events go in as one array per column, unnested by the server. The optional columns
//! (key, correlation id, causation id, headers) are sent only when an event of the write has
//! them, as a `NULL` in the text otherwise, and a content type shared by every event is sent
//! once: most writes carry none of the optional columns and one content type, and each array
//! costs the server a pass of its own (a write of 128 events with all twelve arrays spent about
//! three times the raw load's CPU per row in the unnesting, see BENCHMARKS.md). The arrays are
//! unnested in the select list (`SELECT unnest($4), unnest($5), ...`, which PostgreSQL runs in
//! step, as `UNNEST($4, $5, ...)` would), so the rows stream into the insert instead of being
//! gathered in a tuple store first as a function in `FROM` is. The dedup ids
//! go in a second data-modifying CTE of the same statement when the write has any. One text per
//! shape (64 of them), each built once per process.

use crate::NOTIFY_CHANNEL;
use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use std::fmt::Write as _;
use std::sync::OnceLock;
use tributary_core::AppendWrite;
use tributary_store_api::{encode_headers, i32_of, i64_of};

/// The types of the optional columns, in the table's order: [`KEY`], [`CORRELATION`],
/// [`CAUSATION`], [`HEADERS`].
const OPTIONAL_TYPES: [&str; 4] = ["bytea", "text", "text", "text"];
/// The optional columns, as bits of [`Shape::optional`].
const KEY: u8 = 0;
const CORRELATION: u8 = 1;
const CAUSATION: u8 = 2;
const HEADERS: u8 = 3;

/// Which columns a write sends: the index of its statement text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// Bit `i`: optional column `i` is sent as an array (an event of the write has it).
    optional: u8,
    /// Every event has the same content type, sent once.
    one_content_type: bool,
    /// The write carries dedup ids.
    dedup: bool,
}

/// One statement text per shape.
const SHAPES: usize = 64;

impl Shape {
    /// Optional column `column` is sent as an array.
    fn sends(self, column: u8) -> bool {
        self.optional & (1 << column) != 0
    }

    fn index(self) -> usize {
        usize::from(self.optional)
            | usize::from(self.one_content_type) << 4
            | usize::from(self.dedup) << 5
    }

    /// The statement: `$1` the stream's id, `$2` the notify channel (`NULL`: none), `$3` the
    /// payload of the notification, then the arrays in the order [`Columns::query`] binds them.
    fn text(self) -> &'static str {
        static TEXTS: [OnceLock<String>; SHAPES] = [const { OnceLock::new() }; SHAPES];
        TEXTS[self.index()].get_or_init(|| self.build())
    }

    fn build(self) -> String {
        let mut b = Builder {
            next: 3,
            select: vec!["$1".to_string()],
        };
        for ty in ["int", "bigint", "bytea", "bigint", "text", "int"] {
            b.array(ty);
        }
        for (column, ty) in (0u8..).zip(OPTIONAL_TYPES) {
            if self.sends(column) {
                b.array(ty);
            } else {
                b.select.push(format!("NULL::{ty}"));
            }
        }
        if self.one_content_type {
            b.value("text");
        } else {
            b.array("text");
        }
        b.array("bytea");
        let mut sql = format!(
            r#"WITH events AS (
                 INSERT INTO tributary_events (stream_id, partition, "offset", event_id, ts,
                     event_type, schema_version, key, correlation_id, causation_id, headers,
                     content_type, payload)
                 SELECT {}
               )"#,
            b.select.join(", "),
        );
        if self.dedup {
            let columns =
                ["int", "bigint", "bytea", "bigint"].map(|ty| b.param(&format!("{ty}[]")));
            let _ = write!(
                sql,
                r#", dedup AS (
                 INSERT INTO tributary_dedup (stream_id, partition, "offset", event_id, expires_at)
                 SELECT $1, * FROM UNNEST({})
                 ON CONFLICT DO NOTHING
               )"#,
                columns.join(", ")
            );
        }
        sql.push_str(" SELECT pg_notify($2, $3) WHERE $2 IS NOT NULL");
        sql
    }
}

/// Numbers the parameters of a statement text as it is written.
struct Builder {
    /// The last parameter's number.
    next: usize,
    /// The inserted values, in the table's column order.
    select: Vec<String>,
}

impl Builder {
    fn param(&mut self, ty: &str) -> String {
        self.next += 1;
        format!("${}::{ty}", self.next)
    }

    /// A column sent as an array, one element per event.
    fn array(&mut self, ty: &str) {
        let p = self.param(&format!("{ty}[]"));
        self.select.push(format!("unnest({p})"));
    }

    /// A column sent once, the same for every event.
    fn value(&mut self, ty: &str) {
        let p = self.param(ty);
        self.select.push(p);
    }
}

/// An append's columns, borrowed from the write where they can be; those its shape does not send
/// stay empty.
pub(crate) struct Columns<'a> {
    shape: Shape,
    /// Partitions, one per event.
    pub(crate) partition: Vec<i32>,
    /// Offsets, one per event.
    pub(crate) offset: Vec<i64>,
    /// Event ids, one per event.
    pub(crate) event_id: Vec<&'a [u8]>,
    ts: Vec<i64>,
    event_type: Vec<&'a str>,
    schema_version: Vec<i32>,
    key: Vec<Option<&'a [u8]>>,
    correlation: Vec<Option<&'a str>>,
    causation: Vec<Option<&'a str>>,
    headers: Vec<Option<String>>,
    /// One per event, or the one shared by all.
    content_type: Vec<&'a str>,
    payload: Vec<&'a [u8]>,
    dedup_partition: Vec<i32>,
    dedup_offset: Vec<i64>,
    dedup_id: Vec<&'a [u8]>,
    dedup_expiry: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// The columns of `w`.
    pub(crate) fn of(w: &'a AppendWrite) -> Self {
        let first_type = w.events.first().map_or("", |e| e.content_type.as_str());
        let mut optional = 0u8;
        let mut one_content_type = true;
        for e in &w.events {
            optional |= u8::from(e.key.is_some()) << KEY
                | u8::from(e.correlation_id.is_some()) << CORRELATION
                | u8::from(e.causation_id.is_some()) << CAUSATION
                | u8::from(!e.headers.is_empty()) << HEADERS;
            one_content_type &= e.content_type == first_type;
        }
        let shape = Shape {
            optional,
            one_content_type,
            dedup: !w.dedup.is_empty(),
        };
        let n = w.events.len();
        let sent = |column| if shape.sends(column) { n } else { 0 };
        let mut c = Columns {
            shape,
            partition: Vec::with_capacity(n),
            offset: Vec::with_capacity(n),
            event_id: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            schema_version: Vec::with_capacity(n),
            key: Vec::with_capacity(sent(KEY)),
            correlation: Vec::with_capacity(sent(CORRELATION)),
            causation: Vec::with_capacity(sent(CAUSATION)),
            headers: Vec::with_capacity(sent(HEADERS)),
            content_type: Vec::with_capacity(if one_content_type { 1 } else { n }),
            payload: Vec::with_capacity(n),
            dedup_partition: w.dedup.iter().map(|d| i32_of(d.partition)).collect(),
            dedup_offset: w.dedup.iter().map(|d| i64_of(d.offset)).collect(),
            dedup_id: w.dedup.iter().map(|d| &d.event_id.as_bytes()[..]).collect(),
            dedup_expiry: w.dedup.iter().map(|d| i64_of(d.expires_at.0)).collect(),
        };
        if one_content_type {
            c.content_type.push(first_type);
        }
        for e in &w.events {
            c.partition.push(i32_of(e.partition));
            c.offset.push(i64_of(e.offset));
            c.event_id.push(e.event_id.as_bytes().as_slice());
            c.ts.push(i64_of(e.timestamp.0));
            c.event_type.push(e.event_type.as_str());
            c.schema_version.push(i32_of(e.schema_version));
            if shape.sends(KEY) {
                c.key.push(e.key.as_deref());
            }
            if shape.sends(CORRELATION) {
                c.correlation.push(e.correlation_id.as_deref());
            }
            if shape.sends(CAUSATION) {
                c.causation.push(e.causation_id.as_deref());
            }
            if shape.sends(HEADERS) {
                c.headers.push(encode_headers(&e.headers));
            }
            if !one_content_type {
                c.content_type.push(e.content_type.as_str());
            }
            c.payload.push(&e.payload[..]);
        }
        c
    }

    /// The append's statement, bound: into the stream of id `stream_id`, notifying `stream` on
    /// [`NOTIFY_CHANNEL`] when `notify`.
    pub(crate) fn query<'q>(
        &'q self,
        stream_id: i64,
        notify: bool,
        stream: &'q str,
    ) -> Query<'q, Postgres, PgArguments> {
        let s = self.shape;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(s.text()))
            .bind(stream_id)
            .bind(notify.then_some(NOTIFY_CHANNEL))
            .bind(stream)
            .bind(&self.partition)
            .bind(&self.offset)
            .bind(&self.event_id)
            .bind(&self.ts)
            .bind(&self.event_type)
            .bind(&self.schema_version);
        if s.sends(KEY) {
            q = q.bind(&self.key);
        }
        if s.sends(CORRELATION) {
            q = q.bind(&self.correlation);
        }
        if s.sends(CAUSATION) {
            q = q.bind(&self.causation);
        }
        if s.sends(HEADERS) {
            q = q.bind(&self.headers);
        }
        q = if s.one_content_type {
            q.bind(self.content_type.first().copied().unwrap_or_default())
        } else {
            q.bind(&self.content_type)
        };
        q = q.bind(&self.payload);
        if s.dedup {
            q = q
                .bind(&self.dedup_partition)
                .bind(&self.dedup_offset)
                .bind(&self.dedup_id)
                .bind(&self.dedup_expiry);
        }
        q
    }
}
