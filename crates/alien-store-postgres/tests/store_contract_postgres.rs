//! Runs the store contract suite (`alien_store::contract`) against [`PostgresStore`] on a
//! PostgreSQL of its own per behaviour (spec/testing.md), as alien-store-sqlite runs it against
//! SQLite, and what only a shared database shows: a replica with another key refused before it
//! writes anything, and two replicas racing for leases.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::sync::Arc;

use alien_core::Platform;
use alien_store::seal::{EncryptionKey, Sealer};
use alien_store::{DeploymentStore, LEASE_STALE_AFTER, ReleaseStore, StoreError, contract};
use alien_store_postgres::PostgresStore;
use alien_store_postgres::peer::PgPeer;
use chrono::Utc;

async fn fresh() -> (PgPeer, PostgresStore) {
    let pg = PgPeer::start().await.unwrap();
    let sealer = Sealer::new(EncryptionKey::generate().unwrap());
    let store = PostgresStore::connect(&pg.url(), sealer).await.unwrap();
    (pg, store)
}

alien_store::store_contract_tests!(fresh);

/// Every table of the store's schema with its row count, and the applied migrations.
async fn snapshot(url: &str) -> Vec<(String, i64)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'alien' \
         ORDER BY table_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut counts = Vec::new();
    for table in tables {
        let sql = format!("SELECT COUNT(*) FROM alien.\"{table}\"");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await.unwrap();
        counts.push((table, n));
    }
    pool.close().await;
    counts
}

/// A replica started with another key is refused with `WrongKey` and writes nothing; the first
/// key still opens the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_is_refused_before_anything_is_written() {
    let pg = PgPeer::start().await.unwrap();
    let key = EncryptionKey::generate().unwrap();
    let first = PostgresStore::connect(&pg.url(), Sealer::new(key.clone())).await.unwrap();
    let group = first.create_group("g", 10).await.unwrap();
    first
        .create_deployment(contract::new_deployment(&group.id, "d", Platform::Local))
        .await
        .unwrap();
    let before = snapshot(&pg.url()).await;
    assert!(before.iter().any(|(t, n)| t == "deployments" && *n == 1), "{before:?}");

    let other = Sealer::new(EncryptionKey::generate().unwrap());
    let err = PostgresStore::connect(&pg.url(), other).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKey(_)), "{err}");
    assert_eq!(snapshot(&pg.url()).await, before, "the refused replica wrote nothing");

    // A second replica with the right key connects and reads the same data.
    let again = PostgresStore::connect(&pg.url(), Sealer::new(key)).await.unwrap();
    assert_eq!(again.list_groups(&Default::default()).await.unwrap().items.len(), 1);
    again.close().await;
    first.close().await;
}

/// Two replicas (two stores, two pools) on one database racing `acquire_due` over the same due
/// deployments never lease the same deployment, and together lease them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_lease_the_same_deployment() {
    let pg = PgPeer::start().await.unwrap();
    let key = EncryptionKey::generate().unwrap();
    let a = Arc::new(PostgresStore::connect(&pg.url(), Sealer::new(key.clone())).await.unwrap());
    let b = Arc::new(PostgresStore::connect(&pg.url(), Sealer::new(key)).await.unwrap());
    a.create_release(contract::new_release(&[Platform::Local], "v1")).await.unwrap();
    let group = a.create_group("fleet", 1000).await.unwrap();
    let mut all = HashSet::new();
    for i in 0..120 {
        let name = format!("d{i}");
        let d = a
            .create_deployment(contract::new_deployment(&group.id, &name, Platform::Local))
            .await
            .unwrap();
        all.insert(d.id);
    }
    let now = Utc::now();
    let race = |store: Arc<PostgresStore>, owner: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.acquire_due(owner, now, 7, LEASE_STALE_AFTER).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|d| d.id));
            }
        })
    };
    let (x, y) = tokio::join!(race(a.clone(), "replica-a"), race(b.clone(), "replica-b"));
    let (x, y) = (x.unwrap(), y.unwrap());
    let xs: HashSet<_> = x.iter().cloned().collect();
    let ys: HashSet<_> = y.iter().cloned().collect();
    assert_eq!(xs.len(), x.len(), "a replica leased a deployment twice");
    assert_eq!(ys.len(), y.len(), "a replica leased a deployment twice");
    assert!(xs.is_disjoint(&ys), "both replicas leased {:?}", xs.intersection(&ys).next());
    assert_eq!(&xs | &ys, all, "every due deployment is leased once");
    a.close().await;
    b.close().await;
}

