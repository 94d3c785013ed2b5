//! The cases, each an async function of a runtime and a store, run by
//! [`executor_conformance!`](crate::executor_conformance) on a runtime crate's executor.
//! Every wait is bounded: a case that hangs fails.

use crate::{Backend, Fault, FaultyStore, Place};
use futures_util::{FutureExt, select_biased};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary_core::*;
use tributary_executor::{
    ConnEvent, Connection, ExecutorConfig, Handle, NO_CONN, PendingReply, Runtime, start,
};
use tributary_store_api::Store;

/// How long any one step may take before the case fails.
const LIMIT: Duration = Duration::from_secs(30);

/// `f`, or a failure naming `what` after [`LIMIT`].
async fn within<R: Runtime, T>(rt: &R, what: &str, f: impl Future<Output = T>) -> T {
    select_biased! {
        v = f.fuse() => v,
        _ = rt.sleep(LIMIT).fuse() => panic!("{what}: nothing within {LIMIT:?}"),
    }
}

/// Asks `check` until it holds (a state the engine reaches on its own timers), within
/// [`LIMIT`].
async fn eventually<R: Runtime>(rt: &R, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
        rt.sleep(Duration::from_millis(10)).await;
    }
}

fn engine<R: Runtime, S: Store>(rt: &R, store: S, config: Config) -> Handle {
    let clock = tributary_executor::Clock::default();
    let config = Config {
        max_append_writes_in_flight: store.writes_in_flight(),
        ..config
    };
    let engine = Engine::new(config, 7, clock.now()).expect("a valid configuration");
    start(rt.clone(), store, engine, clock, ExecutorConfig::default())
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("a valid stream name")
}

fn sub(s: &str) -> SubscriptionName {
    SubscriptionName::new(s).expect("a valid subscription name")
}

fn consumer(s: &str) -> ConsumerId {
    ConsumerId::new(s).expect("a valid consumer id")
}

async fn call<R: Runtime>(rt: &R, h: &Handle, cmd: Command) -> Result<Reply, Error> {
    within(rt, "a command's reply", h.call(NO_CONN, cmd)).await
}

async fn on<R: Runtime>(rt: &R, c: &Connection, cmd: Command) -> Result<Reply, Error> {
    within(rt, "a command's reply", c.call(cmd)).await
}

async fn create<R: Runtime>(rt: &R, h: &Handle, config: StreamConfig) {
    let r = call(rt, h, Command::CreateStream(config)).await;
    assert_eq!(r, Ok(Reply::Done), "create stream");
}

async fn create_stream<R: Runtime>(rt: &R, h: &Handle, stream: &str, partitions: u32) {
    let mut c = StreamConfig::persistent(name(stream));
    c.partitions = partitions;
    create(rt, h, c).await;
}

fn append_cmd(stream: &str, events: Vec<NewEvent>) -> Command {
    Command::Append(AppendRequest {
        stream: name(stream),
        events,
        expected_offset: None,
    })
}

fn positions_of(outcomes: Vec<AppendOutcome>) -> Vec<Position> {
    outcomes
        .into_iter()
        .map(|o| match o {
            AppendOutcome::Appended(p) => p,
            other => panic!("appended expected: {other:?}"),
        })
        .collect()
}

/// Appends one event per payload (in one append); their positions.
async fn append<R: Runtime>(rt: &R, h: &Handle, stream: &str, payloads: &[&str]) -> Vec<Position> {
    let events = payloads
        .iter()
        .map(|p| NewEvent::new("t", p.as_bytes().to_vec()))
        .collect();
    match call(rt, h, append_cmd(stream, events)).await {
        Ok(Reply::Appended(o)) => positions_of(o),
        other => panic!("append: {other:?}"),
    }
}

async fn read<R: Runtime>(
    rt: &R,
    h: &Handle,
    stream: &str,
    partition: u32,
    from: u64,
) -> Vec<Arc<Event>> {
    let cmd = Command::Read {
        stream: name(stream),
        partition,
        from,
        max: 1000,
    };
    match call(rt, h, cmd).await {
        Ok(Reply::Events(e)) => e,
        other => panic!("read: {other:?}"),
    }
}

