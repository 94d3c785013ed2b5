//! Protobuf messages to and from the core's types. Bad input becomes `INVALID_ARGUMENT`
//! naming the field, before the core sees the request.

use crate::error_to_status;
use crate::pb;
use crate::status::invalid;
use std::time::Duration;
use tonic::Status;
use tributary_core::{
    AppendOutcome, CommitStrategy, ConsumerId, CursorInfo, DeliverySemantics, EphemeralLimits,
    Error, Event, EventId, JSON, NewEvent, Overflow, Position, ReplayFrom, ReplayOptions,
    RetentionPolicy, Rule, SchemaInfo, SchemaRegistration, Scope, StartPosition, StreamConfig,
    StreamInfo, StreamKind, StreamName, StreamSpec, SubscriptionConfig, SubscriptionInfo,
    SubscriptionMode, SubscriptionName, SubscriptionOptions, UnixMillis,
};

fn core_err(e: impl Into<Error>) -> Status {
    error_to_status(&e.into())
}

/// A stream name from the request.
pub(crate) fn stream_name(s: &str) -> Result<StreamName, Status> {
    StreamName::new(s).map_err(core_err)
}

/// A subscription name from the request.
pub(crate) fn subscription_name(s: &str) -> Result<SubscriptionName, Status> {
    SubscriptionName::new(s).map_err(core_err)
}

/// A consumer id from the request.
pub(crate) fn consumer_id(s: &str) -> Result<ConsumerId, Status> {
    ConsumerId::new(s).map_err(core_err)
}

/// A producer's event; `correlation` (from the request metadata) fills a missing
/// correlation id.
pub fn new_event_from_pb(e: pb::NewEvent, correlation: Option<&str>) -> Result<NewEvent, Status> {
    let event_id = if e.event_id.is_empty() {
        None
    } else {
        let id = uuid::Uuid::parse_str(&e.event_id)
            .map_err(|err| invalid("event_id", format!("not a UUID: {err}")))?;
        Some(EventId(id))
    };
    if e.schema_version == Some(0) {
        return Err(invalid("schema_version", "above 0 (unset: 1)"));
    }
    Ok(NewEvent {
        event_id,
        event_type: e.event_type,
        schema_version: e.schema_version.unwrap_or(1),
        key: e.key,
        correlation_id: e.correlation_id.or_else(|| correlation.map(str::to_string)),
        causation_id: e.causation_id,
        headers: e.headers.into_iter().collect(),
        content_type: if e.content_type.is_empty() {
            JSON.to_string()
        } else {
            e.content_type
        },
        payload: e.payload,
    })
}

/// An event as delivered.
pub fn event_to_pb(e: &Event) -> pb::Event {
    pb::Event {
        event_id: e.event_id.0.to_string(),
        stream: e.stream.to_string(),
        partition: e.partition,
        offset: e.offset,
        event_type: e.event_type.clone(),
        schema_version: e.schema_version,
        timestamp: e.timestamp.0,
        key: e.key.clone(),
        correlation_id: e.correlation_id.clone(),
        causation_id: e.causation_id.clone(),
        headers: e
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        content_type: e.content_type.clone(),
        payload: e.payload.clone(),
    }
}

pub(crate) fn outcome_to_pb(o: &AppendOutcome) -> pb::PublishOutcome {
    let (p, duplicate) = match o {
        AppendOutcome::Appended(p) => (p, false),
        AppendOutcome::Duplicate { original } => (original, true),
    };
    pb::PublishOutcome {
        position: Some(position_to_pb(p)),
        duplicate,
    }
}

pub(crate) fn position_to_pb(p: &Position) -> pb::Position {
    pb::Position {
        partition: p.partition,
        offset: p.offset,
    }
}

/// A position from the request.
pub(crate) fn position(p: &pb::Position) -> Position {
    Position {
        partition: p.partition,
        offset: p.offset,
    }
}

pub(crate) fn positions(ps: Vec<pb::Position>) -> Result<Vec<Position>, Status> {
    if ps.is_empty() {
        return Err(invalid("positions", "at least one position is needed"));
    }
    Ok(ps.iter().map(position).collect())
}