/// A server that went away makes calls `Unavailable` (what `/ready` and the HTTP layer turn into
/// 503), and a database that is not there is an error naming it, without the URL's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_unavailable() {
    let pg = PgPeer::start().await.unwrap();
    let sealer = || Sealer::new(EncryptionKey::generate().unwrap());
    let store = PostgresStore::connect(&pg.url(), sealer()).await.unwrap();
    alien_store::Store::ping(&store).await.unwrap();
    let url = format!("postgres://alien:hunter2@127.0.0.1:{}/nosuchdb", pg.port);
    let err = PostgresStore::connect(&url, sealer()).await.unwrap_err().to_string();
    assert!(err.contains("nosuchdb") && !err.contains("hunter2"), "{err}");
    drop(pg);
    let err = alien_store::Store::ping(&store).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let err = store.create_group("g", 1).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

/// A key rotation re-seals every sealed value: the old key is refused afterwards, the new one
/// opens the deployment's token and secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_reseals_everything() {
    use alien_core::{EnvironmentVariable, VariableType};
    let pg = PgPeer::start().await.unwrap();
    let old = EncryptionKey::generate().unwrap();
    let new = EncryptionKey::generate().unwrap();
    let mut store = PostgresStore::connect(&pg.url(), Sealer::new(old.clone())).await.unwrap();
    let group = store.create_group("g", 10).await.unwrap();
    let mut d = contract::new_deployment(&group.id, "d", Platform::Local);
    d.environment_variables = vec![EnvironmentVariable {
        name: "SECRET".into(),
        value: "s3cret".into(),
        var_type: VariableType::Secret,
    }];
    let raw = d.token.raw.clone();
    let d = store.create_deployment(d).await.unwrap();
    assert_eq!(store.rotate_key(Sealer::new(new.clone())).await.unwrap(), 3);
    // The rotated store seals with the new key from now on.
    assert_eq!(store.deployment_token(&d.id).await.unwrap(), Some(raw.clone()));
    store.close().await;

    let err = PostgresStore::connect(&pg.url(), Sealer::new(old)).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKey(_)), "{err}");
    let reopened = PostgresStore::connect(&pg.url(), Sealer::new(new)).await.unwrap();
    assert_eq!(reopened.deployment_token(&d.id).await.unwrap(), Some(raw));
    let env = reopened.deployment_environment(&d.id).await.unwrap();
    assert_eq!(env[0].value, "s3cret");
    reopened.close().await;
}

/// What SQLite's single writer gave for free holds across replicas: concurrent creations never
/// pass `maxDeployments` or duplicate a name, and concurrent revocations never revoke the last
/// live admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_the_limits() {
    use alien_core::TokenType;
    use alien_store::TokenStore;
    let pg = PgPeer::start().await.unwrap();
    let key = EncryptionKey::generate().unwrap();
    let a = Arc::new(PostgresStore::connect(&pg.url(), Sealer::new(key.clone())).await.unwrap());
    let b = Arc::new(PostgresStore::connect(&pg.url(), Sealer::new(key)).await.unwrap());
    let group = a.create_group("small", 5).await.unwrap();
    let create = |store: Arc<PostgresStore>, names: Vec<String>| {
        let group = group.id.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            for name in names {
                let new = contract::new_deployment(&group, &name, Platform::Local);
                results.push(store.create_deployment(new).await);
            }
            results
        })
    };
    // The same names from both replicas, more than the group holds.
    let names: Vec<String> = (0..8).map(|i| format!("d{i}")).collect();
    let (x, y) = tokio::join!(create(a.clone(), names.clone()), create(b.clone(), names));
    let results: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 5, "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(
                    err,
                    StoreError::MaxDeploymentsReached { .. } | StoreError::NameConflict { .. }
                ),
                "{err}"
            );
        }
    }
    assert_eq!(a.get_group(&group.id).await.unwrap().unwrap().deployment_count, 5);

    for round in 0..10 {
        let first = a.create_token(contract::new_token(TokenType::Admin)).await.unwrap();
        let second = b.create_token(contract::new_token(TokenType::Admin)).await.unwrap();
        let (x, y) = tokio::join!(a.revoke_token(&first.id), b.revoke_token(&second.id));
        let revoked = [&x, &y].iter().filter(|r| matches!(r, Ok(true))).count();
        let refused =
            [&x, &y].iter().filter(|r| matches!(r, Err(StoreError::LastAdminToken(_)))).count();
        assert_eq!((revoked, refused), (1, 1), "round {round}: {x:?} {y:?}");
        assert_eq!(a.count_tokens(TokenType::Admin).await.unwrap(), 1, "round {round}");
        a.revoke_admin_tokens().await.unwrap();
    }
    a.close().await;
    b.close().await;
}

