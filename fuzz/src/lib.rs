//! # tributary-fuzz
//!
//! The bodies of the fuzz targets, one per place where bytes from outside enter Tributary
//! (RELIABILITY.md lists them with their runs). Each takes any bytes, must not panic nor hang,
//! and checks that what is refused is refused with the typed error of that entry point, and
//! that what is accepted holds (round trips where the format has one).
//!
//! The AFL binaries in `src/bin/` call these (`cargo afl build --features afl`, see
//! `scripts/fuzz-smoke`); `tests/corpus.rs` runs them over the seed corpora in `corpus/` as an
//! ordinary test, so the seeds are checked on every `cargo test` without AFL.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use tributary_core::{
    Command, Config, Engine, Error, MonoNanos, Now, PartitionInfo, Reply, SchemaRegistration,
    StreamInfo, StreamSpec, SubscriptionConfig, UnixMillis,
};

/// A target's body: any bytes in, a panic when a check fails.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus folder and AFL binary (`fuzz-<name>`).
pub const TARGETS: &[(&str, Target)] = &[
    ("journal", journal),
    ("config", config),
    ("http", http),
    ("grpc", grpc),
    ("schema", schema),
    ("sql_row", sql_row),
];

/// With `TRIBUTARY_FUZZ_VERBOSE` set, the targets say what became of each input (to check
/// that the seeds reach what they were written for).
fn note(target: &str, what: impl std::fmt::Display) {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    if *VERBOSE.get_or_init(|| std::env::var_os("TRIBUTARY_FUZZ_VERBOSE").is_some()) {
        eprintln!("  {target}: {what}");
    }
}

fn now() -> Now {
    Now {
        mono: MonoNanos(1),
        wall: UnixMillis(1_700_000_000_000),
    }
}

// ---- journal --------------------------------------------------------------------------------

/// The journal decoder (`tributary-journal`): a journal of any bytes reads to its end or to a
/// typed `JournalError`; what it reads writes back to a journal that reads the same.
pub fn journal(data: &[u8]) {
    let (header, records) = match tributary_journal::read_all(data) {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            note("journal", format!("refused: {e}"));
            return;
        }
    };
    note("journal", format!("{} records", records.len()));
    let mut w = match tributary_journal::JournalWriter::new(Vec::new(), &header) {
        Ok(w) => w,
        Err(e) => panic!("a header that was read does not write: {e}"),
    };
    for (now, input) in &records {
        if let Err(e) = w.record(*now, input) {
            panic!("a record that was read does not write: {e}");
        }
    }
    let bytes = match w.finish() {
        Ok(b) => b,
        Err(e) => panic!("finishing a journal in memory: {e}"),
    };
    match tributary_journal::read_all(&bytes) {
        Ok((h, r)) => {
            // Compared through their debug form: `NaN`s in a configuration are not equal to
            // themselves, and the question is whether the same values come back.
            assert_eq!(format!("{h:?}"), format!("{header:?}"), "header round trip");
            assert_eq!(
                format!("{r:?}"),
                format!("{records:?}"),
                "records round trip"
            );
        }
        Err(e) => panic!("a journal written from what was read does not read: {e}"),
    }
}

// ---- configuration --------------------------------------------------------------------------

/// The TOML configuration (`tributary_server::config`): parsed, resolved without overrides,
/// then its schemas registered in an engine of its configuration, as `serve` does. Each step
/// refuses with its typed error.
pub fn config(data: &[u8]) {
    use tributary_server::config::{ConfigError, FileConfig, Overrides, Settings};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match FileConfig::parse(text, Path::new("fuzz.toml")) {
        Ok(f) => f,
        Err(e) => {
            assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
            note("config", format!("refused: {e}"));
            return;
        }
    };
    let settings = match Settings::resolve(file, Overrides::default()) {
        Ok(s) => s,
        Err(e) => {
            assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
            note("config", format!("refused: {e}"));
            return;
        }
    };
    for s in &settings.streams {
        s.validate(&settings.engine)
            .unwrap_or_else(|e| panic!("a resolved stream is invalid: {e}"));
    }
    for s in &settings.subscriptions {
        s.validate()
            .unwrap_or_else(|e| panic!("a resolved subscription is invalid: {e}"));
    }
    let Ok(mut engine) = Engine::new(settings.engine.clone(), 1, now()) else {
        return;
    };
    note(
        "config",
        format!(
            "resolved: {} streams, {} subscriptions",
            settings.streams.len(),
            settings.subscriptions.len()
        ),
    );
    for r in settings.schemas {
        if let Err(e) = engine.register_schema(r) {
            note("config", format!("schema refused: {e}"));
        }
    }
}

