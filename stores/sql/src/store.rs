//! One store over sqlx's `Database`: the dispatch of the core's requests, recovery, loading,
//! expiry, deletion and the small writes, written once. A [`Dialect`] gives what differs: the
//! connections (SQLite's one writer beside a pool of readers, PostgreSQL's one pool), the
//! statements whose SQL is its own, and the requests it carries out its own way (appends,
//! receipts and cursor saves, which each database writes fastest differently).
//!
//! The statements here use `$n` placeholders, which both PostgreSQL and SQLite (through sqlx,
//! by number) take, and SQL both databases read alike.

use crate::{
    Batch, CursorRow, HeadRow, RECOVER_CURSORS, RECOVER_HEADS, RECOVER_RELAYS,
    RECOVER_SUBSCRIPTIONS, RelayRow, SaveQueue, SchemaRow, SqlBatches, SubscriptionRow,
    WriteChains, codec, committed, dedup_record, existing_stream, failed, i32_of, i64_of,
    receipt_record, recovered, schema_columns, schema_record, to_json,
};
use sqlx::pool::PoolConnection;
use std::collections::HashMap;
use std::future::Future;
use std::ops::DerefMut;
use std::sync::{Arc, Mutex};
use tributary_core::{
    AppendWrite, ConsumerId, CursorRecord, DedupRecord, Event, ReceiptRecord, RecoveredState,
    RelayRecord, SchemaRecord, StorageError, StorageReply, StorageRequest, StorageResult,
    StreamConfig, StreamName, SubId, SubscriptionRecord, UnixMillis,
};

type Res<T> = Result<T, StorageError>;

/// A connection of dialect `D`'s database.
pub type Conn<D> = <<D as Dialect>::DB as sqlx::Database>::Connection;

/// What one SQL database brings to [`SqlStore`]: its connections, the SQL that is its own, and
/// the requests it carries out its own way. The SQL's placeholders are `$n`, bound in the
/// order each constant's documentation gives.
pub trait Dialect: Sized + Send + Sync + 'static {
    /// The database.
    type DB: sqlx::Database;
    /// The connection that writes, while a request holds it.
    type Writer<'a>: DerefMut<Target = Conn<Self>> + Send
    where
        Self: 'a;

    /// The most cursor saves written in one statement (see [`SaveQueue`]).
    const CURSORS_PER_STATEMENT: usize;
    /// Inserts the partitions `0..$2` of stream `$1`.
    const INSERT_PARTITIONS: &'static str;
    /// A page of a stream's live dedup ids: stream `$1`, live after the time `$2`, after the
    /// (partition, offset) `($3, $4)` (an `i32` and an `i64`), at most `$5`; the columns of
    /// [`DedupRow`], by (partition, offset).
    const LOAD_DEDUP: &'static str;
    /// A page of a subscription's receipts: subscription `$1`, after the (consumer, partition,
    /// offset) `($2, $3, $4)` (text, `i32`, `i64`), at most `$5`; the columns of
    /// [`ReceiptRow`], by (consumer, partition, offset).
    const LOAD_RECEIPTS: &'static str;
    /// Removes up to `$3` receipts of subscription `$1` last changed (delivered or read)
    /// before the time `$2`.
    const EXPIRE_RECEIPTS: &'static str;
    /// A page of schema versions after the (event type, version) `($1, $2)` (text, `i64`), at
    /// most `$3`, in byte order of the event type then by version; the columns of
    /// [`SchemaRow`].
    const LOAD_SCHEMAS: &'static str;

    /// The connections that read.
    fn readers(&self) -> &sqlx::Pool<Self::DB>;

    /// The connection that writes, once it is this request's turn.
    fn writer(&self) -> impl Future<Output = Result<Self::Writer<'_>, sqlx::Error>> + Send;

    /// The rows a statement changed.
    fn rows_affected(r: &<Self::DB as sqlx::Database>::QueryResult) -> u64;

    /// Carries out an append (see [`crate::WriteChains`] for the order of pipelined ones, and
    /// [`SqlBatches::repeat_or_conflict`] for offsets already taken).
    fn append(
        store: &SqlStore<Self>,
        w: &AppendWrite,
    ) -> impl Future<Output = StorageResult> + Send;

    /// Queues a cursor save and writes what is queued in the dialect's turn to write cursor
    /// saves (taking them from [`SqlStore::cursor_saves`] and writing them with
    /// [`SqlStore::write_cursors`]), then answers it.
    fn save_cursor(
        store: &SqlStore<Self>,
        c: &CursorRecord,
    ) -> impl Future<Output = StorageResult> + Send;

    /// Upserts cursor records (1 to [`Dialect::CURSORS_PER_STATEMENT`]) in one statement.
    fn upsert_cursors(
        c: &mut Conn<Self>,
        records: &[&CursorRecord],
    ) -> impl Future<Output = StorageResult> + Send;

    /// Upserts read receipts atomically on the writer `c`, merging with what is stored (the
    /// later delivery, the first read, the later time-out).
    fn save_receipts(
        c: &mut Conn<Self>,
        list: &[ReceiptRecord],
    ) -> impl Future<Output = StorageResult> + Send;

    /// Runs [`SqlStore::purge`] of the deleted stream `id` in the background, on the
    /// executor's runtime.
    fn purge_later(store: &SqlStore<Self>, id: i64);
}

