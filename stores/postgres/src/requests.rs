//! Each storage request as SQL.

use crate::append_sql::Columns;
use crate::{DELETE_BATCH, PgStore};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};
use tributary_core::{
    AppendWrite, ConsumerId, CursorRecord, DedupRecord, ReceiptRecord, RecoveredState, RelayRecord,
    StorageError, StorageReply, StorageRequest, StorageResult, StreamConfig, StreamName, SubId,
    SubscriptionRecord, UnixMillis,
};
use tributary_store_api::{
    CursorRow, HeadRow, RECOVER_CURSORS, RECOVER_HEADS, RECOVER_RELAYS, RECOVER_SUBSCRIPTIONS,
    RelayRow, SqlBatches, SubscriptionRow, codec, committed, dedup_record, encode_acked,
    existing_stream, failed, i32_of, i64_of, receipt_record, recovered, to_json,
};

type Res<T> = Result<T, StorageError>;

/// The record-batch statements on PostgreSQL.
type Batches = SqlBatches<Postgres>;

impl PgStore {
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

    async fn stream_id(&self, conn: &mut PgConnection, name: &StreamName) -> Res<i64> {
        if let Some(id) = self.ids.lock().ok().and_then(|m| m.get(name).copied()) {
            return Ok(id);
        }
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM tributary_streams WHERE name = $1")
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

    async fn conn(&self) -> Res<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.pool.acquire().await.map_err(|e| failed(&e))
    }

