//! The event envelope (SPEC 1) and the validation of what producers send.

use crate::config::Config;
use crate::error::InvalidInput;
use crate::ids::EventId;
use crate::names::StreamName;
use crate::time::UnixMillis;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The headers a dead letter gets on top of its event's own (SPEC 3), removed again when it
/// is replayed into its source stream.
pub const DEAD_LETTER_HEADERS: &[&str] = &[
    "x-original-stream",
    "x-original-partition",
    "x-original-offset",
    "x-original-event-id",
    "x-subscription",
    "x-deliveries",
    "x-last-error",
];

/// The content type given to events that name none.
pub const JSON: &str = "application/json";

/// An event as a producer sends it; the core fills in the rest of the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The producer's id for the event: the dedup key. `None`: the core assigns one.
    pub event_id: Option<EventId>,
    /// The event's type, 1..=256 bytes.
    pub event_type: String,
    /// Schema version, >= 1.
    pub schema_version: u32,
    /// Partition key: picks the partition and the per-key order.
    pub key: Option<Bytes>,
    /// Carried end to end.
    pub correlation_id: Option<String>,
    /// Carried end to end.
    pub causation_id: Option<String>,
    /// Free headers.
    pub headers: BTreeMap<String, String>,
    /// MIME type of the payload.
    pub content_type: String,
    /// The payload.
    pub payload: Bytes,
}

impl NewEvent {
    /// A JSON event of the given type with no id, key or headers.
    pub fn new(event_type: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        NewEvent {
            event_id: None,
            event_type: event_type.into(),
            schema_version: 1,
            key: None,
            correlation_id: None,
            causation_id: None,
            headers: BTreeMap::new(),
            content_type: JSON.to_string(),
            payload: payload.into(),
        }
    }
    /// Sets the producer's event id (the dedup key).
    pub fn with_id(mut self, id: EventId) -> Self {
        self.event_id = Some(id);
        self
    }
    /// Sets the partition key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Bytes this event counts for in batch and stream size limits: payload, key, headers.
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, |k| k.len())
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// Checks every field against the limits of `config`.
    pub fn validate(&self, config: &Config) -> Result<(), InvalidInput> {
        len_in(
            "event_type",
            self.event_type.len(),
            1,
            config.max_event_type_bytes,
        )?;
        if self.schema_version == 0 {
            return Err(InvalidInput::Range {
                field: "schema_version",
                value: 0,
                min: 1,
                max: u32::MAX as u64,
            });
        }
        if let Some(k) = &self.key {
            len_in("key", k.len(), 0, config.max_key_bytes)?;
        }
        if let Some(c) = &self.correlation_id {
            len_in("correlation_id", c.len(), 0, config.max_correlation_bytes)?;
        }
        if let Some(c) = &self.causation_id {
            len_in("causation_id", c.len(), 0, config.max_correlation_bytes)?;
        }
        len_in(
            "content_type",
            self.content_type.len(),
            1,
            config.max_content_type_bytes,
        )?;
        len_in("headers", self.headers.len(), 0, config.max_headers)?;
        let header_bytes: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        len_in("headers (bytes)", header_bytes, 0, config.max_headers_bytes)?;
        len_in("payload", self.payload.len(), 0, config.max_payload_bytes)?;
        Ok(())
    }
}

/// Validates a whole append: count, total size, and every event.
pub fn validate_batch(events: &[NewEvent], config: &Config) -> Result<(), InvalidInput> {
    len_in("events", events.len(), 1, config.max_batch_events)?;
    let total: usize = events.iter().map(NewEvent::size).sum();
    len_in("events (bytes)", total, 0, config.max_batch_bytes)?;
    events.iter().try_for_each(|e| e.validate(config))
}

fn len_in(field: &'static str, len: usize, min: usize, max: usize) -> Result<(), InvalidInput> {
    if len < min || len > max {
        Err(InvalidInput::Length {
            field,
            len,
            min,
            max,
        })
    } else {
        Ok(())
    }
}

/// An event as stored and delivered: the envelope of SPEC 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The event's id.
    pub event_id: EventId,
    /// Its stream.
    pub stream: StreamName,
    /// Its partition.
    pub partition: u32,
    /// Its offset, dense per (stream, partition) from 0.
    pub offset: u64,
    /// Assigned on append from the core's `now.wall`, never decreasing within a partition.
    pub timestamp: UnixMillis,
    /// The event's type.
    pub event_type: String,
    /// Schema version.
    pub schema_version: u32,
    /// Partition key.
    pub key: Option<Bytes>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// MIME type of the payload.
    pub content_type: String,
    /// The payload.
    pub payload: Bytes,
}

impl Event {
    /// Builds the stored envelope from what the producer sent and what the core assigned.
    pub fn from_new(
        e: NewEvent,
        event_id: EventId,
        stream: StreamName,
        partition: u32,
        offset: u64,
        timestamp: UnixMillis,
    ) -> Event {
        Event {
            event_id,
            stream,
            partition,
            offset,
            timestamp,
            event_type: e.event_type,
            schema_version: e.schema_version,
            key: e.key,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            headers: e.headers,
            content_type: e.content_type,
            payload: e.payload,
        }
    }

