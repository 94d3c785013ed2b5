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
    /// A publish to the message broker (`Output::Publish`) was confirmed or failed.
    PublishDone {
        /// The publish's id.
        op: OpId,
        /// What the broker said.
        result: PublishResult,
    },
}

/// The outcome of an `Output::Publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublishResult {
    /// The broker confirmed it (publisher confirm).
    Confirmed,
    /// It was refused, lost, or the connection is down: it is sent again.
    Failed(String),
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplayFrom {
    /// From this offset of every partition.
    Offset(u64),
    /// From the first event at or after this time.
    Time(UnixMillis),
    /// Events with `start <= timestamp < end`.
    TimeRange(UnixMillis, UnixMillis),
    /// From an offset per partition named (each at most once); the others from their first
    /// offset.
    Offsets(Vec<Position>),
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
    /// The schema version wanted per event type (default: the latest registered).
    #[serde(default)]
    pub schema_versions: std::collections::BTreeMap<String, u32>,
    /// Leave out events newer than the version asked for (instead of marking them).
    #[serde(default)]
    pub strict_versions: bool,
    /// Flow control: at most this many `Events` batches sent and not yet taken by the reader,
    /// as the driver reports with [`Command::ReplayCredit`]; at the window the replay pauses
    /// (it reads nothing more and reports no progress) until batches are taken, so a slow
    /// reader holds at most `window` batches. `None`: no window, the driver takes every batch
    /// as it comes and grants nothing (the replay goes at its rate). At least 1.
    #[serde(default)]
    pub window: Option<u32>,
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
    /// Every subscription of a stream with its positions and figures, by name. Refused with
    /// `StreamNotFound` for an unknown stream. Reply: `Subscriptions`.
    ListSubscriptions(StreamName),
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
    /// A replay with a `window`: the reader took `batches` more of its `Events` batches, so as
    /// many more may be sent (taken batches beyond those outstanding count for nothing). Reply:
    /// `Done`; `ReplayNotFound` when the replay is not running on this connection (it ended,
    /// was cancelled, or is another connection's). A replay without a window ignores it.
    ReplayCredit {
        /// The replay.
        replay: ReplayId,
        /// How many batches were taken.
        batches: u32,
    },
    /// ConsumerGroup: a member says it is alive (any command of the member also counts).
    /// Reply: `Assignment`, its current generation and partitions.
    Heartbeat {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The member.
        consumer: ConsumerId,
    },
    /// ConsumerGroup: commit positions (Kafka style: `offset` is the next offset to read, so
    /// every delivered event of the partition below it counts as processed). Empty
    /// `offsets`: commit what the member acknowledged on all of its partitions. Refused with
    /// `StaleGeneration` when `generation` is not the group's, and with `NotAssigned` for a
    /// partition the member does not own. Reply: `Committed` once durable.
    Commit {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The member.
        consumer: ConsumerId,
        /// The generation the member was given.
        generation: u64,
        /// Per partition, the next offset to read.
        offsets: Vec<Position>,
    },
    /// ReadReceipt: mark events read (which also acknowledges those still pending). Reply:
    /// `MarkedRead` once the receipts are durable.
    MarkRead {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer (attached on this connection).
        consumer: ConsumerId,
        /// Which events.
        read: MarkRead,
    },
    /// Register a version of an event type (SPEC 7), with its JSON Schema and the rules that
    /// upcast the version before to it. Refused unless it is the latest plus one and
    /// compatible (`SchemaIncompatible` names the field). Reply: `Done`.
    RegisterSchema(crate::schema::SchemaRegistration),
    /// Every event type with its versions. Reply: `Schemas`.
    ListSchemas,
    /// ReadReceipt: a consumer's unread count, last read offsets and, optionally, the receipt
    /// of one event (the consumer need not be attached). Reply: `ReceiptStatus`.
    ReceiptStatus {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
        /// The event whose receipt is wanted.
        position: Option<Position>,
    },
    // New variants go last: journals and the simulator's trace encode variants by index.
    /// Broadcast and read receipt subscriptions: remove one consumer's position (every
    /// partition) and its read receipts, for good, so that a consumer gone for good no longer
    /// counts (lag, health, retention's `keep_unconsumed`). Refused while the consumer is
    /// attached (`ConsumerAttached`), for subscriptions with one shared position, and for a
    /// consumer with no position (`ConsumerNotFound`). If it attaches again later it starts
    /// at the subscription's start like a new consumer. Reply: `Done` once removed from the
    /// store.
    RemoveConsumer {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
    },
}

