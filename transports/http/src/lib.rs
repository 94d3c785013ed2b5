//! # tributary-http
//!
//! The HTTP transport of SPEC 11, on axum (hyper 1): what an operator uses to see and steer a
//! running Tributary.
//!
//! - the management API under `/api` ([`api`]): streams, subscriptions, consumers, offset
//!   resets, schemas, dead letters, as JSON, described by the OpenAPI 3 document served at
//!   `/openapi.json`, generated from the handlers with utoipa (every route is registered
//!   through `utoipa-axum`, so a route cannot be served without being documented);
//! - health at `/health/live`, `/health/ready` and `/health` ([`health`]);
//! - Prometheus metrics at `/metrics` ([`metrics`]);
//! - bearer tokens ([`Tokens`]) and TLS ([`serve`]).
//!
//! It reaches the engine through [`EngineApi`], which an executor implements; it decides
//! nothing about events itself.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
mod auth;
mod doc;
mod error;
pub mod health;
pub mod metrics;

pub use error::{ApiError, ErrorBody};
pub use health::HealthThresholds;
pub use metrics::Metrics;
pub use tributary_auth::{Access, Denied, Tokens, bearer};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tributary_core::{Command, Error, Reply, StreamInfo, SubscriptionInfo, UnixMillis};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A boxed future, as [`EngineApi`] returns them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the HTTP transport needs from an executor.
pub trait EngineApi: Send + Sync + 'static {
    /// Sends a command that belongs to no client connection and waits for its reply.
    fn call(&self, cmd: Command) -> BoxFuture<Result<Reply, Error>>;
    /// Whether the store is reachable and its migrations are all applied; `Err` says why not.
    fn ready(&self) -> BoxFuture<Result<(), String>>;
    /// The engine's journal, when it keeps one (for `/health` and `/metrics`).
    fn journal(&self) -> Option<JournalFigures> {
        None
    }
    /// The message broker's connections, when one is configured (for `/health` and
    /// `/metrics`).
    fn broker(&self) -> Option<BrokerFigures> {
        None
    }
}

/// The state of one connection to the message broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BrokerState {
    /// Not needed yet (the relay connects on its first publish).
    Idle,
    /// Connected.
    Connected,
    /// Not connected: being tried again with back-off.
    Disconnected,
}

impl BrokerState {
    /// Every state, in a fixed order.
    pub const ALL: [BrokerState; 3] = [
        BrokerState::Idle,
        BrokerState::Connected,
        BrokerState::Disconnected,
    ];

    /// `idle`, `connected` or `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerState::Idle => "idle",
            BrokerState::Connected => "connected",
            BrokerState::Disconnected => "disconnected",
        }
    }
}

/// One connection to the broker, as `/health` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionFigures {
    /// Its state now.
    pub state: BrokerState,
    /// Why it last failed or was lost.
    pub last_error: Option<String>,
}

/// One inbound binding (a remote stream consumed into a local stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundFigures {
    /// The remote stream.
    pub remote_stream: String,
    /// The subscription (its queue).
    pub subscription: String,
    /// The local stream.
    pub stream: String,
    /// Its connection.
    pub connection: ConnectionFigures,
    /// Messages received (redeliveries included).
    pub received: u64,
    /// Messages appended as new events.
    pub appended: u64,
    /// Messages already appended (a redelivery), acknowledged without a second event.
    pub duplicates: u64,
    /// Messages sent to the dead-letter queue, per reason.
    pub dead_lettered: Vec<(String, u64)>,
}

/// The message broker's connections: the relay's publisher and the inbound bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerFigures {
    /// The relay's publisher.
    pub publisher: ConnectionFigures,
    /// Each inbound binding.
    pub inbound: Vec<InboundFigures>,
}

/// A cross-service stream's events not yet confirmed by the broker, over its partitions
/// (`None` for other streams).
pub fn relay_lag(s: &StreamInfo) -> Option<u64> {
    let relay = s.relay.as_ref()?;
    Some(
        s.partitions
            .iter()
            .zip(relay)
            .map(|(p, r)| p.next.saturating_sub(*r))
            .sum(),
    )
}

/// What the engine's journal has lost so far, as `/health` and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalFigures {
    /// Writes that failed (a failure ends the journal).
    pub write_failures: u64,
    /// Inputs the engine handled that the journal does not hold.
    pub dropped: u64,
    /// Why it stopped, if it did.
    pub error: Option<String>,
}

