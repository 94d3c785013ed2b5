//! A node's virtual clock: monotonic time follows the simulation's time; wall time follows it
//! too, plus steps (an NTP correction, a VM pause) that may go backwards or forwards.

use crate::queue::VTime;
use tributary_core::{MonoNanos, Now, UnixMillis};

/// The wall time at the start of every run: 2026-01-01T00:00:00Z.
pub const WALL_START: u64 = 1_767_225_600_000;

/// One node's clock.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the wall clock by steps so far (negative: it went back).
    pub wall_step_ms: i64,
}

impl Clock {
    /// What the node reads at virtual time `t`.
    pub fn now(&self, t: VTime) -> Now {
        let wall = (WALL_START + t / 1_000_000) as i64 + self.wall_step_ms;
        Now {
            mono: MonoNanos(t),
            wall: UnixMillis(wall.max(0) as u64),
        }
    }

    /// Steps the wall clock by `ms` (negative: backwards).
    pub fn step(&mut self, ms: i64) {
        self.wall_step_ms += ms;
    }
}
