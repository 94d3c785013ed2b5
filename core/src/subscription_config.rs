//! How a subscription is configured (SPEC 3).

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
}

/// Where a subscription (or a reset) starts, per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartPosition {
    /// The first available offset.
    Beginning,
    /// The next offset to be appended.
    End,
    /// This offset (clamped to the partition's available range).
    Offset(u64),
    /// The first event with a timestamp at or after this time.
    Time(UnixMillis),
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
}

impl SubscriptionConfig {
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
        Ok(())
    }
}