/// A row of [`Dialect::LOAD_DEDUP`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DedupRow {
    /// The partition.
    pub partition: i32,
    /// The event's offset.
    pub offset: i64,
    /// Its id (16 bytes).
    pub event_id: Vec<u8>,
    /// When the id may be forgotten.
    pub expires_at: i64,
}

/// A row of [`Dialect::LOAD_RECEIPTS`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReceiptRow {
    /// The subscription.
    pub sub_id: i64,
    /// The consumer.
    pub consumer: String,
    /// The partition.
    pub partition: i32,
    /// The event's offset.
    pub offset: i64,
    /// Last delivered at.
    pub delivered_at: i64,
    /// First read at.
    pub read_at: Option<i64>,
    /// Timed out at.
    pub timed_out: Option<i64>,
}

const STREAM_ID: &str = "SELECT id FROM tributary_streams WHERE name = $1";
const STREAM_CONFIG: &str = "SELECT config FROM tributary_streams WHERE name = $1";
const INSERT_STREAM: &str =
    "INSERT INTO tributary_streams (name, config, partitions) VALUES ($1, $2, $3) RETURNING id";
const DELETE_STREAM: &str = "DELETE FROM tributary_streams WHERE name = $1 RETURNING id";
const MARK_DELETED: &str = "INSERT INTO tributary_deleted_streams (stream_id) VALUES ($1)";
const DELETED_STREAMS: &str = "SELECT stream_id FROM tributary_deleted_streams";
const UNMARK_DELETED: &str = "DELETE FROM tributary_deleted_streams WHERE stream_id = $1";

/// The removal of a deleted stream `$1`'s rows, `$2` per statement: the events of versions
/// before record batches (left there when their stream was deleted before the move), the
/// batches, the dedup records.
const PURGE: [&str; 3] = [
    r#"DELETE FROM tributary_events WHERE stream_id = $1 AND (partition, "offset") IN
         (SELECT partition, "offset" FROM tributary_events WHERE stream_id = $1 LIMIT $2)"#,
    r#"DELETE FROM tributary_batches WHERE stream_id = $1 AND (partition, first_offset) IN
         (SELECT partition, first_offset FROM tributary_batches WHERE stream_id = $1 LIMIT $2)"#,
    r#"DELETE FROM tributary_dedup WHERE stream_id = $1 AND (partition, "offset") IN
         (SELECT partition, "offset" FROM tributary_dedup WHERE stream_id = $1 LIMIT $2)"#,
];

