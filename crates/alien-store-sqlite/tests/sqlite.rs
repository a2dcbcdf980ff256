//! SQLite-specific behaviour: what reaches the files on disk, key checks and rotation, lock and
//! open failures, and the cost of marking a large fleet with a new release.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alien_core::{DeploymentStatus, EnvironmentVariable, Platform, TokenType, VariableType};
use alien_store::contract::{new_deployment, new_release};
use alien_store::{DeploymentStore, ReleaseStore, Store, StoreError, TokenStore};
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};
use chrono::Utc;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

fn key() -> EncryptionKey {
    EncryptionKey::generate().unwrap()
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("alien-manager.db")
}

async fn raw_connection(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path)).await.unwrap()
}

/// Every file of the database (db, -wal, -shm, anything else) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A deployment with a plain and a secret variable; returns (secret value, raw token, plain value).
async fn deployment_with_secrets(store: &SqliteStore) -> (String, String, String) {
    let group = store.create_group("g", 10).await.unwrap();
    let mut new = new_deployment(&group.id, "web", Platform::Local);
    let secret = format!("secret-{}", EncryptionKey::generate().unwrap().expose_hex());
    let plain = format!("plain-{}", EncryptionKey::generate().unwrap().expose_hex());
    new.environment_variables = vec![
        EnvironmentVariable {
            name: "PLAIN".into(),
            value: plain.clone(),
            var_type: VariableType::Plain,
        },
        EnvironmentVariable {
            name: "SECRET".into(),
            value: secret.clone(),
            var_type: VariableType::Secret,
        },
    ];
    let raw = new.token.raw.expose().to_owned();
    store.create_deployment(new).await.unwrap();
    (secret, raw, plain)
}

#[tokio::test]
async fn secrets_and_raw_tokens_never_reach_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path, Sealer::new(key())).await.unwrap();
    let (secret, raw, plain) = deployment_with_secrets(&store).await;
    let check = |when: &str| {
        let files = snapshot(dir.path());
        let all: Vec<u8> = files.values().flatten().copied().collect();
        assert!(contains(&all, plain.as_bytes()), "{when}: the search finds plain values");
        for (name, bytes) in &files {
            assert!(!contains(bytes, secret.as_bytes()), "{when}: secret value in {name}");
            assert!(!contains(bytes, raw.as_bytes()), "{when}: raw token in {name}");
            assert!(!contains(bytes, &raw.as_bytes()[12..]), "{when}: raw token tail in {name}");
        }
        files
    };
    let files = check("after the writes");
    assert!(files.keys().any(|name| name.ends_with("-wal")), "{:?}", files.keys());

    let mut conn = raw_connection(&path).await;
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await.unwrap();
    conn.close().await.unwrap();
    check("after a checkpoint");
    store.close().await;
    check("after closing");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the database file is private");
    }
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let right = key();
    let store = SqliteStore::open(&path, Sealer::new(right.clone())).await.unwrap();
    let (secret, _, _) = deployment_with_secrets(&store).await;
    store.close().await;

    let before = snapshot(dir.path());
    let err = SqliteStore::open(&path, Sealer::new(key())).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKey(_)), "{err}");
    assert!(err.to_string().contains("encryption"), "{err}");
    assert_eq!(snapshot(dir.path()), before, "a refused open leaves the files byte-identical");

    let store = SqliteStore::open(&path, Sealer::new(right)).await.unwrap();
    let page = store.list_deployments(&Default::default(), &Default::default()).await.unwrap();
    let env = store.deployment_environment(&page.items[0].id).await.unwrap();
    assert_eq!(env[1].value, secret);
    store.close().await;
}

