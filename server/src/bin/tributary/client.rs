//! The client commands: each connects to `--server` with the generated tonic client.

use base64::Engine as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Write};
use tonic::transport::Channel;
use tributary_core::StartPosition;
use tributary_grpc::pb::event_stream_client::EventStreamClient;
use tributary_grpc::{ms, pb, start_position_to_pb};
use tributary_server::config::parse_start;

type Client =
    EventStreamClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

/// Where the server is, and how to reach it.
#[derive(Args, Clone)]
pub struct ServerArg {
    /// The server's gRPC URL (`https://` for a server with TLS).
    #[arg(
        long,
        env = "TRIBUTARY_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// The bearer token, for a server that requires one.
    #[arg(long, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With `https://`: a CA certificate (PEM) to trust, e.g. the server's own self-signed one.
    #[arg(long, env = "TRIBUTARY_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
}

/// Adds `authorization: Bearer <token>` to every call when a token is given.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

async fn connect(s: &ServerArg) -> Result<Client, String> {
    let mut endpoint = Channel::from_shared(s.server.clone())
        .map_err(|e| format!("--server {:?}: not a URL: {e}", s.server))?;
    if let Some(path) = &s.ca_cert {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-cert {}: {e}", path.display()))?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("--ca-cert {}: {e}", path.display()))?;
    }
    let token = match &s.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| "--token: not a valid header value".to_string())?,
        ),
        None => None,
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the server at {}: {e}", s.server))?;
    Ok(
        EventStreamClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(64 << 20),
    )
}

fn status(s: tonic::Status) -> String {
    let reason = tonic_types::StatusExt::get_details_error_info(&s)
        .map(|i| format!(" [{}]", i.reason))
        .unwrap_or_default();
    format!("{:?}{reason}: {}", s.code(), s.message())
}

fn print(v: &Value) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

