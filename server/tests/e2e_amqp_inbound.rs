//! Two services over a real RabbitMQ: `tributary serve` A relays a cross-service stream, B
//! consumes it into a local stream (`[[amqp.inbound]]`). Against the shared test broker
//! (`TRIBUTARY_TEST_AMQP_URL`), except the broker-restart test, which stops and starts a
//! private node of its own (`scripts/rabbitmq-test-node` on another port) so that the other
//! tests' broker is never down.

mod common;

use common::*;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tributary_grpc::pb;

fn amqp_url() -> String {
    std::env::var("TRIBUTARY_TEST_AMQP_URL").expect(
        "TRIBUTARY_TEST_AMQP_URL: start a broker with scripts/rabbitmq-test-node start (scripts/test does)",
    )
}

/// Exchanges and queues of this test only.
fn prefix(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

/// A server on a store of its own in `dir`, with this configuration file.
fn start(dir: &Path, config: &str) -> Server {
    let path = dir.join("tributary.toml");
    std::fs::write(&path, config).expect("config");
    let store = new_store(Backend::Sqlite, dir, "amqp");
    let path = path.display().to_string();
    Server::start_on(dir, &store, &["--config", &path])
}

fn amqp_section(url: &str, prefix: &str) -> String {
    format!("[amqp]\nurl = \"{url}\"\nprefix = \"{prefix}\"\n")
}

/// B's configuration: `orders` of A consumed into `orders-in` (with `partitions`), and a
/// subscription `reader` on it.
fn consumer_config(
    url: &str,
    prefix: &str,
    subscription: &str,
    partitions: u32,
    extra: &str,
) -> String {
    format!(
        "{extra}{}\n[[amqp.inbound]]\nremote_stream = \"orders\"\nsubscription = \"{subscription}\"\n\
         stream = \"orders-in\"\nmax_in_flight = 50\n\n[[streams]]\nname = \"orders-in\"\n\
         partitions = {partitions}\n\n[[subscriptions]]\nstream = \"orders-in\"\nname = \"reader\"\n",
        amqp_section(url, prefix)
    )
}

/// A's configuration: a cross-service stream `orders`.
fn producer_config(url: &str, prefix: &str, partitions: u32) -> String {
    format!(
        "{}\n[[streams]]\nname = \"orders\"\npartitions = {partitions}\ncross_service = true\n",
        amqp_section(url, prefix)
    )
}

/// Polls until a deadline; a step past it fails the test, naming what was awaited.
struct Deadline {
    until: Instant,
    what: String,
}

impl Deadline {
    fn new(what: impl Into<String>, secs: u64) -> Deadline {
        Deadline {
            until: Instant::now() + Duration::from_secs(secs),
            what: what.into(),
        }
    }

    /// The pause between two looks (polling, not synchronisation), or the failure.
    async fn tick(&self) {
        assert!(
            Instant::now() < self.until,
            "{}: not reached before the deadline",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn get_json(server: &Server, path: &str) -> Value {
    let r = within("http", reqwest::get(format!("{}{path}", server.http)))
        .await
        .expect("http");
    r.json().await.expect("json")
}

async fn metrics(server: &Server) -> String {
    within("metrics", reqwest::get(format!("{}/metrics", server.http)))
        .await
        .expect("http")
        .text()
        .await
        .expect("text")
}

/// The value of the series `name` whose labels include `labels` (0 when absent).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// The `/health` component named `name`.
async fn component(server: &Server, name: &str) -> Value {
    let h = get_json(server, "/health").await;
    h["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["component"] == name).cloned())
        .unwrap_or(Value::Null)
}

async fn wait_connected(server: &Server, name: &str) {
    let d = Deadline::new(format!("{name} connected"), 60);
    while component(server, name).await["state"] != "connected" {
        d.tick().await;
    }
}

async fn stream_info(c: &mut Client, name: &str) -> pb::StreamInfo {
    within(
        "get stream",
        c.get_stream(pb::GetStreamRequest { name: name.into() }),
    )
    .await
    .expect("get stream")
    .into_inner()
}

/// Every event of a stream, per partition in offset order.
async fn read_all(c: &mut Client, stream: &str) -> Vec<pb::Event> {
    let info = stream_info(c, stream).await;
    let mut out = Vec::new();
    for p in &info.partitions {
        let mut from = p.first;
        while from < p.next {
            let page = within(
                "read",
                c.read(pb::ReadRequest {
                    stream: stream.into(),
                    partition: p.partition,
                    from,
                    max: Some(500),
                }),
            )
            .await
            .expect("read")
            .into_inner()
            .events;
            let Some(last) = page.last() else { break };
            from = last.offset + 1;
            out.extend(page);
        }
    }
    out
}

fn id(run: u32, i: usize) -> String {
    format!("00000000-{run:04x}-4000-8000-{i:012x}")
}

fn order_event(run: u32, i: usize) -> pb::NewEvent {
    let mut e = json_event(
        if i.is_multiple_of(3) {
            "order.created"
        } else {
            "order.paid"
        },
        &format!("{{\"n\":{i}}}"),
    );
    e.event_id = id(run, i);
    e.key = Some(format!("customer-{}", i % 7).into_bytes().into());
    e.correlation_id = Some(format!("corr-{i}"));
    e.headers.insert("tenant".into(), "t1".into());
    e
}

/// Publishes events `range` of `run` to A's `orders` in batches of `batch`; returns where A
/// put each id.
async fn publish_range(
    c: &mut Client,
    run: u32,
    range: std::ops::Range<usize>,
    batch: usize,
) -> BTreeMap<String, (u32, u64)> {
    let mut at = BTreeMap::new();
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(batch) {
        let events: Vec<pb::NewEvent> = chunk.iter().map(|i| order_event(run, *i)).collect();
        let outcomes = publish(c, "orders", events).await;
        for (i, o) in chunk.iter().zip(outcomes) {
            let p = o.position.expect("appended");
            at.insert(id(run, *i), (p.partition, p.offset));
        }
    }
    at
}

fn header<'a>(e: &'a pb::Event, k: &str) -> &'a str {
    e.headers
        .get(k)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("header {k} missing: {e:?}"))
}

/// B holds every event of `published` exactly once, with A's envelope, each B partition
/// holding one A partition's events, in A's offset order when `ordered`.
fn holds_exactly_once(
    events: &[pb::Event],
    published: &BTreeMap<String, (u32, u64)>,
    ordered: bool,
) {
    let ids: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    let want: BTreeSet<&str> = published.keys().map(String::as_str).collect();
    assert_eq!(ids, want, "every acknowledged event, nothing else");
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for e in events {
        let (pa, oa) = published[&e.event_id];
        assert_eq!(header(e, "x-source-stream"), "orders");
        assert_eq!(header(e, "x-source-partition"), pa.to_string());
        assert_eq!(header(e, "x-source-offset"), oa.to_string());
        assert_eq!(
            e.partition, pa,
            "same key, same partition count: same partition"
        );
        if let Some(prev) = last.insert(e.partition, oa)
            && ordered
        {
            assert!(prev < oa, "partition {}: {prev} then {oa}", e.partition);
        }
    }
}

fn check_envelope(events: &[pb::Event], run: u32) {
    for e in events {
        let i = usize::from_str_radix(&e.event_id[24..], 16).expect("one of ours");
        let sent = order_event(run, i);
        assert_eq!(e.event_type, sent.event_type);
        assert_eq!(e.key, sent.key);
        assert_eq!(e.correlation_id, sent.correlation_id);
        assert_eq!(e.payload, sent.payload);
        assert_eq!(e.schema_version, 1);
        assert_eq!(e.content_type, "application/json");
        assert_eq!(header(e, "tenant"), "t1");
    }
}

/// Two services on one broker: B consumes A's stream into a local stream; a subscriber on B
/// receives every event once, in A's per-partition order, with its envelope; health, metrics
/// and the HTTP stream view show the relay and the consumption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_consumes_a_stream_of_a_into_a_local_stream() {
    const N: usize = 300;
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (url, prefix) = (amqp_url(), prefix("two"));
    // B first: a topic exchange drops what no queue is bound to yet.
    let b = start(db.path(), &consumer_config(&url, &prefix, "b", 3, ""));
    wait_connected(&b, "amqp-inbound orders:b").await;
    let a = start(da.path(), &producer_config(&url, &prefix, 3));
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mut reader = Session::open(&mut cb, open("orders-in", "reader", "c1")).await;

    let published = publish_range(&mut ca, 1, 0..N, 25).await;
    let mut got: Vec<pb::Event> = Vec::new();
    let mut batch = Vec::new();
    while got.len() < N {
        if batch.is_empty() {
            batch = reader.events(1).await;
        }
        // Events that come while the ack is answered come with the answer.
        let ack = pb::subscribe_request::Kind::Ack(pb::Ack {
            positions: positions(&batch),
        });
        let id = reader.send(ack).await;
        let (answer, more) = reader.answer(id).await;
        assert!(
            matches!(answer, pb::subscribe_response::Kind::Settled(_)),
            "{answer:?}"
        );
        got.extend(batch.drain(..).map(|d| d.event.expect("event")));
        batch = more;
    }
    assert!(batch.is_empty(), "more than N: {batch:?}");
    holds_exactly_once(&got, &published, true);
    check_envelope(&got, 1);
    // Nothing more in B once A's relay is at its heads and B has taken everything.
    let d = Deadline::new("A's relay at its heads", 60);
    loop {
        let s = stream_info(&mut ca, "orders").await;
        if s.relay == s.partitions.iter().map(|p| p.next).collect::<Vec<_>>() {
            break;
        }
        d.tick().await;
    }
    holds_exactly_once(&read_all(&mut cb, "orders-in").await, &published, true);

    // A: relay figures.
    let m = metrics(&a).await;
    let orders = [("stream", "orders")];
    assert!(
        metric(&m, "tributary_relay_published_total", &orders) >= N as f64,
        "{m}"
    );
    assert!(
        metric(&m, "tributary_relay_confirmed_total", &orders) >= N as f64,
        "{m}"
    );
    assert_eq!(metric(&m, "tributary_relay_lag", &orders), 0.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "tributary_broker_connection",
            &[("connection", "publisher"), ("state", "connected")]
        ),
        1.0,
        "{m}"
    );
    let pubc = component(&a, "amqp-publisher").await;
    assert_eq!(pubc["state"], "connected", "{pubc}");
    assert_eq!(pubc["status"], "healthy", "{pubc}");
    let view = get_json(&a, "/api/event-streams/orders").await;
    assert_eq!(view["relay_lag"], 0, "{view}");
    for p in view["partition_detail"].as_array().expect("partitions") {
        assert_eq!(p["relay_offset"], p["next_offset"], "{view}");
    }
    let health = get_json(&a, "/health").await;
    let s = health["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == "orders").cloned())
        .expect("orders in /health");
    assert_eq!(s["relay_lag"], 0, "{s}");

    // B: inbound figures (a redelivery may add to received, never to appended).
    let m = metrics(&b).await;
    let binding = [
        ("remote_stream", "orders"),
        ("subscription", "b"),
        ("stream", "orders-in"),
    ];
    assert_eq!(
        metric(&m, "tributary_inbound_appended_total", &binding),
        N as f64,
        "{m}"
    );
    assert!(
        metric(&m, "tributary_inbound_received_total", &binding) >= N as f64,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tributary_inbound_dead_lettered_total", &binding),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "tributary_broker_connection",
            &[("connection", "inbound:orders:b"), ("state", "connected")]
        ),
        1.0,
        "{m}"
    );
    // B's own publisher was never needed.
    assert_eq!(component(&b, "amqp-publisher").await["state"], "idle");
}

