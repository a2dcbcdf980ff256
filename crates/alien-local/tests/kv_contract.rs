//! Every function of `alien_commands::kv_contract` against [`SqliteKv`], each on a fresh file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_commands::kv_contract;
use alien_local::SqliteKv;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let kv = SqliteKv::open(&dir.path().join("commands_kv")).await.unwrap();
                kv_contract::$name(&kv).await;
                kv.close().await;
            }
        )*
        /// The names run above, to check that none of the suite is missing.
        const RUN: &[&str] = &[$(stringify!($name)),*];
    };
}

contract!(
    put_get_delete_round_trip,
    versions_increase_with_every_write,
    versions_are_never_reused,
    put_if_absent,
    put_if_absent_race,
    put_if_version,
    put_if_version_race,
    delete_with_and_without_version,
    ttl_expiry,
    scan_prefix_in_key_order,
    scan_pagination,
    value_size_limit,
    key_charset,
    ping,
    batch_applies_all,
    batch_is_atomic,
    batch_race,
    batch_ttl,
    batch_limits,
);

#[test]
fn every_contract_function_runs() {
    let suite = include_str!("../../alien-commands/src/kv_contract.rs");
    let public: Vec<&str> = suite
        .lines()
        .filter_map(|line| line.strip_prefix("pub async fn "))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    assert!(public.len() >= 10, "found the suite's functions: {public:?}");
    for name in public {
        assert!(RUN.contains(&name), "kv_contract::{name} is not run against SqliteKv");
    }
}
