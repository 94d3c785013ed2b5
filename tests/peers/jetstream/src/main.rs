//! NATS JetStream on the workload of `bench-e2e` (see BENCHMARKS.md), for a comparison in the
//! same hour on the same machine. Against a `nats-server -js` on 127.0.0.1:4222, with a
//! file-backed stream and 256-byte payloads, on one connection:
//!
//! - `jetstream-bench publish P D SECONDS`: P tasks keep D publishes each in flight, each
//!   waiting for its ack; after one second of warm-up, counts acks for SECONDS and prints the
//!   rate and the ack latency percentiles (what `bench-e2e --consumers 0` measures);
//! - `jetstream-bench consume N`: publishes N messages, then one durable pull consumer reads
//!   them all, acknowledging each (explicit acks, at most 1,000 unacknowledged), and prints the
//!   rate (what `bench-e2e --backlog N` measures).

use async_nats::jetstream::{self, Context, consumer::AckPolicy, consumer::pull};
use futures::stream::{FuturesUnordered, StreamExt};
use std::error::Error;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const PAYLOAD: usize = 256;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("jetstream-bench: {e}");
        std::process::exit(1);
    }
}

fn arg(args: &[String], i: usize, default: u64) -> Res<u64> {
    match args.get(i) {
        Some(s) => s
            .parse()
            .map_err(|e| format!("argument {i} ({s}): {e}").into()),
        None => Ok(default),
    }
}

async fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let js = jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
    let name = format!("bench{}", std::process::id());
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let result = match args.get(1).map(String::as_str) {
        Some("publish") => {
            let (p, d, s) = (arg(&args, 2, 4)?, arg(&args, 3, 64)?, arg(&args, 4, 8)?);
            publish(&js, &name, p, d, s).await
        }
        Some("consume") => consume(&js, &name, arg(&args, 2, 1_000_000)?).await,
        _ => Err("usage: jetstream-bench publish P D SECONDS | consume N".into()),
    };
    js.delete_stream(&name).await?;
    result
}

/// One publish, waiting for its ack.
async fn publish_one(js: Context, subject: String, payload: bytes::Bytes) -> Res<Instant> {
    let t = Instant::now();
    js.publish(subject, payload).await?.await?;
    Ok(t)
}

async fn publish(js: &Context, name: &str, producers: u64, depth: u64, secs: u64) -> Res<()> {
    let start = Instant::now();
    let warm = Duration::from_secs(1);
    let end = warm + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (js, subject) = (js.clone(), format!("{name}.{p}"));
        tasks.push(tokio::spawn(async move {
            let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
            let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut inflight = FuturesUnordered::new();
            for _ in 0..depth {
                inflight.push(publish_one(js.clone(), subject.clone(), payload.clone()));
            }
            while let Some(t) = inflight.next().await {
                let t = t?;
                let now = start.elapsed();
                if now >= warm && now < end {
                    h.record(t.elapsed().as_micros() as u64)?;
                }
                if now < end {
                    inflight.push(publish_one(js.clone(), subject.clone(), payload.clone()));
                }
            }
            Res::Ok(h)
        }));
    }
    let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
    for t in tasks {
        h.add(t.await??)?;
    }
    let ms = |q| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "jetstream published {} messages/s, ack p50 {:.2} p99 {:.2} p99.9 {:.2} ms",
        h.len() / secs,
        ms(0.5),
        ms(0.99),
        ms(0.999)
    );
    Ok(())
}

async fn consume(js: &Context, name: &str, n: u64) -> Res<()> {
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0u64;
    while sent < n || !inflight.is_empty() {
        while sent < n && inflight.len() < 256 {
            let subject = format!("{name}.{}", sent % 4);
            inflight.push(publish_one(js.clone(), subject, payload.clone()));
            sent += 1;
        }
        if let Some(r) = inflight.next().await {
            r?;
        }
    }
    let stream = js.get_stream(name).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: 1000,
            ..Default::default()
        })
        .await?;
    let start = Instant::now();
    let mut messages = consumer.messages().await?;
    let mut got = 0u64;
    while got < n {
        let Some(m) = messages.next().await else {
            return Err(format!("the consumer ended after {got} of {n}").into());
        };
        m?.ack().await?;
        got += 1;
    }
    println!(
        "jetstream consumed {:.0} messages/s with explicit acks ({n} of {n} in {:.2} s)",
        n as f64 / start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
