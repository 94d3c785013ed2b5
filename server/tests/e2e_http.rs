//! The HTTP transport end to end over real sockets: a `tributary serve` process per test, the
//! management API, its errors, tokens (HTTP and gRPC, with the real tonic client), TLS,
//! health as lag grows and drains, metrics after a known workload, and the OpenAPI document.

mod common;

use common::*;
use pb::subscribe_request::Kind as In;
use pb::subscribe_response::Kind as Out;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tonic::Code;
use tributary_grpc::pb;

on_both_stores!(
    streams_subscriptions_consumers_and_resets,
    shared_positions_reset_with_every_consumer_down,
    a_consumer_gone_for_good_is_removed_and_health_recovers,
    dead_letters_are_listed_and_replayed_into_their_stream,
    health_follows_lag_and_stalls,
    metrics_count_a_known_workload,
);

/// A small JSON client for one server.
struct Http {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Http {
    fn new(server: &Server) -> Http {
        Http {
            base: server.http.clone(),
            client: reqwest::Client::new(),
            token: None,
        }
    }

    fn with_token(&self, token: Option<&str>) -> Http {
        Http {
            base: self.base.clone(),
            client: self.client.clone(),
            token: token.map(str::to_string),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&str>) -> (u16, String) {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        let resp = within("http request", r.send()).await.expect("http");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        let (status, text) = self.send(method, path, text.as_deref()).await;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
        };
        (status, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.json(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.json(Method::POST, path, Some(body)).await
    }
}

/// Asserts an error answer: its status and its `error` name.
fn is_error(got: &(u16, Value), status: u16, error: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"], error, "{}", got.1);
    assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

async fn streams_subscriptions_consumers_and_resets(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "http_api");
    let http = Http::new(&server);
    let mut c = server.client().await;

    // Create, and the errors of creating.
    let (status, s) = http
        .post(
            "/api/event-streams",
            json!({"name": "orders", "partitions": 1}),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["name"], "orders");
    assert_eq!(s["kind"], "persistent");
    assert_eq!(
        (s["length"].as_u64(), s["last_offset"].is_null()),
        (Some(0), true)
    );
    is_error(
        &http
            .post("/api/event-streams", json!({"name": "orders"}))
            .await,
        409,
        "STREAM_EXISTS",
    );
    let bad_name = http
        .post("/api/event-streams", json!({"name": "Bad Name"}))
        .await;
    is_error(&bad_name, 400, "INVALID_INPUT");
    assert_eq!(bad_name.1["field"], "name");
    // Exactly-once without a producer dedup window contradicts itself (SPEC 5).
    let no_dedup = http
        .post(
            "/api/event-streams",
            json!({"name": "payments", "delivery": "exactly_once", "dedup_window_ms": 0}),
        )
        .await;
    is_error(&no_dedup, 400, "INVALID_INPUT");
    assert_eq!(no_dedup.1["field"], "dedup_window", "{}", no_dedup.1);
    let (status, _) = http.get("/api/event-streams/payments").await;
    assert_eq!(status, 404, "a refused stream is not created");
    let (status, text) = http
        .send(Method::POST, "/api/event-streams", Some("{\"name\": "))
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("MALFORMED_JSON"), "{text}");
    is_error(
        &http
            .post("/api/event-streams", json!({"name": "x", "partitionz": 2}))
            .await,
        400,
        "MALFORMED_JSON",
    );
    let (_, eph) = http
        .post(
            "/api/event-streams",
            json!({"name": "presence", "ephemeral": {"max_events": 10, "max_bytes": 1000}}),
        )
        .await;
    assert_eq!(
        (eph["kind"].as_str(), eph["durable"].as_bool()),
        (Some("ephemeral"), Some(false))
    );

    // Length, first and last offset after publishing.
    let events = (0..5)
        .map(|i| json_event("entry", &format!("{i}")))
        .collect();
    publish(&mut c, "orders", events).await;
    let (status, s) = http.get("/api/event-streams/orders").await;
    assert_eq!(status, 200);
    assert_eq!(s["length"], 5);
    assert_eq!(
        (s["first_offset"].as_u64(), s["last_offset"].as_u64()),
        (Some(0), Some(4))
    );
    let (_, list) = http.get("/api/event-streams").await;
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, vec!["orders", "presence"]);
    is_error(
        &http.get("/api/event-streams/nope").await,
        404,
        "STREAM_NOT_FOUND",
    );

    // A broadcast consumer reads and acknowledges everything.
    let mut o = open("orders", "audit", "c1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Broadcast as i32,
        ..Default::default()
    });
    let mut session = Session::open(&mut c, o.clone()).await;
    let got = session.events(5).await;
    let (_, before) = http
        .get("/api/event-streams/orders/subscriptions/audit/consumers/c1")
        .await;
    assert_eq!(
        (before["offset"].as_u64(), before["lag"].as_u64()),
        (Some(0), Some(5))
    );
    assert!(before["last_updated"].is_null());
    assert_eq!(session.ack(&got).await.applied.len(), 5);
    let (status, consumer) = http
        .get("/api/event-streams/orders/subscriptions/audit/consumers/c1")
        .await;
    assert_eq!(status, 200, "{consumer}");
    assert_eq!(consumer["offset"], 5);
    assert_eq!(consumer["lag"], 0);
    assert_eq!(consumer["is_stalled"], false);
    assert!(consumer["last_updated"].as_u64().is_some(), "{consumer}");
    let (_, subs) = http.get("/api/event-streams/orders/subscriptions").await;
    assert_eq!(subs[0]["name"], "audit");
    assert_eq!(subs[0]["mode"], "broadcast");
    assert_eq!(subs[0]["attached"], json!(["c1"]));
    let (status, one) = http
        .get("/api/event-streams/orders/subscriptions/audit")
        .await;
    assert_eq!(
        (status, one["name"].as_str()),
        (200, Some("audit")),
        "{one}"
    );
    assert_eq!(one["cursors"][0]["consumer"], "c1");
    assert_eq!(one["cursors"][0]["committed"], json!([5]));
    is_error(
        &http
            .get("/api/event-streams/orders/subscriptions/nope")
            .await,
        404,
        "SUBSCRIPTION_NOT_FOUND",
    );
    is_error(
        &http.get("/api/event-streams/nope/subscriptions").await,
        404,
        "STREAM_NOT_FOUND",
    );
    let (_, s) = http.get("/api/event-streams/orders").await;
    assert_eq!(s["subscription_count"], 1);