/// A loop tick must not read the whole deployments table, whatever its size: over 50,000
/// running push deployments and 50,000 pull ones (a few due), `acquire_due`'s one statement
/// reads the partial indexes `deployments_due` and `deployments_retry`, never scans the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_due_query_reads_the_partial_indexes_not_the_table() {
    let (pg, store) = fresh().await;
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    for statement in [
        "INSERT INTO alien.deployment_groups (id, name, max_deployments, created_at) \
         VALUES ('dg_explain', 'explain', 1000000, 0)",
        "INSERT INTO alien.deployments (id, name, platform, deployment_model, \
         deployment_group_id, status, retry_requested, created_at, updated_at) \
         SELECT 'dep_' || n, 'd' || n, 'local', CASE WHEN n % 2 = 0 THEN 'push' ELSE 'pull' END, \
         'dg_explain', CASE WHEN n % 1000 = 0 THEN 'update-pending' ELSE 'running' END, \
         n % 5000 = 2, n, n FROM generate_series(1, 100000) AS n",
        "ANALYZE alien.deployments",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let plan = store.explain_acquire_due().await.unwrap().join("\n");
    eprintln!("{plan}");
    assert!(plan.contains("deployments_due"), "{plan}");
    assert!(plan.contains("deployments_retry"), "{plan}");
    assert!(!plan.contains("Seq Scan on deployments"), "{plan}");
    store.close().await;
}

/// Two replicas appending to the audit log at once: whatever a reader sees at any moment is
/// every id from the first to the newest, without a hole (an id that commits late would leave
/// one, and a page boundary there would skip it for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_ids_become_visible_in_order_across_replicas() {
    use alien_store::{AuditLog, NewAuditEntry, PageRequest};
    let pg = PgPeer::start().await.unwrap();
    let url = pg.url();
    let sealer = || Sealer::new(EncryptionKey::from_hex(&"2a".repeat(32)).unwrap());
    let stores: Vec<Arc<PostgresStore>> = vec![
        Arc::new(PostgresStore::connect(&url, sealer()).await.unwrap()),
        Arc::new(PostgresStore::connect(&url, sealer()).await.unwrap()),
    ];
    let entry = |i: usize| NewAuditEntry {
        at: Utc::now(),
        token_id: None,
        token_type: None,
        action: format!("POST /v1/test/{i}"),
        target_id: None,
        status: 200,
        outcome: "success".into(),
    };
    let mut writers = Vec::new();
    for w in 0..6 {
        let store = stores[w % 2].clone();
        writers.push(tokio::spawn(async move {
            for i in 0..100 {
                store.append_audit(entry(w * 1000 + i)).await.unwrap();
            }
        }));
    }
    let reader = stores[0].clone();
    let mut looks = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        let page = reader.list_audit(&PageRequest { limit: 1000, cursor: None }).await.unwrap();
        let ids: Vec<i64> = page.items.iter().map(|e| e.id).collect();
        if let (Some(newest), Some(oldest)) = (ids.first(), ids.last()) {
            assert_eq!((newest - oldest + 1) as usize, ids.len(), "a hole in {ids:?}");
        }
        looks += 1;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let page = reader.list_audit(&PageRequest { limit: 1000, cursor: None }).await.unwrap();
    assert_eq!(page.items.len(), 600);
    eprintln!("{looks} looks while 600 entries were appended");
}

/// A token found (and cached) on replica B and revoked through replica A is refused by B at
/// once: the revocation's notice empties B's cache, which would otherwise trust the token for
/// up to a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_replica_leaves_the_others_caches_at_once() {
    use alien_store::{NewToken, TokenStore};
    let pg = PgPeer::start().await.unwrap();
    let sealer = || Sealer::new(EncryptionKey::from_hex(&"3c".repeat(32)).unwrap());
    let a = PostgresStore::connect(&pg.url(), sealer()).await.unwrap();
    let b = PostgresStore::connect(&pg.url(), sealer()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(a.token_cache_is_live() && b.token_cache_is_live()) {
        assert!(std::time::Instant::now() < deadline, "the token listeners never connected");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let group = a.create_group("g", 10).await.unwrap();
    let token = NewToken::for_group(&group.id, None).unwrap();
    let hash = token.raw.hash();
    let record = a.create_token(token).await.unwrap();
    for _ in 0..2 {
        assert!(
            b.find_token(&hash, Utc::now()).await.unwrap().is_some(),
            "B finds (and caches) it"
        );
    }
    assert!(a.revoke_token(&record.id).await.unwrap());
    let revoked = std::time::Instant::now();
    while b.find_token(&hash, Utc::now()).await.unwrap().is_some() {
        assert!(
            revoked.elapsed() < std::time::Duration::from_millis(200),
            "B still accepts the token {:?} after its revocation",
            revoked.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    eprintln!("refused by the other replica {:?} after the revocation", revoked.elapsed());
    assert!(a.find_token(&hash, Utc::now()).await.unwrap().is_none());
}
