//! The management API (SPEC 11): streams, subscriptions, consumers, offset resets, schemas and
//! dead letters, as JSON. Every handler translates to the engine's commands; bad input is a 4xx
//! with an [`ErrorBody`] and changes nothing.

use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody, JsonBody};
use crate::{AppState, now_millis};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tributary_core::{
    AppendOutcome, AppendRequest, Command, ConsumerId, CursorInfo, DeliverySemantics,
    EphemeralLimits, Event, Overflow, Reply, RetentionPolicy, Rule, SchemaRegistration,
    StartPosition, StreamConfig, StreamInfo, StreamKind, StreamName, StreamSpec, SubscriptionInfo,
    SubscriptionMode, SubscriptionName, UnixMillis,
};
use utoipa::{IntoParams, ToSchema};

// ---- views ---------------------------------------------------------------------------------

/// One partition of a stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionView {
    /// The partition.
    pub partition: u32,
    /// The first offset still held.
    pub first_offset: u64,
    /// The offset the next event will get.
    pub next_offset: u64,
    /// The last offset held (`null` when empty).
    pub last_offset: Option<u64>,
    /// Events held.
    pub length: u64,
    /// Cross-service streams: the relay position, every offset below it confirmed by the
    /// broker (`null` for other streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_offset: Option<u64>,
}

/// An ephemeral stream's bounds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EphemeralView {
    /// Most events held.
    #[schema(minimum = 1)]
    pub max_events: u64,
    /// Most bytes held.
    #[schema(minimum = 1)]
    pub max_bytes: u64,
    /// `reject` (default) or `drop_oldest` when full.
    #[serde(default)]
    pub overflow: OverflowView,
}

/// What a full ephemeral stream does.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverflowView {
    /// The producer gets `STREAM_FULL`.
    #[default]
    Reject,
    /// The oldest events go.
    DropOldest,
}

/// Delivery semantics.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryView {
    /// No acks kept.
    AtMostOnce,
    /// Redelivered until acknowledged (default).
    AtLeastOnce,
    /// At least once with producer dedup required: a dedup window above 0, and a producer
    /// `event_id` on every appended event; consumers use the inbox or their own idempotence.
    ExactlyOnce,
}

/// A stream as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamView {
    /// Its name.
    pub name: String,
    /// `persistent` or `ephemeral`.
    pub kind: String,
    /// Whether its events survive a restart (`false`: ephemeral, in memory only).
    pub durable: bool,
    /// Partitions.
    pub partitions: u32,
    /// Events held, over all partitions.
    pub length: u64,
    /// The lowest first offset over the partitions.
    pub first_offset: u64,
    /// The highest last offset over the partitions (`null` when empty).
    pub last_offset: Option<u64>,
    /// Number of subscriptions.
    pub subscription_count: usize,
    /// Delivery semantics.
    pub delivery: DeliveryView,
    /// Dedup window in milliseconds (0: off).
    pub dedup_window_ms: u64,
    /// Mirrored to the message broker.
    pub cross_service: bool,
    /// Cross-service streams: events not yet confirmed by the broker, over all partitions
    /// (absent for other streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_lag: Option<u64>,
    /// An ephemeral stream's bounds.
    pub ephemeral: Option<EphemeralView>,
    /// Each partition.
    pub partition_detail: Vec<PartitionView>,
}

fn delivery_view(d: DeliverySemantics) -> DeliveryView {
    match d {
        DeliverySemantics::AtMostOnce => DeliveryView::AtMostOnce,
        DeliverySemantics::AtLeastOnce => DeliveryView::AtLeastOnce,
        DeliverySemantics::ExactlyOnce => DeliveryView::ExactlyOnce,
    }
}

impl From<&StreamInfo> for StreamView {
    fn from(s: &StreamInfo) -> StreamView {
        let partition_detail: Vec<PartitionView> = s
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionView {
                partition: i as u32,
                first_offset: p.first,
                next_offset: p.next,
                last_offset: (p.next > p.first).then(|| p.next - 1),
                length: p.next - p.first,
                relay_offset: s.relay.as_ref().and_then(|r| r.get(i).copied()),
            })
            .collect();
        let (kind, ephemeral) = match &s.config.kind {
            StreamKind::Persistent => ("persistent", None),
            StreamKind::Ephemeral(e) => (
                "ephemeral",
                Some(EphemeralView {
                    max_events: e.max_events,
                    max_bytes: e.max_bytes,
                    overflow: match e.overflow {
                        Overflow::Reject => OverflowView::Reject,
                        Overflow::DropOldest => OverflowView::DropOldest,
                    },
                }),
            ),
        };
        StreamView {
            name: s.config.name.to_string(),
            kind: kind.into(),
            durable: ephemeral.is_none(),
            partitions: s.config.partitions,
            length: s.length(),
            first_offset: partition_detail
                .iter()
                .map(|p| p.first_offset)
                .min()
                .unwrap_or(0),
            last_offset: partition_detail.iter().filter_map(|p| p.last_offset).max(),
            subscription_count: s.subscriptions,
            delivery: delivery_view(s.config.delivery),
            dedup_window_ms: s.config.dedup_window.as_millis() as u64,
            cross_service: s.config.scope == tributary_core::Scope::CrossService,
            relay_lag: crate::relay_lag(s),
            ephemeral,
            partition_detail,
        }
    }
}

