//! # tributary-executor-conformance
//!
//! The executor's conformance suite, written once over the executor's [`Runtime`] trait and
//! run by each runtime crate (`tributary-io-tokio`, `tributary-io-async-std`) against every
//! store: the memory store, SQLite, and the PostgreSQL named by `TRIBUTARY_TEST_DATABASE_URL`
//! (`scripts/pg-test-cluster start` prints one). It covers appends and reads, every
//! subscription mode with acks and redelivery, the engine's timers (ack wait, retention),
//! store failures and outcomes that cannot be known, a shutdown with appends in flight, and
//! back-pressure on a consumer that stops reading.
//!
//! A runtime crate runs it with [`executor_conformance!`], naming its runtime and a way to
//! block on a future:
//!
//! ```ignore
//! tributary_executor_conformance::executor_conformance!(
//!     tributary_io_async_std::AsyncStdRuntime,
//!     async_std::task::block_on
//! );
//! ```
//!
//! This crate picks no sqlx runtime: the crate that runs the suite turns on its stores'
//! `runtime-tokio` or `runtime-async-std` feature.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cases;
mod faulty;
mod stores;

pub use faulty::{Fault, FaultyStore};
pub use stores::{AnyStore, Backend, Place};

/// Generates one `#[test]` per case and store (modules `memory`, `sqlite`, `postgres`), each
/// running the case on the runtime `$rt` (an expression of a type implementing
/// `tributary_executor::Runtime`) inside `$block_on` (a function from a future to its output
/// that provides the runtime's context).
#[macro_export]
macro_rules! executor_conformance {
    ($rt:expr, $block_on:expr) => {
        mod memory {
            #[allow(unused_imports)]
            use super::*;
            $crate::__executor_cases!($crate::Backend::Memory, $rt, $block_on);
        }
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $crate::__executor_cases!($crate::Backend::Sqlite, $rt, $block_on);
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $crate::__executor_cases!($crate::Backend::Postgres, $rt, $block_on);
        }
    };
}

/// The list of cases (used by [`executor_conformance!`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __executor_cases {
    ($backend:expr, $rt:expr, $block_on:expr) => {
        $crate::__executor_cases!(@each $backend, $rt, $block_on;
            appends_are_read_back_in_order,
            concurrent_appends_get_distinct_dense_offsets,
            exclusive_acks_and_redelivers_to_another_consumer,
            broadcast_gives_each_consumer_every_event_and_redelivers_its_unacked,
            a_consumer_group_shares_partitions_commits_and_hands_over_the_unacked,
            read_receipts_ack_mark_read_and_redeliver,
            a_nacked_event_comes_again_then_goes_to_the_dead_letter_stream,
            an_unacknowledged_event_comes_again_after_its_ack_wait,
            retention_removes_events_older_than_max_age,
            a_failed_append_is_refused_and_the_next_takes_its_offsets,
            an_append_of_unknown_outcome_is_repeated_and_answered_once,
            a_shutdown_with_appends_in_flight_answers_each_and_loses_no_acknowledged_event,
            a_consumer_that_stops_reading_holds_no_more_than_its_credit,
        );
    };
    (@each $backend:expr, $rt:expr, $block_on:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                ($block_on)($crate::cases::$case($rt, $backend))
            }
        )*
    };
}