// ---- HTTP -----------------------------------------------------------------------------------

/// A stand-in for the engine behind the HTTP API: schemas are registered in a real engine (the
/// registry's checks), stream configurations are validated as the engine does, one stream
/// `orders` (one partition, 10 events) exists, and nothing else does.
struct FakeEngine {
    engine: Mutex<Option<Engine>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl FakeEngine {
    fn answer(&self, cmd: Command) -> Result<Reply, Error> {
        let config = Config::default();
        match cmd {
            Command::CreateStream(c) => {
                c.validate(&config)?;
                Ok(Reply::Done)
            }
            Command::DescribeStream(name) if name.as_str() == "orders" => {
                Ok(Reply::Stream(StreamInfo {
                    config: StreamSpec::default().into_config(name),
                    partitions: vec![PartitionInfo { first: 0, next: 10 }],
                    subscriptions: 0,
                    relay: None,
                }))
            }
            Command::DescribeStream(name) => Err(Error::StreamNotFound(name)),
            Command::DescribeSubscription {
                stream,
                subscription,
            } => Err(Error::SubscriptionNotFound {
                stream,
                subscription,
            }),
            Command::RegisterSchema(reg) => {
                let mut guard = self.engine.lock().unwrap_or_else(|p| p.into_inner());
                let engine = guard
                    .as_mut()
                    .ok_or(Error::Unavailable("no engine".into()))?;
                engine.register_schema(reg)?;
                Ok(Reply::Done)
            }
            Command::ListSchemas => {
                let guard = self.engine.lock().unwrap_or_else(|p| p.into_inner());
                let engine = guard
                    .as_ref()
                    .ok_or(Error::Unavailable("no engine".into()))?;
                Ok(Reply::Schemas(engine.schemas().describe()))
            }
            Command::Read { .. } => Ok(Reply::Events(Vec::new())),
            _ => Err(Error::Unavailable("fuzzing".into())),
        }
    }
}

impl tributary_http::EngineApi for FakeEngine {
    fn call(&self, cmd: Command) -> BoxFuture<Result<Reply, Error>> {
        let r = self.answer(cmd);
        Box::pin(async move { r })
    }
    fn ready(&self) -> BoxFuture<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

struct HttpRig {
    fake: Arc<FakeEngine>,
    router: axum::Router,
    runtime: tokio::runtime::Runtime,
}

fn http_rig() -> &'static HttpRig {
    static RIG: OnceLock<HttpRig> = OnceLock::new();
    RIG.get_or_init(|| {
        let fake = Arc::new(FakeEngine {
            engine: Mutex::new(None),
        });
        let router = tributary_http::router(
            fake.clone(),
            Arc::new(tributary_http::Metrics::new()),
            tributary_http::HttpConfig {
                tokens: Default::default(),
                health: Default::default(),
            },
        );
        let runtime = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(r) => r,
            Err(e) => panic!("a current-thread runtime: {e}"),
        };
        HttpRig {
            fake,
            router,
            runtime,
        }
    })
}

/// The requests of the HTTP target that carry outside input, chosen by a request's first
/// byte: the JSON bodies of the management API, and the query string of the dead letters.
pub const HTTP_REQUESTS: &[(&str, &str)] = &[
    ("POST", "/api/event-streams"),
    ("POST", "/api/schemas"),
    (
        "POST",
        "/api/event-streams/orders/subscriptions/s/reset-offset",
    ),
    (
        "POST",
        "/api/event-streams/orders/subscriptions/s/consumers/c/reset-offset",
    ),
    ("POST", "/api/event-streams/orders/dead-letters/replay"),
    ("GET", "/api/event-streams/orders/dead-letters?"),
    ("GET", "/api/schemas"),
];

