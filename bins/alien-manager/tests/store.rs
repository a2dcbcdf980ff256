//! The real binary with its SQLite store: first-run admin token, seeding, sealing at rest,
//! wrong keys, key rotation, admin token reset, and no acknowledged write lost to SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::{Server, bin, call, printed_admin_token, serve};
use serde_json::{Value, json};

/// Bytes of the database, its WAL and shared-memory files.
fn db_bytes(state: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["alien-manager.db", "alien-manager.db-wal", "alien-manager.db-shm"] {
        if let Ok(bytes) = std::fs::read(state.join(name)) {
            all.extend(bytes);
        }
    }
    all
}

/// The persistent files (the database and its WAL; `-shm` is a rebuildable in-memory index).
fn data_bytes(state: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["alien-manager.db", "alien-manager.db-wal"] {
        if let Ok(bytes) = std::fs::read(state.join(name)) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn first_run_prints_the_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve(dir.path(), &[]));
    let token = printed_admin_token(&server).expect("admin token printed on first run");
    assert!(token.starts_with("ax_admin_") && token.len() == 49, "{token}");
    let lines = server.stdout();
    assert!(
        lines.iter().any(|l| l.starts_with("export ALIEN_MANAGER_URL=http://localhost:")),
        "{lines:?}"
    );
    let (status, me) = call(&server, &token, reqwest::Method::GET, "/v1/whoami", None).await;
    assert_eq!(status, 200);
    assert_eq!(me["tokenType"], "admin");
    assert!(server.terminate().0.success());
    assert!(!contains(&db_bytes(dir.path()), &token), "only the hash is stored");

    let server = Server::start(serve(dir.path(), &[]));
    assert_eq!(printed_admin_token(&server), None, "later starts never print it");
    assert_eq!(call(&server, &token, reqwest::Method::GET, "/v1/whoami", None).await.0, 200);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(dir.path().join("encryption.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn admin_token_can_be_seeded_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let seed = "ax_admin_0123456789abcdef0123456789abcdef01234567";
    let server = Server::start(serve(dir.path(), &[("ALIEN_ADMIN_TOKEN", seed)]));
    assert_eq!(printed_admin_token(&server), None, "a seeded token is not printed");
    assert_eq!(call(&server, seed, reqwest::Method::GET, "/v1/whoami", None).await.0, 200);
    assert!(server.terminate().0.success());

    let out = bin()
        .args(["admin-token", "reset", "-c"])
        .arg(write_config(dir.path(), ""))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let new =
        stdout.lines().find_map(|l| l.strip_prefix("export ALIEN_API_KEY=")).unwrap().to_owned();
    let server = Server::start(serve(dir.path(), &[]));
    assert_eq!(
        call(&server, seed, reqwest::Method::GET, "/v1/whoami", None).await.0,
        401,
        "old admin revoked"
    );
    assert_eq!(call(&server, &new, reqwest::Method::GET, "/v1/whoami", None).await.0, 200);

    let bad = tempfile::tempdir().unwrap();
    let out = serve(bad.path(), &[("ALIEN_ADMIN_TOKEN", "ax_admin_short")]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ALIEN_ADMIN_TOKEN"));
}

/// A config file pointing at `state` (for subcommands that take `-c`).
fn write_config(state: &Path, extra: &str) -> std::path::PathBuf {
    let file = state.join("test-config.toml");
    std::fs::write(
        &file,
        format!("[database]\nstate-dir = {:?}\n{extra}", state.display().to_string()),
    )
    .unwrap();
    file
}

#[tokio::test]
async fn secrets_and_tokens_are_sealed_and_a_wrong_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let key_a = "1a".repeat(32);
    let key_b = "2b".repeat(32);
    let secret = "correct-horse-battery-staple-7781";
    let server = Server::start(serve(dir.path(), &[("ALIEN_DATABASE__ENCRYPTION_KEY", &key_a)]));
    let admin = printed_admin_token(&server).unwrap();
    let (status, _) = call(
        &server,
        &admin,
        reqwest::Method::POST,
        "/v1/deployment-groups",
        Some(json!({"name": "g"})),
    )
    .await;
    assert_eq!(status, 201);
    let body = json!({"name": "d", "platform": "local",
        "environmentVariables": [{"name": "DB_PASSWORD", "value": secret, "type": "secret"}]});
    let (status, created) =
        call(&server, &admin, reqwest::Method::POST, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let deploy_token = created["token"].as_str().unwrap().to_owned();
    // While running (WAL not yet checkpointed) and after a clean stop.
    let bytes = db_bytes(dir.path());
    assert!(!bytes.is_empty());
    assert!(
        !contains(&bytes, secret) && !contains(&bytes, &deploy_token) && !contains(&bytes, &admin)
    );
    assert!(server.terminate().0.success());
    let bytes = db_bytes(dir.path());
    assert!(!contains(&bytes, secret) && !contains(&bytes, &deploy_token));

    let before = data_bytes(dir.path());
    let out = serve(dir.path(), &[("ALIEN_DATABASE__ENCRYPTION_KEY", &key_b)]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("encryption key"), "{stderr}");
    assert!(!stderr.contains(&key_a) && !stderr.contains(&key_b));
    assert!(data_bytes(dir.path()) == before, "a refused start writes nothing");

    // Rotate from A to B; then B opens and A is refused.
    let config = write_config(dir.path(), "");
    let out = bin()
        .args(["rotate-key", "--new-key", &key_b, "-c"])
        .arg(&config)
        .env("ALIEN_DATABASE__ENCRYPTION_KEY", &key_a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = serve(dir.path(), &[("ALIEN_DATABASE__ENCRYPTION_KEY", &key_a)]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let server = Server::start(serve(dir.path(), &[("ALIEN_DATABASE__ENCRYPTION_KEY", &key_b)]));
    assert_eq!(call(&server, &deploy_token, reqwest::Method::GET, "/v1/whoami", None).await.0, 200);
}

#[tokio::test]
async fn rotating_a_generated_key_replaces_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve(dir.path(), &[]));
    let admin = printed_admin_token(&server).unwrap();
    assert!(server.terminate().0.success());
    let old = std::fs::read_to_string(dir.path().join("encryption.key")).unwrap();
    let new = "3c".repeat(32);
    let out = bin()
        .args(["rotate-key", "--new-key", &new, "-c"])
        .arg(write_config(dir.path(), ""))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("encryption.key")).unwrap().trim(), new);
    assert_ne!(old.trim(), new);
    assert!(!dir.path().join("encryption.key.next").exists());
    let server = Server::start(serve(dir.path(), &[]));
    assert_eq!(call(&server, &admin, reqwest::Method::GET, "/v1/whoami", None).await.0, 200);
    let out = bin()
        .args(["rotate-key", "--new-key", "nothex", "-c"])
        .arg(write_config(dir.path(), ""))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// 500 creates in flight, SIGKILL, restart: every 201-acknowledged deployment is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_burst_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve(dir.path(), &[]));
    let admin = printed_admin_token(&server).unwrap();
    let (status, _) = call(
        &server,
        &admin,
        reqwest::Method::POST,
        "/v1/deployment-groups",
        Some(json!({"name": "g", "maxDeployments": 1000})),
    )
    .await;
    assert_eq!(status, 201);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/deployments", server.url());
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..500 {
        let (client, url, admin, acknowledged) =
            (client.clone(), url.clone(), admin.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"name": format!("d{i}"), "platform": "local"});
            if let Ok(response) = client.post(url).bearer_auth(admin).json(&body).send().await
                && response.status() == 201
                && let Ok(created) = response.json::<Value>().await
            {
                acknowledged
                    .lock()
                    .unwrap()
                    .push(created["deployment"]["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    // Kill once some, but not all, were acknowledged.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 50 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill9();
    for task in tasks {
        let _ = task.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 50, "only {} acknowledged before the kill", acknowledged.len());
    assert!(acknowledged.len() < 500, "every create was answered before the kill: none in flight");
    eprintln!("{} of 500 creates were acknowledged before SIGKILL", acknowledged.len());

    let server = Server::start(serve(dir.path(), &[]));
    let mut found = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/deployments?limit=1000&cursor={c}"),
            None => "/v1/deployments?limit=1000".to_owned(),
        };
        let (status, page) = call(&server, &admin, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            found.insert(item["id"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    for id in &acknowledged {
        assert!(found.contains(id), "acknowledged deployment {id} was lost");
    }
}

/// A pull deployment with a secret variable and a release: what its agent's sync returns (the
/// secret unsealed, the deployment token as the registry password) proves the data opens.
async fn pull_deployment_with_a_secret(
    server: &Server,
    admin: &str,
    secret: &str,
) -> (String, String) {
    let post = reqwest::Method::POST;
    let release = json!({"stack": {"local": common::fixture("valid-web.json")}});
    assert_eq!(call(server, admin, post.clone(), "/v1/releases", Some(release)).await.0, 201);
    let (status, group) =
        call(server, admin, post.clone(), "/v1/deployment-groups", Some(json!({"name": "g"})))
            .await;
    assert_eq!(status, 201, "{group}");
    let body = json!({"name": "d", "platform": "local", "deploymentModel": "pull",
        "deploymentGroupId": group["id"],
        "environmentVariables": [{"name": "DB_PASSWORD", "value": secret, "type": "secret"}]});
    let (status, created) = call(server, admin, post, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["deployment"]["id"].as_str().unwrap().to_owned();
    (id, created["token"].as_str().unwrap().to_owned())
}

/// The secret and the deployment token as a sync hands them out (unsealed with the current key).
async fn unsealed(server: &Server, (dep, token): &(String, String)) -> (String, String) {
    let sync = json!({"deploymentId": dep});
    let (status, synced) = call(server, token, reqwest::Method::POST, "/v1/sync", Some(sync)).await;
    assert_eq!(status, 200, "{synced}");
    let config = &synced["target"]["config"];
    let secret = config["environmentVariables"][0]["value"].as_str().unwrap().to_owned();
    (secret, config["registry"]["password"].as_str().unwrap().to_owned())
}

/// A crash during `rotate-key` of a generated key file leaves `encryption.key.next` behind. Before
/// the re-seal committed, the old key still opens the data and the next file is dropped on start;
/// after it committed (before the rename), the next key opens it and becomes the key file.
#[tokio::test]
async fn an_interrupted_key_rotation_is_dropped_or_finished_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, next) =
        (dir.path().join("encryption.key"), dir.path().join("encryption.key.next"));
    let secret = "rotation-secret-4412";
    let server = Server::start(serve(dir.path(), &[]));
    let admin = printed_admin_token(&server).unwrap();
    let pull = pull_deployment_with_a_secret(&server, &admin, secret).await;
    let expected = (secret.to_owned(), pull.1.clone());
    assert_eq!(unsealed(&server, &pull).await, expected);
    assert!(server.terminate().0.success());
    let old = std::fs::read_to_string(&key_file).unwrap().trim().to_owned();

    // Killed before the re-seal committed: the next key was written, nothing re-sealed.
    std::fs::write(&next, "4d".repeat(32)).unwrap();
    let server = Server::start(serve(dir.path(), &[]));
    assert_eq!(unsealed(&server, &pull).await, expected);
    assert!(!next.exists(), "the next key of a rotation that did not commit is dropped");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), old);
    assert!(server.terminate().0.success());

    // Killed after the commit, before the rename: the data is sealed with the next key while the
    // key file still holds the old one.
    let new = "5e".repeat(32);
    let out = bin()
        .args(["rotate-key", "--new-key", &new, "-c"])
        .arg(write_config(dir.path(), ""))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&key_file, &next).unwrap();
    std::fs::write(&key_file, &old).unwrap();
    let server = Server::start(serve(dir.path(), &[]));
    assert_eq!(unsealed(&server, &pull).await, expected);
    assert!(!next.exists(), "the rotation was finished");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), new);
    assert!(server.terminate().0.success());
    // And it stays finished: the new key file opens the data on the next start.
    let server = Server::start(serve(dir.path(), &[]));
    assert_eq!(unsealed(&server, &pull).await, expected);
}