/// A retention policy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    /// Events older than this (ms) go.
    #[schema(minimum = 1)]
    pub max_age_ms: Option<u64>,
    /// At most this many events per partition.
    #[schema(minimum = 1)]
    pub max_events: Option<u64>,
    /// At most this many bytes per partition.
    #[schema(minimum = 1)]
    pub max_bytes: Option<u64>,
    /// Never remove what a subscription has not acknowledged.
    #[serde(default)]
    pub keep_unconsumed: bool,
}

/// A stream to create. Unset fields take SPEC's defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// `[a-z0-9][a-z0-9._-]{0,127}`.
    #[schema(
        pattern = r"^[a-z0-9][a-z0-9._-]{0,127}$",
        min_length = 1,
        max_length = 128
    )]
    pub name: String,
    /// Partitions (1; at most the server's `max_partitions`, 1024 by default; ephemeral
    /// streams have one).
    #[schema(minimum = 1, maximum = 1024)]
    pub partitions: Option<u32>,
    /// Delivery semantics (`at_least_once`).
    pub delivery: Option<DeliveryView>,
    /// Dedup window in ms (600000; 0 turns it off, refused for `exactly_once`).
    pub dedup_window_ms: Option<u64>,
    /// Mirror to the message broker.
    #[serde(default)]
    pub cross_service: bool,
    /// In memory only, with these bounds.
    pub ephemeral: Option<EphemeralView>,
    /// Retention (persistent streams).
    pub retention: Option<RetentionBody>,
}

impl CreateStream {
    fn config(self) -> Result<StreamConfig, ApiError> {
        let name = StreamName::new(&self.name).map_err(|e| ApiError::from(e).field("name"))?;
        Ok(StreamSpec {
            partitions: self.partitions,
            delivery: self.delivery.map(|d| match d {
                DeliveryView::AtMostOnce => DeliverySemantics::AtMostOnce,
                DeliveryView::AtLeastOnce => DeliverySemantics::AtLeastOnce,
                DeliveryView::ExactlyOnce => DeliverySemantics::ExactlyOnce,
            }),
            dedup_window: self.dedup_window_ms.map(Duration::from_millis),
            cross_service: self.cross_service,
            ephemeral: self.ephemeral.map(|e| EphemeralLimits {
                max_events: e.max_events,
                max_bytes: e.max_bytes,
                overflow: match e.overflow {
                    OverflowView::Reject => Overflow::Reject,
                    OverflowView::DropOldest => Overflow::DropOldest,
                },
            }),
            retention: self.retention.map(|r| RetentionPolicy {
                max_age: r.max_age_ms.map(Duration::from_millis),
                max_events: r.max_events,
                max_bytes: r.max_bytes,
                keep_unconsumed: r.keep_unconsumed,
            }),
        }
        .into_config(name))
    }
}

/// One cursor of a subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct CursorView {
    /// Broadcast and read receipts: whose; `null`: the shared position.
    pub consumer: Option<String>,
    /// Per partition, the committed position (lowest offset not acknowledged).
    pub committed: Vec<u64>,
    /// Per partition, the next offset to deliver fresh.
    pub next: Vec<u64>,
    /// Events delivered and not acknowledged, or waiting for redelivery.
    pub pending: u64,
    /// Events between the committed position and the head.
    pub lag: u64,
    /// When it last acknowledged (Unix ms), in this server's life.
    pub last_progress: Option<u64>,
}

/// A subscription as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// Its stream.
    pub stream: String,
    /// Its name.
    pub name: String,
    /// `broadcast`, `exclusive`, `consumer_group` or `read_receipt`.
    pub mode: String,
    /// Ack wait in ms.
    pub ack_wait_ms: u64,
    /// Deliveries before the dead letter stream.
    pub max_deliveries: u32,
    /// Consumers attached now.
    pub attached: Vec<String>,
    /// The largest lag of its positions.
    pub lag: u64,
    /// Its latest progress (Unix ms).
    pub last_progress: Option<u64>,
    /// Consumer groups: the generation.
    pub generation: Option<u64>,
    /// Broadcast and read receipts: a consumer detached longer than this (ms) loses its
    /// position (`null`: the server's default; 0: never).
    pub consumer_expiry_ms: Option<u64>,
    /// Its positions.
    pub cursors: Vec<CursorView>,
}

fn mode_name(m: SubscriptionMode) -> &'static str {
    match m {
        SubscriptionMode::Broadcast => "broadcast",
        SubscriptionMode::Exclusive => "exclusive",
        SubscriptionMode::ConsumerGroup => "consumer_group",
        SubscriptionMode::ReadReceipt => "read_receipt",
    }
}

fn cursor_view(c: &CursorInfo) -> CursorView {
    CursorView {
        consumer: c.consumer.as_ref().map(|c| c.to_string()),
        committed: c.floors.clone(),
        next: c.next.clone(),
        pending: c.pending,
        lag: c.figures.lag,
        last_progress: c.figures.last_progress.map(|m| m.0),
    }
}

