//! # tributary-store-sql
//!
//! What the SQL stores (SQLite, PostgreSQL) share, over sqlx's `Database` and without an async
//! runtime of its own: the row codec (events, configurations and positions encoded the same
//! way), the record batches and their statements ([`SqlBatches`]), the order of pipelined
//! appends ([`WriteChains`]), cursor saves written together ([`SaveQueue`]), the mapping of
//! sqlx errors to the core's outcomes, and one store ([`SqlStore`]) that carries out every
//! request, given a [`Dialect`]: the connections, the SQL that differs and the requests each
//! database writes its own way (`tributary-store-sqlite`, `tributary-store-postgres`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod batch_sql;
mod chain;
mod codec;
mod records;
mod save_queue;
mod sql_errors;
mod store;

pub use batch::{BATCH_BYTES, EventBatch, batch, batches, decode_batch, retained_bytes};
pub use batch_sql::{RECOVER_HEADS, SqlBatches, UpgradeError};
pub use chain::{Finish, PredecessorFailed, WriteChains};
pub use codec::{
    CodecError, EventRow, decode_acked, decode_event, encode_acked, encode_headers, from_json,
    to_json,
};
pub use records::{
    CursorRow, HeadRow, RECOVER_CURSORS, RECOVER_RELAYS, RECOVER_SUBSCRIPTIONS, RelayRow,
    SchemaRow, SubscriptionRow, cursor_record, dedup_record, existing_stream, i32_of, i64_of,
    next_offset, partition_head, receipt_record, recovered, schema_columns, schema_record,
    subscription_record, u64_of,
};
pub use save_queue::{Answer, Batch, SaveQueue, Single};
pub use sql_errors::{codec, committed, failed};
pub use store::{Conn, DedupRow, Dialect, ReceiptRow, SqlStore};
pub use tributary_store_api::PREDECESSOR_TIMEOUT;

/// Rows removed per statement when a deleted stream's events are cleaned up, so that no
/// statement holds its locks for long.
pub const DELETE_BATCH: i64 = 10_000;
