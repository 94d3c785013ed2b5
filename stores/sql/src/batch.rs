//! A record batch: the events of one partition and one append, stored as one value.
//!
//! Storing an append as one row per partition rather than one per event costs the database one
//! tuple and one index entry per batch (a quarter of its CPU per event on PostgreSQL, see
//! BENCHMARKS.md). The body is a version byte, then the events in postcard, without the stream
//! and partition (the row has them); each event keeps its offset, so a batch needs no rule about
//! its offsets beyond being sorted.

use crate::CodecError;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tributary_core::{Event, EventId, StreamName, UnixMillis};

/// The format of the bodies written now.
const VERSION: u8 = 1;

/// An event as written into a body.
#[derive(Serialize)]
struct StoredRef<'a> {
    offset: u64,
    event_id: &'a EventId,
    timestamp: u64,
    event_type: &'a str,
    schema_version: u32,
    key: &'a Option<Bytes>,
    correlation_id: &'a Option<String>,
    causation_id: &'a Option<String>,
    headers: &'a BTreeMap<String, String>,
    content_type: &'a str,
    payload: &'a Bytes,
}

/// An event as read from a body.
#[derive(Deserialize)]
struct Stored {
    offset: u64,
    event_id: EventId,
    timestamp: u64,
    event_type: String,
    schema_version: u32,
    key: Option<Bytes>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    headers: BTreeMap<String, String>,
    content_type: String,
    payload: Bytes,
}

/// One partition's events of an append, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch {
    /// The partition.
    pub partition: u32,
    /// The lowest offset.
    pub first_offset: u64,
    /// The highest offset.
    pub last_offset: u64,
    /// The timestamp of the first event.
    pub first_ts: u64,
    /// The latest timestamp.
    pub last_ts: u64,
    /// What size-based retention counts: the payloads' and keys' bytes.
    pub bytes: u64,
    /// The encoded events, sorted by offset.
    pub body: Vec<u8>,
}

/// The size of an event as retention by size counts it.
pub fn retained_bytes(e: &Event) -> u64 {
    let key = e.key.as_ref().map_or(0, Bytes::len);
    u64::try_from(e.payload.len() + key).unwrap_or(u64::MAX)
}

/// About the most bytes of events in one batch: a larger row no longer fits in a PostgreSQL
/// page and is moved out of line in chunks (TOAST), each chunk a row and an index entry of its
/// own, which would give back what batching saves.
pub const BATCH_BYTES: usize = 7_900;

/// Roughly what an event takes in a body.
fn size_hint(e: &Event) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let headers: usize = e.headers.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    48 + e.payload.len()
        + e.key.as_ref().map_or(0, Bytes::len)
        + e.event_type.len()
        + e.content_type.len()
        + text(&e.correlation_id)
        + text(&e.causation_id)
        + headers
}

/// The batches of `events` (any order, any partitions), in partition order: each partition's
/// events sorted by offset and cut into batches of about [`BATCH_BYTES`] at most (an event
/// larger than that is a batch of its own).
pub fn batches<'a>(
    events: impl IntoIterator<Item = &'a Event>,
) -> Result<Vec<EventBatch>, CodecError> {
    let mut by_partition: BTreeMap<u32, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_partition.entry(e.partition).or_default().push(e);
    }
    let mut out = Vec::new();
    for (partition, mut evs) in by_partition {
        evs.sort_by_key(|e| e.offset);
        let mut start = 0;
        let mut size = 0;
        for (i, e) in evs.iter().enumerate() {
            let s = size_hint(e);
            if i > start && size + s > BATCH_BYTES {
                out.push(batch(partition, &evs[start..i])?);
                start = i;
                size = 0;
            }
            size += s;
        }
        out.push(batch(partition, &evs[start..])?);
    }
    Ok(out)
}

/// One batch of `events`, all of `partition` and sorted by offset.
pub fn batch(partition: u32, events: &[&Event]) -> Result<EventBatch, CodecError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err(CodecError(format!(
            "an empty batch of partition {partition}"
        )));
    };
    let stored: Vec<StoredRef<'_>> = events
        .iter()
        .map(|e| StoredRef {
            offset: e.offset,
            event_id: &e.event_id,
            timestamp: e.timestamp.0,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            key: &e.key,
            correlation_id: &e.correlation_id,
            causation_id: &e.causation_id,
            headers: &e.headers,
            content_type: &e.content_type,
            payload: &e.payload,
        })
        .collect();
    let body = postcard::to_extend(&stored, vec![VERSION])
        .map_err(|e| CodecError(format!("encoding a batch of partition {partition}: {e}")))?;
    Ok(EventBatch {
        partition,
        first_offset: first.offset,
        last_offset: last.offset,
        first_ts: first.timestamp.0,
        last_ts: events.iter().map(|e| e.timestamp.0).max().unwrap_or(0),
        bytes: events.iter().map(|e| retained_bytes(e)).sum(),
        body,
    })
}