impl From<&SubscriptionInfo> for SubscriptionView {
    fn from(s: &SubscriptionInfo) -> SubscriptionView {
        SubscriptionView {
            stream: s.config.stream.to_string(),
            name: s.config.name.to_string(),
            mode: mode_name(s.config.mode).into(),
            ack_wait_ms: s.config.ack_wait.as_millis() as u64,
            max_deliveries: s.config.max_deliveries,
            attached: s.attached.iter().map(|c| c.to_string()).collect(),
            lag: s.figures.lag,
            last_progress: s.figures.last_progress.map(|m| m.0),
            generation: s.group.as_ref().map(|g| g.generation),
            consumer_expiry_ms: s.config.consumer_expiry.map(|d| d.as_millis() as u64),
            cursors: s.cursors.iter().map(cursor_view).collect(),
        }
    }
}

/// A partition's committed and next offsets for one consumer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionOffset {
    /// The partition.
    pub partition: u32,
    /// The committed position: the lowest offset not acknowledged.
    pub committed: u64,
    /// The next offset to deliver fresh.
    pub next: u64,
}

/// Where one consumer stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumerView {
    /// The stream.
    pub stream: String,
    /// The subscription.
    pub subscription: String,
    /// The consumer.
    pub consumer: String,
    /// The committed position of its first partition (the only one of a one-partition stream):
    /// the lowest offset it has not acknowledged. `offsets` has every partition.
    pub offset: u64,
    /// Per partition it reads.
    pub offsets: Vec<PartitionOffset>,
    /// Events between its committed position and the head.
    pub lag: u64,
    /// When it last acknowledged (Unix ms), in this server's life; `null`: not since start.
    pub last_updated: Option<u64>,
    /// Whether it has lag and has made no progress for the degraded stall threshold.
    pub is_stalled: bool,
    /// How long it has had lag without progress (ms).
    pub stalled_for_ms: u64,
    /// Whether it is attached now.
    pub attached: bool,
    /// Exclusive and consumer group subscriptions share one position among their consumers:
    /// then these figures are the shared position's (exclusive) or the member's partitions'.
    pub shared_position: bool,
}

/// Where to move a consumer: exactly one of `offset` and `timestamp` (its OpenAPI schema is
/// written out in `crate::doc`, as a `oneOf`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetOffset {
    /// The offset to read next, in every partition (at most the stream's last offset + 1).
    pub offset: Option<u64>,
    /// The first event at or after this time (Unix ms).
    pub timestamp: Option<u64>,
}

/// A registered version of an event type.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaVersionView {
    /// The version.
    pub version: u32,
    /// Its JSON Schema.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// The rules that upcast the version before to it.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<Value>,
    /// Whether its upcaster is a Rust function (embedded use).
    pub function: bool,
}

/// An event type with its versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaView {
    /// The event type.
    pub event_type: String,
    /// Versions 1..=n.
    pub versions: Vec<SchemaVersionView>,
}

/// A version to register: the latest plus one, compatible with it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterSchema {
    /// The event type (1 to 256 bytes, the server's `max_event_type_bytes`).
    #[schema(min_length = 1, max_length = 256)]
    pub event_type: String,
    /// The version: the latest registered plus one (1 for a new type); another is refused
    /// with 409 `SCHEMA_VERSION_CONFLICT`, unless it is a registered version again, unchanged.
    #[schema(minimum = 1)]
    pub version: u32,
    /// Its JSON Schema.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Upcasting rules from the version before (none for version 1), e.g.
    /// `{"op": "rename", "from": "name", "to": "customer"}`.
    #[serde(default)]
    pub rules: Vec<RuleView>,
}

/// One upcasting rule (SPEC 7). Fields are top-level keys of the JSON object, or dotted paths
/// (`"address.city"`) into nested objects.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleView {
    /// Moves `from` to `to` (replacing `to`), if `from` is there.
    Rename {
        /// The old field.
        from: String,
        /// The new field.
        to: String,
    },
    /// Sets `field` to `default` if it is missing.
    Add {
        /// The field.
        field: String,
        /// Its value when missing.
        default: Value,
    },
    /// Removes `field`.
    Remove {
        /// The field.
        field: String,
    },
    /// Sets `field` to `value`, always.
    Set {
        /// The field.
        field: String,
        /// Its value.
        value: Value,
    },
    /// Copies `from` to `to` (replacing `to`), if `from` is there.
    Copy {
        /// The source field.
        from: String,
        /// The target field.
        to: String,
    },
}

impl From<RuleView> for Rule {
    fn from(r: RuleView) -> Rule {
        match r {
            RuleView::Rename { from, to } => Rule::Rename { from, to },
            RuleView::Add { field, default } => Rule::Add { field, default },
            RuleView::Remove { field } => Rule::Remove { field },
            RuleView::Set { field, value } => Rule::Set { field, value },
            RuleView::Copy { from, to } => Rule::Copy { from, to },
        }
    }
}

/// A dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Its offset in the dead letter stream.
    pub offset: u64,
    /// Its id in the dead letter stream.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// When it was dead-lettered (Unix ms).
    pub timestamp: u64,
    /// Where the event was in its stream.
    pub original_partition: Option<u32>,
    /// Where the event was in its stream.
    pub original_offset: Option<u64>,
    /// The event's own id.
    pub original_event_id: Option<String>,
    /// The subscription that gave up on it.
    pub subscription: Option<String>,
    /// Deliveries made.
    pub deliveries: Option<u32>,
    /// The last error.
    pub last_error: Option<String>,
    /// The correlation id.
    pub correlation_id: Option<String>,
    /// Every header.
    pub headers: BTreeMap<String, String>,
    /// The content type.
    pub content_type: String,
    /// The payload, when it is JSON.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// The payload in base64, when it is not JSON.
    pub payload_base64: Option<String>,
}