const SAVE_SUBSCRIPTION: &str = r#"INSERT INTO tributary_subscriptions (id, stream_id, config, start_offsets)
   VALUES ($1, (SELECT id FROM tributary_streams WHERE name = $2), $3, $4)
   ON CONFLICT (id) DO UPDATE SET config = excluded.config, start_offsets = excluded.start_offsets"#;
const DELETE_SUBSCRIPTION: &str = "DELETE FROM tributary_subscriptions WHERE id = $1";

/// One consumer's receipts and cursor rows (subscription `$1`, consumer `$2`).
const DELETE_CURSOR: [&str; 2] = [
    "DELETE FROM tributary_receipts WHERE sub_id = $1 AND consumer = $2",
    "DELETE FROM tributary_cursors WHERE sub_id = $1 AND consumer = $2",
];

/// Up to `$3` of stream `$1`'s dedup ids expired at the time `$2`.
const EXPIRE_DEDUP: &str = r#"DELETE FROM tributary_dedup WHERE stream_id = $1 AND (partition, "offset") IN
   (SELECT partition, "offset" FROM tributary_dedup WHERE stream_id = $1
    AND expires_at <= $2 LIMIT $3)"#;

const SAVE_RELAY: &str = r#"INSERT INTO tributary_relay (stream_id, partition, next_offset)
   VALUES ((SELECT id FROM tributary_streams WHERE name = $1), $2, $3)
   ON CONFLICT (stream_id, partition) DO UPDATE SET next_offset = excluded.next_offset"#;

const SAVE_SCHEMA: &str = r#"INSERT INTO tributary_schemas (event_type, version, schema, rules, function)
   VALUES ($1, $2, $3, $4, $5)
   ON CONFLICT (event_type, version) DO UPDATE SET schema = excluded.schema,
     rules = excluded.rules, function = excluded.function"#;

/// A SQL store: the state every dialect keeps (stream ids, the order of pipelined appends,
/// queued cursor saves) and its dialect `D`. Cheap to clone.
pub struct SqlStore<D>(Arc<Shared<D>>);

struct Shared<D> {
    dialect: D,
    /// Stream name to its surrogate id; one engine owns the streams, so it stays true.
    ids: Mutex<HashMap<StreamName, i64>>,
    /// The order of pipelined appends: one commits only after the one it names.
    chains: WriteChains,
    /// Cursor saves waiting to be written together.
    cursor_saves: SaveQueue<CursorRecord>,
}

impl<D> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore(Arc::clone(&self.0))
    }
}

impl<D: std::fmt::Debug> std::fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.0.dialect)
            .field("chains", &self.0.chains)
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> SqlStore<D> {
    /// A store on `dialect`'s connections (call [`SqlStore::resume_deletions`] once open).
    pub fn new(dialect: D) -> Self {
        SqlStore(Arc::new(Shared {
            dialect,
            ids: Mutex::default(),
            chains: WriteChains::new(),
            cursor_saves: SaveQueue::new(D::CURSORS_PER_STATEMENT),
        }))
    }

    /// The dialect: its connections and whatever else it keeps.
    pub fn dialect(&self) -> &D {
        &self.0.dialect
    }

    /// The order of pipelined appends.
    pub fn chains(&self) -> &WriteChains {
        &self.0.chains
    }

    /// Cursor saves waiting to be written.
    pub fn cursor_saves(&self) -> &SaveQueue<CursorRecord> {
        &self.0.cursor_saves
    }

    /// Writes `batch` (cursor saves taken from [`SqlStore::cursor_saves`]) on `c` in one
    /// statement and answers them; when that statement is refused, each save is written and
    /// answered on its own (one save's refusal, its subscription deleted, is not the
    /// others'). A dialect calls it in its turn to write cursor saves.
    pub async fn write_cursors(&self, c: &mut Conn<D>, batch: Batch<CursorRecord>) {
        if batch.is_empty() {
            return;
        }
        let r = D::upsert_cursors(c, &batch.records()).await;
        for one in batch.answer(&r) {
            let r = D::upsert_cursors(c, &[one.record()]).await;
            one.answer(r);
        }
    }
}

