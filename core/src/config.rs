//! Every limit and default of SPEC, in one place. The engine checks them all.

use crate::error::InvalidInput;
use crate::stream_config::RetentionPolicy;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The part of the day (UTC) in which retention may run. `start > end` wraps past midnight
/// (e.g. 22:00 to 04:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupWindow {
    /// Start, seconds after midnight UTC (inclusive).
    pub start: u32,
    /// End, seconds after midnight UTC (exclusive).
    pub end: u32,
}

/// Seconds in a day.
const DAY_SECS: u64 = 86_400;

impl CleanupWindow {
    /// Checks both ends are times of day and differ.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        for (field, v) in [
            ("cleanup_window.start", self.start),
            ("cleanup_window.end", self.end),
        ] {
            if u64::from(v) >= DAY_SECS {
                return Err(InvalidInput::Range {
                    field,
                    value: v.into(),
                    min: 0,
                    max: DAY_SECS - 1,
                });
            }
        }
        if self.start == self.end {
            return Err(InvalidInput::Conflict {
                field: "cleanup_window",
                reason: "start and end are equal: an empty window",
            });
        }
        Ok(())
    }

    /// How long from `wall` (Unix milliseconds) until the window is open: zero inside it.
    pub fn wait_from(&self, wall_ms: u64) -> Duration {
        let day_ms = DAY_SECS * 1000;
        let t = wall_ms % day_ms;
        let (s, e) = (u64::from(self.start) * 1000, u64::from(self.end) * 1000);
        let inside = if s < e {
            s <= t && t < e
        } else {
            t >= s || t < e
        };
        if inside {
            Duration::ZERO
        } else {
            Duration::from_millis((s + day_ms - t) % day_ms)
        }
    }
}