fn payload(e: &Event) -> String {
    String::from_utf8_lossy(&e.payload).into_owned()
}

async fn describe_stream<R: Runtime>(rt: &R, h: &Handle, stream: &str) -> StreamInfo {
    match call(rt, h, Command::DescribeStream(name(stream))).await {
        Ok(Reply::Stream(i)) => i,
        other => panic!("describe stream: {other:?}"),
    }
}

async fn describe_sub<R: Runtime>(rt: &R, h: &Handle, stream: &str, s: &str) -> SubscriptionInfo {
    let cmd = Command::DescribeSubscription {
        stream: name(stream),
        subscription: sub(s),
    };
    match call(rt, h, cmd).await {
        Ok(Reply::Subscription(i)) => *i,
        other => panic!("describe subscription: {other:?}"),
    }
}

async fn subscribe<R: Runtime>(rt: &R, h: &Handle, config: SubscriptionConfig) {
    let r = call(rt, h, Command::CreateSubscription(config)).await;
    assert_eq!(r, Ok(Reply::Done), "create subscription");
}

fn sub_config(stream: &str, s: &str, mode: SubscriptionMode) -> SubscriptionConfig {
    SubscriptionConfig::new(name(stream), sub(s), mode)
}

/// A new connection with `who` attached to `s` of `stream`.
async fn attach<R: Runtime>(
    rt: &R,
    h: &Handle,
    stream: &str,
    s: &str,
    who: &str,
    max_in_flight: Option<u32>,
) -> Connection {
    let c = within(rt, "connect", h.connect()).await.expect("connect");
    let cmd = Command::Attach {
        stream: name(stream),
        subscription: sub(s),
        consumer: consumer(who),
        max_in_flight,
    };
    assert_eq!(on(rt, &c, cmd).await, Ok(Reply::Done), "attach {who}");
    c
}

/// The next `n` events delivered on `c` (other messages are skipped).
async fn deliveries<R: Runtime>(rt: &R, c: &Connection, n: usize) -> Vec<Delivered> {
    let mut got = Vec::new();
    while got.len() < n {
        match within(rt, "a delivery", c.events.recv()).await {
            Ok(ConnEvent::Deliver { events, .. }) => got.extend(events),
            Ok(_) => {}
            Err(_) => panic!("the engine stopped"),
        }
    }
    assert_eq!(got.len(), n, "more events delivered than expected");
    got
}

fn positions(ds: &[Delivered]) -> Vec<Position> {
    ds.iter()
        .map(|d| Position {
            partition: d.event.partition,
            offset: d.event.offset,
        })
        .collect()
}

fn offsets(ds: &[Delivered]) -> Vec<u64> {
    ds.iter().map(|d| d.event.offset).collect()
}

async fn ack<R: Runtime>(
    rt: &R,
    c: &Connection,
    stream: &str,
    s: &str,
    who: &str,
    positions: Vec<Position>,
) -> Reply {
    let cmd = Command::Ack {
        stream: name(stream),
        subscription: sub(s),
        consumer: consumer(who),
        positions,
    };
    on(rt, c, cmd).await.expect("ack")
}

/// Waits until `who` is no longer attached to `s` (a dropped connection is handled a moment
/// later).
async fn wait_detached<R: Runtime>(rt: &R, h: &Handle, stream: &str, s: &str, who: &str) {
    eventually(rt, "consumer detached", async || {
        let info = describe_sub(rt, h, stream, s).await;
        !info.attached.iter().any(|a| a.as_str() == who)
    })
    .await;
}

