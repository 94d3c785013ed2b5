//! The executor loop over a store: concurrent producers, deliveries to connections, and a
//! dropped connection detaching its consumers.

use std::collections::BTreeSet;
use tributary_core::*;
use tributary_io_tokio::{Clock, ConnEvent, ExecutorConfig, Handle, TokioRuntime, start};
use tributary_store_conformance::SharedMemoryStore;

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("name")
}

fn engine_on(store: SharedMemoryStore) -> Handle {
    let clock = Clock::default();
    let engine = Engine::new(Config::default(), 1, clock.now()).expect("config");
    start(
        TokioRuntime,
        store,
        engine,
        clock,
        ExecutorConfig::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_dense_offsets() {
    let store = SharedMemoryStore::default();
    let h = engine_on(store.clone());
    let c = h.connect().await.expect("connect");
    c.call(Command::CreateStream(StreamConfig::persistent(name("s"))))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for p in 0..32u8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let conn = h.connect().await.expect("connect");
            let mut got = Vec::new();
            for i in 0..20u8 {
                let e = NewEvent::new("t", vec![p, i]).with_id(EventId::from_bytes([
                    p, i, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                ]));
                let r = conn
                    .call(Command::Append(AppendRequest {
                        stream: name("s"),
                        events: vec![e],
                        expected_offset: None,
                    }))
                    .await;
                match r {
                    Ok(Reply::Appended(o)) => got.extend(o),
                    other => panic!("append: {other:?}"),
                }
            }
            got
        }));
    }
    let mut offsets = BTreeSet::new();
    for t in tasks {
        for o in t.await.expect("task") {
            let AppendOutcome::Appended(p) = o else {
                panic!("no duplicate expected: {o:?}")
            };
            assert!(offsets.insert(p.offset), "offset {} given twice", p.offset);
        }
    }
    assert_eq!(offsets, (0..640).collect::<BTreeSet<u64>>());
    let stored = store.0.lock().expect("lock").events(&name("s"), 0).len();
    assert_eq!(stored, 640);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_reach_their_connection_and_a_dropped_one_detaches() {
    let h = engine_on(SharedMemoryStore::default());
    let admin = h.connect().await.expect("connect");
    admin
        .call(Command::CreateStream(StreamConfig::persistent(name("s"))))
        .await
        .expect("create");
    let sub = SubscriptionName::new("q").expect("name");
    let config = SubscriptionConfig::new(name("s"), sub.clone(), SubscriptionMode::Exclusive);
    admin
        .call(Command::CreateSubscription(config))
        .await
        .expect("subscribe");
    let first = h.connect().await.expect("connect");
    let attach = |consumer: &str| Command::Attach {
        stream: name("s"),
        subscription: sub.clone(),
        consumer: ConsumerId::new(consumer).expect("id"),
        max_in_flight: None,
    };
    first.call(attach("a")).await.expect("attach");
    admin
        .call(Command::Append(AppendRequest {
            stream: name("s"),
            events: vec![NewEvent::new("t", vec![1])],
            expected_offset: None,
        }))
        .await
        .expect("append");
    let ConnEvent::Deliver {
        events, consumer, ..
    } = first.events.recv().await.expect("delivery")
    else {
        panic!()
    };
    assert_eq!(
        (consumer.as_str(), events[0].event.offset, events[0].attempt),
        ("a", 0, 1)
    );
    let second = h.connect().await.expect("connect");
    second.call(attach("b")).await.expect("attach");
    drop(first);
    let ConnEvent::Deliver {
        events, consumer, ..
    } = second.events.recv().await.expect("redelivery")
    else {
        panic!()
    };
    assert_eq!(
        (consumer.as_str(), events[0].event.offset, events[0].attempt),
        ("b", 0, 2)
    );
}
