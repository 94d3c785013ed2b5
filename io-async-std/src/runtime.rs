//! The executor's [`Runtime`] on async-std.

use std::future::Future;
use std::time::Duration;
use tributary_executor::Runtime;

/// async-std's global executor and timers.
///
/// This is all the runtime glue there is. On smol (on which async-std is built) it would read
/// the same: `smol::spawn(f).detach()` and `smol::Timer::after(d)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

impl Runtime for AsyncStdRuntime {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        // Detached: dropping async-std's handle leaves the task running.
        async_std::task::spawn(f);
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        async_std::task::sleep(d)
    }
}
