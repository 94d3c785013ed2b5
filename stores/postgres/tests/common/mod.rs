//! A fresh store per test, in a schema of its own, on the server named by
//! `TRIBUTARY_TEST_DATABASE_URL`. In CI a missing URL fails the test; elsewhere too, with a
//! message saying how to get one (`scripts/pg-test-cluster start`).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use tributary_store_postgres::{PgStore, PgStoreConfig};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn url() -> String {
    match std::env::var("TRIBUTARY_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "TRIBUTARY_TEST_DATABASE_URL is not set: the PostgreSQL tests need a server \
             (scripts/pg-test-cluster start prints a URL; scripts/test does it for you)"
        ),
    }
}

/// A schema name no earlier run used: process ids repeat on a long-lived cluster (and a
/// schema left by a run with an older migration would fail the checksum check).
pub fn unique_schema(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{prefix}{}_{t}_{n}", std::process::id())
}

pub fn fresh_config() -> PgStoreConfig {
    let mut c = PgStoreConfig::new(url());
    c.schema = Some(unique_schema("t"));
    c.pool_size = 4;
    c
}

pub async fn fresh_store() -> PgStore {
    let config = fresh_config();
    match PgStore::open(&config).await {
        Ok(s) => s,
        Err(e) => panic!("cannot open the test store: {e}"),
    }
}
