//! Inbound: another service's cross-service stream consumed into a local stream (SPEC 9).
//!
//! Per binding (remote stream, subscription), on a connection of its own:
//!
//! - topology, declared on every connection: the remote's exchange `<prefix>.<remote>` (durable
//!   topic, as its relay declares it), a durable queue `<prefix>.<remote>:<subscription>` bound
//!   to it with each routing key of the binding (default `#`, every event type), whose
//!   dead-letter exchange is `<prefix>.<remote>:<subscription>:dlx` (durable fanout) with the
//!   durable queue `<prefix>.<remote>:<subscription>:dlq` bound to it;
//! - prefetch = the binding's `max_in_flight`, manual acks;
//! - each message becomes one local append whose event id is the message's `message_id`, in
//!   the order the broker delivers them (appends are pipelined, their replies awaited in
//!   order); the message is acknowledged only once its append's reply came back: appended, or
//!   a duplicate (the local stream's dedup window already holds its id, so a redelivery is
//!   never a second event);
//! - a message that cannot be an event (see [`event_of`]) and one the local stream refuses as
//!   invalid are rejected without requeue: the broker moves them to the dead-letter queue;
//! - any other failure (the connection, the local store) ends the session: the channel
//!   closes, the broker requeues what was not acknowledged, in order, and a new session starts
//!   after a back-off of 100 ms x 2^n capped at 30 s. What was appended but not acknowledged
//!   comes again and is a duplicate.

use crate::status::{DeadReason, InboundStatus};
use crate::{AmqpConfig, BACKOFF_BASE, BACKOFF_MAX, RESERVED};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary_core::{
    AppendOutcome, AppendRequest, Error, EventId, JSON, NewEvent, StreamName, SubscriptionName,
};

/// A boxed future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future of an append's outcomes.
pub type AppendReply = BoxFuture<Result<Vec<AppendOutcome>, Error>>;

/// How pending appends are drained when a binding stops: what has not answered by then is
/// left unacknowledged (the broker delivers it again; it is then a duplicate).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One remote stream consumed into a local stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundBinding {
    /// The remote service's cross-service stream (its exchange is `<prefix>.<remote>`).
    pub remote: StreamName,
    /// The subscription: one durable queue per (remote, subscription).
    pub subscription: SubscriptionName,
    /// The local stream the events are appended to (it must deduplicate: a dedup window
    /// above 0).
    pub local: StreamName,
    /// Binding keys on the remote exchange (topic patterns over the event type); `#`: all.
    pub routing_keys: Vec<String>,
    /// Messages delivered and not yet acknowledged at most (the AMQP prefetch).
    pub max_in_flight: u16,
}

impl InboundBinding {
    /// A binding of every event type with a prefetch of 1000.
    pub fn new(remote: StreamName, subscription: SubscriptionName, local: StreamName) -> Self {
        InboundBinding {
            remote,
            subscription,
            local,
            routing_keys: vec!["#".into()],
            max_in_flight: 1000,
        }
    }

    /// The durable queue: `<prefix>.<remote>:<subscription>`.
    pub fn queue(&self, config: &AmqpConfig) -> String {
        format!("{}.{}:{}", config.prefix, self.remote, self.subscription)
    }

    /// The dead-letter exchange: `<queue>:dlx`.
    pub fn dead_letter_exchange(&self, config: &AmqpConfig) -> String {
        format!("{}:dlx", self.queue(config))
    }

    /// The dead-letter queue: `<queue>:dlq`.
    pub fn dead_letter_queue(&self, config: &AmqpConfig) -> String {
        format!("{}:dlq", self.queue(config))
    }
}

/// The local side of an inbound binding: appends to the local stream, as the executor does
/// them.
pub trait LocalAppender: Send + Sync + 'static {
    /// Queues `request` (waiting while the engine's queue is full) and returns the future of
    /// its outcomes: requests queued one after another reach the engine in that order.
    fn append(&self, request: AppendRequest) -> BoxFuture<Result<AppendReply, Error>>;
}

/// Why a message is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// The class (the metric's label).
    pub reason: DeadReason,
    /// What is wrong, for the log.
    pub detail: String,
}

fn poison(reason: DeadReason, detail: impl Into<String>) -> Poison {
    Poison {
        reason,
        detail: detail.into(),
    }
}