/// Messages that cannot be events go to the dead-letter queue, counted and logged, and the
/// consumer goes on; a message whose id is already in the local stream is acknowledged
/// without a second event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_reach_the_dead_letter_queue_and_the_consumer_goes_on() {
    let db = tempfile::tempdir().expect("dir");
    let (url, prefix) = (amqp_url(), prefix("poison"));
    let b = start(
        db.path(),
        &consumer_config(&url, &prefix, "p", 1, "max_payload_bytes = 1024\n"),
    );
    wait_connected(&b, "amqp-inbound orders:p").await;
    let mut cb = b.client().await;

    // A plain lapin producer, not the transport.
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let exchange = format!("{prefix}.orders");
    let good = |i: usize| {
        BasicProperties::default()
            .with_message_id(id(2, i).as_str().into())
            .with_type("order.created".into())
    };
    let messages: Vec<(BasicProperties, Vec<u8>)> = vec![
        (good(1), b"{\"n\":1}".to_vec()),
        (
            BasicProperties::default().with_type("order.created".into()),
            b"no id".to_vec(),
        ),
        (
            good(0).with_message_id("order-3".into()),
            b"not a uuid".to_vec(),
        ),
        (
            BasicProperties::default().with_message_id(id(2, 4).as_str().into()),
            b"no type".to_vec(),
        ),
        (good(5), vec![b'x'; 2000]),
        (good(6), b"{\"n\":6}".to_vec()),
        (good(1), b"{\"n\":1}".to_vec()),
    ];
    for (props, body) in messages {
        let confirm = ch
            .basic_publish(
                exchange.as_str().into(),
                "order.created".into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_ack());
    }

    let binding = [("remote_stream", "orders"), ("subscription", "p")];
    let d = Deadline::new("every message settled", 60);
    loop {
        let m = metrics(&b).await;
        let settled = metric(&m, "tributary_inbound_appended_total", &binding)
            + metric(&m, "tributary_inbound_duplicates_total", &binding)
            + metric(&m, "tributary_inbound_dead_lettered_total", &binding);
        if settled >= 7.0 {
            let dead = |r: &str| {
                metric(
                    &m,
                    "tributary_inbound_dead_lettered_total",
                    &[binding[0], binding[1], ("reason", r)],
                )
            };
            assert_eq!(
                (dead("no_id"), dead("bad_envelope"), dead("refused")),
                (2.0, 1.0, 1.0),
                "{m}"
            );
            assert_eq!(
                metric(&m, "tributary_inbound_duplicates_total", &binding),
                1.0
            );
            assert_eq!(
                metric(&m, "tributary_inbound_appended_total", &binding),
                2.0
            );
            break;
        }
        d.tick().await;
    }
    let events = read_all(&mut cb, "orders-in").await;
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, [id(2, 1), id(2, 6)], "the good ones, once, in order");

    // The four poison messages are in the dead-letter queue, as they were sent.
    let dlq = format!("{prefix}.orders:p:dlq");
    let mut bodies = BTreeSet::new();
    let d = Deadline::new("four dead letters", 30);
    while bodies.len() < 4 {
        match ch
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            Some(m) => {
                let h = m.delivery.properties.headers().clone().unwrap_or_default();
                assert!(
                    matches!(h.inner().get("x-death"), Some(AMQPValue::FieldArray(_))),
                    "dead-lettered by the broker: {h:?}"
                );
                bodies.insert(m.delivery.data.len());
            }
            None => d.tick().await,
        }
    }
    assert_eq!(bodies, BTreeSet::from([5, 7, 10, 2000]));
    let log = b.log();
    let logged = log
        .lines()
        .filter(|l| l.contains("moved to the dead-letter queue"))
        .count();
    assert_eq!(logged, 4, "one line each (code 8022): {log}");
    let _ = conn.close(0, "done".into()).await;
}

