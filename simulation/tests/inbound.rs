//! The inbound path of cross-service delivery in the simulator: across a range of seeds the
//! inbound bindings append, see broker redeliveries after crashes and dropped connections
//! answered as duplicates, and dead-letter poison, and every run passes its oracles
//! (`inbound-once` among them).

use tributary_simulation::inbound::InboundStats;
use tributary_simulation::{RunOptions, run};

#[test]
fn inbound_bindings_survive_redeliveries_crashes_and_poison() {
    let mut total = InboundStats::default();
    let (mut runs, mut with_crashes) = (0, 0);
    for seed in 0..40 {
        let out = run(&RunOptions::seed(seed));
        assert!(out.failure.is_none(), "seed {seed}: {:?}", out.failure);
        let Some(s) = out.inbound else { continue };
        runs += 1;
        if out.crashes > 0 && s.duplicates > 0 {
            with_crashes += 1;
        }
        total.published += s.published;
        total.appended += s.appended;
        total.duplicates += s.duplicates;
        total.requeues += s.requeues;
        total.dead += s.dead;
    }
    eprintln!(
        "{runs} runs with inbound bindings: {total:?}; {with_crashes} with crashes and duplicates"
    );
    assert!(runs >= 5, "{runs}");
    assert!(total.appended > 100, "{total:?}");
    assert!(
        total.duplicates > 0 && total.requeues > 0 && total.dead > 0,
        "{total:?}"
    );
    assert!(
        with_crashes > 0,
        "no run crashed between a commit and an ack"
    );
}
