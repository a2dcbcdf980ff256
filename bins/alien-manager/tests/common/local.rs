//! Peer-test helpers of the local platform: the hello-app image, an isolated podman, stacks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::{Endpoint, call};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(name).is_file())
}

/// `cargo xtask image hello-app` (under the lock the other image tests take): a copy of the OCI
/// layout, removed when the returned directory drops.
pub fn hello_app_layout() -> (tempfile::TempDir, PathBuf) {
    let root = workspace_root();
    let lock = xtask_locked("hello-app.lock", &["image", "hello-app"]);
    let layout = root.join("target/hello-app/oci");
    let copy =
        tempfile::Builder::new().prefix("hello-oci-").tempdir_in(root.join("target")).unwrap();
    let status = Command::new("cp").arg("-r").arg(&layout).arg(copy.path()).status().unwrap();
    assert!(status.success());
    drop(lock);
    let layout = copy.path().join("oci");
    (copy, layout)
}

/// `cargo xtask ARGS` under `target/static.lock` (the static release builds of `xtask dist` and
/// `xtask image manager` share one target directory); fails the test when it fails. Fresh
/// outputs (`cargo xtask test` builds them first) make this a quick no-op build.
pub fn xtask_static(args: &[&str]) {
    drop(xtask_locked("static.lock", args));
}

/// `cargo xtask ARGS` holding `target/{lock}`; returns the held lock.
fn xtask_locked(lock: &str, args: &[&str]) -> std::fs::File {
    let root = workspace_root();
    std::fs::create_dir_all(root.join("target")).unwrap();
    let lock = std::fs::File::create(root.join("target").join(lock)).unwrap();
    lock.lock().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .arg("xtask")
        .args(args)
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo xtask {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    lock
}

/// Podman configuration of this test (testing.md settings), as environment variables.
pub fn podman_env(dir: &Path) -> Vec<(String, String)> {
    assert!(
        on_path("podman"),
        "podman is not installed (apt-get install -y podman runc slirp4netns)"
    );
    alien_local::test_support::isolated_podman(dir)
}

pub fn stack(image: &str, message: &str) -> Value {
    stack_with(image, message, false)
}

/// With `unhealthy`, the containers answer 500 on `/health`.
pub fn stack_with(image: &str, message: &str, unhealthy: bool) -> Value {
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

pub async fn wait_status(
    server: &impl Endpoint,
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
pub async fn wait_failed(server: &impl Endpoint, admin: &str, dep: &str, want: &str) -> Value {
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

/// Pushes the hello-app layout to the manager's registry with skopeo as `hello/app:{tag}`;
/// returns the image reference.
pub fn push_hello_app(server: &impl Endpoint, admin: &str, layout: &Path, tag: &str) -> String {
    assert!(on_path("skopeo"), "skopeo is not installed (apt-get install -y skopeo)");
    let registry = format!("127.0.0.1:{}", server.endpoint_port());
    let push = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("admin:{admin}"))
        .arg(format!("oci:{}:hello-app:latest", layout.display()))
        .arg(format!("docker://{registry}/hello/app:{tag}"))
        .output()
        .unwrap();
    assert!(push.status.success(), "skopeo: {}", String::from_utf8_lossy(&push.stderr));
    format!("{registry}/hello/app:{tag}")
}

/// Names of the containers (running or not) labelled with the deployment, by the podman of `env`.
pub fn containers_of(env: &[(String, String)], dep: &str) -> Vec<String> {
    podman_lines(env, &["ps", "-a", "--format", "{{.Names}}"], dep)
}

/// Waits until `GET {url}` answers 200 with `message`.
pub async fn wait_message(url: &str, message: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = reqwest::get(url).await {
            let page: Value = r.json().await.unwrap_or(Value::Null);
            if page["message"] == message {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} does not answer {message:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The release label of each container of the deployment, sorted.
pub fn releases_of(env: &[(String, String)], dep: &str) -> Vec<String> {
    podman_lines(env, &["ps", "-a", "--format", "{{ index .Labels \"alien.release\" }}"], dep)
}

/// Names of the volumes labelled with the deployment.
pub fn volumes_of(env: &[(String, String)], dep: &str) -> Vec<String> {
    podman_lines(env, &["volume", "ls", "--format", "{{.Name}}"], dep)
}

fn podman_lines(env: &[(String, String)], args: &[&str], dep: &str) -> Vec<String> {
    let out = Command::new("podman")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(args)
        .arg("--filter")
        .arg(format!("label=alien.deployment={dep}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// A scratch directory of this test under `target/peers` (podman's storage and the state dirs).
pub fn peer_dir(prefix: &str) -> tempfile::TempDir {
    let base = workspace_root().join("target/peers");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new().prefix(prefix).tempdir_in(&base).unwrap()
}

/// Asks for the deployment's deletion with cleanup.
pub async fn delete_with_cleanup(server: &impl Endpoint, admin: &str, dep: &str) {
    let path = format!("/v1/deployments/{dep}/delete");
    let body = json!({"action": "cleanup"});
    let (status, r) = call(server, admin, Method::POST, &path, Some(body)).await;
    assert!(status == 200 || status == 202, "{status} {r}");
}

/// Waits until the deployment is gone (404).
pub async fn wait_gone(server: &impl Endpoint, admin: &str, dep: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, _) =
            call(server, admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        if status == 404 {
            return;
        }
        assert!(Instant::now() < deadline, "{dep} not deleted within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates a release whose local stack is `stack`; returns it.
pub async fn release(server: &impl Endpoint, admin: &str, stack: Value) -> Value {
    let body = json!({"stack": {"local": stack}});
    let (status, created) = call(server, admin, Method::POST, "/v1/releases", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// Creates a deployment group; returns its id.
pub async fn group(server: &impl Endpoint, admin: &str, name: &str) -> String {
    let body = json!({"name": name});
    let (status, group) =
        call(server, admin, Method::POST, "/v1/deployment-groups", Some(body)).await;
    assert_eq!(status, 201, "{group}");
    group["id"].as_str().unwrap().to_owned()
}

/// Waits until the deployment runs `release` (`{"id": ...}` as the API returned it); fails on a
/// failed status or the deadline. Returns the deployment.
pub async fn wait_running_on(
    server: &impl Endpoint,
    admin: &str,
    dep: &str,
    release: &Value,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, d) =
            call(server, admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        if d["status"] == "running" && d["currentReleaseId"] == release["id"] {
            return d;
        }
        assert!(!d["status"].as_str().unwrap_or("").ends_with("failed"), "{d}");
        assert!(Instant::now() < deadline, "not running {} within {within:?}: {d}", release["id"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