fn dead_letter_view(e: &Event) -> DeadLetterView {
    let h = |k: &str| e.headers.get(k).cloned();
    let data = (e.content_type == tributary_core::JSON)
        .then(|| serde_json::from_slice::<Value>(&e.payload).ok())
        .flatten();
    DeadLetterView {
        offset: e.offset,
        event_id: e.event_id.to_string(),
        event_type: e.event_type.clone(),
        timestamp: e.timestamp.0,
        original_partition: h("x-original-partition").and_then(|v| v.parse().ok()),
        original_offset: h("x-original-offset").and_then(|v| v.parse().ok()),
        original_event_id: h("x-original-event-id"),
        subscription: h("x-subscription"),
        deliveries: h("x-deliveries").and_then(|v| v.parse().ok()),
        last_error: h("x-last-error"),
        correlation_id: e.correlation_id.clone(),
        headers: e.headers.clone(),
        content_type: e.content_type.clone(),
        payload_base64: data
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(&e.payload)),
        data,
    }
}

/// A page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    /// The source stream.
    pub stream: String,
    /// Its dead letter stream.
    pub dead_letter_stream: String,
    /// The dead letters, by offset.
    pub dead_letters: Vec<DeadLetterView>,
    /// The `from` of the next page (`null`: none after this one).
    pub next_from: Option<u64>,
}

/// Which dead letters to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// First offset in the dead letter stream (0).
    pub from: Option<u64>,
    /// Most dead letters (100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Which dead letters to put back into the source stream: `offsets`, or a range (`from`,
/// `limit`; by default the first 100).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayDeadLetters {
    /// These offsets of the dead letter stream (1 to 1000 of them).
    #[schema(min_items = 1, max_items = 1000)]
    pub offsets: Option<Vec<u64>>,
    /// From this offset (0).
    pub from: Option<u64>,
    /// At most this many (100, at most 1000).
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// One dead letter put back.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// Its offset in the dead letter stream.
    pub dead_letter_offset: u64,
    /// The partition it went to.
    pub partition: u32,
    /// Its new offset (for a duplicate, the offset of the earlier replay).
    pub offset: u64,
    /// Already replayed within the dedup window: nothing written.
    pub duplicate: bool,
}

/// The outcome of a replay of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    /// The source stream.
    pub stream: String,
    /// Each dead letter, in order.
    pub replayed: Vec<Replayed>,
}

// ---- helpers -------------------------------------------------------------------------------

fn stream_name(name: &str) -> Result<StreamName, ApiError> {
    StreamName::new(name).map_err(|e| ApiError::from(e).field("name"))
}

fn sub_name(name: &str) -> Result<SubscriptionName, ApiError> {
    SubscriptionName::new(name).map_err(|e| ApiError::from(e).field("subscription"))
}

fn consumer_id(name: &str) -> Result<ConsumerId, ApiError> {
    ConsumerId::new(name).map_err(|e| ApiError::from(e).field("consumer"))
}

async fn describe_stream(st: &AppState, name: &StreamName) -> Result<StreamInfo, ApiError> {
    match st
        .engine
        .call(Command::DescribeStream(name.clone()))
        .await?
    {
        Reply::Stream(s) => Ok(s),
        _ => Err(ApiError::unexpected()),
    }
}

async fn describe_subscription(
    st: &AppState,
    stream: &StreamName,
    sub: &SubscriptionName,
) -> Result<SubscriptionInfo, ApiError> {
    let cmd = Command::DescribeSubscription {
        stream: stream.clone(),
        subscription: sub.clone(),
    };
    match st.engine.call(cmd).await? {
        Reply::Subscription(s) => Ok(*s),
        _ => Err(ApiError::unexpected()),
    }
}

// ---- streams -------------------------------------------------------------------------------

/// Every stream.
#[utoipa::path(get, path = "/api/event-streams", tag = "streams",
    responses((status = 200, description = "Every stream, by name", body = Vec<StreamView>)))]
pub async fn list_streams(State(st): State<AppState>) -> Result<Json<Vec<StreamView>>, ApiError> {
    match st.engine.call(Command::ListStreams).await? {
        Reply::Streams(list) => Ok(Json(list.iter().map(StreamView::from).collect())),
        _ => Err(ApiError::unexpected()),
    }
}

/// Creates a stream.
#[utoipa::path(post, path = "/api/event-streams", tag = "streams", request_body = CreateStream,
    responses(
        (status = 201, description = "Created", body = StreamView),
        (status = 400, description = "Bad input or malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 409, description = "The stream exists", body = ErrorBody)))]
pub async fn create_stream(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<CreateStream>,
) -> Result<(StatusCode, Json<StreamView>), ApiError> {
    let config = body.config()?;
    let name = config.name.clone();
    st.engine.call(Command::CreateStream(config)).await?;
    tracing::info!(code = 1001, stream = %name, via = "http", "stream created");
    let info = describe_stream(&st, &name).await?;
    Ok((StatusCode::CREATED, Json(StreamView::from(&info))))
}

/// One stream.
#[utoipa::path(get, path = "/api/event-streams/{name}", tag = "streams",
    params(("name" = String, Path, description = "The stream")),
    responses(
        (status = 200, description = "The stream", body = StreamView),
        (status = 404, description = "No such stream", body = ErrorBody)))]
