//! The clock the executor reads: monotonic time since the executor started, wall time from
//! the system. The engine itself never reads a clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tributary_core::{MonoNanos, Now, UnixMillis};

/// Reads `Now` for the engine.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }
}

impl Clock {
    /// The current time.
    pub fn now(&self) -> Now {
        let mono = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Now {
            mono: MonoNanos(mono),
            wall: UnixMillis(wall),
        }
    }
}
