//! [`FsPayloadStore`] behaviour beyond the contract: the signed URL format and its checks,
//! no temporary files left behind, no escape from the root, private modes, tidy directories.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use alien_commands::payload_contract::{chunked, collect, failing, pattern};
use alien_commands::{PayloadError, PayloadStore, UrlSigner};
use alien_local::FsPayloadStore;
use futures_util::StreamExt;

const KEY: &str = "arc/commands/cmd_01/params";

fn store(dir: &tempfile::TempDir) -> FsPayloadStore {
    let root = dir.path().join("commands_storage");
    FsPayloadStore::new(root, "https://manager.example/".into(), UrlSigner::new([3; 32]))
}

/// Every file and directory under `root`, relative.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `(exp, sig)` of a presigned URL.
fn exp_and_sig(url: &str) -> (u64, String) {
    let (_, query) = url.split_once('?').unwrap();
    let mut exp = None;
    let mut sig = None;
    for pair in query.split('&') {
        match pair.split_once('=').unwrap() {
            ("exp", v) => exp = Some(v.parse().unwrap()),
            ("sig", v) => sig = Some(v.to_owned()),
            other => panic!("unexpected query parameter {other:?}"),
        }
    }
    (exp.unwrap(), sig.unwrap())
}

#[tokio::test]
async fn presigned_urls_are_manager_signed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let before = SystemTime::now();
    let put = store.presign_put(KEY, Duration::from_secs(3600)).await.unwrap();
    let (exp, sig) = exp_and_sig(&put.backend.url);
    assert_eq!(
        put.backend.url,
        format!("https://manager.example/v1/payloads/{KEY}?exp={exp}&sig={sig}"),
        "base URL without its trailing slash"
    );
    let signer = UrlSigner::new([3; 32]);
    assert_eq!(sig, signer.sign(&format!("payloads.v1:PUT:{KEY}:{exp}")));
    let in_secs = exp - alien_commands::signing::unix(before);
    assert!((3599..=3601).contains(&in_secs), "expires in {in_secs} s");
    assert!(put.backend.headers.is_empty());
    let expiration = chrono::DateTime::parse_from_rfc3339(&put.expiration).unwrap();
    assert_eq!(expiration.timestamp(), exp as i64, "expiration is the signed expiry");
    assert!(put.expiration.ends_with('Z'), "{}", put.expiration);

    let get = store.presign_get(KEY, Duration::from_secs(60)).await.unwrap();
    let (exp, sig) = exp_and_sig(&get.backend.url);
    assert_eq!(sig, signer.sign(&format!("payloads.v1:GET:{KEY}:{exp}")));

    let week = Duration::from_secs(7 * 24 * 3600);
    assert!(store.presign_get(KEY, week).await.is_ok(), "7 days is allowed");
    let err = store.presign_get(KEY, week + Duration::from_secs(1)).await.unwrap_err();
    assert!(err.to_string().contains("7 days"), "{err}");
}

#[tokio::test]
async fn verify_url_accepts_fresh_signatures_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let now = SystemTime::now();
    let put = store.presign_put(KEY, Duration::from_secs(600)).await.unwrap();
    let (exp, sig) = exp_and_sig(&put.backend.url);

    assert_eq!(store.verify_url("PUT", KEY, exp, &sig, now), Ok(()), "fresh");
    assert_eq!(store.verify_url("put", KEY, exp, &sig, now), Ok(()), "methods are case-blind");
    let at_expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(exp);
    assert_eq!(store.verify_url("PUT", KEY, exp, &sig, at_expiry), Ok(()), "valid through exp");

    let bad = Err(PayloadError::BadSignature);
    let mut tampered = sig.clone();
    tampered.replace_range(..1, if sig.starts_with('0') { "1" } else { "0" });
    assert_eq!(store.verify_url("PUT", KEY, exp, &tampered, now), bad, "tampered signature");
    assert_eq!(store.verify_url("PUT", KEY, exp, "", now), bad, "no signature");
    assert_eq!(store.verify_url("PUT", KEY, exp, "not-hex", now), bad, "not hex");
    assert_eq!(store.verify_url("PUT", KEY, exp, &sig[..32], now), bad, "truncated");
    assert_eq!(store.verify_url("GET", KEY, exp, &sig, now), bad, "wrong method");
    assert_eq!(store.verify_url("DELETE", KEY, exp, &sig, now), bad, "wrong method");
    let other = "arc/commands/cmd_02/params";
    assert_eq!(store.verify_url("PUT", other, exp, &sig, now), bad, "wrong key");
    assert_eq!(store.verify_url("PUT", KEY, exp + 3600, &sig, now), bad, "extended expiry");
    let later = at_expiry + Duration::from_secs(1);
    assert_eq!(store.verify_url("PUT", KEY, exp, &sig, later), bad, "expired");

    let foreign = FsPayloadStore::new(
        dir.path().into(),
        "https://manager.example".into(),
        UrlSigner::new([4; 32]),
    );
    assert_eq!(foreign.verify_url("PUT", KEY, exp, &sig, now), bad, "another manager's key");
    assert!(matches!(
        store.verify_url("PUT", "../etc/passwd", exp, &sig, now),
        Err(PayloadError::InvalidKey(_))
    ));
}

