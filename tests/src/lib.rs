//! Shared pieces of Tributary's integration tests and benches: opening either SQL store from
//! a short description (`sqlite:PATH` or `postgres:URL[#schema]`) and running an executor on it.

#![forbid(unsafe_code)]

pub mod cpu;

use tributary_core::{Config, Engine};
use tributary_io_tokio::server::store::{BadStoreSpec, StoreSpec};
use tributary_io_tokio::{Clock, ExecutorConfig, Handle, TokioRuntime, start};
use tributary_store_api::Store;

pub use tributary_io_tokio::server::store::AnyStore;

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
