//! The executor's conformance suite on tokio: the memory store, SQLite and PostgreSQL (sqlx on
//! tokio).

use std::future::Future;
use tributary_io_tokio::TokioRuntime;

/// A multi-threaded runtime of two workers per case, as the server runs.
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

tributary_executor_conformance::executor_conformance!(TokioRuntime, block_on);
