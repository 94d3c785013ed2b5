//! Tributary's cross-service transport over AMQP 0-9-1 (RabbitMQ), on lapin (SPEC 9).
//!
//! This crate carries out the core's relay: the core decides which event of a cross-service
//! stream goes out next, keeps the relay position and its window, and sends again after a
//! failure (`Output::Publish` / `Input::PublishDone`). [`AmqpPublisher::publish`] publishes one
//! event with a publisher confirm and answers whether the broker confirmed it; events leave
//! in the order they were handed over (the relay's order within a partition):
//!
//! - topology, declared on first use on every connection (so again after a reconnect): one
//!   durable topic exchange per stream, `<prefix>.<stream>`;
//! - the message: routing key = event type, body = payload, persistent (delivery mode 2),
//!   properties `message_id` (the event id), `type`, `timestamp` (seconds), `correlation_id`,
//!   `content_type`, and headers `x-stream`, `x-partition`, `x-offset`, `x-schema-version`,
//!   `x-event-type`, `x-timestamp-ms`, `x-correlation-id`, `x-causation-id` and `x-key`
//!   (the partition key, bytes) where the event has one, then the event's own headers (see [`message_of`]);
//! - the connection is made on first use and made again after it broke, with a back-off of
//!   100 ms x 2^n capped at 30 s; while the broker is away a publish fails at once (the core
//!   sends it again after its own back-off, within its relay window, so memory stays bounded);
//! - a publish that the broker never answers fails after `confirm_timeout`.
//!
//! The other direction, another service's stream consumed into a local stream, is
//! [`Inbound`] (see the [`inbound`] module). [`LinkStatus`] and [`InboundStatus`] say what the
//! connections are doing, for health and metrics.
//!
//! Log lines carry stable codes in the 8000s (SPEC 11).

pub mod inbound;
mod status;

pub use inbound::{AppendReply, Inbound, InboundBinding, LocalAppender, Poison, event_of};
pub use status::{DeadReason, InboundStatus, LinkState, LinkStatus};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary_core::{Event, PublishResult, StreamName};

/// The longest AMQP short string (routing keys, `type`, `message_id`, `correlation_id`).
const SHORT: usize = 255;
/// First reconnect delay; doubled after each failure.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How the transport reaches the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost` (or `amqps://` for TLS).
    pub url: String,
    /// Exchanges are named `<prefix>.<stream>` (default `tributary`).
    pub prefix: String,
    /// A publish the broker has not confirmed within this fails (and is sent again).
    pub confirm_timeout: Duration,
}

impl AmqpConfig {
    /// A configuration for `url` with the default prefix and a 10 s confirm timeout.
    pub fn new(url: impl Into<String>) -> AmqpConfig {
        AmqpConfig {
            url: url.into(),
            prefix: "tributary".into(),
            confirm_timeout: Duration::from_secs(10),
        }
    }

    /// The exchange of `stream`.
    pub fn exchange(&self, stream: &StreamName) -> String {
        format!("{}.{}", self.prefix, stream)
    }
}

/// Publishes the events of cross-service streams to RabbitMQ. Cheap to clone; clones share
/// one connection and one queue: publishes leave in the order [`AmqpPublisher::publish`] was
/// called (the relay's order per partition), and their confirms are awaited together.
#[derive(Clone)]
pub struct AmqpPublisher {
    prefix: Arc<str>,
    queue: tokio::sync::mpsc::UnboundedSender<Job>,
    status: Arc<LinkStatus>,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// One publish waiting for its turn.
struct Job {
    stream: StreamName,
    event: Arc<Event>,
    done: tokio::sync::oneshot::Sender<PublishResult>,
}

/// The connection as it stands (owned by the sending task).
struct Link {
    status: Arc<LinkStatus>,
    open: Option<(Connection, Channel)>,
    /// Exchanges declared on this connection.
    declared: BTreeSet<String>,
    /// Connection attempts failed in a row.
    failures: u32,
    /// No new attempt before this.
    next_try: Option<Instant>,
}

impl AmqpPublisher {
    /// A publisher; it connects on first use. Starts its sending task on the current tokio
    /// runtime (call it from inside one).
    pub fn new(config: AmqpConfig) -> AmqpPublisher {
        // Unbounded: what waits here is bounded by the relay window of each stream in the core.
        let (queue, jobs) = tokio::sync::mpsc::unbounded_channel();
        let prefix: Arc<str> = config.prefix.as_str().into();
        let status = Arc::new(LinkStatus::default());
        tokio::spawn(send_all(config, jobs, status.clone()));
        AmqpPublisher {
            prefix,
            queue,
            status,
        }
    }

    /// Its connection's status.
    pub fn status(&self) -> Arc<LinkStatus> {
        self.status.clone()
    }

