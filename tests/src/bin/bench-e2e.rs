//! Publish-to-deliver throughput and latency of a whole Tributary server, over gRPC on
//! loopback: P producers publish 256-byte events (batches of B per call), C consumers read
//! them through one exclusive subscription and acknowledge every delivery. The server runs
//! in this process on the store given (fsync on unless `--durability normal`), the client on the same cores.
//!
//! With `--server-bin PATH` the server is that binary instead, in a process of its own
//! (`target/release/tributary` on tokio, `target/release/tributary-async-std` on async-std,
//! each with its default durability, full), so the two runtimes can be compared in one run:
//! the clients stay in this process.
//!
//! Consume only (`--backlog N`): N events are published first (unary calls of 1,000), then the
//! consumers start and the bench measures how fast they read and acknowledge the backlog,
//! with no producer running.
//!
//! Closed loop (default): each producer keeps one call in flight. Open loop (`--rate R`):
//! calls are started on a fixed schedule of R events/s whatever the answers, and latency is
//! measured from the scheduled time, so queueing is not hidden (no coordinated omission).
//!
//! `cargo run --release -p tributary-tests --bin bench-e2e -- --store sqlite:/tmp/b.db`

use clap::Parser;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tributary_grpc::pb;
use tributary_grpc::pb::event_stream_client::EventStreamClient;
use tributary_server::bind;
use tributary_server::config::{FileConfig, Overrides, Settings};

#[derive(Parser)]
struct Args {
    /// `sqlite:PATH` or `postgres://USER@HOST:PORT/DB[#SCHEMA]`.
    #[arg(long)]
    store: String,
    /// `full` (every answer waits for its fsync) or `normal` (the fsync is left to the
    /// database, as JetStream leaves it to the OS).
    #[arg(long, default_value = "full")]
    durability: tributary_store_api::Durability,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Producers (closed loop: calls in flight).
    #[arg(long, default_value_t = 256)]
    producers: usize,
    /// Events per publish call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Consumers of the exclusive subscription.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Partitions of the stream.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Open loop at this many events/s (0: closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Tokio worker threads shared by the server and the clients.
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
    /// Closed loop only: publish through `PublishPipelined` streams (one per producer, each
    /// with this many batches in flight) instead of unary calls.
    #[arg(long, default_value_t = 0)]
    pipelined: usize,
    /// Appends of the stream written to the store at once (0: the store's preference).
    #[arg(long, default_value_t = 0)]
    append_writes_in_flight: usize,
    /// Consume only: publish this many events first, then measure how fast the consumers
    /// read and acknowledge them (at most `--seconds`).
    #[arg(long, default_value_t = 0)]
    backlog: u64,
    /// Serve with this binary (`tributary` or `tributary-async-std`) in a process of its own
    /// instead of in this one; `--durability` and `--append-writes-in-flight` are then the
    /// server's defaults.
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
}

/// The server under test: in this process, or a child process.
enum ServerUnderTest {
    InProcess(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), tributary_server::ServeError>>,
    ),
    Process(std::process::Child),
}

