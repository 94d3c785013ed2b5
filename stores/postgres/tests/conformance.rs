//! The storage contract, on a real PostgreSQL: `TRIBUTARY_TEST_DATABASE_URL` names the server
//! (`scripts/test` starts one). Each test gets a schema of its own.

mod common;

tributary_store_conformance::conformance_tests!(common::fresh_store().await);
