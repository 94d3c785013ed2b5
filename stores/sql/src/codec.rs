//! How the SQL stores encode what they keep: events as rows (headers as a JSON object, NULL
//! when empty), configurations as JSON, acknowledged offsets as a JSON array.

use serde::{Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::sync::Arc;
use tributary_core::{Event, EventId, StreamName, UnixMillis};

/// A stored value that cannot be decoded: the store answers `Unavailable` naming it.
#[derive(Debug)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One row of the events table, as both SQL stores read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Partition.
    pub partition: i32,
    /// Offset (the column is quoted: `"offset"`).
    pub offset: i64,
    /// 16 bytes.
    pub event_id: Vec<u8>,
    /// Unix milliseconds.
    pub ts: i64,
    /// Event type.
    pub event_type: String,
    /// Schema version.
    pub schema_version: i32,
    /// Partition key.
    pub key: Option<Vec<u8>>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// Headers as a JSON object; NULL when there are none.
    pub headers: Option<String>,
    /// MIME type.
    pub content_type: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Headers as stored: `None` when empty, else a JSON object.
pub fn encode_headers(h: &BTreeMap<String, String>) -> Option<String> {
    if h.is_empty() {
        None
    } else {
        serde_json::to_string(h).ok()
    }
}

/// An event from its row.
pub fn decode_event(stream: &StreamName, r: EventRow) -> Result<Arc<Event>, CodecError> {
    let id: [u8; 16] = r.event_id.as_slice().try_into().map_err(|_| {
        CodecError(format!(
            "event id of {} bytes at offset {}",
            r.event_id.len(),
            r.offset
        ))
    })?;
    let headers = match r.headers {
        Some(h) => serde_json::from_str(&h)
            .map_err(|e| CodecError(format!("headers at offset {}: {e}", r.offset)))?,
        None => BTreeMap::new(),
    };
    Ok(Arc::new(Event {
        event_id: EventId::from_bytes(id),
        stream: stream.clone(),
        partition: u32::try_from(r.partition)
            .map_err(|_| CodecError(format!("partition {}", r.partition)))?,
        offset: u64::try_from(r.offset).map_err(|_| CodecError(format!("offset {}", r.offset)))?,
        timestamp: UnixMillis(u64::try_from(r.ts).unwrap_or(0)),
        event_type: r.event_type,
        schema_version: u32::try_from(r.schema_version).unwrap_or(1),
        key: r.key.map(bytes::Bytes::from),
        correlation_id: r.correlation_id,
        causation_id: r.causation_id,
        headers,
        content_type: r.content_type,
        payload: bytes::Bytes::from(r.payload),
    }))
}

/// Acknowledged offsets above a floor, as stored.
pub fn encode_acked(acked: &[u64]) -> String {
    serde_json::to_string(acked).unwrap_or_else(|_| "[]".into())
}

/// Acknowledged offsets from their stored form.
pub fn decode_acked(s: &str) -> Result<Vec<u64>, CodecError> {
    serde_json::from_str(s).map_err(|e| CodecError(format!("acked offsets: {e}")))
}

/// A configuration or record as stored (JSON).
pub fn to_json<T: Serialize>(v: &T) -> Result<String, CodecError> {
    serde_json::to_string(v).map_err(|e| CodecError(e.to_string()))
}

/// A configuration or record from its stored JSON.
pub fn from_json<T: DeserializeOwned>(what: &str, s: &str) -> Result<T, CodecError> {
    serde_json::from_str(s).map_err(|e| CodecError(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::{CommitStrategy, SubscriptionConfig, SubscriptionMode};

    /// A subscription stored before consumer groups existed (no heartbeat, session or commit
    /// fields) still decodes, with the defaults.
    #[test]
    fn an_older_subscription_config_decodes_with_group_defaults() {
        let old = r#"{"stream":"a","name":"s","mode":"Exclusive","start":"Beginning",
            "ack_wait":{"secs":30,"nanos":0},"max_deliveries":5,"ordered_by_key":false}"#;
        let c: SubscriptionConfig = from_json("subscription config", old).expect("decodes");
        assert_eq!(c.mode, SubscriptionMode::Exclusive);
        assert_eq!(c.commit, CommitStrategy::AfterBatch(100));
        assert_eq!(c.session_timeout.as_secs(), 30);
        assert_eq!(c.heartbeat_interval.as_secs(), 10);
        let mut g = c.clone();
        g.mode = SubscriptionMode::ConsumerGroup;
        g.commit = CommitStrategy::Periodic(std::time::Duration::from_millis(2500));
        let back: SubscriptionConfig =
            from_json("subscription config", &to_json(&g).expect("encodes")).expect("decodes");
        assert_eq!(back, g);
    }
}
