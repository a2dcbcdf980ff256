//! Runs the store contract suite (`alien_store::contract`) against a fresh SQLite store per
//! behaviour, so that a failure names the behaviour that broke.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(EncryptionKey::generate().unwrap());
    let store = SqliteStore::open(&dir.path().join("alien-manager.db"), sealer).await.unwrap();
    (dir, store)
}

alien_store::store_contract_tests!(fresh);
