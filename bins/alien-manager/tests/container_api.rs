//! The Container API on the local platform through the real manager and podman (feature
//! `peer-tests`): an autoscaled container scales out under load and back in, and the
//! deployment's events show each step; linked containers reach each other through their
//! bindings; what the local platform cannot run fails the deployment with a clear error.

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::database::TestDatabase;
use common::local::{
    containers_of, delete_with_cleanup, group, hello_app_layout, peer_dir, podman_env,
    push_hello_app, release, wait_failed, wait_gone, wait_status,
};
use common::{Server, TEST_KEY, call, printed_admin_token};
use reqwest::Method;
use serde_json::{Value, json};

/// A container of hello-app with `extra` fields.
fn container(id: &str, image: &str, extra: Value) -> Value {
    let mut config = json!({
        "id": id, "type": "container",
        "code": {"type": "image", "image": image},
        "cpu": {"min": "0.1", "desired": "0.25"},
        "memory": {"min": "32Mi", "desired": "64Mi"},
        "ports": [{"port": 8080}],
        "healthCheck": {"path": "/health", "timeoutSeconds": 1, "failureThreshold": 3},
        "environment": {"HELLO_MESSAGE": id},
        "permissions": "execution"
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    json!({"config": config, "dependencies": [], "lifecycle": "live"})
}

type Setup = (tempfile::TempDir, Server, String, String, TestDatabase, Vec<(String, String)>);

/// A manager deploying to podman, with the hello-app image in its registry.
async fn manager(prefix: &str) -> Setup {
    let (setup, _none) = manager_on(prefix, false).await;
    setup
}

/// A manager deploying to podman, or with `docker` to the docker CLI against podman's
/// Docker-compatible service (the manager's `PATH` then has docker and no podman), with the
/// hello-app image in its registry.
async fn manager_on(prefix: &str, docker: bool) -> (Setup, Option<DockerService>) {
    let dir = peer_dir(prefix);
    let (_copy, layout) = hello_app_layout();
    let db = TestDatabase::for_test().await;
    let podman = podman_env(dir.path());
    let port = common::free_port();
    let mut env = Vec::new();
    let service = if docker {
        let service = DockerService::start(dir.path(), &podman, &format!("127.0.0.1:{port}"));
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let docker_cli = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join("docker"))
            .find(|p| p.is_file())
            .expect("the docker CLI is on PATH");
        std::os::unix::fs::symlink(&docker_cli, bin.join("docker")).unwrap();
        env.push(("PATH".to_owned(), bin.display().to_string()));
        env.push(("DOCKER_HOST".to_owned(), service.host()));
        Some(service)
    } else {
        env.extend(podman.iter().cloned());
        None
    };
    env.push(("ALIEN_DATABASE__ENCRYPTION_KEY".into(), TEST_KEY.into()));
    env.extend(db.env().into_iter().map(|(k, v)| (k.to_owned(), v)));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server =
        Server::start(common::serve_deploying_on(&dir.path().join("state"), port, &env_refs));
    let admin = printed_admin_token(&server).unwrap();
    let (_, platforms) = call(&server, &admin, Method::GET, "/v1/platforms", None).await;
    let engine = if docker { "docker" } else { "podman" };
    assert!(
        platforms.to_string().contains(engine),
        "the local platform runs on {engine}: {platforms}"
    );
    let image = push_hello_app(&server, &admin, &layout, "v1");
    ((dir, server, admin, image, db, podman), service)
}

/// Creates a deployment of the latest release; returns its id.
async fn deploy(server: &Server, admin: &str, name: &str) -> String {
    let group = group(server, admin, name).await;
    let body = json!({"name": name, "platform": "local", "deploymentGroupId": group});
    let (status, created) = call(server, admin, Method::POST, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["deployment"]["id"].as_str().unwrap().to_owned()
}

/// `web` (min 1, max 4, 2 requests in flight per replica) under 8 concurrent slow requests
/// scales to 4 replicas and, 30 s (the scale-down window) after the load stops, back to 1; the
/// deployment's events show each step with what was measured.
async fn autoscaling(docker: bool) {
    let ((_dir, server, admin, image, _db, podman), _docker) =
        manager_on("container-api-scale-", docker).await;
    let web = container(
        "web",
        &image,
        json!({
            "ports": [{"port": 8080, "expose": "http"}],
            "autoscaling": {"min": 1, "desired": 1, "max": 4, "targetHttpInFlightPerReplica": 2}
        }),
    );
    release(&server, &admin, json!({"id": "scaled", "resources": {"web": web}})).await;
    let dep = deploy(&server, &admin, "scaled").await;
    let running = wait_status(&server, &admin, &dep, "running", Duration::from_secs(90)).await;
    let url =
        running["stackState"]["resources"]["web"]["outputs"]["url"].as_str().unwrap().to_owned();

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
    while containers_of(&podman, &dep).len() < 4 {
        assert!(Instant::now() < deadline, "not scaled out to 4");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let scaled_out = Instant::now();
    let mut failed = 0;
    for client in clients {
        failed += client.await.unwrap();
    }
    assert_eq!(failed, 0, "every request under load was answered");
    let deadline = Instant::now() + Duration::from_secs(90);
    while containers_of(&podman, &dep).len() > 1 {
        assert!(Instant::now() < deadline, "not scaled back to 1");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "back to 1 replica {:.1} s after the load stopped",
        scaled_out.elapsed().as_secs_f64()
    );

    let (status, events) =
        call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}/events"), None).await;
    assert_eq!(status, 200, "{events}");
    let steps: Vec<&Value> =
        events["items"].as_array().unwrap().iter().filter(|e| e["reason"] == "autoscale").collect();
    let mut steps: Vec<(u64, u64, String)> = steps
        .iter()
        .map(|e| {
            let d = &e["detail"];
            assert_eq!(d["container"], "web", "{e}");
            assert_eq!((e["from"].as_str(), e["to"].as_str()), (Some("running"), Some("running")));
            (
                d["from"].as_u64().unwrap(),
                d["to"].as_u64().unwrap(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    steps.reverse(); // oldest first
    eprintln!("autoscale events: {steps:?}");
    assert_eq!(steps.first().map(|s| (s.0, s.1)), Some((1, 4)), "{steps:?}");
    assert!(steps[0].2.contains("requests in flight"), "{steps:?}");
    assert_eq!(steps.last().map(|s| s.1), Some(1), "{steps:?}");
    let (_, d) = call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
    assert_eq!(d["status"], "running", "scaling is not a status change: {d}");
    delete_with_cleanup(&server, &admin, &dep).await;
    wait_gone(&server, &admin, &dep, Duration::from_secs(60)).await;
}

store_matrix! {
/// [`autoscaling`] on podman.
async fn autoscaling_steps_appear_in_the_deployments_events() {
    autoscaling(false).await;
}
}

/// [`autoscaling`] on docker (the docker CLI against podman's Docker-compatible service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_on_docker() {
    autoscaling(true).await;
}

store_matrix! {
/// A stack the local platform cannot run fails at the first step naming what it lacks (here a
/// queue, and a container linking it); nothing starts.
async fn a_stack_with_other_resources_fails_with_platform_not_supported() {
    let (_dir, server, admin, image, _db, podman) = manager("container-api-refused-").await;
    let web = container("web", &image, json!({"links": [{"type": "queue", "id": "jobs"}]}));
    let jobs = json!({"config": {"id": "jobs", "type": "queue"}, "dependencies": [], "lifecycle": "frozen"});
    release(&server, &admin, json!({"id": "mixed", "resources": {"web": web, "jobs": jobs}})).await;
    let dep = deploy(&server, &admin, "mixed").await;
    let failed = wait_failed(&server, &admin, &dep, "provisioning-failed").await;
    assert_eq!(failed["error"]["code"], "PLATFORM_NOT_SUPPORTED", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap().contains("`jobs` (queue)"), "{failed}");
    assert!(containers_of(&podman, &dep).is_empty(), "nothing started");
}
}

/// `podman system service` on a unix socket (podman's Docker-compatible API), with the test's
/// podman configuration and `registry` (the manager's, plain HTTP) marked insecure: the Docker
/// engine of these machines. Stopped when dropped.
struct DockerService {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl DockerService {
    fn start(dir: &std::path::Path, podman: &[(String, String)], registry: &str) -> DockerService {
        assert!(common::local::on_path("docker"), "the docker CLI is not installed");
        let conf = dir.join("registries.conf");
        std::fs::write(
            &conf,
            format!("[[registry]]\nlocation = \"{registry}\"\ninsecure = true\n"),
        )
        .unwrap();
        let socket = dir.join("podman.sock");
        let child = std::process::Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .envs(podman.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("podman-service.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "podman system service did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        DockerService { child, socket }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for DockerService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when the test ends, passed or not.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

store_matrix! {
/// Pull mode: an agent runs `api` (exposed, autoscaled on requests in flight) linking `worker`
/// (internal, two ports); `api` reaches `worker` through its binding; 8 concurrent slow
/// requests scale `api` out, and the agent's syncs bring the scaling steps into the
/// deployment's events.
async fn pull_mode_links_and_autoscaling_steps_reach_the_manager() {
    let (dir, server, admin, image, _db, podman) = manager("container-api-pull-").await;
    let api = container("api", &image, json!({
        "ports": [{"port": 8080, "expose": "http"}],
        "links": [{"type": "container", "id": "worker"}],
        "autoscaling": {"min": 1, "desired": 1, "max": 3, "targetHttpInFlightPerReplica": 2}
    }));
    let worker = container("worker", &image, json!({
        "ports": [{"port": 8080}, {"port": 9090}],
        "environment": {"HELLO_MESSAGE": "worker", "HELLO_EXTRA_PORTS": "9090"}
    }));
    let first = release(&server, &admin, json!({"id": "pulled", "resources": {"api": api, "worker": worker}})).await;
    let group_id = group(&server, &admin, "edge").await;
    let (status, created) = call(
        &server,
        &admin,
        Method::POST,
        &format!("/v1/deployment-groups/{group_id}/tokens"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let agent_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_alien-manager")).with_file_name("alien-agent");
    assert!(agent_bin.is_file(), "{} is missing", agent_bin.display());
    let _agent = KilledOnDrop(
        std::process::Command::new(agent_bin)
            .envs(podman.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["--manager-url", &server.url(), "--token"])
            .arg(created["token"].as_str().unwrap())
            .args(["--name", "edge", "--interval", "1", "--engine", "podman", "--state-dir"])
            .arg(dir.path().join("agent"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let dep = loop {
        let (_, listed) = call(&server, &admin, Method::GET, "/v1/deployments", None).await;
        if let Some(d) = listed["items"].as_array().into_iter().flatten().find(|d| d["name"] == "edge") {
            break d["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the agent did not register");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let running =
        common::local::wait_running_on(&server, &admin, &dep, &first, Duration::from_secs(120)).await;
    let url = running["stackState"]["resources"]["api"]["outputs"]["url"].as_str().unwrap().to_owned();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let called: Value = http.get(format!("{url}/call/worker?port=9090")).send().await.unwrap().json().await.unwrap();
    assert_eq!(called["body"]["message"], "worker", "{called}");

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, url, http) = (stop.clone(), url.clone(), http.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = http.get(format!("{url}/slow?ms=1500")).send().await;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let scaled = loop {
        let (_, events) =
            call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}/events"), None).await;
        let found = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "autoscale")
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "no autoscale event reached the manager: {events}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(scaled["detail"]["container"], "api", "{scaled}");
    assert_eq!((scaled["detail"]["from"].as_u64(), scaled["detail"]["to"].as_u64()), (Some(1), Some(3)), "{scaled}");
    assert!(containers_of(&podman, &dep).len() >= 4, "3 api and 1 worker replicas");
}
}

/// Push mode, the three containers: `api` (exposed, 8 MiB of ephemeral
/// storage) links `worker` (internal only, two ports, two replicas) and `db` (stateful, with
/// persistent storage); `api` reaches both through its bindings, and keeps reaching `worker`
/// (a call every 50 ms) across a rolling update of `worker`; writing past the ephemeral
/// storage fails inside the container.
async fn three_linked(docker: bool) {
    let ((_dir, server, admin, image, _db, _podman), _docker) =
        manager_on("container-api-three-", docker).await;
    let stack_of = |worker_message: &str| {
        let api = container(
            "api",
            &image,
            json!({
                "ports": [{"port": 8080, "expose": "http"}],
                "ephemeralStorage": "8Mi",
                "links": [{"type": "container", "id": "worker"}, {"type": "container", "id": "db"}]
            }),
        );
        let worker = container(
            "worker",
            &image,
            json!({
                "ports": [{"port": 8080}, {"port": 9090}],
                "replicas": 2,
                "environment": {"HELLO_MESSAGE": worker_message, "HELLO_EXTRA_PORTS": "9090"}
            }),
        );
        let db = container(
            "db",
            &image,
            json!({
                "stateful": true,
                "persistentStorage": {"size": "1Gi", "mountPath": "/data"}
            }),
        );
        json!({"id": "three", "resources": {"api": api, "worker": worker, "db": db}})
    };
    let first = release(&server, &admin, stack_of("worker-v1")).await;
    let dep = deploy(&server, &admin, "three").await;
    let running =
        common::local::wait_running_on(&server, &admin, &dep, &first, Duration::from_secs(120))
            .await;
    let resources = &running["stackState"]["resources"];
    let api = resources["api"]["outputs"]["url"].as_str().unwrap().to_owned();
    assert!(resources["worker"]["outputs"].get("url").is_none());
    assert_eq!(resources["db"]["status"], "running");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let client = http.clone();
    let get = move |path: String| {
        let http = client.clone();
        async move {
            let r = http.get(path).send().await.map_err(|e| e.to_string())?;
            r.json::<Value>().await.map_err(|e| e.to_string())
        }
    };
    for (target, query, want) in
        [("worker", "", "worker-v1"), ("worker", "port=9090", "worker-v1"), ("db", "", "db")]
    {
        let r = get(format!("{api}/call/{target}?{query}")).await.unwrap();
        assert_eq!(r["body"]["message"], want, "{target} {query}: {r}");
    }
    let full =
        http.post(format!("{api}/write?path=/tmp/x&bytes={}", 16 << 20)).send().await.unwrap();
    assert_eq!(full.status().as_u16(), 507);
    assert!(full.text().await.unwrap().contains("os error 28"));

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (stop, api, get) = (stop.clone(), api.clone(), get.clone());
        tokio::spawn(async move {
            let (mut seen, mut failures) =
                (std::collections::BTreeMap::<String, u32>::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match get(format!("{api}/call/worker")).await {
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
    let second = release(&server, &admin, stack_of("worker-v2")).await;
    common::local::wait_running_on(&server, &admin, &dep, &second, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (seen, failures) = poller.await.unwrap();
    eprintln!("worker through api during its update: {seen:?}");
    assert!(failures.is_empty(), "{} failed calls: {failures:?}", failures.len());
    assert!(seen.contains_key("worker-v2"), "{seen:?}");
    delete_with_cleanup(&server, &admin, &dep).await;
    wait_gone(&server, &admin, &dep, Duration::from_secs(60)).await;
}

store_matrix! {
/// [`three_linked`] on podman.
async fn three_linked_containers_across_a_rolling_update_of_one() {
    three_linked(false).await;
}
}

/// [`three_linked`] on docker (the docker CLI against podman's Docker-compatible service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_linked_containers_on_docker() {
    three_linked(true).await;
}

store_matrix! {
/// A GPU this host does not have (it has none) fails the deployment with `GPU_NOT_AVAILABLE`
/// naming the container; nothing starts.
async fn a_gpu_this_host_lacks_fails_with_gpu_not_available() {
    let (_dir, server, admin, image, _db, podman) = manager("container-api-gpu-").await;
    let ml = container("ml", &image, json!({"gpu": {"type": "nvidia-t4", "count": 1}}));
    release(&server, &admin, json!({"id": "gpu", "resources": {"ml": ml}})).await;
    let dep = deploy(&server, &admin, "gpu").await;
    let failed = wait_failed(&server, &admin, &dep, "provisioning-failed").await;
    assert_eq!(failed["error"]["code"], "GPU_NOT_AVAILABLE", "{failed}");
    assert_eq!(failed["error"]["resourceId"], "ml", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap().contains("container ml"), "{failed}");
    assert!(containers_of(&podman, &dep).is_empty(), "nothing started");
}
}