impl<D> SqlStore<D>
where
    D: Dialect,
    <D::DB as sqlx::Database>::Arguments: sqlx::IntoArguments<D::DB>,
    for<'c> &'c mut Conn<D>: sqlx::Executor<'c, Database = D::DB>,
    for<'q> i64: sqlx::Encode<'q, D::DB> + sqlx::Type<D::DB>,
    for<'q> i32: sqlx::Encode<'q, D::DB> + sqlx::Type<D::DB>,
    for<'q> bool: sqlx::Encode<'q, D::DB> + sqlx::Type<D::DB>,
    for<'q> String: sqlx::Encode<'q, D::DB> + sqlx::Type<D::DB>,
    for<'q> Option<String>: sqlx::Encode<'q, D::DB> + sqlx::Type<D::DB>,
    for<'q> Vec<u8>: sqlx::Encode<'q, D::DB> + sqlx::Type<D::DB>,
    for<'q> &'q str: sqlx::Encode<'q, D::DB> + sqlx::Type<D::DB>,
    for<'r> (i64,): sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> (String,): sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> (i64, Vec<u8>): sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> (Vec<u8>,): sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> (i64, i64): sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> (Option<i64>,): sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> (Option<i64>, i64): sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> (i64, i64, i64, Vec<u8>): sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> (i64, String, i32): sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> crate::EventRow: sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> HeadRow: sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> SubscriptionRow: sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> CursorRow: sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> RelayRow: sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> SchemaRow: sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> DedupRow: sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
    for<'r> ReceiptRow: sqlx::FromRow<'r, <D::DB as sqlx::Database>::Row>,
{
    /// Carries out one request.
    pub async fn run(&self, req: StorageRequest) -> StorageResult {
        let r = match req {
            StorageRequest::Recover => self.recover().await.map(StorageReply::Recovered),
            StorageRequest::LoadDedup {
                stream,
                live_at,
                after,
                limit,
            } => self
                .load_dedup(&stream, live_at, after, limit)
                .await
                .map(StorageReply::Dedup),
            StorageRequest::CreateStream(config) => return self.create_stream(&config).await,
            StorageRequest::DeleteStream(name) => return self.delete_stream(&name).await,
            StorageRequest::Append(w) => return D::append(self, &w).await,
            StorageRequest::Read {
                stream,
                partition,
                from,
                max,
            } => self
                .read(&stream, partition, from, max)
                .await
                .map(StorageReply::Events),
            StorageRequest::FindOffset {
                stream,
                partition,
                at,
            } => self
                .find_offset(&stream, partition, at)
                .await
                .map(StorageReply::Offset),
            StorageRequest::SaveSubscription(rec) => return self.save_subscription(&rec).await,
            StorageRequest::DeleteSubscription(id) => return self.delete_subscription(id).await,
            StorageRequest::SaveCursor(c) => return D::save_cursor(self, &c).await,
            StorageRequest::SaveReceipts(list) => return self.save_receipts(&list).await,
            StorageRequest::SaveRelay(r) => return self.save_relay(&r).await,
            StorageRequest::RetentionCut {
                stream,
                partition,
                max_bytes,
            } => self
                .retention_cut(&stream, partition, max_bytes)
                .await
                .map(StorageReply::Offset),
            StorageRequest::Truncate {
                stream,
                partition,
                before,
            } => return self.truncate(&stream, partition, before).await,
            StorageRequest::ExpireDedup { stream, at } => {
                return self.expire_dedup(&stream, at).await;
            }
            StorageRequest::LoadReceipts { sub, after, limit } => self
                .load_receipts(sub, after, limit)
                .await
                .map(StorageReply::Receipts),
            StorageRequest::ExpireReceipts { sub, before } => {
                return self.expire_receipts(sub, before).await;
            }
            StorageRequest::DeleteCursor { sub, consumer } => {
                return self.delete_cursor(sub, &consumer).await;
            }
            StorageRequest::SaveSchemas(list) => return self.save_schemas(&list).await,
            StorageRequest::LoadSchemas { after, limit } => self
                .load_schemas(after, limit)
                .await
                .map(StorageReply::Schemas),
        };
        match r {
            Ok(reply) => StorageResult::Ok(reply),
            Err(e) => StorageResult::Err(e),
        }
    }

    /// A stream's surrogate id (remembered once looked up on `conn`); `NotFound` when the
    /// stream does not exist.
    pub async fn stream_id(&self, conn: &mut Conn<D>, name: &StreamName) -> Res<i64> {
        if let Some(id) = self.0.ids.lock().ok().and_then(|m| m.get(name).copied()) {
            return Ok(id);
        }
        let id: Option<i64> = sqlx::query_scalar(STREAM_ID)
            .bind(name.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| failed(&e))?;
        let id = id.ok_or_else(|| StorageError::NotFound(format!("stream {name}")))?;
        if let Ok(mut m) = self.0.ids.lock() {
            m.insert(name.clone(), id);
        }
        Ok(id)
    }

    /// A connection that reads.
    pub async fn reader(&self) -> Res<PoolConnection<D::DB>> {
        self.0
            .dialect
            .readers()
            .acquire()
            .await
            .map_err(|e| failed(&e))
    }

    /// The writer, once it is this request's turn.
    async fn writer(&self) -> Res<D::Writer<'_>> {
        self.0.dialect.writer().await.map_err(|e| failed(&e))
    }

    /// The writer and the id of `stream`.
    async fn writer_and_id(&self, stream: &StreamName) -> Res<(D::Writer<'_>, i64)> {
        let mut c = self.writer().await?;
        let id = self.stream_id(&mut c, stream).await?;
        Ok((c, id))
    }

    /// The id of `stream`, looked up on a reader.
    async fn id_of(&self, stream: &StreamName) -> Res<i64> {
        let mut c = self.reader().await?;
        self.stream_id(&mut c, stream).await
    }

    async fn recover(&self) -> Res<RecoveredState> {
        let mut c = self.reader().await?;
        let heads: Vec<HeadRow> = sqlx::query_as(RECOVER_HEADS)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        let subs: Vec<SubscriptionRow> = sqlx::query_as(RECOVER_SUBSCRIPTIONS)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        let cursors: Vec<CursorRow> = sqlx::query_as(RECOVER_CURSORS)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        let relays: Vec<RelayRow> = sqlx::query_as(RECOVER_RELAYS)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        let (state, ids) = recovered(heads, subs, cursors, relays).map_err(codec)?;
        if let Ok(mut m) = self.0.ids.lock() {
            m.extend(ids);
        }
        Ok(state)
    }

    async fn load_dedup(
        &self,
        stream: &StreamName,
        live_at: UnixMillis,
        after: Option<(u32, u64)>,
        limit: u32,
    ) -> Res<Vec<DedupRecord>> {
        let mut c = self.reader().await?;
        let id = match self.stream_id(&mut c, stream).await {
            Ok(id) => id,
            Err(StorageError::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let (ap, ao) = after.map_or((-1i32, -1i64), |(p, o)| (i32_of(p), i64_of(o)));
        let rows: Vec<DedupRow> = sqlx::query_as(D::LOAD_DEDUP)
            .bind(id)
            .bind(i64_of(live_at.0))
            .bind(ap)
            .bind(ao)
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        rows.iter()
            .map(|r| dedup_record(r.partition, r.offset, &r.event_id, r.expires_at).map_err(codec))
            .collect()
    }

    /// Creates a stream and its partitions in one transaction; a repeat of the same
    /// configuration succeeds, another one is a conflict.
    async fn create_stream(&self, config: &StreamConfig) -> StorageResult {
        let json = match to_json(config) {
            Ok(j) => j,
            Err(e) => return StorageResult::Err(codec(e)),
        };
        let mut c = match self.writer().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(e),
        };
        let mut tx = match sqlx::Connection::begin(&mut *c).await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let existing: Result<Option<String>, _> = sqlx::query_scalar(STREAM_CONFIG)
            .bind(config.name.as_str())
            .fetch_optional(&mut *tx)
            .await;
        match existing {
            Err(e) => return StorageResult::Err(failed(&e)),
            Ok(Some(stored)) => return existing_stream(&stored, config),
            Ok(None) => {}
        }
        let id: Result<i64, _> = sqlx::query_scalar(INSERT_STREAM)
            .bind(config.name.as_str())
            .bind(json)
            .bind(i32_of(config.partitions))
            .fetch_one(&mut *tx)
            .await;
        let id = match id {
            Ok(id) => id,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        if let Err(e) = sqlx::query(D::INSERT_PARTITIONS)
            .bind(id)
            .bind(i32_of(config.partitions))
            .execute(&mut *tx)
            .await
        {
            return StorageResult::Err(failed(&e));
        }
        let r = committed(tx.commit().await);
        if matches!(r, StorageResult::Ok(_))
            && let Ok(mut m) = self.0.ids.lock()
        {
            m.insert(config.name.clone(), id);
        }
        r
    }

    /// Deletes a stream in one short transaction (its rows are removed afterwards, see
    /// [`SqlStore::purge`]).
    async fn delete_stream(&self, name: &StreamName) -> StorageResult {
        let mut c = match self.writer().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(e),
        };
        let mut tx = match sqlx::Connection::begin(&mut *c).await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let id: Result<Option<i64>, _> = sqlx::query_scalar(DELETE_STREAM)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await;
        let id = match id {
            Ok(Some(id)) => id,
            Ok(None) => return StorageResult::Ok(StorageReply::Done),
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        if let Err(e) = sqlx::query(MARK_DELETED).bind(id).execute(&mut *tx).await {
            return StorageResult::Err(failed(&e));
        }
        let r = committed(tx.commit().await);
        drop(c);
        if let Ok(mut m) = self.0.ids.lock() {
            m.remove(name);
        }
        self.0.chains.forget(name);
        if matches!(r, StorageResult::Ok(_)) {
            D::purge_later(self, id);
        }
        r
    }

    /// Resumes the removal of deleted streams' rows (after a crash during one).
    pub async fn resume_deletions(&self) {
        let ids: Vec<i64> = match self.0.dialect.writer().await {
            Ok(mut c) => sqlx::query_scalar(DELETED_STREAMS)
                .fetch_all(&mut *c)
                .await
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for id in ids {
            D::purge_later(self, id);
        }
    }

    /// Removes a deleted stream's rows, [`crate::DELETE_BATCH`] per statement (each its own
    /// transaction, on the writer in its turn), so that no statement holds its locks for long;
    /// on a failure the rest is left to the next open.
    pub async fn purge(&self, id: i64) {
        for sql in PURGE {
            loop {
                match self
                    .execute(sqlx::query(sql).bind(id).bind(crate::DELETE_BATCH))
                    .await
                {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(code = 1003, stream_id = id, error = %e, "removing a deleted stream's rows failed; resumed at next open");
                        return;
                    }
                }
            }
        }
        let _ = self.execute(sqlx::query(UNMARK_DELETED).bind(id)).await;
    }

    /// Runs one statement on the writer in its turn, answering the rows it changed.
    async fn execute(
        &self,
        q: sqlx::query::Query<'_, D::DB, <D::DB as sqlx::Database>::Arguments>,
    ) -> Result<u64, sqlx::Error> {
        let mut c = self.0.dialect.writer().await?;
        let r = q.execute(&mut *c).await?;
        Ok(D::rows_affected(&r))
    }

    /// Runs `sql` (binding `$1` and then [`crate::DELETE_BATCH`] as its last placeholder,
    /// through `bind`) until it removes nothing, each run its own transaction.
    async fn delete_in_batches(
        &self,
        bind: impl Fn(
            sqlx::query::Query<'static, D::DB, <D::DB as sqlx::Database>::Arguments>,
        )
            -> sqlx::query::Query<'static, D::DB, <D::DB as sqlx::Database>::Arguments>,
        sql: &'static str,
    ) -> StorageResult {
        loop {
            match self
                .execute(bind(sqlx::query(sql)).bind(crate::DELETE_BATCH))
                .await
            {
                Ok(n) if n > 0 => continue,
                Ok(_) => return StorageResult::Ok(StorageReply::Done),
                Err(e) => return StorageResult::Err(failed(&e)),
            }
        }
    }

    /// Up to `max` events of `partition` from offset `from`, a few batches per statement.
    async fn read(
        &self,
        stream: &StreamName,
        partition: u32,
        from: u64,
        max: u32,
    ) -> Res<Vec<Arc<Event>>> {
        let mut c = self.reader().await?;
        let id = self.stream_id(&mut c, stream).await?;
        SqlBatches::<D::DB>::read(&mut c, stream, id, partition, from, max).await
    }

    /// The first offset at or after `at` (the index on the batches' last timestamps).
    async fn find_offset(&self, stream: &StreamName, partition: u32, at: UnixMillis) -> Res<u64> {
        let mut c = self.reader().await?;
        let id = self.stream_id(&mut c, stream).await?;
        SqlBatches::<D::DB>::find_offset(&mut c, stream, id, partition, at).await
    }

    /// The first offset to keep so that the partition's tail holds at most `max_bytes` of
    /// payloads and keys.
    async fn retention_cut(&self, stream: &StreamName, partition: u32, max_bytes: u64) -> Res<u64> {
        let mut c = self.reader().await?;
        let id = self.stream_id(&mut c, stream).await?;
        SqlBatches::<D::DB>::retention_cut(&mut c, stream, id, partition, max_bytes).await
    }

    /// Removes the prefix below `before` (see [`SqlBatches::truncate`]), on the writer, held
    /// until it is done.
    async fn truncate(&self, stream: &StreamName, partition: u32, before: u64) -> StorageResult {
        let r = async {
            let (mut c, id) = self.writer_and_id(stream).await?;
            SqlBatches::<D::DB>::truncate(&mut c, stream, id, partition, before).await
        };
        match r.await {
            Ok(()) => StorageResult::Ok(StorageReply::Done),
            Err(e) => StorageResult::Err(e),
        }
    }

    /// One statement as its own transaction (autocommit: the statement and its commit are
    /// one round trip, or one command to SQLite's writer thread). A database error means
    /// nothing was written; a failure of the connection leaves the outcome unknown.
    async fn write_one(
        &self,
        q: sqlx::query::Query<'_, D::DB, <D::DB as sqlx::Database>::Arguments>,
    ) -> StorageResult {
        let mut c = match self.writer().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(e),
        };
        committed(q.execute(&mut *c).await.map(|_| ()))
    }

    async fn save_subscription(&self, rec: &SubscriptionRecord) -> StorageResult {
        let (config, starts) = match (to_json(&rec.config), to_json(&rec.start_offsets)) {
            (Ok(c), Ok(s)) => (c, s),
            (Err(e), _) | (_, Err(e)) => return StorageResult::Err(codec(e)),
        };
        let q = sqlx::query(SAVE_SUBSCRIPTION)
            .bind(i64_of(rec.id.0))
            .bind(rec.config.stream.as_str())
            .bind(config)
            .bind(starts);
        self.write_one(q).await
    }

    async fn delete_subscription(&self, id: SubId) -> StorageResult {
        self.write_one(sqlx::query(DELETE_SUBSCRIPTION).bind(i64_of(id.0)))
            .await
    }

    async fn save_receipts(&self, list: &[ReceiptRecord]) -> StorageResult {
        match self.writer().await {
            Ok(mut c) => D::save_receipts(&mut c, list).await,
            Err(e) => StorageResult::Err(e),
        }
    }

    /// Deletes one consumer's cursor rows and receipts in one transaction.
    async fn delete_cursor(&self, sub: SubId, consumer: &ConsumerId) -> StorageResult {
        let mut c = match self.writer().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(e),
        };
        let mut tx = match sqlx::Connection::begin(&mut *c).await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        for q in DELETE_CURSOR {
            if let Err(e) = sqlx::query(q)
                .bind(i64_of(sub.0))
                .bind(consumer.as_str())
                .execute(&mut *tx)
                .await
            {
                return StorageResult::Err(failed(&e));
            }
        }
        committed(tx.commit().await)
    }

    async fn load_receipts(
        &self,
        sub: SubId,
        after: Option<(ConsumerId, u32, u64)>,
        limit: u32,
    ) -> Res<Vec<ReceiptRecord>> {
        let mut c = self.reader().await?;
        let (ac, ap, ao) = after.map_or((String::new(), -1i32, -1i64), |(c, p, o)| {
            (c.to_string(), i32_of(p), i64_of(o))
        });
        let rows: Vec<ReceiptRow> = sqlx::query_as(D::LOAD_RECEIPTS)
            .bind(i64_of(sub.0))
            .bind(ac)
            .bind(ap)
            .bind(ao)
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        rows.iter()
            .map(|r| {
                receipt_record(
                    r.sub_id,
                    &r.consumer,
                    r.partition,
                    r.offset,
                    r.delivered_at,
                    r.read_at,
                    r.timed_out,
                )
                .map_err(codec)
            })
            .collect()
    }

    /// Removes a stream's dedup ids expired at `at`, [`crate::DELETE_BATCH`] per statement.
    async fn expire_dedup(&self, stream: &StreamName, at: UnixMillis) -> StorageResult {
        let id = match self.id_of(stream).await {
            Ok(id) => id,
            Err(e) => return StorageResult::Err(e),
        };
        self.delete_in_batches(|q| q.bind(id).bind(i64_of(at.0)), EXPIRE_DEDUP)
            .await
    }

    /// Removes receipts last changed before `before`, [`crate::DELETE_BATCH`] per statement.
    async fn expire_receipts(&self, sub: SubId, before: UnixMillis) -> StorageResult {
        self.delete_in_batches(
            |q| q.bind(i64_of(sub.0)).bind(i64_of(before.0)),
            D::EXPIRE_RECEIPTS,
        )
        .await
    }

    async fn save_relay(&self, r: &RelayRecord) -> StorageResult {
        self.write_one(
            sqlx::query(SAVE_RELAY)
                .bind(r.stream.as_str())
                .bind(i32_of(r.partition))
                .bind(i64_of(r.next)),
        )
        .await
    }

    /// Upserts schema versions in one transaction.
    async fn save_schemas(&self, list: &[SchemaRecord]) -> StorageResult {
        let mut c = match self.writer().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(e),
        };
        let mut tx = match sqlx::Connection::begin(&mut *c).await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        for r in list {
            let (schema, rules) = match schema_columns(r) {
                Ok(c) => c,
                Err(e) => return StorageResult::Err(codec(e)),
            };
            let q = sqlx::query(SAVE_SCHEMA)
                .bind(r.event_type.as_str())
                .bind(i64::from(r.version))
                .bind(schema)
                .bind(rules)
                .bind(r.function)
                .execute(&mut *tx)
                .await;
            if let Err(e) = q {
                return StorageResult::Err(failed(&e));
            }
        }
        committed(tx.commit().await)
    }

    /// A page of schema versions, ordered by (event type, version).
    async fn load_schemas(
        &self,
        after: Option<(String, u32)>,
        limit: u32,
    ) -> Res<Vec<SchemaRecord>> {
        let mut c = self.reader().await?;
        let (at, av) = after.map_or((String::new(), 0i64), |(t, v)| (t, i64::from(v)));
        let rows: Vec<SchemaRow> = sqlx::query_as(D::LOAD_SCHEMAS)
            .bind(at)
            .bind(av)
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        rows.into_iter()
            .map(|r| schema_record(r).map_err(codec))
            .collect()
    }
}
