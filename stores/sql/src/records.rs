//! Records of the core from the columns both SQL stores keep.

use crate::codec::{CodecError, decode_acked, from_json, to_json};
use tributary_core::{
    ConsumerId, CursorRecord, DedupRecord, EventId, PartitionHead, ReceiptRecord, SchemaRecord,
    SubId, SubscriptionRecord, UnixMillis,
};

/// A stored signed integer as an offset, a time or a count (negative: 0; nothing stored is).
pub fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// An offset, a time or a count as SQL's signed integer (saturating: they stay far below).
pub fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A partition, a partition count or a schema version as SQL's `int` (saturating: the core
/// bounds them far below).
pub fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn u32_of(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// A partition's next offset: past its highest stored offset, and never below the floor its
/// last removal left.
pub fn next_offset(highest: Option<i64>, floor: i64) -> u64 {
    highest.map_or(0, |h| u64_of(h) + 1).max(u64_of(floor))
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
    let next = next_offset(hi, next_floor);
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

/// A row of `tributary_schemas` (the JSON Schema and the rules as JSON text).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SchemaRow {
    /// The event type.
    pub event_type: String,
    /// The version.
    pub version: i64,
    /// The JSON Schema, if the version has one.
    pub schema: Option<String>,
    /// The upcaster rules from the version before.
    pub rules: String,
    /// Whether the upcaster is a Rust function (not stored).
    pub function: bool,
}

/// A schema version from its row.
pub fn schema_record(r: SchemaRow) -> Result<SchemaRecord, CodecError> {
    Ok(SchemaRecord {
        event_type: r.event_type,
        version: u32::try_from(r.version)
            .map_err(|_| CodecError(format!("schema version {}", r.version)))?,
        schema: r.schema.map(|s| from_json("schema", &s)).transpose()?,
        rules: from_json("schema rules", &r.rules)?,
        function: r.function,
    })
}

/// The JSON text columns of a schema version: (schema, rules).
pub fn schema_columns(r: &SchemaRecord) -> Result<(Option<String>, String), CodecError> {
    Ok((
        r.schema.as_ref().map(to_json).transpose()?,
        to_json(&r.rules)?,
    ))
}

/// A read receipt from its row (times in Unix milliseconds).
pub fn receipt_record(
    sub_id: i64,
    consumer: &str,
    partition: i32,
    offset: i64,
    delivered_at: i64,
    read_at: Option<i64>,
    timed_out: Option<i64>,
) -> Result<ReceiptRecord, CodecError> {
    Ok(ReceiptRecord {
        sub: SubId(u64_of(sub_id)),
        consumer: ConsumerId::new(consumer)
            .map_err(|e| CodecError(format!("receipt consumer: {e}")))?,
        partition: u32_of(partition),
        offset: u64_of(offset),
        delivered_at: UnixMillis(u64_of(delivered_at)),
        read_at: read_at.map(|t| UnixMillis(u64_of(t))),
        timed_out: timed_out.map(|t| UnixMillis(u64_of(t))),
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

/// The subscriptions to recover.
pub const RECOVER_SUBSCRIPTIONS: &str =
    "SELECT id, config, start_offsets FROM tributary_subscriptions ORDER BY id";
/// The cursors to recover.
pub const RECOVER_CURSORS: &str = "SELECT sub_id, consumer, partition, floor, acked FROM tributary_cursors ORDER BY sub_id, consumer, partition";

/// A row of [`crate::RECOVER_HEADS`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HeadRow {
    /// The stream's surrogate id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its configuration (JSON).
    pub config: String,
    /// The partition.
    pub partition: i32,
    /// First offset kept by the last removal.
    pub first_offset: i64,
    /// Next offset at the last removal.
    pub next_floor: i64,
    /// Last timestamp at the last removal.
    pub last_ts: i64,
    /// Lowest stored offset.
    pub lo: Option<i64>,
    /// Highest stored offset.
    pub hi: Option<i64>,
    /// Its timestamp.
    pub hi_ts: Option<i64>,
}

/// A row of [`RECOVER_SUBSCRIPTIONS`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    /// Its id.
    pub id: i64,
    /// Its configuration (JSON).
    pub config: String,
    /// Its start offsets (JSON).
    pub start_offsets: String,
}

/// A row of [`RECOVER_CURSORS`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CursorRow {
    /// The subscription.
    pub sub_id: i64,
    /// The consumer ('' for an exclusive subscription).
    pub consumer: String,
    /// The partition.
    pub partition: i32,
    /// The ack floor.
    pub floor: i64,
    /// Acknowledged offsets above it (JSON).
    pub acked: String,
}

/// The relay positions of cross-service streams, by stream name.
pub const RECOVER_RELAYS: &str = r#"SELECT s.name, r.partition, r.next_offset FROM tributary_relay r
    JOIN tributary_streams s ON s.id = r.stream_id ORDER BY s.name, r.partition"#;

/// A row of [`RECOVER_RELAYS`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RelayRow {
    /// The stream's name.
    pub name: String,
    /// The partition.
    pub partition: i32,
    /// The first offset not confirmed.
    pub next_offset: i64,
}

