//! Each storage request as SQLite SQL.

use crate::append_sql::{
    BATCHES_PER_INSERT, ROWS_PER_INSERT, at_once_script, batches_insert, bind_batches, bind_dedup,
    dedup_insert,
};
use crate::cursor_sql::{bind_cursors, upsert_sql};
use crate::{DELETE_BATCH, SqliteStore};
use sqlx::Connection as _;
use sqlx::sqlite::SqliteArguments;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use std::sync::Arc;
use tributary_core::{
    AppendWrite, ConsumerId, CursorRecord, DedupRecord, Event, ReceiptRecord, RecoveredState,
    RelayRecord, SchemaRecord, StorageError, StorageReply, StorageRequest, StorageResult,
    StreamConfig, StreamName, SubId, SubscriptionRecord, UnixMillis,
};
use tributary_store_api::{
    CursorRow, EventBatch, HeadRow, RECOVER_CURSORS, RECOVER_HEADS, RECOVER_RELAYS,
    RECOVER_SUBSCRIPTIONS, RelayRow, SchemaRow, SqlBatches, SubscriptionRow, batches, codec,
    committed, dedup_record, existing_stream, failed, i64_of, receipt_record, recovered,
    schema_columns, schema_record, to_json,
};

type Res<T> = Result<T, StorageError>;

/// The record-batch statements on SQLite.
type Batches = SqlBatches<Sqlite>;

/// The whole append as one command to the writer connection (its thread is woken once
/// per write, not once per statement): `BEGIN IMMEDIATE`, the batches and the dedup records
/// in statements of a fixed number of rows, `COMMIT` ([`at_once_script`]). A failed statement
/// leaves the transaction open, so it is rolled back here.
async fn append_at_once(
    c: &mut SqliteConnection,
    script: &'static str,
    id: i64,
    batches: Vec<EventBatch>,
    dedup: &[DedupRecord],
) -> Result<(), sqlx::Error> {
    let mut args = SqliteArguments::default();
    bind_batches(&mut args, id, batches)
        .and_then(|()| bind_dedup(&mut args, id, dedup))
        .map_err(sqlx::Error::Encode)?;
    let r = sqlx::query_with(script, args).execute(&mut *c).await;
    if r.is_err() {
        // Refused when no transaction is open (the failure was the COMMIT's, which ended it).
        let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
    }
    r.map(|_| ())
}

/// A larger append in one transaction, statement by statement: its round trips are shared by
/// many events, and the statement cache keeps only the shapes of the writes sent at once.
async fn append_in_steps(
    c: &mut SqliteConnection,
    id: i64,
    mut batches: Vec<EventBatch>,
    dedup: &[DedupRecord],
) -> Result<(), sqlx::Error> {
    let mut tx = c.begin().await?;
    while !batches.is_empty() {
        let chunk: Vec<EventBatch> = batches
            .drain(..BATCHES_PER_INSERT.min(batches.len()))
            .collect();
        let mut args = SqliteArguments::default();
        bind_batches(&mut args, id, chunk).map_err(sqlx::Error::Encode)?;
        sqlx::query_with(batches_insert(), args)
            .execute(&mut *tx)
            .await?;
    }
    for chunk in dedup.chunks(ROWS_PER_INSERT) {
        let mut args = SqliteArguments::default();
        bind_dedup(&mut args, id, chunk).map_err(sqlx::Error::Encode)?;
        sqlx::query_with(dedup_insert(), args)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Whether a refused append was refused for offsets already taken: a batch that overlaps a
/// stored one (the trigger of migration 0007) or starts where one does (the unique index).
fn offsets_taken(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation
                || db.message().contains("a stored batch overlaps")
        }
        _ => false,
    }
}

/// Upserts `records` (up to [`crate::cursor_sql::MAX_ROWS`]) in one autocommit statement.
async fn upsert_cursors(c: &mut SqliteConnection, records: &[&CursorRecord]) -> StorageResult {
    if records.is_empty() {
        return StorageResult::Ok(StorageReply::Done);
    }
    let mut args = SqliteArguments::default();
    if let Err(e) = bind_cursors(&mut args, records.iter().copied()) {
        return StorageResult::Err(failed(&sqlx::Error::Encode(e)));
    }
    committed(
        sqlx::query_with(upsert_sql(records.len()), args)
            .execute(c)
            .await
            .map(|_| ()),
    )
}

