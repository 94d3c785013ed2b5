//! An optional journal of the engine's inputs, in the journal format
//! (`tributary_journal`, postcard), so that an incident recorded in production can
//! be replayed and checked by the simulator (`tributary-simulation --journal FILE`).
//!
//! Records are encoded and written by a thread of their own; the engine task only hands them
//! over through a bounded queue. When the disk falls that far behind (the queue is full), the
//! engine task waits for room asynchronously: it yields its runtime worker thread to other
//! tasks instead of blocking it, and the journal stays complete. The file is flushed whenever
//! the queue runs empty, and at the end.
//!
//! A write that fails is logged at once (code 11) and ends the journal there: what follows
//! could not be read back after a partly written record. From then on the inputs handed over
//! are dropped and counted, never waited for. [`JournalStatus`] tells health and metrics.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use tributary_core::{Input, Now};
use tributary_journal::{JournalError, JournalHeader, JournalWriter};

/// Records handed over and not yet written, at most.
const QUEUE: usize = 65_536;

type Record = (Now, Input);

/// A journal being written. Dropping it writes what is queued, flushes and closes the file.
pub struct Journal {
    tx: Option<async_channel::Sender<Record>>,
    writer: Option<JoinHandle<Result<u64, JournalError>>>,
    status: JournalStatus,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// What a journal has lost so far, shared with whoever reports it (`/health`, `/metrics`).
/// Cloning it shares it; it never keeps the journal open.
#[derive(Debug, Clone, Default)]
pub struct JournalStatus(Arc<StatusInner>);

#[derive(Debug, Default)]
struct StatusInner {
    write_failures: AtomicU64,
    dropped: AtomicU64,
    error: Mutex<Option<String>>,
}

impl JournalStatus {
    /// Writes that failed (each ends the journal, so 0 or 1).
    pub fn write_failures(&self) -> u64 {
        self.0.write_failures.load(Ordering::Relaxed)
    }