/// A stream configuration from a create request.
pub(crate) fn stream_config(r: pb::CreateStreamRequest) -> Result<StreamConfig, Status> {
    let name = stream_name(&r.name)?;
    let ephemeral = match r.ephemeral {
        Some(e) => Some(EphemeralLimits {
            max_events: e.max_events,
            max_bytes: e.max_bytes,
            overflow: match pb::Overflow::try_from(e.overflow) {
                Ok(pb::Overflow::DropOldest) => Overflow::DropOldest,
                Ok(pb::Overflow::Reject | pb::Overflow::Unspecified) => Overflow::Reject,
                Err(_) => return Err(invalid("ephemeral.overflow", "unknown value")),
            },
        }),
        None => None,
    };
    let delivery = match pb::DeliverySemantics::try_from(r.delivery) {
        Ok(pb::DeliverySemantics::AtMostOnce) => Some(DeliverySemantics::AtMostOnce),
        Ok(pb::DeliverySemantics::AtLeastOnce) => Some(DeliverySemantics::AtLeastOnce),
        Ok(pb::DeliverySemantics::ExactlyOnce) => Some(DeliverySemantics::ExactlyOnce),
        Ok(pb::DeliverySemantics::Unspecified) => None,
        Err(_) => return Err(invalid("delivery", "unknown value")),
    };
    Ok(StreamSpec {
        partitions: r.partitions,
        delivery,
        dedup_window: r.dedup_window_ms.map(Duration::from_millis),
        cross_service: r.cross_service,
        ephemeral,
        retention: r.retention.map(|r| RetentionPolicy {
            max_age: r.max_age_ms.map(Duration::from_millis),
            max_events: r.max_events,
            max_bytes: r.max_bytes,
            keep_unconsumed: r.keep_unconsumed,
        }),
    }
    .into_config(name))
}

/// A stream configuration as a create request (what `GetStream` shows).
pub(crate) fn stream_config_to_pb(c: &StreamConfig) -> pb::CreateStreamRequest {
    pb::CreateStreamRequest {
        name: c.name.to_string(),
        partitions: Some(c.partitions),
        delivery: match c.delivery {
            DeliverySemantics::AtMostOnce => pb::DeliverySemantics::AtMostOnce,
            DeliverySemantics::AtLeastOnce => pb::DeliverySemantics::AtLeastOnce,
            DeliverySemantics::ExactlyOnce => pb::DeliverySemantics::ExactlyOnce,
        } as i32,
        dedup_window_ms: Some(ms(c.dedup_window)),
        cross_service: c.scope == Scope::CrossService,
        ephemeral: match c.kind {
            StreamKind::Persistent => None,
            StreamKind::Ephemeral(EphemeralLimits {
                max_events,
                max_bytes,
                overflow,
            }) => Some(pb::Ephemeral {
                max_events,
                max_bytes,
                overflow: match overflow {
                    Overflow::Reject => pb::Overflow::Reject,
                    Overflow::DropOldest => pb::Overflow::DropOldest,
                } as i32,
            }),
        },
        retention: c.retention.map(|r| pb::Retention {
            max_age_ms: r.max_age.map(ms),
            max_events: r.max_events,
            max_bytes: r.max_bytes,
            keep_unconsumed: r.keep_unconsumed,
        }),
    }
}

pub(crate) fn stream_info_to_pb(i: &StreamInfo) -> pb::StreamInfo {
    pb::StreamInfo {
        config: Some(stream_config_to_pb(&i.config)),
        partitions: i
            .partitions
            .iter()
            .zip(0u32..)
            .map(|(p, n)| pb::PartitionInfo {
                partition: n,
                first: p.first,
                next: p.next,
            })
            .collect(),
        length: i.length(),
        subscriptions: i.subscriptions as u64,
        relay: i.relay.clone().unwrap_or_default(),
    }
}