    /// The event to append again to the source stream when this dead letter (an event of a
    /// `<stream>.dlq` stream) is replayed: the dead letter's type, version, key, correlation,
    /// content and payload, its headers without the ones the dead-lettering added
    /// ([`DEAD_LETTER_HEADERS`]), plus `x-replayed-from` naming the dead letter
    /// (`<dlq>/<partition>/<offset>`). Its id is derived from the dead letter's id, so
    /// replaying the same dead letter twice within the source's dedup window appends it once.
    /// Refused (`Conflict` on `stream`) when this event is not in a dead letter stream or does
    /// not name that stream's source in `x-original-stream`.
    pub fn dead_letter_replay(&self) -> Result<(StreamName, NewEvent), InvalidInput> {
        let not_a_dead_letter = InvalidInput::Conflict {
            field: "stream",
            reason: "not a dead letter of its source stream",
        };
        let source = self
            .stream
            .as_str()
            .strip_suffix(crate::names::DLQ_SUFFIX)
            .ok_or(not_a_dead_letter.clone())?;
        if self.headers.get("x-original-stream").map(String::as_str) != Some(source) {
            return Err(not_a_dead_letter);
        }
        let source = StreamName::new(source)?;
        let mut headers = self.headers.clone();
        for h in DEAD_LETTER_HEADERS {
            headers.remove(*h);
        }
        headers.insert(
            "x-replayed-from".into(),
            format!("{}/{}/{}", self.stream, self.partition, self.offset),
        );
        let mut seed = self.event_id.as_bytes().to_vec();
        seed.extend_from_slice(b"dead-letter-replay");
        let id = EventId::from_random(xxhash_rust::xxh3::xxh3_128(&seed).to_le_bytes());
        Ok((
            source,
            NewEvent {
                event_id: Some(id),
                event_type: self.event_type.clone(),
                schema_version: self.schema_version,
                key: self.key.clone(),
                correlation_id: self.correlation_id.clone(),
                causation_id: self.causation_id.clone(),
                headers,
                content_type: self.content_type.clone(),
                payload: self.payload.clone(),
            },
        ))
    }

    /// Bytes this event counts for in size limits (as `NewEvent::size`).
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, |k| k.len())
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::default()
    }

    #[test]
    fn each_field_is_checked_with_its_limit() {
        let ok = NewEvent::new("t", vec![0u8; 10]);
        assert!(ok.validate(&cfg()).is_ok());

        let e = NewEvent::new("", vec![]);
        assert_eq!(
            e.validate(&cfg()),
            Err(InvalidInput::Length {
                field: "event_type",
                len: 0,
                min: 1,
                max: 256
            })
        );
        let e = NewEvent::new("x".repeat(257), vec![]);
        assert!(matches!(
            e.validate(&cfg()),
            Err(InvalidInput::Length {
                field: "event_type",
                max: 256,
                ..
            })
        ));
        let e = NewEvent::new("t", vec![0u8; (1 << 20) + 1]);
        assert!(matches!(
            e.validate(&cfg()),
            Err(InvalidInput::Length {
                field: "payload",
                max: 1048576,
                ..
            })
        ));
        let e = NewEvent::new("t", vec![]).with_key(vec![0u8; 1025]);
        assert!(matches!(
            e.validate(&cfg()),
            Err(InvalidInput::Length {
                field: "key",
                max: 1024,
                ..
            })
        ));
        let mut e = NewEvent::new("t", vec![]);
        e.schema_version = 0;
        assert!(matches!(
            e.validate(&cfg()),
            Err(InvalidInput::Range {
                field: "schema_version",
                ..
            })
        ));
        let mut e = NewEvent::new("t", vec![]);
        e.correlation_id = Some("c".repeat(257));
        assert!(matches!(
            e.validate(&cfg()),
            Err(InvalidInput::Length {
                field: "correlation_id",
                ..
            })
        ));
        let mut e = NewEvent::new("t", vec![]);
        e.causation_id = Some("c".repeat(257));
        assert!(matches!(
            e.validate(&cfg()),
            Err(InvalidInput::Length {
                field: "causation_id",
                ..
            })
        ));
        let mut e = NewEvent::new("t", vec![]);
        for i in 0..65 {
            e.headers.insert(format!("h{i}"), String::new());
        }
        assert!(matches!(
            e.validate(&cfg()),
            Err(InvalidInput::Length {
                field: "headers",
                max: 64,
                ..
            })
        ));
        let mut e = NewEvent::new("t", vec![]);
        e.headers.insert("h".into(), "v".repeat(16 << 10));
        assert!(matches!(
            e.validate(&cfg()),
            Err(InvalidInput::Length {
                field: "headers (bytes)",
                ..
            })
        ));
        let mut e = NewEvent::new("t", vec![]);
        e.content_type = String::new();
        assert!(matches!(
            e.validate(&cfg()),
            Err(InvalidInput::Length {
                field: "content_type",
                ..
            })
        ));
    }

    #[test]
    fn batches_are_bounded() {
        assert!(matches!(
            validate_batch(&[], &cfg()),
            Err(InvalidInput::Length {
                field: "events",
                min: 1,
                ..
            })
        ));
        let many = vec![NewEvent::new("t", vec![]); 1001];
        assert!(matches!(
            validate_batch(&many, &cfg()),
            Err(InvalidInput::Length {
                field: "events",
                len: 1001,
                max: 1000,
                ..
            })
        ));
        let big = vec![NewEvent::new("t", vec![0u8; 1 << 20]); 5];
        assert!(matches!(
            validate_batch(&big, &cfg()),
            Err(InvalidInput::Length {
                field: "events (bytes)",
                max: 4194304,
                ..
            })
        ));
        assert!(validate_batch(&vec![NewEvent::new("t", vec![0u8; 256]); 1000], &cfg()).is_ok());
    }
}
