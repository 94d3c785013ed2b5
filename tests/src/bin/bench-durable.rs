//! Durable append throughput, end to end through the engine, the executor and a store, with
//! fsync on: P producers each keep one append of one 256-byte event in flight, for a fixed
//! time. In the same run it measures the physical limit: the fastest raw bulk load of the
//! same events into the same table without Tributary, 1,000 events per transaction, encoded as
//! the stores encode them (record batches; PostgreSQL: a multi-row INSERT from UNNEST arrays;
//! SQLite: a multi-row INSERT), and prints the ratio.
//!
//! Usage: `cargo run --release -p tributary-tests --bin bench-durable -- STORE [SECONDS] [P,P,...]`
//! with STORE `sqlite:PATH` or `postgres:URL[#schema]`; defaults: 10 s, producers 1,16,256.
//! `TRIBUTARY_WRITES_IN_FLIGHT=N` sets the engine's `max_append_writes_in_flight`,
//! `TRIBUTARY_WORKER_THREADS=N` the tokio worker threads (2).

use sqlx::{Connection, PgConnection, SqliteConnection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tributary_core::*;
use tributary_tests::cpu::Usage;

/// The same allocator as the `tributary` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAYLOAD: usize = 256;
const BATCH: usize = 1000;

fn main() {
    // One tokio worker per core by default; `TRIBUTARY_WORKER_THREADS=N` to compare.
    let workers = std::env::var("TRIBUTARY_WORKER_THREADS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    if let Err(e) = tributary_tests::block_on(workers, run()) {
        eprintln!("bench-durable: {e}");
        std::process::exit(1);
    }
}

async fn run() {
    let args: Vec<String> = std::env::args().collect();
    let Some(spec) = args.get(1).cloned() else {
        eprintln!("usage: bench-durable sqlite:PATH|postgres:URL[#schema] [SECONDS] [P,P,...]");
        std::process::exit(2);
    };
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let producers: Vec<usize> = args
        .get(3)
        .map(|s| s.split(',').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 256]);
    let store = match tributary_tests::open_store(&spec).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench-durable: {e}");
            std::process::exit(1);
        }
    };
    let server = server_process(&store);
    let raw_before = raw(&store, &spec, secs).await;
    for batch in [1usize, 256] {
        let usage = Usage::now(server);
        let (rate, n) = store_alone(&store, batch, secs.min(5)).await;
        println!(
            "store alone, appends of {batch}: {rate:.0} events/s; {}",
            cpu_line(usage.per_item_since(server, n))
        );
    }
    let counting = Counting {
        inner: store.clone(),
        writes: Arc::default(),
        events: Arc::default(),
        busy_us: Arc::default(),
    };
    let (writes, events, busy) = (
        counting.writes.clone(),
        counting.events.clone(),
        counting.busy_us.clone(),
    );
    let handle = match run_counting(counting) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("bench-durable: {e}");
            std::process::exit(1);
        }
    };
    let mut results = Vec::new();
    for p in producers {
        let (w0, e0, b0) = (
            writes.load(Ordering::Relaxed),
            events.load(Ordering::Relaxed),
            busy.load(Ordering::Relaxed),
        );
        let usage = Usage::now(server);
        let started = Instant::now();
        let rate = tributary(&handle, p, secs).await;
        let (w, e, b) = (
            writes.load(Ordering::Relaxed) - w0,
            events.load(Ordering::Relaxed) - e0,
            busy.load(Ordering::Relaxed) - b0,
        );
        let cpu = usage.per_item_since(server, e);
        let writes = Writes {
            events: e as f64 / w.max(1) as f64,
            latency_ms: b as f64 / 1000.0 / w.max(1) as f64,
            in_flight: b as f64 / 1e6 / started.elapsed().as_secs_f64(),
        };
        results.push((p, rate, writes, cpu));
    }
    // The limit is measured before and after, on a table that grew in between: the mean of
    // the two, for the fastest method.
    let raw_after = raw(&store, &spec, secs).await;
    let mut limit = 0.0f64;
    for ((name, before, cpu), (_, after, _)) in raw_before.iter().zip(&raw_after) {
        let mean = (before + after) / 2.0;
        println!(
            "raw {name}: {mean:.0} rows/s (before {before:.0}, after {after:.0}; batches of {BATCH}, one transaction each); {}",
            cpu_line(*cpu)
        );
        limit = limit.max(mean);
    }
    for (p, rate, w, cpu) in results {
        println!(
            "tributary, {p} producers: {rate:.0} events/s = {:.2} of the raw limit ({:.1} events per write, {:.2} ms per write, {:.2} writes in flight on average); {}",
            rate / limit,
            w.events,
            w.latency_ms,
            w.in_flight,
            cpu_line(cpu)
        );
    }
}