/// The lease owner name a manager took, as its log reports a fresh one (`None`: it took the one
/// in `{state-dir}/replica-id`).
fn fresh_owner(server: &Server) -> Option<String> {
    server.log().iter().find(|l| l.contains("state directory's replica id")).map(|line| {
        let owner = line.split("owner=").nth(1).unwrap_or_else(|| panic!("no owner: {line}"));
        owner.split_whitespace().next().unwrap().trim_matches('"').to_owned()
    })
}

/// A second process on the same state directory (an overlapping restart) takes a fresh lease
/// owner of its own instead of sharing the first one's; once the first one stopped, the next
/// start takes the kept id again.
#[tokio::test]
async fn a_second_process_on_the_same_state_directory_takes_its_own_replica_id() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(common::serve_deploying(dir.path(), &[]));
    let kept = std::fs::read_to_string(dir.path().join("replica-id")).unwrap();
    assert!(kept.starts_with("manager-"), "{kept}");
    assert_eq!(fresh_owner(&first), None, "the first process takes the kept id");
    let second = Server::start(common::serve_deploying(dir.path(), &[]));
    let fresh = fresh_owner(&second).unwrap_or_else(|| {
        panic!("the second process shares the first one's id:\n{:#?}", second.log())
    });
    assert!(fresh.starts_with("manager-") && fresh != kept, "{fresh} vs {kept}");
    assert_eq!(std::fs::read_to_string(dir.path().join("replica-id")).unwrap(), kept);
    assert!(second.terminate().0.success());
    assert!(first.terminate().0.success());
    let again = Server::start(common::serve_deploying(dir.path(), &[]));
    assert_eq!(fresh_owner(&again), None, "the kept id is free again");
    assert_eq!(std::fs::read_to_string(dir.path().join("replica-id")).unwrap(), kept);
}

