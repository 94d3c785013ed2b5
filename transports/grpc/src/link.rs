//! What the service needs from an executor: commands, client connections, spawning, sleeping;
//! and [`Link`], which gives it `tributary-executor`'s on any runtime.

use std::future::Future;
use std::time::Duration;
use tributary_core::{Command, ConnEvent, Error, Reply};
use tributary_executor::{Connection, Handle, NO_CONN, Runtime};

/// A way to reach a running engine, implemented by an executor.
pub trait EngineLink: Clone + Send + Sync + 'static {
    /// A client connection of the engine.
    type Conn: EngineConn;

    /// Sends a command that belongs to no session (publish, read, administration).
    fn call(&self, cmd: Command) -> impl Future<Output = Result<Reply, Error>> + Send;

    /// Opens a connection: its consumers and replays live until it is dropped.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Error>> + Send;

    /// Runs a task in the background.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F);

    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// One client connection of the engine. Dropping it detaches its consumers and stops its
/// replays.
pub trait EngineConn: Send + Sync + 'static {
    /// Sends a command on this connection.
    fn call(&self, cmd: Command) -> impl Future<Output = Result<Reply, Error>> + Send;

    /// Queues a command on this connection and returns the future of its reply: commands
    /// submitted one after another reach the engine in that order, their replies are awaited
    /// together (a session pipelines its acks this way).
    fn submit(
        &self,
        cmd: Command,
    ) -> impl Future<
        Output = Result<impl Future<Output = Result<Reply, Error>> + Send + 'static, Error>,
    > + Send;

    /// The next delivery or replay item for this connection; `None` once the engine stopped.
    fn next(&self) -> impl Future<Output = Option<ConnEvent>> + Send;

    /// Deliveries and replay items waiting to be taken with `next`.
    fn backlog(&self) -> usize;
}

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
