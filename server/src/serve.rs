//! `tributary serve`: the engine on its store, the gRPC service and the HTTP transport
//! (management API, health, metrics) on their sockets, tokens and TLS, and a clean stop on
//! SIGINT or SIGTERM.

use crate::config::Settings;
use crate::store::AnyStore;
use crate::{HttpLink, MetricsObserver};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tributary_core::{Command, Config, Engine, Error, Reply};
use tributary_grpc::{EventStreamService, ServiceConfig};
use tributary_grpc::{GrpcAuthLayer, Link};
use tributary_io_tokio::{Clock, ExecutorConfig, Handle, Journal, NO_CONN, TokioRuntime, start};
use tributary_journal::JournalHeader;
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
    /// The TLS certificate or key cannot be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP server failed.
    #[error(transparent)]
    Http(#[from] tributary_http::ServeError),
}

/// Runs the server until SIGINT or SIGTERM. Prints one line on stdout once it listens:
/// `tributary: listening grpc=URL http=URL store=STORE` (URLs with `https://` under TLS).
pub async fn serve(settings: Settings) -> Result<(), ServeError> {
    let bound = bind(settings).await?;
    let scheme = if bound.grpc_tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "tributary: listening grpc={scheme}://{} http={scheme}://{} store={}",
        bound.addr, bound.http_addr, bound.store_name
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
    grpc_keepalive: (std::time::Duration, std::time::Duration),
    http_addr: SocketAddr,
    http_listener: std::net::TcpListener,
    http_app: axum::Router,
    http_tls: Option<axum_server::tls_rustls::RustlsConfig>,
    grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    tokens: tributary_http::Tokens,
    inbound: Vec<tributary_amqp::Inbound>,
    /// The engine's configuration, for `GetServerInfo`.
    engine: Config,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("addr", &self.addr)
            .field("http_addr", &self.http_addr)
            .field("store", &self.store_name)
            .finish_non_exhaustive()
    }
}

/// Opens the store, starts the engine, declares, and binds the gRPC socket.
pub async fn bind(settings: Settings) -> Result<Bound, ServeError> {
    let store = settings
        .store
        .open_with(&settings.data_dir, &settings.postgres, settings.durability)
        .await
        .map_err(ServeError::Store)?;
    let config = Config {
        max_append_writes_in_flight: settings
            .append_writes_in_flight
            .unwrap_or_else(|| store.writes_in_flight()),
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
    // TLS files are read before anything starts: a bad one stops the start.
    let (grpc_tls, http_tls) = match &settings.tls {
        Some(files) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| ServeError::Tls(format!("{}: {e}", p.display())))
            };
            let identity =
                tonic::transport::Identity::from_pem(read(&files.cert)?, read(&files.key)?);
            let grpc = tonic::transport::ServerTlsConfig::new().identity(identity);
            let http = tributary_http::tls_config(files)
                .await
                .map_err(|e| ServeError::Tls(e.to_string()))?;
            (Some(grpc), Some(http))
        }
        None => (None, None),
    };
    let journal_status = journal.as_ref().map(|j| j.status());
    let engine = Engine::new(config.clone(), seed, start_at)
        .map_err(|e| ServeError::Engine(e.to_string()))?;
    let metrics = Arc::new(tributary_http::Metrics::new());
    let publisher = settings
        .amqp
        .clone()
        .map(tributary_amqp::AmqpPublisher::new);
    let handle = start(
        TokioRuntime,
        store.clone(),
        engine,
        clock,
        ExecutorConfig {
            journal,
            observer: Some(Arc::new(MetricsObserver(metrics.clone()))),
            publisher: publisher.clone().map(|p| {
                Arc::new(super::link::AmqpLink(p)) as Arc<dyn tributary_io_tokio::Publisher>
            }),
            ..ExecutorConfig::default()
        },
    );
    declare(&handle, &settings).await?;
    let http_bind_err = |source| ServeError::Bind {
        addr: settings.http_listen,
        source,
    };
    let http_listener = std::net::TcpListener::bind(settings.http_listen).map_err(http_bind_err)?;
    http_listener.set_nonblocking(true).map_err(http_bind_err)?;
    let http_addr = http_listener.local_addr().map_err(http_bind_err)?;

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
    // Consuming starts once the sockets are bound: a start that fails leaves no task behind.
    let inbound = match &settings.amqp {
        Some(amqp) => start_inbound(&handle, &settings, amqp).await?,
        None => Vec::new(),
    };
    let broker = publisher.as_ref().map(|p| crate::BrokerLinks {
        publisher: p.status(),
        inbound: inbound
            .iter()
            .map(tributary_amqp::Inbound::status)
            .collect(),
    });
    let http_app = tributary_http::router(
        Arc::new(HttpLink {
            handle: handle.clone(),
            store: store.clone(),
            journal: journal_status,
            broker,
        }),
        metrics,
        tributary_http::HttpConfig {
            tokens: settings.tokens.clone(),
            health: settings.health,
        },
    );
    Ok(Bound {
        addr,
        store_name: settings.store.describe(&settings.data_dir),
        store,
        handle,
        listener,
        shutdown_timeout: settings.shutdown_timeout,
        grpc_keepalive: settings.grpc_keepalive,
        http_addr,
        http_listener,
        http_app,
        http_tls,
        grpc_tls,
        tokens: settings.tokens.clone(),
        inbound,
        engine: config,
    })
}

