//! [`SqliteKv`] behaviour beyond the contract: durability across reopen, file modes, purging,
//! and errors on an unusable directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use alien_commands::{Kv, KvError, PutCondition};
use alien_local::SqliteKv;

#[tokio::test]
async fn entries_and_versions_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let kv_dir = dir.path().join("commands_kv");
    let kv = SqliteKv::open(&kv_dir).await.unwrap();
    let v1 = kv.put("cmd:1:lease", b"lease", PutCondition::IfAbsent, None).await.unwrap().unwrap();
    kv.put("cmd:1:params", b"params", PutCondition::Always, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    kv.put("gone", b"x", PutCondition::Always, None).await.unwrap();
    assert!(kv.delete("gone", None).await.unwrap());
    kv.close().await;

    let kv = SqliteKv::open(&kv_dir).await.unwrap();
    let lease = kv.get("cmd:1:lease").await.unwrap().expect("survives reopen");
    assert_eq!((lease.value.as_slice(), lease.version), (b"lease".as_slice(), v1));
    let params = kv.get("cmd:1:params").await.unwrap().expect("survives reopen");
    assert!(params.expires_at.is_some(), "TTL survives reopen");
    assert_eq!(kv.get("gone").await.unwrap(), None);
    let keys: Vec<String> =
        kv.scan("cmd:1:", None, 10).await.unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["cmd:1:lease", "cmd:1:params"]);

    // The version counter is persistent too: nothing written after reopen reuses a version.
    let again = kv.put("gone", b"y", PutCondition::IfAbsent, None).await.unwrap().unwrap();
    assert!(again > params.version && again > v1, "{again} after {v1} and {}", params.version);
    kv.close().await;
}

#[cfg(unix)]
#[tokio::test]
async fn directory_and_file_are_private() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let kv_dir = dir.path().join("state").join("commands_kv");
    let kv = SqliteKv::open(&kv_dir).await.unwrap();
    assert_eq!(kv.path(), kv_dir.join("kv.db"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&kv_dir), 0o700, "directory");
    assert_eq!(mode(kv.path()), 0o600, "database file");
    kv.close().await;
}

#[tokio::test]
async fn expired_entries_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let kv = SqliteKv::open(dir.path()).await.unwrap();
    for i in 0..3 {
        let key = format!("lease:{i}");
        kv.put(&key, b"x", PutCondition::Always, Some(Duration::ZERO)).await.unwrap().unwrap();
    }
    kv.put("lease:kept", b"x", PutCondition::Always, Some(Duration::from_secs(60))).await.unwrap();
    assert_eq!(kv.get("lease:0").await.unwrap(), None, "a zero TTL expires at once");
    assert_eq!(kv.purge_expired().await.unwrap(), 3);
    assert_eq!(kv.purge_expired().await.unwrap(), 0);
    assert!(kv.get("lease:kept").await.unwrap().is_some());
    kv.close().await;
}

#[tokio::test]
async fn writes_purge_expired_entries_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let kv = SqliteKv::open(dir.path()).await.unwrap();
    kv.put("old", b"x", PutCondition::Always, Some(Duration::ZERO)).await.unwrap();
    for i in 0..300 {
        kv.put(&format!("w:{i}"), b"", PutCondition::Always, None).await.unwrap();
    }
    assert_eq!(kv.purge_expired().await.unwrap(), 0, "already purged by the writes");
    kv.close().await;
}

#[tokio::test]
async fn an_unusable_directory_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let err = SqliteKv::open(&file).await.unwrap_err();
    assert!(matches!(&err, KvError::Unavailable(m) if m.contains("not-a-dir")), "{err}");
}
