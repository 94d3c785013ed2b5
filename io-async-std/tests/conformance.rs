//! The executor's conformance suite on async-std, in a process with no tokio runtime: the
//! memory store, SQLite and PostgreSQL (sqlx on async-std).

use tributary_io_async_std::AsyncStdRuntime;

tributary_executor_conformance::executor_conformance!(AsyncStdRuntime, async_std::task::block_on);
