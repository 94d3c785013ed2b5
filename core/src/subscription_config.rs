//! How a subscription is configured (SPEC 3).

use crate::api::Position;
use crate::config::Config;
use crate::error::InvalidInput;
use crate::names::{StreamName, SubscriptionName};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a subscription shares events among its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionMode {
    /// Every consumer gets every event, each with its own position.
    Broadcast,
    /// Each event goes to exactly one attached consumer (competing consumers).
    Exclusive,
    /// Kafka style: the stream's partitions are shared out among the attached consumers (the
    /// group's members); a member reads its partitions in order. Membership is kept by
    /// heartbeat; every change of membership starts a new generation and a rebalance.
    ConsumerGroup,
    /// Like Broadcast, plus a receipt per (consumer, event): `Delivered(at)` when the consumer
    /// acknowledges it, `Read(at)` when it marks it read (SPEC 6).
    ReadReceipt,
}

/// When a consumer group's acknowledged positions are committed to the store (SPEC 3). A crash
/// delivers again at most the acknowledged but uncommitted part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitStrategy {
    /// Only on `Command::Commit` (and when a partition changes owner).
    Manual,
    /// After every ack (the ack's reply waits for the commit).
    AfterEach,
    /// When this many events of a partition were acknowledged since its last commit (and when
    /// it changes owner). A crash delivers again at most one batch per partition.
    AfterBatch(u32),
    /// At most this long after an acknowledgement (and when a partition changes owner). A crash
    /// delivers again at most what was acknowledged within one interval.
    Periodic(Duration),
}

impl Default for CommitStrategy {
    /// `AfterBatch(100)`.
    fn default() -> Self {
        CommitStrategy::AfterBatch(Config::default().default_commit_batch)
    }
}

fn default_heartbeat_interval() -> Duration {
    Config::default().default_heartbeat_interval
}

fn default_session_timeout() -> Duration {
    Config::default().default_session_timeout
}

fn default_receipt_ttl() -> Duration {
    Config::default().default_receipt_ttl
}

fn default_receipt_cleanup_interval() -> Duration {
    Config::default().default_receipt_cleanup_interval
}

impl SubscriptionMode {
    /// Whether all consumers share one position (Exclusive, ConsumerGroup) rather than each
    /// having its own (Broadcast).
    pub fn shared_position(self) -> bool {
        // Broadcast and ReadReceipt: one position per consumer.
        matches!(
            self,
            SubscriptionMode::Exclusive | SubscriptionMode::ConsumerGroup
        )
    }
}

/// Where a subscription (or a reset) starts, per partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartPosition {
    /// The first available offset.
    Beginning,
    /// The next offset to be appended.
    End,
    /// This offset (clamped to the partition's available range).
    Offset(u64),
    /// The first event with a timestamp at or after this time.
    Time(UnixMillis),
    /// An offset per partition named (clamped as `Offset`), each partition at most once. A
    /// new subscription starts the partitions not named at the beginning; a reset leaves them
    /// where they are.
    Offsets(Vec<Position>),
}

/// A subscription's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionConfig {
    /// The stream it reads.
    pub stream: StreamName,
    /// Its name, unique per stream.
    pub name: SubscriptionName,
    /// Broadcast or exclusive.
    pub mode: SubscriptionMode,
    /// Where it starts.
    pub start: StartPosition,
    /// Time an event may stay unacknowledged before it is redelivered.
    pub ack_wait: Duration,
    /// Deliveries before the next failure sends the event to `<stream>.dlq`.
    pub max_deliveries: u32,
    /// Exclusive only: never two events with the same key in flight at once.
    pub ordered_by_key: bool,
    /// ConsumerGroup: how often members are expected to heartbeat (10 s; told to clients, the
    /// core only enforces `session_timeout`).
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval: Duration,
    /// ConsumerGroup: a member not heard from for this long leaves the group (30 s).
    #[serde(default = "default_session_timeout")]
    pub session_timeout: Duration,
    /// ConsumerGroup: when acknowledged positions are committed (default `AfterBatch(100)`).
    #[serde(default)]
    pub commit: CommitStrategy,
    /// ReadReceipt: an event delivered (acknowledged) but not read within this produces an
    /// `UnreadTimeout` notice, once per delivery (`None`: never).
    #[serde(default)]
    pub unread_timeout: Option<Duration>,
    /// ReadReceipt: an unread timeout also delivers the event again.
    #[serde(default)]
    pub redeliver_unread: bool,
    /// ReadReceipt: receipts whose last change is older than this are removed (7 days).
    #[serde(default = "default_receipt_ttl")]
    pub receipt_ttl: Duration,
    /// ReadReceipt: how often old receipts are removed (1 h).
    #[serde(default = "default_receipt_cleanup_interval")]
    pub receipt_cleanup_interval: Duration,
    /// The schema version wanted per event type (default: the latest registered).
    #[serde(default)]
    pub schema_versions: std::collections::BTreeMap<String, u32>,
    /// Refuse (dead-letter) events newer than the version asked for, instead of delivering
    /// them marked with `x-schema-newer-than-requested`.
    #[serde(default)]
    pub strict_versions: bool,
    /// Broadcast and ReadReceipt: a consumer detached for longer than this loses its position
    /// and receipts, as by `Command::RemoveConsumer` (counted from its detach, or from the
    /// engine's start for a consumer not attached since). `None`: the engine's
    /// `default_consumer_expiry` (off unless set); zero: never, whatever the default.
    #[serde(default)]
    pub consumer_expiry: Option<Duration>,
}

