//! `alien-manager backup` and `restore` against the real binary: a backup taken while writes
//! are in flight holds everything acknowledged before it started, restores into a fresh state
//! directory, and the manager starts on it; every refusal changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Manager, Server, TEST_KEY, bin, printed_admin_token, running, serve};
use reqwest::Method;
use serde_json::{Value, json};

/// Something the manager acknowledged, and when.
#[derive(Clone, Debug)]
enum Acked {
    Group(String),
    GroupToken(String),
    Release(String),
    Deployment(String),
}

/// `alien-manager ARGS` on `state` with `key`: exit code, stdout, stderr.
fn maintenance(args: &[&str], state: &Path, key: Option<&str>) -> (i32, String, String) {
    let mut cmd = bin();
    cmd.args(args).env("ALIEN_DATABASE__STATE_DIR", state);
    if let Some(key) = key {
        cmd.env("ALIEN_DATABASE__ENCRYPTION_KEY", key);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir` (recursively) with its contents: what "changes nothing" compares.
fn snapshot_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    if !dir.exists() {
        return files;
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

async fn create(client: &reqwest::Client, base: &str, admin: &str, n: usize) -> Vec<Acked> {
    let post = |path: String, body: Option<Value>| {
        let mut request = client.post(format!("{base}{path}")).bearer_auth(admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            response.json::<Value>().await.ok()
        }
    };
    let mut acked = Vec::new();
    let Some(group) =
        post("/v1/deployment-groups".into(), Some(json!({"name": format!("g{n}")}))).await
    else {
        return acked;
    };
    let group_id = group["id"].as_str().unwrap().to_owned();
    acked.push(Acked::Group(group_id.clone()));
    if let Some(token) = post(format!("/v1/deployment-groups/{group_id}/tokens"), None).await {
        acked.push(Acked::GroupToken(token["token"].as_str().unwrap().to_owned()));
    }
    let stack = json!({"stack": {"local": common::fixture("valid-web.json")}});
    if let Some(release) = post("/v1/releases".into(), Some(stack)).await {
        acked.push(Acked::Release(release["id"].as_str().unwrap().to_owned()));
    }
    let body = json!({"name": format!("d{n}"), "platform": "local", "deploymentGroupId": group_id});
    if let Some(created) = post("/v1/deployments".into(), Some(body)).await {
        acked.push(Acked::Deployment(created["deployment"]["id"].as_str().unwrap().to_owned()));
    }
    acked
}

/// Whether the manager at `base` has `item`.
async fn has(base: &str, admin: &str, item: &Acked) -> bool {
    let client = reqwest::Client::new();
    let (path, token) = match item {
        Acked::Group(id) => (format!("/v1/deployment-groups/{id}"), admin),
        Acked::GroupToken(token) => ("/v1/whoami".to_owned(), token.as_str()),
        Acked::Release(id) => (format!("/v1/releases/{id}"), admin),
        Acked::Deployment(id) => (format!("/v1/deployments/{id}"), admin),
    };
    let response = client.get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
    response.status().is_success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_write_load_restores_everything_acknowledged_before_it() {
    let mut manager = Manager::start().await;
    // A command in the commands KV, for a running deployment.
    let (dep, group_token, _) = running(&mut manager).await;
    let (status, command) = manager
        .call(
            Method::POST,
            "/v1/commands",
            Some(&group_token),
            Some(json!({"deploymentId": dep, "command": "c", "params": {"mode": "inline", "inlineBase64": ""}})),
        )
        .await;
    assert_eq!(status, 201, "{command}");
    let command_id = command["commandId"].as_str().unwrap().to_owned();

    // Writers creating groups, tokens, releases and deployments until told to stop.
    let log: Arc<Mutex<Vec<(Instant, Acked)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (log, stop, base, admin) =
            (log.clone(), stop.clone(), manager.base.clone(), manager.admin.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = w * 100_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for item in create(&client, &base, &admin, n).await {
                    log.lock().unwrap().push((Instant::now(), item));
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("backup.tar");
    let archive_arg = archive.to_str().unwrap().to_owned();
    let state = manager.state.clone();
    let started = Instant::now();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        maintenance(&["backup", "--output", &archive_arg], &state, Some(TEST_KEY))
    })
    .await
    .unwrap();
    let finished = Instant::now();
    assert_eq!(code, 0, "backup: {out}\n{err}");
    assert!(out.contains("the encryption key is not in the backup"), "{out}");
    // The writers go on a while after the backup finished.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    let before: Vec<&Acked> = log.iter().filter(|(t, _)| *t < started).map(|(_, a)| a).collect();
    let after: Vec<&Acked> = log.iter().filter(|(t, _)| *t > finished).map(|(_, a)| a).collect();
    assert!(before.len() > 20, "the load acknowledged {} items before the backup", before.len());
    assert!(!after.is_empty(), "the load went on after the backup");

    // A refusal: the backup file exists.
    let (code, _, err) = maintenance(
        &["backup", "--output", archive.to_str().unwrap()],
        &manager.state,
        Some(TEST_KEY),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");

    // Restoring while a manager runs on the target is refused, and changes nothing.
    let before_tree = snapshot_tree(&manager.state.join("commands_kv"));
    let (code, _, err) = maintenance(
        &["restore", "--input", archive.to_str().unwrap(), "--force"],
        &manager.state,
        Some(TEST_KEY),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a manager is running"), "{err}");
    assert_eq!(snapshot_tree(&manager.state.join("commands_kv")), before_tree);
    let (admin, base_before) = (manager.admin.clone(), manager.base.clone());
    let (status, _) = manager.take_server().terminate();
    assert!(status.success());
    drop(base_before);

    // A fresh state directory: without a key, and with another key, nothing is created.
    let fresh = dir.path().join("fresh-state");
    let (code, _, err) =
        maintenance(&["restore", "--input", archive.to_str().unwrap()], &fresh, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no encryption key"), "{err}");
    assert!(!fresh.exists());
    let other_key = "7".repeat(64);
    let (code, _, err) =
        maintenance(&["restore", "--input", archive.to_str().unwrap()], &fresh, Some(&other_key));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("do not open"), "{err}");
    assert!(!fresh.exists());

    // With the key it was made with.
    let (code, out, err) =
        maintenance(&["restore", "--input", archive.to_str().unwrap()], &fresh, Some(TEST_KEY));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("restored"), "{out}");

    let server = Server::start(serve(&fresh, &[("ALIEN_DATABASE__ENCRYPTION_KEY", TEST_KEY)]));
    assert_eq!(printed_admin_token(&server), None, "the restored admin token is kept");
    let base = server.url();
    for item in &before {
        assert!(has(&base, &admin, item).await, "{item:?} was acknowledged before the backup");
    }
    let mut missing_after = 0;
    for item in &after {
        if !has(&base, &admin, item).await {
            missing_after += 1;
        }
    }
    assert!(missing_after > 0, "what was created after the backup is not in it");
    let (status, body) =
        common::call(&server, &admin, Method::GET, &format!("/v1/commands/{command_id}"), None)
            .await;
    assert_eq!(status, 200, "the command in the commands KV: {body}");
    let (status, _) = server.terminate();
    assert!(status.success());

    // A state directory holding data: refused without --force, and with the wrong key even with
    // it; both change nothing.
    let tree = snapshot_tree(&fresh);
    let (code, _, err) =
        maintenance(&["restore", "--input", archive.to_str().unwrap()], &fresh, Some(TEST_KEY));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = maintenance(
        &["restore", "--input", archive.to_str().unwrap(), "--force"],
        &fresh,
        Some(&other_key),
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(snapshot_tree(&fresh), tree, "a refused restore changed the state directory");

    // With --force the old files are kept beside the new ones.
    let (code, out, err) = maintenance(
        &["restore", "--input", archive.to_str().unwrap(), "--force"],
        &fresh,
        Some(TEST_KEY),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(".pre-restore-"), "{out}");
    assert!(
        std::fs::read_dir(&fresh).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".pre-restore-")),
    );
}

#[test]
fn what_is_not_a_backup_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar file at all, just words").unwrap();
    let (code, _, err) =
        maintenance(&["restore", "--input", junk.to_str().unwrap()], &state, Some(TEST_KEY));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("junk.tar"), "{err}");
    assert!(!state.exists());
    let missing = dir.path().join("missing.tar");
    let (code, _, err) =
        maintenance(&["restore", "--input", missing.to_str().unwrap()], &state, Some(TEST_KEY));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot open"), "{err}");
    // Nothing to back up.
    let (code, _, err) = maintenance(
        &["backup", "--output", dir.path().join("b.tar").to_str().unwrap()],
        &state,
        Some(TEST_KEY),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing to back up"), "{err}");
    assert!(!dir.path().join("b.tar").exists());
}
