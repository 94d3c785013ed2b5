//! Journals recorded by a run replay through the checker without a violation, record for
//! record; a damaged journal is a typed error, never a panic.

use tributary_simulation::journal::JournalError;
use tributary_simulation::replay::{ReplayError, check_journals};
use tributary_simulation::{RunOptions, run};

#[test]
fn recorded_journals_replay_clean() {
    for seed in [3, 11] {
        let out = run(&RunOptions {
            seed,
            journals: true,
            ..RunOptions::default()
        });
        assert!(out.failure.is_none(), "seed {seed}: {:?}", out.failure);
        let mut total = 0;
        for node in 0..out.swarm.nodes {
            // One node's journals, in the order of its lives.
            let mut mine: Vec<&(String, Vec<u8>)> = out
                .journals
                .iter()
                .filter(|(n, _)| n.contains(&format!("-node-{node}-")))
                .collect();
            mine.sort_by_key(|(n, _)| {
                n.rsplit("-life-")
                    .next()
                    .and_then(|s| s.trim_end_matches(".journal").parse::<u64>().ok())
            });
            let report = check_journals(mine.iter().map(|(_, b)| &b[..])).unwrap();
            assert!(
                report.failure.is_none(),
                "seed {seed} node {node}: {:?}",
                report.failure
            );
            total += report.records;
        }
        assert_eq!(
            total, out.steps,
            "seed {seed}: every input was recorded and replayed"
        );
    }
}

#[test]
fn a_damaged_journal_is_a_typed_error() {
    let out = run(&RunOptions {
        seed: 5,
        journals: true,
        ..RunOptions::default()
    });
    let (_, bytes) = &out.journals[0];
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(
        check_journals([&bad[..]]),
        Err(ReplayError::Journal(JournalError::BadMagic(_)))
    ));
    // Garbage in a record: a decode error naming the record.
    let mut bad = bytes.clone();
    let n = bad.len();
    for b in &mut bad[n / 2..n / 2 + 16] {
        *b = 0xff;
    }
    match check_journals([&bad[..]]) {
        Err(ReplayError::Journal(_)) | Ok(_) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
}
