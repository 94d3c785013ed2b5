//! An optional journal of the engine's inputs, in the simulator's format
//! (`tributary_simulation::journal`, postcard), so that an incident recorded in production can
//! be replayed and checked by the simulator (`tributary-simulation --journal FILE`).
//!
//! Records are encoded and written by a thread of their own; the engine task only hands them
//! over through a bounded queue, and waits (back-pressure) when the disk falls that far behind.
//! The file is flushed whenever the queue runs empty, and at the end.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use tributary_core::{Input, Now};
use tributary_simulation::journal::{JournalError, JournalHeader, JournalWriter};

/// Records handed over and not yet written, at most.
const QUEUE: usize = 65_536;

/// A journal being written. Dropping it writes what is queued, flushes and closes the file.
pub struct Journal {
    tx: Option<SyncSender<(Now, Input)>>,
    writer: Option<JoinHandle<Result<u64, JournalError>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Creates the file (replacing one that exists) and writes the header of the engine it
    /// records: the configuration, seed and start time given to `Engine::new`.
    pub fn create(path: &Path, header: &JournalHeader) -> Result<Journal, JournalError> {
        let file = BufWriter::new(File::create(path)?);
        let out = JournalWriter::new(file, header)?;
        let (tx, rx) = sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("tributary-journal".into())
            .spawn(move || write_all(out, rx))?;
        Ok(Journal {
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Queues one input with the time it is handled at.
    pub(crate) fn record(&self, now: Now, input: &Input) {
        if let Some(tx) = &self.tx {
            // The writer only stops on a write error, which it has logged.
            let _ = tx.send((now, input.clone()));
        }
    }
}

fn write_all(
    mut out: JournalWriter<BufWriter<File>>,
    rx: Receiver<(Now, Input)>,
) -> Result<u64, JournalError> {
    while let Ok((now, input)) = rx.recv() {
        out.record(now, &input)?;
        while let Ok((now, input)) = rx.try_recv() {
            out.record(now, &input)?;
        }
        std::io::Write::flush(out.get_mut())?;
    }
    let records = out.records();
    out.finish()?;
    Ok(records)
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            match w.join() {
                Ok(Ok(records)) => tracing::info!(code = 10, records, "journal closed"),
                Ok(Err(e)) => tracing::error!(code = 11, error = %e, "journal write failed"),
                Err(_) => tracing::error!(code = 11, "journal writer panicked"),
            }
        }
    }
}