    // Bad resets change nothing.
    let reset = "/api/event-streams/orders/subscriptions/audit/consumers/c1/reset-offset";
    let past = http.post(reset, json!({"offset": 6})).await;
    is_error(&past, 400, "OFFSET_OUT_OF_RANGE");
    assert_eq!(past.1["field"], "offset");
    is_error(&http.post(reset, json!({})).await, 400, "INVALID_INPUT");
    is_error(
        &http.post(reset, json!({"offset": 1, "timestamp": 1})).await,
        400,
        "INVALID_INPUT",
    );
    is_error(
        &http.post(reset, json!({"offset": "one"})).await,
        400,
        "MALFORMED_JSON",
    );
    is_error(
        &http
            .post(
                "/api/event-streams/orders/subscriptions/audit/consumers/ghost/reset-offset",
                json!({"offset": 1}),
            )
            .await,
        404,
        "CONSUMER_NOT_FOUND",
    );
    is_error(
        &http
            .post(
                "/api/event-streams/orders/subscriptions/nope/consumers/c1/reset-offset",
                json!({"offset": 1}),
            )
            .await,
        404,
        "SUBSCRIPTION_NOT_FOUND",
    );
    is_error(
        &http
            .post(
                "/api/event-streams/nope/subscriptions/audit/consumers/c1/reset-offset",
                json!({"offset": 1}),
            )
            .await,
        404,
        "SUBSCRIPTION_NOT_FOUND",
    );
    is_error(
        &http
            .get("/api/event-streams/orders/subscriptions/audit/consumers/ghost")
            .await,
        404,
        "CONSUMER_NOT_FOUND",
    );
    let (_, after) = http
        .get("/api/event-streams/orders/subscriptions/audit/consumers/c1")
        .await;
    assert_eq!(
        (after["offset"].as_u64(), after["lag"].as_u64()),
        (Some(5), Some(0))
    );

    // A reset takes effect at the next delivery: the attached consumer gets 2, 3, 4 again.
    let (status, moved) = http.post(reset, json!({"offset": 2})).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        (moved["offset"].as_u64(), moved["lag"].as_u64()),
        (Some(2), Some(3))
    );
    let again = session.events(3).await;
    assert_eq!(offsets(&again), vec![2, 3, 4]);
    session.ack(&again).await;
    // By time: everything at or after the first event's timestamp is everything.
    let (_, e0) = http.get("/api/event-streams/orders").await;
    assert_eq!(e0["length"], 5);
    let first_ts = {
        let r = c
            .read(pb::ReadRequest {
                stream: "orders".into(),
                partition: 0,
                from: 0,
                max: Some(1),
            })
            .await
            .expect("read")
            .into_inner();
        r.events[0].timestamp
    };
    let (status, moved) = http.post(reset, json!({"timestamp": first_ts})).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["offset"], 0);
    assert_eq!(offsets(&session.events(5).await), vec![0, 1, 2, 3, 4]);
    drop(session);

    // Delete: 204, then gone; deleting again is 404.
    let (status, _) = http
        .json(Method::DELETE, "/api/event-streams/presence", None)
        .await;
    assert_eq!(status, 204);
    is_error(
        &http.get("/api/event-streams/presence").await,
        404,
        "STREAM_NOT_FOUND",
    );
    is_error(
        &http
            .json(Method::DELETE, "/api/event-streams/presence", None)
            .await,
        404,
        "STREAM_NOT_FOUND",
    );
    // Unknown routes answer JSON too.
    is_error(&http.get("/api/nothing-here").await, 404, "NOT_FOUND");
}