    /// Inputs the engine handled that are not in the journal (handed over after a write
    /// failure, or queued when it happened).
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Why the journal stopped, if it did.
    pub fn error(&self) -> Option<String> {
        self.0
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn failed(&self, error: &JournalError) {
        *self.0.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        self.0.write_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn dropped_some(&self, n: u64) {
        self.0.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

impl Journal {
    /// Creates the file (replacing one that exists) and writes the header of the engine it
    /// records: the configuration, seed and start time given to `Engine::new`.
    pub fn create(path: &Path, header: &JournalHeader) -> Result<Journal, JournalError> {
        let file = BufWriter::new(File::create(path)?);
        Journal::with_writer(file, header, QUEUE)
    }

    /// The same on any sink, with a queue of `queue` records (at least 1).
    fn with_writer<W: Write + Send + 'static>(
        out: W,
        header: &JournalHeader,
        queue: usize,
    ) -> Result<Journal, JournalError> {
        let out = JournalWriter::new(out, header)?;
        let (tx, rx) = async_channel::bounded(queue.max(1));
        let status = JournalStatus::default();
        let shared = status.clone();
        let writer = std::thread::Builder::new()
            .name("tributary-journal".into())
            .spawn(move || write_all(out, rx, shared))?;
        Ok(Journal {
            tx: Some(tx),
            writer: Some(writer),
            status,
        })
    }

    /// What the journal has lost so far.
    pub fn status(&self) -> JournalStatus {
        self.status.clone()
    }

    /// Queues one input with the time it is handled at. When the queue is full, waits for
    /// room without blocking the thread; once the journal has stopped on a write failure,
    /// counts the input as dropped and returns at once.
    pub(crate) async fn record(&self, now: Now, input: &Input) {
        let Some(tx) = &self.tx else {
            return;
        };
        if tx.is_closed() {
            self.status.dropped_some(1);
            return;
        }
        let sent = match tx.try_send((now, input.clone())) {
            Ok(()) => Ok(()),
            Err(async_channel::TrySendError::Full(r)) => tx.send(r).await.map_err(|_| ()),
            Err(async_channel::TrySendError::Closed(_)) => Err(()),
        };
        if sent.is_err() {
            self.status.dropped_some(1);
        }
    }
}

/// The writer thread: writes every record handed over, flushing when the queue runs empty.
/// On a failure, logs it, marks the status, and closes the queue (the records still in it are
/// dropped and counted).
fn write_all<W: Write>(
    mut out: JournalWriter<W>,
    rx: async_channel::Receiver<Record>,
    status: JournalStatus,
) -> Result<u64, JournalError> {
    let mut write = || -> Result<(), JournalError> {
        while let Ok((now, input)) = rx.recv_blocking() {
            out.record(now, &input)?;
            while let Ok((now, input)) = rx.try_recv() {
                out.record(now, &input)?;
            }
            out.get_mut().flush()?;
        }
        Ok(())
    };
    match write() {
        Ok(()) => {
            let records = out.records();
            out.finish()
                .inspect_err(|e| fail(&status, &rx, e, records))?;
            Ok(records)
        }
        Err(e) => {
            fail(&status, &rx, &e, out.records());
            Err(e)
        }
    }
}

fn fail(
    status: &JournalStatus,
    rx: &async_channel::Receiver<Record>,
    e: &JournalError,
    records: u64,
) {
    // Logged before the status says so: whoever sees the status can find the line.
    tracing::error!(
        code = 11,
        error = %e,
        records,
        "journal write failed: the journal ends here, the inputs after it are not recorded"
    );
    // No record gets in from here on; those queued are dropped with the one being written.
    rx.close();
    let mut queued = 0;
    while rx.try_recv().is_ok() {
        queued += 1;
    }
    status.dropped_some(queued + 1);
    status.failed(e);
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let dropped = self.status.dropped();
            match w.join() {
                Ok(Ok(records)) => tracing::info!(code = 10, records, "journal closed"),
                // Logged when it happened.
                Ok(Err(_)) => tracing::warn!(
                    code = 10,
                    dropped,
                    "journal closed incomplete after a write failure"
                ),
                Err(_) => tracing::error!(code = 11, "journal writer panicked"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Condvar;
    use std::time::Duration;
    use tributary_core::{Config, ConnId, MonoNanos, UnixMillis};

    fn header() -> JournalHeader {
        JournalHeader {
            config: Config::default(),
            seed: 1,
            start: now(),
        }
    }

    fn now() -> Now {
        Now {
            mono: MonoNanos(0),
            wall: UnixMillis(0),
        }
    }

    fn input(i: u64) -> Input {
        Input::ConnClosed { conn: ConnId(i) }
    }

    /// A sink that holds every write while closed, and fails every write once broken.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<(bool, bool)>, Condvar)>);

    impl Gate {
        fn set(&self, closed: bool, broken: bool) {
            *self.0.0.lock().expect("gate") = (closed, broken);
            self.0.1.notify_all();
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.0;
            let mut g = lock.lock().expect("gate");
            while g.0 {
                g = cv.wait(g).expect("gate");
            }
            if g.1 {
                return Err(std::io::Error::other("disk on fire"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.write(&[]).map(|_| ())
        }
    }

    /// A full queue makes the recording task wait without holding its thread: on a runtime
    /// of one thread, another task still runs while the writer is stuck.
    #[test]
    fn a_full_queue_does_not_block_the_thread() {
        let gate = Gate::default();
        let journal = Journal::with_writer(gate.clone(), &header(), 2).expect("journal");
        gate.set(true, false);
        let (progress_tx, progress_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                tokio::spawn(async move {
                    let _ = progress_tx.send(());
                });
                // Far more than the queue holds while the writer is stuck.
                for i in 0..16 {
                    journal.record(now(), &input(i)).await;
                }
                drop(journal);
            });
            let _ = done_tx.send(());
        });
        let progressed = progress_rx.recv_timeout(Duration::from_secs(10));
        // Let the writer go, whatever happened (so that a failure does not hang the test).
        gate.set(false, false);
        assert!(
            progressed.is_ok(),
            "the other task never ran while the journal's queue was full"
        );
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("every record written once the writer goes on");
    }

    /// A failing write is known at once (not at the end), and what comes after it is dropped
    /// and counted without waiting.
    #[test]
    fn a_write_failure_is_reported_when_it_happens() {
        let gate = Gate::default();
        let journal = Journal::with_writer(gate.clone(), &header(), 4).expect("journal");
        gate.set(false, true);
        let status = journal.status();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(journal.record(now(), &input(0)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while status.write_failures() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the failure is not reported"
            );
            std::thread::yield_now();
        }
        assert_eq!(status.write_failures(), 1);
        assert!(
            status.error().is_some_and(|e| e.contains("disk on fire")),
            "{:?}",
            status.error()
        );
        let before = status.dropped();
        assert!(before >= 1);
        // More than the queue holds: none of it waits.
        rt.block_on(async {
            for i in 1..=10 {
                journal.record(now(), &input(i)).await;
            }
        });
        assert_eq!(status.dropped(), before + 10);
        drop(journal);
        assert_eq!(status.write_failures(), 1);
    }
}
