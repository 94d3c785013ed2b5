//! The gRPC service's way into this executor.

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
