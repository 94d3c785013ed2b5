//! `tributary`: the server (`tributary serve`) and its command-line client.
//!
//! Every client command takes `--server URL` (default `http://127.0.0.1:50051`, or
//! `TRIBUTARY_SERVER`). Errors are one line on stderr and a non-zero exit code.

mod client;

/// mimalloc: measured 30 to 55 % more events/s than the system allocator in `bench-e2e`
/// (BENCHMARKS.md), where glibc malloc took a sixth of the CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tributary_server::config::{ConfigError, FileConfig, LogFormat, Overrides, Settings};
use tributary_server::{logging, serve};

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Tributary: an event-streaming engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the server: gRPC on --grpc-listen, the embedded SQLite store in --data-dir unless
    /// --store names another. Stops cleanly on SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Create, list, show or delete streams.
    #[command(subcommand)]
    Stream(client::StreamCmd),
    /// Publish one event (--data), or one per line of stdin (each line the event's JSON data).
    Publish(client::PublishArgs),
    /// Read a subscription, printing one JSON object per event and acknowledging as it goes.
    Subscribe(client::SubscribeArgs),
    /// Replay a stream from an offset or a time, optionally to a time, at a rate.
    Replay(client::ReplayArgs),
    /// Show, reset or remove a subscription's positions.
    #[command(subcommand)]
    Offsets(client::OffsetsCmd),
    /// Register or list event schemas and their upcasters.
    #[command(subcommand)]
    Schema(client::SchemaCmd),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML configuration file (lowest precedence: environment and flags beat it).
    #[arg(long, env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
    /// Where the embedded store keeps its data [default: ./tributary-data].
    #[arg(long, env = "TRIBUTARY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `sqlite` (default), `sqlite:PATH`, or `postgres://USER@HOST:PORT/DB[#SCHEMA]`.
    #[arg(long, env = "TRIBUTARY_STORE")]
    store: Option<String>,
    /// The gRPC address [default: 127.0.0.1:50051]; port 0 picks a free port (printed).
    #[arg(long, env = "TRIBUTARY_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// Log lines for people or as JSON [default: pretty]; filter with RUST_LOG.
    #[arg(long, env = "TRIBUTARY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Record every input of the engine in this file, for `tributary-simulation --journal`.
    #[arg(long, env = "TRIBUTARY_JOURNAL")]
    journal: Option<PathBuf>,
    /// The HTTP address: management API, health, metrics [default: 127.0.0.1:8080]; port 0
    /// picks a free port (printed).
    #[arg(long, env = "TRIBUTARY_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// The bearer token that mutating HTTP requests and writing gRPC calls need (prefer the
    /// environment or the file: a flag is visible to other users of the machine).
    #[arg(long, env = "TRIBUTARY_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// A read-only bearer token; when set, reads need a token too (this or --auth-token).
    #[arg(long, env = "TRIBUTARY_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// TLS certificate chain (PEM) for gRPC and HTTP; needs --tls-key.
    #[arg(long, env = "TRIBUTARY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, env = "TRIBUTARY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Health: lag above this is degraded [default: 1000].
    #[arg(long, env = "TRIBUTARY_HEALTH_LAG_DEGRADED")]
    health_lag_degraded: Option<u64>,
    /// Health: lag above this is unhealthy [default: 10000].
    #[arg(long, env = "TRIBUTARY_HEALTH_LAG_UNHEALTHY")]
    health_lag_unhealthy: Option<u64>,
    /// Health: lag and no progress for this long is degraded [default: 5m].
    #[arg(long, env = "TRIBUTARY_HEALTH_STALL_DEGRADED", value_parser = humantime::parse_duration)]
    health_stall_degraded: Option<Duration>,
    /// Health: lag and no progress for this long is unhealthy [default: 15m].
    #[arg(long, env = "TRIBUTARY_HEALTH_STALL_UNHEALTHY", value_parser = humantime::parse_duration)]
    health_stall_unhealthy: Option<Duration>,
    /// PostgreSQL: connections in the pool [default: 32].
    #[arg(long, env = "TRIBUTARY_PG_POOL_SIZE")]
    pg_pool_size: Option<u32>,
    /// PostgreSQL: the server-side limit of one statement [default: 30s].
    #[arg(long, env = "TRIBUTARY_PG_STATEMENT_TIMEOUT", value_parser = humantime::parse_duration)]
    pg_statement_timeout: Option<Duration>,
    /// `full`: every answer waits for the fsync of its commit; `normal`: the fsync is left to
    /// the database (a machine crash may lose the last acknowledged writes) [default: full].
    #[arg(long, env = "TRIBUTARY_DURABILITY")]
    durability: Option<tributary_store_api::Durability>,
    /// Appends of one stream written to the store at once, each committing after the one
    /// before [default: the store's, SQLite 1, PostgreSQL 2]. More overlap the server's work
    /// with the store's, in smaller writes (BENCHMARKS.md).
    #[arg(long, env = "TRIBUTARY_APPEND_WRITES_IN_FLIGHT")]
    append_writes_in_flight: Option<usize>,
    /// Threads of the async runtime [default: one per core]. With a database on the same
    /// cores, fewer leave it more CPU (BENCHMARKS.md).
    #[arg(long, env = "TRIBUTARY_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// gRPC: how often an idle connection is probed with an HTTP/2 ping [default: 10s].
    #[arg(long, env = "TRIBUTARY_GRPC_KEEPALIVE_INTERVAL", value_parser = humantime::parse_duration)]
    grpc_keepalive_interval: Option<Duration>,
    /// gRPC: a ping not answered within this closes the connection (its consumers detach)
    /// [default: 10s].
    #[arg(long, env = "TRIBUTARY_GRPC_KEEPALIVE_TIMEOUT", value_parser = humantime::parse_duration)]
    grpc_keepalive_timeout: Option<Duration>,
    /// The broker of cross-service streams, `amqp://user:password@host:5672/vhost` (or
    /// `amqps://`) [default: none: cross-service streams are refused].
    #[arg(long, env = "TRIBUTARY_AMQP_URL")]
    amqp_url: Option<String>,
    /// Largest payload of one event, bytes [default: 1048576, 1 MiB; at most 4194304, the
    /// largest append].
    #[arg(long, env = "TRIBUTARY_MAX_PAYLOAD_BYTES")]
    max_payload_bytes: Option<usize>,
}

