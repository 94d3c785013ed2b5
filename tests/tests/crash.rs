//! Crash tests: a child process appends with fsync on and is killed with SIGKILL at a random
//! moment; after a restart every event it saw acknowledged is there at its offset, and no
//! event is there twice. Three rounds on the same store. For SQLite and PostgreSQL.
//!
//! The moments are drawn from a seed printed at the start; set `TRIBUTARY_CRASH_SEED` to
//! replay one.

use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use tributary_core::*;
use tributary_store_api::Store;

fn seed() -> u64 {
    match std::env::var("TRIBUTARY_CRASH_SEED") {
        Ok(s) => s.parse().expect("TRIBUTARY_CRASH_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// Runs the child until it printed `kill_after` acks (or a few more), kills it, and returns
/// the acks it printed: event id -> (partition, offset).
fn run_child(spec: &str, child_seed: u64, kill_after: usize) -> BTreeMap<EventId, (u32, u64)> {
    let mut child = Process::new(env!("CARGO_BIN_EXE_crash-child"))
        .arg(spec)
        .arg(child_seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash-child");
    let stdout = child.stdout.take().expect("stdout");
    let mut acks = BTreeMap::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("read a line");
        if let Some(rest) = line.strip_prefix("ACK ") {
            let mut it = rest.split(' ');
            let id: EventId = it.next().and_then(|s| s.parse().ok()).expect("id");
            let p: u32 = it.next().and_then(|s| s.parse().ok()).expect("partition");
            let o: u64 = it.next().and_then(|s| s.parse().ok()).expect("offset");
            acks.insert(id, (p, o));
            if acks.len() >= kill_after {
                break;
            }
        }
    }
    // SIGKILL: no clean shutdown, no flush.
    child.kill().expect("kill");
    // Whatever the child printed before it died was acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let mut it = rest.split(' ');
            if let (Some(Ok(id)), Some(Ok(p)), Some(Ok(o))) = (
                it.next().map(str::parse::<EventId>),
                it.next().map(str::parse::<u32>),
                it.next().map(str::parse::<u64>),
            ) {
                acks.insert(id, (p, o));
            }
        }
    }
    let _ = child.wait();
    acks
}

async fn stored_events(spec: &str) -> Vec<std::sync::Arc<Event>> {
    let store = tributary_tests::open_store(spec)
        .await
        .expect("reopen the store");
    let StorageResult::Ok(StorageReply::Recovered(state)) =
        store.execute(StorageRequest::Recover).await
    else {
        panic!("recover")
    };
    let mut all = Vec::new();
    for s in state.streams {
        for (p, head) in s.heads.iter().enumerate() {
            let mut from = head.first;
            while from < head.next {
                let req = StorageRequest::Read {
                    stream: s.config.name.clone(),
                    partition: p as u32,
                    from,
                    max: 1000,
                };
                let StorageResult::Ok(StorageReply::Events(page)) = store.execute(req).await else {
                    panic!("read")
                };
                assert!(
                    !page.is_empty(),
                    "a hole below the head at partition {p} offset {from}"
                );
                for (i, e) in page.iter().enumerate() {
                    assert_eq!(e.offset, from + i as u64, "offsets are dense");
                }
                from += page.len() as u64;
                all.extend(page);
            }
        }
    }
    all
}

async fn crash_rounds(spec: &str) {
    let seed = seed();
    println!("crash test seed {seed} (replay: TRIBUTARY_CRASH_SEED={seed})");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut acked: BTreeMap<EventId, (u32, u64)> = BTreeMap::new();
    for round in 0..3u64 {
        let kill_after = rng.random_range(1..400);
        let got = run_child(spec, seed.wrapping_add(round), kill_after);
        assert!(
            !got.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        acked.extend(got);
        let events = stored_events(spec).await;
        let mut seen = BTreeSet::new();
        let at: BTreeMap<EventId, (u32, u64)> = events
            .iter()
            .map(|e| {
                assert!(seen.insert(e.event_id), "event {} stored twice", e.event_id);
                (e.event_id, (e.partition, e.offset))
            })
            .collect();
        for (id, pos) in &acked {
            assert_eq!(
                at.get(id),
                Some(pos),
                "round {round}: acknowledged event {id} is not at {pos:?}"
            );
        }
        println!(
            "round {round}: killed after {kill_after}+ acks; {} acknowledged, {} stored",
            acked.len(),
            events.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_event_across_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = format!("sqlite:{}", dir.path().join("crash.db").display());
    crash_rounds(&spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_event_across_sigkill() {
    let url = std::env::var("TRIBUTARY_TEST_DATABASE_URL").expect(
        "TRIBUTARY_TEST_DATABASE_URL is not set (scripts/pg-test-cluster start prints one)",
    );
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let spec = format!("postgres:{url}#crash_{}_{t}", std::process::id());
    crash_rounds(&spec).await;
}
