//! # tributary-server
//!
//! The `tributary` server and command line: [`serve`] runs the gRPC service and the HTTP
//! management API on the tokio executor (`tributary-io-tokio`) over SQLite or PostgreSQL, with
//! its configuration, the store selection, logging and the AMQP relay.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod grpc_auth;
mod link;
pub mod logging;
mod serve;
pub mod store;

pub use grpc_auth::{GrpcAuth, GrpcAuthLayer};
pub use link::{BrokerLinks, HttpLink, MetricsObserver};
pub use serve::{Bound, ServeError, bind, serve};
