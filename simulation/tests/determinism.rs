//! The same seed gives the same run: each seed of a set is run twice (and once more keeping
//! trace lines and journals) and must give the same trace hash and step count.

use tributary_simulation::{RunOptions, run};

const SEEDS: [u64; 6] = [0, 1, 7, 42, 99, 2026];

#[test]
fn each_seed_run_twice_gives_the_same_trace_hash() {
    let mut hashes = Vec::new();
    for seed in SEEDS {
        let a = run(&RunOptions::seed(seed));
        let b = run(&RunOptions::seed(seed));
        assert!(a.failure.is_none(), "seed {seed}: {:?}", a.failure);
        assert_eq!((a.hash, a.steps), (b.hash, b.steps), "seed {seed}");
        let mut opts = RunOptions::seed(seed);
        opts.trace = true;
        opts.journals = true;
        let traced = run(&opts);
        assert_eq!(traced.hash, a.hash, "seed {seed}: tracing changed the run");
        assert!(!traced.trace.is_empty());
        hashes.push(a.hash);
    }
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), SEEDS.len(), "different seeds, different runs");
}
