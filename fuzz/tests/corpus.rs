//! Every seed of `corpus/<target>/` (and every input kept under `regressions/<target>/`, the
//! crashes found and fixed) through its target, as an ordinary test: the smoke run that needs
//! no AFL.

use std::path::Path;

#[test]
fn every_seed_and_regression_runs_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in tributary_fuzz::TARGETS {
        let mut seeds = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                assert_ne!(dir, "corpus", "no corpus for {name}");
                continue;
            };
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let data = std::fs::read(&path).expect("a seed file");
                eprintln!("{name}: {}", path.display());
                target(&data);
                seeds += 1;
            }
        }
        assert!(seeds >= 3, "{name}: only {seeds} seeds");
    }
}
