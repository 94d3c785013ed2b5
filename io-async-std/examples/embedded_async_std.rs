//! An async-std application that embeds Tributary: it opens a SQLite store, starts the
//! executor on async-std (no tokio runtime anywhere), publishes three events through its
//! handle and reads them through a subscription, acknowledging each.
//!
//! `cargo run -p tributary-io-async-std --example embedded_async_std [FOLDER]` (default: a new
//! temporary folder). `tests/example.rs` runs it.

use std::error::Error;
use std::path::Path;
use tributary_core::{
    AppendRequest, Command, Config, ConsumerId, Engine, NewEvent, Position, StreamConfig,
    StreamName, SubscriptionConfig, SubscriptionMode, SubscriptionName,
};
use tributary_io_async_std::{AsyncStdRuntime, Clock, ConnEvent, ExecutorConfig, NO_CONN, start};
use tributary_store_api::Store;
use tributary_store_sqlite::{SqliteStore, SqliteStoreConfig};

fn main() -> Result<(), Box<dyn Error>> {
    let temporary = tempfile::tempdir()?;
    let folder = std::env::args_os()
        .nth(1)
        .map_or_else(|| temporary.path().to_path_buf(), Into::into);
    for line in async_std::task::block_on(run(&folder))? {
        println!("{line}");
    }
    Ok(())
}

/// Publishes three orders and consumes them; returns what the consumer saw.
pub async fn run(folder: &Path) -> Result<Vec<String>, Box<dyn Error>> {
    // The store: SQLite in `folder` (sqlx runs on async-std).
    let store = SqliteStore::open(&SqliteStoreConfig::new(folder.join("tributary.db"))).await?;
    // The engine, driven by the executor on async-std.
    let clock = Clock::default();
    let config = Config {
        max_append_writes_in_flight: store.writes_in_flight(),
        ..Config::default()
    };
    let engine = Engine::new(config, rand_seed(), clock.now())?;
    let handle = start(
        AsyncStdRuntime,
        store.clone(),
        engine,
        clock,
        ExecutorConfig::default(),
    );

    let (orders, billing) = (
        StreamName::new("orders")?,
        SubscriptionName::new("billing")?,
    );
    handle
        .call(
            NO_CONN,
            Command::CreateStream(StreamConfig::persistent(orders.clone())),
        )
        .await?;
    let subscription =
        SubscriptionConfig::new(orders.clone(), billing.clone(), SubscriptionMode::Exclusive);
    handle
        .call(NO_CONN, Command::CreateSubscription(subscription))
        .await?;

    // A consumer on a connection of its own: deliveries arrive on `events`.
    let consumer = ConsumerId::new("billing-1")?;
    let conn = handle.connect().await?;
    conn.call(Command::Attach {
        stream: orders.clone(),
        subscription: billing.clone(),
        consumer: consumer.clone(),
        max_in_flight: None,
    })
    .await?;

    // Publish through the handle.
    let events = ["apples", "pears", "plums"]
        .iter()
        .map(|item| NewEvent::new("order.placed", item.as_bytes().to_vec()))
        .collect();
    handle
        .call(
            NO_CONN,
            Command::Append(AppendRequest {
                stream: orders.clone(),
                events,
                expected_offset: None,
            }),
        )
        .await?;

    // Consume and acknowledge.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let Ok(ConnEvent::Deliver { events, .. }) = conn.events.recv().await else {
            continue;
        };
        let mut positions = Vec::new();
        for d in events {
            let e = &d.event;
            seen.push(format!(
                "{} {} {}",
                e.offset,
                e.event_type,
                String::from_utf8_lossy(&e.payload)
            ));
            positions.push(Position {
                partition: e.partition,
                offset: e.offset,
            });
        }
        conn.call(Command::Ack {
            stream: orders.clone(),
            subscription: billing.clone(),
            consumer: consumer.clone(),
            positions,
        })
        .await?;
    }

    // A clean stop: the engine task ends with the last handle, then the store closes.
    let stopped = handle.stopped();
    drop((conn, handle));
    stopped.await;
    store.close().await;
    Ok(seen)
}

/// The engine's seed (it breaks ties, e.g. where a keyless event goes): any value will do.
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
