//! Benchmarks of the core alone, on one thread: the engine with a store that completes every
//! request at once without keeping anything, so only the core's own work is measured.
//!
//! - `append/dedup_batch100`: appends of 100 events with producer ids (dedup on), 256-byte
//!   payloads, to a persistent stream.
//! - `deliver_ack/exclusive`: an exclusive subscription delivers to one consumer
//!   (`max_in_flight` 1,000), which acknowledges each delivered batch; every ack is saved.
//! - `deliver_ack/group_4x8`: a consumer group of 4 members on a stream of 8 partitions (2
//!   partitions each, `max_in_flight` 1,000); every member acknowledges each delivered batch,
//!   commits `AfterBatch(100)` (the default).
//! - Memory per id held in the dedup window, measured with a counting allocator.
//!
//! Run: `cargo bench -p tributary-core --bench core`.

use criterion::{Criterion, Throughput, criterion_group};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};
use tributary_core::*;

/// Counts bytes in use, to measure the dedup window's memory.
struct Counting;
static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        IN_USE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        IN_USE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        IN_USE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const PAYLOAD: usize = 256;

fn now(i: u64) -> Now {
    Now {
        mono: MonoNanos(1_000_000_000 + i * 1000),
        wall: UnixMillis(1_700_000_000_000 + i / 1000),
    }
}

/// Completes every storage request at once; keeps nothing.
fn drain(e: &mut Engine, at: Now, sink: &mut Vec<Output>) {
    while let Some(o) = e.poll_output() {
        match o {
            Output::Storage { op, req } => {
                let reply = match req {
                    StorageRequest::Recover => StorageReply::Recovered(RecoveredState::default()),
                    StorageRequest::LoadSchemas { .. } => StorageReply::Schemas(Vec::new()),
                    _ => StorageReply::Done,
                };
                e.handle_input(
                    at,
                    Input::StorageDone {
                        op,
                        result: StorageResult::Ok(reply),
                    },
                );
            }
            other => sink.push(other),
        }
    }
}

fn engine(config: Config) -> Engine {
    let mut e = Engine::new(config, 1, now(0)).expect("config");
    drain(&mut e, now(0), &mut Vec::new());
    e
}

fn cmd(e: &mut Engine, at: Now, c: Command, sink: &mut Vec<Output>) {
    cmd_on(e, 1, at, c, sink);
}

fn cmd_on(e: &mut Engine, conn: u64, at: Now, c: Command, sink: &mut Vec<Output>) {
    e.handle_input(
        at,
        Input::Client {
            conn: ConnId(conn),
            req: ReqId(0),
            cmd: c,
        },
    );
    drain(e, at, sink);
}

fn stream() -> StreamName {
    StreamName::new("bench").expect("name")
}

fn batch(first_id: u64, n: usize, payload: &bytes::Bytes) -> Vec<NewEvent> {
    (0..n as u64)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(first_id + i).to_le_bytes());
            id[8] = 0xab;
            NewEvent::new("bench.event", payload.clone()).with_id(EventId::from_bytes(id))
        })
        .collect()
}

