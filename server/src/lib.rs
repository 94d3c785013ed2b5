//! # tributary-server
//!
//! The `tributary` server and command line: [`serve`] runs the gRPC service and the HTTP
//! management API on the tokio executor (`tributary-io-tokio`) over SQLite or PostgreSQL, with
//! its configuration, the store selection, logging and the AMQP relay.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod link;
pub mod logging;
mod serve;
/// The store a server runs on (`tributary-store-any`).
pub use tributary_store_any as store;

pub use link::{BrokerLinks, HttpLink, MetricsObserver};
pub use serve::{Bound, ServeError, bind, serve};