pub async fn get_stream(
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<StreamView>, ApiError> {
    let info = describe_stream(&st, &stream_name(&name)?).await?;
    Ok(Json(StreamView::from(&info)))
}

/// Deletes a stream, its subscriptions and its events.
#[utoipa::path(delete, path = "/api/event-streams/{name}", tag = "streams",
    params(("name" = String, Path, description = "The stream")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody)))]
pub async fn delete_stream(
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let name = stream_name(&name)?;
    st.engine.call(Command::DeleteStream(name.clone())).await?;
    tracing::info!(code = 1003, stream = %name, via = "http", "stream deleted");
    Ok(StatusCode::NO_CONTENT)
}

// ---- subscriptions and consumers -----------------------------------------------------------

/// A stream's subscriptions.
#[utoipa::path(get, path = "/api/event-streams/{name}/subscriptions", tag = "subscriptions",
    params(("name" = String, Path, description = "The stream")),
    responses(
        (status = 200, description = "Its subscriptions, by name", body = Vec<SubscriptionView>),
        (status = 404, description = "No such stream", body = ErrorBody)))]
pub async fn list_subscriptions(
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<SubscriptionView>>, ApiError> {
    let name = stream_name(&name)?;
    match st.engine.call(Command::ListSubscriptions(name)).await? {
        Reply::Subscriptions(list) => Ok(Json(list.iter().map(SubscriptionView::from).collect())),
        _ => Err(ApiError::unexpected()),
    }
}

/// One subscription.
#[utoipa::path(get, path = "/api/event-streams/{name}/subscriptions/{id}", tag = "subscriptions",
    params(("name" = String, Path, description = "The stream"),
           ("id" = String, Path, description = "The subscription")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView),
        (status = 404, description = "No such stream or subscription", body = ErrorBody)))]
pub async fn get_subscription(
    State(st): State<AppState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let info = describe_subscription(&st, &stream_name(&name)?, &sub_name(&id)?).await?;
    Ok(Json(SubscriptionView::from(&info)))
}

fn consumer_not_found(stream: &str, sub: &str, consumer: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "CONSUMER_NOT_FOUND",
        format!("consumer {consumer} not found in subscription {sub} of stream {stream}"),
    )
    .field("consumer")
}

/// Where a consumer stands in a subscription, or `None` when it has no position there
/// (broadcast: no cursor; exclusive: not attached; consumer group: not a member).
fn consumer_view(
    st: &AppState,
    info: &SubscriptionInfo,
    consumer: &ConsumerId,
) -> Option<ConsumerView> {
    let attached = info.attached.contains(consumer);
    let (offsets, figures, shared) = match info.config.mode {
        SubscriptionMode::Broadcast | SubscriptionMode::ReadReceipt => {
            let c = info
                .cursors
                .iter()
                .find(|c| c.consumer.as_ref() == Some(consumer))?;
            (all_partitions(c, None), c.figures, false)
        }
        SubscriptionMode::Exclusive => {
            if !attached {
                return None;
            }
            let c = info.cursors.first()?;
            (all_partitions(c, None), c.figures, true)
        }
        SubscriptionMode::ConsumerGroup => {
            let m = info
                .group
                .as_ref()?
                .members
                .iter()
                .find(|m| &m.consumer == consumer)?;
            let c = info.cursors.first()?;
            (all_partitions(c, Some(&m.partitions)), m.figures, true)
        }
    };
    let stalled = crate::health::stalled_for(&figures, now_millis(), st.started);
    Some(ConsumerView {
        stream: info.config.stream.to_string(),
        subscription: info.config.name.to_string(),
        consumer: consumer.to_string(),
        offset: offsets.first().map_or(0, |p| p.committed),
        offsets,
        lag: figures.lag,
        last_updated: figures.last_progress.map(|m| m.0),
        is_stalled: figures.lag > 0 && stalled >= st.health.stall_degraded,
        stalled_for_ms: stalled.as_millis() as u64,
        attached,
        shared_position: shared,
    })
}

fn all_partitions(c: &CursorInfo, only: Option<&[u32]>) -> Vec<PartitionOffset> {
    c.floors
        .iter()
        .zip(&c.next)
        .enumerate()
        .map(|(p, (f, n))| PartitionOffset {
            partition: p as u32,
            committed: *f,
            next: *n,
        })
        .filter(|p| only.is_none_or(|o| o.contains(&p.partition)))
        .collect()
}

/// Where a consumer stands: offset, lag, last progress, stalled or not.
#[utoipa::path(get, path = "/api/event-streams/{name}/subscriptions/{id}/consumers/{consumer}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The stream"),
           ("id" = String, Path, description = "The subscription"),
           ("consumer" = String, Path, description = "The consumer")),
    responses(
        (status = 200, description = "The consumer", body = ConsumerView),
        (status = 404, description = "No such stream, subscription or consumer", body = ErrorBody)))]
pub async fn get_consumer(
    State(st): State<AppState>,
    ApiPath((name, id, consumer)): ApiPath<(String, String, String)>,
) -> Result<Json<ConsumerView>, ApiError> {
    let (stream, sub, c) = (stream_name(&name)?, sub_name(&id)?, consumer_id(&consumer)?);
    let info = describe_subscription(&st, &stream, &sub).await?;
    consumer_view(&st, &info, &c)
        .map(Json)
        .ok_or_else(|| consumer_not_found(&name, &id, &consumer))
}

