//! # tributary-io-async-std
//!
//! Tributary's executor on async-std. [`AsyncStdRuntime`] implements the executor's
//! [`Runtime`] (spawning and sleeping, the whole of the glue), and everything of
//! `tributary-executor` is re-exported, so that an application needs only this crate and a
//! store:
//!
//! ```no_run
//! # async fn demo(store: impl tributary_store_api::Store, engine: tributary_core::Engine) {
//! use tributary_io_async_std::{AsyncStdRuntime, Clock, ExecutorConfig, start};
//! let handle = start(AsyncStdRuntime, store, engine, Clock::default(), ExecutorConfig::default());
//! # drop(handle);
//! # }
//! ```
//!
//! No tokio runtime exists anywhere in this crate's build: the SQL stores run sqlx on
//! async-std (their `runtime-async-std` feature), and [`grpc::serve`] serves the gRPC service
//! `tributary.v1.EventStream` with hyper's HTTP/2 server directly on async-std sockets (tonic's
//! own transport is tokio-only; its generated service is a plain tower service). tokio's `sync`
//! types are used, which need no runtime. `cargo tree -p tributary-io-async-std -e features -i
//! tokio` shows no `rt` feature.
//!
//! The `tributary-async-std` binary serves gRPC on SQLite or PostgreSQL:
//! `tributary-async-std serve --store sqlite:PATH --grpc-listen 127.0.0.1:50051`.
//! The full server (HTTP management, tokens, TLS, configuration file, AMQP) is `tributary`,
//! on tokio (`tributary-server`).
//!
//! async-std is discontinued upstream in favour of smol, on whose crates it is built
//! (async-executor, async-io): moving to smol changes the two lines of [`AsyncStdRuntime`],
//! the socket type in [`grpc`], and the stores' sqlx feature (`runtime-smol`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod grpc;
mod runtime;

pub use runtime::AsyncStdRuntime;
pub use tributary_executor::*;
