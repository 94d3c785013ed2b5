//! The transports' way into this executor: the HTTP transport's `EngineApi`, the metrics
//! observer and the AMQP relay (the gRPC service's is `tributary_grpc::Link`).

use tributary_core::{Command, Error, Reply};
use tributary_io_tokio::{Handle, NO_CONN};

/// The executor and its store, as the HTTP transport needs them.
#[derive(Debug, Clone)]
pub struct HttpLink {
    /// The engine task.
    pub handle: Handle,
    /// The store, for readiness.
    pub store: crate::store::AnyStore,
    /// The engine's journal, when it keeps one, for health and metrics.
    pub journal: Option<tributary_io_tokio::JournalStatus>,
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

impl tributary_io_tokio::Observer for MetricsObserver {
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

impl tributary_io_tokio::Publisher for AmqpLink {
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