impl Bound {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of its HTTP transport.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, lets the calls in flight
    /// finish, stops the engine and closes the store, all of it within the shutdown timeout
    /// (one deadline for every step; past it, what is still running is left or aborted).
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
            grpc_keepalive,
            http_addr,
            http_listener,
            http_app,
            http_tls,
            grpc_tls,
            tokens,
            inbound,
            engine,
        } = self;
        tracing::info!(code = 1, grpc = %addr, http = %http_addr, store = %store_name, tls = grpc_tls.is_some(), tokens = tokens.enabled(), "serving");
        let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(tributary_http::serve(
            http_listener,
            http_app,
            http_tls,
            async move {
                let _ = http_stop_rx.await;
            },
            shutdown_timeout,
        ));
        // A client that vanished (or froze) without closing is noticed by HTTP/2 pings, and
        // its connection closed: its consumers detach and a group rebalances.
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(grpc_keepalive.0))
            .http2_keepalive_timeout(Some(grpc_keepalive.1));
        if let Some(tls) = grpc_tls {
            builder = builder.tls_config(tls)?;
        }

        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let service = EventStreamService::new(
            Link {
                handle: handle.clone(),
                rt: TokioRuntime,
            },
            ServiceConfig {
                engine,
                ..ServiceConfig::default()
            },
            stop_rx,
        );
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            builder
                .layer(GrpcAuthLayer::new(tokens))
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
        // Every step below shares one deadline: the whole shutdown takes at most
        // `shutdown_timeout` (the HTTP server's grace started with it, above).
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        // Inbound bindings stop consuming and acknowledge what they appended; what is left
        // stays in the broker for the next start.
        let inbound = tokio::spawn(futures_util::future::join_all(
            inbound.into_iter().map(tributary_amqp::Inbound::stop),
        ));
        drop(stop_tx);
        let _ = signalled_tx.send(());
        let _ = http_stop_tx.send(());
        let mut server = server;
        let result = match tokio::time::timeout_at(deadline, &mut server).await {
            Ok(Ok(r)) => r.map_err(ServeError::from),
            Ok(Err(join)) => {
                tracing::error!(code = 3, error = %join, "the gRPC server task failed");
                Ok(())
            }
            Err(_) => {
                // Its calls end with it, and release the engine's handles they hold.
                server.abort();
                tracing::warn!(
                    code = 3,
                    timeout = ?shutdown_timeout,
                    "gRPC calls still in flight after the shutdown timeout: stopping anyway"
                );
                Ok(())
            }
        };
        let mut http = http;
        match tokio::time::timeout_at(deadline, &mut http).await {
            Ok(Ok(Err(e))) => tracing::error!(code = 3, error = %e, "the HTTP server failed"),
            Ok(Err(join)) => {
                tracing::error!(code = 3, error = %join, "the HTTP server task failed")
            }
            Err(_) => {
                http.abort();
                tracing::warn!(
                    code = 3,
                    timeout = ?shutdown_timeout,
                    "HTTP requests still in flight after the shutdown timeout: stopping anyway"
                )
            }
            Ok(Ok(Ok(()))) => {}
        }
        let mut inbound = inbound;
        if tokio::time::timeout_at(deadline, &mut inbound)
            .await
            .is_err()
        {
            inbound.abort();
            tracing::warn!(
                code = 3,
                timeout = ?shutdown_timeout,
                "inbound bindings still stopping after the shutdown timeout: stopping anyway"
            );
        }
        // The engine task ends once the last handle is gone; then its journal is complete.
        let stopped = handle.stopped();
        drop(handle);
        if tokio::time::timeout_at(deadline, stopped).await.is_err() {
            tracing::warn!(
                code = 3,
                timeout = ?shutdown_timeout,
                "the engine task did not end within the shutdown timeout: stopping anyway"
            );
        }
        // Whatever was acknowledged is already durable: a close cut short loses nothing.
        if tokio::time::timeout_at(deadline, store.close())
            .await
            .is_err()
        {
            tracing::warn!(
                code = 3,
                timeout = ?shutdown_timeout,
                "the store did not close within the shutdown timeout: stopping anyway"
            );
        }
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

