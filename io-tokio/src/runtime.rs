//! The executor's [`Runtime`] on tokio.

use std::future::Future;
use std::time::Duration;
use tributary_executor::Runtime;

/// The tokio runtime (the current one when `spawn` is called).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

impl Runtime for TokioRuntime {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        tokio::spawn(f);
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}
