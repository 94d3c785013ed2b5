//! The server's configuration: a TOML file (`--config`), the environment (`TRIBUTARY_*`) and
//! flags, in that order of precedence (a flag beats the environment, which beats the file).
//! The file may also declare streams and subscriptions, created at start when missing.
//!
//! ```toml
//! data_dir = "./tributary-data"
//! store = "sqlite"                  # or "sqlite:PATH", or "postgres://user@host:5432/db"
//! grpc_listen = "127.0.0.1:50051"
//! grpc_keepalive_interval = "10s"   # HTTP/2 pings on idle gRPC connections
//! grpc_keepalive_timeout = "10s"    # an unanswered ping closes the connection
//! log_format = "pretty"             # or "json"
//! # append_writes_in_flight = 2     # per stream; default: the store's (SQLite 1, PostgreSQL 2)
//! # max_payload_bytes = 1048576     # largest event payload (1 MiB; at most 4 MiB)
//! shutdown_timeout = "10s"
//! # journal = "./engine.journal"  # record the engine's inputs for the simulator
//! http_listen = "127.0.0.1:8080"    # the management API, health and metrics
//! # auth_token = "..."              # mutating HTTP requests and writing gRPC calls need it
//! # read_token = "..."              # then reads need it (or auth_token) too
//! # tls_cert = "cert.pem"           # TLS for gRPC and HTTP (with tls_key)
//! # tls_key = "key.pem"
//!
//! [amqp]                            # the broker of cross-service streams (none: refused)
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"   # or TRIBUTARY_AMQP_URL, --amqp-url
//! prefix = "tributary"              # exchanges <prefix>.<stream>
//! confirm_timeout = "10s"           # an unconfirmed publish is sent again after this
//! relay_window = 100                # publishes per stream awaiting the broker's confirm
//!
//! [[amqp.inbound]]                  # another service's cross-service stream, consumed
//! remote_stream = "orders"          # its exchange <prefix>.orders
//! subscription = "billing"          # the durable queue <prefix>.orders:billing (+ :dlx, :dlq)
//! stream = "orders-in"              # the local stream (created when missing; needs dedup)
//! routing_keys = ["#"]              # topic patterns over the event type (all)
//! max_in_flight = 1000              # the prefetch: messages unacknowledged at most
//!
//! [health]                          # when a consumer is degraded or unhealthy
//! lag_degraded = 1000
//! lag_unhealthy = 10000
//! stall_degraded = "5m"
//! stall_unhealthy = "15m"
//!
//! [retention]                       # the default policy, and when cleanup runs
//! max_age = "30days"
//! cleanup_interval = "1h"
//! cleanup_window = { start = "02:00", end = "04:00" }   # UTC; start > end wraps midnight
//!
//! [[streams]]
//! name = "orders"
//! partitions = 4
//! delivery = "at-least-once"        # "at-most-once", "exactly-once"
//! dedup_window = "10m"
//! retention = { max_events = 1000000, keep_unconsumed = true }
//!
//! [[streams]]
//! name = "presence"
//! ephemeral = { max_events = 10000, max_bytes = 1048576, overflow = "drop-oldest" }
//!
//! [[subscriptions]]
//! stream = "orders"
//! name = "billing"
//! mode = "exclusive"                # "broadcast", "consumer-group", "read-receipt"
//! start = "beginning"               # "end", an offset, or a time like "2026-11-27T10:00:00Z"
//! ack_wait = "30s"
//! max_deliveries = 5
//! schema_versions = { "order.created" = 2 }   # the version delivered per type (latest)
//! strict_versions = false           # true: dead-letter events newer than asked for
//!
//! [[subscriptions]]                 # options of one mode are refused on another
//! stream = "orders"
//! name = "inbox"
//! mode = "read-receipt"
//! unread_timeout = "1h"
//! receipt_ttl = "7days"
//! receipt_cleanup_interval = "1h"
//!
//! [[schemas]]                       # registered at start, in order
//! event_type = "order.created"
//! version = 1
//! schema = { type = "object", required = ["name"] }
//!
//! [[schemas]]
//! event_type = "order.created"
//! version = 2
//! rules = [{ op = "rename", from = "name", to = "customer" }, { op = "add", field = "currency", default = "EUR" }]
//! ```

use crate::store::{PgOptions, StoreSpec};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tributary_core::{
    CleanupWindow, CommitStrategy, Config, DeliverySemantics, EphemeralLimits, Overflow,
    RetentionPolicy, SchemaRegistration, StartPosition, StreamConfig, StreamName, StreamSpec,
    SubscriptionConfig, SubscriptionMode, SubscriptionName, SubscriptionOptions, UnixMillis,
};
use tributary_http::{HealthThresholds, TlsFiles, Tokens};
use tributary_store_api::Durability;

/// The default data folder.
pub const DEFAULT_DATA_DIR: &str = "./tributary-data";
/// The default gRPC address.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";
/// The default HTTP address (management API, health, metrics).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the embedded store keeps its data.
    pub data_dir: Option<PathBuf>,
    /// Which store (see [`StoreSpec`]).
    pub store: Option<String>,
    /// When an acknowledged write is durable: `full` (fsync first) or `normal`.
    pub durability: Option<Durability>,
    /// Appends of one stream written to the store at once (see
    /// [`Settings::append_writes_in_flight`]).
    pub append_writes_in_flight: Option<usize>,
    /// Largest payload of one event, bytes (1 MiB; at most the largest append, 4 MiB).
    pub max_payload_bytes: Option<usize>,
    /// The gRPC address.
    pub grpc_listen: Option<SocketAddr>,
    /// How often an idle gRPC connection is probed with an HTTP/2 ping (10s).
    #[serde(default, with = "humantime_serde")]
    pub grpc_keepalive_interval: Option<Duration>,
    /// A ping not answered within this closes the connection (10s).
    #[serde(default, with = "humantime_serde")]
    pub grpc_keepalive_timeout: Option<Duration>,
    /// Log format.
    pub log_format: Option<LogFormat>,
    /// How long a shutdown waits for calls in flight.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    /// Record the engine's inputs in this file (for the simulator).
    pub journal: Option<PathBuf>,
    /// The HTTP address (management API, health, metrics).
    pub http_listen: Option<SocketAddr>,
    /// The bearer token mutating requests need.
    pub auth_token: Option<String>,
    /// A read-only bearer token; when set, reads need a token too.
    pub read_token: Option<String>,
    /// TLS certificate chain (PEM), for gRPC and HTTP.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Health thresholds.
    pub health: Option<HealthDecl>,
    /// The broker of cross-service streams (RabbitMQ).
    pub amqp: Option<AmqpDecl>,
    /// How a PostgreSQL store is used.
    pub postgres: Option<PostgresDecl>,
    /// The default retention policy and the cleanup schedule.
    pub retention: Option<RetentionSection>,
    /// The retention of dead letter streams.
    pub dead_letter_retention: Option<RetentionDecl>,
    /// Broadcast and read receipt subscriptions without their own `consumer_expiry`: a
    /// consumer detached longer than this loses its position and receipts (unset: never).
    #[serde(default, with = "humantime_serde")]
    pub consumer_expiry: Option<Duration>,
    /// Streams to create at start when missing.
    #[serde(default)]
    pub streams: Vec<StreamDecl>,
    /// Schema versions to register at start, in order.
    #[serde(default)]
    pub schemas: Vec<SchemaRegistration>,
    /// Subscriptions to create at start when missing.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionDecl>,
}

