//! The AMQP relay against a raw lapin publisher, and service-to-service latency through
//! RabbitMQ, in one run on one broker.
//!
//! 1. **Raw**: one lapin channel with publisher confirms publishes N persistent messages of
//!    `--payload` bytes to a durable topic exchange with a durable queue bound to it, at most
//!    `--window` unconfirmed: what a hand-written publisher gets from this broker.
//! 2. **Relay**: a Tributary server in this process (SQLite, fsync on) with a cross-service
//!    stream whose exchange has a durable queue bound the same way, the clock stopping when
//!    the queue holds all N (polled every 10 ms). (a) The relay alone, draining a backlog: the
//!    N events were taken while the broker was away, and the server starts again with it
//!    back. (b) End to end: N events of the same size are published over gRPC (calls of 1,000)
//!    while the relay runs: appending, relaying and the broker's confirms.
//! 3. **Latency**: a second server B consumes A's stream into a local stream
//!    (`[[amqp.inbound]]`); a subscriber on B acknowledges what it receives. Events are
//!    published on A one per call at `--rate` events/s on a fixed schedule (open loop) for
//!    `--seconds`, and each is timed from its scheduled publish to its delivery on B.
//!
//! `cargo run --release -p tributary-tests --bin bench-amqp -- --amqp-url amqp://guest:guest@127.0.0.1:56729/%2f`

use clap::Parser;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel as GrpcChannel;
use tributary_grpc::pb;
use tributary_grpc::pb::event_stream_client::EventStreamClient;
use tributary_server::bind;
use tributary_server::config::{FileConfig, Overrides, Settings};

#[derive(Parser)]
struct Args {
    /// The broker (`TRIBUTARY_TEST_AMQP_URL` when not given).
    #[arg(long, env = "TRIBUTARY_TEST_AMQP_URL")]
    amqp_url: String,
    /// Messages of the raw and relay phases.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Payload bytes of every message.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Unconfirmed publishes at most: the raw publisher's window and the relay's
    /// `[amqp] relay_window`.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Partitions of the relayed stream.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Latency phase: events per second published on A (0: no latency phase).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Latency phase: measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Tokio worker threads shared by the servers and the clients.
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
}

/// The same allocator as the `tributary` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), String> {
    let args = Args::parse();
    tributary_tests::block_on(args.worker_threads, run(args))?
}

async fn run(args: Args) -> Result<(), String> {
    let prefix = format!("bench{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("tributary-bench-amqp-{}", std::process::id()));
    let conn = Connection::connect(&args.amqp_url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("{}: {e}", args.amqp_url))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    println!(
        "{} messages of {} bytes, window {}, {} partitions, {} workers",
        args.events, args.payload, args.window, args.partitions, args.worker_threads
    );

    let bare = raw_publisher(&conn, &ch, &prefix, &args, false).await?;
    println!(
        "raw lapin publisher with confirms, bare messages: {:.0} messages/s ({} in {:.2} s)",
        args.events as f64 / bare.as_secs_f64(),
        args.events,
        bare.as_secs_f64()
    );
    let raw = raw_publisher(&conn, &ch, &prefix, &args, true).await?;
    println!(
        "raw lapin publisher with confirms, the relay's envelope: {:.0} messages/s ({} in {:.2} s)",
        args.events as f64 / raw.as_secs_f64(),
        args.events,
        raw.as_secs_f64()
    );

    let amqp = format!(
        "[amqp]\nurl = \"{}\"\nprefix = \"{prefix}\"\nrelay_window = {}\n",
        args.amqp_url, args.window
    );
    let a_config = format!(
        "{amqp}\n[[streams]]\nname = \"orders\"\npartitions = {}\ncross_service = true\n",
        args.partitions
    );
    let drained = backlog_phase(&ch, &prefix, &dir, &args).await?;
    println!(
        "Tributary relay draining a backlog (SQLite, fsync on): {:.0} events/s ({} in {:.2} s), {:.2}x the raw publisher",
        args.events as f64 / drained.as_secs_f64(),
        args.events,
        drained.as_secs_f64(),
        raw.as_secs_f64() / drained.as_secs_f64()
    );
    let (a_stop, a_task, a_url) = start_server(&dir.join("a"), &a_config).await?;
    let mut a = connect(&a_url).await?;
    let exchange = format!("{prefix}.orders");
    let queue = format!("{prefix}.relay-count");
    declare_counted(&ch, &exchange, &queue).await?;
    let relay = relay_phase(&mut a, &ch, &queue, &args).await?;
    println!(
        "Tributary relay (SQLite, fsync on): {:.0} events/s ({} in {:.2} s), {:.2}x the raw publisher",
        args.events as f64 / relay.as_secs_f64(),
        args.events,
        relay.as_secs_f64(),
        raw.as_secs_f64() / relay.as_secs_f64()
    );
    delete_queue(&ch, &queue).await?;

    if args.rate > 0 {
        let b_config = format!(
            "{amqp}\n[[amqp.inbound]]\nremote_stream = \"orders\"\nsubscription = \"bench\"\n\
             stream = \"orders-in\"\n\n[[streams]]\nname = \"orders-in\"\npartitions = {}\n\n\
             [[subscriptions]]\nstream = \"orders-in\"\nname = \"reader\"\n",
            args.partitions
        );
        let (b_stop, b_task, b_url) = start_server(&dir.join("b"), &b_config).await?;
        let b = connect(&b_url).await?;
        let hist = latency_phase(&mut a, b, &args).await?;
        let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "A to B through RabbitMQ at {} events/s: {} delivered, latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            args.rate,
            hist.len(),
            q(0.5),
            q(0.99),
            q(0.999),
            hist.max() as f64 / 1000.0
        );
        let _ = b_stop.send(());
        let _ = b_task.await;
        delete_queue(&ch, &format!("{prefix}.orders:bench")).await?;
        delete_queue(&ch, &format!("{prefix}.orders:bench:dlq")).await?;
        ch.exchange_delete(
            format!("{prefix}.orders:bench:dlx").as_str().into(),
            Default::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    ch.exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let _ = a_stop.send(());
    let _ = a_task.await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// A durable topic exchange and a durable queue bound to it for every routing key.
async fn declare_counted(ch: &Channel, exchange: &str, queue: &str) -> Result<(), String> {
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("declaring {exchange}: {e}"))?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("declaring {queue}: {e}"))?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("binding {queue}: {e}"))
}

