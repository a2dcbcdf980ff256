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
    // Writes queued together fail together, each caller told that the database is unreachable.
    let first = Arc::new(first);
    let writes = (0..16).map(|i| {
        let kv = first.clone();
        tokio::spawn(
            async move { kv.put(&format!("k{i}"), b"v", PutCondition::Always, None).await },
        )
    });
    for written in futures_util::future::join_all(writes).await {
        let err = written.unwrap().unwrap_err();
        assert!(matches!(err, KvError::Unavailable(_)), "{err}");
    }
}

/// Many batches at once on one replica commit in groups (one statement for all those queued
/// while the previous group was written); each batch keeps its own conditions, checked against
/// what the batches before it in the group left: one of 64 creates of a key wins, and 24
/// compare-and-set increments of one counter, retried on a lost race, all count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_in_groups_each_keep_their_own_conditions() {
    let (_pg, kv) = fresh().await;
    let kv = Arc::new(kv);
    let creates = (0..64).map(|i| {
        let kv = kv.clone();
        tokio::spawn(async move {
            kv.put("once", format!("{i}").as_bytes(), PutCondition::IfAbsent, None).await
        })
    });
    let created: Vec<_> = futures_util::future::join_all(creates).await;
    let wins = created.into_iter().filter(|r| r.as_ref().unwrap().as_ref().unwrap().is_some());
    assert_eq!(wins.count(), 1, "one create of the key wins");

    kv.put("counter", b"0", PutCondition::Always, None).await.unwrap();
    let increments = (0..24).map(|_| {
        let kv = kv.clone();
        tokio::spawn(async move {
            loop {
                let entry = kv.get("counter").await.unwrap().unwrap();
                let n: u32 = std::str::from_utf8(&entry.value).unwrap().parse().unwrap();
                let next = (n + 1).to_string();
                let put = kv.put(
                    "counter",
                    next.as_bytes(),
                    PutCondition::IfVersion(entry.version),
                    None,
                );
                if put.await.unwrap().is_some() {
                    return;
                }
            }
        })
    });
    for done in futures_util::future::join_all(increments).await {
        done.unwrap();
    }
    assert_eq!(kv.get("counter").await.unwrap().unwrap().value, b"24");
}
