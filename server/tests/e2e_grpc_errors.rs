//! gRPC error statuses over real sockets, as an outside client sees them: a refused batch of
//! `PublishStream` keeps its details, malformed protobuf and oversize messages are bad input
//! with details, and an unknown session of `Settle` has its `ErrorInfo`. The statuses are made
//! by the transport, not the store, so these run on SQLite only.

mod common;

use bytes::{Buf, BufMut, Bytes};
use common::*;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use tributary_grpc::pb;

/// Messages as raw bytes: what a client with a broken encoder would send.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

// On tokio and on the async-std server.
on_sqlite_both_runtimes!(
    a_refused_batch_of_publish_stream_is_an_in_band_error_with_its_details,
    malformed_protobuf_is_invalid_argument_with_details,
    a_message_over_the_limit_is_resource_exhausted_with_details,
    settle_on_an_unknown_session_is_not_found_with_error_info,
);

async fn raw_client(server: &Server) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(server.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    tonic::client::Grpc::new(channel)
}

fn method(name: &str) -> PathAndQuery {
    PathAndQuery::try_from(format!("/tributary.v1.EventStream/{name}")).expect("path")
}

/// A `PublishRequest` whose one event's payload (field 9) claims 9 bytes and has 1.
const TRUNCATED_PUBLISH: &[u8] = &[0x0a, 0x01, b's', 0x12, 0x03, 0x4a, 0x09, 0x01];

/// Checks an `INVALID_ARGUMENT` for malformed protobuf: `MALFORMED_MESSAGE` and a field.
fn assert_malformed(s: &tonic::Status, field: &str) {
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let info = s.get_details_error_info().expect("error info");
    assert_eq!(info.reason, "MALFORMED_MESSAGE");
    assert_eq!(info.domain, "tributary");
    let bad = s.get_details_bad_request().expect("bad request");
    assert_eq!(bad.field_violations.len(), 1, "{bad:?}");
    assert_eq!(bad.field_violations[0].field, field, "{bad:?}");
}

/// Checks a `RESOURCE_EXHAUSTED` for a message over the limit, with its size and the limit.
fn assert_too_large(s: &tonic::Status, size: usize) {
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    let info = s.get_details_error_info().expect("error info");
    assert_eq!(info.reason, "MESSAGE_TOO_LARGE");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("8388608")
    );
    assert_eq!(
        info.metadata.get("size").map(String::as_str),
        Some(size.to_string().as_str())
    );
    assert!(s.get_details_bad_request().is_some(), "{s:?}");
}

async fn length(c: &mut Client, stream: &str) -> u64 {
    c.get_stream(pb::GetStreamRequest {
        name: stream.into(),
    })
    .await
    .expect("get stream")
    .into_inner()
    .length
}

async fn a_refused_batch_of_publish_stream_is_an_in_band_error_with_its_details(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "pubstream");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 1).await;
    let batch = |events: Vec<pb::NewEvent>, expected_offset| pb::PublishRequest {
        stream: "s".into(),
        events,
        expected_offset,
    };
    let mut bad_id = json_event("t", "6");
    bad_id.event_id = "42".into();
    let r = within(
        "publish stream",
        c.publish_stream(tokio_stream::iter(vec![
            batch(vec![json_event("t", "1"), json_event("t", "2")], None),
            // Refused by the engine: a wrong expected offset.
            batch(vec![json_event("t", "3")], Some(7)),
            batch(vec![json_event("t", "4")], None),
            // Refused by the core as bad input, and by the transport (a malformed id).
            batch(vec![json_event(&"x".repeat(257), "5")], None),
            batch(vec![bad_id], None),
        ])),
    )
    .await
    .expect("the call goes on past refusals")
    .into_inner();
    use pb::publish_result::Kind;
    let kinds: Vec<Kind> = r.batches.into_iter().filter_map(|b| b.kind).collect();
    assert_eq!(kinds.len(), 5, "one result per batch, in order: {kinds:?}");
    assert!(matches!(&kinds[0], Kind::Published(p) if p.outcomes.len() == 2));
    assert!(matches!(&kinds[2], Kind::Published(p) if p.outcomes.len() == 1));
    assert_eq!(r.events, 3, "events appended over the published batches");
    let status = |k: &Kind| match k {
        Kind::Error(e) => tributary_grpc::status_of(e),
        other => panic!("expected an error, got {other:?}"),
    };
    let e = status(&kinds[1]);
    assert_eq!(e.code(), Code::FailedPrecondition);
    let info = e.get_details_error_info().expect("error info");
    assert_eq!(info.reason, "WRONG_EXPECTED_OFFSET");
    let meta = |k: &str| info.metadata.get(k).map(String::as_str);
    assert_eq!(meta("actual"), Some("2"));
    assert_eq!(meta("expected"), Some("7"));
    for (k, field) in [(&kinds[3], "event_type"), (&kinds[4], "event_id")] {
        let e = status(k);
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.get_details_error_info().is_some(), "{e:?}");
        let bad = e.get_details_bad_request().expect("bad request kept");
        assert_eq!(bad.field_violations[0].field, field);
    }
    // The published batches were appended, the refused ones were not.
    assert_eq!(length(&mut c, "s").await, 3);
}