/// The `[amqp]` table: the broker that cross-service streams are relayed to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpDecl {
    /// `amqp://user:password@host:port/vhost` or `amqps://...`.
    pub url: Option<String>,
    /// Exchanges are named `<prefix>.<stream>` (`tributary`).
    pub prefix: Option<String>,
    /// A publish the broker has not confirmed within this fails and is sent again (10s).
    #[serde(default, with = "humantime_serde")]
    pub confirm_timeout: Option<Duration>,
    /// Publishes of one cross-service stream waiting for the broker's confirm at most
    /// (1..=100000; 100). Bounds the relay's memory while the broker is slow or away.
    pub relay_window: Option<usize>,
    /// Other services' streams consumed into local streams.
    #[serde(default)]
    pub inbound: Vec<InboundDecl>,
}

/// An `[[amqp.inbound]]` entry: a remote cross-service stream consumed into a local stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundDecl {
    /// The remote stream (its exchange is `<prefix>.<remote_stream>`).
    pub remote_stream: String,
    /// The subscription: names the durable queue `<prefix>.<remote_stream>:<subscription>`.
    pub subscription: String,
    /// The local stream the events are appended to.
    pub stream: String,
    /// Binding keys: topic patterns over the event type (`["#"]`: every type).
    pub routing_keys: Option<Vec<String>>,
    /// Messages delivered and not yet acknowledged at most, the AMQP prefetch (1000).
    pub max_in_flight: Option<u32>,
}

impl InboundDecl {
    /// The binding it declares.
    pub fn to_binding(&self) -> Result<tributary_amqp::InboundBinding, DeclError> {
        let remote =
            StreamName::new(&self.remote_stream).map_err(|e| ("remote_stream", e.to_string()))?;
        let subscription = SubscriptionName::new(&self.subscription)
            .map_err(|e| ("subscription", e.to_string()))?;
        let local = StreamName::new(&self.stream).map_err(|e| ("stream", e.to_string()))?;
        let mut b = tributary_amqp::InboundBinding::new(remote, subscription, local);
        if let Some(keys) = &self.routing_keys {
            if keys.is_empty() {
                return Err(("routing_keys", "at least one (\"#\": every type)".into()));
            }
            for k in keys {
                if k.is_empty() || k.len() > 255 {
                    return Err((
                        "routing_keys",
                        format!("{k:?}: length {} is outside 1..=255", k.len()),
                    ));
                }
            }
            b.routing_keys = keys.clone();
        }
        if let Some(n) = self.max_in_flight {
            b.max_in_flight = u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or(("max_in_flight", format!("{n} is outside 1..=65535")))?;
        }
        Ok(b)
    }
}

/// The `[postgres]` table: the pool and timeouts of a PostgreSQL store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresDecl {
    /// Connections in the pool (32).
    pub pool_size: Option<u32>,
    /// The server-side limit of one statement (30s).
    #[serde(default, with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
    /// How long a request waits for a connection (5s).
    #[serde(default, with = "humantime_serde")]
    pub acquire_timeout: Option<Duration>,
}

/// The `[health]` table: when a consumer is degraded or unhealthy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthDecl {
    /// Lag above this is degraded (1000).
    pub lag_degraded: Option<u64>,
    /// Lag above this is unhealthy (10000).
    pub lag_unhealthy: Option<u64>,
    /// Lag and no progress for this long is degraded (5m).
    #[serde(default, with = "humantime_serde")]
    pub stall_degraded: Option<Duration>,
    /// Lag and no progress for this long is unhealthy (15m).
    #[serde(default, with = "humantime_serde")]
    pub stall_unhealthy: Option<Duration>,
}

/// A stream declared in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDecl {
    /// Its name.
    pub name: String,
    /// Partitions (1).
    pub partitions: Option<u32>,
    /// `at-most-once`, `at-least-once` (default) or `exactly-once`.
    pub delivery: Option<Delivery>,
    /// Dedup window (10m; "0s" turns it off).
    #[serde(default, with = "humantime_serde")]
    pub dedup_window: Option<Duration>,
    /// Mirrored over AMQP.
    #[serde(default)]
    pub cross_service: bool,
    /// In memory only, with these bounds.
    pub ephemeral: Option<EphemeralDecl>,
    /// What retention removes (persistent streams; unset: the default policy).
    pub retention: Option<RetentionDecl>,
}

/// A retention policy, as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDecl {
    /// Events older than this go.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// At most this many events per partition.
    pub max_events: Option<u64>,
    /// At most this many bytes per partition.
    pub max_bytes: Option<u64>,
    /// Never remove an event a subscription has not acknowledged.
    #[serde(default)]
    pub keep_unconsumed: bool,
}

impl RetentionDecl {
    fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            max_age: self.max_age,
            max_events: self.max_events,
            max_bytes: self.max_bytes,
            keep_unconsumed: self.keep_unconsumed,
        }
    }
}

/// The `[retention]` table: the default policy of streams without one, and when cleanup runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// The default policy.
    #[serde(flatten)]
    pub default: RetentionDecl,
    /// How often cleanup runs (1h).
    #[serde(default, with = "humantime_serde")]
    pub cleanup_interval: Option<Duration>,
    /// Only between these UTC times of day, `"HH:MM"` (start after end wraps midnight).
    pub cleanup_window: Option<WindowDecl>,
}

/// A cleanup window, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDecl {
    /// `"HH:MM"` or `"HH:MM:SS"`, UTC.
    pub start: String,
    /// `"HH:MM"` or `"HH:MM:SS"`, UTC.
    pub end: String,
}

/// Seconds after midnight of `HH:MM[:SS]`.
fn time_of_day(s: &str) -> Result<u32, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str, max: u32| p.parse::<u32>().ok().filter(|v| *v <= max);
    match parts.as_slice() {
        [h, m] | [h, m, _] => {
            let sec = if parts.len() == 3 {
                num(parts[2], 59)
            } else {
                Some(0)
            };
            match (num(h, 23), num(m, 59), sec) {
                (Some(h), Some(m), Some(sec)) => Ok(h * 3600 + m * 60 + sec),
                _ => Err(format!("{s:?}: expected HH:MM or HH:MM:SS (UTC)")),
            }
        }
        _ => Err(format!("{s:?}: expected HH:MM or HH:MM:SS (UTC)")),
    }
}

/// Delivery semantics, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// At most once.
    AtMostOnce,
    /// At least once.
    AtLeastOnce,
    /// Exactly once.
    ExactlyOnce,
}

/// Bounds of an ephemeral stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EphemeralDecl {
    /// Most events held.
    pub max_events: u64,
    /// Most bytes held.
    pub max_bytes: u64,
    /// `reject` (default) or `drop-oldest`.
    #[serde(default)]
    pub overflow: OverflowDecl,
}

/// What a full ephemeral stream does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowDecl {
    /// Refuse the append.
    #[default]
    Reject,
    /// Drop the oldest events.
    DropOldest,
}