/// Appends in several requests come back from reads in order, at dense offsets.
pub async fn appends_are_read_back_in_order<R: Runtime>(rt: R, backend: Backend) {
    let place = Place::new(backend);
    let h = engine(&rt, place.open().await, Config::default());
    create_stream(&rt, &h, "s", 1).await;
    let mut all = Vec::new();
    for batch in [&["a"][..], &["b", "c", "d"], &["e", "f"]] {
        all.extend(append(&rt, &h, "s", batch).await);
    }
    let got: Vec<u64> = all.iter().map(|p| p.offset).collect();
    assert_eq!(got, (0..6).collect::<Vec<_>>());
    let events = read(&rt, &h, "s", 0, 0).await;
    let payloads: Vec<String> = events.iter().map(|e| payload(e)).collect();
    assert_eq!(payloads, ["a", "b", "c", "d", "e", "f"]);
    let tail = read(&rt, &h, "s", 0, 4).await;
    assert_eq!(tail.iter().map(|e| e.offset).collect::<Vec<_>>(), [4, 5]);
    let info = describe_stream(&rt, &h, "s").await;
    assert_eq!((info.partitions[0].first, info.partitions[0].next), (0, 6));
}

/// Producers appending at once each get their own offsets, dense, and every event is stored.
pub async fn concurrent_appends_get_distinct_dense_offsets<R: Runtime>(rt: R, backend: Backend) {
    const PRODUCERS: u8 = 16;
    const EACH: u8 = 10;
    let place = Place::new(backend);
    let h = engine(&rt, place.open().await, Config::default());
    create_stream(&rt, &h, "s", 1).await;
    let (tx, rx) = async_channel::unbounded();
    for p in 0..PRODUCERS {
        let (h, tx) = (h.clone(), tx.clone());
        rt.spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let mut id = [1u8; 16];
                (id[0], id[1]) = (p, i);
                let e = NewEvent::new("t", vec![p, i]).with_id(EventId::from_bytes(id));
                match h.call(NO_CONN, append_cmd("s", vec![e])).await {
                    Ok(Reply::Appended(o)) => got.extend(positions_of(o)),
                    other => panic!("append: {other:?}"),
                }
            }
            let _ = tx.send(got).await;
        });
    }
    drop(tx);
    let mut seen = BTreeSet::new();
    for _ in 0..PRODUCERS {
        let got = within(&rt, "a producer", rx.recv())
            .await
            .expect("producer");
        for p in got {
            assert!(seen.insert(p.offset), "offset {} given twice", p.offset);
        }
    }
    let total = u64::from(PRODUCERS) * u64::from(EACH);
    assert_eq!(seen, (0..total).collect::<BTreeSet<u64>>());
    assert_eq!(read(&rt, &h, "s", 0, 0).await.len() as u64, total);
}

/// Exclusive: each event to one consumer; an ack holds; a dropped connection's unacked
/// events go to the other consumer, as attempt 2.
pub async fn exclusive_acks_and_redelivers_to_another_consumer<R: Runtime>(
    rt: R,
    backend: Backend,
) {
    let place = Place::new(backend);
    let h = engine(&rt, place.open().await, Config::default());
    create_stream(&rt, &h, "s", 1).await;
    subscribe(&rt, &h, sub_config("s", "q", SubscriptionMode::Exclusive)).await;
    let a = attach(&rt, &h, "s", "q", "a", None).await;
    append(&rt, &h, "s", &["x", "y"]).await;
    let got = deliveries(&rt, &a, 2).await;
    assert_eq!(offsets(&got), [0, 1]);
    assert!(got.iter().all(|d| d.attempt == 1));
    let r = ack(&rt, &a, "s", "q", "a", positions(&got[..1])).await;
    assert_eq!(r.settled_counts(), Some((1, 0)));
    let b = attach(&rt, &h, "s", "q", "b", None).await;
    drop(a);
    let again = deliveries(&rt, &b, 1).await;
    assert_eq!((again[0].event.offset, again[0].attempt), (1, 2));
    let r = ack(&rt, &b, "s", "q", "b", positions(&again)).await;
    assert_eq!(r.settled_counts(), Some((1, 0)));
    let info = describe_sub(&rt, &h, "s", "q").await;
    assert_eq!(info.cursors[0].pending, 0, "nothing left pending");
}

