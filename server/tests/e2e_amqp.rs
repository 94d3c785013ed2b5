//! Cross-service streams against a real RabbitMQ (`TRIBUTARY_TEST_AMQP_URL`, started by
//! `scripts/test` and `.ci/run` with `scripts/rabbitmq-test-node`): what a `tributary serve`
//! process relays is read by a plain lapin consumer written here, which shares none of the
//! transport's code.

mod common;

use common::*;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Code;
use tributary_grpc::pb;

fn amqp_url() -> String {
    std::env::var("TRIBUTARY_TEST_AMQP_URL").expect(
        "TRIBUTARY_TEST_AMQP_URL: start a broker with scripts/rabbitmq-test-node start (scripts/test does)",
    )
}

/// Exchanges of this test run only: `<prefix>.<stream>`.
fn prefix(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

/// A server relaying to the test broker under `prefix`.
fn server_with_broker(dir: &std::path::Path, name: &str, prefix: &str) -> Server {
    let config = dir.join("amqp.toml");
    std::fs::write(
        &config,
        format!("[amqp]\nurl = \"{}\"\nprefix = \"{prefix}\"\n", amqp_url()),
    )
    .expect("config");
    let store = new_store(Backend::Sqlite, dir, name);
    let config = config.display().to_string();
    Server::start_on(dir, &store, &["--config", &config])
}

fn header<'a>(h: &'a FieldTable, k: &str) -> &'a AMQPValue {
    h.inner()
        .get(k)
        .unwrap_or_else(|| panic!("header {k} missing: {h:?}"))
}

/// Every event of a cross-service stream reaches a queue bound to its exchange, with its
/// envelope in the AMQP properties and headers, in offset order per partition; the relay
/// position then stands at the heads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_amqp_consumer_reads_every_event_with_its_envelope() {
    const N: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = prefix("envelope");
    let server = server_with_broker(dir.path(), "envelope", &prefix);
    let mut c = server.client().await;

    // The consumer side, declared first: a topic exchange drops what no queue is bound to.
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to the broker");
    let ch = conn.create_channel().await.expect("channel");
    let exchange = format!("{prefix}.orders");
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare the exchange as the transport does");
    let queue = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    ch.queue_bind(
        queue.name().clone(),
        exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let mut deliveries = ch
        .basic_consume(
            queue.name().clone(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");

    c.create_stream(pb::CreateStreamRequest {
        name: "orders".into(),
        partitions: Some(2),
        cross_service: true,
        ..Default::default()
    })
    .await
    .expect("create a cross-service stream");
    let events: Vec<pb::NewEvent> = (0..N)
        .map(|i| {
            let mut e = json_event(
                if i % 2 == 0 {
                    "order.created"
                } else {
                    "order.paid"
                },
                &format!("{{\"n\":{i}}}"),
            );
            e.event_id = format!("00000000-0000-4000-8000-{i:012x}");
            e.key = Some(format!("customer-{}", i % 5).into_bytes().into());
            e.correlation_id = Some(format!("corr-{i}"));
            e.headers.insert("tenant".into(), "t1".into());
            e.content_type = "application/json".into();
            e
        })
        .collect();
    let outcomes = publish(&mut c, "orders", events.clone()).await;

    let mut seen: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..N {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, deliveries.next())
            .await
            .expect("every event within 30 s")
            .expect("consumer open")
            .expect("delivery");
        let p = &d.properties;
        let id = p.message_id().as_ref().expect("message_id").to_string();
        let i = usize::from_str_radix(&id[24..], 16).expect("one of ours");
        let (sent, outcome) = (&events[i], &outcomes[i]);
        let pos = outcome.position.expect("position");
        assert_eq!(id, sent.event_id);
        assert_eq!(
            d.routing_key.as_str(),
            sent.event_type,
            "routing key = type"
        );
        assert_eq!(
            p.kind().as_ref().map(|k| k.to_string()),
            Some(sent.event_type.clone())
        );
        assert_eq!(d.data, sent.payload.to_vec(), "body = payload");
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            p.correlation_id().as_ref().map(|k| k.to_string()),
            sent.correlation_id
        );
        assert_eq!(
            p.content_type().as_ref().map(|k| k.to_string()).as_deref(),
            Some("application/json")
        );
        assert!(p.timestamp().is_some_and(|t| t > 1_700_000_000));
        let h = p.headers().as_ref().expect("headers");
        assert_eq!(
            header(h, "x-stream"),
            &AMQPValue::LongString("orders".into())
        );
        assert_eq!(
            header(h, "x-partition"),
            &AMQPValue::LongUInt(pos.partition)
        );
        assert_eq!(
            header(h, "x-offset"),
            &AMQPValue::LongLongInt(pos.offset as i64)
        );
        assert_eq!(header(h, "x-schema-version"), &AMQPValue::LongUInt(1));
        assert_eq!(header(h, "tenant"), &AMQPValue::LongString("t1".into()));
        seen.entry(pos.partition).or_default().push(pos.offset);
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    for (p, offsets) in &seen {
        let mut sorted = offsets.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            offsets, &sorted,
            "partition {p}: in offset order, once each"
        );
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), N);

    // The relay position moves only over confirmed events: it reaches the heads.
    within("the relay position reaches the heads", async {
        loop {
            let s = c
                .get_stream(pb::GetStreamRequest {
                    name: "orders".into(),
                })
                .await
                .expect("get")
                .into_inner();
            let heads: Vec<u64> = s.partitions.iter().map(|p| p.next).collect();
            if s.relay == heads {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = conn.close(0, "done".into()).await;
}

/// Without a broker configured, a cross-service stream is refused at creation, naming the
/// field, instead of being accepted with nothing ever leaving the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_a_cross_service_stream_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Backend::Sqlite, dir.path(), "nobroker");
    let mut c = server.client().await;
    let e = c
        .create_stream(pb::CreateStreamRequest {
            name: "orders".into(),
            cross_service: true,
            ..Default::default()
        })
        .await
        .expect_err("no broker");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("scope"), "{}", e.message());
    assert!(e.message().contains("broker"), "{}", e.message());
}