/// A subscription declared in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionDecl {
    /// The stream.
    pub stream: String,
    /// Its name.
    pub name: String,
    /// `broadcast` (default) or `exclusive`.
    pub mode: Option<ModeDecl>,
    /// `beginning` (default), `end`, an offset, or an RFC 3339 time.
    pub start: Option<StartDecl>,
    /// Ack wait (30s).
    #[serde(default, with = "humantime_serde")]
    pub ack_wait: Option<Duration>,
    /// Deliveries before the dead letter stream (5).
    pub max_deliveries: Option<u32>,
    /// Exclusive only: one event per key in flight.
    #[serde(default)]
    pub ordered_by_key: bool,
    /// Consumer groups: how often members heartbeat (10s).
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    /// Consumer groups: a member not heard from for this long leaves (30s).
    #[serde(default, with = "humantime_serde")]
    pub session_timeout: Option<Duration>,
    /// Consumer groups: `manual`, `after-each`, `after-batch` (with `commit_batch`, 100) or
    /// `periodic` (with `commit_interval`).
    pub commit: Option<CommitDecl>,
    /// Consumer groups: events per commit with `after-batch`.
    pub commit_batch: Option<u32>,
    /// Consumer groups: time between commits with `periodic`.
    #[serde(default, with = "humantime_serde")]
    pub commit_interval: Option<Duration>,
    /// Read receipts: an event not read this long after delivery gives a notice.
    #[serde(default, with = "humantime_serde")]
    pub unread_timeout: Option<Duration>,
    /// Read receipts: an unread timeout also delivers the event again.
    #[serde(default)]
    pub redeliver_unread: bool,
    /// Read receipts: receipts older than this are removed (7 days).
    #[serde(default, with = "humantime_serde")]
    pub receipt_ttl: Option<Duration>,
    /// Read receipts: how often old receipts are removed (1h).
    #[serde(default, with = "humantime_serde")]
    pub receipt_cleanup_interval: Option<Duration>,
    /// The schema version delivered per event type (unset types: the latest).
    #[serde(default)]
    pub schema_versions: std::collections::BTreeMap<String, u32>,
    /// Dead-letter events newer than the version asked for instead of delivering them
    /// marked.
    #[serde(default)]
    pub strict_versions: bool,
    /// Broadcast and read receipts: a consumer detached longer than this loses its position
    /// (the file's top-level `consumer_expiry` when unset; `0s`: never).
    #[serde(default, with = "humantime_serde")]
    pub consumer_expiry: Option<Duration>,
}

/// A consumer group's commit strategy, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitDecl {
    /// Only when the member commits.
    Manual,
    /// After every ack.
    AfterEach,
    /// After `commit_batch` acknowledged events of a partition.
    AfterBatch,
    /// Every `commit_interval`.
    Periodic,
}

/// A subscription mode, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeDecl {
    /// Every consumer gets every event.
    Broadcast,
    /// Competing consumers.
    Exclusive,
    /// Kafka-style consumer group.
    ConsumerGroup,
    /// Broadcast with read receipts.
    ReadReceipt,
}

/// A start position, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StartDecl {
    /// An offset.
    Offset(u64),
    /// `beginning`, `end` or an RFC 3339 time.
    Word(String),
}

/// A configuration that cannot be used. It names the file, the entry and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser says (line, column, key).
        message: String,
    },
    /// A value is wrong.
    #[error("configuration: {what}: {message}")]
    Invalid {
        /// The entry, e.g. `streams[1] (orders).partitions`.
        what: String,
        /// What is wrong, with the limit.
        message: String,
    },
}

impl FileConfig {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(&text, path)
    }

    /// Parses the text of a file (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Where a value given on the command line or in the environment overrides the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir` / `TRIBUTARY_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--store` / `TRIBUTARY_STORE`.
    pub store: Option<String>,
    /// `--grpc-listen` / `TRIBUTARY_GRPC_LISTEN`.
    pub grpc_listen: Option<SocketAddr>,
    /// `--log-format` / `TRIBUTARY_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `--journal` / `TRIBUTARY_JOURNAL`.
    pub journal: Option<PathBuf>,
    /// `--http-listen` / `TRIBUTARY_HTTP_LISTEN`.
    pub http_listen: Option<SocketAddr>,
    /// `--auth-token` / `TRIBUTARY_AUTH_TOKEN`.
    pub auth_token: Option<String>,
    /// `--read-token` / `TRIBUTARY_READ_TOKEN`.
    pub read_token: Option<String>,
    /// `--tls-cert` / `TRIBUTARY_TLS_CERT`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` / `TRIBUTARY_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
    /// `--health-lag-degraded` / `TRIBUTARY_HEALTH_LAG_DEGRADED`.
    pub lag_degraded: Option<u64>,
    /// `--health-lag-unhealthy` / `TRIBUTARY_HEALTH_LAG_UNHEALTHY`.
    pub lag_unhealthy: Option<u64>,
    /// `--health-stall-degraded` / `TRIBUTARY_HEALTH_STALL_DEGRADED`.
    pub stall_degraded: Option<Duration>,
    /// `--health-stall-unhealthy` / `TRIBUTARY_HEALTH_STALL_UNHEALTHY`.
    pub stall_unhealthy: Option<Duration>,
    /// `--pg-pool-size` / `TRIBUTARY_PG_POOL_SIZE`.
    pub pg_pool_size: Option<u32>,
    /// `--pg-statement-timeout` / `TRIBUTARY_PG_STATEMENT_TIMEOUT`.
    pub pg_statement_timeout: Option<Duration>,
    /// `--durability` / `TRIBUTARY_DURABILITY`.
    pub durability: Option<Durability>,
    /// `--append-writes-in-flight` / `TRIBUTARY_APPEND_WRITES_IN_FLIGHT`.
    pub append_writes_in_flight: Option<usize>,
    /// `--max-payload-bytes` / `TRIBUTARY_MAX_PAYLOAD_BYTES`.
    pub max_payload_bytes: Option<usize>,
    /// `--grpc-keepalive-interval` / `TRIBUTARY_GRPC_KEEPALIVE_INTERVAL`.
    pub grpc_keepalive_interval: Option<Duration>,
    /// `--grpc-keepalive-timeout` / `TRIBUTARY_GRPC_KEEPALIVE_TIMEOUT`.
    pub grpc_keepalive_timeout: Option<Duration>,
    /// `--amqp-url` / `TRIBUTARY_AMQP_URL`.
    pub amqp_url: Option<String>,
}

