//! SQLite's dialect of the SQL store: its connections (one writer, a pool of readers), the
//! statements that are its own, and the requests it writes its own way (appends as one
//! command to the writer's thread, receipts and cursor saves as multi-row `INSERT`s).

use crate::append_sql::{
    BATCHES_PER_INSERT, ROWS_PER_INSERT, at_once_script, batches_insert, bind_batches, bind_dedup,
    dedup_insert,
};
use crate::cursor_sql::{bind_cursors, upsert_sql};
use crate::{checkpoint, cursor_sql, single};
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteQueryResult};
use sqlx::{Connection as _, QueryBuilder, Sqlite, SqliteConnection};
use tributary_core::{
    AppendWrite, CursorRecord, DedupRecord, ReceiptRecord, StorageReply, StorageResult,
};
use tributary_store_sql::{
    Dialect, EventBatch, SqlBatches, SqlStore, batches, codec, committed, failed, i64_of,
};

/// SQLite's connections: one writer (SQLite has one writer at a time), readers beside it
/// (WAL lets them read while a write commits), and the checkpointer.
#[derive(Debug)]
pub(crate) struct SqliteSql {
    pub(crate) writer: single::SingleConnection,
    pub(crate) readers: SqlitePool,
    /// Copies the WAL into the database beside the writer (see `checkpoint.rs`).
    pub(crate) checkpointer: checkpoint::Checkpointer,
}

impl Dialect for SqliteSql {
    type DB = Sqlite;
    type Writer<'a> = single::Held<'a>;

    const CURSORS_PER_STATEMENT: usize = cursor_sql::MAX_ROWS;

    /// The partitions from a recursive CTE (the bundled SQLite has no `generate_series`).
    const INSERT_PARTITIONS: &'static str = r#"WITH RECURSIVE p(n) AS
       (SELECT 0 WHERE $2 > 0 UNION ALL SELECT n + 1 FROM p WHERE n + 1 < $2)
     INSERT INTO tributary_partitions (stream_id, partition) SELECT $1, n FROM p"#;

    const LOAD_DEDUP: &'static str = r#"SELECT partition, "offset", event_id, expires_at FROM tributary_dedup
       WHERE stream_id = $1 AND expires_at > $2 AND (partition, "offset") > ($3, $4)
       ORDER BY partition, "offset" LIMIT $5"#;

    const LOAD_RECEIPTS: &'static str = r#"SELECT sub_id, consumer, partition, "offset", delivered_at, read_at, timed_out FROM tributary_receipts
       WHERE sub_id = $1 AND (consumer, partition, "offset") > ($2, $3, $4)
       ORDER BY consumer, partition, "offset" LIMIT $5"#;

    const EXPIRE_RECEIPTS: &'static str = r#"DELETE FROM tributary_receipts WHERE (sub_id, consumer, partition, "offset") IN
       (SELECT sub_id, consumer, partition, "offset" FROM tributary_receipts
        WHERE sub_id = $1 AND max(delivered_at, coalesce(read_at, 0)) < $2 LIMIT $3)"#;

    /// SQLite compares text byte by byte (`BINARY`) unless told otherwise.
    const LOAD_SCHEMAS: &'static str = r#"SELECT event_type, version, schema, rules, function FROM tributary_schemas
       WHERE (event_type, version) > ($1, $2) ORDER BY event_type, version LIMIT $3"#;

    fn readers(&self) -> &SqlitePool {
        &self.readers
    }

    fn writer(&self) -> impl Future<Output = Result<single::Held<'_>, sqlx::Error>> + Send {
        self.writer.hold()
    }

    fn rows_affected(r: &SqliteQueryResult) -> u64 {
        r.rows_affected()
    }

    async fn append(store: &SqlStore<Self>, w: &AppendWrite) -> StorageResult {
        // Pipelined appends: one writer connection, so wait for the one before to finish
        // (it may need the connection), then go only if it committed. The batches are encoded
        // while it runs.
        let mut finish = store.chains().begin(&w.stream, w.seq);
        let batches = match batches(w.events.iter().map(|e| &**e)) {
            Ok(b) => b,
            Err(e) => return StorageResult::Err(codec(e)),
        };
        if let Err(e) = store.chains().wait_predecessor(w).await {
            return StorageResult::Err(e);
        }
        let sqlite = store.dialect();
        let (id, r) = {
            let mut c = match sqlite.writer.hold().await {
                Ok(c) => c,
                Err(e) => return StorageResult::Err(failed(&e)),
            };
            let id = match store.stream_id(&mut c, &w.stream).await {
                Ok(id) => id,
                Err(e) => return StorageResult::Err(e),
            };
            let r = match at_once_script(batches.len(), w.dedup.len()) {
                Some(script) => append_at_once(&mut c, script, id, batches, &w.dedup).await,
                None => append_in_steps(&mut c, id, batches, &w.dedup).await,
            };
            if r.is_ok() {
                sqlite.checkpointer.writers_checkpoint(&mut c).await;
            }
            (id, r)
            // The writer connection is given back here.
        };
        let r = match r {
            Ok(()) => StorageResult::Ok(StorageReply::Done),
            // Offsets taken: nothing was written; the stored events tell an identical repeat
            // of this write from a conflict.
            Err(e) if offsets_taken(&e) => match store.reader().await {
                Ok(mut c) => SqlBatches::<Sqlite>::repeat_or_conflict(&mut c, id, w).await,
                Err(e) => StorageResult::Err(e),
            },
            // Any other refusal wrote nothing; a failed connection leaves it unknown.
            Err(e) => committed(Err(e)),
        };
        if matches!(r, StorageResult::Ok(_)) {
            finish.committed();
            sqlite.checkpointer.kick();
        }
        r
    }

    /// Queues the save, then, holding the writer connection, writes every queued save (its
    /// own, unless a save before it took it).
    async fn save_cursor(store: &SqlStore<Self>, c: &CursorRecord) -> StorageResult {
        let answer = store.cursor_saves().push(c.clone());
        match store.dialect().writer.hold().await {
            Ok(mut conn) => {
                let batch = store.cursor_saves().take();
                store.write_cursors(&mut conn, batch).await;
            }
            Err(e) => store
                .cursor_saves()
                .take()
                .fail(&StorageResult::Err(failed(&e))),
        }
        answer.outcome().await
    }

    /// Upserts `records` (up to [`cursor_sql::MAX_ROWS`]) in one autocommit statement.
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

    /// Upserts receipts in one transaction, [`ROWS_PER_INSERT`] per statement.
    async fn save_receipts(c: &mut SqliteConnection, list: &[ReceiptRecord]) -> StorageResult {
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

    fn purge_later(store: &SqlStore<Self>, id: i64) {
        let store = store.clone();
        sqlx_core::rt::spawn(async move { store.purge(id).await });
    }
}

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