/// Broadcast: every consumer gets every event with a position of its own; a consumer that
/// comes back gets its unacknowledged events again, not those it acknowledged.
pub async fn broadcast_gives_each_consumer_every_event_and_redelivers_its_unacked<R: Runtime>(
    rt: R,
    backend: Backend,
) {
    let place = Place::new(backend);
    let h = engine(&rt, place.open().await, Config::default());
    create_stream(&rt, &h, "s", 1).await;
    subscribe(&rt, &h, sub_config("s", "b", SubscriptionMode::Broadcast)).await;
    let a = attach(&rt, &h, "s", "b", "a", None).await;
    let other = attach(&rt, &h, "s", "b", "o", None).await;
    append(&rt, &h, "s", &["x", "y", "z"]).await;
    let to_a = deliveries(&rt, &a, 3).await;
    let to_other = deliveries(&rt, &other, 3).await;
    assert_eq!(offsets(&to_a), [0, 1, 2]);
    assert_eq!(offsets(&to_other), [0, 1, 2]);
    ack(&rt, &a, "s", "b", "a", positions(&to_a[..1])).await;
    ack(&rt, &other, "s", "b", "o", positions(&to_other)).await;
    drop(a);
    wait_detached(&rt, &h, "s", "b", "a").await;
    let a = attach(&rt, &h, "s", "b", "a", None).await;
    let again = deliveries(&rt, &a, 2).await;
    assert_eq!(offsets(&again), [1, 2]);
    assert!(again.iter().all(|d| d.attempt == 2), "{again:?}");
    assert!(
        other.events.is_empty(),
        "the other consumer acknowledged all"
    );
}

/// Consumer group: the partitions are shared out, each member gets events of its own
/// partitions only; acks commit (AfterEach); when a member leaves, the other takes its
/// partitions and gets the events it had not acknowledged.
pub async fn a_consumer_group_shares_partitions_commits_and_hands_over_the_unacked<R: Runtime>(
    rt: R,
    backend: Backend,
) {
    let place = Place::new(backend);
    let h = engine(&rt, place.open().await, Config::default());
    create_stream(&rt, &h, "s", 2).await;
    let mut config = sub_config("s", "g", SubscriptionMode::ConsumerGroup);
    config.commit = CommitStrategy::AfterEach;
    subscribe(&rt, &h, config).await;
    let a = attach(&rt, &h, "s", "g", "a", None).await;
    let b = attach(&rt, &h, "s", "g", "b", None).await;
    // Both members hold one partition each in the latest generation.
    eventually(&rt, "a generation with both members", async || {
        let g = describe_sub(&rt, &h, "s", "g")
            .await
            .group
            .expect("a group");
        g.members.len() == 2 && g.members.iter().all(|m| m.partitions.len() == 1)
    })
    .await;
    let group = describe_sub(&rt, &h, "s", "g")
        .await
        .group
        .expect("a group");
    let owned = |who: &str| -> Vec<u32> {
        group
            .members
            .iter()
            .find(|m| m.consumer.as_str() == who)
            .map(|m| m.partitions.clone())
            .unwrap_or_default()
    };
    let (pa, pb) = (owned("a"), owned("b"));
    let events: Vec<NewEvent> = (0..16)
        .map(|i| NewEvent::new("t", vec![i]).with_key(vec![i]))
        .collect();
    let appended = match call(&rt, &h, append_cmd("s", events)).await {
        Ok(Reply::Appended(o)) => positions_of(o),
        other => panic!("append: {other:?}"),
    };
    let count = |ps: &[u32]| {
        appended
            .iter()
            .filter(|p| ps.contains(&p.partition))
            .count()
    };
    let (na, nb) = (count(&pa), count(&pb));
    assert_eq!(na + nb, 16);
    let to_a = deliveries(&rt, &a, na).await;
    let to_b = deliveries(&rt, &b, nb).await;
    assert!(to_a.iter().all(|d| pa.contains(&d.event.partition)));
    assert!(to_b.iter().all(|d| pb.contains(&d.event.partition)));
    if nb > 0 {
        let r = ack(&rt, &b, "s", "g", "b", positions(&to_b)).await;
        assert_eq!(r.settled_counts(), Some((nb, 0)));
    }
    drop(a);
    let handed = deliveries(&rt, &b, na).await;
    let mut want = positions(&to_a);
    let mut got = positions(&handed);
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "b gets what a had not acknowledged, and only that"
    );
    let group = describe_sub(&rt, &h, "s", "g")
        .await
        .group
        .expect("a group");
    assert_eq!(group.members.len(), 1);
    assert_eq!(group.uncommitted, vec![0, 0], "acks committed after each");
}