/// Removes a broadcast or read receipt consumer's position (every partition) and its read
/// receipts for good, so that a consumer gone for good no longer counts in lag and health. The
/// consumer must be detached; if it attaches again it starts at the subscription's start.
#[utoipa::path(delete, path = "/api/event-streams/{name}/subscriptions/{id}/consumers/{consumer}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The stream"),
           ("id" = String, Path, description = "The subscription"),
           ("consumer" = String, Path, description = "The consumer")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "An exclusive or consumer group subscription (one shared position, none per consumer)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such stream, subscription or consumer position", body = ErrorBody),
        (status = 409, description = "The consumer is attached (CONSUMER_ATTACHED)", body = ErrorBody),
        (status = 503, description = "Its removal is under way (CONSUMER_REMOVING), or the store is away", body = ErrorBody)))]
pub async fn remove_consumer(
    State(st): State<AppState>,
    ApiPath((name, id, consumer)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let (stream, sub, c) = (stream_name(&name)?, sub_name(&id)?, consumer_id(&consumer)?);
    st.engine
        .call(Command::RemoveConsumer {
            stream,
            subscription: sub,
            consumer: c,
        })
        .await?;
    // Logged by the server as the engine's `ConsumerRemoved` notice (code 2003).
    Ok(StatusCode::NO_CONTENT)
}

/// The start position a reset body names: exactly one of `offset` and `timestamp`; an offset
/// past the end of the stream is refused.
async fn reset_target(
    st: &AppState,
    stream: &StreamName,
    body: &ResetOffset,
) -> Result<StartPosition, ApiError> {
    let to = match (body.offset, body.timestamp) {
        (Some(o), None) => StartPosition::Offset(o),
        (None, Some(t)) => StartPosition::Time(UnixMillis(t)),
        _ => {
            return Err(ApiError::bad_request(
                "offset",
                "give exactly one of offset and timestamp",
            ));
        }
    };
    if let StartPosition::Offset(o) = to {
        let s = describe_stream(st, stream).await?;
        let end = s.partitions.iter().map(|p| p.next).max().unwrap_or(0);
        if o > end {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "OFFSET_OUT_OF_RANGE",
                format!("offset {o} is past the end of stream {stream} (next offset {end})"),
            )
            .field("offset"));
        }
    }
    Ok(to)
}

/// Moves a consumer (broadcast, read receipts: its own position, attached or not) or the
/// subscription's shared position (exclusive: named by an attached consumer; consumer group:
/// by a member) to an offset or a time; the next delivery starts there. An exclusive or
/// consumer group subscription with no such consumer attached is a 404 that names the
/// subscription-level reset, which needs no consumer.
#[utoipa::path(post,
    path = "/api/event-streams/{name}/subscriptions/{id}/consumers/{consumer}/reset-offset",
    tag = "subscriptions", request_body = ResetOffset,
    params(("name" = String, Path, description = "The stream"),
           ("id" = String, Path, description = "The subscription"),
           ("consumer" = String, Path, description = "The consumer")),
    responses(
        (status = 200, description = "Moved; where it stands now", body = ConsumerView),
        (status = 400, description = "Neither or both of offset and timestamp, an offset past the end, malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such stream, subscription or consumer (exclusive and consumer group: not attached; use the subscription's reset-offset)", body = ErrorBody)))]
pub async fn reset_offset(
    State(st): State<AppState>,
    ApiPath((name, id, consumer)): ApiPath<(String, String, String)>,
    JsonBody(body): JsonBody<ResetOffset>,
) -> Result<Json<ConsumerView>, ApiError> {
    let (stream, sub, c) = (stream_name(&name)?, sub_name(&id)?, consumer_id(&consumer)?);
    let info = describe_subscription(&st, &stream, &sub).await?;
    let one_consumer = !info.config.mode.shared_position();
    if consumer_view(&st, &info, &c).is_none() {
        let mut e = consumer_not_found(&name, &id, &consumer);
        if !one_consumer {
            e.body.message = format!(
                "{}; subscription {id} has one shared position: reset it without a consumer at \
                 /api/event-streams/{name}/subscriptions/{id}/reset-offset",
                e.body.message
            );
        }
        return Err(e);
    }
    let to = reset_target(&st, &stream, &body).await?;
    st.engine
        .call(Command::ResetSubscription {
            stream: stream.clone(),
            subscription: sub.clone(),
            consumer: one_consumer.then(|| c.clone()),
            to: to.clone(),
        })
        .await?;
    tracing::info!(code = 2002, stream = %stream, subscription = %sub, consumer = %c, to = ?to, via = "http", "offset reset");
    let info = describe_subscription(&st, &stream, &sub).await?;
    consumer_view(&st, &info, &c)
        .map(Json)
        .ok_or_else(|| consumer_not_found(&name, &id, &consumer))
}

/// Moves a whole subscription to an offset or a time, with or without consumers attached:
/// the shared position of an exclusive or consumer group subscription, and every consumer's
/// position of a broadcast or read receipt one (consumers with no position yet still start at
/// the subscription's start). The next delivery starts there.
#[utoipa::path(post,
    path = "/api/event-streams/{name}/subscriptions/{id}/reset-offset",
    tag = "subscriptions", request_body = ResetOffset,
    params(("name" = String, Path, description = "The stream"),
           ("id" = String, Path, description = "The subscription")),
    responses(
        (status = 200, description = "Moved; the subscription now", body = SubscriptionView),
        (status = 400, description = "Neither or both of offset and timestamp, an offset past the end, malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such stream or subscription", body = ErrorBody)))]
