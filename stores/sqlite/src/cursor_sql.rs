//! The SQL of cursor saves written together (see [`tributary_store_sql::SaveQueue`]): one
//! upsert of up to [`MAX_ROWS`] cursor records, a statement text per row count, built once.

use sqlx::Arguments;
use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteArguments;
use std::sync::OnceLock;
use tributary_core::CursorRecord;
use tributary_store_sql::{encode_acked, i64_of};

/// The most cursor records in one statement (and the number of statement shapes kept).
pub(crate) const MAX_ROWS: usize = 8;

/// The upsert of `rows` cursor records (1 to [`MAX_ROWS`]).
pub(crate) fn upsert_sql(rows: usize) -> &'static str {
    static TEXTS: [OnceLock<String>; MAX_ROWS] = [const { OnceLock::new() }; MAX_ROWS];
    let rows = rows.clamp(1, MAX_ROWS);
    TEXTS[rows - 1].get_or_init(|| {
        let values = vec!["(?, ?, ?, ?, ?)"; rows].join(", ");
        format!(
            r#"INSERT INTO tributary_cursors (sub_id, consumer, partition, floor, acked) VALUES {values}
               ON CONFLICT (sub_id, consumer, partition) DO UPDATE SET floor = excluded.floor, acked = excluded.acked"#
        )
    })
}

/// Binds `records` for [`upsert_sql`].
pub(crate) fn bind_cursors<'a>(
    args: &mut SqliteArguments,
    records: impl Iterator<Item = &'a CursorRecord>,
) -> Result<(), BoxDynError> {
    for c in records {
        args.add(i64_of(c.sub.0))?;
        args.add(c.consumer.as_ref().map_or(String::new(), |c| c.to_string()))?;
        args.add(i64::from(c.partition))?;
        args.add(i64_of(c.floor))?;
        args.add(encode_acked(&c.acked))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::SubId;

    fn rec(partition: u32) -> CursorRecord {
        CursorRecord {
            sub: SubId(1),
            consumer: None,
            partition,
            floor: 5,
            acked: vec![7],
        }
    }

    #[test]
    fn each_shape_has_one_placeholder_per_bound_value() {
        for rows in 1..=MAX_ROWS {
            let mut args = SqliteArguments::default();
            let recs: Vec<_> = (0..rows as u32).map(rec).collect();
            bind_cursors(&mut args, recs.iter()).expect("binds");
            assert_eq!(upsert_sql(rows).matches('?').count(), args.len());
        }
    }
}
