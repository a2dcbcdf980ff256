//! End to end on the local platform, against the real binary and podman (feature `peer-tests`):
//! the hello-app image is pushed to the manager's own registry with skopeo, a release and a
//! deployment are created over the API, and the manager's deployment loop runs it with podman
//! until its URL answers; a command reaches the running container's receiver; a new release
//! rolls out while a client polls the URL; delete with cleanup removes every container.

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, TEST_KEY, b64, call, printed_admin_token, serve_deploying};
use reqwest::Method;
use serde_json::{Value, json};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(name).is_file())
}

/// `cargo xtask image hello-app` (under the lock the other image tests take): the OCI layout.
fn hello_app_layout() -> PathBuf {
    let root = workspace_root();
    std::fs::create_dir_all(root.join("target")).unwrap();
    let lock = std::fs::File::create(root.join("target/hello-app.lock")).unwrap();
    lock.lock().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["xtask", "image", "hello-app"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let layout = root.join("target/hello-app/oci");
    let copy =
        tempfile::Builder::new().prefix("hello-oci-").tempdir_in(root.join("target")).unwrap();
    let status = Command::new("cp").arg("-r").arg(&layout).arg(copy.path()).status().unwrap();
    assert!(status.success());
    drop(lock);
    copy.keep().join("oci")
}

/// Podman configuration of this test (testing.md settings), as environment variables.
fn podman_env(dir: &Path) -> Vec<(String, String)> {
    assert!(
        on_path("podman"),
        "podman is not installed (apt-get install -y podman runc slirp4netns)"
    );
    alien_local::test_support::isolated_podman(dir)
}

fn stack(image: &str, message: &str) -> Value {
    stack_with(image, message, false)
}

/// With `unhealthy`, the containers answer 500 on `/health`.
fn stack_with(image: &str, message: &str, unhealthy: bool) -> Value {
    let mut environment = json!({"HELLO_MESSAGE": message});
    if unhealthy {
        environment["HELLO_FAIL_HEALTH"] = json!("1");
    }
    json!({"id": "hello", "resources": {"web": {"config": {
        "id": "web", "type": "container",
        "code": {"type": "image", "image": image},
        "cpu": {"min": "0.25", "desired": "0.5"},
        "memory": {"min": "64Mi", "desired": "128Mi"},
        "ports": [{"port": 8080, "expose": "http"}],
        "replicas": 2,
        "healthCheck": {"path": "/health", "port": 8080, "timeoutSeconds": 1, "failureThreshold": 3},
        "environment": environment,
        "permissions": "execution"
    }, "dependencies": [], "lifecycle": "live"}}})
}

async fn wait_status(
    server: &Server,
    admin: &str,
    dep: &str,
    want: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, d) =
            call(server, admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        if d["status"] == want {
            return d;
        }
        assert!(!d["status"].as_str().unwrap_or("").ends_with("failed"), "deployment failed: {d}");
        assert!(Instant::now() < deadline, "not {want} within {within:?}: {d}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the deployment reaches the failed status `want` (after a retry it passes through
/// `updating` first).
async fn wait_failed(server: &Server, admin: &str, dep: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    tokio::time::sleep(Duration::from_millis(300)).await;
    loop {
        let (_, d) =
            call(server, admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        if d["status"] == want {
            return d;
        }
        assert!(Instant::now() < deadline, "not {want}: {d}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_mode_on_podman_runs_commands_updates_and_deletes() {
    assert!(on_path("skopeo"), "skopeo is not installed (apt-get install -y skopeo)");
    let base = workspace_root().join("target/peers");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new().prefix("e2e-local-").tempdir_in(&base).unwrap();
    let layout = hello_app_layout();
    let mut env: Vec<(String, String)> = podman_env(dir.path());
    env.push(("ALIEN_DATABASE__ENCRYPTION_KEY".into(), TEST_KEY.into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start(serve_deploying(&dir.path().join("state"), &env_refs));
    let admin = printed_admin_token(&server).unwrap();
    let registry = format!("127.0.0.1:{}", server.port());

    // The image goes to the manager's own registry with a real OCI client.
    let push = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("admin:{admin}"))
        .arg(format!("oci:{}:hello-app:latest", layout.display()))
        .arg(format!("docker://{registry}/hello/app:v1"))
        .output()
        .unwrap();
    assert!(push.status.success(), "skopeo: {}", String::from_utf8_lossy(&push.stderr));
    let image = format!("{registry}/hello/app:v1");

    let (status, release) = call(
        &server,
        &admin,
        Method::POST,
        "/v1/releases",
        Some(json!({"stack": {"local": stack(&image, "first")}})),
    )
    .await;
    assert_eq!(status, 201, "{release}");
    let (_, group) =
        call(&server, &admin, Method::POST, "/v1/deployment-groups", Some(json!({"name": "e2e"})))
            .await;
    let started = Instant::now();
    let body = json!({"name": "hello", "platform": "local", "deploymentGroupId": group["id"]});
    let (status, created) =
        call(&server, &admin, Method::POST, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    let running = wait_status(&server, &admin, &dep, "running", Duration::from_secs(60)).await;
    eprintln!("running in {:.1}s", started.elapsed().as_secs_f64());
    let url =
        running["stackState"]["resources"]["web"]["outputs"]["url"].as_str().unwrap().to_owned();
    let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(page["message"], "first", "{page}");
    assert_eq!(page["deploymentId"], dep.as_str());

    // A command reaches the container's receiver (which reached the manager at 10.0.2.2).
    for size in [5usize, 1 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let params = if size > 100_000 {
            json!({"mode": "storage", "size": size})
        } else {
            json!({"mode": "inline", "inlineBase64": b64(&payload)})
        };
        let body = json!({"deploymentId": dep, "command": "echo", "params": params});
        let (status, created) =
            call(&server, &admin, Method::POST, "/v1/commands", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        let id = created["commandId"].as_str().unwrap().to_owned();
        if size > 100_000 {
            let put = created["storageUpload"]["putRequest"]["backend"]["url"].as_str().unwrap();
            let r = reqwest::Client::new().put(put).body(payload.clone()).send().await.unwrap();
            assert!(r.status().is_success());
            let (status, r) = call(
                &server,
                &admin,
                Method::POST,
                &format!("/v1/commands/{id}/upload-complete"),
                Some(json!({"size": size})),
            )
            .await;
            assert_eq!(status, 200, "{r}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let done = loop {
            let (_, s) =
                call(&server, &admin, Method::GET, &format!("/v1/commands/{id}"), None).await;
            if s["state"] == "SUCCEEDED" || s["state"] == "FAILED" {
                break s;
            }
            assert!(Instant::now() < deadline, "command not answered: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(done["state"], "SUCCEEDED", "{done}");
        let got = match done["response"]["response"]["mode"].as_str().unwrap() {
            "inline" => base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                done["response"]["response"]["inlineBase64"].as_str().unwrap(),
            )
            .unwrap(),
            _ => reqwest::get(
                done["response"]["response"]["storageGetRequest"]["backend"]["url"]
                    .as_str()
                    .unwrap(),
            )
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        };
        assert_eq!(got, payload, "echo of {size} bytes");
    }

    // A new release rolls out while a client polls the URL every 50 ms: no failed request.
    let poller = {
        let url = url.clone();
        tokio::spawn(async move {
            let client =
                reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
            let (mut ok, mut failed, mut seen_second) = (0u32, 0u32, false);
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok += 1;
                        let page: Value = r.json().await.unwrap_or(Value::Null);
                        if page["message"] == "second" {
                            seen_second = true;
                        }
                    }
                    _ => failed += 1,
                }
                if seen_second && ok > 40 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, failed, seen_second)
        })
    };
    let (status, second) = call(
        &server,
        &admin,
        Method::POST,
        "/v1/releases",
        Some(json!({"stack": {"local": stack(&image, "second")}})),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, d) =
            call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        if d["status"] == "running" && d["currentReleaseId"] == second["id"] {
            break;
        }
        assert!(!d["status"].as_str().unwrap_or("").ends_with("failed"), "{d}");
        assert!(Instant::now() < deadline, "update did not finish: {d}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (ok, failed, seen_second) = poller.await.unwrap();
    eprintln!("rolling update: {ok} requests answered, {failed} failed");
    assert!(seen_second, "the new release answers");
    assert_eq!(failed, 0, "no failed request during the rollout ({ok} answered)");

    // A release whose containers fail their health check: update-failed naming the container,
    // the previous release still answering; retry fails the same way; a fixed release recovers.
    let broken = json!({"stack": {"local": stack_with(&image, "broken", true)}});
    let (status, _) = call(&server, &admin, Method::POST, "/v1/releases", Some(broken)).await;
    assert_eq!(status, 201);
    let failed = wait_failed(&server, &admin, &dep, "update-failed").await;
    assert_eq!(failed["error"]["resourceId"], "web", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap().contains("web"), "{failed}");
    let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(page["message"], "second", "the previous release keeps serving");
    let (status, r) =
        call(&server, &admin, Method::POST, &format!("/v1/deployments/{dep}/retry"), None).await;
    assert_eq!(status, 200, "{r}");
    wait_failed(&server, &admin, &dep, "update-failed").await;
    let fixed = json!({"stack": {"local": stack(&image, "third")}});
    let (_, third) = call(&server, &admin, Method::POST, "/v1/releases", Some(fixed)).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, d) =
            call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        if d["status"] == "running" && d["currentReleaseId"] == third["id"] {
            assert!(d.get("error").is_none_or(Value::is_null), "error cleared: {d}");
            break;
        }
        assert!(Instant::now() < deadline, "the fixed release did not recover it: {d}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(page["message"], "third");

    // Delete with cleanup: every container of the deployment goes.
    let (status, r) = call(
        &server,
        &admin,
        Method::POST,
        &format!("/v1/deployments/{dep}/delete"),
        Some(json!({"action": "cleanup"})),
    )
    .await;
    assert!(status == 200 || status == 202, "{status} {r}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) =
            call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "not deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let left = Command::new("podman")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label=alien.deployment={dep}"))
        .output()
        .unwrap();
    assert!(left.status.success());
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "containers left behind");
}