#[tokio::test]
async fn rotated_keys_reseal_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let old = key();
    let new = key();
    let store = SqliteStore::open(&path, Sealer::new(old.clone())).await.unwrap();
    let (secret, raw, _) = deployment_with_secrets(&store).await;
    let id = store.list_deployments(&Default::default(), &Default::default()).await.unwrap().items
        [0]
    .id
    .clone();
    // One token, one secret variable, the key check.
    assert_eq!(store.rotate_key(Sealer::new(new.clone())).await.unwrap(), 3);
    assert_eq!(store.deployment_token(&id).await.unwrap().unwrap().expose(), raw);
    // Writes after the rotation seal with the new key.
    let group = store.create_group("h", 10).await.unwrap();
    let mut later = new_deployment(&group.id, "later", Platform::Local);
    later.environment_variables = vec![EnvironmentVariable {
        name: "S".into(),
        value: "x".into(),
        var_type: VariableType::Secret,
    }];
    store.create_deployment(later.clone()).await.unwrap();
    store.close().await;

    let err = SqliteStore::open(&path, Sealer::new(old)).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKey(_)), "{err}");
    let store = SqliteStore::open(&path, Sealer::new(new)).await.unwrap();
    assert_eq!(store.deployment_environment(&id).await.unwrap()[1].value, secret);
    assert_eq!(store.deployment_token(&id).await.unwrap().unwrap().expose(), raw);
    assert_eq!(store.deployment_environment(&later.id).await.unwrap()[0].value, "x");
    store.close().await;
}

#[tokio::test]
async fn a_locked_database_makes_ping_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path, Sealer::new(key())).await.unwrap();
    store.ping().await.unwrap();

    let mut other = raw_connection(&path).await;
    other.execute("BEGIN EXCLUSIVE").await.unwrap();
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let err = store.create_group("blocked", 1).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    // (Its HTTP answer, 503 UNAVAILABLE, is tested with the error mapping in alien-server.)
    // Opening while another process holds the write lock fails the same way, with the path.
    let err = SqliteStore::open(&path, Sealer::new(key())).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKey(_)), "the key is checked first: {err}");
    let store_key = key();
    let other_dir = tempfile::tempdir().unwrap();
    let other_path = db_path(&other_dir);
    SqliteStore::open(&other_path, Sealer::new(store_key.clone())).await.unwrap().close().await;
    let mut locker = raw_connection(&other_path).await;
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();
    let err = SqliteStore::open(&other_path, Sealer::new(store_key)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("cannot be written"), "{err}");
    locker.execute("ROLLBACK").await.unwrap();
    locker.close().await.unwrap();

    other.execute("ROLLBACK").await.unwrap();
    other.close().await.unwrap();
    store.ping().await.unwrap();
    store.create_group("after", 1).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn unopenable_paths_are_unavailable_or_corrupt_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no").join("such").join("dir").join("db");
    let err = SqliteStore::open(&missing_dir, Sealer::new(key())).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("no/such/dir"), "{err}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&garbage, Sealer::new(key())).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_marks_100k_running_deployments() {
    const N: i64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path, Sealer::new(key())).await.unwrap();
    let group = store.create_group("fleet", 100_000).await.unwrap();
    let mut conn = raw_connection(&path).await;
    let started = Instant::now();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
         INSERT INTO deployments (id, name, platform, deployment_model, deployment_group_id, \
         status, created_at, updated_at) \
         SELECT printf('dep_%028d', i), printf('d-%d', i), 'local', 'push', ?1, 'running', i, i FROM n",
    )
    .bind(group.id.as_str())
    .bind(N)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    eprintln!("inserted {N} running deployments in {:?}", started.elapsed());

    // A loop tick with nothing due.
    let started = Instant::now();
    let due = store.acquire_due("loop", Utc::now(), 8, Duration::from_secs(300)).await.unwrap();
    eprintln!("acquire_due over {N} running deployments, nothing due: {:?}", started.elapsed());
    assert!(due.is_empty());

    let started = Instant::now();
    let created = store.create_release(new_release(&[Platform::Local], "v1")).await.unwrap();
    let elapsed = started.elapsed();
    eprintln!("create_release marked {} deployments in {elapsed:?}", created.marked);
    assert_eq!(created.marked, N as u64);

    let filter = alien_store::DeploymentFilter {
        status: Some(DeploymentStatus::UpdatePending),
        ..Default::default()
    };
    let page = store.list_deployments(&filter, &Default::default()).await.unwrap();
    assert_eq!(page.items.len(), 50);
    assert!(page.items.iter().all(|d| d.desired_release_id.as_ref() == Some(&created.release.id)));
    let events = store.deployment_events(&page.items[0].id, 5).await.unwrap();
    assert_eq!(events[0].to, DeploymentStatus::UpdatePending);

    let started = Instant::now();
    let due = store.acquire_due("loop", Utc::now(), 8, Duration::from_secs(300)).await.unwrap();
    eprintln!("acquire_due with {N} due, limit 8: {:?}", started.elapsed());
    assert_eq!(due.len(), 8);
    assert_eq!(store.count_tokens(TokenType::Deployment).await.unwrap(), 0);
    store.close().await;
}

