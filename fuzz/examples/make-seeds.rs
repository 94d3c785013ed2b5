//! Writes the binary seeds of `corpus/` (journals, gRPC messages, SQL rows), which are made
//! with the product's own encoders. The text seeds are written by hand.
//! `cargo run -p tributary-fuzz --example make-seeds` (from anywhere).

use prost::Message;
use std::path::Path;
use std::sync::Arc;
use tributary_core::{
    AppendRequest, Command, Config, ConnId, Event, EventId, Input, MonoNanos, NewEvent, Now, OpId,
    ReqId, SchemaRegistration, StorageReply, StorageResult, StreamName, StreamSpec, UnixMillis,
};
use tributary_grpc::pb;
use tributary_journal::{JournalHeader, JournalWriter};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let now = Now {
        mono: MonoNanos(5),
        wall: UnixMillis(1_700_000_000_000),
    };
    let orders = StreamName::new("orders")?;
    let mut event = NewEvent::new("order.created", &br#"{"name":"Ada"}"#[..]);
    event.event_id = Some(EventId::from_bytes([7; 16]));
    event.key = Some(bytes::Bytes::from_static(b"k1"));
    event.headers.insert("h".into(), "v".into());

    // Journals.
    let header = JournalHeader {
        config: Config::default(),
        seed: 42,
        start: now,
    };
    let dir = root.join("journal");
    write(
        &dir,
        "header-only.bin",
        &JournalWriter::new(Vec::new(), &header)?.finish()?,
    )?;
    let mut w = JournalWriter::new(Vec::new(), &header)?;
    w.record(now, &Input::Tick)?;
    w.record(now, &Input::ConnClosed { conn: ConnId(3) })?;
    w.record(
        now,
        &Input::StorageDone {
            op: OpId(1),
            result: StorageResult::Ok(StorageReply::Offset(9)),
        },
    )?;
    write(&dir, "tick-close-storage.bin", &w.finish()?)?;
    let mut w = JournalWriter::new(Vec::new(), &header)?;
    let client = |req: u64, cmd: Command| Input::Client {
        conn: ConnId(1),
        req: ReqId(req),
        cmd,
    };
    w.record(
        now,
        &client(
            1,
            Command::CreateStream(StreamSpec::default().into_config(orders.clone())),
        ),
    )?;
    w.record(
        now,
        &client(
            2,
            Command::Append(AppendRequest {
                stream: orders.clone(),
                events: vec![event.clone()],
                expected_offset: Some(0),
            }),
        ),
    )?;
    w.record(
        now,
        &client(
            3,
            Command::RegisterSchema(SchemaRegistration {
                event_type: "order.created".into(),
                version: 2,
                schema: Some(serde_json::json!({"type": "object", "required": ["customer"]})),
                rules: vec![tributary_core::Rule::Rename {
                    from: "name".into(),
                    to: "customer".into(),
                }],
            }),
        ),
    )?;
    write(&dir, "client-commands.bin", &w.finish()?)?;

    // gRPC messages: the first byte is the index in `tributary_grpc::fuzzing::REQUESTS`.
    let dir = root.join("grpc");
    let pb_event = pb::NewEvent {
        event_id: "0b7c1f7e-3c4f-4a44-9b1e-2f5d8a1c9e01".into(),
        event_type: "order.created".into(),
        payload: br#"{"name":"Ada"}"#.to_vec().into(),
        key: Some(b"k1".to_vec().into()),
        ..Default::default()
    };
    let mut publish = vec![0u8];
    pb::PublishRequest {
        stream: "orders".into(),
        events: vec![pb_event.clone(), pb_event],
        expected_offset: Some(3),
    }
    .encode(&mut publish)?;
    write(&dir, "publish.bin", &publish)?;
    let mut create = vec![1u8];
    pb::CreateStreamRequest {
        name: "orders".into(),
        partitions: Some(4),
        delivery: pb::DeliverySemantics::ExactlyOnce as i32,
        dedup_window_ms: Some(60_000),
        ..Default::default()
    }
    .encode(&mut create)?;
    write(&dir, "create-stream.bin", &create)?;
    let sub = pb::SubscriptionConfig {
        stream: "orders".into(),
        name: "workers".into(),
        mode: pb::SubscriptionMode::ConsumerGroup as i32,
        session_timeout_ms: Some(30_000),
        heartbeat_interval_ms: Some(3_000),
        ..Default::default()
    };
    let mut create_sub = vec![2u8];
    sub.encode(&mut create_sub)?;
    write(&dir, "create-subscription.bin", &create_sub)?;
    let mut open = vec![3u8];
    pb::OpenSubscription {
        stream: "orders".into(),
        subscription: "workers".into(),
        consumer: "c1".into(),
        create: Some(sub),
        ..Default::default()
    }
    .encode(&mut open)?;
    write(&dir, "open.bin", &open)?;
    let mut replay = vec![4u8];
    pb::ReplayRequest {
        stream: "orders".into(),
        batch_size: Some(10),
        event_types: vec!["order.created".into()],
        ..Default::default()
    }
    .encode(&mut replay)?;
    write(&dir, "replay.bin", &replay)?;
    let mut schema = vec![5u8];
    pb::RegisterSchemaRequest {
        event_type: "order.created".into(),
        version: 2,
        json_schema: r#"{"type":"object"}"#.into(),
        rules_json: r#"[{"op":"rename","from":"name","to":"customer"}]"#.into(),
    }
    .encode(&mut schema)?;
    write(&dir, "register-schema.bin", &schema)?;
    let mut settle = vec![8u8];
    pb::SettleRequest {
        session_id: "s1".into(),
        kind: Some(pb::settle_request::Kind::Ack(pb::Ack {
            positions: vec![pb::Position {
                partition: 0,
                offset: 4,
            }],
        })),
    }
    .encode(&mut settle)?;
    write(&dir, "settle-ack.bin", &settle)?;

    // SQL rows: the first byte chooses the decoder (see `tributary_fuzz::sql_row`).
    let dir = root.join("sql_row");
    let stored = Event {
        event_id: EventId::from_bytes([9; 16]),
        stream: orders.clone(),
        partition: 3,
        offset: 17,
        timestamp: UnixMillis(1_700_000_000_000),
        event_type: "order.created".into(),
        schema_version: 2,
        key: Some(bytes::Bytes::from_static(b"k1")),
        correlation_id: Some("c".into()),
        causation_id: None,
        headers: [("h".to_string(), "v".to_string())].into(),
        content_type: "application/json".into(),
        payload: bytes::Bytes::from_static(br#"{"a":1}"#),
    };
    let mut second = stored.clone();
    second.offset = 18;
    let batch = tributary_store_sql::batch(3, &[&stored, &second]).map_err(|e| e.0)?;
    let mut body = vec![0u8];
    body.extend_from_slice(&batch.body);
    write(&dir, "batch.bin", &body)?;
    let _ = Arc::new(stored);
    let mut row = vec![1u8];
    row.extend(postcard::to_stdvec(&(
        3i32,
        17i64,
        vec![9u8; 16],
        1_700_000_000_000i64,
        "order.created",
        2i32,
        Some(b"k1".to_vec()),
        Some("c"),
        None::<String>,
        Some(r#"{"h":"v"}"#),
        "application/json",
        br#"{"a":1}"#.to_vec(),
    ))?);
    write(&dir, "event-row.bin", &row)?;
    let mut schema_row = vec![4u8];
    schema_row.extend(postcard::to_stdvec(&(
        "order.created",
        2i64,
        Some(r#"{"type":"object"}"#),
        r#"[{"op":"rename","from":"name","to":"customer"}]"#,
        false,
    ))?);
    write(&dir, "schema-row.bin", &schema_row)?;
    let mut stream_config = vec![5u8];
    stream_config.extend(
        tributary_store_sql::to_json(&StreamSpec::default().into_config(orders))
            .map_err(|e| e.0)?
            .into_bytes(),
    );
    write(&dir, "stream-config.bin", &stream_config)?;
    Ok(())
}