/// `lastUsedAt` of a token lives in memory between the periodic writes; a clean shutdown writes
/// it, so a use right before SIGTERM is still there after the restart.
#[tokio::test]
async fn last_used_at_is_written_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve(dir.path(), &[]));
    let admin = printed_admin_token(&server).unwrap();
    let post = reqwest::Method::POST;
    let (_, group) =
        call(&server, &admin, post.clone(), "/v1/deployment-groups", Some(json!({"name": "g"})))
            .await;
    let path = format!("/v1/deployment-groups/{}/tokens", group["id"].as_str().unwrap());
    let (status, minted) = call(&server, &admin, post, &path, None).await;
    assert!((200..300).contains(&status), "{minted}");
    let token = minted["token"].as_str().unwrap();
    let used = chrono::Utc::now();
    assert_eq!(call(&server, token, reqwest::Method::GET, "/v1/whoami", None).await.0, 200);
    assert!(server.terminate().0.success());

    let server = Server::start(serve(dir.path(), &[]));
    let (_, tokens) = call(&server, &admin, reqwest::Method::GET, "/v1/tokens", None).await;
    let record = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tokenType"] == "deployment-group")
        .unwrap_or_else(|| panic!("no group token: {tokens}"));
    let last: chrono::DateTime<chrono::Utc> = record["lastUsedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("lastUsedAt lost at shutdown: {record}"))
        .parse()
        .unwrap();
    assert!(last >= used - chrono::Duration::seconds(1), "{last} vs use at {used}");
}

