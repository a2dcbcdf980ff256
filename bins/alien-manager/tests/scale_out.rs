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
        let url = if location.starts_with("http") { location.clone() } else { format!("{}{location}", lb.url()) };
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
    let url = if location.starts_with("http") { location.clone() } else { format!("{}{location}", lb.url()) };
    let sep = if url.contains('?') { '&' } else { '?' };
    let put =
        http.put(format!("{url}{sep}digest={digest}")).basic_auth("admin", Some(&admin)).send().await.unwrap();
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
        assert_eq!(done["response"]["response"]["inlineBase64"], b64(params.to_uppercase().as_bytes()));
    }
    took.sort();
    eprintln!("command created on one replica to lease on another: p50 {:?}, max {:?}", took[5], took[9]);
    // Without the signal the poll would look again only after 500 ms.
    assert!(took[5] < Duration::from_millis(50), "p50 {:?}", took[5]);
    assert!(took[9] < Duration::from_millis(300), "max {:?}", took[9]);

    // A token revoked through one replica is refused by every replica at once.
    let group = call(lb, &admin, Method::GET, "/v1/deployment-groups", None).await.1["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, created) = call(
        lb,
        &admin,
        Method::POST,
        &format!("/v1/deployment-groups/{group}/tokens"),
        None,
    )
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
    let mut refused = HashMap::new();
    for i in [1, 2, 0] {
        let (status, _) =
            call(cluster.replica(i), &raw, Method::GET, "/v1/deployments", None).await;
        refused.insert(i, status);
    }
    assert!(refused.values().all(|s| *s == 401), "{refused:?}");
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
