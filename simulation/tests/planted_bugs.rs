//! Every planted bug of the core is caught by the simulator within a fixed range of seeds.
//! An oracle that catches no planted bug does not count. Needs `--features planted-bugs`.

#![cfg(feature = "planted-bugs")]

use tributary_core::PlantedBug;
use tributary_simulation::{RunOptions, run};

/// Seeds tried per bug (most are caught within the first few; `retention-past-head`, which
/// needs a cut of a whole partition followed by an append, at seed 34 today).
const SEEDS: std::ops::Range<u64> = 0..40;

fn first_failure(bug: PlantedBug) -> Option<(u64, String)> {
    first_failure_by(bug, "")
}

/// The first seed of [`SEEDS`] whose run fails with a violation that starts with `tag`.
fn first_failure_by(bug: PlantedBug, tag: &str) -> Option<(u64, String)> {
    SEEDS.clone().find_map(|seed| {
        let out = run(&RunOptions {
            seed,
            plant: Some(bug),
            ..RunOptions::default()
        });
        out.failure
            .map(|f| (seed, f.violation.to_string()))
            .filter(|(_, what)| what.starts_with(tag))
    })
}

macro_rules! caught {
    ($name:ident, $bug:expr) => {
        #[test]
        fn $name() {
            match first_failure($bug) {
                Some((seed, what)) => eprintln!("{}: caught by seed {seed}: {what}", $bug),
                None => panic!("{} was not caught by seeds {:?}", $bug, SEEDS),
            }
        }
    };
}

/// Like `caught!`, by the oracle named (a seed of the range where that oracle is the one
/// that fails the run: another oracle may see the same bug first in other seeds).
macro_rules! caught_by {
    ($name:ident, $bug:expr, $oracle:expr) => {
        #[test]
        fn $name() {
            let tag = format!("[{}]", $oracle);
            match first_failure_by($bug, &tag) {
                Some((seed, what)) => eprintln!("{}: caught by seed {seed}: {what}", $bug),
                None => panic!(
                    "{} was not caught by {} within seeds {:?}",
                    $bug, $oracle, SEEDS
                ),
            }
        }
    };
}

caught!(skip_dedup, PlantedBug::SkipDedup);
caught!(forget_ack, PlantedBug::ForgetAck);
caught!(lose_unknown_append, PlantedBug::LoseUnknownAppend);
caught!(ignore_key_order, PlantedBug::IgnoreKeyOrder);
caught!(floor_moves_back, PlantedBug::FloorMovesBack);
caught!(redeliver_acked, PlantedBug::RedeliverAcked);
caught!(ephemeral_overflow, PlantedBug::EphemeralOverflow);
caught!(ignore_replay_rate, PlantedBug::IgnoreReplayRate);
caught!(ignore_expected_offset, PlantedBug::IgnoreExpectedOffset);
caught!(hole_after_failed_write, PlantedBug::HoleAfterFailedWrite);
caught_by!(
    read_undelivered,
    PlantedBug::ReadUndelivered,
    "receipt-delivered"
);
caught_by!(
    unread_kept_on_read,
    PlantedBug::UnreadKeptOnRead,
    "receipt-unread"
);
caught_by!(
    unread_timeout_twice,
    PlantedBug::UnreadTimeoutTwice,
    "unread-timeout-once"
);
caught_by!(
    receipts_forget_reads,
    PlantedBug::ReceiptsForgetReads,
    "receipts-durable"
);

caught_by!(
    register_schema_unsaved,
    PlantedBug::RegisterSchemaUnsaved,
    "schemas-durable"
);
// Caught first by `upcast` (deliveries after the restart are not upcast), or by
// `schemas-durable` when a `ListSchemas` comes first.
caught!(schemas_not_recovered, PlantedBug::SchemasNotRecovered);
caught_by!(upcast_skips_hop, PlantedBug::UpcastSkipsHop, "upcast");
caught_by!(
    rename_drops_parent,
    PlantedBug::RenameDropsParent,
    "schema-compatible"
);

caught_by!(
    retention_off_by_one,
    PlantedBug::RetentionOffByOne,
    "retention-limits"
);
caught_by!(
    retention_past_head,
    PlantedBug::RetentionPastHead,
    "retention-prefix"
);
caught_by!(
    retention_ignores_unconsumed,
    PlantedBug::RetentionIgnoresUnconsumed,
    "retention-keeps-unconsumed"
);

caught_by!(
    relay_skips_event,
    PlantedBug::RelaySkipsEvent,
    "relay-order"
);
caught_by!(
    relay_advances_before_confirm,
    PlantedBug::RelayAdvancesBeforeConfirm,
    "relay-confirmed"
);

caught_by!(non_holder_nack, PlantedBug::NonHolderNack, "holder-only");
caught_by!(
    session_expiry_ignored,
    PlantedBug::SessionExpiryIgnored,
    "session-expiry"
);

#[test]
fn every_planted_bug_has_a_test() {
    assert_eq!(PlantedBug::ALL.len(), 25);
}