/// The options a front-end (the server's configuration file, gRPC) was given for a new
/// subscription, each `None` when not given. [`SubscriptionConfig::from_options`] turns them
/// into a configuration with SPEC's defaults for the rest, and refuses an option that the
/// subscription's mode would ignore, so that nothing asked for is silently dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Where it starts (beginning).
    pub start: Option<StartPosition>,
    /// Ack wait (30 s).
    pub ack_wait: Option<Duration>,
    /// Deliveries before the dead letter stream (5).
    pub max_deliveries: Option<u32>,
    /// Exclusive only: one event per key in flight (`Some(false)` is the same as `None`).
    pub ordered_by_key: Option<bool>,
    /// ConsumerGroup only: how often members heartbeat (10 s).
    pub heartbeat_interval: Option<Duration>,
    /// ConsumerGroup only: a member not heard from for this long leaves (30 s).
    pub session_timeout: Option<Duration>,
    /// ConsumerGroup only: the commit strategy (after batches of 100).
    pub commit: Option<CommitStrategy>,
    /// ReadReceipt only: an event not read this long after delivery gives a notice.
    pub unread_timeout: Option<Duration>,
    /// ReadReceipt only: an unread timeout also delivers the event again
    /// (`Some(false)` is the same as `None`).
    pub redeliver_unread: Option<bool>,
    /// ReadReceipt only: receipts older than this are removed (7 days).
    pub receipt_ttl: Option<Duration>,
    /// ReadReceipt only: how often receipts are cleaned up (1 h).
    pub receipt_cleanup_interval: Option<Duration>,
    /// The schema version wanted per event type (the latest registered).
    pub schema_versions: std::collections::BTreeMap<String, u32>,
    /// Refuse (dead-letter) events newer than the version asked for.
    pub strict_versions: bool,
    /// Broadcast and ReadReceipt only: a consumer detached longer than this loses its
    /// position (zero: never; `None`: the engine's default).
    pub consumer_expiry: Option<Duration>,
}

