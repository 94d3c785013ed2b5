//! # tributary-io-tokio
//!
//! The tokio glue of Tributary's executor: [`TokioRuntime`] implements the executor's
//! [`Runtime`] on the current tokio runtime, and everything of `tributary-executor` is
//! re-exported so that an application needs only this crate:
//!
//! ```no_run
//! # async fn demo(store: impl tributary_store_api::Store, engine: tributary_core::Engine) {
//! use tributary_io_tokio::{Clock, ExecutorConfig, TokioRuntime, start};
//! let handle = start(TokioRuntime, store, engine, Clock::default(), ExecutorConfig::default());
//! # drop(handle);
//! # }
//! ```
//!
//! The `tributary` server and command line live in `tributary-server`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod runtime;

pub use runtime::TokioRuntime;
pub use tributary_executor::*;
