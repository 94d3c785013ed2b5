//! The engine's inputs and outputs: client commands and replies, deliveries, notices.

use crate::error::Error;
use crate::event::{Event, NewEvent};
use crate::ids::{ConnId, OpId, ReplayId, ReqId};
use crate::names::{ConsumerId, StreamName, SubscriptionName};
use crate::storage::{StorageRequest, StorageResult};
use crate::stream_config::StreamConfig;
use crate::subscription_config::{StartPosition, SubscriptionConfig};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Something that happened outside the core, handed to `Engine::handle_input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// A client's command on a connection.
    Client {
        /// The connection.
        conn: ConnId,
        /// The request id its reply will repeat.
        req: ReqId,
        /// What the client asks.
        cmd: Command,
    },
    /// A connection closed: its consumers detach and its replays stop.
    ConnClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A storage request completed.
    StorageDone {
        /// The request's id.
        op: OpId,
        /// What happened.
        result: StorageResult,
    },
    /// Time passed: fire whatever timers are due.
    Tick,
}

/// Where an append's first event is expected to land (optimistic concurrency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    /// The stream.
    pub stream: StreamName,
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// The offset the first event is expected to get. The whole batch must then map to one
    /// partition.
    pub expected_offset: Option<u64>,
}

/// A position in a stream: a partition and an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: u64,
}

/// Where a replay starts and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplayFrom {
    /// From this offset of every partition.
    Offset(u64),
    /// From the first event at or after this time.
    Time(UnixMillis),
    /// Events with `start <= timestamp < end`.
    TimeRange(UnixMillis, UnixMillis),
}

/// Options of a replay.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplayOptions {
    /// Events per batch sent (default 100).
    pub batch_size: Option<u32>,
    /// Stop after this many events.
    pub max_events: Option<u64>,
    /// Token-bucket rate limit (capacity = rate), on the core's clock.
    pub max_events_per_second: Option<u32>,
    /// Only these event types (empty: all).
    pub event_types: Vec<String>,
    /// How often progress is reported (default 1 s).
    pub progress_interval: Option<Duration>,
    /// Start at the first available offset instead of answering `Truncated` when the asked
    /// offset was removed.
    pub from_first_available: bool,
}

/// What a client asks of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create a stream. Reply: `Done`.
    CreateStream(StreamConfig),
    /// Delete a stream, its subscriptions and its events. Reply: `Done`.
    DeleteStream(StreamName),
    /// Describe one stream. Reply: `Stream`.
    DescribeStream(StreamName),
    /// List all streams. Reply: `Streams`.
    ListStreams,
    /// Append events. Reply: `Appended`.
    Append(AppendRequest),
    /// Read a page of a partition. Reply: `Events`.
    Read {
        /// The stream.
        stream: StreamName,
        /// The partition.
        partition: u32,
        /// First offset.
        from: u64,
        /// Most events.
        max: u32,
    },
    /// Create a subscription. Reply: `Done`.
    CreateSubscription(SubscriptionConfig),
    /// Delete a subscription. Reply: `Done`.
    DeleteSubscription {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
    },
    /// Describe a subscription with its positions. Reply: `Subscription`.
    DescribeSubscription {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
    },
    /// Attach a consumer on this connection. Reply: `Done`; deliveries follow.
    Attach {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
        /// Events in flight at most (default from config).
        max_in_flight: Option<u32>,
    },
    /// Detach a consumer. Reply: `Done`.
    Detach {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
    },
    /// Acknowledge delivered events. Reply: `Acked` once the new position is durable.
    Ack {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
        /// What it acknowledges.
        positions: Vec<Position>,
    },
    /// Refuse delivered events: redeliver after `delay` (or the back-off). Reply: `Done`.
    Nack {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
        /// What it refuses.
        positions: Vec<Position>,
        /// Redelivery delay; `None`: exponential back-off.
        delay: Option<Duration>,
        /// Why (kept as `x-last-error` if the event is dead-lettered).
        error: String,
    },
    /// Send delivered events to the dead letter stream now. Reply: `Done`.
    Term {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
        /// What it terminates.
        positions: Vec<Position>,
        /// Why.
        reason: String,
    },
    /// Move a subscription (or one broadcast consumer) to a new position. Reply: `Done`.
    ResetSubscription {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// Broadcast: only this consumer (`None`: all of them).
        consumer: Option<ConsumerId>,
        /// Where to.
        to: StartPosition,
    },
    /// Start a replay. Reply: `ReplayStarted`; `Output::Replay` items follow.
    Replay {
        /// The stream.
        stream: StreamName,
        /// Where from.
        from: ReplayFrom,
        /// How.
        options: ReplayOptions,
    },
    /// Stop a replay. Reply: `Done`.
    CancelReplay(ReplayId),
}

/// Where a stream stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Its configuration.
    pub config: StreamConfig,
    /// Per partition: first available offset, next offset.
    pub partitions: Vec<PartitionInfo>,
    /// Number of subscriptions.
    pub subscriptions: usize,
}

impl StreamInfo {
    /// Events held, summed over partitions.
    pub fn length(&self) -> u64 {
        self.partitions.iter().map(|p| p.next - p.first).sum()
    }
}

/// Where one partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// First available offset.
    pub first: u64,
    /// Next offset to be appended.
    pub next: u64,
}

/// The outcome of one event of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// Written here.
    Appended(Position),
    /// Its `event_id` was appended within the dedup window; nothing written.
    Duplicate {
        /// Where the original is.
        original: Position,
    },
}

/// Where one cursor of a subscription stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorInfo {
    /// Broadcast: whose cursor. Exclusive: `None`.
    pub consumer: Option<ConsumerId>,
    /// Per partition: ack floor (committed position).
    pub floors: Vec<u64>,
    /// Per partition: next offset to deliver fresh.
    pub next: Vec<u64>,
    /// Events delivered and not yet acknowledged, or waiting for redelivery.
    pub pending: u64,
}

/// A subscription and its positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// Its configuration.
    pub config: SubscriptionConfig,
    /// Its cursors.
    pub cursors: Vec<CursorInfo>,
    /// Consumers attached now.
    pub attached: Vec<ConsumerId>,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Done.
    Done,
    /// A stream.
    Stream(StreamInfo),
    /// All streams, by name.
    Streams(Vec<StreamInfo>),
    /// One outcome per event, in the order sent.
    Appended(Vec<AppendOutcome>),
    /// A page of events, ascending.
    Events(Vec<Arc<Event>>),
    /// A subscription.
    Subscription(SubscriptionInfo),
    /// Acks taken (durable); `ignored` counts positions that were not pending.
    Acked {
        /// Positions acknowledged.
        acked: u32,
        /// Positions not pending (already acked, or never delivered).
        ignored: u32,
    },
    /// A replay started.
    ReplayStarted(ReplayId),
}

/// One event delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    /// The event.
    pub event: Arc<Event>,
    /// 1 for the first delivery, then 2, 3, ...
    pub attempt: u32,
}

/// What a replay sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayItem {
    /// A batch of events.
    Events(Vec<Arc<Event>>),
    /// Progress.
    Progress {
        /// Events sent so far.
        done: u64,
        /// Events per second since the start.
        rate: u64,
        /// Estimated events left (before filters).
        remaining: u64,
        /// Estimated time left, at the current rate.
        eta: Duration,
    },
    /// Finished: everything asked for was sent.
    Done {
        /// Events sent.
        total: u64,
    },
    /// Stopped by an error.
    Failed(Error),
}

/// What a driver forwards to a client connection besides the replies to its commands: the
/// `Deliver` and `Replay` outputs, without the connection they name.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnEvent {
    /// Events for an attached consumer.
    Deliver {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
        /// The events.
        events: Vec<Delivered>,
    },
    /// An item of a replay this connection started.
    Replay {
        /// The replay.
        replay: ReplayId,
        /// The item.
        item: ReplayItem,
    },
}

/// Something the engine tells the driver or the operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// The engine finished rebuilding its state from the store.
    Recovered {
        /// Streams recovered.
        streams: usize,
        /// Subscriptions recovered.
        subscriptions: usize,
    },
    /// An event went to the dead letter stream.
    DeadLettered {
        /// The source stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// Where the event was.
        position: Position,
        /// Deliveries made.
        deliveries: u32,
    },
    /// An ephemeral stream dropped events to make room.
    Dropped {
        /// The stream.
        stream: StreamName,
        /// Events dropped.
        count: u64,
    },
    /// A storage request failed and will be tried again.
    StorageRetry {
        /// What for.
        what: &'static str,
        /// The failure.
        error: String,
    },
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Carry out a storage request, then complete it with `Input::StorageDone { op, .. }`.
    Storage {
        /// Its id.
        op: OpId,
        /// The request.
        req: StorageRequest,
    },
    /// Answer a client request.
    Reply {
        /// The connection.
        conn: ConnId,
        /// The request answered.
        req: ReqId,
        /// The answer.
        reply: Result<Reply, Error>,
    },
    /// Send events to an attached consumer.
    Deliver {
        /// Its connection.
        conn: ConnId,
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
        /// The events.
        events: Vec<Delivered>,
    },
    /// Send replay items.
    Replay {
        /// The connection.
        conn: ConnId,
        /// The replay.
        replay: ReplayId,
        /// The item.
        item: ReplayItem,
    },
    /// Tell the operator.
    Notice(Notice),
}
