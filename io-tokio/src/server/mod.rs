//! The `tributary` server: configuration, store selection, logging and the gRPC service on
//! this executor.

pub mod config;
mod grpc_auth;
mod link;
pub mod logging;
mod serve;
pub mod store;

pub use grpc_auth::{GrpcAuth, GrpcAuthLayer};
pub use link::{HttpLink, Link, MetricsObserver};
pub use serve::{Bound, ServeError, bind, serve};