/// Read receipts: acks and marks are answered once durable; the receipt status follows; a
/// consumer that comes back gets its unacknowledged event again.
pub async fn read_receipts_ack_mark_read_and_redeliver<R: Runtime>(rt: R, backend: Backend) {
    let place = Place::new(backend);
    let h = engine(&rt, place.open().await, Config::default());
    create_stream(&rt, &h, "s", 1).await;
    subscribe(&rt, &h, sub_config("s", "r", SubscriptionMode::ReadReceipt)).await;
    let a = attach(&rt, &h, "s", "r", "a", None).await;
    append(&rt, &h, "s", &["x", "y", "z"]).await;
    let got = deliveries(&rt, &a, 3).await;
    let r = ack(&rt, &a, "s", "r", "a", positions(&got[..2])).await;
    assert_eq!(r.settled_counts(), Some((2, 0)));
    let mark = Command::MarkRead {
        stream: name("s"),
        subscription: sub("r"),
        consumer: consumer("a"),
        read: MarkRead::Positions(positions(&got[..1])),
    };
    assert_eq!(
        on(&rt, &a, mark).await,
        Ok(Reply::MarkedRead {
            marked: 1,
            ignored: 0
        })
    );
    let status = Command::ReceiptStatus {
        stream: name("s"),
        subscription: sub("r"),
        consumer: consumer("a"),
        position: Some(positions(&got[..1])[0]),
    };
    match call(&rt, &h, status).await {
        Ok(Reply::ReceiptStatus(s)) => {
            assert_eq!(s.unread, 1, "offset 1 acknowledged, not read");
            assert!(s.receipt.is_some_and(|r| r.read_at.is_some()));
        }
        other => panic!("receipt status: {other:?}"),
    }
    drop(a);
    wait_detached(&rt, &h, "s", "r", "a").await;
    let a = attach(&rt, &h, "s", "r", "a", None).await;
    let again = deliveries(&rt, &a, 1).await;
    assert_eq!((again[0].event.offset, again[0].attempt), (2, 2));
}

/// A nack brings the event again (attempt 2); at `max_deliveries` it goes to the dead letter
/// stream.
pub async fn a_nacked_event_comes_again_then_goes_to_the_dead_letter_stream<R: Runtime>(
    rt: R,
    backend: Backend,
) {
    let place = Place::new(backend);
    let h = engine(&rt, place.open().await, Config::default());
    create_stream(&rt, &h, "s", 1).await;
    let mut config = sub_config("s", "q", SubscriptionMode::Exclusive);
    config.max_deliveries = 2;
    subscribe(&rt, &h, config).await;
    let a = attach(&rt, &h, "s", "q", "a", None).await;
    append(&rt, &h, "s", &["poison"]).await;
    let nack = |ds: &[Delivered]| Command::Nack {
        stream: name("s"),
        subscription: sub("q"),
        consumer: consumer("a"),
        positions: positions(ds),
        delay: Some(Duration::from_millis(1)),
        error: "cannot handle it".into(),
    };
    let first = deliveries(&rt, &a, 1).await;
    assert_eq!(first[0].attempt, 1);
    let settled = |ds: &[Delivered]| {
        Ok(Reply::Settled(Settlement {
            applied: positions(ds),
            skipped: Vec::new(),
        }))
    };
    assert_eq!(on(&rt, &a, nack(&first)).await, settled(&first));
    let second = deliveries(&rt, &a, 1).await;
    assert_eq!((second[0].event.offset, second[0].attempt), (0, 2));
    assert_eq!(on(&rt, &a, nack(&second)).await, settled(&second));
    let dlq = name("s").dlq().expect("a dead letter stream name");
    eventually(&rt, "the event in the dead letter stream", async || {
        let cmd = Command::Read {
            stream: dlq.clone(),
            partition: 0,
            from: 0,
            max: 10,
        };
        match call(&rt, &h, cmd).await {
            Ok(Reply::Events(e)) => e.first().is_some_and(|e| payload(e) == "poison"),
            _ => false,
        }
    })
    .await;
    let info = describe_sub(&rt, &h, "s", "q").await;
    assert_eq!(
        info.cursors[0].pending, 0,
        "dead-lettered, no longer pending"
    );
}