/// The state to recover from, and each stream's surrogate id, from the recovery rows.
pub fn recovered(
    heads: Vec<HeadRow>,
    subs: Vec<SubscriptionRow>,
    cursors: Vec<CursorRow>,
    relays: Vec<RelayRow>,
) -> Result<
    (
        tributary_core::RecoveredState,
        Vec<(tributary_core::StreamName, i64)>,
    ),
    CodecError,
> {
    use tributary_core::{StreamConfig, StreamRecord};
    let mut streams: std::collections::BTreeMap<String, StreamRecord> =
        std::collections::BTreeMap::new();
    let mut ids = Vec::new();
    for r in heads {
        if !streams.contains_key(&r.name) {
            let config: StreamConfig = from_json("stream config", &r.config)?;
            ids.push((config.name.clone(), r.id));
            streams.insert(
                r.name.clone(),
                StreamRecord {
                    config,
                    heads: Vec::new(),
                },
            );
        }
        let head = partition_head(r.first_offset, r.next_floor, r.last_ts, r.lo, r.hi, r.hi_ts);
        if let Some(s) = streams.get_mut(&r.name) {
            s.heads.push(head);
        }
    }
    let subscriptions = subs
        .iter()
        .map(|r| subscription_record(r.id, &r.config, &r.start_offsets))
        .collect::<Result<Vec<_>, _>>()?;
    let cursors = cursors
        .iter()
        .map(|r| cursor_record(r.sub_id, &r.consumer, r.partition, r.floor, &r.acked))
        .collect::<Result<Vec<_>, _>>()?;
    let relays = relays
        .iter()
        .map(|r| {
            Ok(tributary_core::RelayRecord {
                stream: tributary_core::StreamName::new(&r.name)
                    .map_err(|e| CodecError(format!("relay stream: {e}")))?,
                partition: u32_of(r.partition),
                next: u64_of(r.next_offset),
            })
        })
        .collect::<Result<Vec<_>, CodecError>>()?;
    Ok((
        tributary_core::RecoveredState {
            streams: streams.into_values().collect(),
            subscriptions,
            cursors,
            relays,
        },
        ids,
    ))
}

/// The answer to creating a stream that is stored already with `stored` (its JSON): success
/// for the same configuration (a repeat), a conflict for another.
pub fn existing_stream(
    stored: &str,
    config: &tributary_core::StreamConfig,
) -> tributary_core::StorageResult {
    use tributary_core::{StorageError, StorageReply, StorageResult, StreamConfig};
    if from_json::<StreamConfig>("stream config", stored).is_ok_and(|c| c == *config) {
        StorageResult::Ok(StorageReply::Done)
    } else {
        StorageResult::Err(StorageError::Conflict(format!(
            "stream {} exists with another configuration",
            config.name
        )))
    }
}
