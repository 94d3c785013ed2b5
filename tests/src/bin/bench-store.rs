//! A store alone, without the engine: one append after another, as the engine's group
//! commit makes them under load — 100 to 256 events (a seeded spread), 4 partitions, keys,
//! 256-byte payloads — for a fixed number of writes, on a current-thread runtime. It prints
//! events/s, time per write and the CPU per event of this process and of the database server,
//! which moves much less than the rates from run to run on shared cores.
//!
//! `cargo run --release -p tributary-tests --bin bench-store -- STORE [WRITES] [full|normal]`
//! with STORE `sqlite:PATH` (the file is created) or `postgres://...[#schema]`; defaults 1,500
//! writes, `full`.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary_core::{StorageRequest, StorageResult, StreamConfig, StreamName};
use tributary_server::store::{PgOptions, StoreSpec};
use tributary_store_api::{Durability, Store};
use tributary_tests::bench_write;
use tributary_tests::cpu::Usage;

/// The same allocator as the `tributary` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: u64 = 4;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench-store sqlite:PATH|postgres://URL[#schema] [WRITES] [full|normal]";
    let spec: StoreSpec = args
        .get(1)
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let writes: u64 = match args.get(2) {
        Some(w) => w
            .parse()
            .map_err(|_| format!("WRITES: {w:?} is not a count"))?,
        None => 1500,
    };
    let durability: Durability = match args.get(3) {
        Some(d) => d.parse().map_err(|e| format!("{e}"))?,
        None => Durability::Full,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?
        .block_on(run(spec, writes, durability))
}

async fn run(spec: StoreSpec, writes: u64, durability: Durability) -> Result<(), String> {
    let store = spec
        .open_with(std::path::Path::new("."), &PgOptions::default(), durability)
        .await?;
    let name = StreamName::new(&format!("bench-store-{}", std::process::id()))
        .map_err(|e| e.to_string())?;
    let mut config = StreamConfig::persistent(name.clone());
    config.partitions = PARTITIONS as u32;
    config.dedup_window = Duration::ZERO;
    if let StorageResult::Err(e) = store.execute(StorageRequest::CreateStream(config)).await {
        return Err(format!("create the stream: {e:?}"));
    }
    let payload = bytes::Bytes::from(vec![7u8; 256]);
    let server = if matches!(spec, StoreSpec::Postgres { .. }) {
        "postgres"
    } else {
        ""
    };
    let (usage, start) = (Usage::now(server), Instant::now());
    let (mut next, mut seed) = (0u64, 0x5eed_u64);
    for _ in 0..writes {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let batch = 100 + (seed >> 33) % 157;
        let w = bench_write(&name, next, batch, PARTITIONS, &payload, true);
        match store.execute(StorageRequest::Append(Arc::new(w))).await {
            StorageResult::Ok(_) => next += batch,
            other => return Err(format!("append: {other:?}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (own, db) = usage.per_item_since(server, next);
    println!(
        "{writes} appends of {:.1} events ({durability} durability): {:.0} events/s, {:.0} µs per write; CPU per event: bench {own:.1} µs, server {db:.1} µs",
        next as f64 / writes as f64,
        next as f64 / secs,
        secs * 1e6 / writes as f64,
    );
    Ok(())
}
