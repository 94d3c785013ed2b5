//! `tributary-simulation`: runs seeds of the deterministic simulator, or checks journals.
//!
//! ```text
//! cargo run --release -p tributary-simulation -- --seed 42
//! cargo run --release -p tributary-simulation -- --seeds 0..500
//! cargo run --release -p tributary-simulation -- --minutes 1
//! cargo run --release -p tributary-simulation -- --journal a.journal b.journal
//! ```
//!
//! Only this binary reads the OS clock and randomness: to pick seeds for `--minutes` and to
//! keep its time budget. The simulation itself never does.

use clap::Parser;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use tributary_simulation::{Outcome, RunOptions, run};

/// Tributary's deterministic simulator.
#[derive(Debug, Parser)]
#[command(name = "tributary-simulation", version, about)]
struct Args {
    /// Run one seed.
    #[arg(long, conflicts_with_all = ["seeds", "minutes", "journal"])]
    seed: Option<u64>,
    /// Run a range of seeds, `A..B` (B excluded); stop at the first failure.
    #[arg(long, value_parser = parse_range, conflicts_with_all = ["minutes", "journal"])]
    seeds: Option<(u64, u64)>,
    /// Run random seeds for this many minutes; stop at the first failure.
    #[arg(long, conflicts_with = "journal")]
    minutes: Option<f64>,
    /// Replay and check journals (of one node, in order).
    #[arg(long, num_args = 1..)]
    journal: Vec<PathBuf>,
    /// Where trace files of failures go.
    #[arg(long, default_value = "target/simulation")]
    trace_dir: PathBuf,
    /// Record each engine's journal into this folder.
    #[arg(long)]
    journal_dir: Option<PathBuf>,
    /// Print only failures and the summary.
    #[arg(long)]
    quiet: bool,
    /// Test-only: plant a bug in the core (needs `--features planted-bugs`), e.g. `skip-dedup`.
    #[arg(long)]
    plant: Option<String>,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: expected A..B"))?;
    let a: u64 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u64 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if a >= b {
        return Err(format!("{s:?}: the range is empty"));
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut base = RunOptions::default();
    if let Some(p) = &args.plant {
        match plant(&mut base, p) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    if !args.journal.is_empty() {
        return check_journals(&args.journal);
    }
    let started = Instant::now();
    let mut seeds: Box<dyn Iterator<Item = u64>> = match (args.seed, args.seeds, args.minutes) {
        (Some(s), _, _) => Box::new(std::iter::once(s)),
        (_, Some((a, b)), _) => Box::new(a..b),
        (_, _, Some(m)) => {
            let budget = std::time::Duration::from_secs_f64(m.max(0.0) * 60.0);
            let mut state = std::collections::hash_map::RandomState::new().build_hasher();
            state.write_u64(u64::from(std::process::id()));
            let mut x = state.finish();
            Box::new(std::iter::from_fn(move || {
                if started.elapsed() >= budget {
                    return None;
                }
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                Some(x >> 1)
            }))
        }
        _ => {
            eprintln!("say --seed N, --seeds A..B, --minutes M or --journal FILE...");
            return ExitCode::from(2);
        }
    };
    let mut combined = xxhash_rust::xxh3::Xxh3::new();
    let (mut runs, mut steps, mut crashes) = (0u64, 0u64, 0u64);
    let single = args.seed.is_some();
    let mut last_hash = 0;
    for seed in seeds.by_ref() {
        let opts = RunOptions {
            seed,
            journals: args.journal_dir.is_some(),
            ..base.clone()
        };
        let out = run(&opts);
        runs += 1;
        steps += out.steps;
        crashes += out.crashes;
        last_hash = out.hash;
        combined.update(&out.hash.to_le_bytes());
        if let Some(dir) = &args.journal_dir {
            write_journals(dir, &out);
        }
        if !args.quiet && !single {
            println!(
                "seed {seed}: ok, {} steps, {} crashes, {:.1} s virtual, hash {:016x}",
                out.steps,
                out.crashes,
                out.virtual_ns as f64 / 1e9,
                out.hash
            );
        }
        if out.failure.is_some() {
            report_failure(&args, &base, &out);
            println!("trace hash: {:016x}", out.hash);
            return ExitCode::FAILURE;
        }
        if single && !args.quiet {
            println!(
                "seed {seed}: ok, {} steps, {} crashes, {:.1} s virtual",
                out.steps,
                out.crashes,
                out.virtual_ns as f64 / 1e9
            );
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{runs} seeds passed: {steps} steps, {crashes} crashes in {secs:.1} s ({:.1} seeds/s, {:.0} steps/s)",
        runs as f64 / secs,
        steps as f64 / secs
    );
    let hash = if single { last_hash } else { combined.digest() };
    println!("trace hash: {hash:016x}");
    ExitCode::SUCCESS
}

#[cfg(feature = "planted-bugs")]
fn plant(opts: &mut RunOptions, name: &str) -> Result<(), String> {
    opts.plant = Some(name.parse()?);
    Ok(())
}

#[cfg(not(feature = "planted-bugs"))]
fn plant(_: &mut RunOptions, _: &str) -> Result<(), String> {
    Err("--plant needs a build with `--features planted-bugs`".into())
}

fn replay_command(args: &Args, seed: u64) -> String {
    match &args.plant {
        Some(p) => format!(
            "cargo run --release -p tributary-simulation --features planted-bugs -- --seed {seed} --plant {p}"
        ),
        None => format!("cargo run --release -p tributary-simulation -- --seed {seed}"),
    }
}

fn report_failure(args: &Args, base: &RunOptions, out: &Outcome) {
    let Some(f) = &out.failure else { return };
    println!(
        "FAILED: seed {}, step {} (node {}, t = {:.3} s): {}",
        out.seed,
        f.step,
        f.node,
        f.at as f64 / 1e9,
        f.violation
    );
    // The run is deterministic: run it again keeping the trace lines.
    let mut opts = base.clone();
    opts.seed = out.seed;
    opts.trace = true;
    opts.journals = true;
    let traced = run(&opts);
    let path = args.trace_dir.join(format!("seed-{}.trace", out.seed));
    let mut text = format!(
        "seed {}\nfailure at step {} (node {}, t = {:.3} s): {}\nreplay: {}\nswarm: {:#?}\n\n",
        out.seed,
        f.step,
        f.node,
        f.at as f64 / 1e9,
        f.violation,
        replay_command(args, out.seed),
        out.swarm
    );
    for line in &traced.trace {
        text.push_str(line);
        text.push('\n');
    }
    match std::fs::create_dir_all(&args.trace_dir).and_then(|_| std::fs::write(&path, text)) {
        Ok(()) => println!("trace: {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
    let jdir = args
        .journal_dir
        .clone()
        .unwrap_or_else(|| args.trace_dir.join(format!("seed-{}-journals", out.seed)));
    write_journals(&jdir, &traced);
    println!("journals: {}", jdir.display());
    if traced.hash != out.hash {
        println!(
            "warning: the traced run's hash {:016x} differs from {:016x}: the simulation is not deterministic",
            traced.hash, out.hash
        );
    }
    println!("replay: {}", replay_command(args, out.seed));
}

fn write_journals(dir: &std::path::Path, out: &Outcome) {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("could not create {}: {e}", dir.display());
        return;
    }
    for (name, bytes) in &out.journals {
        let p = dir.join(name);
        if let Err(e) = std::fs::write(&p, bytes) {
            eprintln!("could not write {}: {e}", p.display());
        }
    }
}

fn check_journals(paths: &[PathBuf]) -> ExitCode {
    let mut files = Vec::new();
    for p in paths {
        match std::fs::File::open(p) {
            Ok(f) => files.push(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("{}: {e}", p.display());
                return ExitCode::from(2);
            }
        }
    }
    match tributary_simulation::replay::check_journals(files) {
        Err(e) => {
            eprintln!("journal: {e}");
            ExitCode::from(2)
        }
        Ok(r) => match r.failure {
            None => {
                println!("{} journal records replayed: every check holds", r.records);
                ExitCode::SUCCESS
            }
            Some(f) => {
                println!(
                    "FAILED: journal {} ({}), record {}: {}",
                    f.journal,
                    paths[f.journal].display(),
                    f.record,
                    f.violation
                );
                ExitCode::FAILURE
            }
        },
    }
}
