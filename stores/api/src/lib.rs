//! # tributary-store-api
//!
//! What every store shares: the [`Store`] trait that executors drive (runtime-neutral: it
//! returns a `Send` future and names no runtime), and the row codec of the SQL stores, so that
//! SQLite and PostgreSQL encode events, configurations and positions the same way.
//!
//! ## The contract a store keeps (see `tributary_core::StorageRequest`)
//!
//! - Every request is carried out atomically: all of it or nothing.
//! - `StorageResult::Err` means nothing was written. When the outcome cannot be known (the
//!   connection dropped while the commit was in flight), the answer is `Unknown`, never a guess.
//! - Writes are idempotent when repeated with the same content: an `Append` of events already
//!   stored at those offsets with the same ids succeeds without writing; other events there
//!   are a `Conflict`, and nothing of the request is written.
//! - A cursor of a subscription that does not exist is `NotFound`.
//! - One engine owns a store's streams at a time.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod batch_sql;
mod chain;
mod codec;
mod durability;
mod records;
mod save_queue;
mod sql_errors;

pub use batch::{BATCH_BYTES, EventBatch, batch, batches, decode_batch, retained_bytes};
pub use batch_sql::{RECOVER_HEADS, SqlBatches, UpgradeError};
pub use chain::{Finish, PredecessorFailed, WriteChains};
pub use codec::{
    CodecError, EventRow, decode_acked, decode_event, encode_acked, encode_headers, from_json,
    to_json,
};
pub use durability::{BadDurability, Durability};
pub use records::{
    CursorRow, HeadRow, RECOVER_CURSORS, RECOVER_RELAYS, RECOVER_SUBSCRIPTIONS, RelayRow,
    SchemaRow, SubscriptionRow, cursor_record, dedup_record, existing_stream, i32_of, i64_of,
    next_offset, partition_head, receipt_record, recovered, schema_columns, schema_record,
    subscription_record, u64_of,
};
pub use save_queue::{Answer, Batch, SaveQueue, Single};
pub use sql_errors::{codec, committed, failed};

use std::future::Future;
use std::time::Duration;
use tributary_core::{StorageRequest, StorageResult};

/// Longest wait of a pipelined append for the one it follows (then it fails, writing nothing).
pub const PREDECESSOR_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows removed per statement when a deleted stream's events are cleaned up, so that no
/// statement holds its locks for long.
pub const DELETE_BATCH: i64 = 10_000;

/// A store: carries out the core's storage requests. Requests may run concurrently; the core
/// never sends two that conflict (one append in flight per stream, one save per cursor).
pub trait Store: Send + Sync + 'static {
    /// Carries out one request. Never panics on bad data or a lost connection: it answers
    /// `Err` (nothing written) or `Unknown` (maybe written).
    fn execute(&self, req: StorageRequest) -> impl Future<Output = StorageResult> + Send;

    /// How many appends of one stream this store does best with in flight at once (a driver
    /// sets the engine's `max_append_writes_in_flight` from it unless configured otherwise):
    /// two overlap one commit with the gathering and encoding of the next write.
    fn writes_in_flight(&self) -> usize {
        2
    }
}
