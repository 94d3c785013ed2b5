//! The storage contract, on SQLite files in a temporary folder.

async fn fresh_store() -> (tributary_store_sqlite::SqliteStore, tempfile::TempDir) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temporary folder: {e}"),
    };
    let config = tributary_store_sqlite::SqliteStoreConfig::new(dir.path().join("tributary.db"));
    match tributary_store_sqlite::SqliteStore::open(&config).await {
        Ok(s) => (s, dir),
        Err(e) => panic!("cannot open the test store: {e}"),
    }
}

mod cases {
    use super::fresh_store;

    struct Held(
        tributary_store_sqlite::SqliteStore,
        #[allow(dead_code)] tempfile::TempDir,
    );

    impl tributary_store_api::Store for Held {
        fn execute(
            &self,
            req: tributary_core::StorageRequest,
        ) -> impl std::future::Future<Output = tributary_core::StorageResult> + Send {
            self.0.execute(req)
        }
    }

    async fn make() -> Held {
        let (s, d) = fresh_store().await;
        Held(s, d)
    }

    tributary_store_conformance::conformance_tests!(make().await);
}
