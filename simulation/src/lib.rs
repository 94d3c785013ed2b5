//! # tributary-simulation
//!
//! Tributary's deterministic simulator, in the style of TigerBeetle's VOPR: one seed decides
//! everything (the workload, the faults, the timing), a virtual clock replaces time, and a
//! reference model with invariants checks every step of every engine.
//!
//! - [`sim::run`] runs one seed: a chaos phase (workload + faults), a liveness phase (faults
//!   healed, convergence required within a bound) and final checks; it returns an
//!   [`Outcome`] with the trace hash and the first [`Failure`], if any.
//! - [`checker::Checker`] is the reference model and the oracles. It needs only what crosses
//!   an engine's boundary, so it also checks recorded [`journal`]s ([`replay::check_journals`]).
//! - [`swarm::Swarm`] holds the options drawn from a seed.
//!
//! Nothing here reads a clock, draws OS randomness, spawns a thread or iterates a hash map:
//! the same seed always gives the same run and the same trace hash.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checker;
pub mod clock;
mod finale;
pub mod inbound;
pub use tributary_journal as journal;
pub mod queue;
pub mod replay;
pub mod rng;
pub mod sim;
pub mod store;
pub mod swarm;
pub mod trace;
pub mod workload;

pub use checker::{Checker, Violation};
pub use sim::{Failure, Outcome, RunOptions, run};
