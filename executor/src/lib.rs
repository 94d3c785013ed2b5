//! # tributary-executor
//!
//! The runtime-neutral executor: one task owns the [`Engine`](tributary_core::Engine) and runs
//! the loop of SHAPE.md — drain the outputs (start storage requests, answer clients, deliver),
//! then wait for the first of a storage completion, a client message or the engine's deadline,
//! and feed it back with the time read from the clock. It translates and never decides.
//!
//! What depends on an async runtime (spawning a task, sleeping) sits behind the small
//! [`Runtime`] trait, and channels come from `async-channel`, so a runtime crate is a few
//! lines of glue: `tributary-io-tokio` for tokio, `tributary-io-async-std` for async-std.
//! The optional [`Journal`] records the engine's inputs in `tributary-journal`'s format, which
//! the simulator replays.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod engine_task;
mod journal;
mod runtime;

pub use clock::Clock;
pub use engine_task::{
    Connection, ExecutorConfig, Handle, NO_CONN, Observer, PendingReply, Publisher, start,
};
pub use journal::{Journal, JournalStatus};
pub use runtime::Runtime;
pub use tributary_core::ConnEvent;