/// The HTTP management API (`tributary-http`): requests separated by NUL bytes, each a byte
/// choosing one of [`HTTP_REQUESTS`] (`'0'` the first) and then its body (or query string), sent through the
/// real router (its JSON extractor and handlers) to a stand-in engine whose schema registry
/// is fresh for each input. No answer may be a 500, and every refusal is a JSON error body
/// with its stable name.
pub fn http(data: &[u8]) {
    let rig = http_rig();
    {
        let mut guard = rig.fake.engine.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Engine::new(Config::default(), 1, now()).ok();
    }
    for req in data.split(|b| *b == 0).take(16) {
        let Some((kind, rest)) = req.split_first() else {
            continue;
        };
        let (method, path) =
            HTTP_REQUESTS[usize::from(kind.wrapping_sub(b'0')) % HTTP_REQUESTS.len()];
        let request = if path.ends_with('?') {
            // Query strings as a client would send them: only what a URI may hold.
            let Ok(q) = std::str::from_utf8(rest) else {
                continue;
            };
            axum::http::Request::builder()
                .method(method)
                .uri(format!("{path}{q}"))
                .body(axum::body::Body::empty())
        } else {
            axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(rest.to_vec()))
        };
        let Ok(request) = request else {
            continue;
        };
        let (status, body) = rig.runtime.block_on(async {
            use tower::ServiceExt;
            let resp = match rig.router.clone().oneshot(request).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, body)
        });
        note(
            "http",
            format!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&body)
            ),
        );
        assert!(
            status != axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {path}: 500: {}",
            String::from_utf8_lossy(&body)
        );
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: {status} without a JSON error body ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            });
            assert!(
                v.get("error").is_some_and(serde_json::Value::is_string),
                "{method} {path}: {status}: no error name in {v}"
            );
        }
    }
}

// ---- gRPC -----------------------------------------------------------------------------------

/// The gRPC requests (`tributary-grpc`): the first byte chooses the request message, the rest
/// is its protobuf bytes, decoded and converted as the service does
/// (`tributary_grpc::fuzzing`). A refusal is a status the client can act on: never `INTERNAL`
/// nor `UNKNOWN`.
pub fn grpc(data: &[u8]) {
    let Some((kind, rest)) = data.split_first() else {
        return;
    };
    let r = tributary_grpc::fuzzing::decode_and_convert(*kind, rest);
    note("grpc", format!("{r:?}"));
    if let Err(s) = r {
        assert!(
            !matches!(s.code(), tonic::Code::Internal | tonic::Code::Unknown),
            "{:?}: {}",
            s.code(),
            s.message()
        );
    }
}

// ---- schemas and upcasting ------------------------------------------------------------------

/// One input of the schema target.
#[derive(serde::Deserialize)]
struct SchemaInput {
    /// Versions registered in order (errors expected and ignored).
    #[serde(default)]
    register: Vec<serde_json::Value>,
    /// Upcast this document of `event_type` from `from` to `to`.
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    from: u32,
    #[serde(default)]
    to: u32,
    #[serde(default)]
    doc: serde_json::Value,
}

/// Schema documents and upcasting rules (the core's registry): versions registered in an
/// engine as a client registers them (each a JSON `SchemaRegistration`; the engine's typed
/// refusals expected), then a document upcast between two versions. An accepted registration
/// is described back, and survives the binary form journals give it.
pub fn schema(data: &[u8]) {
    let Ok(input) = serde_json::from_slice::<SchemaInput>(data) else {
        return;
    };
    let Ok(mut engine) = Engine::new(Config::default(), 1, now()) else {
        return;
    };
    for v in input.register.into_iter().take(8) {
        let Ok(reg) = serde_json::from_value::<SchemaRegistration>(v) else {
            continue;
        };
        // The form journals and the simulator carry it in.
        let bin = match postcard::to_stdvec(&reg) {
            Ok(b) => b,
            Err(e) => panic!("a registration does not encode: {e}"),
        };
        match postcard::from_bytes::<SchemaRegistration>(&bin) {
            Ok(back) => assert_eq!(format!("{back:?}"), format!("{reg:?}")),
            Err(e) => panic!("a registration does not decode from its binary form: {e}"),
        }
        let (t, version) = (reg.event_type.clone(), reg.version);
        match engine.register_schema(reg) {
            Ok(()) => assert!(engine.schemas().latest(&t) >= version),
            Err(e) => note("schema", format!("refused: {e}")),
        }
        while engine.poll_output().is_some() {}
    }
    let _ = engine.schemas().describe();
    let r = engine
        .schemas()
        .upcast_value(&input.event_type, input.from, input.to, input.doc);
    note("schema", format!("upcast: {r:?}"));
}