/// Found tokens stay cached between lookups (a fleet's tokens are found without a read), yet a
/// revocation committed by another process on the same file (here a raw connection, as the
/// offline `admin-token reset` next to a live manager) is seen within about a second: the
/// trigger-maintained token epoch moved.
#[tokio::test]
async fn a_revocation_by_another_process_is_seen_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path, Sealer::new(key())).await.unwrap();
    let kept = alien_store::contract::new_token(TokenType::Admin);
    let revoked = alien_store::contract::new_token(TokenType::Admin);
    let hash = |t: &alien_store::NewToken| alien_core::token::hash_token(t.raw.expose());
    let (kept_hash, revoked_hash) = (hash(&kept), hash(&revoked));
    store.create_token(kept).await.unwrap();
    let revoked_id = store.create_token(revoked).await.unwrap().id;
    assert!(store.find_token(&revoked_hash, Utc::now()).await.unwrap().is_some());
    assert!(store.find_token(&kept_hash, Utc::now()).await.unwrap().is_some());

    let mut other = raw_connection(&path).await;
    sqlx::query("UPDATE tokens SET revoked_at = ?1 WHERE id = ?2")
        .bind(Utc::now().timestamp_millis())
        .bind(revoked_id.as_str())
        .execute(&mut other)
        .await
        .unwrap();
    let started = Instant::now();
    while store.find_token(&revoked_hash, Utc::now()).await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(3), "the revocation was not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = started.elapsed();
    assert!(seen <= Duration::from_millis(1500), "seen after {seen:?}");
    assert!(store.find_token(&kept_hash, Utc::now()).await.unwrap().is_some(), "others stay");

    // Recording last use (any process) does not move the epoch.
    let epoch = || async {
        let mut conn = raw_connection(&path).await;
        sqlx::query_scalar::<_, String>("SELECT value FROM meta WHERE key = 'token_epoch'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let before = epoch().await;
    store.record_token_use(&[(revoked_id.clone(), Utc::now())]).await.unwrap();
    assert_eq!(epoch().await, before);
    store.close().await;
}

/// Deployments read are kept in memory (dashboards poll them), yet every write this process has
/// acknowledged is seen by the next read, while other tasks read the same deployment all along;
/// and a write committed by another process on the same file is seen within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kept_deployments_show_every_acknowledged_write_and_another_process_s_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = std::sync::Arc::new(SqliteStore::open(&path, Sealer::new(key())).await.unwrap());
    let group = store.create_group("cached", 10).await.unwrap();
    let id = store.create_deployment(new_deployment(&group.id, "web", Platform::Local)).await;
    let id = id.unwrap().id;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, id, stop) = (store.clone(), id.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store.get_deployment(&id).await.unwrap().unwrap();
                }
            })
        })
        .collect();
    for n in 0..200 {
        let retry = n % 2 == 0;
        let patch = alien_store::DeploymentPatch {
            retry_requested: Some(retry),
            reason: "test".into(),
            ..Default::default()
        };
        store.record_report(&id, DeploymentStatus::Pending, patch).await.unwrap().unwrap();
        let read = store.get_deployment(&id).await.unwrap().unwrap();
        assert_eq!(read.retry_requested, retry, "write {n} was not seen by the next read");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }

    let before = store.get_deployment(&id).await.unwrap().unwrap();
    let mut other = raw_connection(&path).await;
    sqlx::query("UPDATE deployments SET name = 'renamed' WHERE id = ?1")
        .bind(id.as_str())
        .execute(&mut other)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let read = store.get_deployment(&id).await.unwrap().unwrap();
        if read.name == "renamed" {
            break;
        }
        assert_eq!(read.name, before.name);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the other process's write was not seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = started.elapsed();
    assert!(seen <= Duration::from_millis(1500), "seen after {seen:?}");
    store.close().await;
}