/// The text of a header value: strings (UTF-8), numbers and booleans; `None` for the
/// values that carry no text (tables, arrays, void: the broker's own bookkeeping such as
/// `x-death`).
fn text_of(v: &AMQPValue) -> Result<Option<String>, ()> {
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map(Some).map_err(|_| ());
    Ok(Some(match v {
        AMQPValue::LongString(s) => return utf8(s.as_bytes()),
        AMQPValue::ByteArray(b) => return utf8(b.as_slice()),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::DecimalValue(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::Void => return Ok(None),
    }))
}

/// An integer header.
fn int_of(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        AMQPValue::ShortString(s) => s.as_str().parse().ok()?,
        _ => return None,
    })
}

/// The headers a received event gets for where it came from, when the message says.
pub const SOURCE_HEADERS: [&str; 4] = [
    "x-source-stream",
    "x-source-partition",
    "x-source-offset",
    "x-source-timestamp-ms",
];

/// The event a received message stands for (the envelope of [`crate::message_of`] read back):
///
/// - event id = `message_id` (a UUID; without one the message is poison, [`DeadReason::NoId`]:
///   it could not be deduplicated);
/// - event type = header `x-event-type`, else the `type` property (required);
/// - schema version = `x-schema-version` (1 when absent), key = `x-key` (bytes),
///   correlation id = `x-correlation-id`, else the `correlation_id` property, causation id =
///   `x-causation-id`, content type = `content_type` (JSON when absent), payload = body;
/// - headers: the message's other headers with text values (numbers and booleans as text;
///   tables and arrays, such as the broker's `x-death`, are left out), plus where the event
///   came from: `x-source-stream`, `x-source-partition`, `x-source-offset` and
///   `x-source-timestamp-ms` (from `x-stream`, `x-partition`, `x-offset` and `x-timestamp-ms`,
///   else the `timestamp` property), those the message has. The local event's own timestamp,
///   partition and offset are the local stream's.
///
/// Limits (sizes, header counts) are the local stream's to check: it refuses an event over
/// them, and the message is then dead-lettered as [`DeadReason::Refused`].
pub fn event_of(properties: &BasicProperties, body: &[u8]) -> Result<NewEvent, Poison> {
    let id = properties
        .message_id()
        .as_ref()
        .ok_or_else(|| poison(DeadReason::NoId, "no message_id"))?;
    let id = uuid::Uuid::parse_str(id.as_str()).map_err(|_| {
        poison(
            DeadReason::NoId,
            format!("message_id {:?} is not a UUID", id.as_str()),
        )
    })?;
    let empty = FieldTable::default();
    let headers = properties.headers().as_ref().unwrap_or(&empty).inner();
    let text = |k: &str| -> Result<Option<String>, Poison> {
        match headers.get(k) {
            None => Ok(None),
            Some(v) => match text_of(v) {
                Ok(Some(t)) => Ok(Some(t)),
                _ => Err(poison(
                    DeadReason::BadEnvelope,
                    format!("header {k} is not text"),
                )),
            },
        }
    };
    let int = |k: &str| -> Result<Option<i128>, Poison> {
        match headers.get(k) {
            None => Ok(None),
            Some(v) => int_of(v).map(Some).ok_or_else(|| {
                poison(
                    DeadReason::BadEnvelope,
                    format!("header {k} is not an integer"),
                )
            }),
        }
    };
    let event_type = match text("x-event-type")? {
        Some(t) => t,
        None => properties
            .kind()
            .as_ref()
            .map(|t| t.as_str().to_string())
            .ok_or_else(|| poison(DeadReason::BadEnvelope, "no event type (type property)"))?,
    };
    let schema_version = match int("x-schema-version")? {
        None => 1,
        Some(v) => u32::try_from(v).map_err(|_| {
            poison(
                DeadReason::BadEnvelope,
                format!("x-schema-version {v} is outside 0..=4294967295"),
            )
        })?,
    };
    let key = match headers.get("x-key") {
        None => None,
        Some(AMQPValue::LongString(s)) => Some(bytes::Bytes::copy_from_slice(s.as_bytes())),
        Some(AMQPValue::ByteArray(b)) => Some(bytes::Bytes::copy_from_slice(b.as_slice())),
        Some(AMQPValue::ShortString(s)) => {
            Some(bytes::Bytes::copy_from_slice(s.as_str().as_bytes()))
        }
        Some(_) => return Err(poison(DeadReason::BadEnvelope, "header x-key is not bytes")),
    };
    let correlation_id = match text("x-correlation-id")? {
        Some(c) => Some(c),
        None => properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_string()),
    };
    let causation_id = text("x-causation-id")?;
    let content_type = properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| JSON.to_string());
    let mut own = BTreeMap::new();
    for (k, v) in headers {
        let k = k.as_str();
        if RESERVED.contains(&k) || SOURCE_HEADERS.contains(&k) {
            continue;
        }
        match text_of(v) {
            Ok(Some(t)) => {
                own.insert(k.to_string(), t);
            }
            Ok(None) => {}
            Err(()) => {
                return Err(poison(
                    DeadReason::BadEnvelope,
                    format!("header {k} is not UTF-8"),
                ));
            }
        }
    }
    if let Some(s) = text("x-stream")? {
        own.insert("x-source-stream".into(), s);
    }
    for (from, to) in [
        ("x-partition", "x-source-partition"),
        ("x-offset", "x-source-offset"),
    ] {
        if let Some(n) = int(from)? {
            own.insert(to.into(), n.to_string());
        }
    }
    let source_ms = match int("x-timestamp-ms")? {
        Some(ms) => Some(ms),
        None => properties.timestamp().map(|s| i128::from(s) * 1000),
    };
    if let Some(ms) = source_ms {
        own.insert("x-source-timestamp-ms".into(), ms.to_string());
    }
    Ok(NewEvent {
        event_id: Some(EventId(id)),
        event_type,
        schema_version,
        key,
        correlation_id,
        causation_id,
        headers: own,
        content_type,
        payload: bytes::Bytes::copy_from_slice(body),
    })
}

