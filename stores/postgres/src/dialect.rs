//! PostgreSQL's dialect of the SQL store: its connections (one pool), the statements that are
//! its own, and the requests it writes its own way (an append as one statement with its
//! notification, receipts and cursor saves as one `UNNEST` each).

use crate::append_sql::Columns;
use sqlx::postgres::{PgPool, PgQueryResult};
use sqlx::{PgConnection, Postgres, Row};
use tributary_core::{AppendWrite, CursorRecord, ReceiptRecord, StorageReply, StorageResult};
use tributary_store_sql::{
    Dialect, SqlBatches, SqlStore, committed, encode_acked, failed, i32_of, i64_of,
};

/// PostgreSQL's connections and settings.
#[derive(Debug)]
pub(crate) struct PgSql {
    pub(crate) pool: PgPool,
    /// Send a `pg_notify` after each append.
    pub(crate) notify: bool,
    /// The turn to write queued cursor saves: one statement of them at a time, while the
    /// next ones queue.
    pub(crate) cursor_turn: tokio::sync::Mutex<()>,
}

/// The most cursor saves written in one statement (see `tributary_store_sql::SaveQueue`).
const CURSORS_PER_STATEMENT: usize = 64;

impl Dialect for PgSql {
    type DB = Postgres;
    type Writer<'a> = sqlx::pool::PoolConnection<Postgres>;

    const CURSORS_PER_STATEMENT: usize = CURSORS_PER_STATEMENT;

    const INSERT_PARTITIONS: &'static str = "INSERT INTO tributary_partitions (stream_id, partition) SELECT $1, generate_series(0, $2 - 1)";

    const LOAD_DEDUP: &'static str = r#"SELECT partition, "offset", event_id, expires_at FROM tributary_dedup
       WHERE stream_id = $1 AND expires_at > $2 AND (partition, "offset") > ($3::int, $4::bigint)
       ORDER BY partition, "offset" LIMIT $5"#;

    const LOAD_RECEIPTS: &'static str = r#"SELECT sub_id, consumer, partition, "offset", delivered_at, read_at, timed_out FROM tributary_receipts
       WHERE sub_id = $1 AND (consumer, partition, "offset") > ($2::text, $3::int, $4::bigint)
       ORDER BY consumer, partition, "offset" LIMIT $5"#;

    const EXPIRE_RECEIPTS: &'static str = r#"DELETE FROM tributary_receipts WHERE (sub_id, consumer, partition, "offset") IN
       (SELECT sub_id, consumer, partition, "offset" FROM tributary_receipts
        WHERE sub_id = $1 AND GREATEST(delivered_at, COALESCE(read_at, 0)) < $2 LIMIT $3)"#;

    /// Byte order of the event types (`COLLATE "C"`), like the other stores, whatever the
    /// database's collation.
    const LOAD_SCHEMAS: &'static str = r#"SELECT event_type, version, schema, rules, function FROM tributary_schemas
       WHERE (event_type COLLATE "C", version) > ($1::text COLLATE "C", $2::bigint)
       ORDER BY event_type COLLATE "C", version LIMIT $3"#;

    fn readers(&self) -> &PgPool {
        &self.pool
    }

    fn writer(
        &self,
    ) -> impl Future<Output = Result<sqlx::pool::PoolConnection<Postgres>, sqlx::Error>> + Send
    {
        self.pool.acquire()
    }

    fn rows_affected(r: &PgQueryResult) -> u64 {
        r.rows_affected()
    }

    /// One append as one statement (one round trip, one implicit transaction): the record
    /// batches and the dedup ids as data-modifying CTEs, and the notification. When a batch
    /// would overlap a stored one nothing is written; the stored events there then tell an
    /// identical repeat (success) from a conflict.
    async fn append(store: &SqlStore<Self>, w: &AppendWrite) -> StorageResult {
        // Pipelined appends: a write is built and sent to the store while its predecessor is
        // in flight; its batches are encoded at once and it goes to the database as soon as
        // that one committed (never if it did not). The database thus runs one append of a
        // stream at a time, each one statement, while the engine gathers the next.
        let mut finish = store.chains().begin(&w.stream, w.seq);
        let columns = match Columns::of(w) {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(e),
        };
        if let Err(e) = store.chains().wait_predecessor(w).await {
            return StorageResult::Err(e);
        }
        let mut c = match store.reader().await {
            Ok(c) => c,
            Err(e) => return StorageResult::Err(e),
        };
        let id = match store.stream_id(&mut c, &w.stream).await {
            Ok(id) => id,
            Err(e) => return StorageResult::Err(e),
        };
        let r = columns
            .query(id, store.dialect().notify, w.stream.as_str())
            .fetch_one(&mut *c)
            .await
            .and_then(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?)));
        let result = match r {
            Ok((0, _)) => StorageResult::Ok(StorageReply::Done),
            // Stored batches overlap, or (a writer racing us) the same first offset was taken.
            Ok(_) => SqlBatches::<Postgres>::repeat_or_conflict(&mut c, id, w).await,
            Err(sqlx::Error::Database(db))
                if db.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                SqlBatches::<Postgres>::repeat_or_conflict(&mut c, id, w).await
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

    /// Queues the save, then, with the turn to write cursor saves, writes every queued save
    /// (its own, unless a save before it took it) in one statement.
    async fn save_cursor(store: &SqlStore<Self>, c: &CursorRecord) -> StorageResult {
        let answer = store.cursor_saves().push(c.clone());
        {
            let _turn = store.dialect().cursor_turn.lock().await;
            let batch = store.cursor_saves().take();
            if !batch.is_empty() {
                match store.dialect().pool.acquire().await {
                    Ok(mut conn) => store.write_cursors(&mut conn, batch).await,
                    Err(e) => batch.fail(&StorageResult::Err(failed(&e))),
                }
            }
        }
        answer.outcome().await
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

    /// Upserts receipts in one autocommit statement (`UNNEST`).
    async fn save_receipts(c: &mut PgConnection, list: &[ReceiptRecord]) -> StorageResult {
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
        )
        .execute(c)
        .await;
        committed(r.map(|_| ()))
    }

    fn purge_later(store: &SqlStore<Self>, id: i64) {
        let store = store.clone();
        sqlx_core::rt::spawn(async move { store.purge(id).await });
    }
}