async fn delete_queue(ch: &Channel, queue: &str) -> Result<(), String> {
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("deleting {queue}: {e}"))
}

/// Messages in `queue` now.
async fn queued(ch: &Channel, queue: &str) -> Result<u64, String> {
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("{queue}: {e}"))?;
    Ok(u64::from(q.message_count()))
}

/// Phase 1: the time a raw lapin publisher takes for every message to be confirmed. Bare: a
/// message id and persistence only. `envelope`: the properties and headers the relay sets
/// (docs/server.md, "Cross-service streams"), written out here by hand, so that the broker
/// does the same work per message in both.
async fn raw_publisher(
    conn: &Connection,
    ch: &Channel,
    prefix: &str,
    args: &Args,
    envelope: bool,
) -> Result<Duration, String> {
    let (exchange, queue) = (format!("{prefix}.raw"), format!("{prefix}.raw-count"));
    declare_counted(ch, &exchange, &queue).await?;
    let publisher = conn.create_channel().await.map_err(|e| e.to_string())?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let body = vec![7u8; args.payload];
    let mut waiting = VecDeque::with_capacity(args.window);
    let t0 = Instant::now();
    for i in 0..args.events {
        if waiting.len() >= args.window.max(1) {
            confirmed(waiting.pop_front()).await?;
        }
        let mut props = BasicProperties::default()
            .with_message_id(uuid_like(i).as_str().into())
            .with_delivery_mode(2);
        if envelope {
            let mut h = FieldTable::default();
            let mut put = |k: &str, v: AMQPValue| {
                h.insert(k.into(), v);
            };
            put("x-stream", AMQPValue::LongString("orders".into()));
            put("x-partition", AMQPValue::LongUInt((i % 4) as u32));
            put("x-offset", AMQPValue::LongLongInt(i as i64));
            put("x-schema-version", AMQPValue::LongUInt(1));
            put("x-event-type", AMQPValue::LongString("bench".into()));
            put("x-timestamp-ms", AMQPValue::LongLongInt(1_765_000_000_000));
            put(
                "x-key",
                AMQPValue::LongString(format!("{}", i % 1024).into()),
            );
            props = props
                .with_type("bench".into())
                .with_timestamp(1_765_000_000)
                .with_content_type("application/octet-stream".into())
                .with_headers(h);
        }
        let confirm = publisher
            .basic_publish(
                exchange.as_str().into(),
                "bench".into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .map_err(|e| format!("publishing: {e}"))?;
        waiting.push_back(confirm);
    }
    while let Some(c) = waiting.pop_front() {
        confirmed(Some(c)).await?;
    }
    let took = t0.elapsed();
    let held = queued(ch, &queue).await?;
    if held != args.events {
        return Err(format!("the raw queue holds {held} of {}", args.events));
    }
    delete_queue(ch, &queue).await?;
    ch.exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(took)
}

/// A message id the length of the relay's (a UUID's text).
fn uuid_like(i: u64) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

async fn confirmed(c: Option<lapin::PublisherConfirm>) -> Result<(), String> {
    let Some(c) = c else { return Ok(()) };
    match c.await {
        Ok(conf) if conf.is_ack() => Ok(()),
        Ok(_) => Err("the broker refused a publish".into()),
        Err(e) => Err(format!("confirm: {e}")),
    }
}

type Stop = tokio::sync::oneshot::Sender<()>;
type Task = tokio::task::JoinHandle<Result<(), tributary_server::ServeError>>;

/// A server in this process on a SQLite store in `dir`, with this configuration file.
async fn start_server(dir: &Path, config: &str) -> Result<(Stop, Task, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("tributary.toml");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = FileConfig::load(&path).map_err(|e| e.to_string())?;
    let loopback = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let settings = Settings::resolve(
        file,
        Overrides {
            data_dir: Some(dir.to_path_buf()),
            grpc_listen: Some(loopback),
            http_listen: Some(loopback),
            ..Overrides::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let bound = bind(settings).await.map_err(|e| e.to_string())?;
    let url = format!("http://{}", bound.addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.run(async move {
        let _ = rx.await;
    }));
    Ok((tx, task, url))
}

async fn connect(url: &str) -> Result<EventStreamClient<GrpcChannel>, String> {
    let ch = GrpcChannel::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(EventStreamClient::new(ch))
}

/// `n` events of the bench's size; the first 8 payload bytes carry `stamp`.
fn events(args: &Args, n: u64, first: u64, stamp: u64) -> Vec<pb::NewEvent> {
    (first..first + n)
        .map(|i| {
            let mut payload = vec![7u8; args.payload.max(8)];
            payload[..8].copy_from_slice(&stamp.to_le_bytes());
            pb::NewEvent {
                event_type: "bench".into(),
                key: Some(format!("{}", i % 1024).into_bytes().into()),
                content_type: "application/octet-stream".into(),
                payload: payload.into(),
                ..Default::default()
            }
        })
        .collect()
}

/// Phase 2a: the relay alone. A server whose broker is away (an address nobody listens on)
/// takes the N events; it is stopped and started again on the same store with the broker
/// back, and the clock runs from that start (recovery included) until the broker's queue
/// holds every event: what the relay does after an outage, with nothing else to do.
async fn backlog_phase(
    ch: &Channel,
    prefix: &str,
    dir: &Path,
    args: &Args,
) -> Result<Duration, String> {
    let prefix = format!("{prefix}-backlog");
    let config = |url: &str| {
        format!(
            "[amqp]\nurl = \"{url}\"\nprefix = \"{prefix}\"\nrelay_window = {}\n\n\
             [[streams]]\nname = \"orders\"\npartitions = {}\ncross_service = true\n",
            args.window, args.partitions
        )
    };
    let dir = dir.join("backlog");
    let (stop, task, url) =
        start_server(&dir, &config("amqp://guest:guest@127.0.0.1:1/%2f")).await?;
    let mut a = connect(&url).await?;
    let mut sent = 0;
    while sent < args.events {
        let n = (args.events - sent).min(1000);
        a.publish(pb::PublishRequest {
            stream: "orders".into(),
            events: events(args, n, sent, 0),
            expected_offset: None,
        })
        .await
        .map_err(|e| format!("publishing the backlog: {e}"))?;
        sent += n;
    }
    drop(a);
    let _ = stop.send(());
    let _ = task.await;
    let (exchange, queue) = (format!("{prefix}.orders"), format!("{prefix}.count"));
    declare_counted(ch, &exchange, &queue).await?;
    let t0 = Instant::now();
    let (stop, task, _) = start_server(&dir, &config(&args.amqp_url)).await?;
    wait_for(ch, &queue, args.events).await?;
    let took = t0.elapsed();
    let _ = stop.send(());
    let _ = task.await;
    delete_queue(ch, &queue).await?;
    ch.exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(took)
}

/// Polls (every 10 ms, for at most 10 minutes) until `queue` holds `n` messages.
async fn wait_for(ch: &Channel, queue: &str, n: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let held = queued(ch, queue).await?;
        if held >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the relay delivered {held} of {n}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Phase 2b: from the first append until the broker's queue holds every event.
async fn relay_phase(
    a: &mut EventStreamClient<GrpcChannel>,
    ch: &Channel,
    queue: &str,
    args: &Args,
) -> Result<Duration, String> {
    const CALL: u64 = 1000;
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < args.events {
        let n = (args.events - sent).min(CALL);
        a.publish(pb::PublishRequest {
            stream: "orders".into(),
            events: events(args, n, sent, 0),
            expected_offset: None,
        })
        .await
        .map_err(|e| format!("publishing on A: {e}"))?;
        sent += n;
    }
    let appended = t0.elapsed();
    wait_for(ch, queue, args.events).await?;
    let took = t0.elapsed();
    println!(
        "  (appending the {} events on A took {:.2} s of it)",
        args.events,
        appended.as_secs_f64()
    );
    Ok(took)
}

/// Phase 3: open-loop publishes on A, delivered to a subscriber on B; latencies in µs.
async fn latency_phase(
    a: &mut EventStreamClient<GrpcChannel>,
    mut b: EventStreamClient<GrpcChannel>,
    args: &Args,
) -> Result<Histogram<u64>, String> {
    let start = Instant::now();
    let total = args.rate * args.seconds;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let open = pb::OpenSubscription {
        stream: "orders-in".into(),
        subscription: "reader".into(),
        consumer: "bench".into(),
        max_in_flight: Some(1000),
        ..Default::default()
    };
    tx.send(pb::SubscribeRequest {
        request_id: 1,
        kind: Some(pb::subscribe_request::Kind::Open(open)),
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut deliveries = b
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("subscribing on B: {e}"))?
        .into_inner();
    // Only stamped events (not 0) are timed: unstamped ones are the warm-up below.
    let (first_tx, mut first_rx) = tokio::sync::watch::channel(false);
    let consumer = tokio::spawn(async move {
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
        let mut id = 2;
        while hist.len() < total {
            let m = match deliveries.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Err("B ended the subscription".to_string()),
                Err(e) => return Err(format!("B: {e}")),
            };
            let Some(pb::subscribe_response::Kind::Events(d)) = m.kind else {
                continue;
            };
            let now = start.elapsed().as_micros() as u64;
            let _ = first_tx.send(true);
            let mut positions = Vec::with_capacity(d.events.len());
            for e in d.events.iter().filter_map(|d| d.event.as_ref()) {
                let stamp = e
                    .payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_le_bytes);
                if stamp > 0 {
                    let _ = hist.record(now.saturating_sub(stamp).max(1));
                }
                positions.push(pb::Position {
                    partition: e.partition,
                    offset: e.offset,
                });
            }
            let ack = pb::SubscribeRequest {
                request_id: id,
                kind: Some(pb::subscribe_request::Kind::Ack(pb::Ack { positions })),
            };
            id += 1;
            if tx.send(ack).await.is_err() {
                return Err("B closed the subscription".into());
            }
        }
        Ok(hist)
    });
    // Warm-up: B binds its queue after it starts, and what A relays before that is not
    // routed to it. Unstamped events are published until one reaches B's subscriber.
    let warm = Instant::now() + Duration::from_secs(60);
    let mut k = 0;
    while !*first_rx.borrow() {
        if Instant::now() > warm {
            return Err("no event reached B within 60 s".into());
        }
        a.publish(pb::PublishRequest {
            stream: "orders".into(),
            events: events(args, 1, k, 0),
            expected_offset: None,
        })
        .await
        .map_err(|e| format!("publishing on A: {e}"))?;
        k += 1;
        let _ = tokio::time::timeout(Duration::from_millis(100), first_rx.changed()).await;
    }
    let base = start.elapsed();
    for i in 0..total {
        // Stamped with the scheduled time (µs since start, above 0), so a late publish
        // counts its wait (no coordinated omission).
        let due = base + Duration::from_micros(1_000_000 * (i + 1) / args.rate);
        tokio::time::sleep_until((start + due).into()).await;
        let mut a = a.clone();
        let batch = events(args, 1, args.events + i, due.as_micros() as u64);
        tokio::spawn(async move {
            let _ = a
                .publish(pb::PublishRequest {
                    stream: "orders".into(),
                    events: batch,
                    expected_offset: None,
                })
                .await;
        });
    }
    match tokio::time::timeout(Duration::from_secs(120), consumer).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("B did not receive every event within 120 s".into()),
    }
}