/// The most appends of one stream that may be written at once (`append_writes_in_flight`).
pub const MAX_APPEND_WRITES_IN_FLIGHT: usize = 8;

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The data folder.
    pub data_dir: PathBuf,
    /// The store.
    pub store: StoreSpec,
    /// How a PostgreSQL store is used.
    pub postgres: PgOptions,
    /// When an acknowledged write is durable (either store).
    pub durability: Durability,
    /// Appends of one stream written to the store at once, each committing after the one
    /// before it (1..=[`MAX_APPEND_WRITES_IN_FLIGHT`]); `None`: the store's preference
    /// (SQLite 1, PostgreSQL 2).
    pub append_writes_in_flight: Option<usize>,
    /// The gRPC address (port 0: any free port, printed at start).
    pub grpc_listen: SocketAddr,
    /// HTTP/2 keepalive of gRPC connections: a ping this often on an idle connection, and the
    /// connection closed (its consumers detached) when one is not answered within
    /// `grpc_keepalive.1`. A vanished or frozen client is noticed within their sum.
    pub grpc_keepalive: (Duration, Duration),
    /// Log format.
    pub log_format: LogFormat,
    /// How long a shutdown waits for calls in flight.
    pub shutdown_timeout: Duration,
    /// Where to journal the engine's inputs, if anywhere.
    pub journal: Option<PathBuf>,
    /// The HTTP address (port 0: any free port, printed at start).
    pub http_listen: SocketAddr,
    /// Bearer tokens (none: open).
    pub tokens: Tokens,
    /// TLS for gRPC and HTTP.
    pub tls: Option<TlsFiles>,
    /// Health thresholds.
    pub health: HealthThresholds,
    /// The engine's configuration (limits and defaults, retention and cleanup).
    pub engine: Config,
    /// The broker of cross-service streams, if any (without one they cannot be created).
    pub amqp: Option<tributary_amqp::AmqpConfig>,
    /// Remote streams consumed into local streams (needs `amqp`).
    pub amqp_inbound: Vec<tributary_amqp::InboundBinding>,
    /// Schema versions to register at start.
    pub schemas: Vec<SchemaRegistration>,
    /// Streams to create when missing.
    pub streams: Vec<StreamConfig>,
    /// Subscriptions to create when missing.
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// `streams[0] (orders).partitions`, or without the field when the whole entry is wrong.
fn entry(list: &str, i: usize, name: &str, field: &str) -> String {
    if field.is_empty() {
        format!("{list}[{i}] ({name})")
    } else {
        format!("{list}[{i}] ({name}).{field}")
    }
}

fn invalid(what: String, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        what,
        message: message.to_string(),
    }
}

