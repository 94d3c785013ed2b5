//! The `tributary` server: configuration, store selection, logging and the gRPC service on
//! this executor.

pub mod config;
mod link;
pub mod logging;
mod serve;
pub mod store;

pub use link::Link;
pub use serve::{Bound, ServeError, bind, serve};