pub async fn reset_subscription_offset(
    State(st): State<AppState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    JsonBody(body): JsonBody<ResetOffset>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let (stream, sub) = (stream_name(&name)?, sub_name(&id)?);
    describe_subscription(&st, &stream, &sub).await?;
    let to = reset_target(&st, &stream, &body).await?;
    st.engine
        .call(Command::ResetSubscription {
            stream: stream.clone(),
            subscription: sub.clone(),
            consumer: None,
            to: to.clone(),
        })
        .await?;
    tracing::info!(code = 2002, stream = %stream, subscription = %sub, to = ?to, via = "http", "offset reset");
    let info = describe_subscription(&st, &stream, &sub).await?;
    Ok(Json(SubscriptionView::from(&info)))
}

// ---- schemas -------------------------------------------------------------------------------

async fn schemas(st: &AppState) -> Result<Vec<SchemaView>, ApiError> {
    match st.engine.call(Command::ListSchemas).await? {
        Reply::Schemas(list) => Ok(list
            .into_iter()
            .map(|s| SchemaView {
                event_type: s.event_type,
                versions: s
                    .versions
                    .into_iter()
                    .map(|v| SchemaVersionView {
                        version: v.version,
                        schema: v.schema,
                        rules: v
                            .rules
                            .iter()
                            .filter_map(|r| serde_json::to_value(r).ok())
                            .collect(),
                        function: v.function,
                    })
                    .collect(),
            })
            .collect()),
        _ => Err(ApiError::unexpected()),
    }
}

/// Every event type with its versions.
#[utoipa::path(get, path = "/api/schemas", tag = "schemas",
    responses((status = 200, description = "The registry", body = Vec<SchemaView>)))]
pub async fn list_schemas(State(st): State<AppState>) -> Result<Json<Vec<SchemaView>>, ApiError> {
    Ok(Json(schemas(&st).await?))
}

/// One event type with its versions.
#[utoipa::path(get, path = "/api/schemas/{event_type}", tag = "schemas",
    params(("event_type" = String, Path, description = "The event type")),
    responses(
        (status = 200, description = "The event type", body = SchemaView),
        (status = 404, description = "Not registered", body = ErrorBody)))]
pub async fn get_schema(
    State(st): State<AppState>,
    ApiPath(event_type): ApiPath<String>,
) -> Result<Json<SchemaView>, ApiError> {
    schemas(&st)
        .await?
        .into_iter()
        .find(|s| s.event_type == event_type)
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "SCHEMA_NOT_FOUND",
                format!("event type {event_type} has no registered version"),
            )
            .field("event_type")
        })
}

/// Registers the next version of an event type.
#[utoipa::path(post, path = "/api/schemas", tag = "schemas", request_body = RegisterSchema,
    responses(
        (status = 201, description = "Registered; the event type now", body = SchemaView),
        (status = 400, description = "Bad input or malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 409, description = "Not the next version, or incompatible", body = ErrorBody)))]
pub async fn register_schema(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<RegisterSchema>,
) -> Result<(StatusCode, Json<SchemaView>), ApiError> {
    let rules = body.rules.into_iter().map(Rule::from).collect();
    let event_type = body.event_type.clone();
    let version = body.version;
    st.engine
        .call(Command::RegisterSchema(SchemaRegistration {
            event_type: body.event_type,
            version: body.version,
            schema: body.schema,
            rules,
        }))
        .await?;
    tracing::info!(code = 6000, event_type = %event_type, version, via = "http", "schema registered");
    let Json(view) = get_schema(State(st), ApiPath(event_type)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

// ---- dead letters --------------------------------------------------------------------------

/// The source stream (it must exist) and its dead letter stream's name.
async fn dead_letter_stream(
    st: &AppState,
    name: &str,
) -> Result<(StreamName, StreamName), ApiError> {
    let stream = stream_name(name)?;
    describe_stream(st, &stream).await?;
    let dlq = stream.dlq().ok_or_else(|| {
        ApiError::bad_request("name", format!("stream {stream} has no dead letter stream"))
    })?;
    Ok((stream, dlq))
}

/// Reads dead letters from partition 0 of the dead letter stream (dead letter streams have
/// one partition); none when it does not exist yet.
async fn read_dead_letters(
    st: &AppState,
    dlq: &StreamName,
    from: u64,
    max: u32,
) -> Result<Vec<std::sync::Arc<Event>>, ApiError> {
    let cmd = Command::Read {
        stream: dlq.clone(),
        partition: 0,
        from,
        max,
    };
    match st.engine.call(cmd).await {
        Ok(Reply::Events(events)) => Ok(events),
        Err(tributary_core::Error::StreamNotFound(_)) => Ok(Vec::new()),
        Err(tributary_core::Error::Truncated {
            first_available, ..
        }) => {
            Box::pin(read_dead_letters(
                st,
                dlq,
                first_available.max(from + 1),
                max,
            ))
            .await
        }
        Err(e) => Err(e.into()),
        Ok(_) => Err(ApiError::unexpected()),
    }
}

fn limit_of(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(100) {
        l @ 1..=1000 => Ok(l),
        l => Err(ApiError::bad_request(
            "limit",
            format!("limit: {l} is outside 1..=1000"),
        )),
    }
}

/// A stream's dead letters (events moved to `<stream>.dlq`), by offset.
#[utoipa::path(get, path = "/api/event-streams/{name}/dead-letters", tag = "dead letters",
    params(("name" = String, Path, description = "The source stream"), DeadLetterQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterPage),
        (status = 400, description = "Bad limit", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody)))]
pub async fn list_dead_letters(
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let limit = limit_of(q.limit)?;
    let (stream, dlq) = dead_letter_stream(&st, &name).await?;
    let events = read_dead_letters(&st, &dlq, q.from.unwrap_or(0), limit).await?;
    let next_from = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.offset + 1))
        .flatten();
    Ok(Json(DeadLetterPage {
        stream: stream.to_string(),
        dead_letter_stream: dlq.to_string(),
        dead_letters: events.iter().map(|e| dead_letter_view(e)).collect(),
        next_from,
    }))
}