/// The HTTP server's settings.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// Bearer tokens (none: open).
    pub tokens: Tokens,
    /// Health thresholds.
    pub health: HealthThresholds,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    engine: Arc<dyn EngineApi>,
    metrics: Arc<Metrics>,
    health: HealthThresholds,
    started: UnixMillis,
    openapi: Arc<OnceLock<String>>,
}

/// The wall clock, in Unix milliseconds.
pub(crate) fn now_millis() -> UnixMillis {
    UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tributary management API",
        description = "See and steer a running Tributary: streams, subscriptions, consumers, \
                       offset resets, schemas, dead letters, health and metrics (SPEC 11). \
                       Each operation names the bearer token it needs, if any, for this \
                       server's configuration.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "streams", description = "Event streams"),
        (name = "subscriptions", description = "Subscriptions, consumers, offset resets"),
        (name = "schemas", description = "The schema registry"),
        (name = "dead letters", description = "Events moved to `<stream>.dlq`"),
        (name = "operations", description = "Health, metrics, this document")
    )
)]
struct ApiDoc;

/// Builds the routes and their OpenAPI document.
fn routes(state: AppState, tokens: Arc<Tokens>) -> (axum::Router, serde_json::Value) {
    let api = OpenApiRouter::new()
        .routes(routes!(api::list_streams, api::create_stream))
        .routes(routes!(api::get_stream, api::delete_stream))
        .routes(routes!(api::list_subscriptions))
        .routes(routes!(api::get_subscription))
        .routes(routes!(api::get_consumer, api::remove_consumer))
        .routes(routes!(api::reset_offset))
        .routes(routes!(api::reset_subscription_offset))
        .routes(routes!(api::list_schemas, api::register_schema))
        .routes(routes!(api::get_schema))
        .routes(routes!(api::list_dead_letters))
        .routes(routes!(api::replay_dead_letters))
        .layer(axum::middleware::from_fn_with_state(
            tokens.clone(),
            auth::require,
        ));
    let ops = OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api)
        .merge(ops)
        .fallback(not_found)
        .with_state(state)
        .split_for_parts();
    utoipa::Modify::modify(&doc::Finish { tokens: &tokens }, &mut doc);
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    doc::cross_field_rules(&mut doc);
    (router.method_not_allowed_fallback(method_not_allowed), doc)
}

/// The OpenAPI document of everything [`router`] serves (on a server without tokens).
pub fn openapi() -> serde_json::Value {
    struct Nothing;
    impl EngineApi for Nothing {
        fn call(&self, _: Command) -> BoxFuture<Result<Reply, Error>> {
            Box::pin(async { Err(Error::Unavailable("no engine".into())) })
        }
        fn ready(&self) -> BoxFuture<Result<(), String>> {
            Box::pin(async { Err("no engine".into()) })
        }
    }
    let state = AppState {
        engine: Arc::new(Nothing),
        metrics: Arc::new(Metrics::new()),
        health: HealthThresholds::default(),
        started: UnixMillis(0),
        openapi: Arc::default(),
    };
    routes(state, Arc::new(Tokens::default())).1
}

/// The whole HTTP application: `/api`, `/health*`, `/metrics`, `/openapi.json`.
pub fn router(
    engine: Arc<dyn EngineApi>,
    metrics: Arc<Metrics>,
    config: HttpConfig,
) -> axum::Router {
    let openapi = Arc::new(OnceLock::new());
    let state = AppState {
        engine,
        metrics,
        health: config.health,
        started: now_millis(),
        openapi: openapi.clone(),
    };
    let (router, doc) = routes(state, Arc::new(config.tokens));
    let _ = openapi.set(serde_json::to_string_pretty(&doc).unwrap_or_default());
    router
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{} does not serve {}", req.uri().path(), req.method()),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

// ---- operations ----------------------------------------------------------------------------

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `live`, `ready` or `not_ready`.
    pub status: String,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "The process answers", body = Probe)))]
async fn live() -> Json<Probe> {
    Json(Probe {
        status: "live".into(),
        reason: None,
    })
}

/// Readiness: the engine has recovered and answers, the store is reachable and its
/// migrations are applied.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Probe),
        (status = 503, description = "Not ready, and why", body = Probe)))]