#[tokio::test]
async fn failed_and_cancelled_writes_leave_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let root = store.root().to_owned();

    let result = store.write(KEY, failing(&pattern(3 * 1024 * 1024, 1), 64 * 1024)).await;
    assert!(result.is_err());
    assert!(
        tree(&root).iter().all(|p| !p.ends_with("params") && !p.contains(".tmp-")),
        "after a failed write: {:?}",
        tree(&root)
    );

    store.write(KEY, chunked(b"kept", 2)).await.unwrap();
    // A body that never ends: the write is cancelled as a handler is when its client leaves.
    let endless = chunked(&[7u8; 64 * 1024], 64 * 1024).chain(futures_util::stream::pending());
    let write = store.write(KEY, endless.boxed());
    assert!(tokio::time::timeout(Duration::from_millis(200), write).await.is_err());
    let mut left = tree(&root);
    for _ in 0..50 {
        if left.iter().all(|p| !p.contains(".tmp-")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = tree(&root);
    }
    assert_eq!(left, ["arc", "arc/commands", "arc/commands/cmd_01", "arc/commands/cmd_01/params"]);
    assert_eq!(collect(store.read(KEY).await.unwrap()).await, b"kept");
}

#[tokio::test]
async fn keys_cannot_escape_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    for key in ["../escape", "/tmp/escape", "a/../../escape", "..\\escape"] {
        let result = store.write(key, chunked(b"x", 1)).await;
        assert!(matches!(result, Err(PayloadError::InvalidKey(_))), "{key}: {result:?}");
    }
    assert_eq!(tree(dir.path()), Vec::<String>::new(), "nothing written anywhere");
}

#[cfg(unix)]
#[tokio::test]
async fn files_and_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    store.write(KEY, chunked(b"secret", 2)).await.unwrap();
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(store.root().join(KEY)), 0o600);
    for sub in ["", "arc", "arc/commands", "arc/commands/cmd_01"] {
        assert_eq!(mode(store.root().join(sub)), 0o700, "{sub:?}");
    }
}

#[tokio::test]
async fn deleting_removes_emptied_directories() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    store.write("arc/commands/cmd_01/params", chunked(b"p", 1)).await.unwrap();
    store.write("arc/commands/cmd_01/response", chunked(b"r", 1)).await.unwrap();
    store.write("arc/commands/cmd_02/params", chunked(b"p", 1)).await.unwrap();

    store.delete("arc/commands/cmd_01/params").await.unwrap();
    store.delete("arc/commands/cmd_01/response").await.unwrap();
    assert_eq!(
        tree(store.root()),
        ["arc", "arc/commands", "arc/commands/cmd_02", "arc/commands/cmd_02/params"]
    );
    store.delete("arc/commands/cmd_02/params").await.unwrap();
    assert_eq!(tree(store.root()), Vec::<String>::new());
    assert!(store.root().is_dir(), "the root stays");

    // Writing again after the directories were pruned recreates them.
    store.write("arc/commands/cmd_02/params", chunked(b"again", 2)).await.unwrap();
    assert_eq!(store.size("arc/commands/cmd_02/params").await.unwrap(), Some(5));
}

#[tokio::test]
async fn ping_creates_the_root_and_fails_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    store.ping().await.unwrap();
    assert!(store.root().is_dir());
    assert_eq!(tree(store.root()), Vec::<String>::new(), "ping leaves nothing behind");

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let blocked = FsPayloadStore::new(file.join("sub"), "http://x".into(), UrlSigner::new([0; 32]));
    let err = blocked.ping().await.unwrap_err();
    assert!(matches!(&err, PayloadError::Unavailable(m) if m.contains("a-file")), "{err}");
}
