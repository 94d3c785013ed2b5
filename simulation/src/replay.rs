//! Replaying journals: each journal's engine is rebuilt from its header, handed every recorded
//! input in order, and checked by the [`Checker`] with the oracles that need only inputs and
//! outputs. Journals of one node given in order share one checker, so what must survive a
//! restart is checked too.

use crate::checker::{Checker, Violation};
use crate::journal::{JournalError, JournalReader};
use std::io::Read;
use thiserror::Error;
use tributary_core::Engine;

/// Why a journal could not be replayed.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// The journal is unreadable.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The header's configuration is refused by the engine.
    #[error("the journal's configuration is refused: {0}")]
    Config(tributary_core::InvalidInput),
}

/// Where a journal broke a rule.
#[derive(Debug, Clone)]
pub struct JournalFailure {
    /// Which journal (0-based, in the order given).
    pub journal: usize,
    /// The record (1-based) whose handling showed it.
    pub record: u64,
    /// What broke.
    pub violation: Violation,
}

/// What a replay did.
#[derive(Debug)]
pub struct JournalReport {
    /// Records replayed.
    pub records: u64,
    /// The first broken rule.
    pub failure: Option<JournalFailure>,
}

/// Replays journals (of one node, in order) and checks them.
pub fn check_journals<R: Read>(
    journals: impl IntoIterator<Item = R>,
) -> Result<JournalReport, ReplayError> {
    let mut checker: Option<Checker> = None;
    let mut records = 0;
    for (j, input) in journals.into_iter().enumerate() {
        let mut reader = JournalReader::new(input)?;
        let h = reader.header().clone();
        let checker = checker.get_or_insert_with(|| Checker::new(h.config.clone()));
        let mut engine =
            Engine::new(h.config.clone(), h.seed, h.start).map_err(ReplayError::Config)?;
        checker.on_start(h.start);
        let mut record = 0;
        let drain = |engine: &mut Engine, checker: &mut Checker| {
            while let Some(out) = engine.poll_output() {
                checker.on_output(&out);
            }
            checker.take_violation()
        };
        if let Some(v) = drain(&mut engine, checker) {
            return Ok(JournalReport {
                records,
                failure: Some(JournalFailure {
                    journal: j,
                    record,
                    violation: v,
                }),
            });
        }
        while let Some((now, input)) = reader.next_record()? {
            record += 1;
            records += 1;
            checker.on_input(now, &input);
            engine.handle_input(now, input);
            if let Some(v) = drain(&mut engine, checker) {
                return Ok(JournalReport {
                    records,
                    failure: Some(JournalFailure {
                        journal: j,
                        record,
                        violation: v,
                    }),
                });
            }
        }
    }
    Ok(JournalReport {
        records,
        failure: None,
    })
}
