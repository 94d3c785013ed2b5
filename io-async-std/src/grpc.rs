//! The gRPC service `tributary.v1.EventStream` on async-std: hyper's HTTP/2 server on async-std
//! sockets, with the same service the tokio server runs (`tributary_grpc::EventStreamService`,
//! behind its 8 MiB [`LimitedServer`](tributary_grpc::LimitedServer) request limit), the same
//! HTTP/2 keepalive pings, `TCP_NODELAY`, and the same shutdown: sessions and replays end,
//! calls in flight finish within the shutdown timeout, then what is left is dropped.
//!
//! tonic's generated server is a tower service; its transport (`tonic::transport::Server`) is
//! tokio-only, so it is replaced here by a few lines of hyper: smol-hyper adapts the sockets
//! (futures-io) and timers (async-io) to hyper's rt traits, and hyper's executor is the
//! executor's [`Runtime`] ([`RtExecutor`]).
//!
//! Not here (the tokio server has them): bearer tokens and TLS.

use async_std::net::TcpListener;
use futures_util::{FutureExt, select_biased};
use hyper::server::conn::http2;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use smol_hyper::rt::{FuturesIo, SmolTimer};
use std::future::Future;
use std::time::Duration;
use tower_layer::Layer;
use tributary_auth::Tokens;
use tributary_executor::{Handle, Runtime};
use tributary_grpc::{EventStreamService, GrpcAuthLayer, Link, ServiceConfig};

/// How the gRPC server treats its connections and calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcOptions {
    /// Bearer tokens the calls need (none: open), by the rule of the tokio server
    /// (`tributary_grpc::GrpcAuthLayer`).
    pub tokens: Tokens,
    /// HTTP/2 pings on idle connections, this often: a vanished or frozen client is noticed,
    /// and its connection closed (its consumers detach, a group rebalances).
    pub keepalive_interval: Duration,
    /// A ping unanswered this long closes the connection.
    pub keepalive_timeout: Duration,
    /// After the shutdown future completes, calls in flight get this long to finish.
    pub shutdown_timeout: Duration,
    /// The engine's configuration, whose limits and defaults `GetServerInfo` tells.
    pub engine: tributary_core::Config,
}

impl Default for GrpcOptions {
    /// No tokens; 10 s each, as the tokio server.
    fn default() -> Self {
        GrpcOptions {
            tokens: Tokens::default(),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            engine: tributary_core::Config::default(),
        }
    }
}

/// hyper's executor (for the tasks of HTTP/2 streams) on the executor's [`Runtime`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RtExecutor<R>(pub R);

impl<R: Runtime, F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for RtExecutor<R> {
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// Serves `tributary.v1.EventStream` for the engine of `handle` on `listener` until
/// `shutdown` completes; then stops accepting, ends the sessions and replays, lets the calls in
/// flight finish within [`GrpcOptions::shutdown_timeout`] and drops the connections still open
/// past it (their calls release the engine's handles they hold).
pub async fn serve<R: Runtime>(
    listener: TcpListener,
    handle: Handle,
    rt: R,
    options: GrpcOptions,
    shutdown: impl Future<Output = ()>,
) {
    // Sessions and replays end when every sender of `stop` is gone.
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let service = EventStreamService::new(
        Link {
            handle,
            rt: rt.clone(),
        },
        ServiceConfig {
            engine: options.engine.clone(),
            ..ServiceConfig::default()
        },
        stop_rx,
    )
    .into_server();
    let service = GrpcAuthLayer::new(options.tokens.clone()).layer(service);
    // Closed past the shutdown timeout: the connections still open are dropped.
    let (kill_tx, kill_rx) = async_channel::bounded::<()>(1);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    loop {
        let accepted = select_biased! {
            _ = shutdown => break,
            a = listener.accept().fuse() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, then accept again.
                tracing::warn!(code = 3, error = %e, "gRPC: cannot accept a connection");
                rt.sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small replies go out at once: without TCP_NODELAY, Nagle's algorithm and delayed
        // acks hold them for tens of milliseconds.
        let _ = stream.set_nodelay(true);
        let conn = http2::Builder::new(RtExecutor(rt.clone()))
            .timer(SmolTimer::new())
            .keep_alive_interval(options.keepalive_interval)
            .keep_alive_timeout(options.keepalive_timeout)
            .serve_connection(
                FuturesIo::new(stream),
                TowerToHyperService::new(service.clone()),
            );
        let conn = graceful.watch(conn);
        let kill = kill_rx.clone();
        rt.spawn(async move {
            select_biased! {
                _ = kill.recv().fuse() => {}
                r = conn.fuse() => if let Err(e) = r {
                    tracing::debug!(error = %e, "gRPC connection ended with an error");
                },
            }
        });
    }
    drop(listener);
    tracing::info!(
        code = 2,
        "stopping: no new calls; waiting for the calls in flight"
    );
    drop(stop_tx);
    select_biased! {
        _ = graceful.shutdown().fuse() => {}
        _ = rt.sleep(options.shutdown_timeout).fuse() => {
            tracing::warn!(
                code = 3,
                timeout = ?options.shutdown_timeout,
                "gRPC calls still in flight after the shutdown timeout: stopping anyway"
            );
        }
    }
    drop(kill_tx);
}