/// A running inbound binding. Dropping it leaves the task running: call [`Inbound::stop`].
#[derive(Debug)]
pub struct Inbound {
    status: Arc<InboundStatus>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Inbound {
    /// Starts consuming `binding` into its local stream through `local`, on the current
    /// tokio runtime. It connects at once and again after every failure, with back-off.
    pub fn start(
        config: AmqpConfig,
        binding: InboundBinding,
        local: Arc<dyn LocalAppender>,
    ) -> Inbound {
        let status = Arc::new(InboundStatus::new(
            binding.remote.clone(),
            binding.subscription.clone(),
            binding.local.clone(),
        ));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(config, binding, local, status.clone(), stopped));
        Inbound { status, stop, task }
    }

    /// What it has done so far.
    pub fn status(&self) -> Arc<InboundStatus> {
        self.status.clone()
    }

    /// Stops consuming: the appends in flight are awaited (up to 5 s) and acknowledged, then
    /// the connection closes (the broker keeps the rest for the next start). Completes when
    /// the task has ended.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Ends the task at once (what was not acknowledged is delivered again later).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// The delay after `failures` failures in a row.
pub(crate) fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_MAX)
}

/// How a session ended.
enum End {
    /// Asked to stop.
    Stopped,
    /// Failed; `progressed` when it acknowledged something (the back-off starts over).
    Failed { error: String, progressed: bool },
}