    /// Queues one event of `stream` for publishing and returns the future of the broker's
    /// answer. Events leave in the order of these calls, whenever the future is awaited.
    pub fn publish(
        &self,
        stream: StreamName,
        event: Arc<Event>,
    ) -> impl std::future::Future<Output = PublishResult> + Send + 'static {
        let (done, answer) = tokio::sync::oneshot::channel();
        let queued = self
            .queue
            .send(Job {
                stream,
                event,
                done,
            })
            .is_ok();
        async move {
            if !queued {
                return PublishResult::Failed("the AMQP transport has stopped".into());
            }
            answer.await.unwrap_or_else(|_| {
                PublishResult::Failed("the AMQP transport dropped the publish".into())
            })
        }
    }
}

/// The sending task: publishes the queued events one after the other, each confirm awaited
/// in a task of its own.
async fn send_all(
    config: AmqpConfig,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    status: Arc<LinkStatus>,
) {
    let mut link = Link {
        status,
        open: None,
        declared: BTreeSet::new(),
        failures: 0,
        next_try: None,
    };
    while let Some(job) = jobs.recv().await {
        let exchange = config.exchange(&job.stream);
        let channel = match link.channel_for(&config, &exchange).await {
            Ok(c) => c,
            Err(e) => {
                let _ = job.done.send(PublishResult::Failed(e));
                continue;
            }
        };
        let (routing_key, properties) = message_of(&job.stream, &job.event);
        let sent = channel
            .basic_publish(
                ShortString::from(exchange.as_str()),
                routing_key,
                BasicPublishOptions::default(),
                &job.event.payload,
                properties,
            )
            .await;
        let confirm = match sent {
            Ok(c) => c,
            Err(e) => {
                link.broken(&e.to_string());
                let _ = job
                    .done
                    .send(PublishResult::Failed(format!("publish to {exchange}: {e}")));
                continue;
            }
        };
        let timeout = config.confirm_timeout;
        tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, confirm).await {
                Ok(Ok(c)) if c.is_ack() => PublishResult::Confirmed,
                Ok(Ok(_)) => {
                    PublishResult::Failed(format!("the broker refused the event ({exchange})"))
                }
                Ok(Err(e)) => PublishResult::Failed(format!("confirm from {exchange}: {e}")),
                Err(_) => PublishResult::Failed(format!(
                    "no confirm from the broker within {timeout:?} ({exchange})"
                )),
            };
            let _ = job.done.send(result);
        });
    }
}

impl Link {
    /// The channel to publish on, connected and with `exchange` declared on it.
    async fn channel_for(
        &mut self,
        config: &AmqpConfig,
        exchange: &str,
    ) -> Result<Channel, String> {
        let up = self
            .open
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected());
        if !up {
            self.status.wanted();
            if let Some(t) = self.next_try
                && Instant::now() < t
            {
                return Err("the broker is away; the next connection attempt is later".into());
            }
            match connect(config).await {
                Ok(open) => {
                    tracing::info!(code = 8010, failures = self.failures, "broker connected");
                    self.status.up(&open.0);
                    self.open = Some(open);
                    self.declared.clear();
                    self.failures = 0;
                    self.next_try = None;
                }
                Err(e) => {
                    let delay = inbound::backoff(self.failures);
                    self.status.down(&e.to_string());
                    self.failures = self.failures.saturating_add(1);
                    self.next_try = Some(Instant::now() + delay);
                    self.open = None;
                    tracing::warn!(code = 8011, error = %e, retry_in = ?delay, "broker connection failed");
                    return Err(format!("cannot connect to the broker: {e}"));
                }
            }
        }
        let Some((_, channel)) = self.open.as_ref() else {
            return Err("no broker connection".into());
        };
        let channel = channel.clone();
        if !self.declared.contains(exchange) {
            if let Err(e) = channel
                .exchange_declare(
                    ShortString::from(exchange),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
            {
                self.broken(&e.to_string());
                return Err(format!("declaring exchange {exchange}: {e}"));
            }
            tracing::info!(code = 8012, exchange, "exchange declared");
            self.declared.insert(exchange.to_string());
        }
        Ok(channel)
    }

    /// The connection failed: the next publish connects again.
    fn broken(&mut self, why: &str) {
        self.status.down(why);
        if self.open.take().is_some() {
            tracing::warn!(code = 8013, error = why, "broker connection lost");
        }
    }
}

async fn connect(config: &AmqpConfig) -> Result<(Connection, Channel), lapin::Error> {
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((conn, channel))
}

/// A string cut to an AMQP short string (at a character boundary).
pub(crate) fn short(s: &str) -> ShortString {
    let mut end = s.len().min(SHORT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&s[..end])
}