/// The heartbeat time the file holds for `id`, read by another connection.
async fn heartbeat_on_file(path: &Path, id: &alien_core::Id) -> Option<i64> {
    let mut conn = raw_connection(path).await;
    sqlx::query_scalar("SELECT last_heartbeat_at FROM deployments WHERE id = ?1")
        .bind(id.as_str())
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Waits up to three seconds for `check`; how long it took.
async fn within(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(3), "{what}: not within 3 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Steady heartbeats of a report the store already confirmed may be acknowledged before their
/// time is written: it reaches the file within a second, and at once on a clean close; another
/// process's change of the deployment ends the report's steadiness within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_heartbeat_times_reach_the_file_within_a_second_and_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let key = key();
    let store = SqliteStore::open(&path, Sealer::new(key.clone())).await.unwrap();
    let group = store.create_group("steady", 10).await.unwrap();
    let mut new = new_deployment(&group.id, "agent", Platform::Local);
    new.deployment_model = alien_core::DeploymentModel::Pull;
    let id = store.create_deployment(new).await.unwrap().id;
    let release = store.create_release(new_release(&[Platform::Local], "1")).await.unwrap();
    let release = release.release.id;
    let mut other = raw_connection(&path).await;
    sqlx::query(
        "UPDATE deployments SET status = 'running', current_release_id = ?2, \
         desired_release_id = ?2, stack_state = '{\"a\":1}' WHERE id = ?1",
    )
    .bind(id.as_str())
    .bind(release.as_str())
    .execute(&mut other)
    .await
    .unwrap();
    let steady = alien_store::SteadyReport {
        platform: Platform::Local,
        release: release.clone(),
        stack_state: "{\"a\":1}".into(),
    };
    let t0 = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    for s in 1..=5 {
        assert!(store.record_steady_heartbeat(&id, &steady, at(s)).await.unwrap());
    }
    let last = at(5).timestamp_millis();
    let took = within("the last heartbeat time on file", async || {
        heartbeat_on_file(&path, &id).await == Some(last)
    })
    .await;
    assert!(took <= Duration::from_millis(1500), "written after {took:?}");
    assert_eq!(store.get_deployment(&id).await.unwrap().unwrap().last_heartbeat_at, Some(at(5)));

    assert!(store.record_steady_heartbeat(&id, &steady, at(6)).await.unwrap());
    store.close().await;
    assert_eq!(heartbeat_on_file(&path, &id).await, Some(at(6).timestamp_millis()), "on close");

    // Confirmed steady again after a restart; then another process changes the state.
    let store = SqliteStore::open(&path, Sealer::new(key)).await.unwrap();
    for s in 7..=8 {
        assert!(store.record_steady_heartbeat(&id, &steady, at(s)).await.unwrap());
    }
    sqlx::query("UPDATE deployments SET stack_state = '{\"a\":2}' WHERE id = ?1")
        .bind(id.as_str())
        .execute(&mut other)
        .await
        .unwrap();
    let mut s = 9;
    let took = within("the other process's change", async || {
        s += 1;
        !store.record_steady_heartbeat(&id, &steady, at(s)).await.unwrap()
    })
    .await;
    assert!(took <= Duration::from_millis(1500), "still steady after {took:?}");
    let changed = alien_store::SteadyReport { stack_state: "{\"a\":2}".into(), ..steady };
    assert!(store.record_steady_heartbeat(&id, &changed, at(s + 1)).await.unwrap());
    store.close().await;
}
