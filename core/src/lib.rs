//! # tributary-core
//!
//! Tributary's engine as a pure, synchronous state machine (sans-IO). It owns every decision
//! about streams, offsets, dedup, subscriptions, acknowledgements, redelivery, dead letters
//! and replay; it does no I/O, reads no clock, draws no OS randomness and spawns nothing.
//! Time comes in with every input ([`Now`]), randomness from a seed, storage as requests
//! ([`StorageRequest`]) that the driver carries out and completes in any order.
//!
//! ```
//! use tributary_core::*;
//!
//! let now = Now { mono: MonoNanos(0), wall: UnixMillis(1_700_000_000_000) };
//! let mut engine = Engine::new(Config::default(), 42, now).unwrap();
//! // The first output asks the store for the state to recover from.
//! let Some(Output::Storage { op, req: StorageRequest::Recover }) = engine.poll_output() else { panic!() };
//! engine.handle_input(now, Input::StorageDone {
//!     op,
//!     result: StorageResult::Ok(StorageReply::Recovered(RecoveredState::default())),
//! });
//! // Then for the schema registry, in pages (an empty store has none).
//! let Some(Output::Storage { op, req: StorageRequest::LoadSchemas { .. } }) = engine.poll_output() else { panic!() };
//! engine.handle_input(now, Input::StorageDone {
//!     op,
//!     result: StorageResult::Ok(StorageReply::Schemas(Vec::new())),
//! });
//! assert!(engine.is_ready());
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod config;
mod engine;
mod error;
mod event;
mod ids;
mod names;
#[cfg(feature = "planted-bugs")]
mod planted;
mod schema;
mod storage;
mod stream_config;
mod subscription_config;
mod time;

pub use api::*;
pub use config::{CleanupWindow, Config};
pub use engine::Engine;
pub use engine::partition_of_key;
pub use engine::partition_offsets;
pub use engine::{NEWER_THAN_REQUESTED, UPCAST_ERROR};
pub use error::{Error, ErrorClass, InvalidInput};
pub use event::{DEAD_LETTER_HEADERS, Event, JSON, NewEvent, validate_batch};
pub use ids::{ConnId, EventId, OpId, ReplayId, ReqId, SubId};
pub use names::{
    ConsumerId, DLQ_SUFFIX, MAX_CONSUMER_ID_LEN, MAX_DLQ_SOURCE_NAME_LEN, MAX_NAME_LEN,
    NAME_PATTERN, StreamName, SubscriptionName,
};
#[cfg(feature = "planted-bugs")]
pub use planted::PlantedBug;
pub use schema::{
    Rule, SchemaInfo, SchemaRecord, SchemaRegistration, SchemaRegistry, SchemaVersionInfo,
    UpcastFn, Upcaster, json_in_binary, schema_of,
};
pub use storage::*;
pub use stream_config::{
    DeliverySemantics, EphemeralLimits, Overflow, RetentionPolicy, Scope, StreamConfig, StreamKind,
    StreamSpec,
};
pub use subscription_config::{
    CommitStrategy, StartPosition, SubscriptionConfig, SubscriptionMode, SubscriptionOptions,
};
pub use time::{MonoNanos, Now, UnixMillis};