/// The events of a stored body of `stream`'s `partition`, sorted by offset.
pub fn decode_batch(
    stream: &StreamName,
    partition: u32,
    body: &[u8],
) -> Result<Vec<Arc<Event>>, CodecError> {
    let bad =
        |what: String| CodecError(format!("a batch of {stream} partition {partition}: {what}"));
    let (version, rest) = body.split_first().ok_or_else(|| bad("empty body".into()))?;
    if *version != VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads {VERSION}"
        )));
    }
    let stored: Vec<Stored> = postcard::from_bytes(rest).map_err(|e| bad(e.to_string()))?;
    Ok(stored
        .into_iter()
        .map(|s| {
            Arc::new(Event {
                event_id: s.event_id,
                stream: stream.clone(),
                partition,
                offset: s.offset,
                timestamp: UnixMillis(s.timestamp),
                event_type: s.event_type,
                schema_version: s.schema_version,
                key: s.key,
                correlation_id: s.correlation_id,
                causation_id: s.causation_id,
                headers: s.headers,
                content_type: s.content_type,
                payload: s.payload,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(partition: u32, offset: u64, ts: u64) -> Event {
        let mut headers = BTreeMap::new();
        if offset.is_multiple_of(2) {
            headers.insert("h".to_string(), format!("v{offset}"));
        }
        Event {
            event_id: EventId::from_bytes([u8::try_from(offset % 251).unwrap_or(0); 16]),
            stream: StreamName::new("s").expect("a valid name"),
            partition,
            offset,
            timestamp: UnixMillis(ts),
            event_type: "t".into(),
            schema_version: 2,
            key: offset.is_multiple_of(3).then(|| Bytes::from(vec![7u8; 3])),
            correlation_id: Some(format!("c{offset}")),
            causation_id: None,
            headers,
            content_type: "application/json".into(),
            payload: Bytes::from(vec![u8::try_from(offset % 256).unwrap_or(0); 10]),
        }
    }

    #[test]
    fn a_batch_per_partition_sorted_and_decoded_whole() {
        let events = [
            event(1, 5, 50),
            event(0, 3, 30),
            event(1, 4, 40),
            event(0, 2, 20),
        ];
        let got = batches(events.iter()).expect("encodes");
        assert_eq!(got.len(), 2);
        let b = &got[1];
        assert_eq!(
            (
                b.partition,
                b.first_offset,
                b.last_offset,
                b.first_ts,
                b.last_ts
            ),
            (1, 4, 5, 40, 50)
        );
        // Offset 4: 10 payload bytes; offset 5: none of the key.
        assert_eq!(b.bytes, 20);
        let name = StreamName::new("s").expect("a valid name");
        let back = decode_batch(&name, 1, &b.body).expect("decodes");
        let want: Vec<Event> = vec![event(1, 4, 40), event(1, 5, 50)];
        assert_eq!(back.iter().map(|e| (**e).clone()).collect::<Vec<_>>(), want);
        assert_eq!(got[0].bytes, 23, "offset 3 has a 3-byte key");
    }

    #[test]
    fn a_damaged_body_is_an_error_naming_the_batch() {
        let events = [event(0, 0, 1), event(0, 1, 2)];
        let b = batches(events.iter()).expect("encodes").remove(0);
        let name = StreamName::new("s").expect("a valid name");
        for cut in 0..b.body.len() {
            let r = decode_batch(&name, 0, &b.body[..cut]);
            assert!(
                r.is_err(),
                "a body cut at {cut} of {} decoded",
                b.body.len()
            );
        }
        let mut other = b.body.clone();
        other[0] = 9;
        let e = decode_batch(&name, 0, &other).expect_err("another version");
        assert!(e.0.contains("format version 9"), "{}", e.0);
        assert!(e.0.contains("s partition 0"), "{}", e.0);
    }

    #[test]
    fn a_partition_is_cut_into_batches_that_fit_a_page() {
        let mut events: Vec<Event> = (0..100).map(|o| event(0, o, o)).collect();
        events[50].payload = Bytes::from(vec![1u8; 3 * BATCH_BYTES]);
        let got = batches(events.iter()).expect("encodes");
        assert!(got.len() > 2, "{} batches", got.len());
        let mut next = 0;
        for b in &got {
            assert_eq!(b.first_offset, next, "batches follow each other");
            next = b.last_offset + 1;
            if !(b.first_offset..=b.last_offset).contains(&50) {
                assert!(b.body.len() <= BATCH_BYTES, "{} bytes", b.body.len());
            }
        }
        assert_eq!(next, 100);
        let big = got
            .iter()
            .find(|b| b.first_offset == 50)
            .expect("offset 50 starts a batch");
        assert_eq!(big.last_offset, 50, "the large event is alone");
    }

    #[test]
    fn no_batch_of_nothing() {
        assert!(batch(0, &[]).is_err());
        assert!(
            batches(std::iter::empty())
                .expect("nothing to encode")
                .is_empty()
        );
    }
}
