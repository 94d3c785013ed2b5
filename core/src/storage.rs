//! What the core asks of a store, and what the store answers. A store carries out each
//! request and completes it with `Input::StorageDone { op, result }`, in any order.
//!
//! Every write is idempotent when repeated with the same content (the core repeats a write
//! whose outcome was `Unknown` until it gets a definite answer); `Append` in particular must
//! succeed when the very same events are already stored at those offsets, and fail with
//! `StorageError::Conflict` when other events are.

use crate::event::Event;
use crate::ids::{EventId, SubId};
use crate::names::{ConsumerId, StreamName};
use crate::schema::SchemaRecord;
use crate::stream_config::StreamConfig;
use crate::subscription_config::SubscriptionConfig;
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One id kept by the dedup window of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    /// The producer's event id.
    pub event_id: EventId,
    /// Where it was appended.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// When the id leaves the window.
    pub expires_at: UnixMillis,
}

/// The events and dedup ids of one append, written in one transaction.
///
/// Several appends of one stream may be in flight at once (pipelined). Each names the one
/// before it that was still in flight when it was sent (`after`); a store commits an append
/// only once `after` has committed, and if `after` did not commit (failed, or its outcome is
/// unknown) it fails without writing anything. So a failed write is never followed by a
/// committed one, and the offsets of a partition never have a hole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendWrite {
    /// The stream.
    pub stream: StreamName,
    /// This write's number in the stream's sequence of writes (unique per engine life: it
    /// starts at a random-looking epoch).
    pub seq: u64,
    /// The write of this stream that must commit before this one, if one was in flight.
    pub after: Option<u64>,
    /// Events with their offsets; per partition dense and in order.
    pub events: Vec<Arc<Event>>,
    /// Producer ids to keep for the dedup window.
    pub dedup: Vec<DedupRecord>,
}

/// The durable position of a subscription cursor in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRecord {
    /// The subscription.
    pub sub: SubId,
    /// Broadcast: the consumer this position belongs to. Exclusive: `None`.
    pub consumer: Option<ConsumerId>,
    /// The partition.
    pub partition: u32,
    /// The ack floor: the lowest offset not yet acknowledged.
    pub floor: u64,
    /// Offsets above the floor that are acknowledged, ascending.
    pub acked: Vec<u64>,
}

/// The read receipt of one (consumer, event) of a ReadReceipt subscription (SPEC 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    /// The subscription.
    pub sub: SubId,
    /// The consumer.
    pub consumer: ConsumerId,
    /// The event's partition.
    pub partition: u32,
    /// The event's offset.
    pub offset: u64,
    /// When the consumer acknowledged receiving it (the latest time, after a redelivery).
    pub delivered_at: UnixMillis,
    /// When it was first marked read.
    pub read_at: Option<UnixMillis>,
    /// The delivery (its `delivered_at`) whose unread timeout has fired, so that a restart
    /// does not fire it again.
    pub timed_out: Option<UnixMillis>,
}

/// The relay position of one partition of a cross-service stream: every event below `next`
/// was confirmed by the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRecord {
    /// The stream.
    pub stream: StreamName,
    /// The partition.
    pub partition: u32,
    /// The first offset not confirmed.
    pub next: u64,
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Its durable id.
    pub id: SubId,
    /// Its configuration.
    pub config: SubscriptionConfig,
    /// The start offset of each partition, resolved at creation.
    pub start_offsets: Vec<u64>,
}

/// What a store knows of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHead {
    /// The first offset still stored.
    pub first: u64,
    /// The offset the next event will get.
    pub next: u64,
    /// The timestamp of the last event (zero when empty).
    pub last_timestamp: UnixMillis,
}

/// A stream as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Its configuration.
    pub config: StreamConfig,
    /// One head per partition.
    pub heads: Vec<PartitionHead>,
}

/// Everything the core rebuilds its state from, except dedup ids, receipts and schemas
/// (loaded in pages).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecoveredState {
    /// Persistent streams.
    pub streams: Vec<StreamRecord>,
    /// Subscriptions of persistent streams.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Their cursors.
    pub cursors: Vec<CursorRecord>,
    /// Relay positions of cross-service streams.
    #[serde(default)]
    pub relays: Vec<RelayRecord>,
}