fn bench_append(c: &mut Criterion) {
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(100));
    g.bench_function("dedup_batch100", |b| {
        b.iter_custom(|iters| {
            let mut e = engine(Config::default());
            let mut sink = Vec::new();
            cmd(
                &mut e,
                now(0),
                Command::CreateStream(StreamConfig::persistent(stream())),
                &mut sink,
            );
            let cmds: Vec<Command> = (0..iters)
                .map(|i| {
                    Command::Append(AppendRequest {
                        stream: stream(),
                        events: batch(i * 100, 100, &payload),
                        expected_offset: None,
                    })
                })
                .collect();
            sink.clear();
            let start = Instant::now();
            for (i, c) in cmds.into_iter().enumerate() {
                cmd(&mut e, now(i as u64), c, &mut sink);
                sink.clear();
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn bench_deliver_ack(c: &mut Criterion) {
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    let mut g = c.benchmark_group("deliver_ack");
    const N: u64 = 100_000;
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.bench_function("exclusive", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let config = Config {
                    tail_cache_events: N as usize,
                    ..Config::default()
                };
                let mut e = engine(config);
                let mut sink = Vec::new();
                let mut sc = StreamConfig::persistent(stream());
                sc.dedup_window = Duration::ZERO;
                cmd(&mut e, now(0), Command::CreateStream(sc), &mut sink);
                for _ in 0..N / 1000 {
                    let events = (0..1000)
                        .map(|_| NewEvent::new("bench.event", payload.clone()))
                        .collect();
                    let a = AppendRequest {
                        stream: stream(),
                        events,
                        expected_offset: None,
                    };
                    cmd(&mut e, now(0), Command::Append(a), &mut sink);
                }
                let sub = SubscriptionName::new("s").expect("name");
                let config =
                    SubscriptionConfig::new(stream(), sub.clone(), SubscriptionMode::Exclusive);
                cmd(
                    &mut e,
                    now(0),
                    Command::CreateSubscription(config),
                    &mut sink,
                );
                sink.clear();
                let consumer = ConsumerId::new("c").expect("id");
                let start = Instant::now();
                let attach = Command::Attach {
                    stream: stream(),
                    subscription: sub.clone(),
                    consumer: consumer.clone(),
                    max_in_flight: Some(1000),
                };
                cmd(&mut e, now(1), attach, &mut sink);
                let mut acked = 0u64;
                let mut pending: Vec<Output> = std::mem::take(&mut sink);
                while acked < N {
                    let mut next = Vec::new();
                    for o in pending.drain(..) {
                        if let Output::Deliver { events, .. } = o {
                            let positions: Vec<Position> = events
                                .iter()
                                .map(|d| Position {
                                    partition: d.event.partition,
                                    offset: d.event.offset,
                                })
                                .collect();
                            acked += positions.len() as u64;
                            for chunk in positions.chunks(100) {
                                let ack = Command::Ack {
                                    stream: stream(),
                                    subscription: sub.clone(),
                                    consumer: consumer.clone(),
                                    positions: chunk.to_vec(),
                                };
                                cmd(&mut e, now(1), ack, &mut next);
                            }
                        }
                    }
                    assert!(
                        !next.is_empty() || acked >= N,
                        "delivery stalled at {acked}"
                    );
                    pending = next;
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn bench_group(c: &mut Criterion) {
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    let mut g = c.benchmark_group("deliver_ack");
    const N: u64 = 100_000;
    const MEMBERS: u64 = 4;
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.bench_function("group_4x8", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let config = Config {
                    tail_cache_events: N as usize,
                    ..Config::default()
                };
                let mut e = engine(config);
                let mut sink = Vec::new();
                let mut sc = StreamConfig::persistent(stream());
                sc.dedup_window = Duration::ZERO;
                sc.partitions = 8;
                cmd(&mut e, now(0), Command::CreateStream(sc), &mut sink);
                for _ in 0..N / 1000 {
                    let events = (0..1000)
                        .map(|_| NewEvent::new("bench.event", payload.clone()))
                        .collect();
                    let a = AppendRequest {
                        stream: stream(),
                        events,
                        expected_offset: None,
                    };
                    cmd(&mut e, now(0), Command::Append(a), &mut sink);
                }
                let sub = SubscriptionName::new("g").expect("name");
                let config =
                    SubscriptionConfig::new(stream(), sub.clone(), SubscriptionMode::ConsumerGroup);
                cmd(
                    &mut e,
                    now(0),
                    Command::CreateSubscription(config),
                    &mut sink,
                );
                sink.clear();
                let start = Instant::now();
                for m in 0..MEMBERS {
                    let attach = Command::Attach {
                        stream: stream(),
                        subscription: sub.clone(),
                        consumer: ConsumerId::new(&format!("m{m}")).expect("id"),
                        max_in_flight: Some(1000),
                    };
                    cmd_on(&mut e, m + 1, now(1), attach, &mut sink);
                }
                // Events delivered before a rebalance took their partition away are dropped,
                // as a client does: the new owner gets them again.
                let mut owned: std::collections::BTreeMap<ConsumerId, Vec<u32>> =
                    Default::default();
                for o in &sink {
                    if let Output::Assignment {
                        consumer,
                        assignment,
                        ..
                    } = o
                    {
                        owned.insert(consumer.clone(), assignment.partitions.clone());
                    }
                }
                let mut acked = 0u64;
                let mut pending: Vec<Output> = std::mem::take(&mut sink);
                while acked < N {
                    let mut next = Vec::new();
                    for o in pending.drain(..) {
                        if let Output::Deliver {
                            conn,
                            consumer,
                            events,
                            ..
                        } = o
                        {
                            let mine = owned.get(&consumer).cloned().unwrap_or_default();
                            let positions: Vec<Position> = events
                                .iter()
                                .filter(|d| mine.contains(&d.event.partition))
                                .map(|d| Position {
                                    partition: d.event.partition,
                                    offset: d.event.offset,
                                })
                                .collect();
                            acked += positions.len() as u64;
                            for chunk in positions.chunks(100) {
                                let ack = Command::Ack {
                                    stream: stream(),
                                    subscription: sub.clone(),
                                    consumer: consumer.clone(),
                                    positions: chunk.to_vec(),
                                };
                                cmd_on(&mut e, conn.0, now(1), ack, &mut next);
                            }
                        }
                    }
                    assert!(
                        !next.is_empty() || acked >= N,
                        "delivery stalled at {acked}"
                    );
                    pending = next;
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Bytes of heap per id held in the dedup window, with 1,000,000 ids, measured as the growth of
/// memory in use across the appends (the tail cache is one event, so events are not kept).
fn dedup_memory() {
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    let config = Config {
        tail_cache_events: 1,
        ..Config::default()
    };
    let mut e = engine(config);
    let mut sink = Vec::new();
    cmd(
        &mut e,
        now(0),
        Command::CreateStream(StreamConfig::persistent(stream())),
        &mut sink,
    );
    sink.clear();
    let ids = 1_000_000u64;
    let before = IN_USE.load(Ordering::Relaxed);
    for i in 0..ids / 1000 {
        let a = AppendRequest {
            stream: stream(),
            events: batch(i * 1000, 1000, &payload),
            expected_offset: None,
        };
        cmd(&mut e, now(i), Command::Append(a), &mut sink);
        sink.clear();
    }
    let after = IN_USE.load(Ordering::Relaxed);
    assert_eq!(e.dedup_ids() as u64, ids);
    let per_id = (after - before) as f64 / ids as f64;
    println!(
        "dedup/memory_per_id: {per_id:.1} bytes per id held ({} ids, {} bytes in use)",
        ids,
        after - before
    );
}

criterion_group!(benches, bench_append, bench_deliver_ack, bench_group);

fn main() {
    dedup_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
