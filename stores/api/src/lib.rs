//! # tributary-store-api
//!
//! The [`Store`] trait that executors drive, and the contract every store keeps. It names no
//! runtime and no database: a store returns a `Send` future, and the SQL stores' shared layer
//! lives in `tributary-store-sql`.
//!
//! ## The contract a store keeps (see `tributary_core::StorageRequest`)
//!
//! - Every request is carried out atomically: all of it or nothing.
//! - `StorageResult::Err` means nothing was written. When the outcome cannot be known (the
//!   connection dropped while the commit was in flight), the answer is `Unknown`, never a guess.
//! - Writes are idempotent when repeated with the same content: an `Append` of events already
//!   stored at those offsets with the same ids succeeds without writing; other events there
//!   are a `Conflict`, and nothing of the request is written.
//! - A pipelined append (`AppendWrite::after`) commits only once the append it names has
//!   committed; when that one did not commit, or did not finish within
//!   [`PREDECESSOR_TIMEOUT`], it fails (`Unavailable`) writing nothing.
//! - A cursor of a subscription that does not exist is `NotFound`.
//! - One engine owns a store's streams at a time.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod durability;

pub use durability::{BadDurability, Durability};

use std::future::Future;
use std::time::Duration;
use tributary_core::{StorageRequest, StorageResult};

/// Longest wait of a pipelined append for the one it follows (then it fails, writing nothing).
pub const PREDECESSOR_TIMEOUT: Duration = Duration::from_secs(30);

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
