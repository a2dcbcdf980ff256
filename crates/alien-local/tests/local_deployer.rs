//! `LocalDeployer` against real podman (spec/testing.md settings, an isolated configuration and
//! storage per test), a real CNCF Distribution registry that requires the deployment token, and
//! the hello-app image built by `cargo xtask image hello-app`: first deployment, a rolling update
//! watched by a client that must never see a failed request, an unhealthy release that fails and
//! leaves the old replicas serving, adoption after the state is lost, refresh, and destroy.
//!
//! Compiled with the `peer-tests` feature only; a missing podman, registry or image tool is a
//! failure, never a skip. Containers are removed at the end even when a test fails.

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alien_core::{
    Deployment, DeploymentModel, DeploymentStatus, Id, IdKind, Platform, Release, Stack,
};
use alien_deployer::{ContainerEnv, Credentials, DeployRequest, PlatformDeployer, StepOutcome};
use alien_local::{EngineChoice, LocalDeployer, LocalDeployerOptions};
use serde_json::{Value, json};

/// The deployment token the registry accepts (user `deployment`).
const TOKEN: &str = "alien-test-token";
/// bcrypt of [`TOKEN`] for Distribution's htpasswd (generated once with crypt(3), cost 5).
const TOKEN_BCRYPT: &str = "$2b$05$w3nvtPPl8FQZjEhmJNycw.6yV1udpAMXarBObV3y7R8pAt9bHs0SC";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(name).is_file())
}