/// Pushes `data` as a blob of `repo` in one request; its digest.
async fn push_blob(server: &Server, admin: &str, repo: &str, data: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
    let response = reqwest::Client::new()
        .post(format!("{}/v2/{repo}/blobs/uploads/?digest={digest}", server.url()))
        .bearer_auth(admin)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    digest
}

/// `alien-manager registry gc` removes the blobs unreferenced for longer than the grace period
/// (an hour) and keeps fresh ones, and says what it did.
#[tokio::test]
async fn registry_gc_removes_old_unreferenced_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve(dir.path(), &[]));
    let admin = printed_admin_token(&server).unwrap();
    let old = push_blob(&server, &admin, "gc/app", b"an old layer nobody references").await;
    let fresh = push_blob(&server, &admin, "gc/app", b"a layer of a push in progress").await;
    assert!(server.terminate().0.success());
    let blob = |digest: &str| {
        dir.path().join("registry/blobs/sha256").join(digest.trim_start_matches("sha256:"))
    };
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(blob(&old))
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    let out =
        bin().args(["registry", "gc", "-c"]).arg(write_config(dir.path(), "")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("removed 1 blobs (30 bytes) and 0 idle uploads; kept 1 blobs"),
        "{stdout}"
    );
    assert!(!blob(&old).exists(), "the old unreferenced blob is gone");
    assert!(blob(&fresh).exists(), "the fresh one stays");
}

/// A database that cannot be opened for writing (here: its state directory bind-mounted
/// read-only, in a user and mount namespace of its own made with util-linux `unshare`) stops
/// `serve` at start, naming the directory and why, with nothing served.
#[tokio::test]
async fn a_read_only_database_stops_serve_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let server = Server::start(serve(&state, &[]));
    assert!(server.terminate().0.success());
    let manager = env!("CARGO_BIN_EXE_alien-manager");
    let script = format!(
        "mount --bind -o ro '{state}' '{state}' && exec '{manager}' serve --host 127.0.0.1 --port 0 --disable-deployment-loop --state-dir '{state}'",
        state = state.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env_remove("ALIEN_DATABASE__ENCRYPTION_KEY")
        .output()
        .unwrap_or_else(|e| panic!("cannot run unshare (util-linux): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("state directory {} is not writable", state.display()))
            && stderr.contains("read-only"),
        "names the directory and why: {stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}