async fn malformed_protobuf_is_invalid_argument_with_details(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "malformed");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 1).await;
    let mut raw = raw_client(&server).await;

    // Unary.
    raw.ready().await.expect("ready");
    let e = within(
        "publish",
        raw.unary(
            tonic::Request::new(Bytes::from_static(TRUNCATED_PUBLISH)),
            method("Publish"),
            RawCodec,
        ),
    )
    .await
    .expect_err("malformed publish");
    assert_malformed(&e, "events.payload");

    // A wire type that does not fit the field: `name` (1, a string) sent as a varint.
    raw.ready().await.expect("ready");
    let e = within(
        "create stream",
        raw.unary(
            tonic::Request::new(Bytes::from_static(&[0x08, 0x01])),
            method("CreateStream"),
            RawCodec,
        ),
    )
    .await
    .expect_err("malformed create");
    assert_malformed(&e, "name");

    // Server streaming: the request is refused before any stream.
    raw.ready().await.expect("ready");
    let e = within(
        "replay",
        raw.server_streaming(
            tonic::Request::new(Bytes::from_static(&[0x0a, 0xff])),
            method("Replay"),
            RawCodec,
        ),
    )
    .await
    .expect_err("malformed replay");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.get_details_error_info().is_some(), "{e:?}");
    assert!(e.get_details_bad_request().is_some(), "{e:?}");

    // Client streaming: a good batch, then a malformed one.
    let good = {
        use prost::Message;
        pb::PublishRequest {
            stream: "s".into(),
            events: vec![json_event("t", "1")],
            expected_offset: None,
        }
        .encode_to_vec()
    };
    raw.ready().await.expect("ready");
    let e = within(
        "publish stream",
        raw.client_streaming(
            tonic::Request::new(tokio_stream::iter(vec![
                Bytes::from(good),
                Bytes::from_static(TRUNCATED_PUBLISH),
            ])),
            method("PublishStream"),
            RawCodec,
        ),
    )
    .await
    .expect_err("malformed second batch");
    assert_malformed(&e, "events.payload");
    let info = e.get_details_error_info().expect("error info");
    assert_eq!(
        info.metadata.get("appended_before").map(String::as_str),
        Some("1")
    );
    // Only the good batch was appended; the server goes on serving.
    assert_eq!(length(&mut c, "s").await, 1);
}

async fn a_message_over_the_limit_is_resource_exhausted_with_details(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "oversize");
    let mut c = server.client().await;
    create_stream(&mut c, "s", 1).await;
    let big = |n: usize| pb::PublishRequest {
        stream: "s".into(),
        events: vec![pb::NewEvent {
            event_type: "t".into(),
            payload: vec![b'x'; n].into(),
            ..Default::default()
        }],
        expected_offset: None,
    };
    let size = {
        use prost::Message;
        big(9 << 20).encoded_len()
    };
    let e = within("publish", c.publish(big(9 << 20)))
        .await
        .expect_err("too large");
    assert_too_large(&e, size);

    // In a stream: the batch before it is appended, and counted.
    let e = within(
        "publish stream",
        c.publish_stream(tokio_stream::iter(vec![big(10), big(9 << 20)])),
    )
    .await
    .expect_err("too large in a stream");
    assert_too_large(&e, size);
    let info = e.get_details_error_info().expect("error info");
    assert_eq!(
        info.metadata.get("appended_before").map(String::as_str),
        Some("1")
    );
    assert_eq!(length(&mut c, "s").await, 1);

    // Just under the limit reaches the service (and its own bound on a batch's payload).
    let e = within("publish", c.publish(big((8 << 20) - 64)))
        .await
        .expect_err("over the batch's payload bound");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_ne!(
        e.get_details_error_info().map(|i| i.reason),
        Some("MESSAGE_TOO_LARGE".to_string())
    );
}

async fn settle_on_an_unknown_session_is_not_found_with_error_info(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "settle404");
    let mut c = server.client().await;
    let e = within(
        "settle",
        c.settle(pb::SettleRequest {
            session_id: "no-such-session".into(),
            kind: Some(pb::settle_request::Kind::Credit(pb::Credit { events: 1 })),
        }),
    )
    .await
    .expect_err("unknown session");
    assert_eq!(e.code(), Code::NotFound);
    let info = e.get_details_error_info().expect("error info");
    assert_eq!(info.reason, "SESSION_NOT_FOUND");
    assert_eq!(info.domain, "tributary");
    assert_eq!(
        info.metadata.get("session_id").map(String::as_str),
        Some("no-such-session")
    );
}

/// The async-std server keeps the tokio server's token rule: a write needs the write token
/// (the read token is `PERMISSION_DENIED`), a read needs either, none is `UNAUTHENTICATED`;
/// a refused call changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_std_server_checks_tokens() {
    const WRITE: &str = "write-token-0123456789";
    const READ: &str = "read-token-0123456789";
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(Backend::Sqlite.on_async_std(), dir.path(), "tokens");
    let server = Server::start_with(
        Runtime::AsyncStd,
        dir.path(),
        &store,
        &["--auth-token", WRITE, "--read-token", READ],
        "info",
    );
    let mut c = server.client().await;
    let with = authed::<pb::CreateStreamRequest>;
    let create = || pb::CreateStreamRequest {
        name: "guarded".into(),
        ..Default::default()
    };
    let e = c
        .create_stream(with(None, create()))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .create_stream(with(Some(READ), create()))
        .await
        .expect_err("read token");
    assert_eq!(e.code(), Code::PermissionDenied);
    let list = |token| authed(token, ());
    let e = c.list_streams(list(None)).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let streams = c.list_streams(list(Some(READ))).await.expect("read token");
    assert!(streams.get_ref().streams.is_empty(), "nothing was created");
    c.create_stream(with(Some(WRITE), create()))
        .await
        .expect("write token");
    let streams = c
        .list_streams(list(Some(WRITE)))
        .await
        .expect("write token");
    assert_eq!(streams.get_ref().streams.len(), 1);
}

/// `req` with `authorization: Bearer <token>` when there is a token.
fn authed<T>(token: Option<&str>, req: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(req);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    r
}