async fn ready(State(st): State<AppState>) -> (StatusCode, Json<Probe>) {
    let engine = tokio::time::timeout(Duration::from_secs(5), st.engine.call(Command::ListStreams));
    let reason = match engine.await {
        Err(_) => Some("the engine did not answer within 5 s".to_string()),
        Ok(Err(e)) => Some(format!("engine: {e}")),
        Ok(Ok(_)) => match tokio::time::timeout(Duration::from_secs(5), st.engine.ready()).await {
            Err(_) => Some("the store did not answer within 5 s".into()),
            Ok(Err(e)) => Some(e),
            Ok(Ok(())) => None,
        },
    };
    match reason {
        None => (
            StatusCode::OK,
            Json(Probe {
                status: "ready".into(),
                reason: None,
            }),
        ),
        Some(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Probe {
                status: "not_ready".into(),
                reason: Some(r),
            }),
        ),
    }
}

/// Every stream with its subscriptions, as the engine has them now.
async fn snapshot(st: &AppState) -> Result<Vec<(StreamInfo, Vec<SubscriptionInfo>)>, ApiError> {
    let Reply::Streams(streams) = st.engine.call(Command::ListStreams).await? else {
        return Err(ApiError::unexpected());
    };
    let mut out = Vec::with_capacity(streams.len());
    for s in streams {
        match st
            .engine
            .call(Command::ListSubscriptions(s.config.name.clone()))
            .await
        {
            Ok(Reply::Subscriptions(subs)) => out.push((s, subs)),
            // Deleted meanwhile.
            Err(Error::StreamNotFound(_)) => {}
            Err(e) => return Err(e.into()),
            Ok(_) => return Err(ApiError::unexpected()),
        }
    }
    Ok(out)
}

/// Health with per-stream, per-subscription and per-consumer detail, and the server's own
/// components (the journal); 503 when unhealthy.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Healthy or degraded", body = health::HealthReport),
        (status = 503, description = "Unhealthy", body = health::HealthReport)))]
async fn health(
    State(st): State<AppState>,
) -> Result<(StatusCode, Json<health::HealthReport>), ApiError> {
    let snap = snapshot(&st).await?;
    let mut components: Vec<health::ComponentHealth> =
        st.engine.journal().iter().map(health::journal).collect();
    if let Some(b) = st.engine.broker() {
        components.extend(health::broker(&b));
    }
    let report = health::report(&snap, components, &st.health, now_millis(), st.started);
    let code = if report.status == health::Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((code, Json(report)))
}

/// Prometheus metrics: the text format 0.0.4, or OpenMetrics 1.0.0 when `Accept` asks for it
/// (see [`metrics::Format::from_accept`]).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    params(("Accept" = Option<String>, Header,
        description = "`application/openmetrics-text` (version 1.0.0) for OpenMetrics; \
                       anything else, or none, gets the Prometheus text format 0.0.4")),
    responses((status = 200,
        description = "The metrics, in the format negotiated from `Accept` (`Vary: Accept`)",
        content(
            (String = "text/plain; version=0.0.4; charset=utf-8"),
            (String = "application/openmetrics-text; version=1.0.0; charset=utf-8")))))]
async fn metrics(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    // Several Accept lines are one list.
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let format =
        metrics::Format::from_accept((!accept.is_empty()).then(|| accept.join(",")).as_deref());
    let snap = snapshot(&st).await?;
    st.metrics.set_gauges(&snap);
    if let Some(j) = st.engine.journal() {
        st.metrics.set_journal(&j);
    }
    if let Some(b) = st.engine.broker() {
        st.metrics.set_broker(&b);
    }
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "accept"),
        ],
        st.metrics.render(format),
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
async fn openapi_json(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.openapi.get().cloned().unwrap_or_default(),
    )
        .into_response()
}

// ---- serving -------------------------------------------------------------------------------

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Why the HTTP server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The certificate or key cannot be read or used.
    #[error("TLS certificate {cert} / key {key}: {error}")]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Serving failed.
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
}

/// Loads a TLS configuration (rustls with ring, ALPN h2 and http/1.1).
pub async fn tls_config(
    files: &TlsFiles,
) -> Result<axum_server::tls_rustls::RustlsConfig, ServeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|error| ServeError::Tls {
            cert: files.cert.clone(),
            key: files.key.clone(),
            error,
        })
}

/// Serves `app` on `listener` (with TLS when given) until `shutdown` completes, then lets the
/// requests in flight finish for up to `grace`.
pub async fn serve(
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServeError> {
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(grace));
    });
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(config) => {
            axum_server::from_tcp_rustls(listener, config)
                .handle(handle)
                .serve(service)
                .await?
        }
        None => {
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(service)
                .await?
        }
    }
    Ok(())
}