async fn run(
    config: AmqpConfig,
    binding: InboundBinding,
    local: Arc<dyn LocalAppender>,
    status: Arc<InboundStatus>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    status.link.wanted();
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        match session(&config, &binding, &*local, &status, &mut stop).await {
            End::Stopped => {
                tracing::info!(code = 8024, remote = %binding.remote, subscription = %binding.subscription, "inbound stopped");
                return;
            }
            End::Failed { error, progressed } => {
                status.link.down(&error);
                // A session that moved messages, or lived through the longest delay, was
                // healthy: the back-off starts over.
                if progressed || started.elapsed() >= BACKOFF_MAX {
                    failures = 0;
                }
                let delay = backoff(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(
                    code = 8021,
                    remote = %binding.remote,
                    subscription = %binding.subscription,
                    error = %error,
                    retry_in = ?delay,
                    "inbound consumer down; connecting again after a back-off"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// A message appended (or being appended) to the local stream, waiting for its reply.
struct Pending {
    acker: lapin::Acker,
    reply: AppendReply,
    event_id: EventId,
    correlation_id: Option<String>,
}

/// The reply of the oldest pending append (never completes when there is none).
async fn front(pending: &mut VecDeque<Pending>) -> Result<Vec<AppendOutcome>, Error> {
    match pending.front_mut() {
        Some(p) => (&mut p.reply).await,
        None => std::future::pending().await,
    }
}

fn lapin_err(what: &str) -> impl Fn(lapin::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Declares the binding's topology on `ch`.
async fn declare(
    ch: &lapin::Channel,
    config: &AmqpConfig,
    b: &InboundBinding,
) -> Result<String, String> {
    let exchange = config.exchange(&b.remote);
    let (queue, dlx, dlq) = (
        b.queue(config),
        b.dead_letter_exchange(config),
        b.dead_letter_queue(config),
    );
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.exchange_declare(
        ShortString::from(exchange.as_str()),
        ExchangeKind::Topic,
        durable_exchange,
        FieldTable::default(),
    )
    .await
    .map_err(lapin_err(&format!("declaring exchange {exchange}")))?;
    ch.exchange_declare(
        ShortString::from(dlx.as_str()),
        ExchangeKind::Fanout,
        durable_exchange,
        FieldTable::default(),
    )
    .await
    .map_err(lapin_err(&format!("declaring exchange {dlx}")))?;
    ch.queue_declare(
        ShortString::from(dlq.as_str()),
        durable_queue,
        FieldTable::default(),
    )
    .await
    .map_err(lapin_err(&format!("declaring queue {dlq}")))?;
    ch.queue_bind(
        ShortString::from(dlq.as_str()),
        ShortString::from(dlx.as_str()),
        ShortString::from(""),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(lapin_err(&format!("binding {dlq}")))?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    ch.queue_declare(ShortString::from(queue.as_str()), durable_queue, args)
        .await
        .map_err(lapin_err(&format!("declaring queue {queue}")))?;
    for key in &b.routing_keys {
        ch.queue_bind(
            ShortString::from(queue.as_str()),
            ShortString::from(exchange.as_str()),
            crate::short(key),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(lapin_err(&format!("binding {queue} to {exchange} ({key})")))?;
    }
    Ok(queue)
}

/// One connection's life: connect, declare, consume until stopped or failed.
async fn session(
    config: &AmqpConfig,
    b: &InboundBinding,
    local: &dyn LocalAppender,
    status: &InboundStatus,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> End {
    let failed = |error: String| End::Failed {
        error,
        progressed: false,
    };
    let conn = match Connection::connect(&config.url, ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot connect to the broker: {e}")),
    };
    let end = consume(&conn, config, b, local, status, stop).await;
    // Unacknowledged messages go back to the queue, in order, when the connection closes.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        conn.close(200, ShortString::from("tributary inbound: done")),
    )
    .await;
    end
}

async fn consume(
    conn: &Connection,
    config: &AmqpConfig,
    b: &InboundBinding,
    local: &dyn LocalAppender,
    status: &InboundStatus,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> End {
    let mut progressed = false;
    let fail = |error: String, progressed: bool| End::Failed { error, progressed };
    let ch = match conn.create_channel().await {
        Ok(c) => c,
        Err(e) => return fail(format!("opening a channel: {e}"), false),
    };
    let queue = match declare(&ch, config, b).await {
        Ok(q) => q,
        Err(e) => return fail(e, false),
    };
    if let Err(e) = ch
        .basic_qos(b.max_in_flight.max(1), BasicQosOptions::default())
        .await
    {
        return fail(format!("setting the prefetch: {e}"), false);
    }
    let tag = format!("tributary-{}-{}", b.remote, b.subscription);
    let mut consumer = match ch
        .basic_consume(
            ShortString::from(queue.as_str()),
            crate::short(&tag),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return fail(format!("consuming {queue}: {e}"), false),
    };
    status.link.up(conn);
    tracing::info!(
        code = 8020,
        remote = %b.remote,
        subscription = %b.subscription,
        stream = %b.local,
        queue = %queue,
        prefetch = b.max_in_flight,
        "inbound consuming"
    );
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            reply = front(&mut pending) => {
                let Some(p) = pending.pop_front() else { continue };
                match settle(&p.acker, p.event_id, p.correlation_id.as_deref(), reply, b, status).await {
                    Ok(()) => progressed = true,
                    Err(e) => return fail(e, progressed),
                }
            }
            next = consumer.next() => {
                let d = match next {
                    None => return fail("the broker ended the consumer".into(), progressed),
                    Some(Err(e)) => return fail(format!("receiving: {e}"), progressed),
                    Some(Ok(d)) => d,
                };
                status.count_received();
                match event_of(&d.properties, &d.data) {
                    Ok(event) => {
                        let event_id = event.event_id.unwrap_or(EventId(uuid::Uuid::nil()));
                        let correlation_id = event.correlation_id.clone();
                        let queued = local.append(AppendRequest {
                            stream: b.local.clone(),
                            events: vec![event],
                            expected_offset: None,
                        }).await;
                        match queued {
                            Ok(reply) => pending.push_back(Pending { acker: d.acker, reply, event_id, correlation_id }),
                            Err(e) => return fail(format!("local append: {e}"), progressed),
                        }
                    }
                    Err(p) => {
                        if let Err(e) = dead_letter(&d.acker, b, status, &p, d.properties.message_id().as_ref().map(|m| m.as_str())).await {
                            return fail(e, progressed);
                        }
                        progressed = true;
                    }
                }
            }
        }
    }
    // Stopping: no new deliveries; the appends in flight are acknowledged once answered.
    let _ = ch
        .basic_cancel(crate::short(&tag), BasicCancelOptions::default())
        .await;
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while let Some(p) = pending.pop_front() {
            let reply = p.reply.await;
            if settle(
                &p.acker,
                p.event_id,
                p.correlation_id.as_deref(),
                reply,
                b,
                status,
            )
            .await
            .is_err()
            {
                return;
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(code = 8024, remote = %b.remote, subscription = %b.subscription, "inbound stopping: appends still unanswered are left to the broker's redelivery");
    }
    End::Stopped
}

/// Acknowledges (appended or duplicate) or dead-letters (refused as invalid) one message;
/// `Err` for any other failure, which ends the session.
async fn settle(
    acker: &lapin::Acker,
    event_id: EventId,
    correlation_id: Option<&str>,
    reply: Result<Vec<AppendOutcome>, Error>,
    b: &InboundBinding,
    status: &InboundStatus,
) -> Result<(), String> {
    match reply {
        Ok(outcomes) => {
            let duplicate = matches!(outcomes.first(), Some(AppendOutcome::Duplicate { .. }));
            acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| format!("acknowledging: {e}"))?;
            status.count_appended(duplicate);
            if duplicate {
                tracing::debug!(
                    code = 8025,
                    remote = %b.remote,
                    stream = %b.local,
                    event_id = %event_id.0,
                    correlation_id = correlation_id.unwrap_or(""),
                    "inbound message already appended (redelivery): acknowledged, no second event"
                );
            }
            Ok(())
        }
        Err(Error::Invalid(e)) => {
            let poison = Poison {
                reason: DeadReason::Refused,
                detail: e.to_string(),
            };
            let id = event_id.0.to_string();
            dead_letter(acker, b, status, &poison, Some(&id)).await
        }
        Err(e) => Err(format!(
            "local append of {} to {}: {e}",
            event_id.0, b.local
        )),
    }
}

/// Rejects a message without requeue: the broker moves it to the dead-letter queue.
async fn dead_letter(
    acker: &lapin::Acker,
    b: &InboundBinding,
    status: &InboundStatus,
    p: &Poison,
    message_id: Option<&str>,
) -> Result<(), String> {
    acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .map_err(|e| format!("rejecting: {e}"))?;
    status.count_dead(p.reason);
    tracing::warn!(
        code = 8022,
        remote = %b.remote,
        subscription = %b.subscription,
        stream = %b.local,
        message_id = message_id.unwrap_or(""),
        reason = p.reason.as_str(),
        error = %p.detail,
        "inbound message is not an event: moved to the dead-letter queue"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::{Event, UnixMillis};

    fn event() -> Event {
        Event {
            event_id: EventId(uuid::Uuid::from_u128(0xfeed)),
            stream: StreamName::new("orders").expect("name"),
            partition: 2,
            offset: 17,
            timestamp: UnixMillis(1_767_225_600_123),
            event_type: "t".repeat(256),
            schema_version: 3,
            key: Some(bytes::Bytes::from_static(&[0, 159, 146, 150, 255])),
            correlation_id: Some("c".repeat(256)),
            causation_id: Some("cause".into()),
            headers: [("tenant".to_string(), "t1".to_string())]
                .into_iter()
                .collect(),
            content_type: "application/x-thing".into(),
            payload: bytes::Bytes::from_static(b"\x00binary"),
        }
    }

    fn with_headers(p: BasicProperties, f: impl FnOnce(&mut FieldTable)) -> BasicProperties {
        let mut h = p.headers().clone().unwrap_or_default();
        f(&mut h);
        p.with_headers(h)
    }

    #[test]
    fn the_envelope_reads_back_whole() {
        let e = event();
        let (_, p) = crate::message_of(&e.stream, &e);
        let n = event_of(&p, &e.payload).expect("an event");
        assert_eq!(n.event_id, Some(e.event_id));
        assert_eq!(n.event_type, e.event_type, "whole, from x-event-type");
        assert_eq!(n.schema_version, 3);
        assert_eq!(n.key, e.key, "bytes, not text");
        assert_eq!(n.correlation_id, e.correlation_id, "whole, from the header");
        assert_eq!(n.causation_id.as_deref(), Some("cause"));
        assert_eq!(n.content_type, "application/x-thing");
        assert_eq!(n.payload, e.payload);
        let h: Vec<(&str, &str)> = n
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            h,
            [
                ("tenant", "t1"),
                ("x-source-offset", "17"),
                ("x-source-partition", "2"),
                ("x-source-stream", "orders"),
                ("x-source-timestamp-ms", "1767225600123"),
            ]
        );
    }

    #[test]
    fn a_plain_message_needs_an_id_and_a_type() {
        let id = "6f1c2f4e-8a43-4a52-9d35-0e7d0c0f5a11";
        let plain = BasicProperties::default()
            .with_message_id(id.into())
            .with_type("order.created".into());
        let n = event_of(&plain, b"{}").expect("an event");
        assert_eq!(n.event_id.map(|i| i.0.to_string()).as_deref(), Some(id));
        assert_eq!(n.event_type, "order.created");
        assert_eq!((n.schema_version, n.content_type.as_str()), (1, JSON));
        assert!(n.headers.is_empty() && n.key.is_none());

        let reason = |p: &BasicProperties| event_of(p, b"{}").expect_err("poison").reason;
        assert_eq!(
            reason(&BasicProperties::default().with_type("t".into())),
            DeadReason::NoId
        );
        assert_eq!(
            reason(&plain.clone().with_message_id("order-1".into())),
            DeadReason::NoId
        );
        assert_eq!(
            reason(&BasicProperties::default().with_message_id(id.into())),
            DeadReason::BadEnvelope
        );
        let bad_version = with_headers(plain.clone(), |h| {
            h.insert(
                "x-schema-version".into(),
                AMQPValue::LongString("two".into()),
            );
        });
        assert_eq!(reason(&bad_version), DeadReason::BadEnvelope);
        let not_utf8 = with_headers(plain.clone(), |h| {
            h.insert(
                "note".into(),
                AMQPValue::LongString(vec![0xff, 0xfe].into()),
            );
        });
        assert_eq!(reason(&not_utf8), DeadReason::BadEnvelope);
    }

    #[test]
    fn header_values_become_text_and_broker_bookkeeping_is_left_out() {
        let p = with_headers(
            BasicProperties::default()
                .with_message_id("6f1c2f4e-8a43-4a52-9d35-0e7d0c0f5a11".into())
                .with_type("t".into())
                .with_timestamp(1_700_000_000),
            |h| {
                h.insert("n".into(), AMQPValue::LongInt(-4));
                h.insert("flag".into(), AMQPValue::Boolean(true));
                h.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
                h.insert("x-schema-version".into(), AMQPValue::ShortShortUInt(2));
            },
        );
        let n = event_of(&p, b"").expect("an event");
        let h: Vec<(&str, &str)> = n
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            h,
            [
                ("flag", "true"),
                ("n", "-4"),
                ("x-source-timestamp-ms", "1700000000000")
            ]
        );
        assert_eq!(n.schema_version, 2);
    }

    #[test]
    fn names_and_back_off() {
        let c = AmqpConfig::new("amqp://localhost");
        let b = InboundBinding::new(
            StreamName::new("orders").expect("name"),
            SubscriptionName::new("billing").expect("name"),
            StreamName::new("remote-orders").expect("name"),
        );
        assert_eq!(b.queue(&c), "tributary.orders:billing");
        assert_eq!(b.dead_letter_exchange(&c), "tributary.orders:billing:dlx");
        assert_eq!(b.dead_letter_queue(&c), "tributary.orders:billing:dlq");
        let ms: Vec<u128> = (0..12).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            ms,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