/// Limits and defaults of an engine. `Config::default()` holds SPEC's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Largest payload of one event, bytes (SPEC 1: 1 MiB).
    pub max_payload_bytes: usize,
    /// Longest event type, bytes (256).
    pub max_event_type_bytes: usize,
    /// Longest key, bytes (1 KiB).
    pub max_key_bytes: usize,
    /// Longest correlation or causation id, bytes (256).
    pub max_correlation_bytes: usize,
    /// Longest content type, bytes (256).
    pub max_content_type_bytes: usize,
    /// Most header entries per event (64).
    pub max_headers: usize,
    /// Largest total of header names and values per event, bytes (16 KiB).
    pub max_headers_bytes: usize,
    /// Most events in one append (1,000).
    pub max_batch_events: usize,
    /// Largest append, bytes of payloads, keys and headers (4 MiB).
    pub max_batch_bytes: usize,
    /// Most streams in one engine.
    pub max_streams: usize,
    /// Most partitions of one stream.
    pub max_partitions: u32,
    /// Most subscriptions in one engine.
    pub max_subscriptions: usize,
    /// Most consumers known to one subscription (attached, or with a broadcast position).
    pub max_consumers_per_subscription: usize,
    /// Default dedup window of new streams (10 min; zero turns dedup off).
    pub default_dedup_window: Duration,
    /// Most event ids held in one stream's dedup window; past it appends with ids get `Busy`.
    pub max_dedup_ids_per_stream: usize,
    /// Most client events waiting for a stream's write in flight (group commit queue).
    pub max_pending_append_events: usize,
    /// Most events written to the store in one append request.
    pub max_write_events: usize,
    /// Append writes of one stream in flight at once (pipelined; each commits after the one
    /// before it). 2: while one commits, the next gathers appends (fastest measured on
    /// PostgreSQL with many producers, see BENCHMARKS.md).
    pub max_append_writes_in_flight: usize,
    /// Group commit: after a write of N appends, how long the next write may wait for N
    /// appends to be queued again (zero: never wait). 1 ms.
    pub append_linger: Duration,
    /// Events of each partition of a persistent stream kept in memory for delivery.
    pub tail_cache_events: usize,
    /// Events read from the store at once for a subscription or a page.
    pub read_batch_events: usize,
    /// Default ack wait (30 s).
    pub default_ack_wait: Duration,
    /// Default deliveries before the dead letter stream (5).
    pub default_max_deliveries: u32,
    /// Default heartbeat interval of consumer groups (10 s).
    pub default_heartbeat_interval: Duration,
    /// Default session timeout of consumer groups (30 s).
    pub default_session_timeout: Duration,
    /// Default batch of the `AfterBatch` commit strategy (100).
    pub default_commit_batch: u32,
    /// Default time read receipts are kept after their last change (7 days).
    pub default_receipt_ttl: Duration,
    /// Default interval of the receipt cleanup (1 h).
    pub default_receipt_cleanup_interval: Duration,
    /// Broadcast and ReadReceipt subscriptions whose `consumer_expiry` is unset: a consumer
    /// detached for longer than this loses its position and receipts (`None`: never).
    pub default_consumer_expiry: Option<Duration>,
    /// Most read receipts held per consumer of a ReadReceipt subscription. At the limit the
    /// oldest read receipts are forgotten first; when every receipt is unread, acks and marks
    /// that would add one are refused with `Busy`.
    pub max_receipts_per_consumer: usize,
    /// Retention of persistent streams whose configuration names none (default: keep all).
    pub default_retention: RetentionPolicy,
    /// Retention of dead letter streams (`<stream>.dlq`) whose configuration names none
    /// (default: 14 days).
    pub dead_letter_retention: RetentionPolicy,
    /// How often retention and the removal of expired dedup ids run (1 h).
    pub cleanup_interval: Duration,
    /// When set, retention runs only inside this UTC window of the day.
    pub cleanup_window: Option<CleanupWindow>,
    /// Most event types in the schema registry.
    pub max_schema_types: usize,
    /// Most versions of one event type.
    pub max_schema_versions: usize,
    /// Most rules of one upcaster.
    pub max_upcaster_rules: usize,
    /// Largest JSON Schema, bytes.
    pub max_schema_bytes: usize,
    /// Whether a broker publisher carries out the relay (a server with AMQP configured; the
    /// simulator and embedders that handle `Output::Publish`). Without one, creating a
    /// cross-service stream is refused rather than accepted with nothing ever leaving (true).
    pub relay_enabled: bool,
    /// Most publishes of one cross-service stream waiting for the broker's confirm (100).
    pub relay_window: usize,
    /// First back-off after a failed publish (100 ms; doubles per failure in a row).
    pub relay_retry_base: Duration,
    /// Longest back-off after failed publishes (30 s).
    pub relay_retry_max: Duration,
    /// Default events in flight per consumer (1,000).
    pub default_max_in_flight: u32,
    /// Most unacknowledged events (delivered or waiting for redelivery) per subscription cursor
    /// and partition: the window between the ack floor and the next fresh offset.
    pub max_ack_pending: u64,
    /// First back-off step of a nack without delay (1 s; doubles per attempt).
    pub backoff_base: Duration,
    /// Longest back-off (5 min).
    pub backoff_max: Duration,
    /// Default replay batch size (100).
    pub default_replay_batch: u32,
    /// Default replay progress interval (1 s).
    pub default_progress_interval: Duration,
    /// Most replays running at once.
    pub max_replays: usize,
    /// Most storage operations outstanding at once.
    pub max_storage_ops: usize,
    /// Most client commands held while the engine recovers.
    pub max_queued_commands: usize,
    /// Most events returned by one read.
    pub max_read_events: u32,
    /// Back-off before a failed background storage request is tried again (first step).
    pub storage_retry_base: Duration,
    /// Longest such back-off.
    pub storage_retry_max: Duration,
    /// Dedup ids loaded per storage request during recovery.
    pub recovery_page: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_payload_bytes: 1 << 20,
            max_event_type_bytes: 256,
            max_key_bytes: 1024,
            max_correlation_bytes: 256,
            max_content_type_bytes: 256,
            max_headers: 64,
            max_headers_bytes: 16 << 10,
            max_batch_events: 1000,
            max_batch_bytes: 4 << 20,
            max_streams: 10_000,
            max_partitions: 1024,
            max_subscriptions: 10_000,
            max_consumers_per_subscription: 1024,
            default_dedup_window: Duration::from_secs(600),
            max_dedup_ids_per_stream: 20_000_000,
            max_pending_append_events: 100_000,
            max_write_events: 10_000,
            max_append_writes_in_flight: 2,
            append_linger: Duration::from_millis(1),
            tail_cache_events: 4096,
            read_batch_events: 512,
            default_ack_wait: Duration::from_secs(30),
            default_max_deliveries: 5,
            default_heartbeat_interval: Duration::from_secs(10),
            default_session_timeout: Duration::from_secs(30),
            default_commit_batch: 100,
            default_receipt_ttl: Duration::from_secs(7 * 24 * 3600),
            default_receipt_cleanup_interval: Duration::from_secs(3600),
            default_consumer_expiry: None,
            max_receipts_per_consumer: 100_000,
            default_retention: RetentionPolicy::default(),
            dead_letter_retention: RetentionPolicy {
                max_age: Some(Duration::from_secs(14 * 24 * 3600)),
                ..RetentionPolicy::default()
            },
            cleanup_interval: Duration::from_secs(3600),
            cleanup_window: None,
            max_schema_types: 10_000,
            max_schema_versions: 1000,
            max_upcaster_rules: 256,
            max_schema_bytes: 256 << 10,
            relay_enabled: true,
            relay_window: 100,
            relay_retry_base: Duration::from_millis(100),
            relay_retry_max: Duration::from_secs(30),
            default_max_in_flight: 1000,
            max_ack_pending: 10_000,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            default_replay_batch: 100,
            default_progress_interval: Duration::from_secs(1),
            max_replays: 1024,
            max_storage_ops: 100_000,
            max_queued_commands: 10_000,
            max_read_events: 1000,
            storage_retry_base: Duration::from_millis(50),
            storage_retry_max: Duration::from_secs(5),
            recovery_page: 10_000,
        }
    }
}

impl Config {
    /// Exponential back-off: `base x 2^attempt`, capped at `max`.
    pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        base.checked_mul(factor).map_or(max, |d| d.min(max))
    }
}