/// Puts dead letters back into their source stream (without the dead-letter headers, with
/// `x-replayed-from`); the same dead letter replayed twice within the stream's dedup window
/// is appended once. The dead letters stay where they are.
#[utoipa::path(post, path = "/api/event-streams/{name}/dead-letters/replay", tag = "dead letters",
    params(("name" = String, Path, description = "The source stream")),
    request_body = ReplayDeadLetters,
    responses(
        (status = 200, description = "Replayed", body = ReplayResult),
        (status = 400, description = "Bad input or malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such stream, or no dead letter at an offset named", body = ErrorBody)))]
pub async fn replay_dead_letters(
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<ReplayDeadLetters>,
) -> Result<Json<ReplayResult>, ApiError> {
    let (stream, dlq) = dead_letter_stream(&st, &name).await?;
    let events: Vec<std::sync::Arc<Event>> = match &body.offsets {
        Some(offsets) => {
            if offsets.is_empty() || offsets.len() > 1000 {
                return Err(ApiError::bad_request(
                    "offsets",
                    format!("offsets: {} entries is outside 1..=1000", offsets.len()),
                ));
            }
            // Offsets the dead letter stream does not hold are refused before anything is read.
            let held = match st.engine.call(Command::DescribeStream(dlq.clone())).await {
                Ok(Reply::Stream(s)) => s.partitions.first().map_or(0..0, |p| p.first..p.next),
                Err(tributary_core::Error::StreamNotFound(_)) => 0..0,
                Err(e) => return Err(e.into()),
                Ok(_) => return Err(ApiError::unexpected()),
            };
            if let Some(o) = offsets.iter().find(|o| !held.contains(o)) {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "DEAD_LETTER_NOT_FOUND",
                    format!("{dlq} has no event at offset {o}"),
                )
                .field("offsets"));
            }
            let mut found = Vec::with_capacity(offsets.len());
            for &o in offsets {
                let e = read_dead_letters(&st, &dlq, o, 1)
                    .await?
                    .into_iter()
                    .find(|e| e.offset == o)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            "DEAD_LETTER_NOT_FOUND",
                            format!("{dlq} has no event at offset {o}"),
                        )
                        .field("offsets")
                    })?;
                found.push(e);
            }
            found
        }
        None => read_dead_letters(&st, &dlq, body.from.unwrap_or(0), limit_of(body.limit)?).await?,
    };
    let mut new_events = Vec::with_capacity(events.len());
    for e in &events {
        let (target, ne) = e.dead_letter_replay()?;
        if target != stream {
            return Err(ApiError::bad_request(
                "offsets",
                format!("{dlq} offset {} belongs to stream {target}", e.offset),
            ));
        }
        new_events.push(ne);
    }
    let ids: Vec<String> = new_events
        .iter()
        .map(|e| e.event_id.map(|i| i.to_string()).unwrap_or_default())
        .collect();
    if new_events.is_empty() {
        return Ok(Json(ReplayResult {
            stream: stream.to_string(),
            replayed: Vec::new(),
        }));
    }
    let outcomes = match st
        .engine
        .call(Command::Append(AppendRequest {
            stream: stream.clone(),
            events: new_events,
            expected_offset: None,
        }))
        .await?
    {
        Reply::Appended(o) => o,
        _ => return Err(ApiError::unexpected()),
    };
    let replayed: Vec<Replayed> = events
        .iter()
        .zip(&outcomes)
        .zip(&ids)
        .map(|((e, o), id)| {
            let (p, duplicate) = match o {
                AppendOutcome::Appended(p) => (*p, false),
                AppendOutcome::Duplicate { original } => (*original, true),
            };
            tracing::info!(
                code = 5004,
                stream = %stream,
                partition = p.partition,
                offset = p.offset,
                event_id = %id,
                correlation_id = e.correlation_id.as_deref().unwrap_or(""),
                dead_letter_offset = e.offset,
                duplicate,
                "dead letter replayed into its stream"
            );
            Replayed {
                dead_letter_offset: e.offset,
                partition: p.partition,
                offset: p.offset,
                duplicate,
            }
        })
        .collect();
    Ok(Json(ReplayResult {
        stream: stream.to_string(),
        replayed,
    }))
}