/// The appends of one run: mean events per write, mean time from request to answer, and the
/// mean number in flight.
struct Writes {
    events: f64,
    latency_ms: f64,
    in_flight: f64,
}

/// The processes of the store's server, whose CPU is counted beside the bench's own (none
/// for SQLite: it runs inside the bench).
fn server_process(store: &tributary_tests::AnyStore) -> &'static str {
    match store {
        tributary_tests::AnyStore::Postgres(_) => "postgres",
        tributary_tests::AnyStore::Sqlite(_) => "",
    }
}

/// CPU microseconds per event of the bench process and of the server.
fn cpu_line((own, server): (f64, f64)) -> String {
    format!("CPU per event: bench {own:.1} µs, server {server:.1} µs")
}

/// One raw load: its name, rows/s, and CPU per row (bench, server).
type RawResult = (&'static str, f64, (f64, f64));

async fn raw(store: &tributary_tests::AnyStore, spec: &str, secs: u64) -> Vec<RawResult> {
    match store {
        tributary_tests::AnyStore::Postgres(_) => raw_postgres(spec, secs).await,
        tributary_tests::AnyStore::Sqlite(_) => raw_sqlite(spec, secs).await,
    }
}

/// The store, counting the appends it carries out, their events and the time they took.
struct Counting {
    inner: tributary_tests::AnyStore,
    writes: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    /// Sum of the appends' durations, in microseconds.
    busy_us: Arc<AtomicU64>,
}

impl tributary_store_api::Store for Counting {
    fn writes_in_flight(&self) -> usize {
        self.inner.writes_in_flight()
    }

    fn execute(
        &self,
        req: StorageRequest,
    ) -> impl std::future::Future<Output = StorageResult> + Send {
        let append = matches!(&req, StorageRequest::Append(_));
        if let StorageRequest::Append(w) = &req {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.events
                .fetch_add(w.events.len() as u64, Ordering::Relaxed);
        }
        let (busy, started) = (self.busy_us.clone(), Instant::now());
        let run = self.inner.execute(req);
        async move {
            let r = run.await;
            if append {
                busy.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            r
        }
    }
}

fn run_counting(store: Counting) -> Result<tributary_io_tokio::Handle, String> {
    let clock = tributary_io_tokio::Clock::default();
    let mut config = Config {
        max_append_writes_in_flight: tributary_store_api::Store::writes_in_flight(&store),
        ..Config::default()
    };
    if let Some(depth) = std::env::var("TRIBUTARY_WRITES_IN_FLIGHT")
        .ok()
        .and_then(|d| d.parse().ok())
    {
        config.max_append_writes_in_flight = depth;
    }
    let engine = Engine::new(config, 1, clock.now()).map_err(|e| e.to_string())?;
    Ok(tributary_io_tokio::start(
        tributary_io_tokio::TokioRuntime,
        store,
        engine,
        clock,
        tributary_io_tokio::ExecutorConfig::default(),
    ))
}

/// The store without the engine: sequential `Append` requests of `batch` events. Returns the
/// rate and the number of events.
async fn store_alone(store: &tributary_tests::AnyStore, batch: usize, secs: u64) -> (f64, u64) {
    use tributary_store_api::Store;
    let name = StreamName::new(&format!("bench-store-{batch}-{}", std::process::id()))
        .expect("valid name");
    let mut config = StreamConfig::persistent(name.clone());
    config.dedup_window = Duration::ZERO;
    let _ = store.execute(StorageRequest::CreateStream(config)).await;
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    let start = Instant::now();
    let mut next = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let w = tributary_tests::bench_write(&name, next, batch as u64, 1, &payload, false);
        match store.execute(StorageRequest::Append(Arc::new(w))).await {
            StorageResult::Ok(_) => next += batch as u64,
            other => panic!("append: {other:?}"),
        }
    }
    (next as f64 / start.elapsed().as_secs_f64(), next)
}

async fn tributary(h: &tributary_io_tokio::Handle, producers: usize, secs: u64) -> f64 {
    let name =
        StreamName::new(&format!("bench-p{producers}-{}", std::process::id())).expect("valid name");
    let mut config = StreamConfig::persistent(name.clone());
    config.dedup_window = Duration::ZERO;
    match h.call(ConnId(0), Command::CreateStream(config)).await {
        Ok(_) | Err(Error::StreamExists(_)) => {}
        Err(e) => panic!("create: {e}"),
    }
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (h, name, payload, stop, done) = (
            h.clone(),
            name.clone(),
            payload.clone(),
            stop.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let e = NewEvent::new("bench.event", payload.clone());
                let req = AppendRequest {
                    stream: name.clone(),
                    events: vec![e],
                    expected_offset: None,
                };
                match h.call(ConnId(p as u64 + 1), Command::Append(req)).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("append: {e}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The record batches (the stored form of events in both SQL stores) of the 1,000 events of
/// one raw load, from `offset` on, all in partition 0 as the appends of the runs.
fn raw_batches(offset: u64) -> Vec<tributary_store_sql::EventBatch> {
    let stream = StreamName::new("bench-raw").expect("a valid name");
    let events: Vec<Event> = (offset..offset + BATCH as u64)
        .map(|o| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&o.to_le_bytes());
            Event::from_new(
                NewEvent::new("bench.event", vec![7u8; PAYLOAD]),
                EventId::from_bytes(id),
                stream.clone(),
                0,
                o,
                UnixMillis(1_767_225_600_000),
            )
        })
        .collect();
    tributary_store_sql::batches(events.iter()).expect("encodes")
}

async fn raw_postgres(spec: &str, secs: u64) -> Vec<RawResult> {
    let url = spec.strip_prefix("postgres:").unwrap_or(spec);
    let (url, schema) = url
        .split_once('#')
        .map_or((url, None), |(u, s)| (u, Some(s)));
    let mut c = PgConnection::connect(url).await.expect("connect");
    if let Some(s) = schema {
        sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {s}")))
            .execute(&mut c)
            .await
            .expect("schema");
    }
    let stream_id: i64 = -(std::process::id() as i64);
    // Multi-row INSERT of the batches from UNNEST arrays, one transaction per 1,000 events.
    let usage = Usage::now("postgres");
    let start = Instant::now();
    let mut next = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let b = raw_batches(next);
        next += BATCH as u64;
        let col = |f: fn(&tributary_store_sql::EventBatch) -> u64| -> Vec<i64> {
            b.iter().map(|x| f(x) as i64).collect()
        };
        let mut tx = c.begin().await.expect("begin");
        sqlx::query(
            r#"INSERT INTO tributary_batches (stream_id, partition, first_offset, last_offset,
                 first_ts, last_ts, bytes, body)
               SELECT $1, 0, * FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                 $6::bigint[], $7::bytea[])"#,
        )
        .bind(stream_id)
        .bind(col(|x| x.first_offset))
        .bind(col(|x| x.last_offset))
        .bind(col(|x| x.first_ts))
        .bind(col(|x| x.last_ts))
        .bind(col(|x| x.bytes))
        .bind(b.iter().map(|x| x.body.as_slice()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .expect("insert");
        tx.commit().await.expect("commit");
    }
    let out = vec![(
        "postgres record batches, INSERT ... UNNEST",
        next as f64 / start.elapsed().as_secs_f64(),
        usage.per_item_since("postgres", next),
    )];
    sqlx::query("DELETE FROM tributary_batches WHERE stream_id = $1")
        .bind(stream_id)
        .execute(&mut c)
        .await
        .expect("clean up");
    sqlx::query("VACUUM tributary_batches")
        .execute(&mut c)
        .await
        .expect("vacuum");
    out
}

async fn raw_sqlite(spec: &str, secs: u64) -> Vec<RawResult> {
    let path = spec.strip_prefix("sqlite:").unwrap_or(spec);
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut c = SqliteConnection::connect_with(&options)
        .await
        .expect("connect");
    let stream_id: i64 = -(std::process::id() as i64);
    let usage = Usage::now("");
    let start = Instant::now();
    let mut next = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let b = raw_batches(next);
        let mut tx = c.begin().await.expect("begin");
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            r#"INSERT INTO tributary_batches (stream_id, partition, first_offset, last_offset,
               first_ts, last_ts, bytes, body) "#,
        );
        q.push_values(b, |mut q, x| {
            q.push_bind(stream_id)
                .push_bind(0i64)
                .push_bind(x.first_offset as i64)
                .push_bind(x.last_offset as i64)
                .push_bind(x.first_ts as i64)
                .push_bind(x.last_ts as i64)
                .push_bind(x.bytes as i64)
                .push_bind(x.body);
        });
        q.build().execute(&mut *tx).await.expect("insert");
        tx.commit().await.expect("commit");
        next += BATCH as u64;
    }
    let rate = next as f64 / start.elapsed().as_secs_f64();
    let cpu = usage.per_item_since("", next);
    sqlx::query("DELETE FROM tributary_batches WHERE stream_id = ?")
        .bind(stream_id)
        .execute(&mut c)
        .await
        .expect("clean up");
    vec![("sqlite record batches, multi-row INSERT", rate, cpu)]
}