pub(crate) fn start_position(p: Option<pb::StartPosition>) -> StartPosition {
    match p.and_then(|p| p.at) {
        None | Some(pb::start_position::At::Beginning(())) => StartPosition::Beginning,
        Some(pb::start_position::At::End(())) => StartPosition::End,
        Some(pb::start_position::At::Offset(o)) => StartPosition::Offset(o),
        Some(pb::start_position::At::Time(t)) => StartPosition::Time(UnixMillis(t)),
        Some(pb::start_position::At::Offsets(o)) => {
            StartPosition::Offsets(o.positions.iter().map(position).collect())
        }
    }
}

/// Where a reset moves to: one is needed.
pub(crate) fn reset_target(to: Option<pb::StartPosition>) -> Result<StartPosition, Status> {
    let to = to.ok_or_else(|| {
        invalid(
            "to",
            "beginning, end, an offset, per-partition offsets or a time is needed",
        )
    })?;
    Ok(start_position(Some(to)))
}

/// A start position as the request gives it.
pub fn start_position_to_pb(p: &StartPosition) -> pb::StartPosition {
    let at = match p {
        StartPosition::Beginning => pb::start_position::At::Beginning(()),
        StartPosition::End => pb::start_position::At::End(()),
        StartPosition::Offset(o) => pb::start_position::At::Offset(*o),
        StartPosition::Time(t) => pb::start_position::At::Time(t.0),
        StartPosition::Offsets(ps) => pb::start_position::At::Offsets(pb::PartitionOffsets {
            positions: ps.iter().map(position_to_pb).collect(),
        }),
    };
    pb::StartPosition { at: Some(at) }
}

/// A duration in whole milliseconds, as the protocol carries it (saturating).
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A subscription configuration from the request (zero and unset fields take the defaults).
pub(crate) fn subscription_config(c: pb::SubscriptionConfig) -> Result<SubscriptionConfig, Status> {
    let mode = match pb::SubscriptionMode::try_from(c.mode) {
        Ok(pb::SubscriptionMode::Broadcast | pb::SubscriptionMode::Unspecified) => {
            SubscriptionMode::Broadcast
        }
        Ok(pb::SubscriptionMode::Exclusive) => SubscriptionMode::Exclusive,
        Ok(pb::SubscriptionMode::ConsumerGroup) => SubscriptionMode::ConsumerGroup,
        Ok(pb::SubscriptionMode::ReadReceipt) => SubscriptionMode::ReadReceipt,
        Err(_) => return Err(invalid("mode", "unknown value")),
    };
    let given = |ms: Option<u64>| ms.map(Duration::from_millis);
    let commit = c.commit.and_then(|c| c.kind).map(|k| {
        use pb::commit_strategy::Kind;
        match k {
            Kind::Manual(_) => CommitStrategy::Manual,
            Kind::AfterEach(_) => CommitStrategy::AfterEach,
            Kind::AfterBatch(n) => CommitStrategy::AfterBatch(n),
            Kind::PeriodicMs(ms) => CommitStrategy::Periodic(Duration::from_millis(ms)),
        }
    });
    let options = SubscriptionOptions {
        start: Some(start_position(c.start)),
        ack_wait: given(c.ack_wait_ms),
        max_deliveries: c.max_deliveries,
        ordered_by_key: Some(c.ordered_by_key),
        heartbeat_interval: given(c.heartbeat_interval_ms),
        session_timeout: given(c.session_timeout_ms),
        commit,
        unread_timeout: c.unread_timeout_ms.map(Duration::from_millis),
        redeliver_unread: Some(c.redeliver_unread),
        receipt_ttl: given(c.receipt_ttl_ms),
        receipt_cleanup_interval: given(c.receipt_cleanup_interval_ms),
        schema_versions: c.schema_versions.into_iter().collect(),
        strict_versions: c.strict_versions,
        consumer_expiry: c.consumer_expiry_ms.map(Duration::from_millis),
    };
    SubscriptionConfig::from_options(
        stream_name(&c.stream)?,
        subscription_name(&c.name)?,
        mode,
        options,
    )
    .map_err(|e| error_to_status(&e.into()))
}