impl SubscriptionConfig {
    /// A configuration from the options given, SPEC's defaults for the rest. Refused, naming
    /// the option: an option of another mode (`ordered_by_key` outside Exclusive, heartbeat,
    /// session and commit options outside ConsumerGroup, unread and receipt options outside
    /// ReadReceipt), and whatever [`SubscriptionConfig::validate`] refuses.
    pub fn from_options(
        stream: StreamName,
        name: SubscriptionName,
        mode: SubscriptionMode,
        o: SubscriptionOptions,
    ) -> Result<SubscriptionConfig, InvalidInput> {
        let only = |given: bool, field: &'static str, wanted: SubscriptionMode, reason| {
            if given && mode != wanted {
                Err(InvalidInput::Conflict { field, reason })
            } else {
                Ok(())
            }
        };
        use SubscriptionMode::{ConsumerGroup, Exclusive, ReadReceipt};
        let group = "only consumer-group subscriptions have it";
        let receipts = "only read-receipt subscriptions have it";
        only(
            o.ordered_by_key == Some(true),
            "ordered_by_key",
            Exclusive,
            "only exclusive subscriptions can be ordered by key",
        )?;
        only(
            o.heartbeat_interval.is_some(),
            "heartbeat_interval",
            ConsumerGroup,
            group,
        )?;
        only(
            o.session_timeout.is_some(),
            "session_timeout",
            ConsumerGroup,
            group,
        )?;
        only(o.commit.is_some(), "commit", ConsumerGroup, group)?;
        only(
            o.unread_timeout.is_some(),
            "unread_timeout",
            ReadReceipt,
            receipts,
        )?;
        only(
            o.redeliver_unread == Some(true),
            "redeliver_unread",
            ReadReceipt,
            receipts,
        )?;
        only(
            o.receipt_ttl.is_some(),
            "receipt_ttl",
            ReadReceipt,
            receipts,
        )?;
        only(
            o.receipt_cleanup_interval.is_some(),
            "receipt_cleanup_interval",
            ReadReceipt,
            receipts,
        )?;
        let mut c = SubscriptionConfig::new(stream, name, mode);
        c.start = o.start.unwrap_or(c.start);
        c.ack_wait = o.ack_wait.unwrap_or(c.ack_wait);
        c.max_deliveries = o.max_deliveries.unwrap_or(c.max_deliveries);
        c.ordered_by_key = o.ordered_by_key.unwrap_or(false);
        c.heartbeat_interval = o.heartbeat_interval.unwrap_or(c.heartbeat_interval);
        c.session_timeout = o.session_timeout.unwrap_or(c.session_timeout);
        c.commit = o.commit.unwrap_or(c.commit);
        c.unread_timeout = o.unread_timeout;
        c.redeliver_unread = o.redeliver_unread.unwrap_or(false);
        c.receipt_ttl = o.receipt_ttl.unwrap_or(c.receipt_ttl);
        c.receipt_cleanup_interval = o
            .receipt_cleanup_interval
            .unwrap_or(c.receipt_cleanup_interval);
        c.schema_versions = o.schema_versions;
        c.strict_versions = o.strict_versions;
        c.consumer_expiry = o.consumer_expiry;
        c.validate()?;
        Ok(c)
    }

    /// A subscription with SPEC's defaults.
    pub fn new(stream: StreamName, name: SubscriptionName, mode: SubscriptionMode) -> Self {
        let d = Config::default();
        SubscriptionConfig {
            stream,
            name,
            mode,
            start: StartPosition::Beginning,
            ack_wait: d.default_ack_wait,
            max_deliveries: d.default_max_deliveries,
            ordered_by_key: false,
            heartbeat_interval: d.default_heartbeat_interval,
            session_timeout: d.default_session_timeout,
            commit: CommitStrategy::default(),
            unread_timeout: None,
            redeliver_unread: false,
            receipt_ttl: d.default_receipt_ttl,
            receipt_cleanup_interval: d.default_receipt_cleanup_interval,
            schema_versions: Default::default(),
            strict_versions: false,
            consumer_expiry: None,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.ack_wait.is_zero() {
            return Err(InvalidInput::Range {
                field: "ack_wait (ms)",
                value: 0,
                min: 1,
                max: u64::MAX,
            });
        }
        if self.max_deliveries == 0 {
            return Err(InvalidInput::Range {
                field: "max_deliveries",
                value: 0,
                min: 1,
                max: u32::MAX as u64,
            });
        }
        if self.ordered_by_key && self.mode != SubscriptionMode::Exclusive {
            return Err(InvalidInput::Conflict {
                field: "ordered_by_key",
                reason: "only exclusive subscriptions can be ordered by key",
            });
        }
        if self.session_timeout.is_zero() {
            return Err(InvalidInput::Range {
                field: "session_timeout (ms)",
                value: 0,
                min: 1,
                max: u64::MAX,
            });
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.session_timeout {
            return Err(InvalidInput::Range {
                field: "heartbeat_interval (ms)",
                value: self.heartbeat_interval.as_millis() as u64,
                min: 1,
                max: (self.session_timeout.as_millis() as u64).saturating_sub(1),
            });
        }
        let zero = [
            ("receipt_ttl (ms)", self.receipt_ttl.is_zero()),
            (
                "receipt_cleanup_interval (ms)",
                self.receipt_cleanup_interval.is_zero(),
            ),
            (
                "unread_timeout (ms)",
                self.unread_timeout.is_some_and(|d| d.is_zero()),
            ),
        ];
        if let Some((field, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(InvalidInput::Range {
                field,
                value: 0,
                min: 1,
                max: u64::MAX,
            });
        }
        if let Some((_, &v)) = self.schema_versions.iter().find(|(_, v)| **v == 0) {
            return Err(InvalidInput::Range {
                field: "schema_versions (a version)",
                value: v.into(),
                min: 1,
                max: u32::MAX as u64,
            });
        }
        if self.consumer_expiry.is_some() && self.mode.shared_position() {
            return Err(InvalidInput::Conflict {
                field: "consumer_expiry",
                reason: "only broadcast and read receipt subscriptions keep a position per consumer",
            });
        }
        if self.redeliver_unread && self.unread_timeout.is_none() {
            return Err(InvalidInput::Conflict {
                field: "redeliver_unread",
                reason: "needs an unread_timeout",
            });
        }
        match self.commit {
            CommitStrategy::AfterBatch(0) => Err(InvalidInput::Range {
                field: "commit.after_batch",
                value: 0,
                min: 1,
                max: u32::MAX as u64,
            }),
            CommitStrategy::Periodic(d) if d.is_zero() => Err(InvalidInput::Range {
                field: "commit.periodic (ms)",
                value: 0,
                min: 1,
                max: u64::MAX,
            }),
            _ => Ok(()),
        }
    }
}
