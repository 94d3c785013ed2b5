//! `tributary serve`: the engine on its store, the gRPC service on a socket, and a clean stop
//! on SIGINT or SIGTERM.

use crate::server::Link;
use crate::server::config::Settings;
use crate::server::store::AnyStore;
use crate::{Clock, ExecutorConfig, Handle, Journal, NO_CONN, TokioRuntime, start};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tributary_core::{Command, Config, Engine, Error, Reply};
use tributary_grpc::{EventStreamService, ServiceConfig};
use tributary_simulation::journal::JournalHeader;
use tributary_store_api::Store;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(String),
    /// The engine refused its configuration.
    #[error("engine: {0}")]
    Engine(String),
    /// A declared stream or subscription could not be created.
    #[error("declared {what}: {error}")]
    Declare {
        /// Which declaration.
        what: String,
        /// Why.
        error: Error,
    },
    /// The gRPC address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The journal file cannot be created.
    #[error("journal {path}: {error}")]
    Journal {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: String,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Runs the server until SIGINT or SIGTERM. Prints one line on stdout once it listens:
/// `tributary: listening grpc=ADDR store=STORE`.
pub async fn serve(settings: Settings) -> Result<(), ServeError> {
    let bound = bind(settings).await?;
    println!(
        "tributary: listening grpc={} store={}",
        bound.addr, bound.store_name
    );
    let _ = std::io::stdout().flush();
    bound.run(wait_for_signal()).await
}

/// A server that has opened its store, started its engine, created the declared streams
/// and bound its socket: [`Bound::run`] serves until a shutdown future completes. For
/// embedding the server in-process (benches, tests).
pub struct Bound {
    addr: SocketAddr,
    store_name: String,
    store: AnyStore,
    handle: Handle,
    listener: TcpListener,
    shutdown_timeout: std::time::Duration,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("addr", &self.addr)
            .field("store", &self.store_name)
            .finish_non_exhaustive()
    }
}

/// Opens the store, starts the engine, declares, and binds the gRPC socket.
pub async fn bind(settings: Settings) -> Result<Bound, ServeError> {
    let store = settings
        .store
        .open(&settings.data_dir)
        .await
        .map_err(ServeError::Store)?;
    let config = Config {
        max_append_writes_in_flight: store.writes_in_flight(),
        ..settings.engine.clone()
    };
    let clock = Clock::default();
    let (seed, start_at) = (rand::random(), clock.now());
    let journal = match &settings.journal {
        Some(path) => {
            let header = JournalHeader {
                config: config.clone(),
                seed,
                start: start_at,
            };
            let j = Journal::create(path, &header).map_err(|e| ServeError::Journal {
                path: path.clone(),
                error: e.to_string(),
            })?;
            tracing::info!(code = 5, path = %path.display(), "journaling the engine's inputs");
            Some(Arc::new(j))
        }
        None => None,
    };
    let engine =
        Engine::new(config, seed, start_at).map_err(|e| ServeError::Engine(e.to_string()))?;
    let handle = start(
        TokioRuntime,
        store.clone(),
        engine,
        clock,
        ExecutorConfig {
            journal,
            ..ExecutorConfig::default()
        },
    );
    declare(&handle, &settings).await?;

    let listener = TcpListener::bind(settings.grpc_listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: settings.grpc_listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: settings.grpc_listen,
        source,
    })?;
    Ok(Bound {
        addr,
        store_name: settings.store.describe(&settings.data_dir),
        store,
        handle,
        listener,
        shutdown_timeout: settings.shutdown_timeout,
    })
}

impl Bound {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops accepting, lets the calls in flight
    /// finish (up to the shutdown timeout), stops the engine and closes the store.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let Bound {
            addr,
            store_name,
            store,
            handle,
            listener,
            shutdown_timeout,
        } = self;
        tracing::info!(code = 1, grpc = %addr, store = %store_name, "serving");

        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let service = EventStreamService::new(
            Link {
                handle: handle.clone(),
                rt: TokioRuntime,
            },
            ServiceConfig::default(),
            stop_rx,
        );
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(
                    // Small replies go out at once: without TCP_NODELAY, Nagle's algorithm and
                    // delayed acks hold them for tens of milliseconds.
                    tokio_stream::StreamExt::map(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        |s| {
                            s.inspect(|s| {
                                let _ = s.set_nodelay(true);
                            })
                        },
                    ),
                    async move {
                        let _ = signalled_rx.await;
                    },
                ),
        );
        shutdown.await;
        tracing::info!(
            code = 2,
            "stopping: no new calls; waiting for the calls in flight"
        );
        // Sessions and replays end; unary calls in flight (appends) finish and are answered.
        drop(stop_tx);
        let _ = signalled_tx.send(());
        let result = match tokio::time::timeout(shutdown_timeout, server).await {
            Ok(Ok(r)) => r.map_err(ServeError::from),
            Ok(Err(join)) => {
                tracing::error!(code = 3, error = %join, "the gRPC server task failed");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(
                    code = 3,
                    timeout = ?shutdown_timeout,
                    "calls still in flight after the shutdown timeout: stopping anyway"
                );
                Ok(())
            }
        };
        // The engine task ends once the last handle is gone; then its journal is complete.
        let stopped = handle.stopped();
        drop(handle);
        if tokio::time::timeout(shutdown_timeout, stopped)
            .await
            .is_err()
        {
            tracing::warn!(
                code = 3,
                "the engine task did not end within the shutdown timeout"
            );
        }
        store.close().await;
        tracing::info!(code = 4, "stopped");
        result
    }
}

/// Registers the declared schemas, and creates the declared streams and subscriptions that do
/// not exist yet. One that exists with another configuration is left as it is, with a warning.
async fn declare(handle: &Handle, settings: &Settings) -> Result<(), ServeError> {
    for r in &settings.schemas {
        if let Err(error) = handle
            .call(NO_CONN, Command::RegisterSchema(r.clone()))
            .await
        {
            return Err(ServeError::Declare {
                what: format!("schema {} v{}", r.event_type, r.version),
                error,
            });
        }
        tracing::info!(code = 6000, event_type = %r.event_type, version = r.version, "declared schema registered");
    }
    for s in &settings.streams {
        match handle.call(NO_CONN, Command::CreateStream(s.clone())).await {
            Ok(_) => tracing::info!(code = 1001, stream = %s.name, "declared stream created"),
            Err(Error::StreamExists(_)) => {
                let current = handle
                    .call(NO_CONN, Command::DescribeStream(s.name.clone()))
                    .await;
                if matches!(current, Ok(Reply::Stream(i)) if i.config != *s) {
                    tracing::warn!(code = 1004, stream = %s.name, "declared stream exists with another configuration; kept as it is");
                }
            }
            Err(error) => {
                return Err(ServeError::Declare {
                    what: format!("stream {}", s.name),
                    error,
                });
            }
        }
    }
    for c in &settings.subscriptions {
        match handle
            .call(NO_CONN, Command::CreateSubscription(c.clone()))
            .await
        {
            Ok(_) => {
                tracing::info!(code = 2000, stream = %c.stream, subscription = %c.name, "declared subscription created")
            }
            Err(Error::SubscriptionExists { .. }) => {}
            Err(error) => {
                return Err(ServeError::Declare {
                    what: format!("subscription {} of {}", c.name, c.stream),
                    error,
                });
            }
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