/// A subscription's configuration as the protocol carries it: the options of other modes
/// are left unset, so that the message can be sent back to create it again.
pub(crate) fn subscription_config_to_pb(c: &SubscriptionConfig) -> pb::SubscriptionConfig {
    use pb::commit_strategy::Kind;
    let group = c.mode == SubscriptionMode::ConsumerGroup;
    let receipts = c.mode == SubscriptionMode::ReadReceipt;
    let when = |yes: bool, ms: u64| yes.then_some(ms);
    pb::SubscriptionConfig {
        stream: c.stream.to_string(),
        name: c.name.to_string(),
        mode: match c.mode {
            SubscriptionMode::Broadcast => pb::SubscriptionMode::Broadcast,
            SubscriptionMode::Exclusive => pb::SubscriptionMode::Exclusive,
            SubscriptionMode::ConsumerGroup => pb::SubscriptionMode::ConsumerGroup,
            SubscriptionMode::ReadReceipt => pb::SubscriptionMode::ReadReceipt,
        } as i32,
        start: Some(start_position_to_pb(&c.start)),
        ack_wait_ms: Some(ms(c.ack_wait)),
        max_deliveries: Some(c.max_deliveries),
        ordered_by_key: c.ordered_by_key,
        heartbeat_interval_ms: when(group, ms(c.heartbeat_interval)),
        session_timeout_ms: when(group, ms(c.session_timeout)),
        commit: group.then(|| pb::CommitStrategy {
            kind: Some(match c.commit {
                CommitStrategy::Manual => Kind::Manual(()),
                CommitStrategy::AfterEach => Kind::AfterEach(()),
                CommitStrategy::AfterBatch(n) => Kind::AfterBatch(n),
                CommitStrategy::Periodic(d) => Kind::PeriodicMs(ms(d)),
            }),
        }),
        unread_timeout_ms: c.unread_timeout.map(ms),
        consumer_expiry_ms: c.consumer_expiry.map(ms),
        redeliver_unread: c.redeliver_unread,
        receipt_ttl_ms: when(receipts, ms(c.receipt_ttl)),
        receipt_cleanup_interval_ms: when(receipts, ms(c.receipt_cleanup_interval)),
        schema_versions: c
            .schema_versions
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        strict_versions: c.strict_versions,
    }
}

fn cursor_to_pb(c: &CursorInfo) -> pb::Cursor {
    pb::Cursor {
        consumer: c
            .consumer
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        floors: c.floors.clone(),
        next: c.next.clone(),
        pending: c.pending,
        lag: c.figures.lag,
        oldest_unacked_age_ms: c.figures.oldest_unacked_age.map(ms),
        last_progress: c.figures.last_progress.map(|t| t.0),
    }
}

/// A subscription with its cursors and lag figures.
pub(crate) fn subscription_info_to_pb(i: &SubscriptionInfo) -> pb::SubscriptionInfo {
    pb::SubscriptionInfo {
        config: Some(subscription_config_to_pb(&i.config)),
        cursors: i.cursors.iter().map(cursor_to_pb).collect(),
        attached: i.attached.iter().map(ToString::to_string).collect(),
        group: i.group.as_ref().map(|g| pb::GroupInfo {
            generation: g.generation,
            owners: g
                .owners
                .iter()
                .map(|o| o.as_ref().map(ToString::to_string).unwrap_or_default())
                .collect(),
            uncommitted: g.uncommitted.clone(),
            members: g
                .members
                .iter()
                .map(|m| pb::GroupMember {
                    consumer: m.consumer.to_string(),
                    partitions: m.partitions.clone(),
                    lag: m.figures.lag,
                    oldest_unacked_age_ms: m.figures.oldest_unacked_age.map(ms),
                    last_progress: m.figures.last_progress.map(|t| t.0),
                })
                .collect(),
        }),
    }
}