impl SqliteStore {
    pub(crate) async fn run(&self, req: StorageRequest) -> StorageResult {
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
            StorageRequest::Append(w) => return self.append(&w).await,
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
            StorageRequest::SaveCursor(c) => return self.save_cursor(&c).await,
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

    async fn stream_id(&self, conn: &mut SqliteConnection, name: &StreamName) -> Res<i64> {
        if let Some(id) = self.ids.lock().ok().and_then(|m| m.get(name).copied()) {
            return Ok(id);
        }
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM tributary_streams WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| failed(&e))?;
        let id = id.ok_or_else(|| StorageError::NotFound(format!("stream {name}")))?;
        if let Ok(mut m) = self.ids.lock() {
            m.insert(name.clone(), id);
        }
        Ok(id)
    }

    async fn reader(&self) -> Res<sqlx::pool::PoolConnection<Sqlite>> {
        self.readers.acquire().await.map_err(|e| failed(&e))
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
        if let Ok(mut m) = self.ids.lock() {
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
        let (ap, ao) = after.map_or((-1i64, -1i64), |(p, o)| (i64::from(p), i64_of(o)));
        let rows = sqlx::query(
            r#"SELECT partition, "offset", event_id, expires_at FROM tributary_dedup
               WHERE stream_id = ? AND expires_at > ? AND (partition, "offset") > (?, ?)
               ORDER BY partition, "offset" LIMIT ?"#,
        )
        .bind(id)
        .bind(i64_of(live_at.0))
        .bind(ap)
        .bind(ao)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await
        .map_err(|e| failed(&e))?;
        rows.iter()
            .map(|r| {
                dedup_record(
                    r.get("partition"),
                    r.get("offset"),
                    r.get::<&[u8], _>("event_id"),
                    r.get("expires_at"),
                )
                .map_err(codec)
            })
            .collect()
    }

    async fn create_stream(&self, config: &StreamConfig) -> StorageResult {
        let json = match to_json(config) {
            Ok(j) => j,
            Err(e) => return StorageResult::Err(codec(e)),
        };
        let mut c = match self.writer.hold().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let mut tx = match c.begin().await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let existing: Result<Option<String>, _> =
            sqlx::query_scalar("SELECT config FROM tributary_streams WHERE name = ?")
                .bind(config.name.as_str())
                .fetch_optional(&mut *tx)
                .await;
        match existing {
            Err(e) => return StorageResult::Err(failed(&e)),
            Ok(Some(stored)) => return existing_stream(&stored, config),
            Ok(None) => {}
        }
        let id: Result<i64, _> =
            sqlx::query_scalar("INSERT INTO tributary_streams (name, config, partitions) VALUES (?, ?, ?) RETURNING id")
                .bind(config.name.as_str())
                .bind(&json)
                .bind(i64::from(config.partitions))
                .fetch_one(&mut *tx)
                .await;
        let id = match id {
            Ok(id) => id,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        for p in 0..config.partitions {
            if let Err(e) =
                sqlx::query("INSERT INTO tributary_partitions (stream_id, partition) VALUES (?, ?)")
                    .bind(id)
                    .bind(i64::from(p))
                    .execute(&mut *tx)
                    .await
            {
                return StorageResult::Err(failed(&e));
            }
        }
        let r = committed(tx.commit().await);
        if matches!(r, StorageResult::Ok(_))
            && let Ok(mut m) = self.ids.lock()
        {
            m.insert(config.name.clone(), id);
        }
        r
    }

    async fn delete_stream(&self, name: &StreamName) -> StorageResult {
        let mut c = match self.writer.hold().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let mut tx = match c.begin().await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let id: Result<Option<i64>, _> =
            sqlx::query_scalar("DELETE FROM tributary_streams WHERE name = ? RETURNING id")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await;
        let id = match id {
            Ok(Some(id)) => id,
            Ok(None) => return StorageResult::Ok(StorageReply::Done),
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        if let Err(e) = sqlx::query("INSERT INTO tributary_deleted_streams (stream_id) VALUES (?)")
            .bind(id)
            .execute(&mut *tx)
            .await
        {
            return StorageResult::Err(failed(&e));
        }
        let r = committed(tx.commit().await);
        if let Ok(mut m) = self.ids.lock() {
            m.remove(name);
        }
        self.chains.forget(name);
        if matches!(r, StorageResult::Ok(_)) {
            let store = self.clone();
            sqlx_core::rt::spawn(async move { store.purge(id).await });
        }
        r
    }

    pub(crate) async fn resume_deletions(&self) {
        let ids: Vec<i64> = match self.writer.hold().await {
            Ok(mut c) => sqlx::query_scalar("SELECT stream_id FROM tributary_deleted_streams")
                .fetch_all(&mut *c)
                .await
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for id in ids {
            let store = self.clone();
            sqlx_core::rt::spawn(async move { store.purge(id).await });
        }
    }

    /// Removes a deleted stream's rows, `DELETE_BATCH` per statement, so that no statement
    /// holds the write lock for long.
    pub(crate) async fn purge(&self, id: i64) {
        // The events of versions before 7 (left there when their stream was deleted before
        // the move), the batches, the dedup records.
        for (table, key) in [
            ("tributary_events", r#""offset""#),
            ("tributary_batches", "first_offset"),
            ("tributary_dedup", r#""offset""#),
        ] {
            let sql = format!(
                r#"DELETE FROM {table} WHERE stream_id = ?1 AND (partition, {key}) IN
                   (SELECT partition, {key} FROM {table} WHERE stream_id = ?1 LIMIT ?2)"#
            );
            loop {
                match self
                    .writer
                    .execute(
                        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                            .bind(id)
                            .bind(DELETE_BATCH),
                    )
                    .await
                {
                    Ok(r) if r.rows_affected() > 0 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(code = 1003, stream_id = id, error = %e, "removing a deleted stream's rows failed; resumed at next open");
                        return;
                    }
                }
            }
        }
        let _ = self
            .writer
            .execute(
                sqlx::query("DELETE FROM tributary_deleted_streams WHERE stream_id = ?").bind(id),
            )
            .await;
    }

    async fn append(&self, w: &AppendWrite) -> StorageResult {
        // Pipelined appends: one writer connection, so wait for the one before to finish
        // (it may need the connection), then go only if it committed. The batches are encoded
        // while it runs.
        let mut finish = self.chains.begin(&w.stream, w.seq);
        let batches = match batches(w.events.iter().map(|e| &**e)) {
            Ok(b) => b,
            Err(e) => return StorageResult::Err(codec(e)),
        };
        if let Err(e) = self.chains.wait_predecessor(w).await {
            return StorageResult::Err(e);
        }
        let (id, r) = {
            let mut c = match self.writer.hold().await {
                Ok(c) => c,
                Err(e) => return StorageResult::Err(failed(&e)),
            };
            let id = match self.stream_id(&mut c, &w.stream).await {
                Ok(id) => id,
                Err(e) => return StorageResult::Err(e),
            };
            let r = match at_once_script(batches.len(), w.dedup.len()) {
                Some(script) => append_at_once(&mut c, script, id, batches, &w.dedup).await,
                None => append_in_steps(&mut c, id, batches, &w.dedup).await,
            };
            if r.is_ok() {
                self.checkpointer.writers_checkpoint(&mut c).await;
            }
            (id, r)
            // The writer connection is given back here.
        };
        let r = match r {
            Ok(()) => StorageResult::Ok(StorageReply::Done),
            // Offsets taken: nothing was written; the stored events tell an identical repeat
            // of this write from a conflict.
            Err(e) if offsets_taken(&e) => match self.reader().await {
                Ok(mut c) => Batches::repeat_or_conflict(&mut c, id, w).await,
                Err(e) => StorageResult::Err(e),
            },
            // Any other refusal wrote nothing; a failed connection leaves it unknown.
            Err(e) => committed(Err(e)),
        };
        if matches!(r, StorageResult::Ok(_)) {
            finish.committed();
            self.checkpointer.kick();
        }
        r
    }

    async fn read(
        &self,
        stream: &StreamName,
        partition: u32,
        from: u64,
        max: u32,
    ) -> Res<Vec<Arc<Event>>> {
        let mut c = self.reader().await?;
        let id = self.stream_id(&mut c, stream).await?;
        Batches::read(&mut c, stream, id, partition, from, max).await
    }

    /// The first offset at or after `at` (the index on the batches' last timestamps).
    async fn find_offset(&self, stream: &StreamName, partition: u32, at: UnixMillis) -> Res<u64> {
        let mut c = self.reader().await?;
        let id = self.stream_id(&mut c, stream).await?;
        Batches::find_offset(&mut c, stream, id, partition, at).await
    }

    /// One statement as its own transaction (SQLite's autocommit: the statement and its
    /// commit are one command to the writer's thread, not three). A database error means
    /// nothing was written; a failure of the connection leaves the outcome unknown.
    async fn write_one(
        &self,
        q: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> StorageResult {
        let mut c = match self.writer.hold().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        committed(q.execute(&mut *c).await.map(|_| ()))
    }

    async fn save_subscription(&self, rec: &SubscriptionRecord) -> StorageResult {
        let (config, starts) = match (to_json(&rec.config), to_json(&rec.start_offsets)) {
            (Ok(c), Ok(s)) => (c, s),
            (Err(e), _) | (_, Err(e)) => return StorageResult::Err(codec(e)),
        };
        let q = sqlx::query(
            r#"INSERT INTO tributary_subscriptions (id, stream_id, config, start_offsets)
               VALUES (?, (SELECT id FROM tributary_streams WHERE name = ?), ?, ?)
               ON CONFLICT (id) DO UPDATE SET config = excluded.config, start_offsets = excluded.start_offsets"#,
        )
        .bind(i64_of(rec.id.0))
        .bind(rec.config.stream.as_str().to_string())
        .bind(config)
        .bind(starts);
        self.write_one(q).await
    }

    async fn delete_subscription(&self, id: SubId) -> StorageResult {
        self.write_one(
            sqlx::query("DELETE FROM tributary_subscriptions WHERE id = ?").bind(i64_of(id.0)),
        )
        .await
    }

    /// Upserts receipts in one transaction, merging with what is stored (the later delivery,
    /// the first read).
    async fn save_receipts(&self, list: &[ReceiptRecord]) -> StorageResult {
        let mut c = match self.writer.hold().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let mut tx = match c.begin().await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        for chunk in list.chunks(ROWS_PER_INSERT) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                r#"INSERT INTO tributary_receipts (sub_id, consumer, partition, "offset", delivered_at, read_at, timed_out) "#,
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(i64_of(r.sub.0))
                    .push_bind(r.consumer.to_string())
                    .push_bind(i64::from(r.partition))
                    .push_bind(i64_of(r.offset))
                    .push_bind(i64_of(r.delivered_at.0))
                    .push_bind(r.read_at.map(|t| i64_of(t.0)))
                    .push_bind(r.timed_out.map(|t| i64_of(t.0)));
            });
            q.push(
                r#" ON CONFLICT (sub_id, consumer, partition, "offset") DO UPDATE SET
                    delivered_at = max(tributary_receipts.delivered_at, excluded.delivered_at),
                    read_at = coalesce(tributary_receipts.read_at, excluded.read_at),
                    timed_out = CASE WHEN tributary_receipts.timed_out IS NULL THEN excluded.timed_out
                                     WHEN excluded.timed_out IS NULL THEN tributary_receipts.timed_out
                                     ELSE max(tributary_receipts.timed_out, excluded.timed_out) END"#,
            );
            if let Err(e) = q.build().execute(&mut *tx).await {
                return StorageResult::Err(failed(&e));
            }
        }
        committed(tx.commit().await)
    }

    /// Deletes one consumer's cursor rows and receipts in one transaction.
    async fn delete_cursor(&self, sub: SubId, consumer: &ConsumerId) -> StorageResult {
        let mut c = match self.writer.hold().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let mut tx = match c.begin().await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        for q in [
            "DELETE FROM tributary_receipts WHERE sub_id = ? AND consumer = ?",
            "DELETE FROM tributary_cursors WHERE sub_id = ? AND consumer = ?",
        ] {
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
        let (ac, ap, ao) = after.map_or((String::new(), -1i64, -1i64), |(c, p, o)| {
            (c.to_string(), i64::from(p), i64_of(o))
        });
        let rows = sqlx::query(
            r#"SELECT sub_id, consumer, partition, "offset", delivered_at, read_at, timed_out FROM tributary_receipts
               WHERE sub_id = ? AND (consumer, partition, "offset") > (?, ?, ?)
               ORDER BY consumer, partition, "offset" LIMIT ?"#,
        )
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
                    r.get("sub_id"),
                    r.get::<&str, _>("consumer"),
                    r.get("partition"),
                    r.get("offset"),
                    r.get("delivered_at"),
                    r.get("read_at"),
                    r.get("timed_out"),
                )
                .map_err(codec)
            })
            .collect()
    }

    /// The first offset to keep so that the partition's tail holds at most `max_bytes` of
    /// payloads and keys.
    async fn retention_cut(&self, stream: &StreamName, partition: u32, max_bytes: u64) -> Res<u64> {
        let mut c = self.reader().await?;
        let id = self.stream_id(&mut c, stream).await?;
        Batches::retention_cut(&mut c, stream, id, partition, max_bytes).await
    }

    /// Removes the prefix below `before` (see `SqlBatches::truncate`), on the writer
    /// connection, held until it is done.
    async fn truncate(&self, stream: &StreamName, partition: u32, before: u64) -> StorageResult {
        let r = async {
            let id = {
                let mut c = self.reader().await?;
                self.stream_id(&mut c, stream).await?
            };
            let mut c = self.writer.hold().await.map_err(|e| failed(&e))?;
            Batches::truncate(&mut c, stream, id, partition, before).await
        };
        match r.await {
            Ok(()) => StorageResult::Ok(StorageReply::Done),
            Err(e) => StorageResult::Err(e),
        }
    }

    /// Removes a stream's dedup ids expired at `at`, `DELETE_BATCH` per statement.
    async fn expire_dedup(&self, stream: &StreamName, at: UnixMillis) -> StorageResult {
        let id = {
            let mut c = match self.reader().await {
                Ok(c) => c,
                Err(e) => return StorageResult::Err(e),
            };
            match self.stream_id(&mut c, stream).await {
                Ok(id) => id,
                Err(e) => return StorageResult::Err(e),
            }
        };
        loop {
            let r = self.writer.execute(sqlx::query(
                r#"DELETE FROM tributary_dedup WHERE stream_id = ?1 AND (partition, "offset") IN
                   (SELECT partition, "offset" FROM tributary_dedup WHERE stream_id = ?1
                    AND expires_at <= ?2 LIMIT ?3)"#,
            )
            .bind(id)
            .bind(i64_of(at.0))
            .bind(DELETE_BATCH))
            .await;
            match r {
                Ok(r) if r.rows_affected() > 0 => continue,
                Ok(_) => return StorageResult::Ok(StorageReply::Done),
                Err(e) => return StorageResult::Err(failed(&e)),
            }
        }
    }

    /// Removes receipts last changed before `before`, `DELETE_BATCH` rows per statement.
    async fn expire_receipts(&self, sub: SubId, before: UnixMillis) -> StorageResult {
        loop {
            let r = self.writer.execute(sqlx::query(
                r#"DELETE FROM tributary_receipts WHERE (sub_id, consumer, partition, "offset") IN
                   (SELECT sub_id, consumer, partition, "offset" FROM tributary_receipts
                    WHERE sub_id = ?1 AND max(delivered_at, coalesce(read_at, 0)) < ?2 LIMIT ?3)"#,
            )
            .bind(i64_of(sub.0))
            .bind(i64_of(before.0))
            .bind(DELETE_BATCH))
            .await;
            match r {
                Ok(r) if r.rows_affected() > 0 => continue,
                Ok(_) => return StorageResult::Ok(StorageReply::Done),
                Err(e) => return StorageResult::Err(failed(&e)),
            }
        }
    }

    async fn save_relay(&self, r: &RelayRecord) -> StorageResult {
        self.write_one(
            sqlx::query(
                r#"INSERT INTO tributary_relay (stream_id, partition, next_offset)
                   VALUES ((SELECT id FROM tributary_streams WHERE name = ?), ?, ?)
                   ON CONFLICT (stream_id, partition) DO UPDATE SET next_offset = excluded.next_offset"#,
            )
            .bind(r.stream.as_str().to_string())
            .bind(i64::from(r.partition))
            .bind(i64_of(r.next)),
        )
        .await
    }

    /// Queues the save, then, holding the writer connection, writes every queued save (its
    /// own, unless a save before it took it); see [`tributary_store_api::SaveQueue`].
    async fn save_cursor(&self, c: &CursorRecord) -> StorageResult {
        let answer = self.cursor_saves.push(c.clone());
        match self.writer.hold().await {
            Ok(mut conn) => {
                let batch = self.cursor_saves.take();
                if !batch.is_empty() {
                    let r = upsert_cursors(&mut conn, &batch.records()).await;
                    for one in batch.answer(&r) {
                        let r = upsert_cursors(&mut conn, &[one.record()]).await;
                        one.answer(r);
                    }
                }
            }
            Err(e) => self
                .cursor_saves
                .take()
                .fail(&StorageResult::Err(failed(&e))),
        }
        answer.outcome().await
    }

    /// Upserts schema versions in one transaction.
    async fn save_schemas(&self, list: &[SchemaRecord]) -> StorageResult {
        let mut c = match self.writer.hold().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let mut tx = match c.begin().await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        for r in list {
            let (schema, rules) = match schema_columns(r) {
                Ok(c) => c,
                Err(e) => return StorageResult::Err(codec(e)),
            };
            let q = sqlx::query(
                r#"INSERT INTO tributary_schemas (event_type, version, schema, rules, function)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (event_type, version) DO UPDATE SET schema = excluded.schema,
                     rules = excluded.rules, function = excluded.function"#,
            )
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
        let rows = sqlx::query_as::<_, SchemaRow>(
            r#"SELECT event_type, version, schema, rules, function FROM tributary_schemas
               WHERE (event_type, version) > (?, ?) ORDER BY event_type, version LIMIT ?"#,
        )
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