fn settings(a: ServeArgs) -> Result<Settings, ConfigError> {
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    Settings::resolve(
        file,
        Overrides {
            data_dir: a.data_dir,
            store: a.store,
            grpc_listen: a.grpc_listen,
            log_format: a.log_format,
            journal: a.journal,
            http_listen: a.http_listen,
            auth_token: a.auth_token,
            read_token: a.read_token,
            tls_cert: a.tls_cert,
            tls_key: a.tls_key,
            lag_degraded: a.health_lag_degraded,
            lag_unhealthy: a.health_lag_unhealthy,
            stall_degraded: a.health_stall_degraded,
            stall_unhealthy: a.health_stall_unhealthy,
            pg_pool_size: a.pg_pool_size,
            pg_statement_timeout: a.pg_statement_timeout,
            durability: a.durability,
            append_writes_in_flight: a.append_writes_in_flight,
            max_payload_bytes: a.max_payload_bytes,
            grpc_keepalive_interval: a.grpc_keepalive_interval,
            grpc_keepalive_timeout: a.grpc_keepalive_timeout,
            amqp_url: a.amqp_url,
        },
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Cmd::Serve(ServeArgs {
        worker_threads: Some(n),
        ..
    }) = &cli.command
    {
        builder.worker_threads(usize::from(*n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tributary: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Serve(a) => {
                let s = settings(a).map_err(|e| e.to_string())?;
                logging::init(s.log_format);
                serve(s).await.map_err(|e| e.to_string())
            }
            Cmd::Stream(c) => client::stream(c).await,
            Cmd::Publish(a) => client::publish(a).await,
            Cmd::Subscribe(a) => client::subscribe(a).await,
            Cmd::Replay(a) => client::replay(a).await,
            Cmd::Offsets(c) => client::offsets(c).await,
            Cmd::Schema(c) => client::schema(c).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tributary: {e}");
            ExitCode::FAILURE
        }
    }
}
