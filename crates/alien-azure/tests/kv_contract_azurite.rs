//! Every function of `alien_commands::kv_contract` against [`TableKv`] on Azurite, each on a
//! table of its own Azurite (spec/testing.md).
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_azure::azurite::{Azurite, unique_name};
use alien_azure::storage::EMULATOR_ACCOUNT;
use alien_azure::table::TableKv;

async fn fresh() -> (Azurite, TableKv) {
    let azurite = Azurite::start().await.unwrap();
    let kv = TableKv::new(EMULATOR_ACCOUNT, &unique_name("kv"), Some(&azurite.table_url)).unwrap();
    kv.create_table().await.unwrap();
    (azurite, kv)
}

alien_commands::kv_contract_tests!(fresh);

/// A table that does not exist: `ping` names it and says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_names_a_missing_table() {
    use alien_commands::Kv;
    let azurite = Azurite::start().await.unwrap();
    let kv = TableKv::new(EMULATOR_ACCOUNT, "alienNoSuchTable", Some(&azurite.table_url)).unwrap();
    let err = kv.ping().await.unwrap_err().to_string();
    assert!(err.contains("alienNoSuchTable") && err.contains("does not exist"), "{err}");
}