impl ServerUnderTest {
    /// Starts it; its gRPC URL.
    async fn start(
        args: &Args,
        dir: &std::path::Path,
    ) -> Result<(ServerUnderTest, String), String> {
        if let Some(bin) = &args.server_bin {
            use std::io::BufRead;
            let is_tokio = bin.file_name().is_some_and(|n| n == "tributary");
            let mut cmd = std::process::Command::new(bin);
            cmd.arg("serve");
            if is_tokio {
                cmd.args(["--http-listen", "127.0.0.1:0"]);
            }
            let mut child = cmd
                .args(["--grpc-listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir)
                .args(["--store", &args.store])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("{}: {e}", bin.display()))?;
            let out = child.stdout.take().ok_or("no stdout")?;
            let mut line = String::new();
            std::io::BufReader::new(out)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let url = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("grpc="))
                .ok_or_else(|| format!("the server did not start: {line:?}"))?
                .to_string();
            return Ok((ServerUnderTest::Process(child), url));
        }
        let settings = Settings::resolve(
            FileConfig::default(),
            Overrides {
                data_dir: Some(dir.to_path_buf()),
                store: Some(args.store.clone()),
                durability: Some(args.durability),
                append_writes_in_flight: (args.append_writes_in_flight > 0)
                    .then_some(args.append_writes_in_flight),
                grpc_listen: Some("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?),
                http_listen: Some("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?),
                ..Overrides::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let bound = bind(settings).await.map_err(|e| e.to_string())?;
        let url = format!("http://{}", bound.addr());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.run(async move {
            let _ = stop_rx.await;
        }));
        Ok((ServerUnderTest::InProcess(stop_tx, server), url))
    }

    /// Asks it to stop.
    fn signal(&mut self) {
        match self {
            ServerUnderTest::InProcess(stop, _) => {
                let (tx, _) = tokio::sync::oneshot::channel();
                let _ = std::mem::replace(stop, tx).send(());
            }
            ServerUnderTest::Process(child) => {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
    }

    /// Waits for it to end.
    async fn wait(self) {
        match self {
            ServerUnderTest::InProcess(_, task) => {
                let _ = task.await;
            }
            ServerUnderTest::Process(mut child) => {
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            }
        }
    }
}

/// The same allocator as the `tributary` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAYLOAD: usize = 256;

type Client = EventStreamClient<Channel>;

struct Shared {
    start: Instant,
    running: AtomicBool,
    published: AtomicU64,
    consumed: AtomicU64,
    failed: AtomicU64,
}

fn payload(shared: &Shared) -> bytes::Bytes {
    let mut p = vec![0u8; PAYLOAD];
    let t = shared.start.elapsed().as_nanos() as u64;
    p[..8].copy_from_slice(&t.to_le_bytes());
    p.into()
}

fn events(shared: &Shared, n: usize, i: u64) -> Vec<pb::NewEvent> {
    (0..n)
        .map(|k| pb::NewEvent {
            event_type: "bench".into(),
            key: Some(
                format!("{}", i.wrapping_add(k as u64) % 1024)
                    .into_bytes()
                    .into(),
            ),
            content_type: "application/octet-stream".into(),
            payload: payload(shared),
            ..Default::default()
        })
        .collect()
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    tributary_tests::block_on(args.worker_threads, run(args))?
}

async fn run(args: Args) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("tributary-bench-{}", std::process::id()));
    let (mut server, url) = ServerUnderTest::start(&args, &dir).await?;

    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..args.connections.max(1) {
        let ch = Channel::from_shared(url.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        clients.push(EventStreamClient::new(ch));
    }
    let stream = format!("bench-{}", std::process::id());
    clients[0]
        .create_stream(pb::CreateStreamRequest {
            name: stream.clone(),
            partitions: Some(args.partitions),
            dedup_window_ms: Some(0),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    clients[0]
        .create_subscription(pb::SubscriptionConfig {
            stream: stream.clone(),
            name: "bench".into(),
            mode: pb::SubscriptionMode::Exclusive as i32,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;

    let shared = Arc::new(Shared {
        start: Instant::now(),
        running: AtomicBool::new(true),
        published: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });

    if args.backlog > 0 {
        publish_backlog(&clients, &stream, &shared, args.backlog).await?;
    }

    // Consumers.
    let consume_start = Instant::now();
    let mut consumers = Vec::new();
    for c in 0..args.consumers {
        let mut client = clients[c % clients.len()].clone();
        let (stream, shared) = (stream.clone(), shared.clone());
        consumers.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let open = pb::OpenSubscription {
                stream,
                subscription: "bench".into(),
                consumer: format!("c{c}"),
                max_in_flight: Some(1000),
                ..Default::default()
            };
            let _ = tx
                .send(pb::SubscribeRequest {
                    request_id: 1,
                    kind: Some(pb::subscribe_request::Kind::Open(open)),
                })
                .await;
            let Ok(r) = client
                .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            else {
                return hist;
            };
            let mut rx = r.into_inner();
            let mut id = 2;
            while let Ok(Some(m)) = rx.message().await {
                if let Some(pb::subscribe_response::Kind::Events(d)) = m.kind {
                    let now = shared.start.elapsed().as_nanos() as u64;
                    let mut positions = Vec::with_capacity(d.events.len());
                    for e in d.events.iter().filter_map(|d| d.event.as_ref()) {
                        let sent = e
                            .payload
                            .get(..8)
                            .and_then(|b| b.try_into().ok())
                            .map_or(now, u64::from_le_bytes);
                        let _ = hist.record((now.saturating_sub(sent) / 1000).max(1));
                        positions.push(pb::Position {
                            partition: e.partition,
                            offset: e.offset,
                        });
                    }
                    shared
                        .consumed
                        .fetch_add(positions.len() as u64, Ordering::Relaxed);
                    let ack = pb::SubscribeRequest {
                        request_id: id,
                        kind: Some(pb::subscribe_request::Kind::Ack(pb::Ack { positions })),
                    };
                    id += 1;
                    if tx.send(ack).await.is_err() {
                        break;
                    }
                }
                if !shared.running.load(Ordering::Relaxed) {
                    break;
                }
            }
            hist
        }));
    }

    // Producers.
    let mut producers = Vec::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(args.producers.max(1)));
    if args.backlog > 0 {
        // No producers: the consumers read the backlog.
    } else if args.rate == 0 && args.pipelined > 0 {
        for p in 0..args.producers {
            let mut client = clients[p % clients.len()].clone();
            let (stream, shared, batch, window) =
                (stream.clone(), shared.clone(), args.batch, args.pipelined);
            producers.push(tokio::spawn(async move {
                let mut hist = new_hist();
                let (tx, rx) = tokio::sync::mpsc::channel(window + 1);
                let send = |i: u64| pb::PipelinedPublish {
                    request_id: i,
                    batch: Some(pb::PublishRequest {
                        stream: stream.clone(),
                        events: events(&shared, batch, i),
                        expected_offset: None,
                    }),
                };
                let mut sent = std::collections::VecDeque::new();
                let mut i = p as u64 * 1_000_003;
                for _ in 0..window {
                    sent.push_back(Instant::now());
                    let _ = tx.send(send(i)).await;
                    i += batch as u64;
                }
                let Ok(r) = client
                    .publish_pipelined(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                else {
                    return hist;
                };
                let mut answers = r.into_inner();
                while let Ok(Some(a)) = answers.message().await {
                    if let Some(t0) = sent.pop_front() {
                        let _ = hist.record((t0.elapsed().as_micros() as u64).max(1));
                    }
                    match a.kind {
                        Some(pb::pipelined_answer::Kind::Published(_)) => {
                            shared.published.fetch_add(batch as u64, Ordering::Relaxed);
                        }
                        _ => {
                            shared.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if !shared.running.load(Ordering::Relaxed) {
                        break;
                    }
                    sent.push_back(Instant::now());
                    if tx.send(send(i)).await.is_err() {
                        break;
                    }
                    i += batch as u64;
                }
                hist
            }));
        }
    } else if args.rate == 0 {
        for p in 0..args.producers {
            let mut client = clients[p % clients.len()].clone();
            let (stream, shared, batch) = (stream.clone(), shared.clone(), args.batch);
            producers.push(tokio::spawn(async move {
                let mut hist = new_hist();
                let mut i = p as u64 * 1_000_003;
                while shared.running.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let r = client
                        .publish(pb::PublishRequest {
                            stream: stream.clone(),
                            events: events(&shared, batch, i),
                            expected_offset: None,
                        })
                        .await;
                    i += batch as u64;
                    match r {
                        Ok(_) => {
                            let _ = hist.record((t0.elapsed().as_micros() as u64).max(1));
                            shared.published.fetch_add(batch as u64, Ordering::Relaxed);
                        }
                        Err(_) => {
                            shared.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                hist
            }));
        }
    } else {
        let (stream, shared, batch, clients) =
            (stream.clone(), shared.clone(), args.batch, clients.clone());
        let calls_per_sec = (args.rate as f64 / batch as f64).max(1.0);
        let (hist_tx, mut hist_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        producers.push(tokio::spawn(async move {
            let begin = Instant::now();
            let mut n: u64 = 0;
            while shared.running.load(Ordering::Relaxed) {
                let due = begin + Duration::from_secs_f64(n as f64 / calls_per_sec);
                tokio::time::sleep_until(due.into()).await;
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let mut client = clients[n as usize % clients.len()].clone();
                let (stream, shared, hist_tx) = (stream.clone(), shared.clone(), hist_tx.clone());
                tokio::spawn(async move {
                    let r = client
                        .publish(pb::PublishRequest {
                            stream,
                            events: events(&shared, batch, n),
                            expected_offset: None,
                        })
                        .await;
                    drop(permit);
                    if r.is_ok() {
                        shared.published.fetch_add(batch as u64, Ordering::Relaxed);
                        let _ = hist_tx.send((due.elapsed().as_micros() as u64).max(1));
                    } else {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
                n += 1;
            }
            drop(hist_tx);
            let mut hist = new_hist();
            while let Some(v) = hist_rx.recv().await {
                let _ = hist.record(v);
            }
            hist
        }));
    }

    if args.backlog > 0 {
        let deadline = consume_start + Duration::from_secs(args.seconds);
        while shared.consumed.load(Ordering::Relaxed) < args.backlog && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (consumed, secs) = (
            shared.consumed.load(Ordering::Relaxed),
            consume_start.elapsed().as_secs_f64(),
        );
        shared.running.store(false, Ordering::Relaxed);
        server.signal();
        for c in consumers {
            let _ = c.await;
        }
        server.wait().await;
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "store {} ({} durability) | backlog {} events, consumers {} partitions {} connections {} workers {}",
            args.store.split('@').next_back().unwrap_or(""),
            args.durability,
            args.backlog,
            args.consumers,
            args.partitions,
            args.connections,
            args.worker_threads,
        );
        println!(
            "consumed {:.0} events/s with acks ({consumed} of {} in {secs:.2} s)",
            consumed as f64 / secs,
            args.backlog
        );
        return Ok(());
    }

    // Warm up for a second, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (p0, c0, t0) = (
        shared.published.load(Ordering::Relaxed),
        shared.consumed.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (p1, c1, secs) = (
        shared.published.load(Ordering::Relaxed),
        shared.consumed.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    shared.running.store(false, Ordering::Relaxed);
    let mut publish_hist = new_hist();
    for p in producers {
        if let Ok(h) = p.await {
            let _ = publish_hist.add(&h);
        }
    }
    server.signal();
    let mut e2e_hist = new_hist();
    for c in consumers {
        if let Ok(h) = c.await {
            let _ = e2e_hist.add(&h);
        }
    }
    server.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "store {} ({} durability) | producers {} batch {} consumers {} partitions {} connections {} workers {} {}",
        args.store.split('@').next_back().unwrap_or(""),
        args.durability,
        args.producers,
        args.batch,
        args.consumers,
        args.partitions,
        args.connections,
        args.worker_threads,
        if args.rate > 0 {
            format!("open loop {} events/s", args.rate)
        } else {
            "closed loop".into()
        }
    );
    println!(
        "published {:.0} events/s, consumed {:.0} events/s ({} failed calls)",
        (p1 - p0) as f64 / secs,
        (c1 - c0) as f64 / secs,
        shared.failed.load(Ordering::Relaxed)
    );
    println!(
        "publish ack latency ms: p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        q(&publish_hist, 0.5),
        q(&publish_hist, 0.99),
        q(&publish_hist, 0.999),
        publish_hist.max() as f64 / 1000.0
    );
    println!(
        "publish-to-deliver latency ms: p50 {:.2} p99 {:.2} p99.9 {:.2}",
        q(&e2e_hist, 0.5),
        q(&e2e_hist, 0.99),
        q(&e2e_hist, 0.999)
    );
    Ok(())
}

/// Publishes `n` events before the consumers start, in unary calls of 1,000 (one call in
/// flight per connection).
async fn publish_backlog(
    clients: &[Client],
    stream: &str,
    shared: &Arc<Shared>,
    n: u64,
) -> Result<(), String> {
    const CALL: u64 = 1000;
    let calls = n.div_ceil(CALL);
    let mut tasks = Vec::new();
    for (k, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let (stream, shared) = (stream.to_string(), shared.clone());
        let mine = (k as u64..calls).step_by(clients.len());
        tasks.push(tokio::spawn(async move {
            for c in mine {
                client
                    .publish(pb::PublishRequest {
                        stream: stream.clone(),
                        events: events(&shared, (n - c * CALL).min(CALL) as usize, c * CALL),
                        expected_offset: None,
                    })
                    .await
                    .map_err(|e| format!("publishing the backlog: {e}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}
