//! Records of the core from the columns both SQL stores keep.

use crate::codec::{CodecError, decode_acked, from_json};
use tributary_core::{
    ConsumerId, CursorRecord, DedupRecord, EventId, PartitionHead, SubId, SubscriptionRecord,
    UnixMillis,
};

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn u32_of(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// A partition's head from its `partitions` row and its lowest and highest stored events:
/// the next offset never goes below `next_floor` (kept when events are removed).
pub fn partition_head(
    first_offset: i64,
    next_floor: i64,
    last_ts: i64,
    lo: Option<i64>,
    hi: Option<i64>,
    hi_ts: Option<i64>,
) -> PartitionHead {
    let next = u64_of(next_floor).max(hi.map_or(0, |h| u64_of(h) + 1));
    let first = lo.map_or(next, |l| u64_of(l).max(u64_of(first_offset)));
    let last = u64_of(last_ts).max(hi_ts.map_or(0, u64_of));
    PartitionHead {
        first,
        next,
        last_timestamp: UnixMillis(last),
    }
}

/// A subscription from its row.
pub fn subscription_record(
    id: i64,
    config: &str,
    start_offsets: &str,
) -> Result<SubscriptionRecord, CodecError> {
    Ok(SubscriptionRecord {
        id: SubId(u64_of(id)),
        config: from_json("subscription config", config)?,
        start_offsets: from_json("start offsets", start_offsets)?,
    })
}

/// A cursor from its row (`consumer` is empty for an exclusive subscription's cursor).
pub fn cursor_record(
    sub_id: i64,
    consumer: &str,
    partition: i32,
    floor: i64,
    acked: &str,
) -> Result<CursorRecord, CodecError> {
    let consumer = if consumer.is_empty() {
        None
    } else {
        Some(ConsumerId::new(consumer).map_err(|e| CodecError(format!("cursor consumer: {e}")))?)
    };
    Ok(CursorRecord {
        sub: SubId(u64_of(sub_id)),
        consumer,
        partition: u32_of(partition),
        floor: u64_of(floor),
        acked: decode_acked(acked)?,
    })
}

/// A dedup id from its row.
pub fn dedup_record(
    partition: i32,
    offset: i64,
    event_id: &[u8],
    expires_at: i64,
) -> Result<DedupRecord, CodecError> {
    let id: [u8; 16] = event_id
        .try_into()
        .map_err(|_| CodecError(format!("a dedup id of {} bytes", event_id.len())))?;
    Ok(DedupRecord {
        event_id: EventId::from_bytes(id),
        partition: u32_of(partition),
        offset: u64_of(offset),
        expires_at: UnixMillis(u64_of(expires_at)),
    })
}
