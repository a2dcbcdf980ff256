//! Three manager replicas on one PostgreSQL behind nginx (docs/scale-out.md), against the real
//! binaries: what one replica acknowledges every other serves; a registry upload moves between
//! replicas; a command created on one wakes a receiver long-polling on another; a token revoked
//! through one is refused by all at once.

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::local::{hello_app_layout, on_path, push_hello_app};
use common::{OfflineStore, b64, call, fixture};
use reqwest::Method;
use serde_json::{Value, json};

fn lease_body(dep: &str, wait: u64) -> Value {
    json!({"deploymentId": dep, "target": {"resourceId": "api", "resourceType": "container"}, "waitSeconds": wait, "leaseSeconds": 30})
}

/// A `local` deployment of `valid-web.json` created through `lb`, moved to `running` through the
/// shared store (no deployment loop runs here). Returns its id and token.
async fn running_deployment(cluster: &Cluster) -> (String, String) {
    let lb = &cluster.nginx;
    let admin = &cluster.admin;
    let body = json!({"stack": {"local": fixture("valid-web.json")}});
    let (status, r) = call(lb, admin, Method::POST, "/v1/releases", Some(body)).await;
    assert_eq!(status, 201, "{r}");
    let (status, group) =
        call(lb, admin, Method::POST, "/v1/deployment-groups", Some(json!({"name": "g"}))).await;
    assert_eq!(status, 201, "{group}");
    let body = json!({"name": "d", "platform": "local", "deploymentGroupId": group["id"]});
    let (status, created) = call(lb, admin, Method::POST, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    let store = OfflineStore::open(&cluster.state(0), Some(cluster.database_url())).await;
    let id = alien_core::Id::parse_any(&dep).unwrap();
    let release = store.get_deployment(&id).await.unwrap().unwrap().desired_release_id.unwrap();
    for (event, current) in [
        (alien_core::DeploymentEvent::BeginProvisioning, None),
        (alien_core::DeploymentEvent::StepSucceeded, Some(release)),
    ] {
        let patch = alien_store::DeploymentPatch {
            current_release_id: current,
            reason: "test".into(),
            ..Default::default()
        };
        store.transition(&id, event, patch).await.unwrap();
    }
    store.close().await;
    (dep, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_nginx_share_registry_commands_and_tokens() {
    let cluster = Cluster::start(3, false, &[]).await;
    let lb = &cluster.nginx;
    let admin = cluster.admin.clone();
    let (dep, token) = running_deployment(&cluster).await;
    // What the balancer acknowledged, every replica serves.
    for i in 0..3 {
        let (status, d) =
            call(cluster.replica(i), &admin, Method::GET, &format!("/v1/deployments/{dep}"), None)
                .await;
        assert_eq!((status, d["status"].as_str()), (200, Some("running")), "replica {i}: {d}");
    }

    // One upload session, its requests taken round robin by different replicas.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 249) as u8).collect();
    let digest = format!("sha256:{}", hex_sha256(&data));
    let http = reqwest::Client::new();
    let post = http
        .post(format!("{}/v2/chunked/blob/blobs/uploads/", lb.url()))
        .basic_auth("admin", Some(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 202);
    let mut location = post.headers()["location"].to_str().unwrap().to_owned();
    let upload_id = location.rsplit('/').next().unwrap().to_owned();
    for (i, chunk) in data.chunks(1_000_000).enumerate() {
        let start = i * 1_000_000;
        let url = if location.starts_with("http") {
            location.clone()
        } else {
            format!("{}{location}", lb.url())
        };
        let patch = http
            .patch(url)
            .basic_auth("admin", Some(&admin))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{}", start + chunk.len() - 1))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(patch.status(), 202, "chunk {i}: {}", patch.text().await.unwrap());
        location = patch.headers()["location"].to_str().unwrap().to_owned();
    }
    let url = if location.starts_with("http") {
        location.clone()
    } else {
        format!("{}{location}", lb.url())
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{url}{sep}digest={digest}"))
        .basic_auth("admin", Some(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    let upstreams: BTreeSet<String> = lb
        .requests()
        .into_iter()
        .filter(|(_, path, _, _)| path.contains(&upload_id))
        .map(|(_, _, _, upstream)| upstream)
        .collect();
    assert!(upstreams.len() >= 2, "the upload's requests landed on {upstreams:?}");
    for i in 0..3 {
        let got = http
            .get(format!("{}/v2/chunked/blob/blobs/{digest}", cluster.replica(i).url()))
            .basic_auth("admin", Some(&admin))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert!(got.bytes().await.unwrap() == data, "replica {i} serves the whole blob");
    }

    // skopeo pushes through the balancer, and pulls back what it pushed.
    assert!(on_path("skopeo"), "skopeo is not installed (cargo xtask setup)");
    let (_copy, layout) = hello_app_layout();
    let image = push_hello_app(lb, &admin, &layout, "v1");
    let pulled = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--src-creds"])
        .arg(format!("admin:{admin}"))
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:pulled", pulled.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo pull: {}", String::from_utf8_lossy(&out.stderr));
    let v2: BTreeSet<String> = lb
        .requests()
        .into_iter()
        .filter(|(_, path, _, _)| path.starts_with("/v2/hello/app/"))
        .map(|(_, _, _, upstream)| upstream)
        .collect();
    assert_eq!(v2.len(), 3, "skopeo's requests reached every replica: {v2:?}");

    // Commands: created on replica A, leased by a receiver long-polling on B, answered on C.
    let mut took = Vec::new();
    for round in 0..10 {
        let (a, b, c) = (round % 3, (round + 1) % 3, (round + 2) % 3);
        let poll_url = format!("{}/v1/commands/leases", cluster.replica(b).url());
        let (poll_token, dep2) = (token.clone(), dep.clone());
        let waiter = tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(poll_url)
                .bearer_auth(poll_token)
                .json(&lease_body(&dep2, 20))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap(), Instant::now())
        });
        // The long poll is waiting on B before the command exists.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let params = format!("round {round}");
        let body = json!({"deploymentId": dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": b64(params.as_bytes())}});
        let (status, created) =
            call(cluster.replica(a), &admin, Method::POST, "/v1/commands", Some(body)).await;
        let acknowledged = Instant::now();
        assert_eq!(status, 201, "{created}");
        let id = created["commandId"].as_str().unwrap().to_owned();
        let (status, leases, delivered) = waiter.await.unwrap();
        assert_eq!(status, 200, "{leases}");
        assert_eq!(leases["leases"][0]["commandId"], id.as_str(), "{leases}");
        took.push(delivered.saturating_duration_since(acknowledged));
        let answer = json!({"status": "success", "response": {"mode": "inline", "inlineBase64": b64(params.to_uppercase().as_bytes())}});
        let (status, r) = call(
            cluster.replica(c),
            &token,
            Method::PUT,
            &format!("/v1/commands/{id}/response"),
            Some(answer),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        let (_, done) = call(lb, &admin, Method::GET, &format!("/v1/commands/{id}"), None).await;
        assert_eq!(done["state"], "SUCCEEDED", "{done}");
        assert_eq!(
            done["response"]["response"]["inlineBase64"],
            b64(params.to_uppercase().as_bytes())
        );
    }
    took.sort();
    eprintln!(
        "command created on one replica to lease on another: p50 {:?}, max {:?}",
        took[5], took[9]
    );
    // Without the signal the poll would look again only after 500 ms.
    assert!(took[5] < Duration::from_millis(50), "p50 {:?}", took[5]);
    assert!(took[9] < Duration::from_millis(300), "max {:?}", took[9]);

    // A token revoked through one replica is refused by every replica at once.
    let group =
        call(lb, &admin, Method::GET, "/v1/deployment-groups", None).await.1["items"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let (status, created) =
        call(lb, &admin, Method::POST, &format!("/v1/deployment-groups/{group}/tokens"), None)
            .await;
    assert_eq!(status, 201, "{created}");
    let (raw, token_id) =
        (created["token"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned());
    for i in 0..3 {
        let (status, _) =
            call(cluster.replica(i), &raw, Method::GET, "/v1/deployments", None).await;
        assert_eq!(status, 200, "replica {i} accepts the new token");
    }
    let (status, r) =
        call(cluster.replica(0), &admin, Method::DELETE, &format!("/v1/tokens/{token_id}"), None)
            .await;
    assert!(status == 200 || status == 204, "{status} {r}");
    // Each replica had the token in its cache; the revocation's notice empties them (it reaches
    // them within a millisecond or two of the commit, which a request can race).
    let revoked = Instant::now();
    let mut refused = HashMap::new();
    for i in [1, 2, 0] {
        for attempt in 1.. {
            let (status, _) =
                call(cluster.replica(i), &raw, Method::GET, "/v1/deployments", None).await;
            if status == 401 {
                refused.insert(i, (attempt, revoked.elapsed()));
                break;
            }
            assert_eq!(status, 200);
            assert!(revoked.elapsed() < Duration::from_millis(100), "replica {i} still accepts it");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    eprintln!("replica: (requests until refused, time since the revocation): {refused:?}");
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// `kill -9` of the replica stepping a rolling update on podman, with a pull agent syncing and
/// commands and tokens being created through the balancer: another replica takes the deployment over once the
/// lease lapses (`deployment-lease-secs = 6` here) and finishes the update; every command the
/// balancer acknowledged is answered by the container's receiver; no acknowledged release,
/// deployment or token is missing afterwards; the agent gets the new release too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_rollout_under_command_load_loses_nothing() {
    use common::local::{
        delete_with_cleanup, group, peer_dir, podman_env, release, releases_of, stack, wait_gone,
        wait_running_on, wait_status,
    };
    let dir = peer_dir("scale-out-");
    let podman = podman_env(dir.path());
    let mut env = podman.clone();
    env.push(("ALIEN_SERVER__DEPLOYMENT_LEASE_SECS".into(), "6".into()));
    env.push(("ALIEN_SERVER__DEPLOYMENT_INTERVAL_SECS".into(), "1".into()));
    let mut cluster = Cluster::start(3, true, &env).await;
    let admin = cluster.admin.clone();
    let (_copy, layout) = hello_app_layout();
    let image = push_hello_app(&cluster.nginx, &admin, &layout, "v1");
    let first = release(&cluster.nginx, &admin, stack(&image, "one")).await;
    let group_id = group(&cluster.nginx, &admin, "fleet").await;
    let body = json!({"name": "hello", "platform": "local", "deploymentGroupId": group_id});
    let (status, created) =
        call(&cluster.nginx, &admin, Method::POST, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    wait_running_on(&cluster.nginx, &admin, &dep, &first, Duration::from_secs(120)).await;
    // A pull agent syncing through the balancer, registered with a group token.
    let (status, created) = call(
        &cluster.nginx,
        &admin,
        Method::POST,
        &format!("/v1/deployment-groups/{group_id}/tokens"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let agent_state = dir.path().join("agent");
    let mut agent = KilledOnDrop(
        std::process::Command::new(agent_bin())
            .envs(podman.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["--manager-url", &cluster.nginx.url(), "--token"])
            .arg(created["token"].as_str().unwrap())
            .args(["--name", "edge", "--interval", "1", "--state-dir"])
            .arg(&agent_state)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let pulled = wait_named(&cluster, &admin, "edge", Duration::from_secs(60)).await;
    wait_running_on(&cluster.nginx, &admin, &pulled, &first, Duration::from_secs(120)).await;

    // Load: a command every 100 ms, a group token every 500 ms, through the balancer.
    let lb_url = cluster.nginx.url();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(load(lb_url, admin.clone(), dep.clone(), group_id.clone(), stopped));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The update starts; the replica holding the deployment's lease dies.
    let second = release(&cluster.nginx, &admin, stack(&image, "two")).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(90);
    let victim = loop {
        let owner = lease_owner(cluster.database_url(), &dep).await;
        let started = releases_of(&podman, &dep).contains(&second_id);
        if let (true, Some(owner)) = (started, owner) {
            break cluster.replica_of_owner(&owner).expect("a replica's owner name");
        }
        assert!(Instant::now() < deadline, "the update did not start under a lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster.kill9(victim);
    let killed = Instant::now();
    eprintln!("killed replica {victim} mid-rollout");
    let done =
        wait_running_on(&cluster.nginx, &admin, &dep, &second, Duration::from_secs(120)).await;
    eprintln!(
        "the update finished {:.1} s after the kill (lease 6 s), on {:?}",
        killed.elapsed().as_secs_f64(),
        lease_owner(cluster.database_url(), &dep).await
    );
    assert_eq!(done["status"], "running");
    // The agent got the second release through the balancer too, the kill notwithstanding.
    wait_running_on(&cluster.nginx, &admin, &pulled, &second, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send(true).unwrap();
    let (commands, tokens) = load.await.unwrap();
    eprintln!("acknowledged during the test: {} commands, {} tokens", commands.len(), tokens.len());
    assert!(commands.len() >= 20 && !tokens.is_empty(), "the load ran: {}", commands.len());

    // Every acknowledged command is answered, with its own echo.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (id, params) in &commands {
        let done = loop {
            let (status, s) =
                call(&cluster.nginx, &admin, Method::GET, &format!("/v1/commands/{id}"), None)
                    .await;
            if status == 200 && (s["state"] == "SUCCEEDED" || s["state"] == "FAILED") {
                break s;
            }
            assert!(Instant::now() < deadline, "command {id} not answered: {status} {s}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(done["state"], "SUCCEEDED", "{done}");
        assert_eq!(done["response"]["response"]["inlineBase64"], b64(params.as_bytes()), "{done}");
    }
    // Releases, the deployment and every acknowledged token are there.
    let (_, releases) = call(&cluster.nginx, &admin, Method::GET, "/v1/releases", None).await;
    let ids: Vec<&str> =
        releases["items"].as_array().unwrap().iter().filter_map(|r| r["id"].as_str()).collect();
    assert!(ids.contains(&first["id"].as_str().unwrap()) && ids.contains(&second_id.as_str()));
    let (_, listed) =
        call(&cluster.nginx, &admin, Method::GET, "/v1/tokens?limit=1000", None).await;
    let known: BTreeSet<&str> =
        listed["items"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect();
    for token in &tokens {
        assert!(known.contains(token.as_str()), "token {token} was acknowledged and is gone");
    }
    let _ = wait_status(&cluster.nginx, &admin, &dep, "running", Duration::from_secs(5)).await;
    delete_with_cleanup(&cluster.nginx, &admin, &dep).await;
    delete_with_cleanup(&cluster.nginx, &admin, &pulled).await;
    wait_gone(&cluster.nginx, &admin, &dep, Duration::from_secs(120)).await;
    wait_gone(&cluster.nginx, &admin, &pulled, Duration::from_secs(120)).await;
    // Its deployment deleted, the agent removes its containers and exits.
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the agent did not exit after its deletion");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Work given through one replica wakes the deployment loop on another at once: replica 0 runs
/// no loop, replica 1's loop ticks once an hour, so only the cross-replica signal can explain a
/// step within seconds. A release reaching a deployment waiting for one, a second release, and
/// a delete, each made through replica 0, are taken up by replica 1 within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_work_through_one_replica_wakes_the_loop_on_another() {
    use common::local::{
        delete_with_cleanup, group, peer_dir, podman_env, release, stack, wait_gone,
        wait_running_on,
    };
    let dir = peer_dir("scale-out-wake-");
    let podman = podman_env(dir.path());
    let mut env = podman.clone();
    env.push(("ALIEN_SERVER__DEPLOYMENT_INTERVAL_SECS".into(), "3600".into()));
    let cluster = Cluster::start_with_loops(&[false, true], &env).await;
    let admin = cluster.admin.clone();
    let (_copy, layout) = hello_app_layout();
    let image = push_hello_app(&cluster.nginx, &admin, &layout, "v1");
    let through = cluster.replica(0);
    // Replica 1's loop has made its first tick (at start) before any work exists.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A deployment without a release waits; a release through replica 0 starts it.
    let group_id = group(through, &admin, "wake").await;
    let body = json!({"name": "woken", "platform": "local", "deploymentGroupId": group_id});
    let (status, created) =
        call(through, &admin, Method::POST, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["deployment"]["status"], "pending", "{created}");
    let first = release(through, &admin, stack(&image, "one")).await;
    leaves(through, &admin, &dep, "pending", Duration::from_secs(5)).await;
    wait_running_on(through, &admin, &dep, &first, Duration::from_secs(120)).await;

    // A second release through replica 0 updates it.
    let second = release(through, &admin, stack(&image, "two")).await;
    leaves(through, &admin, &dep, "running", Duration::from_secs(5)).await;
    wait_running_on(through, &admin, &dep, &second, Duration::from_secs(120)).await;

    // A delete through replica 0 removes it.
    delete_with_cleanup(through, &admin, &dep).await;
    leaves(through, &admin, &dep, "delete-pending", Duration::from_secs(5)).await;
    wait_gone(through, &admin, &dep, Duration::from_secs(120)).await;
}

/// Waits until the deployment's status is no longer `from` (nor `from` with a rollout's hold),
/// within `within`; fails on the deadline.
async fn leaves(
    server: &impl common::Endpoint,
    admin: &str,
    dep: &str,
    from: &str,
    within: Duration,
) {
    let started = Instant::now();
    loop {
        let (_, d) =
            call(server, admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        let status = d["status"].as_str().unwrap_or("");
        let still = status == from || (from == "running" && status == "update-pending");
        if !still {
            eprintln!("{dep} left {from} for {status} in {:?}", started.elapsed());
            return;
        }
        assert!(started.elapsed() < within, "still {status} after {within:?}: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
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

/// The agent binary, next to the manager's (`cargo xtask test` builds every binary).
fn agent_bin() -> std::path::PathBuf {
    let agent =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_alien-manager")).with_file_name("alien-agent");
    assert!(agent.is_file(), "{} is missing: cargo build -p alien-agent", agent.display());
    agent
}

/// The id of the deployment named `name`, once it exists.
async fn wait_named(cluster: &Cluster, admin: &str, name: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (_, listed) = call(&cluster.nginx, admin, Method::GET, "/v1/deployments", None).await;
        if let Some(found) =
            listed["items"].as_array().into_iter().flatten().find(|d| d["name"] == name)
        {
            return found["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no deployment {name}: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The lease owner of `dep` in the shared store, if leased.
async fn lease_owner(url: &str, dep: &str) -> Option<String> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let owner: Option<String> =
        sqlx::query_scalar("SELECT locked_by FROM alien.deployments WHERE id = $1")
            .bind(dep)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let _ = conn.close().await;
    owner
}

/// Creates commands (every 100 ms) and group tokens (every 500 ms) through the balancer until
/// `stop`; returns the acknowledged ones: (command id, params) and token ids. A request that
/// fails (the replica behind it died) was not acknowledged.
async fn load(
    lb: String,
    admin: String,
    dep: String,
    group: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<(String, String)>, Vec<String>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let (mut commands, mut tokens) = (Vec::new(), Vec::new());
    let mut refused: HashMap<u16, u32> = HashMap::new();
    for round in 0u64.. {
        if *stop.borrow_and_update() {
            break;
        }
        let params = format!("load {round}");
        let body = json!({"deploymentId": dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": b64(params.as_bytes())}});
        let sent =
            http.post(format!("{lb}/v1/commands")).bearer_auth(&admin).json(&body).send().await;
        let status = sent.as_ref().map_or(0, |r| r.status().as_u16());
        *refused.entry(status).or_insert(0) += 1;
        if let Ok(r) = sent
            && status == 201
            && let Ok(created) = r.json::<Value>().await
        {
            commands.push((created["commandId"].as_str().unwrap().to_owned(), params));
        }
        if round % 5 == 0 {
            let sent = http
                .post(format!("{lb}/v1/deployment-groups/{group}/tokens"))
                .bearer_auth(&admin)
                .send()
                .await;
            if let Ok(r) = sent
                && r.status() == 201
                && let Ok(created) = r.json::<Value>().await
            {
                tokens.push(created["id"].as_str().unwrap().to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("command creation answers (0: no answer): {refused:?}");
    (commands, tokens)
}