// ---- SQL rows -------------------------------------------------------------------------------

/// An event row as a fuzz input carries it (postcard), for `decode_event`.
#[derive(serde::Deserialize)]
struct EventRowInput {
    partition: i32,
    offset: i64,
    event_id: Vec<u8>,
    ts: i64,
    event_type: String,
    schema_version: i32,
    key: Option<Vec<u8>>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    headers: Option<String>,
    content_type: String,
    payload: Vec<u8>,
}

/// A schema row as a fuzz input carries it (postcard), for `schema_record`.
#[derive(serde::Deserialize)]
struct SchemaRowInput {
    event_type: String,
    version: i64,
    schema: Option<String>,
    rules: String,
    function: bool,
}

/// What the SQL stores read back from their rows (`tributary-store-sql`'s pure decoders): the
/// first byte chooses a record batch body, an event row, a subscription row, a cursor row, a
/// schema row or a stream configuration; a damaged one is a `CodecError`. A batch that
/// decodes encodes again to the same events.
pub fn sql_row(data: &[u8]) {
    use tributary_store_sql as sql;
    let Some((kind, rest)) = data.split_first() else {
        return;
    };
    let stream = match tributary_core::StreamName::new("orders") {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let text = String::from_utf8_lossy(rest);
    match kind % 6 {
        0 => {
            let events = match sql::decode_batch(&stream, 3, rest) {
                Ok(e) => e,
                Err(e) => {
                    note("sql_row", format!("batch refused: {e}"));
                    return;
                }
            };
            note("sql_row", format!("batch of {} events", events.len()));
            if events.is_empty() {
                return;
            }
            let refs: Vec<&tributary_core::Event> = events.iter().map(|e| &**e).collect();
            let b = match sql::batch(3, &refs) {
                Ok(b) => b,
                Err(e) => panic!("decoded events do not encode: {e}"),
            };
            match sql::decode_batch(&stream, 3, &b.body) {
                Ok(again) => assert_eq!(again, events, "batch round trip"),
                Err(e) => panic!("a batch written from decoded events does not decode: {e}"),
            }
        }
        1 => {
            let Ok(r) = postcard::from_bytes::<EventRowInput>(rest) else {
                return;
            };
            let row = sql::EventRow {
                partition: r.partition,
                offset: r.offset,
                event_id: r.event_id,
                ts: r.ts,
                event_type: r.event_type,
                schema_version: r.schema_version,
                key: r.key,
                correlation_id: r.correlation_id,
                causation_id: r.causation_id,
                headers: r.headers,
                content_type: r.content_type,
                payload: r.payload,
            };
            note(
                "sql_row",
                format!("{:?}", sql::decode_event(&stream, row).map(|_| ())),
            );
        }
        2 => {
            let (config, offsets) = text.split_once('\n').unwrap_or((&text, "{}"));
            note(
                "sql_row",
                format!(
                    "{:?}",
                    sql::subscription_record(1, config, offsets).map(|_| ())
                ),
            );
        }
        3 => {
            let (consumer, acked) = text.split_once('\n').unwrap_or(("", &text));
            note(
                "sql_row",
                format!(
                    "{:?}",
                    sql::cursor_record(1, consumer, 0, 5, acked).map(|_| ())
                ),
            );
        }
        4 => {
            let Ok(r) = postcard::from_bytes::<SchemaRowInput>(rest) else {
                return;
            };
            let r = sql::schema_record(sql::SchemaRow {
                event_type: r.event_type,
                version: r.version,
                schema: r.schema,
                rules: r.rules,
                function: r.function,
            });
            note("sql_row", format!("{:?}", r.map(|_| ())));
        }
        _ => {
            let a = sql::from_json::<tributary_core::StreamConfig>("stream config", &text);
            let b = sql::from_json::<SubscriptionConfig>("subscription config", &text);
            note(
                "sql_row",
                format!("{:?} {:?}", a.map(|_| ()), b.map(|_| ())),
            );
            let _ = sql::from_json::<Vec<u64>>("start offsets", &text);
        }
    }
}
