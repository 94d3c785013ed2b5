//! Shared pieces of Tributary's integration tests and benches: opening either SQL store from
//! a short description (`sqlite:PATH` or `postgres:URL[#schema]`) and running an executor on it.

#![forbid(unsafe_code)]

pub mod cpu;

use std::sync::Arc;
use tributary_core::{
    AppendWrite, Config, Engine, Event, EventId, NewEvent, StreamName, UnixMillis,
};
use tributary_io_tokio::{Clock, ExecutorConfig, Handle, TokioRuntime, start};
use tributary_server::store::{BadStoreSpec, StoreSpec};
use tributary_store_api::Store;

pub use tributary_server::store::AnyStore;

/// Runs `f` to its end on a multi-threaded tokio runtime of `workers` worker threads (at
/// least 1): the main of each bench and harness.
pub fn block_on<F: std::future::Future>(workers: usize, f: F) -> Result<F::Output, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map(|rt| rt.block_on(f))
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Opens `sqlite:PATH` or `postgres:URL[#schema]` (fsync on for both); the server's
/// [`StoreSpec`] forms are accepted too.
pub async fn open_store(spec: &str) -> Result<AnyStore, String> {
    let spec: StoreSpec = spec.parse().map_err(|e: BadStoreSpec| e.to_string())?;
    spec.open(std::path::Path::new(".")).await
}

/// Starts an engine with `config` on `store` under the tokio executor, with the store's
/// preferred number of appends in flight.
pub fn run_engine(store: AnyStore, mut config: Config, seed: u64) -> Result<Handle, String> {
    config.max_append_writes_in_flight = store.writes_in_flight();
    let clock = Clock::default();
    let engine = Engine::new(config, seed, clock.now()).map_err(|e| e.to_string())?;
    Ok(start(
        TokioRuntime,
        store,
        engine,
        clock,
        ExecutorConfig::default(),
    ))
}

/// The append a bench sends straight to a store: events `from..from + n` of `stream`, each with
/// `payload`, an id made of its number, and, over `partitions`, partition `number %
/// partitions` at offset `number / partitions`; with a key (the number modulo 1,024) when
/// `keyed`.
pub fn bench_write(
    stream: &StreamName,
    from: u64,
    n: u64,
    partitions: u64,
    payload: &bytes::Bytes,
    keyed: bool,
) -> AppendWrite {
    let partitions = partitions.max(1);
    let events = (from..from + n)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            let mut e = NewEvent::new("bench.event", payload.clone());
            if keyed {
                e.key = Some(bytes::Bytes::from(format!("{}", i % 1024)));
            }
            Arc::new(Event::from_new(
                e,
                EventId::from_bytes(id),
                stream.clone(),
                (i % partitions) as u32,
                i / partitions,
                UnixMillis(1),
            ))
        })
        .collect();
    AppendWrite {
        stream: stream.clone(),
        seq: 0,
        after: None,
        events,
        dedup: vec![],
    }
}