/// Builds the hello-app image (under a lock shared by the test processes, since the build
/// replaces the layout) and copies the layout into `into`.
fn hello_app_layout(into: &Path) -> PathBuf {
    let root = workspace_root();
    std::fs::create_dir_all(root.join("target")).unwrap();
    let lock = std::fs::File::create(root.join("target/hello-app.lock")).unwrap();
    lock.lock().unwrap();
    let cargo = std::env::var("CARGO")
        .ok()
        .or(option_env!("CARGO").map(str::to_owned))
        .unwrap_or_else(|| "cargo".to_owned());
    let started = Instant::now();
    let output = Command::new(cargo)
        .args(["xtask", "image", "hello-app"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo xtask image hello-app failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("hello-app image built in {:.1}s", started.elapsed().as_secs_f64());
    let layout = into.join("oci");
    copy_dir(&root.join("target/hello-app/oci"), &layout);
    drop(lock);
    layout
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A registry that wants `deployment:<TOKEN>`, killed on drop.
struct Registry {
    host: String,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    assert!(
        on_path("docker-registry"),
        "CNCF Distribution is not installed (apt-get install -y docker-registry)"
    );
    let port = free_port();
    let storage = dir.join("registry");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::write(dir.join("htpasswd"), format!("deployment:{TOKEN_BCRYPT}\n")).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
         delete:\n    enabled: true\nauth:\n  htpasswd:\n    realm: alien-test\n    path: {}\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: local-deployer-test\n",
        storage.display(),
        dir.join("htpasswd").display()
    );
    std::fs::write(dir.join("registry.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("registry.yml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let registry = Registry { host: format!("127.0.0.1:{port}"), child };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "the registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    registry
}

/// Everything one test needs: podman configuration, a registry with the image, a deployer.
struct Peers {
    _dir: tempfile::TempDir,
    engine_env: Vec<(String, String)>,
    registry: Registry,
}

impl Peers {
    fn start() -> Peers {
        assert!(
            on_path("podman"),
            "podman is not installed (apt-get install -y podman runc slirp4netns)"
        );
        assert!(on_path("skopeo"), "skopeo is not installed (apt-get install -y skopeo)");
        let base = workspace_root().join("target/peers");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::Builder::new().prefix("local-deployer-").tempdir_in(&base).unwrap();
        let engine_env = alien_local::test_support::isolated_podman(dir.path());
        let layout = hello_app_layout(dir.path());
        let registry = start_registry(dir.path());
        let output = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
            .arg(format!("deployment:{TOKEN}"))
            .arg(format!("oci:{}:hello-app:latest", layout.display()))
            .arg(format!("docker://{}/hello:v1", registry.host))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Peers { _dir: dir, engine_env, registry }
    }

    fn image(&self) -> String {
        format!("{}/hello:v1", self.registry.host)
    }

    fn deployer(&self) -> LocalDeployer {
        LocalDeployer::new(
            EngineChoice::Podman,
            LocalDeployerOptions {
                manager_registries: vec![self.registry.host.clone()],
                insecure_registries: vec![self.registry.host.clone()],
                engine_env: self.engine_env.clone(),
                step_wait: Duration::from_millis(200),
                stop_grace: Duration::from_secs(5),
                ..LocalDeployerOptions::default()
            },
        )
        .unwrap()
    }

    /// `podman args...` with the test's configuration; stdout.
    fn podman(&self, args: &[&str]) -> String {
        let output = Command::new("podman")
            .args(args)
            .envs(self.engine_env.iter().cloned())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Names of the deployment's containers, sorted.
    fn containers(&self, deployment: &Deployment) -> Vec<String> {
        let filter = format!("label=alien.deployment={}", deployment.id);
        let out = self.podman(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
        let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
        names.sort();
        names
    }

    fn volumes(&self, deployment: &Deployment) -> Vec<String> {
        let filter = format!("label=alien.deployment={}", deployment.id);
        self.podman(&["volume", "ls", "-q", "--filter", &filter])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Removes the deployment's containers and volumes when the test ends, passed or not.
struct Cleanup<'a> {
    peers: &'a Peers,
    deployment: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let filter = format!("label=alien.deployment={}", self.deployment);
        let run = |args: &[&str]| {
            Command::new("podman")
                .args(args)
                .envs(self.peers.engine_env.iter().cloned())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let ids = run(&["ps", "-a", "-q", "--filter", &filter]);
        for id in ids.split_whitespace() {
            run(&["rm", "-f", "-t", "0", id]);
        }
        for volume in run(&["volume", "ls", "-q", "--filter", &filter]).split_whitespace() {
            run(&["volume", "rm", "-f", volume]);
        }
    }
}

fn deployment() -> Deployment {
    let now = chrono::Utc::now();
    Deployment {
        id: Id::new(IdKind::Deployment),
        name: "local-test".to_owned(),
        platform: Platform::Local,
        status: DeploymentStatus::Provisioning,
        deployment_model: DeploymentModel::Push,
        deployment_group_id: Id::new(IdKind::DeploymentGroup),
        current_release_id: None,
        desired_release_id: None,
        stack_state: None,
        error: None,
        retry_requested: false,
        region: None,
        last_heartbeat_at: None,
        created_at: now,
        updated_at: now,
    }
}

/// A release with one container `web` running hello-app.
fn release(image: &str, container: Value) -> (Release, Stack) {
    let mut config = json!({
        "id": "web",
        "type": "container",
        "code": {"type": "image", "image": image},
        "cpu": {"min": "0.1", "desired": "0.5"},
        "memory": {"min": "32Mi", "desired": "128Mi"},
        "ports": [{"port": 8080, "expose": "http"}],
        "healthCheck": {"path": "/health", "failureThreshold": 3},
        "permissions": "execution"
    });
    for (k, v) in container.as_object().unwrap() {
        config[k] = v.clone();
    }
    let stack: Stack = serde_json::from_value(json!({
        "id": "hello",
        "resources": {"web": {"config": config, "lifecycle": "live", "dependencies": []}}
    }))
    .unwrap();
    let release = Release {
        id: Id::new(IdKind::Release),
        stack: BTreeMap::from([(Platform::Local, stack.clone())]),
        git_metadata: None,
        version: None,
        description: None,
        created_at: chrono::Utc::now(),
    };
    (release, stack)
}

fn env(deployment: &Deployment, vars: &[(&str, &str)]) -> BTreeMap<String, ContainerEnv> {
    let mut pairs = vec![
        ("ALIEN_DEPLOYMENT_ID".to_owned(), deployment.id.to_string()),
        ("ALIEN_DEPLOYMENT_NAME".to_owned(), deployment.name.clone()),
        ("ALIEN_COMMANDS_TOKEN".to_owned(), TOKEN.to_owned()),
    ];
    pairs.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    BTreeMap::from([("web".to_owned(), ContainerEnv(pairs))])
}

/// Applies until `Done` or `Failed`, honouring `Wait`; the outcome and the number of steps.
async fn settle(
    deployer: &LocalDeployer,
    deployment: &Deployment,
    release: &Release,
    stack: &Stack,
    env: &BTreeMap<String, ContainerEnv>,
    mut state: Option<Value>,
) -> (StepOutcome, u32) {
    let started = Instant::now();
    for step in 1.. {
        let request = DeployRequest {
            deployment,
            release_id: &release.id,
            stack,
            env,
            secret_names: &Default::default(),
            platform_target: None,
            state: state.as_ref(),
            credentials: &Credentials::Ambient,
        };
        match deployer.apply(request).await {
            StepOutcome::Wait { state: next, wait } => {
                assert!(wait <= Duration::from_secs(5), "a short wait, got {wait:?}");
                assert!(
                    started.elapsed() < Duration::from_secs(180),
                    "no end after {step} steps: {next:#}"
                );
                state = Some(next);
                tokio::time::sleep(wait).await;
            }
            outcome => {
                eprintln!("settled after {step} steps in {:.1}s", started.elapsed().as_secs_f64());
                return (outcome, step);
            }
        }
    }
    unreachable!()
}

fn done_state(outcome: StepOutcome) -> Value {
    match outcome {
        StepOutcome::Done { state } => state,
        other => panic!("expected Done, got {other:#?}"),
    }
}

/// `GET url/` once, with a new connection.
async fn get_message(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http.get(format!("{url}/")).send().await.map_err(|e| format!("{e:?}"))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    response.json().await.map_err(|e| format!("{e:?}"))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap()
}

/// A client asking `url/` every 50 ms until stopped: (answers by message, failures).
struct Poller {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(BTreeMap<String, u32>, Vec<String>)>,
}

impl Poller {
    fn start(url: String) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = client();
            let (mut seen, mut failures) = (BTreeMap::<String, u32>::new(), Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match get_message(&http, &url).await {
                    Ok(body) => {
                        *seen
                            .entry(body["message"].as_str().unwrap_or("?").to_owned())
                            .or_default() += 1;
                    }
                    Err(e) => failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (seen, failures)
        });
        Poller { stop, task }
    }

    async fn finish(self) -> (BTreeMap<String, u32>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_out_releases_without_a_failed_request_and_keeps_old_replicas_on_a_bad_one() {
    let peers = Peers::start();
    let deployer = peers.deployer();
    let dep = deployment();
    let _cleanup = Cleanup { peers: &peers, deployment: dep.id.to_string() };
    let image = peers.image();

    // First release: two replicas, pulled from the registry with the deployment token.
    let (v1, stack1) = release(&image, json!({"replicas": 2}));
    let env1 = env(&dep, &[("HELLO_MESSAGE", "v1")]);
    let started = Instant::now();
    let (outcome, _) = settle(&deployer, &dep, &v1, &stack1, &env1, None).await;
    let state = done_state(outcome);
    eprintln!("first deployment: {:.1}s", started.elapsed().as_secs_f64());
    let outputs = &state["resources"]["web"]["outputs"];
    assert_eq!(state["platform"], "local");
    assert_eq!(state["resources"]["web"]["status"], "running");
    assert_eq!(
        (outputs["currentReplicas"].as_u64(), outputs["desiredReplicas"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(outputs["status"], "running");
    let url = outputs["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let http = client();
    let body = get_message(&http, &url).await.unwrap();
    assert_eq!(body["message"], "v1");
    assert_eq!(body["deploymentId"], dep.id.to_string());
    let names = peers.containers(&dep);
    assert_eq!(names, vec![format!("alien-{}-web-0", dep.id), format!("alien-{}-web-1", dep.id)]);
    // The same release again changes nothing.
    let again = DeployRequest {
        deployment: &dep,
        release_id: &v1.id,
        stack: &stack1,
        env: &env1,
        secret_names: &Default::default(),
        platform_target: None,
        state: Some(&state),
        credentials: &Credentials::Ambient,
    };
    let state = done_state(deployer.apply(again).await);
    assert_eq!(peers.containers(&dep), names);

    // Second release: replaced one replica at a time while a client polls the url.
    let (v2, stack2) = release(&image, json!({"replicas": 2}));
    let env2 = env(&dep, &[("HELLO_MESSAGE", "v2")]);
    let poller = Poller::start(url.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (outcome, steps) = settle(&deployer, &dep, &v2, &stack2, &env2, Some(state)).await;
    let state = done_state(outcome);
    eprintln!("rolling update: {:.1}s in {steps} steps", started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (seen, failures) = poller.finish().await;
    eprintln!("answers during the update: {seen:?}");
    assert!(
        failures.is_empty(),
        "{} failed requests during the update: {failures:?}",
        failures.len()
    );
    assert!(seen.contains_key("v1") && seen.contains_key("v2"), "{seen:?}");
    assert_eq!(state["resources"]["web"]["outputs"]["url"], url.as_str(), "the url is stable");
    assert!(steps >= 3, "one replica at a time takes several steps, took {steps}");
    assert_eq!(get_message(&http, &url).await.unwrap()["message"], "v2");
    assert_eq!(peers.containers(&dep).len(), 2, "the old replicas are gone");

    // A release whose health check fails: Failed naming the container, v2 still serving.
    let (v3, stack3) = release(&image, json!({"replicas": 2}));
    let env3 = env(&dep, &[("HELLO_MESSAGE", "v3"), ("HELLO_FAIL_HEALTH", "1")]);
    let poller = Poller::start(url.clone());
    let (outcome, _) = settle(&deployer, &dep, &v3, &stack3, &env3, Some(state)).await;
    let (seen, failures) = poller.finish().await;
    let StepOutcome::Failed { state: Some(failed_state), error } = outcome else {
        panic!("expected Failed with a state, got {outcome:#?}")
    };
    assert_eq!(error.code, "HEALTH_CHECK_FAILED");
    assert_eq!(error.resource_id.as_deref(), Some("web"));
    assert!(
        error.message.contains("container web") && error.message.contains("500"),
        "{}",
        error.message
    );
    assert_eq!(failed_state["resources"]["web"]["status"], "update-failed");
    assert_eq!(failed_state["resources"]["web"]["error"]["code"], "HEALTH_CHECK_FAILED");
    assert!(failures.is_empty(), "requests failed during the bad release: {failures:?}");
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["v2"], "only v2 answered: {seen:?}");
    assert_eq!(peers.containers(&dep).len(), 2, "the failed replica is removed, v2 stays");
    assert_eq!(get_message(&http, &url).await.unwrap()["message"], "v2");
    let report = deployer.refresh(&dep, Some(&failed_state), &Credentials::Ambient).await;
    assert_eq!(report.failing, None, "v2 serves: {report:#?}");

    // Destroy with cleanup: nothing left; again: still fine.
    assert!(matches!(
        deployer.destroy(&dep, Some(&failed_state), true, &Credentials::Ambient).await,
        StepOutcome::Done { .. }
    ));
    assert!(peers.containers(&dep).is_empty());
    assert!(get_message(&http, &url).await.is_err(), "the url is closed");
    assert!(matches!(
        deployer.destroy(&dep, None, true, &Credentials::Ambient).await,
        StepOutcome::Done { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_what_runs_after_losing_its_state_and_destroys_containers_and_volumes() {
    let peers = Peers::start();
    let dep = deployment();
    let _cleanup = Cleanup { peers: &peers, deployment: dep.id.to_string() };
    let (v1, stack) = release(
        &peers.image(),
        json!({"stateful": true, "persistentStorage": {"size": "1Gi", "mountPath": "/data"}}),
    );
    let env1 = env(&dep, &[("HELLO_MESSAGE", "kept")]);
    let first = peers.deployer();
    let (outcome, _) = settle(&first, &dep, &v1, &stack, &env1, None).await;
    let state = done_state(outcome);
    let url = state["resources"]["web"]["outputs"]["url"].as_str().unwrap().to_owned();
    let ids_before = peers.podman(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=alien.deployment={}", dep.id),
    ]);
    assert_eq!(ids_before.lines().count(), 1);
    assert_eq!(peers.volumes(&dep), vec![format!("alien-{}-web", dep.id)]);

    // A restarted manager: a new deployer, no state.
    drop(first);
    assert!(get_message(&client(), &url).await.is_err(), "the url died with its deployer");
    let second = peers.deployer();
    assert!(second.restore().await.unwrap() >= 1);
    assert_eq!(
        get_message(&client(), &url).await.unwrap()["message"],
        "kept",
        "restore binds the same url again before any step"
    );
    let (outcome, steps) = settle(&second, &dep, &v1, &stack, &env1, None).await;
    let adopted = done_state(outcome);
    assert_eq!(steps, 1, "nothing to start");
    let ids_after = peers.podman(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=alien.deployment={}", dep.id),
    ]);
    assert_eq!(ids_after, ids_before, "the running replica was adopted, not replaced");
    assert_eq!(
        adopted["resources"]["web"]["outputs"]["url"],
        url.as_str(),
        "same url after the restart"
    );
    assert_eq!(get_message(&client(), &url).await.unwrap()["message"], "kept");

    // Refresh without state finds it healthy; with its replica gone it reports the container.
    let report = second.refresh(&dep, None, &Credentials::Ambient).await;
    assert_eq!(report.failing, None, "{report:#?}");
    assert_eq!(report.state.as_ref().unwrap()["resources"]["web"]["outputs"]["currentReplicas"], 1);
    let name = format!("alien-{}-web-0", dep.id);
    peers.podman(&["rm", "-f", "-t", "0", &name]);
    let report = second.refresh(&dep, Some(&adopted), &Credentials::Ambient).await;
    let failing = report.failing.expect("a missing replica is failing");
    assert_eq!(failing.resource_id.as_deref(), Some("web"));
    assert!(failing.message.contains("0 of 1"), "{}", failing.message);

    // Apply repairs it; destroy with cleanup removes container and volume.
    let (outcome, _) = settle(&second, &dep, &v1, &stack, &env1, Some(adopted)).await;
    done_state(outcome);
    assert_eq!(peers.containers(&dep).len(), 1);
    assert!(matches!(
        second.destroy(&dep, None, true, &Credentials::Ambient).await,
        StepOutcome::Done { .. }
    ));
    assert!(peers.containers(&dep).is_empty());
    assert!(peers.volumes(&dep).is_empty());
}

/// A stack of `containers` (id -> config without `type`), each running hello-app.
fn stack_of(image: &str, containers: Value) -> (Release, Stack) {
    let mut resources = serde_json::Map::new();
    for (id, extra) in containers.as_object().unwrap() {
        let mut config = json!({
            "id": id,
            "type": "container",
            "code": {"type": "image", "image": image},
            "cpu": {"min": "0.1", "desired": "0.25"},
            "memory": {"min": "32Mi", "desired": "64Mi"},
            "ports": [{"port": 8080}],
            "healthCheck": {"path": "/health", "failureThreshold": 3},
            "permissions": "execution"
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        resources
            .insert(id.clone(), json!({"config": config, "lifecycle": "live", "dependencies": []}));
    }
    let stack: Stack =
        serde_json::from_value(json!({"id": "three", "resources": resources})).unwrap();
    let release = Release {
        id: Id::new(IdKind::Release),
        stack: BTreeMap::from([(Platform::Local, stack.clone())]),
        git_metadata: None,
        version: None,
        description: None,
        created_at: chrono::Utc::now(),
    };
    (release, stack)
}

/// Each container's environment: the deployment's variables and `vars` of its own.
fn env_of(
    deployment: &Deployment,
    per_container: &[(&str, &[(&str, &str)])],
) -> BTreeMap<String, ContainerEnv> {
    per_container
        .iter()
        .map(|(id, vars)| {
            let mut pairs = env(deployment, vars).remove("web").unwrap();
            pairs.0.push(("ALIEN_COMMANDS_TARGET_RESOURCE_ID".to_owned(), (*id).to_owned()));
            ((*id).to_owned(), pairs)
        })
        .collect()
}

/// `GET {api}/call/{id}?{query}`: what container `api` got from `id` through its binding.
async fn call_through(
    http: &reqwest::Client,
    api: &str,
    id: &str,
    query: &str,
) -> Result<Value, String> {
    let response =
        http.get(format!("{api}/call/{id}?{query}")).send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{e:?}"))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// The Container API's links and internal ports on the local platform: `api` (exposed, 8 MiB
/// of ephemeral storage) links `worker` (internal only, two ports, two replicas) and `db`
/// (stateful, persistent storage); `api` reaches both through `ALIEN_<ID>_BINDING`, on every
/// port of `worker`, and keeps reaching `worker` (one request every 50 ms, each on a new
/// connection) across a rolling update of `worker`. Writing past the ephemeral storage fails
/// inside the container with ENOSPC. Outputs carry every replica's status, health, restarts
/// and start time; fields without a local effect are listed as notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_containers_reach_every_port_through_bindings_across_a_rolling_update() {
    let peers = Peers::start();
    let deployer = peers.deployer();
    let dep = deployment();
    let _cleanup = Cleanup { peers: &peers, deployment: dep.id.to_string() };
    let image = peers.image();
    let containers = || {
        json!({
            "api": {"ports": [{"port": 8080, "expose": "http"}], "ephemeralStorage": "8Mi",
                    "links": [{"type": "container", "id": "worker"}, {"type": "container", "id": "db"}],
                    "cluster": "compute"},
            "worker": {"ports": [{"port": 8080}, {"port": 9090}], "replicas": 2},
            "db": {"stateful": true, "persistentStorage": {"size": "1Gi", "mountPath": "/data"}}
        })
    };
    let (v1, stack1) = stack_of(&image, containers());
    let env_for = |worker: &str| {
        let worker_vars = [("HELLO_MESSAGE", worker), ("HELLO_EXTRA_PORTS", "9090")];
        env_of(
            &dep,
            &[
                ("api", &[("HELLO_MESSAGE", "api")]),
                ("worker", &worker_vars),
                ("db", &[("HELLO_MESSAGE", "db")]),
            ],
        )
    };
    let env1 = env_for("worker-v1");
    let (outcome, _) = settle(&deployer, &dep, &v1, &stack1, &env1, None).await;
    let state = done_state(outcome);
    let resources = &state["resources"];
    let api = resources["api"]["outputs"]["url"].as_str().unwrap().to_owned();
    let worker = &resources["worker"]["outputs"];
    assert!(worker.get("url").is_none(), "worker exposes nothing: {worker}");
    let internal_dns = worker["internalDns"].as_str().unwrap();
    assert!(internal_dns.starts_with("10.0.2.2:"), "{internal_dns}");
    assert_eq!(worker["internalPorts"]["8080"], internal_dns, "{worker}");
    assert!(worker["internalPorts"]["9090"].as_str().unwrap().starts_with("10.0.2.2:"));
    assert_eq!(worker["currentReplicas"], 2);
    for replica in worker["replicas"].as_array().unwrap() {
        assert_eq!(
            (replica["status"].as_str(), replica["health"].as_str(), replica["restarts"].as_u64()),
            (Some("running"), Some("healthy"), Some(0)),
            "{replica}"
        );
        assert!(replica["startedAt"].as_str().is_some_and(|s| s.starts_with("20")), "{replica}");
    }
    let notices = resources["api"]["notices"].as_array().unwrap();
    assert!(
        notices.iter().any(|n| n.as_str().unwrap().starts_with("cluster `compute`")),
        "{notices:?}"
    );
    assert!(notices.iter().any(|n| n.as_str().unwrap().starts_with("permissions `execution`")));

    // api reaches worker on both ports and db, through its bindings.
    let http = client();
    let through = call_through(&http, &api, "worker", "").await.unwrap();
    assert_eq!(through["body"]["message"], "worker-v1", "{through}");
    let binding = &through["binding"];
    assert_eq!(binding["service"], "local");
    assert_eq!(binding["containerName"], "worker");
    assert_eq!(binding["internalUrl"], format!("http://{internal_dns}"), "{binding}");
    assert!(binding.get("publicUrl").is_none(), "{binding}");
    let other_port = call_through(&http, &api, "worker", "port=9090").await.unwrap();
    assert_eq!(other_port["body"]["message"], "worker-v1", "{other_port}");
    assert_eq!(
        other_port["url"],
        format!("http://{}/", worker["internalPorts"]["9090"].as_str().unwrap())
    );
    let db = call_through(&http, &api, "db", "path=/health").await.unwrap();
    assert_eq!((db["status"].as_u64(), db["body"].as_str()), (Some(200), Some("ok")), "{db}");
    let db_message = call_through(&http, &api, "db", "").await.unwrap();
    assert_eq!(db_message["body"]["message"], "db");

    // Ephemeral storage: 4 MiB fit in 8 MiB, 16 MiB do not, and the error is the container's.
    let write = |bytes: u64| {
        let http = http.clone();
        let api = api.clone();
        async move {
            let r = http
                .post(format!("{api}/write?path=/tmp/scratch&bytes={bytes}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(write(4 << 20).await.0, 200);
    let (status, text) = write(16 << 20).await;
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("os error 28"), "ENOSPC inside the container: {text}");

    // A rolling update of worker, api calling it every 50 ms throughout.
    let (v2, stack2) = stack_of(&image, containers());
    let env2 = env_for("worker-v2");
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (stop, api, http) = (stop.clone(), api.clone(), http.clone());
        tokio::spawn(async move {
            let (mut seen, mut failures) = (BTreeMap::<String, u32>::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match call_through(&http, &api, "worker", "").await {
                    Ok(r) if r["status"] == 200 => {
                        *seen
                            .entry(r["body"]["message"].as_str().unwrap_or("?").to_owned())
                            .or_default() += 1;
                    }
                    Ok(r) => failures.push(r.to_string()),
                    Err(e) => failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (seen, failures)
        })
    };
    let (outcome, steps) = settle(&deployer, &dep, &v2, &stack2, &env2, Some(state.clone())).await;
    let after = done_state(outcome);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (seen, failures) = poller.await.unwrap();
    eprintln!("worker's answers through api during its update ({steps} steps): {seen:?}");
    assert!(failures.is_empty(), "{} failed calls: {failures:?}", failures.len());
    assert!(seen.contains_key("worker-v1") && seen.contains_key("worker-v2"), "{seen:?}");
    assert_eq!(
        after["resources"]["worker"]["outputs"]["internalPorts"],
        state["resources"]["worker"]["outputs"]["internalPorts"],
        "stable across the update"
    );
    let through = call_through(&http, &api, "worker", "port=9090").await.unwrap();
    assert_eq!(through["body"]["message"], "worker-v2");
    // api was not restarted by worker's update: its bindings did not change.
    let api_replicas = &after["resources"]["api"]["outputs"]["replicas"];
    assert_eq!(api_replicas, &state["resources"]["api"]["outputs"]["replicas"], "api untouched");
}

/// What the local platform cannot run is refused at the first step, before anything starts:
/// a stack with other resource types names each; a link to one names it; a GPU this host does
/// not have fails with `GPU_NOT_AVAILABLE` naming the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_resources_foreign_links_and_missing_gpus_fail_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let engine_env = alien_local::test_support::isolated_podman(dir.path());
    let no_gpus = dir.path().join("cdi");
    std::fs::create_dir_all(&no_gpus).unwrap();
    let deployer = LocalDeployer::new(
        EngineChoice::Podman,
        LocalDeployerOptions {
            engine_env,
            cdi_dirs: vec![no_gpus.clone()],
            ..LocalDeployerOptions::default()
        },
    )
    .unwrap();
    let dep = deployment();
    let image = "127.0.0.1:1/never/pulled:v1";
    let step = |stack: Stack| {
        let deployer = &deployer;
        let dep = &dep;
        async move {
            let (release, _) = stack_of(image, json!({}));
            let env = BTreeMap::new();
            let request = DeployRequest {
                deployment: dep,
                release_id: &release.id,
                stack: &stack,
                env: &env,
                secret_names: &Default::default(),
                platform_target: None,
                state: None,
                credentials: &Credentials::Ambient,
            };
            match deployer.apply(request).await {
                StepOutcome::Failed { state: None, error } => error,
                other => panic!("expected Failed before anything started, got {other:#?}"),
            }
        }
    };
    let container = json!({"config": {"id": "web", "type": "container",
        "code": {"type": "image", "image": image}, "cpu": "0.25", "memory": "64Mi",
        "ports": [{"port": 8080, "expose": "http"}], "permissions": "execution",
        "links": [{"type": "storage", "id": "files"}]}, "lifecycle": "live", "dependencies": []});
    let other = |kind: &str, id: &str| json!({"config": {"id": id, "type": kind}, "lifecycle": "frozen", "dependencies": []});
    let mixed: Stack = serde_json::from_value(json!({"id": "mixed", "resources": {
        "web": container, "files": other("storage", "files"), "jobs": other("queue", "jobs")
    }}))
    .unwrap();
    let error = step(mixed).await;
    assert_eq!(error.code, "PLATFORM_NOT_SUPPORTED");
    assert!(
        error.message.contains("`files` (storage)") && error.message.contains("`jobs` (queue)"),
        "{}",
        error.message
    );

    let (_, mut gpu) = stack_of(image, json!({"web": {"gpu": {"type": "nvidia-t4", "count": 1}}}));
    let error = step(gpu.clone()).await;
    assert_eq!(error.code, "GPU_NOT_AVAILABLE");
    assert_eq!(error.resource_id.as_deref(), Some("web"));
    assert!(
        error.message.contains("container web") && error.message.contains("nvidia-t4"),
        "{}",
        error.message
    );

    // With a CDI specification naming one NVIDIA GPU, the request passes the check (the step
    // then goes on to pull the image, which this test does not need).
    std::fs::write(
        no_gpus.join("nvidia.json"),
        r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{}}]}"#,
    )
    .unwrap();
    gpu.resources.get_mut("web").unwrap().config = serde_json::from_value(json!({
        "id": "web", "type": "container", "code": {"type": "image", "image": image},
        "cpu": "0.25", "memory": "64Mi", "ports": [{"port": 8080}], "permissions": "execution",
        "gpu": {"type": "nvidia-t4", "count": 2}
    }))
    .unwrap();
    let error = step(gpu).await;
    assert_eq!(error.code, "GPU_NOT_AVAILABLE", "two asked, one there: {}", error.message);
    assert!(error.message.contains("has 1 CDI"), "{}", error.message);

    let mut linked: Stack =
        serde_json::from_value(json!({"id": "linked", "resources": {"web": container}})).unwrap();
    linked.id = "linked".to_owned();
    // The link names a resource the stack does not have as a container.
    let error = step(linked).await;
    assert_eq!(error.code, "PLATFORM_NOT_SUPPORTED");
    assert!(error.message.contains("container web links storage `files`"), "{}", error.message);
    assert!(
        String::from_utf8_lossy(
            &Command::new("podman")
                .args(["ps", "-a", "-q"])
                .envs(alien_local::test_support::isolated_podman(dir.path()))
                .output()
                .unwrap()
                .stdout
        )
        .trim()
        .is_empty(),
        "nothing was started"
    );
}

/// Autoscaling on the local platform: `web` (min 1, max 4, 2 requests in flight per replica)
/// under 8 concurrent slow requests scales to 4 replicas, all of them serving; once the load
/// stops it scales back to 1 after the scale-down window; each step is reported, with what was
/// measured. A refresh meanwhile takes the scaled count as the desired one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaled_container_scales_out_under_load_and_back_in_after_it() {
    let peers = Peers::start();
    let events = Arc::new(std::sync::Mutex::new(Vec::<alien_local::ScalingEvent>::new()));
    let sink = events.clone();
    let deployer = LocalDeployer::new(
        EngineChoice::Podman,
        LocalDeployerOptions {
            manager_registries: vec![peers.registry.host.clone()],
            insecure_registries: vec![peers.registry.host.clone()],
            engine_env: peers.engine_env.clone(),
            step_wait: Duration::from_millis(200),
            stop_grace: Duration::from_secs(5),
            autoscale_interval: Duration::from_millis(500),
            scale_down_window: Duration::from_secs(3),
            scaling_events: Some(alien_local::ScalingEvents(Arc::new(move |event| {
                sink.lock().unwrap().push(event);
            }))),
            ..LocalDeployerOptions::default()
        },
    )
    .unwrap();
    let dep = deployment();
    let _cleanup = Cleanup { peers: &peers, deployment: dep.id.to_string() };
    let autoscaling = json!({"autoscaling": {"min": 1, "desired": 1, "max": 4, "targetHttpInFlightPerReplica": 2}});
    let (v1, stack) = release(&peers.image(), autoscaling);
    let env1 = env(&dep, &[("HELLO_MESSAGE", "scaled")]);
    let (outcome, _) = settle(&deployer, &dep, &v1, &stack, &env1, None).await;
    let state = done_state(outcome);
    let url = state["resources"]["web"]["outputs"]["url"].as_str().unwrap().to_owned();
    assert_eq!(peers.containers(&dep).len(), 1);

    // Eight clients, each sending a 1.5 s request again as soon as the last one answers.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().no_proxy().build().unwrap();
                let mut failures = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    match http.get(format!("{url}/slow?ms=1500")).send().await {
                        Ok(r) if r.status().is_success() => {}
                        _ => failures += 1,
                    }
                }
                failures
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while peers.containers(&dep).len() < 4 {
        assert!(Instant::now() < deadline, "not scaled out: {:?}", events.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The four serve: a refresh finds them healthy, and the desired count is four.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = deployer.refresh(&dep, Some(&state), &Credentials::Ambient).await;
        let outputs = &report.state.as_ref().unwrap()["resources"]["web"]["outputs"];
        if outputs["currentReplicas"] == 4 {
            assert_eq!(outputs["desiredReplicas"], 4);
            assert_eq!(report.failing, None);
            break;
        }
        assert!(Instant::now() < deadline, "the new replicas do not serve: {outputs}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for client in clients {
        failed += client.await.unwrap();
    }
    assert_eq!(failed, 0, "every request under load was answered");

    let deadline = Instant::now() + Duration::from_secs(60);
    while peers.containers(&dep).len() > 1 {
        assert!(Instant::now() < deadline, "not scaled in: {:?}", events.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(get_message(&client(), &url).await.unwrap()["message"], "scaled");
    let steps: Vec<(u32, u32)> = events.lock().unwrap().iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(steps.first().map(|s| s.0), Some(1), "{steps:?}");
    assert_eq!(steps.iter().map(|s| s.1).max(), Some(4), "{steps:?}");
    assert_eq!(steps.last().map(|s| s.1), Some(1), "{steps:?}");
    let first = events.lock().unwrap()[0].clone();
    assert_eq!((first.deployment.as_str(), first.container.as_str()), (dep.id.as_str(), "web"));
    assert!(first.reason.contains("requests in flight"), "{}", first.reason);
    eprintln!("scaling steps: {:?}", events.lock().unwrap());
}