/// The routing key and properties of `event`'s message. Short strings are cut at 255 bytes
/// (an event type and a correlation id may have 256): the `x-event-type` and
/// `x-correlation-id` headers always carry them whole.
pub fn message_of(stream: &StreamName, event: &Event) -> (ShortString, BasicProperties) {
    let mut headers = FieldTable::default();
    let mut put = |k: &str, v: AMQPValue| {
        headers.insert(ShortString::from(k), v);
    };
    put("x-stream", AMQPValue::LongString(stream.as_str().into()));
    put("x-partition", AMQPValue::LongUInt(event.partition));
    put(
        "x-offset",
        AMQPValue::LongLongInt(i64::try_from(event.offset).unwrap_or(i64::MAX)),
    );
    put(
        "x-schema-version",
        AMQPValue::LongUInt(event.schema_version),
    );
    put(
        "x-event-type",
        AMQPValue::LongString(event.event_type.as_str().into()),
    );
    put(
        "x-timestamp-ms",
        AMQPValue::LongLongInt(i64::try_from(event.timestamp.0).unwrap_or(i64::MAX)),
    );
    if let Some(c) = &event.correlation_id {
        put("x-correlation-id", AMQPValue::LongString(c.as_str().into()));
    }
    if let Some(c) = &event.causation_id {
        put("x-causation-id", AMQPValue::LongString(c.as_str().into()));
    }
    if let Some(k) = &event.key {
        put("x-key", AMQPValue::LongString(k.to_vec().into()));
    }
    for (k, v) in &event.headers {
        if !RESERVED.contains(&k.as_str()) {
            headers.insert(short(k), AMQPValue::LongString(v.as_str().into()));
        }
    }
    let mut p = BasicProperties::default()
        .with_message_id(ShortString::from(event.event_id.0.to_string()))
        .with_type(short(&event.event_type))
        .with_timestamp(event.timestamp.0 / 1000)
        .with_content_type(short(&event.content_type))
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(c) = &event.correlation_id {
        p = p.with_correlation_id(short(c));
    }
    (short(&event.event_type), p)
}

/// Headers the envelope owns: an event header of the same name does not replace them.
pub(crate) const RESERVED: [&str; 9] = [
    "x-stream",
    "x-partition",
    "x-offset",
    "x-schema-version",
    "x-event-type",
    "x-timestamp-ms",
    "x-correlation-id",
    "x-causation-id",
    "x-key",
];

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::{EventId, UnixMillis};

    fn event() -> Event {
        Event {
            event_id: EventId(uuid::Uuid::from_u128(7)),
            stream: StreamName::new("orders").expect("name"),
            partition: 3,
            offset: 42,
            timestamp: UnixMillis(1_767_225_600_123),
            event_type: "order.created".into(),
            schema_version: 2,
            key: None,
            correlation_id: Some("c".repeat(256)),
            causation_id: Some("cause".into()),
            headers: [
                ("tenant".to_string(), "t1".to_string()),
                ("x-offset".to_string(), "lie".to_string()),
            ]
            .into_iter()
            .collect(),
            content_type: "application/json".into(),
            payload: bytes::Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn the_envelope_travels_in_properties_and_headers() {
        let e = event();
        let (key, p) = message_of(&e.stream, &e);
        assert_eq!(key.as_str(), "order.created");
        assert_eq!(
            p.message_id().as_ref().map(ShortString::as_str),
            Some("00000000-0000-0000-0000-000000000007")
        );
        assert_eq!(
            p.kind().as_ref().map(ShortString::as_str),
            Some("order.created")
        );
        assert_eq!(*p.timestamp(), Some(1_767_225_600));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.correlation_id().as_ref().map(|c| c.as_str().len()),
            Some(255)
        );
        let h = p.headers().as_ref().expect("headers");
        let get = |k: &str| h.inner().get(k).cloned();
        assert_eq!(
            get("x-offset"),
            Some(AMQPValue::LongLongInt(42)),
            "not replaced by the event's own header"
        );
        assert_eq!(get("x-partition"), Some(AMQPValue::LongUInt(3)));
        assert_eq!(get("x-schema-version"), Some(AMQPValue::LongUInt(2)));
        assert_eq!(
            get("x-stream"),
            Some(AMQPValue::LongString("orders".into()))
        );
        assert_eq!(get("tenant"), Some(AMQPValue::LongString("t1".into())));
        assert_eq!(
            get("x-correlation-id"),
            Some(AMQPValue::LongString("c".repeat(256).as_str().into())),
            "whole in the header"
        );
    }

    #[test]
    fn short_strings_are_cut_at_a_character_boundary() {
        let s = "é".repeat(200);
        let cut = short(&s);
        assert!(cut.as_str().len() <= SHORT);
        assert!(s.starts_with(cut.as_str()));
    }
}
