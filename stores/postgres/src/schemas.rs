//! The schema registry's requests (`SaveSchemas`, `LoadSchemas`) as SQL.

use crate::PgStore;
use tributary_core::{SchemaRecord, StorageError, StorageResult};
use tributary_store_sql::{SchemaRow, codec, committed, failed, schema_columns, schema_record};

impl PgStore {
    /// Upserts schema versions in one transaction.
    pub(crate) async fn save_schemas(&self, list: &[SchemaRecord]) -> StorageResult {
        let mut tx = match self.pool.begin().await {
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
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (event_type, version) DO UPDATE SET schema = EXCLUDED.schema,
                     rules = EXCLUDED.rules, function = EXCLUDED.function"#,
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

    /// A page of schema versions, ordered by (event type, version), byte order like the
    /// other stores.
    pub(crate) async fn load_schemas(
        &self,
        after: Option<(String, u32)>,
        limit: u32,
    ) -> Result<Vec<SchemaRecord>, StorageError> {
        let mut c = self.pool.acquire().await.map_err(|e| failed(&e))?;
        let (at, av) = after.map_or((String::new(), 0i64), |(t, v)| (t, i64::from(v)));
        let rows = sqlx::query_as::<_, SchemaRow>(
            r#"SELECT event_type, version, schema, rules, function FROM tributary_schemas
               WHERE (event_type COLLATE "C", version) > ($1::text COLLATE "C", $2::bigint)
               ORDER BY event_type COLLATE "C", version LIMIT $3"#,
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