/// A request to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageRequest {
    /// Load streams, subscriptions and cursors. Answer: `Recovered`.
    Recover,
    /// Load dedup ids of a stream that expire after `live_at`, ordered by (partition, offset),
    /// after the position `after`, at most `limit`. Answer: `Dedup`.
    LoadDedup {
        /// The stream.
        stream: StreamName,
        /// Only ids whose expiry is later than this.
        live_at: UnixMillis,
        /// Resume after this (partition, offset).
        after: Option<(u32, u64)>,
        /// Page size.
        limit: u32,
    },
    /// Create a stream (idempotent for an identical configuration). Answer: `Done`.
    CreateStream(StreamConfig),
    /// Delete a stream with its events, dedup ids, subscriptions and cursors. Answer: `Done`.
    DeleteStream(StreamName),
    /// Append events and dedup ids atomically, after `after` (see [`AppendWrite`]). Answer:
    /// `Done`.
    Append(Arc<AppendWrite>),
    /// Read events of a partition from `from`, ascending, at most `max`. Answer: `Events`.
    Read {
        /// The stream.
        stream: StreamName,
        /// The partition.
        partition: u32,
        /// First offset wanted.
        from: u64,
        /// Most events.
        max: u32,
    },
    /// The first offset of a partition whose timestamp is at or after `at` (the partition's
    /// next offset if none). Answer: `Offset`.
    FindOffset {
        /// The stream.
        stream: StreamName,
        /// The partition.
        partition: u32,
        /// The time.
        at: UnixMillis,
    },
    /// Create or replace a subscription (idempotent). Answer: `Done`.
    SaveSubscription(SubscriptionRecord),
    /// Delete a subscription and its cursors. Answer: `Done`.
    DeleteSubscription(SubId),
    /// Upsert a cursor position; a store refuses it if the subscription is gone. Answer: `Done`.
    SaveCursor(CursorRecord),
    /// Upsert the relay position of a partition; `NotFound` if the stream is gone. Answer:
    /// `Done`.
    SaveRelay(RelayRecord),
    /// Upsert read receipts, all of one subscription, atomically; a store refuses them
    /// (`NotFound`, nothing written) if the subscription is gone. Merging, so that saves may
    /// be applied in any order and repeated: `delivered_at` becomes the later of the stored
    /// and the new value, `read_at` keeps the stored value if there is one, `timed_out` becomes
    /// the later of the two. Answer: `Done`.
    SaveReceipts(Vec<ReceiptRecord>),
    /// The lowest offset of a partition to keep so that the events from it to the head hold at
    /// most `max_bytes` bytes of payloads and keys (the partition's next offset if even the
    /// last event is larger; its first offset if everything fits). Answer: `Offset`.
    RetentionCut {
        /// The stream.
        stream: StreamName,
        /// The partition.
        partition: u32,
        /// The byte limit.
        max_bytes: u64,
    },
    /// Remove the events of a partition below `before` (a prefix), `DELETE_BATCH` rows per
    /// statement. The partition's first offset becomes at least `before` and its next offset
    /// and last timestamp do not go back, even when no event is left. Repeating it is
    /// harmless. Answer: `Done`.
    Truncate {
        /// The stream.
        stream: StreamName,
        /// The partition.
        partition: u32,
        /// The first offset kept.
        before: u64,
    },
    /// Remove a stream's dedup ids that expired at or before `at`, `DELETE_BATCH` rows per
    /// statement. Answer: `Done`.
    ExpireDedup {
        /// The stream.
        stream: StreamName,
        /// The time.
        at: UnixMillis,
    },
    /// Load receipts of a subscription ordered by (consumer, partition, offset), after
    /// `after`, at most `limit`. Answer: `Receipts`.
    LoadReceipts {
        /// The subscription.
        sub: SubId,
        /// Resume after this (consumer, partition, offset).
        after: Option<(ConsumerId, u32, u64)>,
        /// Page size.
        limit: u32,
    },
    /// Upsert registered schema versions (by event type and version; a repeat replaces the
    /// row with the same content). The engine sends every version of an event type not yet
    /// known saved, so the versions a store holds of a type are always 1..=n. Answer: `Done`.
    SaveSchemas(Vec<SchemaRecord>),
    /// Load schema versions ordered by (event type, version), after `after`, at most
    /// `limit`. Answer: `Schemas`.
    LoadSchemas {
        /// Resume after this (event type, version).
        after: Option<(String, u32)>,
        /// Page size.
        limit: u32,
    },
    /// Remove a subscription's receipts whose last change (`read_at`, else `delivered_at`) is
    /// before `before`, `DELETE_BATCH` rows per statement. Answer: `Done`.
    ExpireReceipts {
        /// The subscription.
        sub: SubId,
        /// The cutoff.
        before: UnixMillis,
    },
    /// Remove one consumer's cursor records (every partition) and read receipts of a
    /// subscription, atomically, so that neither comes back at recovery. Idempotent: `Done`
    /// whether or not any were stored, and when the subscription is gone. The engine sends it
    /// only once no save of that consumer's cursor or receipts is in flight, and sends none
    /// after it. Answer: `Done`.
    DeleteCursor {
        /// The subscription.
        sub: SubId,
        /// The consumer.
        consumer: ConsumerId,
    },
}

/// A store's answer to a request that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageReply {
    /// A write is committed.
    Done,
    /// The state to recover from.
    Recovered(RecoveredState),
    /// A page of dedup ids.
    Dedup(Vec<DedupRecord>),
    /// Events read.
    Events(Vec<Arc<Event>>),
    /// An offset found.
    Offset(u64),
    /// A page of read receipts.
    Receipts(Vec<ReceiptRecord>),
    /// A page of schema versions.
    Schemas(Vec<SchemaRecord>),
}

/// Why a store request failed. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageError {
    /// The store cannot be reached or failed; the message says why.
    Unavailable(String),
    /// Other data is where the write wanted to put its own (an append at taken offsets).
    Conflict(String),
    /// What the request names does not exist in the store.
    NotFound(String),
}

/// The outcome of a storage request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageResult {
    /// Done; here is the answer.
    Ok(StorageReply),
    /// Failed; nothing was written.
    Err(StorageError),
    /// The outcome cannot be known (the reply was lost): the write may or may not have happened.
    Unknown,
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Unavailable(m) => write!(f, "unavailable: {m}"),
            StorageError::Conflict(m) => write!(f, "conflict: {m}"),
            StorageError::NotFound(m) => write!(f, "not found: {m}"),
        }
    }
}
