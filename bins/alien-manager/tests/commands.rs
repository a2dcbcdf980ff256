//! The commands protocol over HTTP against the real binary on 127.0.0.1, with its local KV and
//! payload store: the scenarios of spec/commands.md (small and large params and responses, expiry
//! redelivery, release, deadlines, idempotent replay, duplicate and opposite responses, presigned
//! responses) and the auth rows of the matrix. Deployments are moved to `running` through the
//! store while the manager is stopped (the deployment loop is its own issue).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Manager as Api, b64, running};
use reqwest::Method;
use serde_json::{Value, json};

fn lease_body(dep: &str, wait: u64, lease_seconds: u64) -> Value {
    json!({"deploymentId": dep, "target": {"resourceId": "api", "resourceType": "container"}, "waitSeconds": wait, "leaseSeconds": lease_seconds})
}

async fn create(api: &Api, token: &str, dep: &str, params: &[u8]) -> Value {
    let body = json!({"deploymentId": dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": b64(params)}});
    let (status, created) = api.call(Method::POST, "/v1/commands", Some(token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

store_matrix! {
async fn small_params_small_response_round_trip_with_long_poll() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    // A receiver waits first; the command is delivered to the waiting long poll.
    let base = api.base.clone();
    let receiver_token = token.clone();
    let dep2 = dep.clone();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let response = reqwest::Client::new()
            .post(format!("{base}/v1/commands/leases"))
            .bearer_auth(receiver_token)
            .json(&lease_body(&dep2, 30, 30))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = create(&api, &group_token, &dep, b"hello").await;
    assert_eq!(created["state"], "PENDING");
    assert_eq!(created["next"], "poll");
    let id = created["commandId"].as_str().unwrap().to_owned();
    let (status, leases, waited) = waiter.await.unwrap();
    assert_eq!(status, 200, "{leases}");
    assert!(
        waited < Duration::from_secs(20),
        "delivered to the waiting poll, not at the end of its 30 s wait: {waited:?}"
    );
    let lease = &leases["leases"][0];
    assert_eq!(lease["commandId"], id);
    assert_eq!(lease["attempt"], 1);
    let envelope = &lease["envelope"];
    assert_eq!(envelope["protocol"], "arc.v1");
    assert_eq!(envelope["command"], "echo");
    assert_eq!(envelope["params"], json!({"mode": "inline", "inlineBase64": b64(b"hello")}));
    let (status, _) = api
        .call(Method::PUT, &format!("/v1/commands/{id}/response"), Some(&token), Some(json!({"status": "success", "response": {"mode": "inline", "inlineBase64": b64(b"HELLO")}})))
        .await;
    assert_eq!(status, 200);
    let (status, done) =
        api.call(Method::GET, &format!("/v1/commands/{id}"), Some(&group_token), None).await;
    assert_eq!(status, 200);
    assert_eq!(done["state"], "SUCCEEDED");
    assert_eq!(done["response"]["response"]["inlineBase64"], b64(b"HELLO"));
    assert!(done["completedAt"].is_string());
    // A second, opposite response is ignored: the first stands.
    let (status, _) = api
        .call(
            Method::PUT,
            &format!("/v1/commands/{id}/response"),
            Some(&token),
            Some(json!({"status": "error", "code": "X", "message": "late"})),
        )
        .await;
    assert_eq!(status, 200);
    let done = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
    assert_eq!(done["state"], "SUCCEEDED");
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_params_and_large_response_go_through_presigned_urls() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    let params: Vec<u8> = (0..400_000u32).map(|i| (i % 253) as u8).collect();
    let body = json!({"deploymentId": dep, "command": "import", "params": {"mode": "storage", "size": params.len()}});
    let (status, created) =
        api.call(Method::POST, "/v1/commands", Some(&group_token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "PENDING_UPLOAD");
    assert_eq!(created["next"], "upload");
    let id = created["commandId"].as_str().unwrap().to_owned();
    let put = &created["storageUpload"]["putRequest"]["backend"];
    assert_eq!(put["method"], "PUT");
    let client = reqwest::Client::new();
    let r = client.put(put["url"].as_str().unwrap()).body(params.clone()).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // Nothing is leasable before upload-complete.
    let (_, none) = api
        .call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease_body(&dep, 0, 30)))
        .await;
    assert_eq!(none["leases"], json!([]));
    let (status, r) = api
        .call(
            Method::POST,
            &format!("/v1/commands/{id}/upload-complete"),
            Some(&group_token),
            Some(json!({"size": 5})),
        )
        .await;
    assert_eq!(status, 400, "a wrong size is refused: {r}");
    let (status, r) = api
        .call(
            Method::POST,
            &format!("/v1/commands/{id}/upload-complete"),
            Some(&group_token),
            Some(json!({"size": params.len()})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (_, leases) = api
        .call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease_body(&dep, 0, 30)))
        .await;
    let envelope = &leases["leases"][0]["envelope"];
    assert_eq!(envelope["params"]["mode"], "storage");
    let get = envelope["params"]["storageGetRequest"]["backend"]["url"].as_str().unwrap();
    let fetched = client.get(get).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(
        fetched.as_ref(),
        params.as_slice(),
        "the receiver downloads the params byte for byte"
    );
    // A large response: upload to storageUploadRequest, then submit through the presigned URL (no token).
    let response: Vec<u8> = vec![7u8; 1_000_000];
    let upload =
        envelope["responseHandling"]["storageUploadRequest"]["backend"]["url"].as_str().unwrap();
    assert!(client.put(upload).body(response.clone()).send().await.unwrap().status().is_success());
    let submit = envelope["responseHandling"]["submitResponseUrl"].as_str().unwrap();
    let r = client
        .put(submit)
        .json(&json!({"status": "success", "response": {"mode": "storage", "size": response.len(), "storagePutUsed": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let done = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
    assert_eq!(done["state"], "SUCCEEDED");
    let url = done["response"]["response"]["storageGetRequest"]["backend"]["url"].as_str().unwrap();
    let got = client.get(url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), response.len());
    // A tampered response URL or payload URL is refused.
    let tampered = submit.replace("response_token=", "response_token=00");
    let r = client
        .put(tampered)
        .json(&json!({"status": "error", "code": "X", "message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client.get(format!("{url}0")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_redelivered_and_released_ones_come_back() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    let created = create(&api, &group_token, &dep, b"x").await;
    let id = created["commandId"].as_str().unwrap().to_owned();
    let (_, first) = api
        .call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease_body(&dep, 0, 1)))
        .await;
    assert_eq!(first["leases"][0]["attempt"], 1);
    let status = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
    assert_eq!(status["state"], "DISPATCHED");
    // The lease runs out without a response: the reaper redelivers it with attempt + 1.
    let (_, second) = api
        .call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease_body(&dep, 5, 30)))
        .await;
    assert_eq!(second["leases"][0]["commandId"], id, "{second}");
    assert_eq!(second["leases"][0]["attempt"], 2);
    // Released: back to PENDING at once, leasable again.
    let lease_id = second["leases"][0]["leaseId"].as_str().unwrap();
    let (status, _) = api
        .call(Method::POST, &format!("/v1/commands/leases/{lease_id}/release"), Some(&token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await["state"],
        "PENDING"
    );
    let (_, third) = api
        .call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease_body(&dep, 0, 30)))
        .await;
    assert_eq!(third["leases"][0]["commandId"], id);
    let (status, _) = api
        .call(Method::POST, &format!("/v1/commands/leases/{lease_id}/release"), Some(&token), None)
        .await;
    assert_eq!(status, 404, "an old lease cannot release the new one");
}

/// A response that arrives after its lease ran out (the reaper put the command back to PENDING)
/// is still accepted: the work was done (at-least-once delivery). The command is then SUCCEEDED
/// with that response and is not delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_after_the_lease_ran_out_is_accepted() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    let created = create(&api, &group_token, &dep, b"late").await;
    let id = created["commandId"].as_str().unwrap().to_owned();
    let (_, leased) = api
        .call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease_body(&dep, 0, 1)))
        .await;
    assert_eq!(leased["leases"][0]["commandId"], id.as_str(), "{leased}");
    // Until the reaper took the lease back (polled, however long a loaded machine takes).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
        if status["state"] == "PENDING" {
            assert_eq!(status["attempt"], 2, "the next delivery is attempt 2: {status}");
            break;
        }
        assert_eq!(status["state"], "DISPATCHED", "{status}");
        assert!(std::time::Instant::now() < deadline, "the lease never ran out: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = json!({"status": "success", "response": {"mode": "inline", "inlineBase64": b64(b"done late")}});
    let (status, r) = api
        .call(Method::PUT, &format!("/v1/commands/{id}/response"), Some(&token), Some(late))
        .await;
    assert_eq!(status, 200, "{r}");
    let done = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["response"]["response"]["inlineBase64"], b64(b"done late"));
    let (_, again) = api
        .call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease_body(&dep, 0, 30)))
        .await;
    assert_eq!(again["leases"], json!([]), "a SUCCEEDED command is not delivered again");
}

