//! Tributary embedded: the core driven by a tiny loop, with the in-memory store and a
//! virtual clock. It creates a partitioned stream, publishes keyed events, consumes them
//! through an exclusive subscription (two competing consumers) and a broadcast one, shows a
//! nack and its redelivery, an idempotent retry, and a rate-limited replay.
//!
//! Run: `cargo run -p tributary-core --example embedded`

use std::time::Duration;
use tributary_core::*;
use tributary_store_memory::{MemoryStore, run};

struct Demo {
    engine: Engine,
    store: MemoryStore,
    now: Now,
    req: u64,
}

impl Demo {
    fn send(&mut self, conn: u64, cmd: Command) -> Vec<Output> {
        self.req += 1;
        let input = Input::Client {
            conn: ConnId(conn),
            req: ReqId(self.req),
            cmd,
        };
        let outs = run(&mut self.engine, &mut self.store, self.now, input);
        for o in &outs {
            if let Output::Reply { reply: Err(e), .. } = o {
                println!("  ! refused: {e}");
            }
        }
        outs
    }

    /// Moves the virtual clock to the engine's next deadline (or by `max`) and ticks.
    fn advance(&mut self, max: Duration) -> Vec<Output> {
        let limit = self.now.mono.saturating_add(max);
        let next = self.engine.poll_timeout().map_or(limit, |t| t.min(limit));
        let step = Duration::from_nanos(next.since(self.now.mono));
        self.now = Now {
            mono: next,
            wall: self.now.wall.saturating_add(step),
        };
        run(&mut self.engine, &mut self.store, self.now, Input::Tick)
    }
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid name")
}

fn print_deliveries(outs: &[Output]) -> Vec<(u64, ConsumerId, SubscriptionName, Vec<Position>)> {
    let mut acks = Vec::new();
    for o in outs {
        if let Output::Deliver {
            conn,
            subscription,
            consumer,
            events,
            ..
        } = o
        {
            for d in events {
                let e = &d.event;
                println!(
                    "  {subscription}/{consumer} <- p{}@{} {} key={} attempt {}",
                    e.partition,
                    e.offset,
                    e.event_type,
                    String::from_utf8_lossy(e.key.as_deref().unwrap_or_default()),
                    d.attempt
                );
            }
            let positions = events.iter().map(|d| Position {
                partition: d.event.partition,
                offset: d.event.offset,
            });
            acks.push((
                conn.0,
                consumer.clone(),
                subscription.clone(),
                positions.collect(),
            ));
        }
    }
    acks
}

fn main() {
    let now = Now {
        mono: MonoNanos(0),
        wall: UnixMillis(1_767_225_600_000),
    };
    let engine = Engine::new(Config::default(), 2026, now).expect("default config is valid");
    let mut demo = Demo {
        engine,
        store: MemoryStore::new(),
        now,
        req: 0,
    };
    run(&mut demo.engine, &mut demo.store, now, Input::Tick);
    println!(
        "Tributary embedded: engine ready = {}",
        demo.engine.is_ready()
    );

    let orders = name("orders");
    let mut config = StreamConfig::persistent(orders.clone());
    config.partitions = 2;
    demo.send(1, Command::CreateStream(config));
    let billing = SubscriptionName::new("billing").expect("valid name");
    let audit = SubscriptionName::new("audit").expect("valid name");
    demo.send(
        1,
        Command::CreateSubscription(SubscriptionConfig::new(
            orders.clone(),
            billing.clone(),
            SubscriptionMode::Exclusive,
        )),
    );
    demo.send(
        1,
        Command::CreateSubscription(SubscriptionConfig::new(
            orders.clone(),
            audit.clone(),
            SubscriptionMode::Broadcast,
        )),
    );
    for (conn, sub, consumer) in [
        (2, &billing, "billing-1"),
        (3, &billing, "billing-2"),
        (4, &audit, "auditor"),
    ] {
        let consumer = ConsumerId::new(consumer).expect("valid id");
        demo.send(
            conn,
            Command::Attach {
                stream: orders.clone(),
                subscription: sub.clone(),
                consumer,
                max_in_flight: Some(10),
            },
        );
    }

    println!("publish 6 orders (keyed by customer):");
    let events: Vec<NewEvent> = (1..=6u8)
        .map(|i| {
            NewEvent::new("order-placed", format!("{{\"order\":{i}}}").into_bytes())
                .with_key(
                    ["alice", "bob", "carol"][usize::from(i % 3)]
                        .as_bytes()
                        .to_vec(),
                )
                .with_id(EventId::from_bytes([i; 16]))
        })
        .collect();
    let outs = demo.send(
        1,
        Command::Append(AppendRequest {
            stream: orders.clone(),
            events: events.clone(),
            expected_offset: None,
        }),
    );
    let deliveries = print_deliveries(&outs);

    println!("the producer retries the same batch (its ids are the dedup keys):");
    for o in demo.send(
        1,
        Command::Append(AppendRequest {
            stream: orders.clone(),
            events,
            expected_offset: None,
        }),
    ) {
        if let Output::Reply {
            reply: Ok(Reply::Appended(outcomes)),
            ..
        } = o
        {
            println!("  {outcomes:?}");
        }
    }

    println!("billing-1 nacks what it got; the rest is acknowledged:");
    for (conn, consumer, subscription, positions) in deliveries {
        let cmd = if consumer.as_str() == "billing-1" {
            Command::Nack {
                stream: orders.clone(),
                subscription,
                consumer,
                positions,
                delay: Some(Duration::from_secs(2)),
                error: "try later".into(),
            }
        } else {
            Command::Ack {
                stream: orders.clone(),
                subscription,
                consumer,
                positions,
            }
        };
        demo.send(conn, cmd);
    }
    let outs = demo.advance(Duration::from_secs(5));
    for (conn, consumer, subscription, positions) in print_deliveries(&outs) {
        demo.send(
            conn,
            Command::Ack {
                stream: orders.clone(),
                subscription,
                consumer,
                positions,
            },
        );
    }

    println!("replay from offset 0 at 2 events/s (virtual time):");
    let opts = ReplayOptions {
        max_events_per_second: Some(2),
        ..ReplayOptions::default()
    };
    let mut outs = demo.send(
        5,
        Command::Replay {
            stream: orders.clone(),
            from: ReplayFrom::Offset(0),
            options: opts,
        },
    );
    loop {
        let mut done = false;
        for o in &outs {
            if let Output::Replay { item, .. } = o {
                match item {
                    ReplayItem::Events(ev) => {
                        let at = demo.now.mono.0 as f64 / 1e9;
                        println!("  t={at:.1}s replayed {} event(s)", ev.len())
                    }
                    ReplayItem::Done { total } => {
                        println!("  done: {total} events");
                        done = true;
                    }
                    other => println!("  {other:?}"),
                }
            }
        }
        if done {
            break;
        }
        outs = demo.advance(Duration::from_secs(1));
    }
    for o in demo.send(1, Command::DescribeStream(orders.clone())) {
        if let Output::Reply {
            reply: Ok(Reply::Stream(info)),
            ..
        } = o
        {
            println!(
                "stream {}: {} events in {} partitions, {} subscriptions",
                info.config.name,
                info.length(),
                info.partitions.len(),
                info.subscriptions
            );
        }
    }
}
