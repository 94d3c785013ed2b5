//! The transports' way into this executor: the gRPC service's `EngineLink`, the HTTP
//! transport's `EngineApi`, and the metrics observer.

use crate::executor::{Connection, Handle, NO_CONN};
use crate::runtime::Runtime;
use std::future::Future;
use std::time::Duration;
use tributary_core::{Command, ConnEvent, Error, Reply};
use tributary_grpc::{EngineConn, EngineLink};

/// An executor handle and its runtime, as the gRPC service needs them.
#[derive(Debug, Clone)]
pub struct Link<R> {
    /// The engine task.
    pub handle: Handle,
    /// The runtime it runs on.
    pub rt: R,
}

impl<R: Runtime> EngineLink for Link<R> {
    type Conn = Connection;

    fn call(&self, cmd: Command) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.handle.call(NO_CONN, cmd)
    }

    fn connect(&self) -> impl Future<Output = Result<Connection, Error>> + Send {
        self.handle.connect()
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.rt.spawn(f);
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        self.rt.sleep(d)
    }
}

impl EngineConn for Connection {
    fn call(&self, cmd: Command) -> impl Future<Output = Result<Reply, Error>> + Send {
        Connection::call(self, cmd)
    }

    async fn submit(
        &self,
        cmd: Command,
    ) -> Result<impl Future<Output = Result<Reply, Error>> + Send + 'static, Error> {
        Connection::submit(self, cmd).await
    }

    async fn next(&self) -> Option<ConnEvent> {
        self.events.recv().await.ok()
    }

    fn backlog(&self) -> usize {
        self.events.len()
    }
}

/// The executor and its store, as the HTTP transport needs them.
#[derive(Debug, Clone)]
pub struct HttpLink {
    /// The engine task.
    pub handle: Handle,
    /// The store, for readiness.
    pub store: crate::server::store::AnyStore,
    /// The engine's journal, when it keeps one, for health and metrics.
    pub journal: Option<crate::JournalStatus>,
}

impl tributary_http::EngineApi for HttpLink {
    fn call(&self, cmd: Command) -> tributary_http::BoxFuture<Result<Reply, Error>> {
        let handle = self.handle.clone();
        Box::pin(async move { handle.call(NO_CONN, cmd).await })
    }

    fn ready(&self) -> tributary_http::BoxFuture<Result<(), String>> {
        let store = self.store.clone();
        Box::pin(async move { store.readiness().await })
    }

    fn journal(&self) -> Option<tributary_http::JournalFigures> {
        self.journal
            .as_ref()
            .map(|j| tributary_http::JournalFigures {
                write_failures: j.write_failures(),
                dropped: j.dropped(),
                error: j.error(),
            })
    }
}

/// Feeds the engine's inputs and outputs to the metrics.
#[derive(Debug, Clone)]
pub struct MetricsObserver(pub std::sync::Arc<tributary_http::Metrics>);

impl crate::Observer for MetricsObserver {
    fn input(&self, now: tributary_core::Now, input: &tributary_core::Input) {
        self.0.on_input(now, input);
    }

    fn output(&self, now: tributary_core::Now, output: &tributary_core::Output) {
        self.0.on_output(now, output);
    }
}

/// The AMQP transport as the executor's broker publisher.
#[derive(Debug, Clone)]
pub(crate) struct AmqpLink(pub(crate) tributary_amqp::AmqpPublisher);

impl crate::Publisher for AmqpLink {
    fn publish(
        &self,
        stream: tributary_core::StreamName,
        event: std::sync::Arc<tributary_core::Event>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = tributary_core::PublishResult> + Send>>
    {
        // Queued now, in the order the engine asked: the future only waits for the answer.
        Box::pin(self.0.publish(stream, event))
    }
}
