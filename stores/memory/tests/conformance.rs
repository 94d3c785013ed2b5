//! The storage contract, on the in-memory store.

tributary_store_conformance::conformance_tests!(
    tributary_store_conformance::SharedMemoryStore::default()
);