/// `tributary stream ...`
#[derive(Subcommand)]
pub enum StreamCmd {
    /// Create a stream.
    Create {
        /// Its name.
        name: String,
        /// Partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Delivery guarantee.
        #[arg(long, value_enum, default_value_t = DeliveryArg::AtLeastOnce)]
        delivery: DeliveryArg,
        /// Dedup window, e.g. `10m`; `0s` turns dedup off [default: 10m].
        #[arg(long, value_parser = humantime::parse_duration)]
        dedup_window: Option<std::time::Duration>,
        /// In memory only, holding at most this many events.
        #[arg(long, requires = "ephemeral_max_bytes")]
        ephemeral_max_events: Option<u64>,
        /// In memory only, holding at most this many bytes.
        #[arg(long, requires = "ephemeral_max_events")]
        ephemeral_max_bytes: Option<u64>,
        /// What a full ephemeral stream does.
        #[arg(long, value_enum, default_value_t = OverflowArg::Reject)]
        overflow: OverflowArg,
        /// Retention: remove events older than this, e.g. `7days`.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_age: Option<std::time::Duration>,
        /// Retention: keep at most this many events per partition.
        #[arg(long)]
        max_events: Option<u64>,
        /// Retention: keep at most this many bytes per partition.
        #[arg(long)]
        max_bytes: Option<u64>,
        /// Retention: never remove an event a subscription has not acknowledged.
        #[arg(long)]
        keep_unconsumed: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List the streams, one JSON object per line.
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show one stream as JSON.
    Show {
        /// Its name.
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Delete a stream with its events and subscriptions.
    Delete {
        /// Its name.
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

/// Delivery guarantee (named as in SPEC).
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, ValueEnum)]
pub enum DeliveryArg {
    /// No acks kept.
    AtMostOnce,
    /// Redelivered until acknowledged.
    AtLeastOnce,
    /// At least once plus dedup on both sides.
    ExactlyOnce,
}

/// Overflow of an ephemeral stream.
#[derive(Clone, Copy, ValueEnum)]
pub enum OverflowArg {
    /// Refuse appends when full.
    Reject,
    /// Drop the oldest events.
    DropOldest,
}

/// A proto enum value as people write it in the configuration and the HTTP API:
/// `DELIVERY_SEMANTICS_AT_LEAST_ONCE` is `at_least_once`.
fn spoken(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
}

fn stream_json(s: &pb::StreamInfo) -> Value {
    let c = s.config.clone().unwrap_or_default();
    json!({
        "name": c.name,
        "kind": if c.ephemeral.is_some() { "ephemeral" } else { "persistent" },
        "partitions": s.partitions.iter().map(|p| json!({"partition": p.partition, "first": p.first, "next": p.next})).collect::<Vec<_>>(),
        "delivery": pb::DeliverySemantics::try_from(c.delivery).map_or("?".into(), |d| spoken(d.as_str_name(), "DELIVERY_SEMANTICS_")),
        "dedup_window_ms": c.dedup_window_ms,
        "cross_service": c.cross_service,
        "length": s.length,
        "subscriptions": s.subscriptions,
    })
}

pub async fn stream(cmd: StreamCmd) -> Result<(), String> {
    match cmd {
        StreamCmd::Create {
            name,
            partitions,
            delivery,
            dedup_window,
            ephemeral_max_events,
            ephemeral_max_bytes,
            overflow,
            max_age,
            max_events,
            max_bytes,
            keep_unconsumed,
            server,
        } => {
            let retention = (max_age.is_some()
                || max_events.is_some()
                || max_bytes.is_some()
                || keep_unconsumed)
                .then(|| pb::Retention {
                    max_age_ms: max_age.map(ms),
                    max_events,
                    max_bytes,
                    keep_unconsumed,
                });
            let req = pb::CreateStreamRequest {
                name,
                partitions: Some(partitions),
                delivery: match delivery {
                    DeliveryArg::AtMostOnce => pb::DeliverySemantics::AtMostOnce,
                    DeliveryArg::AtLeastOnce => pb::DeliverySemantics::AtLeastOnce,
                    DeliveryArg::ExactlyOnce => pb::DeliverySemantics::ExactlyOnce,
                } as i32,
                dedup_window_ms: dedup_window.map(ms),
                cross_service: false,
                ephemeral: ephemeral_max_events.zip(ephemeral_max_bytes).map(
                    |(max_events, max_bytes)| pb::Ephemeral {
                        max_events,
                        max_bytes,
                        overflow: match overflow {
                            OverflowArg::Reject => pb::Overflow::Reject,
                            OverflowArg::DropOldest => pb::Overflow::DropOldest,
                        } as i32,
                    },
                ),
                retention,
            };
            let info = connect(&server)
                .await?
                .create_stream(req)
                .await
                .map_err(status)?;
            print(&stream_json(info.get_ref()))
        }
        StreamCmd::List { server } => {
            let r = connect(&server)
                .await?
                .list_streams(())
                .await
                .map_err(status)?;
            r.get_ref()
                .streams
                .iter()
                .try_for_each(|s| print(&stream_json(s)))
        }
        StreamCmd::Show { name, server } => {
            let r = connect(&server)
                .await?
                .get_stream(pb::GetStreamRequest { name })
                .await
                .map_err(status)?;
            print(&stream_json(r.get_ref()))
        }
        StreamCmd::Delete { name, server } => {
            connect(&server)
                .await?
                .delete_stream(pb::DeleteStreamRequest { name })
                .await
                .map_err(status)?;
            Ok(())
        }
    }
}

/// `tributary publish`
#[derive(Args)]
pub struct PublishArgs {
    /// The stream.
    stream: String,
    /// The event type.
    #[arg(long = "type")]
    event_type: String,
    /// The partition key.
    #[arg(long)]
    key: Option<String>,
    /// The event id (a UUID): the dedup key. Only with --data.
    #[arg(long, requires = "data")]
    id: Option<String>,
    /// The event's JSON data. Without it, each line of stdin is one event's JSON data.
    #[arg(long)]
    data: Option<String>,
    /// The correlation id, sent as `x-correlation-id`.
    #[arg(long)]
    correlation_id: Option<String>,
    #[command(flatten)]
    server: ServerArg,
}

/// Lines of stdin sent per request.
const PUBLISH_BATCH: usize = 500;

fn new_event(a: &PublishArgs, data: &str, what: &str) -> Result<pb::NewEvent, String> {
    serde_json::from_str::<Value>(data).map_err(|e| format!("{what}: not valid JSON: {e}"))?;
    Ok(pb::NewEvent {
        event_id: a.id.clone().unwrap_or_default(),
        event_type: a.event_type.clone(),
        schema_version: Some(1),
        key: a.key.clone().map(|k| k.into_bytes().into()),
        correlation_id: a.correlation_id.clone(),
        content_type: "application/json".into(),
        payload: data.as_bytes().to_vec().into(),
        ..Default::default()
    })
}

async fn send(client: &mut Client, stream: &str, events: Vec<pb::NewEvent>) -> Result<(), String> {
    let r = client
        .publish(pb::PublishRequest {
            stream: stream.to_string(),
            events,
            expected_offset: None,
        })
        .await
        .map_err(status)?;
    r.get_ref().outcomes.iter().try_for_each(|o| {
        let p = o.position.unwrap_or_default();
        print(&json!({"partition": p.partition, "offset": p.offset, "duplicate": o.duplicate}))
    })
}

pub async fn publish(a: PublishArgs) -> Result<(), String> {
    let mut client = connect(&a.server).await?;
    if let Some(d) = &a.data {
        let e = new_event(&a, d, "--data")?;
        return send(&mut client, &a.stream, vec![e]).await;
    }
    let mut batch = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        batch.push(new_event(&a, &line, &format!("stdin line {}", n + 1))?);
        if batch.len() == PUBLISH_BATCH {
            send(&mut client, &a.stream, std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        send(&mut client, &a.stream, batch).await?;
    }
    Ok(())
}

/// Subscription modes on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Every consumer gets every event.
    Broadcast,
    /// Competing consumers.
    Exclusive,
    /// Kafka-style consumer group.
    Group,
    /// Broadcast with read receipts.
    Receipts,
}

/// `tributary subscribe`
#[derive(Args)]
pub struct SubscribeArgs {
    /// The stream.
    stream: String,
    /// The subscription (created with --mode and --from when missing).
    #[arg(long)]
    subscription: String,
    /// The mode of a subscription created here.
    #[arg(long, value_enum, default_value_t = ModeArg::Broadcast)]
    mode: ModeArg,
    /// Where a subscription created here starts: beginning, end, an offset or an RFC 3339 time.
    #[arg(long, default_value = "beginning", value_parser = parse_start)]
    from: StartPosition,
    /// Stop after this many events were acknowledged.
    #[arg(long)]
    count: Option<u32>,
    /// The consumer id [default: cli-PID].
    #[arg(long)]
    consumer: Option<String>,
    #[command(flatten)]
    server: ServerArg,
}

fn event_json(e: &pb::Event, attempt: Option<u32>) -> Value {
    let data = (e.content_type == "application/json")
        .then(|| serde_json::from_slice::<Value>(&e.payload).ok())
        .flatten();
    let mut v = json!({
        "stream": e.stream,
        "partition": e.partition,
        "offset": e.offset,
        "event_id": e.event_id,
        "type": e.event_type,
        "schema_version": e.schema_version,
        "timestamp": e.timestamp,
        "key": e.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "correlation_id": e.correlation_id,
        "headers": e.headers,
    });
    match data {
        Some(d) => v["data"] = d,
        None => {
            v["content_type"] = json!(e.content_type);
            v["payload_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&e.payload));
        }
    }
    if let Some(a) = attempt {
        v["attempt"] = json!(a);
    }
    v
}

pub async fn subscribe(a: SubscribeArgs) -> Result<(), String> {
    use pb::subscribe_request::Kind as In;
    use pb::subscribe_response::Kind as Out;
    let mut client = connect(&a.server).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::SubscribeRequest>(64);
    let mode = match a.mode {
        ModeArg::Broadcast => pb::SubscriptionMode::Broadcast,
        ModeArg::Exclusive => pb::SubscriptionMode::Exclusive,
        ModeArg::Group => pb::SubscriptionMode::ConsumerGroup,
        ModeArg::Receipts => pb::SubscriptionMode::ReadReceipt,
    };
    let open = pb::OpenSubscription {
        stream: a.stream.clone(),
        subscription: a.subscription.clone(),
        consumer: a
            .consumer
            .clone()
            .unwrap_or_else(|| format!("cli-{}", std::process::id())),
        max_in_flight: None,
        initial_credit: a.count,
        create: Some(pb::SubscriptionConfig {
            mode: mode as i32,
            start: Some(start_position_to_pb(&a.from)),
            ..Default::default()
        }),
    };
    let closed = || "the client's request stream closed".to_string();
    tx.send(pb::SubscribeRequest {
        request_id: 1,
        kind: Some(In::Open(open)),
    })
    .await
    .map_err(|_| closed())?;
    let mut responses = client
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status)?
        .into_inner();
    let (mut next_id, mut received, mut acked) = (2u64, 0u64, 0u64);
    let want = a.count.map(u64::from);
    // A consumer group member heartbeats itself, at its subscription's interval: the server
    // never does it on a member's behalf, so a hung client loses its partitions.
    let heartbeat = match a.mode {
        ModeArg::Group => {
            let info = client
                .get_subscription(pb::SubscriptionRef {
                    stream: a.stream.clone(),
                    subscription: a.subscription.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let ms = info
                .config
                .and_then(|c| c.heartbeat_interval_ms)
                .unwrap_or(0)
                .clamp(1, 10_000);
            Some(std::time::Duration::from_millis(ms))
        }
        _ => None,
    };
    // Without heartbeats the branch is disabled; the period only has to be valid.
    let mut ticks =
        tokio::time::interval(heartbeat.unwrap_or(std::time::Duration::from_secs(3600)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let m = tokio::select! {
            m = responses.message() => match m.map_err(status)? {
                Some(m) => m,
                None => break,
            },
            _ = ticks.tick(), if heartbeat.is_some() => {
                tx.send(pb::SubscribeRequest {
                    request_id: next_id,
                    kind: Some(In::Heartbeat(pb::Heartbeat { time: 0 })),
                })
                .await
                .map_err(|_| closed())?;
                next_id += 1;
                continue;
            }
        };
        match m.kind {
            Some(Out::Events(d)) => {
                let mut positions = Vec::new();
                for e in d.events {
                    if let Some(ev) = &e.event {
                        print(&event_json(ev, Some(e.attempt)))?;
                        positions.push(pb::Position {
                            partition: ev.partition,
                            offset: ev.offset,
                        });
                    }
                }
                received += positions.len() as u64;
                // Printed is read: a read-receipt consumer marks what it printed read (which
                // acknowledges it too); the others acknowledge it.
                let kind = if matches!(a.mode, ModeArg::Receipts) {
                    In::MarkRead(pb::MarkRead {
                        positions,
                        up_to: None,
                    })
                } else {
                    In::Ack(pb::Ack { positions })
                };
                tx.send(pb::SubscribeRequest {
                    request_id: next_id,
                    kind: Some(kind),
                })
                .await
                .map_err(|_| closed())?;
                next_id += 1;
            }
            Some(Out::Settled(s)) => {
                acked += (s.applied.len() + s.skipped.len()) as u64;
                if want.is_some_and(|w| acked >= w && received >= w) {
                    return Ok(());
                }
            }
            Some(Out::MarkedRead(pb::MarkedRead {
                marked: done,
                ignored,
            })) => {
                acked += u64::from(done) + u64::from(ignored);
                if want.is_some_and(|w| acked >= w && received >= w) {
                    return Ok(());
                }
            }
            Some(Out::Error(e)) => {
                return Err(status(tributary_grpc::status_of(&e)));
            }
            Some(Out::Notice(n)) => {
                use pb::consumer_notice::Kind as N;
                match n.kind {
                    Some(N::UnreadTimeout(u)) => {
                        let p = u.position.unwrap_or_default();
                        eprintln!(
                            "notice: unread timeout at {}/{} (delivered again: {})",
                            p.partition, p.offset, u.redelivered
                        );
                    }
                    Some(N::MemberExpired(_)) => {
                        eprintln!("notice: consumer group session expired")
                    }
                    None => {}
                }
            }
            Some(Out::Assignment(g)) if !g.member => {
                return Err(
                    "the consumer group session expired (no heartbeat within its session_timeout)"
                        .into(),
                );
            }
            Some(_) | None => {}
        }
    }
    Err("the server ended the subscription".into())
}

/// `tributary replay`
#[derive(Args)]
pub struct ReplayArgs {
    /// The stream.
    stream: String,
    /// An offset (of every partition) or an RFC 3339 time.
    #[arg(long, default_value = "0")]
    from: String,
    /// With a time --from: stop before this RFC 3339 time.
    #[arg(long)]
    to: Option<String>,
    /// Events per second at most.
    #[arg(long)]
    rate: Option<u32>,
    /// Stop after this many events.
    #[arg(long)]
    max: Option<u64>,
    /// Start at the first available offset when --from was removed by retention.
    #[arg(long)]
    from_first_available: bool,
    #[command(flatten)]
    server: ServerArg,
}

pub async fn replay(a: ReplayArgs) -> Result<(), String> {
    use pb::replay_request::From;
    let time = |s: &str, flag: &str| match parse_start(s) {
        Ok(StartPosition::Time(t)) => Ok(t.0),
        _ => Err(format!("{flag} {s:?}: expected an RFC 3339 time")),
    };
    let from = match (parse_start(&a.from), &a.to) {
        (Ok(StartPosition::Offset(o)), None) => From::Offset(o),
        (Ok(StartPosition::Time(t)), None) => From::Time(t.0),
        (_, Some(to)) => From::Range(pb::TimeRange {
            start: time(&a.from, "--from")?,
            end: time(to, "--to")?,
        }),
        _ => {
            return Err(format!(
                "--from {:?}: expected an offset or an RFC 3339 time",
                a.from
            ));
        }
    };
    let req = pb::ReplayRequest {
        stream: a.stream.clone(),
        from: Some(from),
        max_events: a.max,
        max_events_per_second: a.rate,
        from_first_available: a.from_first_available,
        ..Default::default()
    };
    let mut s = connect(&a.server)
        .await?
        .replay(req)
        .await
        .map_err(status)?
        .into_inner();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    use pb::replay_response::Kind;
    while let Some(m) = s.message().await.map_err(status)? {
        match m.kind {
            Some(Kind::Events(d)) => {
                for e in d.events.iter().filter_map(|d| d.event.as_ref()) {
                    print(&event_json(e, None))?;
                }
                if let Some(b) = &bar {
                    b.inc(d.events.len() as u64);
                }
            }
            Some(Kind::Progress(p)) => {
                if let Some(b) = &bar {
                    b.set_length(p.done + p.remaining);
                }
            }
            Some(Kind::Done(d)) => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                eprintln!("replayed {} events", d.total);
                return Ok(());
            }
            None => {}
        }
    }
    Err("the server ended the replay before it was done".into())
}

/// `tributary offsets ...`
#[derive(Subcommand)]
pub enum OffsetsCmd {
    /// Show a subscription's positions (per cursor: floors, next, pending, lag) as JSON.
    Show {
        /// The stream.
        stream: String,
        /// The subscription.
        #[arg(long)]
        subscription: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Move a subscription (or one broadcast consumer) to a new position.
    Reset {
        /// The stream.
        stream: String,
        /// The subscription.
        #[arg(long)]
        subscription: String,
        /// beginning, end, an offset or an RFC 3339 time.
        #[arg(long, value_parser = parse_start)]
        to: StartPosition,
        /// Broadcast: only this consumer.
        #[arg(long)]
        consumer: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove a detached consumer's position and read receipts (broadcast, read receipts) for
    /// good: it no longer counts in lag and health; attaching again starts afresh.
    Remove {
        /// The stream.
        stream: String,
        /// The subscription.
        #[arg(long)]
        subscription: String,
        /// The consumer.
        #[arg(long)]
        consumer: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

pub async fn offsets(cmd: OffsetsCmd) -> Result<(), String> {
    match cmd {
        OffsetsCmd::Show {
            stream,
            subscription,
            server,
        } => {
            let r = connect(&server)
                .await?
                .get_subscription(pb::SubscriptionRef {
                    stream,
                    subscription,
                })
                .await
                .map_err(status)?;
            let i = r.get_ref();
            let c = i.config.clone().unwrap_or_default();
            print(&json!({
                "stream": c.stream,
                "subscription": c.name,
                "mode": pb::SubscriptionMode::try_from(c.mode).map_or("?".into(), |m| spoken(m.as_str_name(), "SUBSCRIPTION_MODE_")),
                "attached": i.attached,
                "cursors": i.cursors.iter().map(|c| json!({
                    "consumer": (!c.consumer.is_empty()).then_some(&c.consumer),
                    "floors": c.floors,
                    "next": c.next,
                    "pending": c.pending,
                    "lag": c.lag,
                })).collect::<Vec<_>>(),
            }))
        }
        OffsetsCmd::Reset {
            stream,
            subscription,
            to,
            consumer,
            server,
        } => {
            connect(&server)
                .await?
                .reset_offset(pb::ResetOffsetRequest {
                    stream,
                    subscription,
                    consumer: consumer.unwrap_or_default(),
                    to: Some(start_position_to_pb(&to)),
                })
                .await
                .map_err(status)?;
            Ok(())
        }
        OffsetsCmd::Remove {
            stream,
            subscription,
            consumer,
            server,
        } => {
            connect(&server)
                .await?
                .remove_consumer(pb::RemoveConsumerRequest {
                    stream,
                    subscription,
                    consumer,
                })
                .await
                .map_err(status)?;
            Ok(())
        }
    }
}

/// `tributary schema ...`
#[derive(Subcommand)]
pub enum SchemaCmd {
    /// Register the next version of an event type.
    Register {
        /// The event type.
        event_type: String,
        /// The version: the latest plus one (1 for a new type).
        version: u32,
        /// Its JSON Schema: inline JSON or a file.
        #[arg(long)]
        json_schema: Option<String>,
        /// The upcaster from the version before: a JSON array of rules, inline or a file.
        #[arg(long)]
        rules: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List the registered event types and versions, one JSON object per type.
    List {
        #[command(flatten)]
        server: ServerArg,
    },
}

/// Inline JSON, or the content of the file it names.
fn json_arg(flag: &str, v: Option<String>) -> Result<String, String> {
    match v {
        None => Ok(String::new()),
        Some(t) if t.trim_start().starts_with(['{', '[']) => Ok(t),
        Some(path) => std::fs::read_to_string(&path).map_err(|e| format!("{flag} {path}: {e}")),
    }
}

pub async fn schema(cmd: SchemaCmd) -> Result<(), String> {
    match cmd {
        SchemaCmd::Register {
            event_type,
            version,
            json_schema,
            rules,
            server,
        } => {
            let req = pb::RegisterSchemaRequest {
                event_type,
                version,
                json_schema: json_arg("--json-schema", json_schema)?,
                rules_json: json_arg("--rules", rules)?,
            };
            connect(&server)
                .await?
                .register_schema(req)
                .await
                .map_err(status)?;
            Ok(())
        }
        SchemaCmd::List { server } => {
            let r = connect(&server)
                .await?
                .list_schemas(())
                .await
                .map_err(status)?;
            r.get_ref().schemas.iter().try_for_each(|s| {
                print(&json!({
                    "event_type": s.event_type,
                    "versions": s.versions.iter().map(|v| json!({
                        "version": v.version,
                        "json_schema": serde_json::from_str::<Value>(&v.json_schema).ok(),
                        "rules": serde_json::from_str::<Value>(&v.rules_json).ok(),
                        "function": v.function,
                    })).collect::<Vec<_>>(),
                }))
            })
        }
    }
}
