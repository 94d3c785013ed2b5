//! How a stream is configured (SPEC 2).

use crate::config::Config;
use crate::error::InvalidInput;
use crate::names::{MAX_DLQ_SOURCE_NAME_LEN, StreamName};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where a stream's events live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// Durable in the store; an append is acknowledged after the store committed it.
    Persistent,
    /// In memory only, one partition, gone on restart.
    Ephemeral(EphemeralLimits),
}

/// Bounds of an ephemeral stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EphemeralLimits {
    /// Most events held.
    pub max_events: u64,
    /// Most bytes held (payloads, keys, headers).
    pub max_bytes: u64,
    /// What an append does when the stream is full.
    pub overflow: Overflow,
}

/// What an append to a full ephemeral stream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// Refuse the append with `StreamFull` (back-pressure).
    Reject,
    /// Remove the oldest events, delivered or not, to make room.
    DropOldest,
}

/// Delivery guarantee of a stream's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeliverySemantics {
    /// Delivered once, no acks kept: an event counts as acknowledged when it is sent.
    AtMostOnce,
    /// Redelivered until acknowledged.
    #[default]
    AtLeastOnce,
    /// At-least-once with producer dedup required (SPEC 5): the stream's `dedup_window` must
    /// be above zero and every appended event must carry its producer's `event_id` (an append
    /// with an event without one is refused), so a producer's retry within the window is
    /// answered `Duplicate`; an acknowledged event is never delivered again. Consumers make
    /// their side effects once with the inbox (`tributary-store-postgres`'s `Inbox`) or
    /// their own idempotence.
    ExactlyOnce,
}

/// Whether a stream is mirrored to other services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Scope {
    /// Only this service's subscribers.
    #[default]
    Internal,
    /// Also relayed to the message broker (SPEC 9): `Output::Publish` in offset order per
    /// partition, each until confirmed.
    CrossService,
}

/// How long a persistent stream keeps its events (SPEC 8). The limits hold per partition;
/// an event goes when any of them is exceeded, and only whole prefixes of a partition are
/// removed (never a hole). `Default`: keep everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionPolicy {
    /// Events older than this (by their timestamp) go.
    pub max_age: Option<Duration>,
    /// At most this many events per partition are kept.
    pub max_events: Option<u64>,
    /// At most this many bytes (payloads and keys) per partition are kept.
    pub max_bytes: Option<u64>,
    /// Never remove an event some subscription of the stream has not acknowledged yet.
    pub keep_unconsumed: bool,
}

impl RetentionPolicy {
    /// Whether it removes nothing.
    pub fn is_unlimited(&self) -> bool {
        self.max_age.is_none() && self.max_events.is_none() && self.max_bytes.is_none()
    }

    /// Checks the limits (zero is refused: it would empty the stream).
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let zero = [
            (
                "retention.max_age (ms)",
                self.max_age.is_some_and(|d| d.is_zero()),
            ),
            ("retention.max_events", self.max_events == Some(0)),
            ("retention.max_bytes", self.max_bytes == Some(0)),
        ];
        match zero.iter().find(|(_, z)| *z) {
            Some((field, _)) => Err(InvalidInput::Range {
                field,
                value: 0,
                min: 1,
                max: u64::MAX,
            }),
            None => Ok(()),
        }
    }
}

/// A stream's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Its name.
    pub name: StreamName,
    /// Persistent or ephemeral.
    pub kind: StreamKind,
    /// Number of partitions (ephemeral streams: 1).
    pub partitions: u32,
    /// Delivery guarantee.
    pub delivery: DeliverySemantics,
    /// Idempotent-append window; zero turns dedup off.
    pub dedup_window: Duration,
    /// Internal or cross-service.
    pub scope: Scope,
    /// Its retention (persistent streams); `None`: the engine's default policy
    /// (`Config::default_retention`, or `Config::dead_letter_retention` for `<stream>.dlq`).
    #[serde(default)]
    pub retention: Option<RetentionPolicy>,
}

/// A stream as a front-end asks for it (the configuration file, HTTP, gRPC): every field a
/// client may leave unset is an `Option`, and [`StreamSpec::into_config`] is the one place
/// where SPEC's defaults fill them in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSpec {
    /// Number of partitions (default 1).
    pub partitions: Option<u32>,
    /// Delivery guarantee (default at-least-once).
    pub delivery: Option<DeliverySemantics>,
    /// Idempotent-append window (default `Config::default_dedup_window`; zero turns it off).
    pub dedup_window: Option<Duration>,
    /// Relayed to the message broker (default internal).
    pub cross_service: bool,
    /// In memory only, with these bounds (default persistent).
    pub ephemeral: Option<EphemeralLimits>,
    /// Retention of a persistent stream (default the engine's policy).
    pub retention: Option<RetentionPolicy>,
}

impl StreamSpec {
    /// The configuration of stream `name` this asks for, SPEC's defaults filling what is
    /// unset. Nothing is checked here: the engine checks a configuration when it creates the
    /// stream (`StreamConfig::validate`).
    pub fn into_config(self, name: StreamName) -> StreamConfig {
        let mut c = match self.ephemeral {
            Some(e) => StreamConfig::ephemeral(name, e.max_events, e.max_bytes, e.overflow),
            None => StreamConfig::persistent(name),
        };
        if let Some(p) = self.partitions {
            c.partitions = p;
        }
        if let Some(d) = self.delivery {
            c.delivery = d;
        }
        if let Some(w) = self.dedup_window {
            c.dedup_window = w;
        }
        if self.cross_service {
            c.scope = Scope::CrossService;
        }
        c.retention = self.retention;
        c
    }
}