    async fn recover(&self) -> Res<RecoveredState> {
        let mut c = self.conn().await?;
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
        let mut c = self.conn().await?;
        let id = match self.stream_id(&mut c, stream).await {
            Ok(id) => id,
            Err(StorageError::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let (ap, ao) = after.map_or((-1i64, -1i64), |(p, o)| (i64::from(p), i64_of(o)));
        let rows = sqlx::query(
            r#"SELECT partition, "offset", event_id, expires_at FROM tributary_dedup
               WHERE stream_id = $1 AND expires_at > $2 AND (partition, "offset") > ($3::int, $4::bigint)
               ORDER BY partition, "offset" LIMIT $5"#,
        )
        .bind(id)
        .bind(i64_of(live_at.0))
        .bind(i32::try_from(ap).unwrap_or(-1))
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
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let existing: Result<Option<String>, _> =
            sqlx::query_scalar("SELECT config FROM tributary_streams WHERE name = $1")
                .bind(config.name.as_str())
                .fetch_optional(&mut *tx)
                .await;
        match existing {
            Err(e) => return StorageResult::Err(failed(&e)),
            Ok(Some(stored)) => return existing_stream(&stored, config),
            Ok(None) => {}
        }
        let id: Result<i64, _> = sqlx::query_scalar(
            "INSERT INTO tributary_streams (name, config, partitions) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(config.name.as_str())
        .bind(&json)
        .bind(i32_of(config.partitions))
        .fetch_one(&mut *tx)
        .await;
        let id = match id {
            Ok(id) => id,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let r = sqlx::query(
            "INSERT INTO tributary_partitions (stream_id, partition) SELECT $1, generate_series(0, $2 - 1)",
        )
        .bind(id)
        .bind(i32_of(config.partitions))
        .execute(&mut *tx)
        .await;
        if let Err(e) = r {
            return StorageResult::Err(failed(&e));
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
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        let id: Result<Option<i64>, _> =
            sqlx::query_scalar("DELETE FROM tributary_streams WHERE name = $1 RETURNING id")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await;
        let id = match id {
            Ok(Some(id)) => id,
            Ok(None) => return StorageResult::Ok(StorageReply::Done),
            Err(e) => return StorageResult::Err(failed(&e)),
        };
        if let Err(e) = sqlx::query("INSERT INTO tributary_deleted_streams (stream_id) VALUES ($1)")
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

    /// Resumes the removal of deleted streams' rows (after a crash during one).
    pub(crate) async fn resume_deletions(&self) {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT stream_id FROM tributary_deleted_streams")
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
        for id in ids {
            let store = self.clone();
            sqlx_core::rt::spawn(async move { store.purge(id).await });
        }
    }

    /// Removes a deleted stream's events and dedup ids, `DELETE_BATCH` rows per statement, so
    /// no statement holds its locks for long.
    pub(crate) async fn purge(&self, id: i64) {
        for (table, key) in [
            ("tributary_events", r#""offset""#),
            ("tributary_batches", "first_offset"),
            ("tributary_dedup", r#""offset""#),
        ] {
            let sql = format!(
                r#"DELETE FROM {table} WHERE stream_id = $1 AND (partition, {key}) IN
                   (SELECT partition, {key} FROM {table} WHERE stream_id = $1 LIMIT $2)"#
            );
            loop {
                match sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(id)
                    .bind(DELETE_BATCH)
                    .execute(&self.pool)
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
        let _ = sqlx::query("DELETE FROM tributary_deleted_streams WHERE stream_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await;
    }

    /// One append as one statement (one round trip, one implicit transaction): the record
    /// batches and the dedup ids as data-modifying CTEs, and the notification. When a batch
    /// would overlap a stored one nothing is written; the stored events there then tell an
    /// identical repeat (success) from a conflict.
    async fn append(&self, w: &AppendWrite) -> StorageResult {
        // Pipelined appends: a write is built and sent to the store while its predecessor is
        // in flight; its batches are encoded at once and it goes to the database as soon as
        // that one committed (never if it did not). The database thus runs one append of a
        // stream at a time, each one statement, while the engine gathers the next.
        let mut finish = self.chains.begin(&w.stream, w.seq);
        let columns = match Columns::of(w) {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(e),
        };
        if let Err(e) = self.chains.wait_predecessor(w).await {
            return StorageResult::Err(e);
        }
        let mut c = match self.conn().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(e),
        };
        let id = match self.stream_id(&mut c, &w.stream).await {
            Ok(id) => id,
            Err(e) => return StorageResult::Err(e),
        };
        let r = columns
            .query(id, self.notify, w.stream.as_str())
            .fetch_one(&mut *c)
            .await
            .and_then(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?)));
        let result = match r {
            Ok((0, _)) => StorageResult::Ok(StorageReply::Done),
            // Stored batches overlap, or (a writer racing us) the same first offset was taken.
            Ok(_) => Batches::repeat_or_conflict(&mut c, id, w).await,
            Err(sqlx::Error::Database(db))
                if db.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                Batches::repeat_or_conflict(&mut c, id, w).await
            }
            // The statement is its own transaction: a database error means nothing was written;
            // a lost connection leaves it unknown.
            Err(e) => committed(Err(e)),
        };
        if matches!(result, StorageResult::Ok(_)) {
            finish.committed();
        }
        result
    }

    /// Up to `max` events of `partition` from offset `from`, a few batches per statement.
    async fn read(
        &self,
        stream: &StreamName,
        partition: u32,
        from: u64,
        max: u32,
    ) -> Res<Vec<std::sync::Arc<tributary_core::Event>>> {
        let mut c = self.conn().await?;
        let id = self.stream_id(&mut c, stream).await?;
        Batches::read(&mut c, stream, id, partition, from, max).await
    }

    /// The first offset at or after `at` (the index on the batches' last timestamps).
    async fn find_offset(&self, stream: &StreamName, partition: u32, at: UnixMillis) -> Res<u64> {
        let mut c = self.conn().await?;
        let id = self.stream_id(&mut c, stream).await?;
        Batches::find_offset(&mut c, stream, id, partition, at).await
    }

    /// One statement as its own transaction (autocommit: one round trip, not `BEGIN`, the
    /// statement and `COMMIT`). A database error means nothing was written; a connection lost
    /// while it ran leaves the outcome unknown.
    async fn write_one(&self, q: Query<'_, Postgres, PgArguments>) -> StorageResult {
        let mut c = match self.pool.acquire().await {
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
        let r = sqlx::query(
            r#"INSERT INTO tributary_subscriptions (id, stream_id, config, start_offsets)
               VALUES ($1, (SELECT id FROM tributary_streams WHERE name = $2), $3, $4)
               ON CONFLICT (id) DO UPDATE SET config = EXCLUDED.config, start_offsets = EXCLUDED.start_offsets"#,
        )
        .bind(i64_of(rec.id.0))
        .bind(rec.config.stream.as_str())
        .bind(&config)
        .bind(&starts);
        self.write_one(r).await
    }

    async fn delete_subscription(&self, id: SubId) -> StorageResult {
        self.write_one(
            sqlx::query("DELETE FROM tributary_subscriptions WHERE id = $1").bind(i64_of(id.0)),
        )
        .await
    }

    /// Upserts receipts in one statement (`UNNEST`), merging with what is stored (the later
    /// delivery, the first read).
    async fn save_receipts(&self, list: &[ReceiptRecord]) -> StorageResult {
        let r = sqlx::query(
            r#"INSERT INTO tributary_receipts (sub_id, consumer, partition, "offset", delivered_at, read_at, timed_out)
               SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
               ON CONFLICT (sub_id, consumer, partition, "offset") DO UPDATE SET
                 delivered_at = GREATEST(tributary_receipts.delivered_at, EXCLUDED.delivered_at),
                 read_at = COALESCE(tributary_receipts.read_at, EXCLUDED.read_at),
                 timed_out = GREATEST(tributary_receipts.timed_out, EXCLUDED.timed_out)"#,
        )
        .bind(list.iter().map(|r| i64_of(r.sub.0)).collect::<Vec<_>>())
        .bind(list.iter().map(|r| r.consumer.to_string()).collect::<Vec<_>>())
        .bind(
            list.iter()
                .map(|r| i32_of(r.partition))
                .collect::<Vec<_>>(),
        )
        .bind(list.iter().map(|r| i64_of(r.offset)).collect::<Vec<_>>())
        .bind(list.iter().map(|r| i64_of(r.delivered_at.0)).collect::<Vec<_>>())
        .bind(
            list.iter()
                .map(|r| r.read_at.map(|t| i64_of(t.0)))
                .collect::<Vec<_>>(),
        )
        .bind(
            list.iter()
                .map(|r| r.timed_out.map(|t| i64_of(t.0)))
                .collect::<Vec<_>>(),
        );
        self.write_one(r).await
    }

    async fn load_receipts(
        &self,
        sub: SubId,
        after: Option<(ConsumerId, u32, u64)>,
        limit: u32,
    ) -> Res<Vec<ReceiptRecord>> {
        let mut c = self.conn().await?;
        let (ac, ap, ao) = after.map_or((String::new(), -1i32, -1i64), |(c, p, o)| {
            (c.to_string(), i32_of(p), i64_of(o))
        });
        let rows = sqlx::query(
            r#"SELECT sub_id, consumer, partition, "offset", delivered_at, read_at, timed_out FROM tributary_receipts
               WHERE sub_id = $1 AND (consumer, partition, "offset") > ($2::text, $3::int, $4::bigint)
               ORDER BY consumer, partition, "offset" LIMIT $5"#,
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
        let mut c = self.conn().await?;
        let id = self.stream_id(&mut c, stream).await?;
        Batches::retention_cut(&mut c, stream, id, partition, max_bytes).await
    }

    /// Removes the prefix below `before` (see `SqlBatches::truncate`).
    async fn truncate(&self, stream: &StreamName, partition: u32, before: u64) -> StorageResult {
        let r = async {
            let mut c = self.conn().await?;
            let id = self.stream_id(&mut c, stream).await?;
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
            let mut c = match self.conn().await {
                Ok(c) => c,
                Err(e) => return StorageResult::Err(e),
            };
            match self.stream_id(&mut c, stream).await {
                Ok(id) => id,
                Err(e) => return StorageResult::Err(e),
            }
        };
        loop {
            let r = sqlx::query(
                r#"DELETE FROM tributary_dedup WHERE stream_id = $1 AND (partition, "offset") IN
                   (SELECT partition, "offset" FROM tributary_dedup WHERE stream_id = $1
                    AND expires_at <= $2 LIMIT $3)"#,
            )
            .bind(id)
            .bind(i64_of(at.0))
            .bind(DELETE_BATCH)
            .execute(&self.pool)
            .await;
            match r {
                Ok(r) if r.rows_affected() > 0 => continue,
                Ok(_) => return StorageResult::Ok(StorageReply::Done),
                Err(e) => return StorageResult::Err(failed(&e)),
            }
        }
    }

    /// Removes receipts last changed before `before`, `DELETE_BATCH` rows per statement.
    /// Deletes one consumer's cursor rows and receipts in one statement (atomic).
    async fn delete_cursor(&self, sub: SubId, consumer: &ConsumerId) -> StorageResult {
        self.write_one(
            sqlx::query(
                r#"WITH receipts AS (DELETE FROM tributary_receipts WHERE sub_id = $1 AND consumer = $2)
                   DELETE FROM tributary_cursors WHERE sub_id = $1 AND consumer = $2"#,
            )
            .bind(i64_of(sub.0))
            .bind(consumer.as_str()),
        )
        .await
    }

    async fn expire_receipts(&self, sub: SubId, before: UnixMillis) -> StorageResult {
        loop {
            let r = sqlx::query(
                r#"DELETE FROM tributary_receipts WHERE (sub_id, consumer, partition, "offset") IN
                   (SELECT sub_id, consumer, partition, "offset" FROM tributary_receipts
                    WHERE sub_id = $1 AND GREATEST(delivered_at, COALESCE(read_at, 0)) < $2 LIMIT $3)"#,
            )
            .bind(i64_of(sub.0))
            .bind(i64_of(before.0))
            .bind(DELETE_BATCH)
            .execute(&self.pool)
            .await;
            match r {
                Ok(r) if r.rows_affected() > 0 => continue,
                Ok(_) => return StorageResult::Ok(StorageReply::Done),
                Err(e) => return StorageResult::Err(failed(&e)),
            }
        }
    }

    async fn save_relay(&self, r: &RelayRecord) -> StorageResult {
        let q = sqlx::query(
            r#"INSERT INTO tributary_relay (stream_id, partition, next_offset)
               VALUES ((SELECT id FROM tributary_streams WHERE name = $1), $2, $3)
               ON CONFLICT (stream_id, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"#,
        )
        .bind(r.stream.as_str())
        .bind(i32_of(r.partition))
        .bind(i64_of(r.next))
        .execute(&self.pool)
        .await;
        match q {
            Ok(_) => StorageResult::Ok(StorageReply::Done),
            Err(e) => StorageResult::Err(failed(&e)),
        }
    }

    /// Queues the save, then, with the turn to write cursor saves, writes every queued save
    /// (its own, unless a save before it took it) in one statement; see
    /// [`tributary_store_api::SaveQueue`].
    async fn save_cursor(&self, c: &CursorRecord) -> StorageResult {
        let answer = self.cursor_saves.push(c.clone());
        {
            let _turn = self.cursor_turn.lock().await;
            let batch = self.cursor_saves.take();
            if !batch.is_empty() {
                match self.pool.acquire().await {
                    Ok(mut conn) => {
                        let r = upsert_cursors(&mut conn, &batch.records()).await;
                        for one in batch.answer(&r) {
                            let r = upsert_cursors(&mut conn, &[one.record()]).await;
                            one.answer(r);
                        }
                    }
                    Err(e) => batch.fail(&StorageResult::Err(failed(&e))),
                }
            }
        }
        answer.outcome().await
    }
}

/// Upserts `records` in one autocommit statement (`UNNEST` of their columns).
async fn upsert_cursors(c: &mut PgConnection, records: &[&CursorRecord]) -> StorageResult {
    let r = sqlx::query(
        r#"INSERT INTO tributary_cursors (sub_id, consumer, partition, floor, acked)
           SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[])
           ON CONFLICT (sub_id, consumer, partition) DO UPDATE SET floor = EXCLUDED.floor, acked = EXCLUDED.acked"#,
    )
    .bind(records.iter().map(|c| i64_of(c.sub.0)).collect::<Vec<_>>())
    .bind(
        records
            .iter()
            .map(|c| c.consumer.as_ref().map_or("", |c| c.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|c| i32_of(c.partition))
            .collect::<Vec<_>>(),
    )
    .bind(records.iter().map(|c| i64_of(c.floor)).collect::<Vec<_>>())
    .bind(records.iter().map(|c| encode_acked(&c.acked)).collect::<Vec<_>>())
    .execute(c)
    .await;
    committed(r.map(|_| ()))
}
