//! Every planted bug of the core is caught by the simulator within a fixed range of seeds.
//! An oracle that catches no planted bug does not count. Needs `--features planted-bugs`.

#![cfg(feature = "planted-bugs")]

use tributary_core::PlantedBug;
use tributary_simulation::{RunOptions, run};

/// Seeds tried per bug (each bug is caught within the first few today).
const SEEDS: std::ops::Range<u64> = 0..24;

fn first_failure(bug: PlantedBug) -> Option<(u64, String)> {
    SEEDS.clone().find_map(|seed| {
        let out = run(&RunOptions {
            seed,
            plant: Some(bug),
            ..RunOptions::default()
        });
        out.failure.map(|f| (seed, f.violation.to_string()))
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

#[test]
fn every_planted_bug_has_a_test() {
    assert_eq!(PlantedBug::ALL.len(), 10);
}