impl Settings {
    /// The file's values under the overrides, with defaults for the rest; declarations checked.
    pub fn resolve(file: FileConfig, over: Overrides) -> Result<Settings, ConfigError> {
        let store_text = over.store.or(file.store).unwrap_or_else(|| "sqlite".into());
        let store = store_text.parse().map_err(|e| invalid("store".into(), e))?;
        let default_listen: SocketAddr = DEFAULT_GRPC_LISTEN
            .parse()
            .map_err(|e| invalid("grpc_listen".into(), e))?;
        let default_http: SocketAddr = DEFAULT_HTTP_LISTEN
            .parse()
            .map_err(|e| invalid("http_listen".into(), e))?;
        let tokens = Tokens {
            write: over.auth_token.or(file.auth_token),
            read: over.read_token.or(file.read_token),
        };
        tokens
            .validate()
            .map_err(|(field, e)| invalid(field.into(), e))?;
        let tls = match (
            over.tls_cert.or(file.tls_cert),
            over.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls_key".into(), "needed with tls_cert")),
            (None, Some(_)) => return Err(invalid("tls_cert".into(), "needed with tls_key")),
        };
        let fh = file.health.unwrap_or_default();
        let d = HealthThresholds::default();
        let health = HealthThresholds {
            lag_degraded: over
                .lag_degraded
                .or(fh.lag_degraded)
                .unwrap_or(d.lag_degraded),
            lag_unhealthy: over
                .lag_unhealthy
                .or(fh.lag_unhealthy)
                .unwrap_or(d.lag_unhealthy),
            stall_degraded: over
                .stall_degraded
                .or(fh.stall_degraded)
                .unwrap_or(d.stall_degraded),
            stall_unhealthy: over
                .stall_unhealthy
                .or(fh.stall_unhealthy)
                .unwrap_or(d.stall_unhealthy),
        };
        health.validate().map_err(|e| invalid("health".into(), e))?;
        let fp = file.postgres.unwrap_or_default();
        let dp = PgOptions::default();
        let postgres = PgOptions {
            pool_size: over.pg_pool_size.or(fp.pool_size).unwrap_or(dp.pool_size),
            statement_timeout: over
                .pg_statement_timeout
                .or(fp.statement_timeout)
                .unwrap_or(dp.statement_timeout),
            acquire_timeout: fp.acquire_timeout.unwrap_or(dp.acquire_timeout),
        };
        postgres
            .validate()
            .map_err(|e| invalid("postgres".into(), e))?;
        let append_writes_in_flight = over
            .append_writes_in_flight
            .or(file.append_writes_in_flight);
        if let Some(n) = append_writes_in_flight
            && !(1..=MAX_APPEND_WRITES_IN_FLIGHT).contains(&n)
        {
            return Err(invalid(
                "append_writes_in_flight".into(),
                format!("{n} is outside 1..={MAX_APPEND_WRITES_IN_FLIGHT}"),
            ));
        }
        let keepalive = |flag: Option<Duration>, file: Option<Duration>, what: &str| {
            let d = flag.or(file).unwrap_or(Duration::from_secs(10));
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                return Err(invalid(
                    what.into(),
                    format!("{} is outside 100ms..=1h", humantime::format_duration(d)),
                ));
            }
            Ok(d)
        };
        let grpc_keepalive = (
            keepalive(
                over.grpc_keepalive_interval,
                file.grpc_keepalive_interval,
                "grpc_keepalive_interval",
            )?,
            keepalive(
                over.grpc_keepalive_timeout,
                file.grpc_keepalive_timeout,
                "grpc_keepalive_timeout",
            )?,
        );
        let mut engine =
            engine_config(file.retention.as_ref(), file.dead_letter_retention.as_ref())?;
        if let Some(n) = over.max_payload_bytes.or(file.max_payload_bytes) {
            if !(1..=engine.max_batch_bytes).contains(&n) {
                return Err(invalid(
                    "max_payload_bytes".into(),
                    format!(
                        "{n} is outside 1..={} (an event must fit in one append)",
                        engine.max_batch_bytes
                    ),
                ));
            }
            engine.max_payload_bytes = n;
        }
        let amqp = amqp_config(over.amqp_url, file.amqp.as_ref())?;
        engine.relay_enabled = amqp.is_some();
        if let Some(n) = file.amqp.as_ref().and_then(|a| a.relay_window) {
            if !(1..=MAX_RELAY_WINDOW).contains(&n) {
                return Err(invalid(
                    "amqp.relay_window".into(),
                    format!("{n} is outside 1..={MAX_RELAY_WINDOW}"),
                ));
            }
            engine.relay_window = n;
        }
        let amqp_inbound = inbound_bindings(file.amqp.as_ref())?;
        let streams = file
            .streams
            .iter()
            .enumerate()
            .map(|(i, d)| {
                d.to_config()
                    .map_err(|(f, m)| invalid(entry("streams", i, &d.name, f), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let subscriptions = file
            .subscriptions
            .iter()
            .enumerate()
            .map(|(i, d)| {
                d.to_config()
                    .map_err(|(f, m)| invalid(entry("subscriptions", i, &d.name, f), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            data_dir: over
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            store,
            postgres,
            durability: over.durability.or(file.durability).unwrap_or_default(),
            append_writes_in_flight,
            grpc_listen: over
                .grpc_listen
                .or(file.grpc_listen)
                .unwrap_or(default_listen),
            grpc_keepalive,
            log_format: over.log_format.or(file.log_format).unwrap_or_default(),
            shutdown_timeout: file.shutdown_timeout.unwrap_or(Duration::from_secs(10)),
            journal: over.journal.or(file.journal),
            http_listen: over
                .http_listen
                .or(file.http_listen)
                .unwrap_or(default_http),
            tokens,
            tls,
            health,
            engine: Config {
                default_consumer_expiry: file.consumer_expiry.filter(|d| !d.is_zero()),
                ..engine
            },
            amqp,
            amqp_inbound,
            schemas: file.schemas,
            streams,
            subscriptions,
        })
    }
}

/// Largest `amqp.relay_window`: publishes awaiting confirms are held in memory, so the window
/// bounds the relay's memory while the broker is slow or away.
const MAX_RELAY_WINDOW: usize = 100_000;

/// The broker configuration: the URL from the flag, the environment or the file; the rest
/// from the file. `None` without a URL.
fn amqp_config(
    url: Option<String>,
    file: Option<&AmqpDecl>,
) -> Result<Option<tributary_amqp::AmqpConfig>, ConfigError> {
    let Some(url) = url.or_else(|| file.and_then(|f| f.url.clone())) else {
        if file.is_some_and(|f| {
            f.prefix.is_some()
                || f.confirm_timeout.is_some()
                || f.relay_window.is_some()
                || !f.inbound.is_empty()
        }) {
            return Err(invalid(
                "amqp.url".into(),
                "needed with the other [amqp] settings (or --amqp-url, TRIBUTARY_AMQP_URL)",
            ));
        }
        return Ok(None);
    };
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err(invalid(
            "amqp.url".into(),
            "must start with amqp:// or amqps:// (amqp://user:password@host:5672/vhost)",
        ));
    }
    let mut c = tributary_amqp::AmqpConfig::new(url);
    if let Some(p) = file.and_then(|f| f.prefix.clone()) {
        let ok = (1..=100).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(invalid(
                "amqp.prefix".into(),
                format!("{p:?}: 1 to 100 characters of a-z, A-Z, 0-9, '.', '_', '-'"),
            ));
        }
        c.prefix = p;
    }
    if let Some(t) = file.and_then(|f| f.confirm_timeout) {
        if t.is_zero() {
            return Err(invalid("amqp.confirm_timeout".into(), "must be above 0"));
        }
        c.confirm_timeout = t;
    }
    Ok(Some(c))
}

/// The `[[amqp.inbound]]` bindings, checked: one queue per (remote stream, subscription).
fn inbound_bindings(
    file: Option<&AmqpDecl>,
) -> Result<Vec<tributary_amqp::InboundBinding>, ConfigError> {
    let mut out: Vec<tributary_amqp::InboundBinding> = Vec::new();
    for (i, d) in file.map_or(&[][..], |f| &f.inbound).iter().enumerate() {
        let name = format!("{}:{}", d.remote_stream, d.subscription);
        let b = d
            .to_binding()
            .map_err(|(f, m)| invalid(entry("amqp.inbound", i, &name, f), m))?;
        if out
            .iter()
            .any(|o| o.remote == b.remote && o.subscription == b.subscription)
        {
            return Err(invalid(
                entry("amqp.inbound", i, &name, ""),
                "a second binding of the same remote stream and subscription (they would share one queue)",
            ));
        }
        out.push(b);
    }
    Ok(out)
}

/// The engine's configuration: SPEC's defaults, with the file's retention and cleanup.
fn engine_config(
    retention: Option<&RetentionSection>,
    dead_letters: Option<&RetentionDecl>,
) -> Result<Config, ConfigError> {
    let mut c = Config::default();
    if let Some(r) = retention {
        c.default_retention = r.default.policy();
        c.default_retention
            .validate()
            .map_err(|e| invalid("retention".into(), e))?;
        if let Some(i) = r.cleanup_interval {
            c.cleanup_interval = i;
        }
        if let Some(w) = &r.cleanup_window {
            let window = CleanupWindow {
                start: time_of_day(&w.start)
                    .map_err(|e| invalid("retention.cleanup_window.start".into(), e))?,
                end: time_of_day(&w.end)
                    .map_err(|e| invalid("retention.cleanup_window.end".into(), e))?,
            };
            window
                .validate()
                .map_err(|e| invalid("retention.cleanup_window".into(), e))?;
            c.cleanup_window = Some(window);
        }
    }
    if let Some(d) = dead_letters {
        c.dead_letter_retention = d.policy();
        c.dead_letter_retention
            .validate()
            .map_err(|e| invalid("dead_letter_retention".into(), e))?;
    }
    Ok(c)
}

type DeclError = (&'static str, String);

impl StreamDecl {
    /// The stream configuration it declares.
    pub fn to_config(&self) -> Result<StreamConfig, DeclError> {
        let name = StreamName::new(&self.name).map_err(|e| ("name", e.to_string()))?;
        let c = StreamSpec {
            partitions: self.partitions,
            delivery: self.delivery.map(|d| match d {
                Delivery::AtMostOnce => DeliverySemantics::AtMostOnce,
                Delivery::AtLeastOnce => DeliverySemantics::AtLeastOnce,
                Delivery::ExactlyOnce => DeliverySemantics::ExactlyOnce,
            }),
            dedup_window: self.dedup_window,
            cross_service: self.cross_service,
            ephemeral: self.ephemeral.as_ref().map(|e| EphemeralLimits {
                max_events: e.max_events,
                max_bytes: e.max_bytes,
                overflow: match e.overflow {
                    OverflowDecl::Reject => Overflow::Reject,
                    OverflowDecl::DropOldest => Overflow::DropOldest,
                },
            }),
            retention: self.retention.as_ref().map(RetentionDecl::policy),
        }
        .into_config(name);
        c.validate(&Config::default())
            .map_err(|e| ("", e.to_string()))?;
        Ok(c)
    }
}

/// Parses `beginning`, `end`, an offset or an RFC 3339 time.
pub fn parse_start(s: &str) -> Result<StartPosition, String> {
    match s {
        "beginning" => Ok(StartPosition::Beginning),
        "end" => Ok(StartPosition::End),
        _ => {
            if let Ok(o) = s.parse::<u64>() {
                return Ok(StartPosition::Offset(o));
            }
            humantime::parse_rfc3339_weak(s)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| {
                    StartPosition::Time(UnixMillis(
                        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                    ))
                })
                .ok_or_else(|| {
                    format!("{s:?}: expected beginning, end, an offset or an RFC 3339 time")
                })
        }
    }
}

impl SubscriptionDecl {
    /// The subscription configuration it declares.
    pub fn to_config(&self) -> Result<SubscriptionConfig, DeclError> {
        let stream = StreamName::new(&self.stream).map_err(|e| ("stream", e.to_string()))?;
        let name = SubscriptionName::new(&self.name).map_err(|e| ("name", e.to_string()))?;
        let mode = match self.mode.unwrap_or(ModeDecl::Broadcast) {
            ModeDecl::Broadcast => SubscriptionMode::Broadcast,
            ModeDecl::Exclusive => SubscriptionMode::Exclusive,
            ModeDecl::ConsumerGroup => SubscriptionMode::ConsumerGroup,
            ModeDecl::ReadReceipt => SubscriptionMode::ReadReceipt,
        };
        let start = match &self.start {
            None => None,
            Some(StartDecl::Offset(o)) => Some(StartPosition::Offset(*o)),
            Some(StartDecl::Word(w)) => Some(parse_start(w).map_err(|e| ("start", e))?),
        };
        // `commit_batch` and `commit_interval` belong to one strategy each: given with
        // another (or with none), they would be ignored, so they are refused.
        let d = Config::default();
        if self.commit_batch.is_some() && self.commit != Some(CommitDecl::AfterBatch) {
            return Err(("commit_batch", "needs commit = \"after-batch\"".to_string()));
        }
        if self.commit_interval.is_some() && self.commit != Some(CommitDecl::Periodic) {
            return Err(("commit_interval", "needs commit = \"periodic\"".to_string()));
        }
        let commit = match self.commit {
            None => None,
            Some(CommitDecl::Manual) => Some(CommitStrategy::Manual),
            Some(CommitDecl::AfterEach) => Some(CommitStrategy::AfterEach),
            Some(CommitDecl::AfterBatch) => Some(CommitStrategy::AfterBatch(
                self.commit_batch.unwrap_or(d.default_commit_batch),
            )),
            Some(CommitDecl::Periodic) => Some(CommitStrategy::Periodic(
                self.commit_interval
                    .ok_or(("commit_interval", "needed with periodic".to_string()))?,
            )),
        };
        let options = SubscriptionOptions {
            start,
            ack_wait: self.ack_wait,
            max_deliveries: self.max_deliveries,
            ordered_by_key: Some(self.ordered_by_key),
            heartbeat_interval: self.heartbeat_interval,
            session_timeout: self.session_timeout,
            commit,
            unread_timeout: self.unread_timeout,
            redeliver_unread: Some(self.redeliver_unread),
            receipt_ttl: self.receipt_ttl,
            receipt_cleanup_interval: self.receipt_cleanup_interval,
            schema_versions: self.schema_versions.clone(),
            strict_versions: self.strict_versions,
            consumer_expiry: self.consumer_expiry,
        };
        SubscriptionConfig::from_options(stream, name, mode, options)
            .map_err(|e| ("", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn flags_and_environment_beat_the_file() {
        let file = parse(
            r#"
            data_dir = "/from/file"
            grpc_listen = "127.0.0.1:1"
            store = "sqlite:/file.db"
            "#,
        )
        .expect("valid");
        let over = Overrides {
            grpc_listen: Some("127.0.0.1:2".parse().expect("addr")),
            ..Overrides::default()
        };
        let s = Settings::resolve(file, over).expect("valid");
        assert_eq!(s.grpc_listen.port(), 2);
        assert_eq!(s.data_dir, PathBuf::from("/from/file"));
        assert_eq!(s.store, StoreSpec::Sqlite(Some("/file.db".into())));
    }

    #[test]
    fn postgres_options_are_layered_and_checked() {
        let file = parse(
            r#"
            [postgres]
            pool_size = 8
            statement_timeout = "10s"
            acquire_timeout = "2s"
            "#,
        )
        .expect("valid");
        let over = Overrides {
            pg_pool_size: Some(64),
            ..Overrides::default()
        };
        let s = Settings::resolve(file.clone(), over).expect("valid");
        assert_eq!(s.postgres.pool_size, 64, "the flag beats the file");
        assert_eq!(s.postgres.statement_timeout, Duration::from_secs(10));
        assert_eq!(s.postgres.acquire_timeout, Duration::from_secs(2));
        let defaults = Settings::resolve(FileConfig::default(), Overrides::default()).expect("ok");
        assert_eq!(defaults.postgres, PgOptions::default());
        let e = Settings::resolve(
            file,
            Overrides {
                pg_pool_size: Some(0),
                ..Overrides::default()
            },
        )
        .expect_err("an empty pool is refused")
        .to_string();
        assert!(
            e.contains("postgres") && e.contains("pool_size 0 is outside 1..=1000"),
            "{e}"
        );
        assert!(
            parse("[postgres]\npool = 3\n").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn durability_is_layered_and_checked() {
        let file = parse("durability = \"normal\"\n").expect("valid");
        let s = Settings::resolve(file.clone(), Overrides::default()).expect("valid");
        assert_eq!(s.durability, Durability::Normal);
        let over = Overrides {
            durability: Some(Durability::Full),
            ..Overrides::default()
        };
        let s = Settings::resolve(file, over).expect("valid");
        assert_eq!(s.durability, Durability::Full, "the flag beats the file");
        let defaults = Settings::resolve(FileConfig::default(), Overrides::default()).expect("ok");
        assert_eq!(defaults.durability, Durability::Full, "fsync by default");
        let e = parse("durability = \"fast\"\n")
            .expect_err("an unknown durability is refused")
            .to_string();
        assert!(e.contains("fast") && e.contains("normal"), "{e}");
    }

    #[test]
    fn append_writes_in_flight_is_layered_and_checked() {
        let file = parse("append_writes_in_flight = 3\n").expect("valid");
        let s = Settings::resolve(file.clone(), Overrides::default()).expect("valid");
        assert_eq!(s.append_writes_in_flight, Some(3));
        let over = Overrides {
            append_writes_in_flight: Some(1),
            ..Overrides::default()
        };
        let s = Settings::resolve(file.clone(), over).expect("valid");
        assert_eq!(
            s.append_writes_in_flight,
            Some(1),
            "the flag beats the file"
        );
        let defaults = Settings::resolve(FileConfig::default(), Overrides::default()).expect("ok");
        assert_eq!(
            defaults.append_writes_in_flight, None,
            "the store's preference"
        );
        for bad in [0, MAX_APPEND_WRITES_IN_FLIGHT + 1] {
            let e = Settings::resolve(
                file.clone(),
                Overrides {
                    append_writes_in_flight: Some(bad),
                    ..Overrides::default()
                },
            )
            .expect_err("out of range")
            .to_string();
            assert!(
                e.contains("append_writes_in_flight")
                    && e.contains(&format!("{bad} is outside 1..=8")),
                "{e}"
            );
        }
    }

    #[test]
    fn defaults_without_a_file() {
        let s = Settings::resolve(FileConfig::default(), Overrides::default()).expect("valid");
        assert_eq!(s.grpc_listen.to_string(), DEFAULT_GRPC_LISTEN);
        assert_eq!(s.store, StoreSpec::Sqlite(None));
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn declarations_become_configurations() {
        let file = parse(
            r#"
            [[streams]]
            name = "orders"
            partitions = 4
            delivery = "exactly-once"
            dedup_window = "1m"

            [[streams]]
            name = "presence"
            ephemeral = { max_events = 10, max_bytes = 1000, overflow = "drop-oldest" }

            [[subscriptions]]
            stream = "orders"
            name = "billing"
            mode = "exclusive"
            start = 42
            ack_wait = "5s"
            "#,
        )
        .expect("valid");
        let s = Settings::resolve(file, Overrides::default()).expect("valid");
        assert_eq!(s.streams[0].partitions, 4);
        assert_eq!(s.streams[0].delivery, DeliverySemantics::ExactlyOnce);
        assert_eq!(s.streams[0].dedup_window, Duration::from_secs(60));
        assert!(s.streams[1].is_ephemeral());
        assert_eq!(s.subscriptions[0].start, StartPosition::Offset(42));
        assert_eq!(s.subscriptions[0].ack_wait, Duration::from_secs(5));
    }

    #[test]
    fn consumer_expiry_is_read_server_wide_and_per_subscription() {
        let file = parse(
            r#"
            consumer_expiry = "30d"

            [[subscriptions]]
            stream = "orders"
            name = "fan"
            consumer_expiry = "2h"

            [[subscriptions]]
            stream = "orders"
            name = "audit"
            mode = "read-receipt"
            consumer_expiry = "0s"

            [[subscriptions]]
            stream = "orders"
            name = "plain"
            "#,
        )
        .expect("valid");
        let s = Settings::resolve(file, Overrides::default()).expect("valid");
        assert_eq!(
            s.engine.default_consumer_expiry,
            Some(Duration::from_secs(30 * 86_400))
        );
        let expiries: Vec<Option<Duration>> =
            s.subscriptions.iter().map(|c| c.consumer_expiry).collect();
        assert_eq!(
            expiries,
            vec![Some(Duration::from_secs(7200)), Some(Duration::ZERO), None]
        );
        let off = Settings::resolve(FileConfig::default(), Overrides::default()).expect("valid");
        assert_eq!(off.engine.default_consumer_expiry, None, "off by default");
        let file = parse(
            r#"
            [[subscriptions]]
            stream = "orders"
            name = "work"
            mode = "exclusive"
            consumer_expiry = "1h"
            "#,
        )
        .expect("parses");
        let e = Settings::resolve(file, Overrides::default())
            .expect_err("no position per consumer")
            .to_string();
        assert!(
            e.contains("subscriptions[0] (work)") && e.contains("consumer_expiry"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_declaration_names_its_entry_and_limit() {
        let file = parse(
            r#"
            [[streams]]
            name = "orders"
            partitions = 0
            "#,
        )
        .expect("valid toml");
        let e = Settings::resolve(file, Overrides::default()).expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("streams[0] (orders)"), "{text}");
        assert!(text.contains("partitions"), "{text}");
    }

    /// Each option below would be ignored by the subscription it is given to: refused, the
    /// message naming the entry and the option.
    #[test]
    fn subscription_options_that_would_be_ignored_are_refused() {
        let cases = [
            (
                "mode = \"consumer-group\"\ncommit_batch = 10",
                "commit_batch",
            ),
            (
                "mode = \"consumer-group\"\ncommit = \"periodic\"\ncommit_interval = \"1s\"\ncommit_batch = 10",
                "commit_batch",
            ),
            (
                "mode = \"consumer-group\"\ncommit = \"after-batch\"\ncommit_interval = \"1s\"",
                "commit_interval",
            ),
            (
                "mode = \"consumer-group\"\ncommit_interval = \"1s\"",
                "commit_interval",
            ),
            (
                "mode = \"exclusive\"\nsession_timeout = \"1m\"",
                "session_timeout",
            ),
            ("heartbeat_interval = \"1s\"", "heartbeat_interval"),
            ("mode = \"exclusive\"\ncommit = \"manual\"", "commit"),
            (
                "mode = \"broadcast\"\nunread_timeout = \"1m\"",
                "unread_timeout",
            ),
            ("mode = \"exclusive\"\nreceipt_ttl = \"1d\"", "receipt_ttl"),
            (
                "mode = \"consumer-group\"\nreceipt_cleanup_interval = \"1h\"",
                "receipt_cleanup_interval",
            ),
            (
                "mode = \"broadcast\"\nordered_by_key = true",
                "ordered_by_key",
            ),
            ("schema_versions = { \"a.b\" = 0 }", "schema_versions"),
        ];
        for (options, field) in cases {
            let text = format!("[[subscriptions]]\nstream = \"s\"\nname = \"q\"\n{options}\n");
            let file = parse(&text).expect("valid toml");
            let e = Settings::resolve(file, Overrides::default()).expect_err(options);
            let e = e.to_string();
            assert!(e.contains("subscriptions[0] (q)"), "{options}: {e}");
            assert!(e.contains(field), "{options}: {e}");
        }
    }

    #[test]
    fn every_subscription_option_can_be_set_in_the_file() {
        let file = parse(
            r#"
            [[subscriptions]]
            stream = "s"
            name = "receipts"
            mode = "read-receipt"
            unread_timeout = "1m"
            redeliver_unread = true
            receipt_ttl = "2days"
            receipt_cleanup_interval = "10m"
            schema_versions = { "order.created" = 2 }
            strict_versions = true

            [[subscriptions]]
            stream = "s"
            name = "group"
            mode = "consumer-group"
            heartbeat_interval = "2s"
            session_timeout = "9s"
            commit = "after-batch"
            commit_batch = 7
            "#,
        )
        .expect("valid");
        let s = Settings::resolve(file, Overrides::default()).expect("valid");
        let r = &s.subscriptions[0];
        assert_eq!(r.receipt_cleanup_interval, Duration::from_secs(600));
        assert_eq!(r.receipt_ttl, Duration::from_secs(2 * 86_400));
        assert_eq!(r.schema_versions.get("order.created"), Some(&2));
        assert!(r.strict_versions && r.redeliver_unread);
        let g = &s.subscriptions[1];
        assert_eq!(g.commit, CommitStrategy::AfterBatch(7));
        assert_eq!(g.session_timeout, Duration::from_secs(9));
    }

    #[test]
    fn the_payload_limit_is_layered_and_checked() {
        let file = parse("max_payload_bytes = 2048\n").expect("valid");
        let s = Settings::resolve(file.clone(), Overrides::default()).expect("valid");
        assert_eq!(s.engine.max_payload_bytes, 2048);
        let over = Overrides {
            max_payload_bytes: Some(4096),
            ..Overrides::default()
        };
        let s = Settings::resolve(file, over).expect("valid");
        assert_eq!(s.engine.max_payload_bytes, 4096);
        let defaults = Settings::resolve(FileConfig::default(), Overrides::default()).expect("ok");
        assert_eq!(defaults.engine.max_payload_bytes, 1 << 20);
        for bad in [0, (4 << 20) + 1] {
            let over = Overrides {
                max_payload_bytes: Some(bad),
                ..Overrides::default()
            };
            let e = Settings::resolve(FileConfig::default(), over).expect_err("refused");
            let e = e.to_string();
            assert!(
                e.contains("max_payload_bytes") && e.contains("4194304"),
                "{e}"
            );
        }
    }

    #[test]
    fn an_exactly_once_stream_without_a_dedup_window_is_refused() {
        let file = parse(
            r#"
            [[streams]]
            name = "payments"
            delivery = "exactly-once"
            dedup_window = "0s"
            "#,
        )
        .expect("valid toml");
        let e = Settings::resolve(file, Overrides::default()).expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("streams[0] (payments)"), "{text}");
        assert!(text.contains("dedup_window"), "{text}");
    }

    #[test]
    fn unknown_keys_and_bad_store_are_refused() {
        let e = parse("grpc_listn = \"x\"").expect_err("unknown key");
        assert!(e.to_string().contains("grpc_listn"), "{e}");
        let over = Overrides {
            store: Some("mysql://x".into()),
            ..Overrides::default()
        };
        let e = Settings::resolve(FileConfig::default(), over).expect_err("refused");
        assert!(e.to_string().contains("mysql://x"), "{e}");
    }

    #[test]
    fn retention_schemas_and_cleanup_window_are_read() {
        let file = parse(
            r#"
            [retention]
            max_age = "30days"
            cleanup_window = { start = "23:00", end = "01:30" }

            [[streams]]
            name = "orders"
            retention = { max_events = 100, keep_unconsumed = true }

            [[schemas]]
            event_type = "order.created"
            version = 2
            rules = [{ op = "rename", from = "name", to = "customer" }]
            "#,
        )
        .expect("valid");
        let s = Settings::resolve(file, Overrides::default()).expect("valid");
        assert_eq!(
            s.engine.default_retention.max_age,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            s.engine.cleanup_window,
            Some(CleanupWindow {
                start: 23 * 3600,
                end: 5400
            })
        );
        let r = s.streams[0].retention.expect("retention");
        assert_eq!((r.max_events, r.keep_unconsumed), (Some(100), true));
        assert_eq!(s.schemas[0].rules.len(), 1);
        let bad = parse("[retention]\ncleanup_window = { start = \"25:00\", end = \"01:00\" }")
            .expect("toml");
        let e = Settings::resolve(bad, Overrides::default()).expect_err("refused");
        assert!(e.to_string().contains("cleanup_window.start"), "{e}");
    }

    #[test]
    fn http_tokens_tls_and_health_are_layered_and_checked() {
        let file = parse(
            r#"
            http_listen = "127.0.0.1:9"
            auth_token = "file-token-0123456789"
            tls_cert = "c.pem"
            tls_key = "k.pem"

            [health]
            lag_degraded = 5
            lag_unhealthy = 50
            stall_degraded = "2s"
            "#,
        )
        .expect("valid");
        let over = Overrides {
            auth_token: Some("flag-token-0123456789".into()),
            lag_unhealthy: Some(60),
            ..Overrides::default()
        };
        let s = Settings::resolve(file.clone(), over).expect("valid");
        assert_eq!(s.http_listen.port(), 9);
        assert_eq!(s.tokens.write.as_deref(), Some("flag-token-0123456789"));
        assert_eq!(s.tokens.read, None);
        assert_eq!(s.tls.as_ref().map(|t| t.key.clone()), Some("k.pem".into()));
        assert_eq!((s.health.lag_degraded, s.health.lag_unhealthy), (5, 60));
        assert_eq!(s.health.stall_degraded, Duration::from_secs(2));
        assert_eq!(s.health.stall_unhealthy, Duration::from_secs(900));

        let refused = |over: Overrides, file: FileConfig, what: &str| {
            let e = Settings::resolve(file, over).expect_err(what).to_string();
            assert!(e.contains(what), "{e}");
        };
        refused(
            Overrides {
                auth_token: Some("short".into()),
                ..Overrides::default()
            },
            FileConfig::default(),
            "auth_token",
        );
        refused(
            Overrides {
                read_token: Some("read-token-0123456789".into()),
                ..Overrides::default()
            },
            FileConfig::default(),
            "read_token",
        );
        refused(
            Overrides {
                tls_cert: Some("c.pem".into()),
                ..Overrides::default()
            },
            FileConfig::default(),
            "tls_key",
        );
        refused(
            Overrides {
                lag_degraded: Some(100),
                lag_unhealthy: Some(10),
                ..Overrides::default()
            },
            FileConfig::default(),
            "lag_unhealthy",
        );
        let defaults = Settings::resolve(FileConfig::default(), Overrides::default()).expect("ok");
        assert_eq!(defaults.http_listen.to_string(), DEFAULT_HTTP_LISTEN);
        assert_eq!(defaults.health, HealthThresholds::default());
        assert!(!defaults.tokens.enabled());
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("end"), Ok(StartPosition::End));
        assert_eq!(parse_start("7"), Ok(StartPosition::Offset(7)));
        assert_eq!(
            parse_start("1970-01-01T00:00:01Z"),
            Ok(StartPosition::Time(UnixMillis(1000)))
        );
        assert!(parse_start("yesterday").is_err());
    }

    #[test]
    fn inbound_bindings_are_read_and_checked() {
        let file = parse(
            r#"
            [amqp]
            url = "amqp://localhost"
            [[amqp.inbound]]
            remote_stream = "orders"
            subscription = "billing"
            stream = "orders-in"
            [[amqp.inbound]]
            remote_stream = "orders"
            subscription = "audit"
            stream = "audit"
            routing_keys = ["order.*", "refund.#"]
            max_in_flight = 50
            "#,
        )
        .expect("valid");
        let s = Settings::resolve(file, Overrides::default()).expect("valid");
        let b = &s.amqp_inbound;
        assert_eq!(b.len(), 2);
        assert_eq!(
            (
                b[0].remote.as_str(),
                b[0].subscription.as_str(),
                b[0].local.as_str()
            ),
            ("orders", "billing", "orders-in")
        );
        assert_eq!(
            (b[0].routing_keys.clone(), b[0].max_in_flight),
            (vec!["#".to_string()], 1000)
        );
        assert_eq!(b[1].routing_keys, ["order.*", "refund.#"]);
        assert_eq!(b[1].max_in_flight, 50);

        let refused = |text: &str| {
            let file = parse(text).expect("parses");
            Settings::resolve(file, Overrides::default())
                .expect_err("refused")
                .to_string()
        };
        let e = refused(
            "[[amqp.inbound]]\nremote_stream = \"a\"\nsubscription = \"s\"\nstream = \"b\"\n",
        );
        assert!(e.contains("amqp.url"), "{e}");
        let one = "[amqp]\nurl = \"amqp://h\"\n[[amqp.inbound]]\nremote_stream = \"a\"\nsubscription = \"s\"\nstream = \"b\"\n";
        let e = refused(&format!("{one}max_in_flight = 70000\n"));
        assert!(
            e.contains("amqp.inbound[0] (a:s).max_in_flight") && e.contains("1..=65535"),
            "{e}"
        );
        let e = refused(&one.replace("url = ", "relay_window = 0\nurl = "));
        assert!(
            e.contains("amqp.relay_window") && e.contains("1..=100000"),
            "{e}"
        );
        let e = refused("[amqp]\nrelay_window = 10\n");
        assert!(e.contains("amqp.url"), "{e}");
        let ok = parse(&one.replace("url = ", "relay_window = 5000\nurl = ")).expect("parses");
        let s = Settings::resolve(ok, Overrides::default()).expect("accepted");
        assert_eq!(s.engine.relay_window, 5000);
        let e = refused(&format!("{one}routing_keys = []\n"));
        assert!(e.contains("routing_keys"), "{e}");
        let e = refused(&one.replace("\"b\"", "\"Bad Name\""));
        assert!(e.contains("amqp.inbound[0] (a:s).stream"), "{e}");
        let e = refused(&format!("{one}{}", &one[one.find("[[").unwrap_or(0)..]));
        assert!(
            e.contains("amqp.inbound[1]") && e.contains("same remote stream"),
            "{e}"
        );
    }
}