/// Makes sure the local stream of every inbound binding exists and deduplicates (creating a
/// persistent one with the default dedup window when missing), then starts consuming.
async fn start_inbound(
    handle: &Handle,
    settings: &Settings,
    amqp: &tributary_amqp::AmqpConfig,
) -> Result<Vec<tributary_amqp::Inbound>, ServeError> {
    let mut started = Vec::new();
    for b in &settings.amqp_inbound {
        let what = || {
            format!(
                "stream {} of amqp.inbound {}:{}",
                b.local, b.remote, b.subscription
            )
        };
        let refuse = |reason: &'static str| ServeError::Declare {
            what: what(),
            error: Error::Invalid(tributary_core::InvalidInput::Conflict {
                field: "stream",
                reason,
            }),
        };
        match handle
            .call(NO_CONN, Command::DescribeStream(b.local.clone()))
            .await
        {
            Ok(Reply::Stream(info)) => {
                if info.config.is_ephemeral() {
                    return Err(refuse(
                        "an inbound stream must be persistent: the broker's acknowledgement follows the local commit",
                    ));
                }
                if info.config.dedup_window.is_zero() {
                    return Err(refuse(
                        "an inbound stream needs a dedup window above 0: a redelivery from the broker is deduplicated by its message_id",
                    ));
                }
            }
            Err(Error::StreamNotFound(_)) => {
                let mut c = tributary_core::StreamConfig::persistent(b.local.clone());
                if !settings.engine.default_dedup_window.is_zero() {
                    c.dedup_window = settings.engine.default_dedup_window;
                }
                if c.dedup_window.is_zero() {
                    c.dedup_window = std::time::Duration::from_secs(600);
                }
                match handle.call(NO_CONN, Command::CreateStream(c)).await {
                    Ok(_) | Err(Error::StreamExists(_)) => {
                        tracing::info!(code = 1001, stream = %b.local, remote = %b.remote, "stream created for an inbound binding")
                    }
                    Err(error) => {
                        return Err(ServeError::Declare {
                            what: what(),
                            error,
                        });
                    }
                }
            }
            Ok(_) => {
                return Err(ServeError::Declare {
                    what: what(),
                    error: Error::Unavailable("unexpected reply to DescribeStream".into()),
                });
            }
            Err(error) => {
                return Err(ServeError::Declare {
                    what: what(),
                    error,
                });
            }
        }
        started.push(tributary_amqp::Inbound::start(
            amqp.clone(),
            b.clone(),
            Arc::new(crate::link::InboundLink(handle.clone())),
        ));
    }
    Ok(started)
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
