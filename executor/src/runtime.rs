//! What the executor needs from an async runtime.

use std::future::Future;
use std::time::Duration;

/// Spawning and sleeping: all the executor asks of a runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Runs a task in the background.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F);
    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}
