//! Every function of `alien_commands::kv_contract` against [`SqliteKv`], each on a fresh file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_local::SqliteKv;

async fn fresh() -> (tempfile::TempDir, SqliteKv) {
    let dir = tempfile::tempdir().unwrap();
    let kv = SqliteKv::open(&dir.path().join("commands_kv")).await.unwrap();
    (dir, kv)
}

alien_commands::kv_contract_tests!(fresh);