/// An event not acknowledged within its subscription's ack wait is delivered again.
pub async fn an_unacknowledged_event_comes_again_after_its_ack_wait<R: Runtime>(
    rt: R,
    backend: Backend,
) {
    const ACK_WAIT: Duration = Duration::from_millis(300);
    let place = Place::new(backend);
    let h = engine(&rt, place.open().await, Config::default());
    create_stream(&rt, &h, "s", 1).await;
    let mut config = sub_config("s", "q", SubscriptionMode::Exclusive);
    config.ack_wait = ACK_WAIT;
    subscribe(&rt, &h, config).await;
    let a = attach(&rt, &h, "s", "q", "a", None).await;
    append(&rt, &h, "s", &["x"]).await;
    let first = deliveries(&rt, &a, 1).await;
    let at = Instant::now();
    let again = deliveries(&rt, &a, 1).await;
    assert_eq!((again[0].event.offset, again[0].attempt), (0, 2));
    // The timer started when the engine delivered, a moment before the first arrived here.
    assert!(
        at.elapsed() >= ACK_WAIT - Duration::from_millis(100),
        "redelivered after {:?}, ack wait {ACK_WAIT:?}",
        at.elapsed()
    );
    assert_eq!(first[0].event.offset, 0);
}

/// Retention on the engine's cleanup timer: events older than `max_age` are removed, a whole
/// prefix, and the offsets go on.
pub async fn retention_removes_events_older_than_max_age<R: Runtime>(rt: R, backend: Backend) {
    let place = Place::new(backend);
    let config = Config {
        cleanup_interval: Duration::from_millis(50),
        ..Config::default()
    };
    let h = engine(&rt, place.open().await, config);
    let mut stream = StreamConfig::persistent(name("s"));
    stream.retention = Some(RetentionPolicy {
        max_age: Some(Duration::from_millis(300)),
        ..RetentionPolicy::default()
    });
    create(&rt, &h, stream).await;
    append(&rt, &h, "s", &["a", "b", "c"]).await;
    eventually(&rt, "the old events removed", async || {
        describe_stream(&rt, &h, "s").await.partitions[0].first == 3
    })
    .await;
    let p = append(&rt, &h, "s", &["d"]).await;
    assert_eq!(p[0].offset, 3);
    let left = read(&rt, &h, "s", 0, 3).await;
    assert_eq!(left.iter().map(|e| payload(e)).collect::<Vec<_>>(), ["d"]);
}

/// A store that refuses an append: the client is told (`Unavailable`), nothing is written,
/// and the next append takes the same offsets.
pub async fn a_failed_append_is_refused_and_the_next_takes_its_offsets<R: Runtime>(
    rt: R,
    backend: Backend,
) {
    let place = Place::new(backend);
    let store = FaultyStore::new(place.open().await);
    let h = engine(&rt, store.clone(), Config::default());
    create_stream(&rt, &h, "s", 1).await;
    store.plan(Fault::Fail);
    let r = call(&rt, &h, append_cmd("s", vec![NewEvent::new("t", "lost")])).await;
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    let p = append(&rt, &h, "s", &["kept"]).await;
    assert_eq!(p[0].offset, 0);
    let all = read(&rt, &h, "s", 0, 0).await;
    assert_eq!(all.iter().map(|e| payload(e)).collect::<Vec<_>>(), ["kept"]);
}

/// A store whose answer is lost (`Unknown`), whether it wrote or not: the engine repeats the
/// append until it knows, and the client gets one answer; each event is stored once.
pub async fn an_append_of_unknown_outcome_is_repeated_and_answered_once<R: Runtime>(
    rt: R,
    backend: Backend,
) {
    let place = Place::new(backend);
    let store = FaultyStore::new(place.open().await);
    let h = engine(&rt, store.clone(), Config::default());
    create_stream(&rt, &h, "s", 1).await;
    store.plan(Fault::WriteThenUnknown);
    assert_eq!(append(&rt, &h, "s", &["written"]).await[0].offset, 0);
    store.plan(Fault::UnknownWithoutWrite);
    assert_eq!(append(&rt, &h, "s", &["repeated"]).await[0].offset, 1);
    let all = read(&rt, &h, "s", 0, 0).await;
    assert_eq!(
        all.iter().map(|e| payload(e)).collect::<Vec<_>>(),
        ["written", "repeated"]
    );
}