impl StreamConfig {
    /// A persistent, single-partition, at-least-once stream with the default dedup window.
    pub fn persistent(name: StreamName) -> Self {
        StreamConfig {
            name,
            kind: StreamKind::Persistent,
            partitions: 1,
            delivery: DeliverySemantics::AtLeastOnce,
            dedup_window: Config::default().default_dedup_window,
            scope: Scope::Internal,
            retention: None,
        }
    }

    /// An ephemeral stream with the given bounds.
    pub fn ephemeral(
        name: StreamName,
        max_events: u64,
        max_bytes: u64,
        overflow: Overflow,
    ) -> Self {
        StreamConfig {
            kind: StreamKind::Ephemeral(EphemeralLimits {
                max_events,
                max_bytes,
                overflow,
            }),
            ..StreamConfig::persistent(name)
        }
    }

    /// Whether events live only in memory.
    pub fn is_ephemeral(&self) -> bool {
        matches!(self.kind, StreamKind::Ephemeral(_))
    }

    /// Checks the configuration against the engine's limits.
    pub fn validate(&self, config: &Config) -> Result<(), InvalidInput> {
        if self.partitions == 0 || self.partitions > config.max_partitions {
            return Err(InvalidInput::Range {
                field: "partitions",
                value: self.partitions.into(),
                min: 1,
                max: config.max_partitions.into(),
            });
        }
        if !self.name.is_dlq() && self.name.as_str().len() > MAX_DLQ_SOURCE_NAME_LEN {
            return Err(InvalidInput::Length {
                field: "stream (its dead letter stream <stream>.dlq must be a valid name)",
                len: self.name.as_str().len(),
                min: 1,
                max: MAX_DLQ_SOURCE_NAME_LEN,
            });
        }
        // A dead letter stream keeps its letters in one order in one durable partition: the
        // engine writes them to partition 0 and the management API reads them from there.
        if self.name.is_dlq() {
            if self.is_ephemeral() {
                return Err(InvalidInput::Conflict {
                    field: "kind",
                    reason: "a dead letter stream (<stream>.dlq) is persistent",
                });
            }
            if self.partitions != 1 {
                return Err(InvalidInput::Range {
                    field: "partitions (a dead letter stream <stream>.dlq has one)",
                    value: self.partitions.into(),
                    min: 1,
                    max: 1,
                });
            }
        }
        if self.delivery == DeliverySemantics::ExactlyOnce && self.dedup_window.is_zero() {
            return Err(InvalidInput::Conflict {
                field: "dedup_window",
                reason: "an exactly-once stream needs a producer dedup window above 0 (0 turns dedup off)",
            });
        }
        if let Some(r) = &self.retention {
            r.validate()?;
            if self.is_ephemeral() {
                return Err(InvalidInput::Conflict {
                    field: "retention",
                    reason: "ephemeral streams are bounded by max_events and max_bytes instead",
                });
            }
        }
        if let StreamKind::Ephemeral(l) = self.kind {
            if self.partitions != 1 {
                return Err(InvalidInput::Range {
                    field: "partitions (ephemeral streams have one)",
                    value: self.partitions.into(),
                    min: 1,
                    max: 1,
                });
            }
            if l.max_events == 0 {
                return Err(InvalidInput::Range {
                    field: "max_events",
                    value: 0,
                    min: 1,
                    max: u64::MAX,
                });
            }
            if l.max_bytes == 0 {
                return Err(InvalidInput::Range {
                    field: "max_bytes",
                    value: 0,
                    min: 1,
                    max: u64::MAX,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> StreamName {
        StreamName::new("orders").expect("name")
    }

    #[test]
    fn an_empty_spec_takes_the_defaults() {
        let c = StreamSpec::default().into_config(name());
        assert_eq!(c, StreamConfig::persistent(name()));
        assert_eq!(c.partitions, 1);
        assert_eq!(c.delivery, DeliverySemantics::AtLeastOnce);
        assert_eq!(c.dedup_window, Config::default().default_dedup_window);
        assert_eq!(c.scope, Scope::Internal);
        assert_eq!(c.retention, None);
    }

    #[test]
    fn every_field_set_is_kept() {
        let retention = RetentionPolicy {
            max_age: Some(Duration::from_secs(60)),
            max_events: Some(5),
            max_bytes: None,
            keep_unconsumed: true,
        };
        let c = StreamSpec {
            partitions: Some(4),
            delivery: Some(DeliverySemantics::ExactlyOnce),
            dedup_window: Some(Duration::ZERO),
            cross_service: true,
            ephemeral: None,
            retention: Some(retention),
        }
        .into_config(name());
        assert_eq!(c.partitions, 4);
        assert_eq!(c.delivery, DeliverySemantics::ExactlyOnce);
        assert_eq!(c.dedup_window, Duration::ZERO);
        assert_eq!(c.scope, Scope::CrossService);
        assert_eq!(c.retention, Some(retention));
        let limits = EphemeralLimits {
            max_events: 10,
            max_bytes: 100,
            overflow: Overflow::DropOldest,
        };
        let e = StreamSpec {
            ephemeral: Some(limits),
            ..StreamSpec::default()
        }
        .into_config(name());
        assert_eq!(e.kind, StreamKind::Ephemeral(limits));
        assert!(e.is_ephemeral());
    }
}