/// A response after the command's deadline is ignored: the command is EXPIRED without it, whether
/// the reaper got there first or the response found the deadline passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_after_the_deadline_leaves_the_command_expired() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    let deadline = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let body = json!({"deploymentId": dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": ""}, "deadline": deadline.to_rfc3339()});
    let (status, created) =
        api.call(Method::POST, "/v1/commands", Some(&group_token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["commandId"].as_str().unwrap().to_owned();
    let (_, leased) = api
        .call(Method::POST, "/v1/commands/leases", Some(&token), Some(lease_body(&dep, 0, 60)))
        .await;
    assert_eq!(leased["leases"][0]["commandId"], id.as_str(), "{leased}");
    while chrono::Utc::now() <= deadline + chrono::Duration::milliseconds(50) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late = json!({"status": "success", "response": {"mode": "inline", "inlineBase64": b64(b"too late")}});
    let (status, r) = api
        .call(Method::PUT, &format!("/v1/commands/{id}/response"), Some(&token), Some(late))
        .await;
    assert_eq!(status, 200, "{r}");
    let done = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
    assert_eq!(done["state"], "EXPIRED", "{done}");
    assert!(done["response"].is_null(), "the late answer is not kept: {done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_expire_pending_and_pending_upload_commands() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    let a = json!({"deploymentId": dep, "command": "a", "params": {"mode": "inline", "inlineBase64": ""}, "deadline": soon});
    let b = json!({"deploymentId": dep, "command": "b", "params": {"mode": "storage", "size": 10}, "deadline": soon});
    let (_, a) = api.call(Method::POST, "/v1/commands", Some(&group_token), Some(a)).await;
    let (_, b) = api.call(Method::POST, "/v1/commands", Some(&group_token), Some(b)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for created in [a, b] {
        let id = created["commandId"].as_str().unwrap();
        assert_eq!(
            api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await["state"],
            "EXPIRED"
        );
    }
    let nothing_delivered = async |why: &str| {
        let lease = Some(lease_body(&dep, 0, 30));
        let (_, none) = api.call(Method::POST, "/v1/commands/leases", Some(&token), lease).await;
        assert_eq!(none["leases"], json!([]), "{why}");
    };
    nothing_delivered("expired commands are not delivered").await;
    let past = json!({"deploymentId": dep, "command": "c", "params": {"mode": "inline", "inlineBase64": ""}, "deadline": "2000-01-01T00:00:00Z"});
    let (status, r) = api.call(Method::POST, "/v1/commands", Some(&group_token), Some(past)).await;
    assert_eq!((status, r["state"].as_str()), (201, Some("EXPIRED")), "a passed deadline: {r}");
    let id = r["commandId"].as_str().unwrap();
    assert_eq!(
        api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await["state"],
        "EXPIRED"
    );
    nothing_delivered("a command born expired is never delivered").await;
    let bad = json!({"deploymentId": dep, "command": "d", "params": {"mode": "inline", "inlineBase64": ""}, "deadline": "tomorrow"});
    let (status, r) = api.call(Method::POST, "/v1/commands", Some(&group_token), Some(bad)).await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["context"]["errors"][0]["path"], "deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_replay_and_bad_input() {
    let mut api = Api::start().await;
    let (dep, group_token, _) = running(&mut api).await;
    let body = json!({"deploymentId": dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": b64(b"1")}, "idempotencyKey": "any key / with: spaces ✓"});
    let (_, first) =
        api.call(Method::POST, "/v1/commands", Some(&group_token), Some(body.clone())).await;
    let (status, again) =
        api.call(Method::POST, "/v1/commands", Some(&group_token), Some(body)).await;
    assert_eq!(status, 201);
    assert_eq!(first["commandId"], again["commandId"], "same key, same command");
    let cases = [
        (
            json!({"deploymentId": dep, "command": "a:b", "params": {"mode": "inline", "inlineBase64": ""}}),
            400,
            "command",
        ),
        (
            json!({"deploymentId": dep, "command": "", "params": {"mode": "inline", "inlineBase64": ""}}),
            400,
            "command",
        ),
        (
            json!({"deploymentId": "dep_nope", "command": "x", "params": {"mode": "inline", "inlineBase64": ""}}),
            400,
            "deploymentId",
        ),
        (
            json!({"deploymentId": dep, "command": "x", "params": {"mode": "inline", "inlineBase64": b64(&vec![0u8; 150_001])}}),
            413,
            "150000",
        ),
        (
            json!({"deploymentId": dep, "command": "x", "params": {"mode": "inline", "inlineBase64": ""}, "targetResourceId": "nope"}),
            409,
            "nope",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, r) =
            api.call(Method::POST, "/v1/commands", Some(&group_token), Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {r}");
        assert!(r.to_string().contains(needle), "{r} lacks {needle}");
    }
    let (status, r) = api
        .call(Method::GET, "/v1/commands/cmd_0000000000000000000000000000", Some(&api.admin), None)
        .await;
    assert_eq!((status, r["code"].as_str()), (404, Some("COMMAND_NOT_FOUND")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_routes_follow_the_auth_matrix() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    let created = create(&api, &group_token, &dep, b"x").await;
    let id = created["commandId"].as_str().unwrap().to_owned();
    let (other_group, other_token) = api.group("other").await;
    let (_, other_deploy) = api.deployment(&other_group, "o").await;
    let body = json!({"deploymentId": dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": ""}});
    // create: admin and own group yes; deployment token, other group no.
    assert_eq!(
        api.call(Method::POST, "/v1/commands", Some(&api.admin), Some(body.clone())).await.0,
        201
    );
    assert_eq!(
        api.call(Method::POST, "/v1/commands", Some(&token), Some(body.clone())).await.0,
        403
    );
    assert_eq!(
        api.call(Method::POST, "/v1/commands", Some(&other_token), Some(body.clone())).await.0,
        403
    );
    assert_eq!(api.call(Method::POST, "/v1/commands", None, Some(body)).await.0, 401);
    // status: admin, own group, itself; not another deployment or group.
    for (t, want) in [
        (&api.admin, 200),
        (&group_token, 200),
        (&token, 200),
        (&other_token, 403),
        (&other_deploy, 403),
    ] {
        assert_eq!(
            api.call(Method::GET, &format!("/v1/commands/{id}"), Some(t), None).await.0,
            want
        );
    }
    // lease: itself or its group; not another deployment's token.
    assert_eq!(
        api.call(
            Method::POST,
            "/v1/commands/leases",
            Some(&other_deploy),
            Some(lease_body(&dep, 0, 30))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        api.call(
            Method::POST,
            "/v1/commands/leases",
            Some(&group_token),
            Some(lease_body(&dep, 0, 30))
        )
        .await
        .0,
        200
    );
    // respond with another deployment's token: 403; with none: 401.
    let resp = json!({"status": "error", "code": "X", "message": "x"});
    assert_eq!(
        api.call(
            Method::PUT,
            &format!("/v1/commands/{id}/response"),
            Some(&other_deploy),
            Some(resp.clone())
        )
        .await
        .0,
        403
    );
    assert_eq!(
        api.call(Method::PUT, &format!("/v1/commands/{id}/response"), None, Some(resp)).await.0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_read_and_write_command_payloads_directly() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    let created = create(&api, &group_token, &dep, b"inline params").await;
    let id = created["commandId"].as_str().unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/commands/{id}/payload", api.base);
    let got = client.get(&url).bearer_auth(&api.admin).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"inline params");
    assert_eq!(client.get(&url).bearer_auth(&group_token).send().await.unwrap().status(), 403);
    assert_eq!(client.get(&url).bearer_auth(&token).send().await.unwrap().status(), 403);
    let body =
        json!({"deploymentId": dep, "command": "big", "params": {"mode": "storage", "size": 3}});
    let (_, waiting) = api.call(Method::POST, "/v1/commands", Some(&group_token), Some(body)).await;
    let waiting = waiting["commandId"].as_str().unwrap();
    let url = format!("{}/v1/commands/{waiting}/payload", api.base);
    assert_eq!(
        client.put(&url).bearer_auth(&api.admin).body("abc").send().await.unwrap().status(),
        200
    );
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/commands/{waiting}/upload-complete"),
            Some(&api.admin),
            Some(json!({"size": 3})),
        )
        .await;
    assert_eq!(status, 200);
    let r = client
        .put(format!("{}/v1/commands/{id}/payload", api.base))
        .bearer_auth(&api.admin)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "only a command waiting for its upload takes one");
    let metrics =
        client.get(format!("{}/metrics", api.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("commands_total{event=\"created\"}"), "{metrics}");
}

/// Creates a command with `params` inline (small) or uploaded (large), leases it and answers
/// `response` inline (small) or through storage (large), checking both arrive byte for byte.
async fn round_trip(
    api: &Api,
    group_token: &str,
    token: &str,
    dep: &str,
    params: &[u8],
    response: &[u8],
) {
    let client = reqwest::Client::new();
    let large_params = params.len() > 100_000;
    let mode = if large_params {
        json!({"mode": "storage", "size": params.len()})
    } else {
        json!({"mode": "inline", "inlineBase64": b64(params)})
    };
    let body = json!({"deploymentId": dep, "command": "echo", "params": mode});
    let (status, created) =
        api.call(Method::POST, "/v1/commands", Some(group_token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["commandId"].as_str().unwrap().to_owned();
    if large_params {
        let put = created["storageUpload"]["putRequest"]["backend"]["url"].as_str().unwrap();
        assert!(client.put(put).body(params.to_vec()).send().await.unwrap().status().is_success());
        let path = format!("/v1/commands/{id}/upload-complete");
        let done = api
            .call(Method::POST, &path, Some(group_token), Some(json!({"size": params.len()})))
            .await;
        assert_eq!(done.0, 200, "{}", done.1);
    }
    let (_, leases) = api
        .call(Method::POST, "/v1/commands/leases", Some(token), Some(lease_body(dep, 5, 30)))
        .await;
    let envelope = &leases["leases"][0]["envelope"];
    assert_eq!(envelope["commandId"], id, "{leases}");
    let received = match envelope["params"]["mode"].as_str().unwrap() {
        "inline" => base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            envelope["params"]["inlineBase64"].as_str().unwrap(),
        )
        .unwrap(),
        _ => {
            let url = envelope["params"]["storageGetRequest"]["backend"]["url"].as_str().unwrap();
            client.get(url).send().await.unwrap().bytes().await.unwrap().to_vec()
        }
    };
    assert_eq!(received, params, "params arrive byte for byte ({} bytes)", params.len());
    let answer = if response.len() > 10_000 {
        let upload = envelope["responseHandling"]["storageUploadRequest"]["backend"]["url"]
            .as_str()
            .unwrap();
        assert!(
            client.put(upload).body(response.to_vec()).send().await.unwrap().status().is_success()
        );
        json!({"status": "success", "response": {"mode": "storage", "size": response.len(), "storagePutUsed": true}})
    } else {
        json!({"status": "success", "response": {"mode": "inline", "inlineBase64": b64(response)}})
    };
    let (status, r) = api
        .call(Method::PUT, &format!("/v1/commands/{id}/response"), Some(token), Some(answer))
        .await;
    assert_eq!(status, 200, "{r}");
    let done = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
    assert_eq!(done["state"], "SUCCEEDED");
    let got = match done["response"]["response"]["mode"].as_str().unwrap() {
        "inline" => base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            done["response"]["response"]["inlineBase64"].as_str().unwrap(),
        )
        .unwrap(),
        _ => {
            let url = done["response"]["response"]["storageGetRequest"]["backend"]["url"]
                .as_str()
                .unwrap();
            client.get(url).send().await.unwrap().bytes().await.unwrap().to_vec()
        }
    };
    assert_eq!(
        got,
        response,
        "the caller reads the response byte for byte ({} bytes)",
        response.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_params_by_small_and_large_responses() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    let small = b"small".to_vec();
    let large: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    for (params, response) in
        [(&small, &small), (&small, &large), (&large, &small), (&large, &large)]
    {
        round_trip(&api, &group_token, &token, &dep, params, response).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opposite_responses_leave_one_consistent_result() {
    let mut api = Api::start().await;
    let (dep, group_token, token) = running(&mut api).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            create(&api, &group_token, &dep, b"x").await["commandId"].as_str().unwrap().to_owned(),
        );
    }
    let mut leased = 0;
    while leased < ids.len() {
        let body = json!({"deploymentId": dep, "target": {"resourceId": "api", "resourceType": "container"}, "maxLeases": 100, "leaseSeconds": 30});
        let (_, got) =
            api.call(Method::POST, "/v1/commands/leases", Some(&token), Some(body)).await;
        leased += got["leases"].as_array().unwrap().len();
    }
    let answers = ids.iter().map(|id| {
        let path = format!("/v1/commands/{id}/response");
        let ok = json!({"status": "success", "response": {"mode": "inline", "inlineBase64": b64(id.as_bytes())}});
        let fail = json!({"status": "error", "code": "HANDLER_ERROR", "message": id});
        let (api, token) = (&api, &token);
        async move {
            let (a, b) = tokio::join!(
                api.call(Method::PUT, &path, Some(token), Some(ok)),
                api.call(Method::PUT, &path, Some(token), Some(fail)),
            );
            assert_eq!((a.0, b.0), (200, 200), "both answers are acknowledged: {a:?} {b:?}");
        }
    });
    futures_util::future::join_all(answers).await;
    let mut outcomes = std::collections::BTreeMap::new();
    for id in &ids {
        let done = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
        match done["state"].as_str().unwrap() {
            "SUCCEEDED" => assert_eq!(
                done["response"]["response"]["inlineBase64"],
                b64(id.as_bytes()),
                "{done}"
            ),
            "FAILED" => assert_eq!(done["response"]["message"], id.as_str(), "{done}"),
            other => panic!("{id} ended {other}: {done}"),
        }
        // Asked again, the same answer: the first response stands for good.
        let again = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
        assert_eq!(again["state"], done["state"]);
        assert_eq!(again["response"], done["response"]);
        *outcomes.entry(done["state"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    eprintln!("concurrent opposite responses: {outcomes:?}");
}

/// The same round trips with the commands KV on PostgreSQL (`[commands] kv = { service =
/// "postgres", url }`): nothing of the commands goes to the local KV, and `config check`
/// shows the URL redacted.
#[cfg(feature = "peer-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_with_the_commands_kv_on_postgresql() {
    let pg = alien_store_postgres::peer::PgPeer::start().await.unwrap();
    pg.create_database("alien").await.unwrap();
    let url = pg.url_of("alien").replace("alien@", "alien:not-shown@");
    let toml = format!("[commands]\nkv = {{ service = \"postgres\", url = \"{url}\" }}\n");
    let mut api = Api::start_configured(&toml).await;
    let (dep, group_token, token) = running(&mut api).await;
    let small = b"small".to_vec();
    let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    round_trip(&api, &group_token, &token, &dep, &small, &large).await;
    round_trip(&api, &group_token, &token, &dep, &large, &small).await;
    assert!(!api.state.join("commands_kv").exists(), "the local KV is not used");
    // The two commands' state is in PostgreSQL.
    let kv = alien_store_postgres::PostgresKv::connect(&pg.url_of("alien")).await.unwrap();
    use alien_commands::Kv as _;
    assert_eq!(kv.scan("cmd:", None, 100).await.unwrap().len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alien-manager.toml");
    std::fs::write(&file, &toml).unwrap();
    let out = common::bin().args(["config", "check", "-c"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("commands.kv.url") && !stdout.contains("not-shown"), "{stdout}");
}