/// What a consumer marks read (ReadReceipt subscriptions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MarkRead {
    /// These events.
    Positions(Vec<Position>),
    /// Every event of the partition delivered to the consumer, up to and including this offset.
    UpTo(Position),
}

/// The read receipt of one event for one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// When the consumer acknowledged receiving it (`Delivered(at)`).
    pub delivered_at: UnixMillis,
    /// When it marked it read (`Read(at)`).
    pub read_at: Option<UnixMillis>,
}

/// Where one consumer of a ReadReceipt subscription stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptStatus {
    /// Events delivered (acknowledged) and not read.
    pub unread: u64,
    /// Per partition, the highest offset read among the receipts kept.
    pub last_read: Vec<Option<u64>>,
    /// The receipt of the event asked about, if it has one.
    pub receipt: Option<Receipt>,
}

/// A consumer group member's share of the partitions in one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAssignment {
    /// The generation; commits must carry it.
    pub generation: u64,
    /// The member's partitions, ascending.
    pub partitions: Vec<u32>,
    /// Whether the consumer is (still) a member. `false`: its session timed out; attach again
    /// to rejoin.
    pub member: bool,
}

/// A consumer group as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The current generation (0 before anyone joined).
    pub generation: u64,
    /// The owner of each partition, by partition.
    pub owners: Vec<Option<ConsumerId>>,
    /// Per partition: acknowledged events not yet committed.
    pub uncommitted: Vec<u64>,
    /// Each member's partitions and figures.
    pub members: Vec<MemberInfo>,
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
    /// Cross-service streams: per partition, the relay position (every offset below it is
    /// confirmed by the broker).
    pub relay: Option<Vec<u64>>,
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
    /// Progress figures of this position (consumer, or the shared position).
    pub figures: LagFigures,
}

/// How far a reader is behind, for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LagFigures {
    /// Events between the ack floor and the head, summed over the partitions read.
    pub lag: u64,
    /// Age (by its timestamp) of the oldest event not acknowledged, if any is known.
    pub oldest_unacked_age: Option<Duration>,
    /// When an event was last acknowledged (or dead-lettered) in this engine's life.
    pub last_progress: Option<UnixMillis>,
}

impl LagFigures {
    /// The worst of two: the larger lag, the older unacknowledged event, the later progress.
    pub fn worst(self, other: LagFigures) -> LagFigures {
        LagFigures {
            lag: self.lag.max(other.lag),
            oldest_unacked_age: self.oldest_unacked_age.max(other.oldest_unacked_age),
            last_progress: self.last_progress.max(other.last_progress),
        }
    }
}

/// A consumer group member's share and figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member.
    pub consumer: ConsumerId,
    /// Its partitions.
    pub partitions: Vec<u32>,
    /// Its figures over its partitions.
    pub figures: LagFigures,
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
    /// ConsumerGroup: the group's generation and assignment.
    pub group: Option<GroupInfo>,
    /// The subscription's figures: the worst of its positions (the largest lag, the oldest
    /// unacknowledged event) and its latest progress.
    pub figures: LagFigures,
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
    Subscription(Box<SubscriptionInfo>),
    /// A stream's subscriptions, by name.
    Subscriptions(Vec<SubscriptionInfo>),
    /// What an ack, nack or term did with each position (acks: durable).
    Settled(Settlement),
    /// A replay started.
    ReplayStarted(ReplayId),
    /// ConsumerGroup: a member's current assignment.
    Assignment(GroupAssignment),
    /// ConsumerGroup: the committed positions (ack floors) of the partitions a commit named,
    /// durable.
    Committed(Vec<Position>),
    /// ReadReceipt: events marked read (durable); `ignored` counts events not delivered to the
    /// consumer or already read.
    MarkedRead {
        /// Events newly read.
        marked: u32,
        /// Events not delivered, or already read.
        ignored: u32,
    },
    /// ReadReceipt: where a consumer stands.
    ReceiptStatus(ReceiptStatus),
    /// The schema registry.
    Schemas(Vec<crate::schema::SchemaInfo>),
}

impl Reply {
    /// `Settled`: how many positions were applied and how many skipped.
    pub fn settled_counts(&self) -> Option<(usize, usize)> {
        match self {
            Reply::Settled(s) => Some((s.applied.len(), s.skipped.len())),
            _ => None,
        }
    }
}

