//! Time as the caller gives it: the core never reads a clock.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Monotonic time in nanoseconds since an arbitrary origin chosen by the driver.
/// Drives every timer (ack wait, back-off, rate limits, progress).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct MonoNanos(pub u64);

/// Wall-clock time in Unix milliseconds. Drives event timestamps and time positions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct UnixMillis(pub u64);

/// The moment an input is handled, as read by the driver (or the simulator's virtual clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Now {
    /// Monotonic time: timers compare against it.
    pub mono: MonoNanos,
    /// Wall time: timestamps are taken from it (clamped so they never go back per partition).
    pub wall: UnixMillis,
}

impl MonoNanos {
    /// This instant plus a duration, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> MonoNanos {
        MonoNanos(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// Nanoseconds elapsed since `earlier` (zero if `earlier` is later).
    pub fn since(self, earlier: MonoNanos) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl UnixMillis {
    /// This instant plus a duration, saturating.
    pub fn saturating_add(self, d: Duration) -> UnixMillis {
        UnixMillis(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}