/// The last handle dropped with appends queued and in flight: the engine task ends, every
/// append is answered (appended, or unavailable), and an engine restarted on the store finds
/// every acknowledged event where it was acknowledged, with no hole before it.
pub async fn a_shutdown_with_appends_in_flight_answers_each_and_loses_no_acknowledged_event<
    R: Runtime,
>(
    rt: R,
    backend: Backend,
) {
    const APPENDS: usize = 200;
    let place = Place::new(backend);
    let store = place.open().await;
    let h = engine(&rt, store.clone(), Config::default());
    create_stream(&rt, &h, "s", 1).await;
    let mut pending: Vec<PendingReply> = Vec::new();
    for i in 0..APPENDS {
        let cmd = append_cmd("s", vec![NewEvent::new("t", i.to_string())]);
        let p = within(&rt, "queue an append", h.submit(NO_CONN, cmd))
            .await
            .expect("queued");
        pending.push(p);
    }
    let stopped = h.stopped();
    drop(h);
    within(&rt, "the engine task ends", stopped).await;
    let mut acknowledged = Vec::new();
    for (i, p) in pending.into_iter().enumerate() {
        match within(&rt, "an append's answer", p).await {
            Ok(Reply::Appended(o)) => acknowledged.push((i, positions_of(o)[0].offset)),
            Err(Error::Unavailable(_)) => {}
            other => panic!("append {i}: {other:?}"),
        }
    }
    within(&rt, "the store closes", store.close()).await;
    let h = engine(&rt, place.open().await, Config::default());
    let stored = read(&rt, &h, "s", 0, 0).await;
    for (at, e) in stored.iter().enumerate() {
        assert_eq!(e.offset, at as u64, "no hole");
    }
    for (i, offset) in acknowledged {
        let e = stored
            .get(offset as usize)
            .unwrap_or_else(|| panic!("acknowledged append {i} at {offset} is lost"));
        assert_eq!(payload(e), i.to_string(), "offset {offset}");
    }
}

/// A consumer that stops reading gets no more than its credit (`max_in_flight`), while
/// producers go on appending; each ack lets as many more through.
pub async fn a_consumer_that_stops_reading_holds_no_more_than_its_credit<R: Runtime>(
    rt: R,
    backend: Backend,
) {
    const CREDIT: u32 = 4;
    const EVENTS: usize = 20;
    let place = Place::new(backend);
    let h = engine(&rt, place.open().await, Config::default());
    create_stream(&rt, &h, "s", 1).await;
    subscribe(&rt, &h, sub_config("s", "q", SubscriptionMode::Exclusive)).await;
    let a = attach(&rt, &h, "s", "q", "a", Some(CREDIT)).await;
    // The producer is not held back by the consumer.
    for i in 0..EVENTS {
        append(&rt, &h, "s", &[&i.to_string()]).await;
    }
    let mut received = Vec::new();
    while received.len() < EVENTS {
        let batch = deliveries(&rt, &a, CREDIT as usize).await;
        // A round trip through the engine on this connection: whatever it would deliver now
        // is queued before the answer.
        let info = describe_sub(&rt, &h, "s", "q").await;
        assert_eq!(info.cursors[0].pending, u64::from(CREDIT), "in flight");
        let extra = on(&rt, &a, Command::ListStreams).await;
        assert!(extra.is_ok());
        assert!(
            a.events.is_empty(),
            "more than {CREDIT} events in flight to a consumer that stopped reading"
        );
        let r = ack(&rt, &a, "s", "q", "a", positions(&batch)).await;
        assert_eq!(r.settled_counts(), Some((CREDIT as usize, 0)));
        received.extend(offsets(&batch));
    }
    assert_eq!(received, (0..EVENTS as u64).collect::<Vec<_>>());
}