async fn dead_letters_are_listed_and_replayed_into_their_stream(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "http_dlq");
    let http = Http::new(&server);
    let mut c = server.client().await;
    create_stream(&mut c, "pay", 1).await;
    let (_, page) = http.get("/api/event-streams/pay/dead-letters").await;
    assert_eq!(page["dead_letters"], json!([]), "none yet: {page}");
    let mut o = open("pay", "billing", "c1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o).await;
    let mut e = json_event("charge", r#"{"eur":5}"#);
    e.correlation_id = Some("corr-7".into());
    publish(&mut c, "pay", vec![e, json_event("charge", r#"{"eur":6}"#)]).await;
    let got = s.events(2).await;
    let id = s
        .send(In::Term(pb::Term {
            positions: positions(&got[..1]),
            reason: "card declined".into(),
        }))
        .await;
    assert!(matches!(s.answer(id).await.0, Out::Settled(_)));
    s.ack(&got[1..]).await;

    // Listed once the dead letter's append has committed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let (status, page) = http.get("/api/event-streams/pay/dead-letters").await;
        assert_eq!(status, 200, "{page}");
        if page["dead_letters"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
        {
            break page;
        }
        assert!(Instant::now() < deadline, "no dead letter: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(page["dead_letter_stream"], "pay.dlq");
    let dl = &page["dead_letters"][0];
    assert_eq!(dl["offset"], 0);
    assert_eq!(dl["original_offset"], 0);
    assert_eq!(dl["last_error"], "card declined");
    assert_eq!(dl["subscription"], "billing");
    assert_eq!(dl["correlation_id"], "corr-7");
    assert_eq!(dl["data"], json!({"eur": 5}));
    is_error(
        &http.get("/api/event-streams/nope/dead-letters").await,
        404,
        "STREAM_NOT_FOUND",
    );
    is_error(
        &http
            .get("/api/event-streams/pay/dead-letters?limit=0")
            .await,
        400,
        "INVALID_INPUT",
    );
    is_error(
        &http
            .post(
                "/api/event-streams/pay/dead-letters/replay",
                json!({"offsets": [9]}),
            )
            .await,
        404,
        "DEAD_LETTER_NOT_FOUND",
    );
    let (_, unchanged) = http.get("/api/event-streams/pay").await;
    assert_eq!(unchanged["length"], 2, "a refused replay wrote nothing");

    // Replayed: back in the stream at the next offset, and delivered again.
    let (status, r) = http
        .post(
            "/api/event-streams/pay/dead-letters/replay",
            json!({"offsets": [0]}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["replayed"][0]["offset"], 2);
    assert_eq!(r["replayed"][0]["duplicate"], false);
    let back = s.events(1).await;
    let ev = back[0].event.as_ref().expect("event");
    assert_eq!(ev.offset, 2);
    assert_eq!(ev.payload.as_ref(), br#"{"eur":5}"#);
    assert_eq!(ev.correlation_id.as_deref(), Some("corr-7"));
    assert_eq!(
        ev.headers.get("x-replayed-from").map(String::as_str),
        Some("pay.dlq/0/0")
    );
    assert!(!ev.headers.contains_key("x-last-error"));
    // The same dead letter again: a duplicate, nothing written.
    let (_, r) = http
        .post("/api/event-streams/pay/dead-letters/replay", json!({}))
        .await;
    assert_eq!(r["replayed"][0]["duplicate"], true, "{r}");
    let (_, s2) = http.get("/api/event-streams/pay").await;
    assert_eq!(s2["length"], 3);
}

/// Polls `/health` until `f` holds for it, within 30 s.
async fn health_until(http: &Http, what: &str, f: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, h) = http.get("/health").await;
        if f(status, &h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last /health {status} {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health_follows_lag_and_stalls(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(b, dir.path(), "http_health");
    let server = Server::start_on(
        dir.path(),
        &store,
        &[
            "--health-lag-degraded",
            "3",
            "--health-lag-unhealthy",
            "6",
            "--health-stall-degraded",
            "1s",
            "--health-stall-unhealthy",
            "2s",
        ],
    );
    let http = Http::new(&server);
    assert_eq!(http.get("/health/live").await.0, 200);
    let (status, ready) = http.get("/health/ready").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let mut c = server.client().await;
    create_stream(&mut c, "jobs", 1).await;
    let mut o = open("jobs", "workers", "w1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Broadcast as i32,
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o).await;
    let (status, h) = http.get("/health").await;
    assert_eq!(
        (status, h["status"].as_str()),
        (200, Some("healthy")),
        "{h}"
    );

    let status_of =
        |h: &Value| h["streams"][0]["subscriptions"][0]["consumers"][0]["status"].clone();
    // Lag 4 (> 3): degraded at once, by lag.
    let batch = |n: usize| (0..n).map(|i| json_event("job", &format!("{i}"))).collect();
    publish(&mut c, "jobs", batch(4)).await;
    let first = s.events(4).await;
    let h = health_until(&http, "degraded by lag", |_, h| status_of(h) == "degraded").await;
    let consumer = &h["streams"][0]["subscriptions"][0]["consumers"][0];
    assert_eq!(consumer["consumer"], "w1");
    assert_eq!(consumer["lag"], 4);
    assert!(
        consumer["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("lag 4"),
        "{h}"
    );
    // Lag 7 (> 6): unhealthy, 503.
    publish(&mut c, "jobs", batch(3)).await;
    let more = s.events(3).await;
    let h = health_until(&http, "unhealthy by lag", |st, h| {
        st == 503 && h["status"] == "unhealthy"
    })
    .await;
    assert_eq!(
        h["streams"][0]["subscriptions"][0]["consumers"][0]["lag"],
        7
    );
    // Drained: healthy again.
    s.ack(&first).await;
    s.ack(&more).await;
    health_until(&http, "healthy after draining", |st, h| {
        st == 200 && h["status"] == "healthy"
    })
    .await;

    // One event not acknowledged: lag 1 is fine by lag, but without progress it goes degraded
    // after 1 s and unhealthy after 2 s, then healthy once acknowledged.
    publish(&mut c, "jobs", batch(1)).await;
    let stuck = s.events(1).await;
    let t0 = Instant::now();
    let h = health_until(&http, "degraded by stall", |_, h| {
        status_of(h) == "degraded"
    })
    .await;
    assert!(t0.elapsed() >= Duration::from_millis(900), "too early: {h}");
    let stalled = &h["streams"][0]["subscriptions"][0]["consumers"][0];
    assert!(
        stalled["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("no progress"),
        "{h}"
    );
    let (_, consumer) = http
        .get("/api/event-streams/jobs/subscriptions/workers/consumers/w1")
        .await;
    assert_eq!(consumer["is_stalled"], true, "{consumer}");
    health_until(&http, "unhealthy by stall", |st, _| st == 503).await;
    s.ack(&stuck).await;
    let h = health_until(&http, "healthy after the ack", |st, h| {
        st == 200 && h["status"] == "healthy"
    })
    .await;
    assert_eq!(
        h["streams"][0]["subscriptions"][0]["consumers"][0]["lag"],
        0
    );
}

/// The value of a metric line with these labels (summed over lines that have them all).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let (head, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            let n = head.split('{').next().unwrap_or("");
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| head.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn metrics_count_a_known_workload(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "http_metrics");
    let http = Http::new(&server);
    let mut c = server.client().await;
    create_stream(&mut c, "m", 1).await;
    let mut o = open("m", "proc", "c1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o).await;
    // 5 of type a (one with an id, published twice: the duplicate is not counted), 2 of b.
    let mut dup = json_event("a", "{}");
    dup.event_id = "6f1c1f0e-8a57-4c47-9a45-0c6d7a1f5d09".into();
    let mut batch: Vec<pb::NewEvent> = (0..4).map(|_| json_event("a", "{}")).collect();
    batch.push(dup.clone());
    batch.push(json_event("b", "{}"));
    batch.push(json_event("b", "{}"));
    publish(&mut c, "m", batch).await;
    assert!(publish(&mut c, "m", vec![dup]).await[0].duplicate);
    let got = s.events(7).await;
    // Nack the first (redelivered: a retry and an error), term the second (a dead letter).
    let id = s
        .send(In::Nack(pb::Nack {
            positions: positions(&got[..1]),
            delay_ms: Some(0),
            error: "later".into(),
        }))
        .await;
    let (_, mut early) = s.answer(id).await;
    if early.is_empty() {
        early = s.events(1).await;
    }
    assert_eq!(early[0].attempt, 2);
    let id = s
        .send(In::Term(pb::Term {
            positions: positions(&got[1..2]),
            reason: "poison".into(),
        }))
        .await;
    s.answer(id).await;
    s.ack(&got[2..]).await;
    s.ack(&early).await;

    // The dead letter is counted once its append to m.dlq has committed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = http.send(Method::GET, "/metrics", None).await;
        assert_eq!(status, 200);
        if metric(&text, "tributary_stream_length", &[("stream", "m.dlq")]) == 1.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "no dead letter: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let m = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels);
    assert_eq!(
        m(
            "tributary_events_published_total",
            &[("stream", "m"), ("event_type", "a")]
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        m(
            "tributary_events_published_total",
            &[("stream", "m"), ("event_type", "b")]
        ),
        2.0
    );
    // The dead letter was appended to m.dlq: published there too.
    assert_eq!(
        m("tributary_events_published_total", &[("stream", "m.dlq")]),
        0.0,
        "the engine's own dead-letter append is not a publish"
    );
    let sub = [
        ("stream", "m"),
        ("subscription", "proc"),
        ("consumer", "c1"),
    ];
    assert_eq!(m("tributary_events_consumed_total", &sub), 7.0);
    assert_eq!(m("tributary_event_retries_total", &sub), 1.0);
    assert_eq!(
        m(
            "tributary_event_errors_total",
            &[("stream", "m"), ("reason", "nack")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "tributary_event_errors_total",
            &[("stream", "m"), ("reason", "dead_letter")]
        ),
        1.0
    );
    // Six acknowledged deliveries were timed (5 first deliveries and the redelivery).
    assert_eq!(
        m(
            "tributary_event_processing_latency_seconds_count",
            &[("stream", "m"), ("subscription", "proc")]
        ),
        6.0
    );
    assert!(text.contains("tributary_event_processing_latency_seconds_bucket{stream=\"m\",subscription=\"proc\",le=\"0.001\"}"), "{text}");
    assert_eq!(m("tributary_stream_length", &[("stream", "m")]), 7.0);
    assert_eq!(m("tributary_stream_length", &[("stream", "m.dlq")]), 1.0);
    assert_eq!(
        m(
            "tributary_consumer_lag",
            &[("stream", "m"), ("subscription", "proc")]
        ),
        0.0
    );
    assert_eq!(
        m(
            "tributary_active_consumers",
            &[("stream", "m"), ("subscription", "proc")]
        ),
        1.0
    );
    // A refused publish is an error of the stream's.
    let refused = c
        .publish(pb::PublishRequest {
            stream: "m".into(),
            events: vec![json_event("", "{}")],
            expected_offset: None,
        })
        .await
        .expect_err("empty type");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let (_, text) = http.send(Method::GET, "/metrics", None).await;
    assert_eq!(
        metric(
            &text,
            "tributary_event_errors_total",
            &[("stream", "m"), ("reason", "publish_refused")]
        ),
        1.0,
        "{text}"
    );
    drop(s);
}

/// A GET of `path` with exactly these request headers (reqwest adds `Accept: */*` when none
/// is given; a scraper may send none): (status, headers, body).
async fn raw_get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    within("response", s.read_to_end(&mut out))
        .await
        .expect("read");
    let text = String::from_utf8(out).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    // The body is small and sent whole: no chunked framing expected.
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// What Prometheus itself sends when it scrapes (2.x and 3.x).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const TEXT_004: &str = "content-type: text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str =
    "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_format_follows_accept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Backend::Sqlite, dir.path(), "http_accept");
    let mut c = server.client().await;
    create_stream(&mut c, "m", 1).await;
    publish(&mut c, "m", vec![json_event("a", "{}")]).await;
    let text_format = |body: &str| {
        // The text format 0.0.4: a counter's HELP and TYPE name its samples (with `_total`),
        // no UNIT, no EOF.
        assert!(
            body.contains("# HELP tributary_events_published_total ")
                && body.contains("# TYPE tributary_events_published_total counter\n")
                && !body.contains("# EOF")
                && !body.contains("# UNIT"),
            "{body}"
        );
        openmetrics_parser::prometheus::parse_prometheus(body)
            .unwrap_or_else(|e| panic!("not the text format ({e:?}): {body}"));
    };
    let openmetrics = |body: &str| {
        assert!(
            body.contains("# TYPE tributary_events_published counter\n")
                && body.ends_with("# EOF\n"),
            "{body}"
        );
        openmetrics_parser::openmetrics::parse_openmetrics(body)
            .unwrap_or_else(|e| panic!("not OpenMetrics ({e:?}): {body}"));
    };
    let cases: [(&[(&str, &str)], bool); 7] = [
        (&[], false),
        (&[("Accept", "text/plain;version=0.0.4")], false),
        (&[("Accept", "*/*")], false),
        (&[("Accept", "application/json")], false),
        (&[("Accept", "application/openmetrics-text")], true),
        (&[("Accept", PROMETHEUS_ACCEPT)], true),
        (
            &[(
                "Accept",
                "application/openmetrics-text;q=0.2, text/plain;version=0.0.4;q=0.9",
            )],
            false,
        ),
    ];
    for (headers, wants_openmetrics) in cases {
        let (status, head, body) = raw_get(&server.http, "/metrics", headers).await;
        assert_eq!(status, 200, "{headers:?}: {head}");
        assert!(head.contains("vary: accept"), "{headers:?}: {head}");
        if wants_openmetrics {
            assert!(head.contains(OPENMETRICS), "{headers:?}: {head}");
            openmetrics(&body);
        } else {
            assert!(head.contains(TEXT_004), "{headers:?}: {head}");
            text_format(&body);
        }
    }
    // The OpenAPI document says what /metrics serves.
    let (_, doc) = Http::new(&server).get("/openapi.json").await;
    let content = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    for ct in [
        "text/plain; version=0.0.4; charset=utf-8",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    ] {
        assert!(content.get(ct).is_some(), "{ct}: {content}");
    }
}

/// An event type holding `"`, `\\` and a newline, and a consumer id holding `"` and `\\`
/// (free text within their limits): both formats of `/metrics` still parse, with a
/// grammar-based parser here and, through `scripts/check-metrics`, with promtool and Python's
/// `prometheus_client` parsers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_with_hostile_names_parse() {
    const TYPE: &str = "odd\"type\\with\nnewline},x=\"y";
    const CONSUMER: &str = "c\"o\\n},s=\"u";
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Backend::Sqlite, dir.path(), "http_hostile");
    let mut c = server.client().await;
    create_stream(&mut c, "m", 1).await;
    let mut o = open("m", "proc", CONSUMER);
    o.create = Some(pb::SubscriptionConfig::default());
    let mut s = Session::open(&mut c, o).await;
    publish(&mut c, "m", vec![json_event(TYPE, "{}")]).await;
    let got = s.events(1).await;
    assert_eq!(
        got[0].event.as_ref().map(|e| e.event_type.as_str()),
        Some(TYPE)
    );
    s.ack(&got).await;
    let series = |labels: &[(String, String)]| {
        labels.contains(&("event_type".to_string(), TYPE.to_string()))
            && labels.contains(&("consumer".to_string(), CONSUMER.to_string()))
    };
    let (_, _, text) = raw_get(&server.http, "/metrics", &[("Accept", "text/plain")]).await;
    let parsed = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("the text format does not parse ({e:?}):\n{text}"));
    let family = &parsed.families["tributary_events_consumed_total"];
    assert!(
        family.iter_samples().any(|s| series(&sample_labels(s))),
        "{text}"
    );
    let (_, _, om) = raw_get(&server.http, "/metrics", &[("Accept", PROMETHEUS_ACCEPT)]).await;
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&om)
        .unwrap_or_else(|e| panic!("OpenMetrics does not parse ({e:?}):\n{om}"));
    let family = &parsed.families["tributary_events_consumed"];
    assert!(
        family.iter_samples().any(|s| series(&sample_labels(s))),
        "{om}"
    );
    outside_parsers(&server.http, &[TYPE, CONSUMER]);
    drop(s);
}

/// The label names and values of a parsed sample.
fn sample_labels<V: Clone + openmetrics_parser::RenderableMetricValue>(
    s: &openmetrics_parser::Sample<V>,
) -> Vec<(String, String)> {
    s.get_labelset()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Runs `scripts/check-metrics` (promtool and Python's `prometheus_client` on both formats,
/// and each of `values` found as a label value). Without those tools the check is skipped,
/// unless `TRIBUTARY_REQUIRE_METRICS_TOOLS` is set (CI installs them and sets it).
fn outside_parsers(base: &str, values: &[&str]) {
    let args: Vec<&str> = std::iter::once(base)
        .chain(values.iter().copied())
        .collect();
    outside_check(
        "check-metrics",
        &args,
        &[],
        "TRIBUTARY_REQUIRE_METRICS_TOOLS",
    );
}

/// The HTTP API holds to its own OpenAPI document under schemathesis (a fuzzer no one here
/// wrote, through `scripts/check-openapi`): no 5xx, every answer as documented, every
/// schema-valid request taken and every schema-violating one refused; on a server without
/// tokens, and on one with both tokens, called with each token and with none. Without the
/// tool the check is skipped, unless `TRIBUTARY_REQUIRE_API_TOOLS` is set (CI installs it and
/// sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_holds_to_its_openapi_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = Server::start(Backend::Sqlite, dir.path(), "openapi_open");
    if !schemathesis(&open.http, None, 30) {
        return;
    }
    let store = new_store(Backend::Sqlite, dir.path(), "openapi_tokens");
    let guarded = Server::start_on(
        dir.path(),
        &store,
        &["--auth-token", WRITE, "--read-token", READ],
    );
    for token in [Some(WRITE), Some(READ), None] {
        schemathesis(&guarded.http, token, 12);
    }
}

/// Runs `scripts/check-openapi` against `base`; false when it was skipped (no schemathesis).
fn schemathesis(base: &str, token: Option<&str>, examples: u32) -> bool {
    let args: Vec<&str> = std::iter::once(base).chain(token).collect();
    outside_check(
        "check-openapi",
        &args,
        &[("TRIBUTARY_OPENAPI_EXAMPLES", examples.to_string())],
        "TRIBUTARY_REQUIRE_API_TOOLS",
    )
}

/// A journal whose writes fail (`/dev/full`: no space left) is reported when it happens: a log
/// line (code 11) while the server runs, `/health` degraded with the journal as the reason, a
/// counter in `/metrics`; and the engine goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_journal_is_logged_counted_and_shown_in_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(Backend::Sqlite, dir.path(), "journal_full");
    let server = Server::start_env(
        dir.path(),
        &store,
        &["--journal", "/dev/full", "--log-format", "json"],
        "info",
    );
    let http = Http::new(&server);
    let mut c = server.client().await;
    create_stream(&mut c, "j", 1).await;
    publish(&mut c, "j", vec![json_event("a", "{}")]).await;
    let health = health_until(&http, "the journal degraded", |_, h| {
        h["status"] == "degraded"
    })
    .await;
    let journal = health["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["component"] == "journal"))
        .unwrap_or_else(|| panic!("no journal component: {health}"));
    assert_eq!(journal["status"], "degraded", "{health}");
    assert!(
        journal["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("write failed") && r.contains("No space left")),
        "{health}"
    );
    // Logged when it happened, not at shutdown.
    let logged = server.log().lines().any(|l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["code"] == 11 && v["level"] == "ERROR")
    });
    assert!(logged, "{}", server.log());
    // The engine goes on; what it handles now is not journaled, and counted.
    publish(&mut c, "j", vec![json_event("a", "{}")]).await;
    let (_, text) = http.send(Method::GET, "/metrics", None).await;
    assert_eq!(
        metric(&text, "tributary_journal_write_failures_total", &[]),
        1.0,
        "{text}"
    );
    assert!(
        metric(&text, "tributary_journal_dropped_records_total", &[]) >= 1.0,
        "{text}"
    );
}

// ---- once, on SQLite -----------------------------------------------------------------------

const WRITE: &str = "write-token-0123456789";
const READ: &str = "read-token-0123456789";

/// A tonic client that sends `authorization: Bearer <token>` with every call.
async fn client_with_token(
    server: &Server,
    token: Option<&str>,
) -> pb::event_stream_client::EventStreamClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor,
    >,
> {
    let channel = tonic::transport::Channel::from_shared(server.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let header = token.map(|t| {
        format!("Bearer {t}")
            .parse::<tonic::metadata::MetadataValue<_>>()
            .expect("header")
    });
    pb::event_stream_client::EventStreamClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            if let Some(h) = &header {
                req.metadata_mut().insert("authorization", h.clone());
            }
            Ok(req)
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_http_and_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(Backend::Sqlite, dir.path(), "tokens");
    let server = Server::start_on(
        dir.path(),
        &store,
        &["--auth-token", WRITE, "--read-token", READ],
    );
    let anon = Http::new(&server);
    let reader = anon.with_token(Some(READ));
    let writer = anon.with_token(Some(WRITE));
    let wrong = anon.with_token(Some("not-the-token-0123456789"));
    let body = json!({"name": "guarded"});

    // HTTP: missing or wrong token 401 (with WWW-Authenticate), read token 403; nothing made.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/event-streams", server.http))
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    is_error(
        &wrong.post("/api/event-streams", body.clone()).await,
        401,
        "UNAUTHENTICATED",
    );
    is_error(
        &reader.post("/api/event-streams", body.clone()).await,
        403,
        "PERMISSION_DENIED",
    );
    is_error(
        &anon.get("/api/event-streams").await,
        401,
        "UNAUTHENTICATED",
    );
    let (status, list) = reader.get("/api/event-streams").await;
    assert_eq!((status, list), (200, json!([])), "nothing was created");
    assert_eq!(writer.post("/api/event-streams", body.clone()).await.0, 201);
    assert_eq!(reader.get("/api/event-streams/guarded").await.0, 200);
    assert_eq!(writer.get("/api/event-streams/guarded").await.0, 200);
    is_error(
        &reader
            .json(Method::DELETE, "/api/event-streams/guarded", None)
            .await,
        403,
        "PERMISSION_DENIED",
    );
    // Probes, metrics and the document stay open.
    assert_eq!(anon.get("/health/live").await.0, 200);
    assert_eq!(anon.get("/health").await.0, 200);
    assert_eq!(anon.send(Method::GET, "/metrics", None).await.0, 200);
    // The document says so: every /api operation of this server needs the bearer token.
    let (status, doc) = anon.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let list = &doc["paths"]["/api/event-streams"];
    assert_eq!(list["get"]["security"], json!([{"bearer": []}]));
    assert!(list["get"]["responses"]["401"].is_object());
    assert!(list["post"]["responses"]["403"].is_object());
    assert!(doc["paths"]["/health"]["get"]["security"].is_null());

    // gRPC with the real tonic client: writes need the write token, reads a token.
    let publish_req = || pb::PublishRequest {
        stream: "guarded".into(),
        events: vec![json_event("t", "{}")],
        expected_offset: None,
    };
    let mut none = client_with_token(&server, None).await;
    let e = none.publish(publish_req()).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = none.list_streams(()).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut bad = client_with_token(&server, Some("not-the-token-0123456789")).await;
    assert_eq!(
        bad.publish(publish_req()).await.expect_err("wrong").code(),
        Code::Unauthenticated
    );
    let mut ro = client_with_token(&server, Some(READ)).await;
    assert_eq!(
        ro.publish(publish_req())
            .await
            .expect_err("read only")
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        ro.create_stream(pb::CreateStreamRequest {
            name: "other".into(),
            ..Default::default()
        })
        .await
        .expect_err("read only")
        .code(),
        Code::PermissionDenied
    );
    let info = ro
        .get_stream(pb::GetStreamRequest {
            name: "guarded".into(),
        })
        .await
        .expect("a read with the read token")
        .into_inner();
    assert_eq!(info.length, 0, "the refused publishes wrote nothing");
    let mut rw = client_with_token(&server, Some(WRITE)).await;
    rw.publish(publish_req())
        .await
        .expect("publish with the token");
    let info = ro
        .get_stream(pb::GetStreamRequest {
            name: "guarded".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.length, 1);
    let (_, list) = reader.get("/api/event-streams").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // The command line sends --token.
    let (ok, _, err) = server.cli(&["stream", "create", "by-cli"], None);
    assert!(!ok);
    assert!(err.contains("Unauthenticated"), "{err}");
    let (ok, out, err) = server.cli(&["stream", "create", "by-cli", "--token", WRITE], None);
    assert!(ok, "{err}");
    assert!(out.contains("by-cli"), "{out}");
    let (ok, out, _) = server.cli(&["stream", "list", "--token", READ], None);
    assert!(ok && out.contains("by-cli"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_grpc_and_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_pem = cert.cert.pem();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).expect("write cert");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write key");
    let store = new_store(Backend::Sqlite, dir.path(), "tls");
    let server = Server::start_on(
        dir.path(),
        &store,
        &[
            "--tls-cert",
            cert_path.to_str().expect("path"),
            "--tls-key",
            key_path.to_str().expect("path"),
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    assert!(server.http.starts_with("https://"), "{}", server.http);
    let port_of = |url: &str| url.rsplit(':').next().expect("port").to_string();

    // HTTP over TLS, trusting only this certificate.
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let base = format!("https://localhost:{}", port_of(&server.http));
    let resp = https
        .post(format!("{base}/api/event-streams"))
        .body(r#"{"name": "secure"}"#)
        .send()
        .await
        .expect("https");
    assert_eq!(resp.status().as_u16(), 201);
    // Plain HTTP on the TLS port does not get an answer from the API.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/health/live",
            port_of(&server.http)
        ))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // gRPC over TLS with the tonic client.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!(
        "https://localhost:{}",
        port_of(&server.url)
    ))
    .expect("url")
    .tls_config(tls)
    .expect("tls")
    .connect()
    .await
    .expect("connect over TLS");
    let mut c = pb::event_stream_client::EventStreamClient::new(channel);
    let list = c.list_streams(()).await.expect("list").into_inner();
    assert_eq!(list.streams.len(), 1);
    assert_eq!(
        list.streams[0].config.as_ref().map(|c| c.name.as_str()),
        Some("secure")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_registered_listed_and_refused_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Backend::Sqlite, dir.path(), "schemas");
    let http = Http::new(&server);
    let v1 = json!({"event_type": "user", "version": 1,
                    "schema": {"type": "object", "required": ["name"]}});
    let (status, s) = http.post("/api/schemas", v1).await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["versions"][0]["version"], 1);
    // Not the next version: 409, nothing registered.
    let skipped = http
        .post("/api/schemas", json!({"event_type": "user", "version": 3}))
        .await;
    is_error(&skipped, 409, "SCHEMA_VERSION_CONFLICT");
    // A required field that nothing provides: incompatible.
    let bad = http
        .post(
            "/api/schemas",
            json!({"event_type": "user", "version": 2,
                   "schema": {"type": "object", "required": ["name", "email"]}}),
        )
        .await;
    is_error(&bad, 409, "SCHEMA_INCOMPATIBLE");
    is_error(
        &http
            .post(
                "/api/schemas",
                json!({"event_type": "user", "version": 2, "rules": [{"op": "explode"}]}),
            )
            .await,
        400,
        "MALFORMED_JSON",
    );
    let (status, s) = http
        .post(
            "/api/schemas",
            json!({"event_type": "user", "version": 2,
                   "schema": {"type": "object", "required": ["name", "email"]},
                   "rules": [{"op": "add", "field": "email", "default": "unknown"}]}),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["versions"][1]["rules"][0]["op"], "add");
    let (_, list) = http.get("/api/schemas").await;
    assert_eq!(list[0]["event_type"], "user");
    assert_eq!(list[0]["versions"].as_array().map(Vec::len), Some(2));
    let (status, one) = http.get("/api/schemas/user").await;
    assert_eq!(
        (status, one["versions"][1]["version"].as_u64()),
        (200, Some(2))
    );
    is_error(
        &http.get("/api/schemas/nobody").await,
        404,
        "SCHEMA_NOT_FOUND",
    );
}

/// Exclusive and consumer group subscriptions are reset while no consumer is attached (the
/// moment a reset is most needed), through the subscription-level reset; the consumer-level
/// one says where to go instead.
async fn shared_positions_reset_with_every_consumer_down(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "http_reset_down");
    let http = Http::new(&server);
    let mut c = server.client().await;
    create_stream(&mut c, "orders", 1).await;
    let events = (0..5)
        .map(|i| json_event("entry", &format!("{i}")))
        .collect();
    publish(&mut c, "orders", events).await;
    for (name, mode) in [
        ("work", pb::SubscriptionMode::Exclusive),
        ("group", pb::SubscriptionMode::ConsumerGroup),
    ] {
        let mut o = open("orders", name, "w1");
        // A group commits after each ack, so that the acks are saved when answered (a commit
        // strategy is a consumer group's option only).
        let group = mode == pb::SubscriptionMode::ConsumerGroup;
        o.create = Some(pb::SubscriptionConfig {
            mode: mode as i32,
            commit: group.then_some(pb::CommitStrategy {
                kind: Some(pb::commit_strategy::Kind::AfterEach(())),
            }),
            ..Default::default()
        });
        let mut session = Session::open(&mut c, o).await;
        let got = session.events(5).await;
        assert_eq!(session.ack(&got).await.applied.len(), 5);
        drop(session);
        wait_detached(&mut c, "orders", name, "w1").await;
        let base = format!("/api/event-streams/orders/subscriptions/{name}");
        let (_, before) = http.get(&base).await;
        assert_eq!(before["attached"], json!([]), "{before}");
        assert_eq!(before["cursors"][0]["committed"], json!([5]), "{before}");

        // The consumer-level reset has no consumer to name: 404, pointing at the other one.
        let by_consumer = http
            .post(
                &format!("{base}/consumers/w1/reset-offset"),
                json!({"offset": 1}),
            )
            .await;
        is_error(&by_consumer, 404, "CONSUMER_NOT_FOUND");
        let hint = by_consumer.1["message"].as_str().unwrap_or_default();
        assert!(hint.contains(&format!("{base}/reset-offset")), "{hint}");

        // Bad resets of the subscription change nothing.
        let reset = format!("{base}/reset-offset");
        is_error(
            &http.post(&reset, json!({"offset": 6})).await,
            400,
            "OFFSET_OUT_OF_RANGE",
        );
        is_error(&http.post(&reset, json!({})).await, 400, "INVALID_INPUT");
        is_error(
            &http
                .post(
                    "/api/event-streams/orders/subscriptions/nope/reset-offset",
                    json!({"offset": 1}),
                )
                .await,
            404,
            "SUBSCRIPTION_NOT_FOUND",
        );
        let (_, same) = http.get(&base).await;
        assert_eq!(same["cursors"][0]["committed"], json!([5]), "{same}");

        // The shared position moves with nobody attached, durably.
        let (status, moved) = http.post(&reset, json!({"offset": 2})).await;
        assert_eq!(status, 200, "{moved}");
        assert_eq!(moved["name"], name);
        assert_eq!(moved["cursors"][0]["committed"], json!([2]), "{moved}");
        assert_eq!(moved["lag"], 3, "{moved}");

        // The next consumer starts there.
        let mut session = Session::open(&mut c, open("orders", name, "w2")).await;
        assert_eq!(offsets(&session.events(3).await), vec![2, 3, 4]);
        drop(session);
        wait_detached(&mut c, "orders", name, "w2").await;
    }
}

/// A broadcast consumer that left for good keeps /health unhealthy until its position is
/// removed (`DELETE .../consumers/{consumer}`); then health recovers, also after a restart.
async fn a_consumer_gone_for_good_is_removed_and_health_recovers(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(b, dir.path(), "http_remove");
    let server = Server::start_on(
        dir.path(),
        &store,
        &["--health-lag-degraded", "1", "--health-lag-unhealthy", "2"],
    );
    let http = Http::new(&server);
    let mut c = server.client().await;
    create_stream(&mut c, "jobs", 1).await;
    let mut o = open("jobs", "fan", "stays");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Broadcast as i32,
        ..Default::default()
    });
    let mut stays = Session::open(&mut c, o).await;
    let leaves = Session::open(&mut c, open("jobs", "fan", "leaves")).await;
    let events = (0..3).map(|i| json_event("job", &format!("{i}"))).collect();
    publish(&mut c, "jobs", events).await;
    let got = stays.events(3).await;
    stays.ack(&got).await;
    let gone = "/api/event-streams/jobs/subscriptions/fan/consumers/leaves";

    // Attached: refused, nothing changes.
    let attached = http.json(Method::DELETE, gone, None).await;
    is_error(&attached, 409, "CONSUMER_ATTACHED");
    drop(leaves);
    wait_detached(&mut c, "jobs", "fan", "leaves").await;
    // Gone with lag 3: unhealthy, and it stays so.
    health_until(
        &http,
        "unhealthy by the lag of the consumer gone",
        |st, h| st == 503 && h["status"] == "unhealthy",
    )
    .await;

    // Refusals name what is wrong.
    is_error(
        &http
            .json(
                Method::DELETE,
                "/api/event-streams/jobs/subscriptions/fan/consumers/ghost",
                None,
            )
            .await,
        404,
        "CONSUMER_NOT_FOUND",
    );
    is_error(
        &http
            .json(
                Method::DELETE,
                "/api/event-streams/jobs/subscriptions/nope/consumers/leaves",
                None,
            )
            .await,
        404,
        "SUBSCRIPTION_NOT_FOUND",
    );
    let mut w = open("jobs", "work", "w1");
    w.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        ..Default::default()
    });
    let work = Session::open(&mut c, w).await;
    drop(work);
    wait_detached(&mut c, "jobs", "work", "w1").await;
    let shared = http
        .json(
            Method::DELETE,
            "/api/event-streams/jobs/subscriptions/work/consumers/w1",
            None,
        )
        .await;
    is_error(&shared, 400, "INVALID_INPUT");
    assert_eq!(shared.1["field"], "consumer");
    // (The exclusive subscription lags too: reset it past everything to leave only the
    // broadcast consumer's lag.)
    let (status, _) = http
        .post(
            "/api/event-streams/jobs/subscriptions/work/reset-offset",
            json!({"offset": 3}),
        )
        .await;
    assert_eq!(status, 200);

    // Removed: 204, no longer listed, health recovers.
    let (status, body) = http.json(Method::DELETE, gone, None).await;
    assert_eq!(status, 204, "{body}");
    is_error(&http.get(gone).await, 404, "CONSUMER_NOT_FOUND");
    let (_, sub) = http.get("/api/event-streams/jobs/subscriptions/fan").await;
    let who: Vec<&str> = sub["cursors"]
        .as_array()
        .expect("cursors")
        .iter()
        .filter_map(|c| c["consumer"].as_str())
        .collect();
    assert_eq!(who, vec!["stays"], "{sub}");
    let h = health_until(&http, "healthy once the position is gone", |st, h| {
        st == 200 && h["status"] == "healthy"
    })
    .await;
    assert!(!h.to_string().contains("leaves"), "{h}");
    is_error(
        &http.json(Method::DELETE, gone, None).await,
        404,
        "CONSUMER_NOT_FOUND",
    );
    drop(stays);
    wait_detached(&mut c, "jobs", "fan", "stays").await;

    // Durable: after a restart it is still gone and health stays healthy.
    let server = server.restart();
    let http = Http::new(&server);
    let (status, h) = http.get("/health").await;
    assert_eq!(
        (status, h["status"].as_str()),
        (200, Some("healthy")),
        "{h}"
    );
    is_error(&http.get(gone).await, 404, "CONSUMER_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_names_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Backend::Sqlite, dir.path(), "openapi");
    let http = Http::new(&server);
    let (status, text) = http.send(Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    // Valid OpenAPI 3 (3.1) by a parser of its own.
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3 document");
    assert!(spec.openapi.starts_with("3."), "{}", spec.openapi);
    let doc: Value = serde_json::from_str(&text).expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        "/api/event-streams",
        "/api/event-streams/{name}",
        "/api/event-streams/{name}/subscriptions",
        "/api/event-streams/{name}/subscriptions/{id}",
        "/api/event-streams/{name}/subscriptions/{id}/consumers/{consumer}",
        "/api/event-streams/{name}/subscriptions/{id}/consumers/{consumer}/reset-offset",
        "/api/event-streams/{name}/subscriptions/{id}/reset-offset",
        "/api/event-streams/{name}/dead-letters",
        "/api/event-streams/{name}/dead-letters/replay",
        "/api/schemas",
        "/api/schemas/{event_type}",
        "/health/live",
        "/health/ready",
        "/health",
        "/metrics",
        "/openapi.json",
    ];
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(documented, want);
    // Every documented operation is served: a request to it reaches a handler (which may
    // refuse it, but never as an unknown route or a method not allowed).
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{name}", "nope")
            .replace("{id}", "s")
            .replace("{consumer}", "c")
            .replace("{event_type}", "t");
        for method in ["get", "post", "delete", "put", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let body = (method == "post").then_some("{}");
            let (status, text) = http.send(m, &concrete, body).await;
            assert_ne!(status, 405, "{method} {path}: {text}");
            assert!(!text.contains("no route"), "{method} {path}: {text}");
        }
    }
    assert_eq!(operations, 20);
    // And what is not documented is not served.
    let (status, text) = http.send(Method::GET, "/api/undocumented", None).await;
    assert_eq!(status, 404);
    assert!(text.contains("no route"), "{text}");
    is_error(
        &http
            .json(Method::PUT, "/api/event-streams", Some(json!({})))
            .await,
        405,
        "METHOD_NOT_ALLOWED",
    );

    // Without tokens, no operation asks for one.
    assert!(doc["components"]["securitySchemes"].is_null());
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            assert!(
                op.get("security").is_none(),
                "{method} {path} asks for a token"
            );
        }
    }
    // Constraints a client can read: names, partitions, limits, a reset's two forms.
    let schemas = &doc["components"]["schemas"];
    let create = &schemas["CreateStream"]["properties"];
    // A stream's name leaves room for its dead letter stream's `.dlq`.
    assert_eq!(
        create["name"]["pattern"],
        r"^(?:[a-z0-9][a-z0-9._-]{0,123}|[a-z0-9][a-z0-9._-]{0,123}\.dlq)$"
    );
    assert_eq!(create["partitions"]["minimum"], 1);
    assert_eq!(
        schemas["ResetOffset"]["oneOf"].as_array().map(Vec::len),
        Some(2)
    );
    let reset = &paths["/api/event-streams/{name}/subscriptions/{id}/reset-offset"]["post"];
    assert_eq!(
        reset["parameters"][0]["schema"]["pattern"],
        "^[a-z0-9][a-z0-9._-]{0,127}$"
    );
    assert!(reset["responses"]["400"].is_object());

    // Every refusal is JSON with a documented name, framework rejections included.
    is_error(
        &http
            .json(
                Method::POST,
                "/api/event-streams",
                Some(json!(["positional", 1])),
            )
            .await,
        400,
        "MALFORMED_JSON",
    );
    assert_eq!(
        http.get("/api/event-streams").await.1,
        json!([]),
        "nothing was created"
    );
    is_error(
        &http
            .get("/api/event-streams/orders/dead-letters?limit=-1")
            .await,
        400,
        "INVALID_QUERY",
    );
    is_error(
        &http.get("/api/event-streams/%FF%FE/subscriptions").await,
        400,
        "INVALID_PATH",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_an_event_by_its_correlation_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(Backend::Sqlite, dir.path(), "logs");
    let server = Server::start_env(dir.path(), &store, &["--log-format", "json"], "debug");
    let http = Http::new(&server);
    let mut c = server.client().await;
    create_stream(&mut c, "logs", 1).await;
    let mut o = open("logs", "l", "c1");
    o.create = Some(pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Exclusive as i32,
        ..Default::default()
    });
    let mut s = Session::open(&mut c, o).await;
    // The correlation id comes from the publish call's metadata.
    let id = "6f1c1f0e-8a57-4c47-9a45-0c6d7a1f5d42";
    let mut e = json_event("t", "{}");
    e.event_id = id.into();
    let mut req = tonic::Request::new(pb::PublishRequest {
        stream: "logs".into(),
        events: vec![e],
        expected_offset: None,
    });
    req.metadata_mut()
        .insert("x-correlation-id", "trace-42".parse().expect("ascii"));
    c.publish(req).await.expect("publish");
    let got = s.events(1).await;
    let term = s
        .send(In::Term(pb::Term {
            positions: positions(&got),
            reason: "no".into(),
        }))
        .await;
    s.answer(term).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, r) = http
            .post("/api/event-streams/logs/dead-letters/replay", json!({}))
            .await;
        if r["replayed"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter to replay: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.events(1).await;
    drop(s);
    let mut server = server;
    assert!(server.terminate(), "clean stop");
    let lines: Vec<Value> = server
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let by_code = |code: u64| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["code"].as_u64() == Some(code))
            .collect()
    };
    // Published, delivered, dead-lettered, replayed, delivered again: one correlation id.
    for code in [4000, 5000, 5003, 5004] {
        let found = by_code(code);
        assert!(!found.is_empty(), "no line with code {code}");
        for l in found {
            assert_eq!(l["correlation_id"], "trace-42", "{l}");
            assert_eq!(l["stream"], "logs", "{l}");
        }
    }
    assert_eq!(by_code(4000)[0]["event_id"], id);
    assert_eq!(by_code(5000)[0]["event_id"], id);
    assert_eq!(by_code(5003)[0]["event_id"], id);
    assert_eq!(
        by_code(5000).len(),
        2,
        "delivered, then delivered again after the replay"
    );
    // Every line about an event carries its stream, offset, id and correlation id.
    for l in lines.iter().filter(|l| l.get("offset").is_some()) {
        for field in ["stream", "event_id", "correlation_id", "code"] {
            assert!(l.get(field).is_some(), "{field} missing: {l}");
        }
    }
}
