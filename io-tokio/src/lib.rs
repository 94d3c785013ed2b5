//! # tributary-io-tokio
//!
//! The executor: one task owns the [`Engine`](tributary_core::Engine) and runs the loop of
//! SHAPE.md — drain the outputs (start storage requests, answer clients, deliver), then wait
//! for the first of a storage completion, a client message or the engine's deadline, and feed
//! it back with the time read from the clock. It translates and never decides.
//!
//! The loop is runtime-neutral: what depends on the runtime (spawning a task, sleeping) sits
//! behind the small [`Runtime`] trait, and channels come from `async-channel`, so another
//! runtime is glue. [`TokioRuntime`] is the production one.
//!
//! With the `server` feature (on by default) it also holds what the `tributary` binary runs:
//! [`server::serve`] (the gRPC server on SQLite or PostgreSQL), its configuration, the store
//! selection and logging. Embedders who only want the executor turn default features off and
//! keep `tokio`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod executor;
mod journal;
mod runtime;
#[cfg(feature = "server")]
pub mod server;

pub use clock::Clock;
pub use executor::{
    Connection, ExecutorConfig, Handle, NO_CONN, Observer, PendingReply, Publisher, start,
};
pub use journal::{Journal, JournalStatus};
pub use runtime::Runtime;
#[cfg(feature = "tokio")]
pub use runtime::TokioRuntime;
pub use tributary_core::ConnEvent;
