//! The transports' way into this executor: the HTTP transport's `EngineApi`, the metrics
//! observer and the AMQP relay (the gRPC service's is `tributary_grpc::Link`).

use std::sync::Arc;
use tributary_core::{AppendOutcome, AppendRequest, Command, Error, Reply};
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
    /// The broker's connections, when AMQP is configured, for health and metrics.
    pub broker: Option<BrokerLinks>,
}

/// The AMQP transport's connections, as health and metrics read them.
#[derive(Debug, Clone)]
pub struct BrokerLinks {
    /// The relay's publisher.
    pub publisher: Arc<tributary_amqp::LinkStatus>,
    /// The inbound bindings.
    pub inbound: Vec<Arc<tributary_amqp::InboundStatus>>,
}

fn connection_figures(l: &tributary_amqp::LinkStatus) -> tributary_http::ConnectionFigures {
    tributary_http::ConnectionFigures {
        state: match l.state() {
            tributary_amqp::LinkState::Idle => tributary_http::BrokerState::Idle,
            tributary_amqp::LinkState::Connected => tributary_http::BrokerState::Connected,
            tributary_amqp::LinkState::Disconnected => tributary_http::BrokerState::Disconnected,
        },
        last_error: l.last_error(),
    }
}

impl BrokerLinks {
    /// What health and metrics show.
    pub fn figures(&self) -> tributary_http::BrokerFigures {
        tributary_http::BrokerFigures {
            publisher: connection_figures(&self.publisher),
            inbound: self
                .inbound
                .iter()
                .map(|i| tributary_http::InboundFigures {
                    remote_stream: i.remote.to_string(),
                    subscription: i.subscription.to_string(),
                    stream: i.local.to_string(),
                    connection: connection_figures(&i.link),
                    received: i.received(),
                    appended: i.appended(),
                    duplicates: i.duplicates(),
                    dead_lettered: tributary_amqp::DeadReason::ALL
                        .iter()
                        .map(|r| (r.as_str().to_string(), i.dead_lettered(*r)))
                        .collect(),
                })
                .collect(),
        }
    }
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

    fn broker(&self) -> Option<tributary_http::BrokerFigures> {
        self.broker.as_ref().map(BrokerLinks::figures)
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

/// The executor as the local side of the AMQP inbound bindings: their appends.
#[derive(Debug, Clone)]
pub(crate) struct InboundLink(pub(crate) Handle);

impl tributary_amqp::LocalAppender for InboundLink {
    fn append(
        &self,
        request: AppendRequest,
    ) -> tributary_amqp::inbound::BoxFuture<Result<tributary_amqp::AppendReply, Error>> {
        let handle = self.0.clone();
        Box::pin(async move {
            // Queued now, in order; the reply is awaited by the caller, pipelined.
            let pending = handle.submit(NO_CONN, Command::Append(request)).await?;
            let reply: tributary_amqp::AppendReply = Box::pin(async move {
                match pending.await? {
                    Reply::Appended(outcomes) => Ok::<Vec<AppendOutcome>, Error>(outcomes),
                    other => Err(Error::Unavailable(format!(
                        "unexpected reply to an append: {other:?}"
                    ))),
                }
            });
            Ok(reply)
        })
    }
}