/// Where a replay starts, and how it runs.
pub(crate) fn replay(r: &pb::ReplayRequest) -> Result<(ReplayFrom, ReplayOptions), Status> {
    let from = match &r.from {
        None => ReplayFrom::Offset(0),
        Some(pb::replay_request::From::Offset(o)) => ReplayFrom::Offset(*o),
        Some(pb::replay_request::From::Offsets(o)) => {
            ReplayFrom::Offsets(o.positions.iter().map(position).collect())
        }
        Some(pb::replay_request::From::Time(t)) => ReplayFrom::Time(UnixMillis(*t)),
        Some(pb::replay_request::From::Range(pb::TimeRange { start, end })) => {
            ReplayFrom::TimeRange(UnixMillis(*start), UnixMillis(*end))
        }
    };
    let above_zero = |field: &'static str, v: Option<u64>| match v {
        Some(0) => Err(invalid(field, "above 0 when given (unset: the default)")),
        v => Ok(v),
    };
    above_zero(
        "max_events_per_second",
        r.max_events_per_second.map(u64::from),
    )?;
    above_zero("progress_interval_ms", r.progress_interval_ms)?;
    let options = ReplayOptions {
        batch_size: r.batch_size,
        max_events: r.max_events,
        max_events_per_second: r.max_events_per_second,
        event_types: r.event_types.clone(),
        progress_interval: r.progress_interval_ms.map(Duration::from_millis),
        from_first_available: r.from_first_available,
        schema_versions: r
            .schema_versions
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        strict_versions: r.strict_versions,
        // The service sets its own (`ServiceConfig::replay_window`).
        window: None,
    };
    Ok((from, options))
}

/// A schema registration from the request: the JSON Schema and the rules come as JSON text.
pub(crate) fn schema_registration(
    r: pb::RegisterSchemaRequest,
) -> Result<SchemaRegistration, Status> {
    let schema = if r.json_schema.trim().is_empty() {
        None
    } else {
        Some(
            serde_json::from_str(&r.json_schema)
                .map_err(|e| invalid("json_schema", format!("not valid JSON: {e}")))?,
        )
    };
    let rules: Vec<Rule> = if r.rules_json.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&r.rules_json).map_err(|e| {
            invalid(
                "rules_json",
                format!("not a JSON array of rename/add/remove/set/copy rules: {e}"),
            )
        })?
    };
    Ok(SchemaRegistration {
        event_type: r.event_type,
        version: r.version,
        schema,
        rules,
    })
}

/// The registry's content as the response lists it.
pub(crate) fn schemas_to_pb(list: &[SchemaInfo]) -> pb::ListSchemasResponse {
    pb::ListSchemasResponse {
        schemas: list
            .iter()
            .map(|s| pb::SchemaInfo {
                event_type: s.event_type.clone(),
                versions: s
                    .versions
                    .iter()
                    .map(|v| pb::SchemaVersion {
                        version: v.version,
                        json_schema: v
                            .schema
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        rules_json: serde_json::to_string(&v.rules).unwrap_or_default(),
                        function: v.function,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_event_id_names_the_field() {
        let e = pb::NewEvent {
            event_id: "not-a-uuid".into(),
            event_type: "t".into(),
            ..Default::default()
        };
        let s = new_event_from_pb(e, None).expect_err("refused");
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("event_id"), "{}", s.message());
    }

    #[test]
    fn metadata_correlation_fills_only_a_missing_one() {
        let mut e = pb::NewEvent {
            event_type: "t".into(),
            ..Default::default()
        };
        let n = new_event_from_pb(e.clone(), Some("meta")).expect("valid");
        assert_eq!(n.correlation_id.as_deref(), Some("meta"));
        assert_eq!(n.content_type, JSON);
        assert_eq!(n.schema_version, 1);
        e.correlation_id = Some("own".into());
        let n = new_event_from_pb(e, Some("meta")).expect("valid");
        assert_eq!(n.correlation_id.as_deref(), Some("own"));
    }

    #[test]
    fn stream_config_round_trips() {
        let r = pb::CreateStreamRequest {
            name: "orders".into(),
            partitions: Some(4),
            delivery: pb::DeliverySemantics::ExactlyOnce as i32,
            dedup_window_ms: Some(60_000),
            cross_service: true,
            ephemeral: None,
            retention: None,
        };
        let c = stream_config(r.clone()).expect("valid");
        assert_eq!(c.partitions, 4);
        assert_eq!(c.delivery, DeliverySemantics::ExactlyOnce);
        assert_eq!(stream_config_to_pb(&c), r);
    }
}
