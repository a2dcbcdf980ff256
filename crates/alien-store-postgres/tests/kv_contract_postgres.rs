//! Every function of `alien_commands::kv_contract` against [`PostgresKv`] on a PostgreSQL of
//! its own (spec/testing.md), and what only a shared database shows: two replicas (two pools)
//! racing on the same keys.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use alien_commands::{Kv, KvError, PutCondition};
use alien_store_postgres::PostgresKv;
use alien_store_postgres::peer::PgPeer;

async fn fresh() -> (PgPeer, PostgresKv) {
    let pg = PgPeer::start().await.unwrap();
    let kv = PostgresKv::connect(&pg.url()).await.unwrap();
    (pg, kv)
}

alien_commands::kv_contract_tests!(fresh);

/// Two replicas, each with its own pool, race to create the same keys and to move the same
/// versioned key: exactly one wins each race, and no version is handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_on_one_database_never_both_win() {
    let pg = PgPeer::start().await.unwrap();
    let a = Arc::new(PostgresKv::connect(&pg.url()).await.unwrap());
    let b = Arc::new(PostgresKv::connect(&pg.url()).await.unwrap());
    for round in 0..20 {
        let key = format!("lease:{round}");
        let (x, y) = tokio::join!(
            a.put(&key, b"a", PutCondition::IfAbsent, None),
            b.put(&key, b"b", PutCondition::IfAbsent, None)
        );
        let wins = [x.unwrap(), y.unwrap()].iter().filter(|v| v.is_some()).count();
        assert_eq!(wins, 1, "round {round}: one create wins");
        let version = a.get(&key).await.unwrap().unwrap().version;
        let (x, y) = tokio::join!(
            a.put(&key, b"a2", PutCondition::IfVersion(version), None),
            b.put(&key, b"b2", PutCondition::IfVersion(version), None)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(usize::from(x.is_some()) + usize::from(y.is_some()), 1, "round {round}");
        assert!(x.or(y).unwrap() > version, "a new version");
    }
}

/// A second connect migrates nothing again, and a database that is not there is an error
/// naming it, without the password of the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_refusals_name_the_database() {
    let pg = PgPeer::start().await.unwrap();
    let first = PostgresKv::connect(&pg.url()).await.unwrap();
    first.put("k", b"v", PutCondition::Always, None).await.unwrap();
    let again = PostgresKv::connect(&pg.url()).await.unwrap();
    assert_eq!(again.get("k").await.unwrap().unwrap().value, b"v");
    let url = format!("postgres://alien:hunter2@127.0.0.1:{}/nosuchdb", pg.port);
    let err = PostgresKv::connect(&url).await.unwrap_err().to_string();
    assert!(err.contains("nosuchdb") && !err.contains("hunter2"), "{err}");
    drop(pg);
    let err = first.ping().await.unwrap_err();
    assert!(matches!(err, KvError::Unavailable(_)), "{err}");
}
