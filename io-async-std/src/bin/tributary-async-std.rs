//! `tributary-async-std`: the engine and the gRPC service `tributary.v1.EventStream` on
//! async-std, over SQLite or PostgreSQL, in a process with no tokio runtime.
//!
//! `tributary-async-std serve --store sqlite:PATH --grpc-listen 127.0.0.1:50051` prints
//! `tributary-async-std: listening grpc=http://ADDR store=STORE` once it listens, and stops
//! cleanly on SIGINT or SIGTERM. The engine runs with its default configuration. The full
//! server (HTTP management, tokens, TLS, a configuration file, AMQP) is `tributary`, on tokio.

/// The same allocator as the `tributary` binary (BENCHMARKS.md compares them).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;
use tributary_auth::Tokens;
use tributary_core::{Config, Engine};
use tributary_io_async_std::grpc::{self, GrpcOptions};
use tributary_io_async_std::{AsyncStdRuntime, Clock, ExecutorConfig, Runtime, start};
use tributary_store_any::{BadStoreSpec, StoreSpec};
use tributary_store_api::Store;

#[derive(Parser)]
#[command(
    name = "tributary-async-std",
    version,
    about = "Tributary's engine and gRPC service on async-std"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve gRPC on --grpc-listen over --store. Stops cleanly on SIGINT or SIGTERM.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// `sqlite` (tributary.db in --data-dir), `sqlite:PATH`, or
    /// `postgres://USER@HOST:PORT/DB[#SCHEMA]`.
    #[arg(long, env = "TRIBUTARY_STORE", default_value = "sqlite")]
    store: String,
    /// Where `--store sqlite` keeps its file.
    #[arg(long, env = "TRIBUTARY_DATA_DIR", default_value = "./tributary-data")]
    data_dir: PathBuf,
    /// The bearer token that writing gRPC calls need (prefer the environment: a flag is
    /// visible to other users of the machine).
    #[arg(long, env = "TRIBUTARY_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// A read-only bearer token; when set, reads need a token too (this or --auth-token).
    #[arg(long, env = "TRIBUTARY_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// The gRPC address; port 0 picks a free port (printed).
    #[arg(
        long,
        alias = "grpc",
        env = "TRIBUTARY_GRPC_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    grpc_listen: SocketAddr,
    /// HTTP/2 pings on idle gRPC connections, this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    grpc_keepalive_interval: Duration,
    /// An unanswered ping closes the connection after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    grpc_keepalive_timeout: Duration,
    /// The whole shutdown (calls in flight, the engine, the store) takes at most this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_timeout: Duration,
    /// Log lines for people or as JSON; filter with RUST_LOG.
    #[arg(
        long,
        env = "TRIBUTARY_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

fn main() -> ExitCode {
    let Cmd::Serve(args) = Cli::parse().command;
    init_logging(args.log_format);
    match async_std::task::block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(code = 3, error = %e, "cannot serve");
            eprintln!("tributary-async-std: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let tokens = Tokens {
        write: args.auth_token.clone(),
        read: args.read_token.clone(),
    };
    tokens
        .validate()
        .map_err(|(field, e)| format!("{field}: {e}"))?;
    let spec: StoreSpec = args.store.parse().map_err(|e: BadStoreSpec| e.0)?;
    let shown = spec.describe(&args.data_dir);
    let store = spec
        .open(&args.data_dir)
        .await
        .map_err(|e| format!("store {shown}: {e}"))?;
    let config = Config {
        max_append_writes_in_flight: store.writes_in_flight(),
        ..Config::default()
    };
    let clock = Clock::default();
    let engine = Engine::new(config.clone(), rand::random(), clock.now())
        .map_err(|e| format!("engine: {e}"))?;
    let handle = start(
        AsyncStdRuntime,
        store.clone(),
        engine,
        clock,
        ExecutorConfig::default(),
    );
    let listener = async_std::net::TcpListener::bind(args.grpc_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.grpc_listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", args.grpc_listen))?;
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .map_err(|e| format!("signals: {e}"))?;
    println!("tributary-async-std: listening grpc=http://{addr} store={shown}");
    let _ = std::io::stdout().flush();
    tracing::info!(code = 1, grpc = %addr, store = %shown, runtime = "async-std", "serving");
    // One deadline for the whole shutdown, from the signal on.
    let signalled: Arc<OnceLock<Instant>> = Arc::default();
    let at = signalled.clone();
    let options = GrpcOptions {
        tokens,
        keepalive_interval: args.grpc_keepalive_interval,
        keepalive_timeout: args.grpc_keepalive_timeout,
        shutdown_timeout: args.shutdown_timeout,
        engine: config,
    };
    grpc::serve(
        listener,
        handle.clone(),
        AsyncStdRuntime,
        options,
        async move {
            let _ = signals.next().await;
            let _ = at.set(Instant::now());
        },
    )
    .await;
    let deadline = signalled.get().copied().unwrap_or_else(Instant::now) + args.shutdown_timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    // The engine task ends once the last handle is gone.
    let stopped = handle.stopped();
    drop(handle);
    if !within(left(), stopped).await {
        tracing::warn!(code = 3, timeout = ?args.shutdown_timeout, "the engine task did not end within the shutdown timeout: stopping anyway");
    }
    // Whatever was acknowledged is already durable: a close cut short loses nothing.
    if !within(left(), store.close()).await {
        tracing::warn!(code = 3, timeout = ?args.shutdown_timeout, "the store did not close within the shutdown timeout: stopping anyway");
    }
    tracing::info!(code = 4, "stopped");
    Ok(())
}

/// Whether `f` finished within `d`.
async fn within(d: Duration, f: impl std::future::Future<Output = ()>) -> bool {
    use futures_util::FutureExt;
    futures_util::select_biased! {
        _ = f.fuse() => true,
        _ = AsyncStdRuntime.sleep(d).fuse() => false,
    }
}