/// What an ack, nack or term did with each position it named, in the order named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// Positions the command applied to.
    pub applied: Vec<Position>,
    /// Positions it left alone, and why.
    pub skipped: Vec<(Position, SkipReason)>,
}

/// Why an ack, nack or term left a position alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// Not delivered to the subscription yet (at or past its next offset).
    NotDelivered,
    /// Settled already: acknowledged, terminated, dead-lettered, or passed over by a reset.
    AlreadySettled,
    /// A nack of an event that is not in flight (it waits for its redelivery).
    NotInFlight,
    /// Being dead-lettered, or held back behind an event of the same key.
    Unavailable,
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
    /// A notice about one of this connection's consumers (e.g. an unread timeout).
    Notice {
        /// The consumer.
        consumer: ConsumerId,
        /// What happened.
        notice: Notice,
    },
    /// A consumer group member's new assignment (after a rebalance, or its removal).
    Assignment {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The member.
        consumer: ConsumerId,
        /// Its generation and partitions.
        assignment: GroupAssignment,
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
        /// The event's id (for logs).
        event_id: crate::ids::EventId,
        /// The event's correlation id (for logs).
        correlation_id: Option<String>,
    },
    /// An ephemeral stream dropped events to make room.
    Dropped {
        /// The stream.
        stream: StreamName,
        /// Events dropped.
        count: u64,
    },
    /// A consumer group rebalanced: a new generation.
    Rebalanced {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The new generation.
        generation: u64,
        /// Members now.
        members: u32,
        /// Partitions that changed owner.
        moved: u32,
    },
    /// A consumer group member was not heard from within its session timeout and left.
    SessionExpired {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The member.
        consumer: ConsumerId,
    },
    /// ReadReceipt: an event delivered to a consumer was not read within `unread_timeout`
    /// (once per delivery).
    UnreadTimeout {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
        /// The event.
        position: Position,
        /// Whether it is delivered again (`redeliver_unread`).
        redelivered: bool,
        /// The event's id and correlation id (for logs), when the engine still holds the
        /// event in memory.
        event: Option<(crate::ids::EventId, Option<String>)>,
    },
    /// A publish to the broker failed; the relay sends it again after `delay`.
    PublishFailed {
        /// The stream.
        stream: StreamName,
        /// The event.
        position: Position,
        /// Why.
        error: String,
        /// Before it is sent again.
        delay: Duration,
        /// The event's id and correlation id (for logs), when the engine still holds the
        /// event in memory.
        event: Option<(crate::ids::EventId, Option<String>)>,
    },
    /// Retention removed a prefix of a partition.
    Truncated {
        /// The stream.
        stream: StreamName,
        /// The partition.
        partition: u32,
        /// Its first offset now.
        first: u64,
        /// Events removed.
        removed: u64,
    },
    /// A storage request failed and will be tried again.
    StorageRetry {
        /// What for.
        what: &'static str,
        /// The failure.
        error: String,
    },
    /// A consumer's position (and its read receipts) was removed from a broadcast or read
    /// receipt subscription: by `RemoveConsumer`, or because it stayed detached longer than
    /// the subscription's `consumer_expiry`.
    ConsumerRemoved {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
        /// Removed by its expiry (not by a command).
        expired: bool,
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
    /// Tell a consumer group member its new assignment (after every rebalance, to every
    /// member; `member: false` to one whose session timed out).
    Assignment {
        /// Its connection.
        conn: ConnId,
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The member.
        consumer: ConsumerId,
        /// Its share.
        assignment: GroupAssignment,
    },
    /// Publish an event of a cross-service stream to the message broker, then complete it
    /// with `Input::PublishDone { op, .. }`. Per partition in offset order; an event is sent
    /// again after a failure or a restart (at least once).
    Publish {
        /// Its id.
        op: OpId,
        /// The stream.
        stream: StreamName,
        /// The event.
        event: Arc<Event>,
    },
    /// Tell an attached consumer something about its subscription (e.g. an unread timeout).
    ConsumerNotice {
        /// Its connection.
        conn: ConnId,
        /// The consumer.
        consumer: ConsumerId,
        /// What happened (a notice about this consumer).
        notice: Notice,
    },
    /// Tell the operator.
    Notice(Notice),
}
