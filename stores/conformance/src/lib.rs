//! # tributary-store-conformance
//!
//! The storage contract of `tributary-core` as executable checks. Every store runs the same
//! cases (memory, SQLite, PostgreSQL): each store crate's tests call
//! [`conformance_tests!`] with an async expression that makes a fresh, empty store.
//!
//! [`Driver`] runs an engine against any [`Store`], one command at a time, for the scenario
//! cases (an engine that restarts on its store and carries on).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cases;
mod driver;
mod memory;

pub use cases::*;
pub use driver::Driver;
pub use memory::SharedMemoryStore;

/// Generates one `#[tokio::test]` per conformance case, each on a fresh store made by `$make`
/// (an async expression).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            create_stream_is_idempotent_and_refuses_another_config,
            append_then_read_and_recover_heads,
            a_repeated_append_is_idempotent_and_a_conflict_writes_nothing,
            a_large_append_is_written_whole_or_not_at_all,
            requests_on_a_missing_stream_are_not_found,
            dedup_ids_load_in_pages_and_expire,
            find_offset_by_time,
            subscriptions_and_cursors_round_trip,
            cursor_saves_in_flight_together_are_answered_each_on_its_own,
            a_consumer_group_subscription_round_trips,
            read_receipts_merge_page_expire_and_go_with_their_subscription,
            one_consumers_cursor_and_receipts_are_deleted,
            a_removed_consumer_stays_removed_after_a_restart,
            retention_cuts_truncates_prefixes_and_expires_dedup_ids,
            the_byte_cut_counts_from_the_head_across_many_appends,
            relay_positions_round_trip_and_go_with_their_stream,
            deleting_a_stream_removes_it_and_frees_the_name,
            reads_page_through_a_partition,
            events_keep_every_field,
            an_engine_restarted_on_the_store_carries_on,
            schema_versions_upsert_and_load_in_pages,
            registered_schemas_survive_a_restart,
            a_pipelined_append_commits_after_the_one_it_names,
            an_append_after_one_that_did_not_commit_writes_nothing,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $make;
                $crate::$case(&store).await;
            }
        )*
    };
}