/// SIGKILL of B while it consumes, then a restart on the same store and queue: B ends with
/// every event of A once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_killed_while_consuming_loses_nothing_and_doubles_nothing() {
    const N: usize = 600;
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (url, prefix) = (amqp_url(), prefix("kill"));
    let mut b = start(db.path(), &consumer_config(&url, &prefix, "k", 2, ""));
    wait_connected(&b, "amqp-inbound orders:k").await;
    let a = start(da.path(), &producer_config(&url, &prefix, 2));
    let mut ca = a.client().await;
    // Batches of 10 every 10 ms: B is killed while A still publishes.
    let storm = tokio::spawn(async move {
        let mut all = BTreeMap::new();
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        for from in (0..N).step_by(10) {
            pace.tick().await;
            all.extend(publish_range(&mut ca, 3, from..from + 10, 10).await);
        }
        all
    });

    let mut cb = b.client().await;
    let d = Deadline::new("B consuming", 60);
    let mut before = 0;
    while before < 100 {
        before = stream_info(&mut cb, "orders-in").await.length;
        d.tick().await;
    }
    assert!(before < N as u64, "killed while consuming: {before}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &b.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    b = b.restart();
    let published = storm.await.expect("publisher");

    let mut cb = b.client().await;
    let d = Deadline::new("B holds every event", 120);
    loop {
        let len = stream_info(&mut cb, "orders-in").await.length;
        assert!(len <= N as u64, "more events than A published: {len}");
        if len == N as u64 {
            break;
        }
        d.tick().await;
    }
    // Everything acknowledged to the broker: the queue is empty, and B still holds N.
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let d = Deadline::new("B's queue drained", 60);
    loop {
        let q = ch
            .queue_declare(
                format!("{prefix}.orders:k").as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        if q.message_count() == 0 {
            break;
        }
        d.tick().await;
    }
    let events = read_all(&mut cb, "orders-in").await;
    holds_exactly_once(&events, &published, true);
    let _ = conn.close(0, "done".into()).await;
}

/// A private RabbitMQ node, stopped (by `scripts/rabbitmq-test-node stop`, i.e. by its PID)
/// when dropped, so that a failing test never leaves it behind.
struct PrivateBroker {
    env: Vec<(&'static str, String)>,
    dir: PathBuf,
    url: String,
}

const NODE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/rabbitmq-test-node");

/// A port that is free, with its distribution port (+1000) free too.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if port < 64000 && std::net::TcpListener::bind(("127.0.0.1", port + 1000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

impl PrivateBroker {
    fn run(&self, verb: &str) -> String {
        let out = std::process::Command::new(NODE_SCRIPT)
            .arg(verb)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("run scripts/rabbitmq-test-node");
        assert!(
            out.status.success(),
            "rabbitmq-test-node {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn start() -> PrivateBroker {
        let port = free_port_pair();
        let dir = PathBuf::from(format!(
            "/tmp/tributary-rabbitmq-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut b = PrivateBroker {
            env: vec![
                ("TRIBUTARY_RABBITMQ_PORT", port.to_string()),
                ("TRIBUTARY_RABBITMQ_DIR", dir.display().to_string()),
                (
                    "TRIBUTARY_RABBITMQ_NODENAME",
                    format!("tributary-{}-{port}@localhost", std::process::id()),
                ),
            ],
            dir,
            url: String::new(),
        };
        b.url = b.run("start");
        assert!(b.url.starts_with("amqp://"), "{}", b.url);
        b
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new(NODE_SCRIPT)
            .arg("stop")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The broker stops and starts in the middle of a publish storm on A: afterwards B holds every
/// event A acknowledged, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_during_a_publish_storm_loses_and_doubles_nothing() {
    let broker = Arc::new(PrivateBroker::start());
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let prefix = prefix("restart");
    let b = start(
        db.path(),
        &consumer_config(&broker.url, &prefix, "r", 2, ""),
    );
    wait_connected(&b, "amqp-inbound orders:r").await;
    let a = start(da.path(), &producer_config(&broker.url, &prefix, 2));
    let mut ca = a.client().await;

    // The storm: batches of 10 every 20 ms, until 400 events after the broker is back.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let storm = {
        let (acknowledged, restarted) = (acknowledged.clone(), restarted.clone());
        tokio::spawn(async move {
            let mut all = BTreeMap::new();
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            let mut after: Option<usize> = None;
            let mut i = 0;
            while after.is_none_or(|from| i < from + 400) {
                pace.tick().await;
                all.extend(publish_range(&mut ca, 4, i..i + 10, 10).await);
                i += 10;
                acknowledged.store(i, Ordering::Relaxed);
                if after.is_none() && restarted.load(Ordering::Relaxed) {
                    after = Some(i);
                }
            }
            all
        })
    };
    let d = Deadline::new("the storm under way", 60);
    while acknowledged.load(Ordering::Relaxed) < 300 {
        d.tick().await;
    }
    let node = broker.clone();
    tokio::task::spawn_blocking(move || node.run("restart"))
        .await
        .expect("restart");
    restarted.store(true, Ordering::Relaxed);
    let published = storm.await.expect("storm");
    assert!(published.len() >= 700, "{}", published.len());

    let mut cb = b.client().await;
    let d = Deadline::new("B holds every event A acknowledged", 180);
    loop {
        let len = stream_info(&mut cb, "orders-in").await.length;
        assert!(
            len <= published.len() as u64,
            "more than A acknowledged: {len}"
        );
        if len == published.len() as u64 {
            break;
        }
        d.tick().await;
    }
    // Order is not asked here: a publish that fails while a later one of its window is
    // confirmed reaches the broker after it (docs/semantics.md, "Relay").
    holds_exactly_once(&read_all(&mut cb, "orders-in").await, &published, false);
    // Both connections came back by themselves.
    wait_connected(&a, "amqp-publisher").await;
    wait_connected(&b, "amqp-inbound orders:r").await;
    let log = b.log();
    assert!(
        log.contains("inbound consumer down"),
        "B saw the broker go (code 8021): {log}"
    );
}

/// Retention on a cross-service stream keeps what the broker has not confirmed (here: no
/// broker reachable, so nothing) and removes it once confirmed; health shows the broker down
/// and the relay lag meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_unconfirmed_events_and_removes_confirmed_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let prefix = prefix("retention");
    // Nothing listens on a port just freed.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = |url: &str| {
        format!(
            "{}\n[health]\nlag_degraded = 10\n\n[retention]\ncleanup_interval = \"200ms\"\n\n\
             [[streams]]\nname = \"orders\"\ncross_service = true\nretention = {{ max_events = 5 }}\n\n\
             [[streams]]\nname = \"witness\"\nretention = {{ max_events = 5 }}\n",
            amqp_section(url, &prefix)
        )
    };
    let path = dir.path().join("tributary.toml");
    std::fs::write(
        &path,
        config(&format!("amqp://guest:guest@127.0.0.1:{dead}/%2f")),
    )
    .expect("config");
    let store = new_store(Backend::Sqlite, dir.path(), "retention");
    let path_arg = path.display().to_string();
    let server = Server::start_on(dir.path(), &store, &["--config", &path_arg]);
    let mut c = server.client().await;
    let events = |n: usize| (0..n).map(|i| json_event("t", &format!("{i}"))).collect();
    publish(&mut c, "orders", events(20)).await;

    // Two cleanup runs after the events were there (the witness, an internal stream with
    // the same policy, is cut each time): the cross-service stream kept all of them.
    for (n, first) in [(20, 15), (10, 25)] {
        publish(&mut c, "witness", events(n)).await;
        let d = Deadline::new("a cleanup run", 30);
        while stream_info(&mut c, "witness").await.partitions[0].first < first {
            d.tick().await;
        }
    }
    let s = stream_info(&mut c, "orders").await;
    assert_eq!(
        (s.partitions[0].first, s.partitions[0].next, s.relay.clone()),
        (0, 20, vec![0]),
        "nothing confirmed, nothing removed"
    );
    let health = get_json(&server, "/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    let orders = health["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == "orders").cloned())
        .expect("orders");
    assert_eq!(
        (orders["relay_lag"].clone(), orders["status"].clone()),
        (20.into(), "degraded".into()),
        "{orders}"
    );
    let pubc = component(&server, "amqp-publisher").await;
    assert_eq!(
        (pubc["state"].clone(), pubc["status"].clone()),
        ("disconnected".into(), "degraded".into()),
        "{pubc}"
    );
    let m = metrics(&server).await;
    assert_eq!(
        metric(&m, "tributary_relay_lag", &[("stream", "orders")]),
        20.0,
        "{m}"
    );
    assert!(
        metric(&m, "tributary_relay_failed_total", &[("stream", "orders")]) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "tributary_relay_confirmed_total",
            &[("stream", "orders")]
        ),
        0.0
    );

    // The same store with a broker: confirmed, then removed down to the policy.
    std::fs::write(&path, config(&amqp_url())).expect("config");
    let server = server.restart();
    let mut c = server.client().await;
    let d = Deadline::new("confirmed events removed", 60);
    loop {
        let s = stream_info(&mut c, "orders").await;
        if s.relay == vec![20] && s.partitions[0].first == 15 {
            break;
        }
        d.tick().await;
    }
    let health = get_json(&server, "/health").await;
    assert_eq!(health["status"], "healthy", "{health}");
}
