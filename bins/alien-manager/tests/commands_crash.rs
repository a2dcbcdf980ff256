//! kill -9 with 200 commands in every state and a burst of creates in flight: after a restart
//! none that was acknowledged is lost, none reports SUCCEEDED without its response, and leased
//! ones are redelivered after their lease with attempt + 1.
//! The deployment is moved to `running` through the store while the manager is stopped (the
//! deployment loop is its own issue).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Manager, Server, TEST_KEY, b64, call, running, serve};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_200_commands_in_every_state_loses_none() {
    let mut manager = Manager::start().await;
    let (dep, _, token) = running(&mut manager).await;
    let admin = manager.admin.clone();
    let state = manager.state.clone();
    let server = manager.take_server();
    let post = reqwest::Method::POST;
    let lease = |n: u32, secs: u64| json!({"deploymentId": dep, "target": {"resourceId": "api", "resourceType": "container"}, "maxLeases": n, "leaseSeconds": secs});
    let create = |i: usize, storage: bool| {
        let params = if storage {
            json!({"mode": "storage", "size": 10})
        } else {
            json!({"mode": "inline", "inlineBase64": b64(format!("p{i}").as_bytes())})
        };
        json!({"deploymentId": dep, "command": format!("c{i}"), "params": params})
    };
    let mut ids: Vec<(String, &str)> = Vec::new();
    // 40 PENDING_UPLOAD.
    for i in 0..40 {
        let (_, c) =
            call(&server, &admin, post.clone(), "/v1/commands", Some(create(i, true))).await;
        ids.push((c["commandId"].as_str().unwrap().to_owned(), "PENDING_UPLOAD"));
    }
    // 160 PENDING, then lease 120 of them: 40 stay DISPATCHED (3 s lease), 40 succeed, 40 fail.
    let mut known = std::collections::BTreeSet::new();
    for i in 40..200 {
        let (_, c) =
            call(&server, &admin, post.clone(), "/v1/commands", Some(create(i, false))).await;
        assert_eq!(c["state"], "PENDING", "{c}");
        known.insert(c["commandId"].as_str().unwrap().to_owned());
    }
    let (_, leased) =
        call(&server, &token, post.clone(), "/v1/commands/leases", Some(lease(100, 3))).await;
    let (_, more) =
        call(&server, &token, post.clone(), "/v1/commands/leases", Some(lease(20, 3))).await;
    let leases: Vec<Value> = leased["leases"]
        .as_array()
        .unwrap()
        .iter()
        .chain(more["leases"].as_array().unwrap())
        .cloned()
        .collect();
    assert_eq!(leases.len(), 120);
    for (n, l) in leases.iter().enumerate() {
        let cid = l["commandId"].as_str().unwrap().to_owned();
        let response = match n / 40 {
            0 => None,
            1 => Some(
                json!({"status": "success", "response": {"mode": "inline", "inlineBase64": b64(cid.as_bytes())}}),
            ),
            _ => Some(json!({"status": "error", "code": "HANDLER_ERROR", "message": cid})),
        };
        let expected = match n / 40 {
            0 => "DISPATCHED",
            1 => "SUCCEEDED",
            _ => "FAILED",
        };
        if let Some(response) = response {
            let (status, r) = call(
                &server,
                &token,
                reqwest::Method::PUT,
                &format!("/v1/commands/{cid}/response"),
                Some(response),
            )
            .await;
            assert_eq!(status, 200, "{r}");
        }
        ids.push((cid, expected));
    }
    let leased_ids: std::collections::BTreeSet<String> =
        leases.iter().map(|l| l["commandId"].as_str().unwrap().to_owned()).collect();
    // A burst of 300 creates; the kill lands once 30 are acknowledged, with the rest in flight.
    let client = reqwest::Client::new();
    let url = format!("{}/v1/commands", server.url());
    let burst = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (client, url, admin, burst) =
            (client.clone(), url.clone(), admin.clone(), burst.clone());
        let body = create(1000 + i, false);
        tasks.push(tokio::spawn(async move {
            if let Ok(response) = client.post(url).bearer_auth(admin).json(&body).send().await
                && response.status() == 201
                && let Ok(created) = response.json::<Value>().await
            {
                burst.lock().unwrap().push(created["commandId"].as_str().unwrap().to_owned());
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while burst.lock().unwrap().len() < 30 {
        assert!(std::time::Instant::now() < deadline, "the burst's creates are not answered");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    server.kill9();
    for task in tasks {
        let _ = task.await;
    }
    let burst = burst.lock().unwrap().clone();
    eprintln!("{} of 300 creates acknowledged when kill -9 landed", burst.len());
    assert!(burst.len() < 300, "every create was answered before the kill: none in flight");

    let server = Server::start(serve(&state, &[("ALIEN_DATABASE__ENCRYPTION_KEY", TEST_KEY)]));
    let mut seen = std::collections::BTreeMap::new();
    for (cid, expected) in &ids {
        let (status, s) =
            call(&server, &admin, reqwest::Method::GET, &format!("/v1/commands/{cid}"), None).await;
        assert_eq!(status, 200, "command {cid} was lost: {s}");
        let got = s["state"].as_str().unwrap().to_owned();
        match *expected {
            "SUCCEEDED" => {
                assert_eq!(got, "SUCCEEDED");
                assert_eq!(
                    s["response"]["response"]["inlineBase64"],
                    b64(cid.as_bytes()),
                    "SUCCEEDED keeps its response"
                );
            }
            "FAILED" => {
                assert_eq!(got, "FAILED");
                assert_eq!(s["response"]["message"], cid.as_str());
            }
            // A lease may already have run out by now (3 s): redelivered or about to be.
            "DISPATCHED" => assert!(got == "DISPATCHED" || got == "PENDING", "{cid}: {got}"),
            other => assert_eq!(got, other, "{cid}"),
        }
        if got == "SUCCEEDED" {
            assert!(s["response"].is_object(), "SUCCEEDED without a response: {s}");
        }
        *seen.entry(got).or_insert(0) += 1;
    }
    eprintln!("after kill -9 and restart: {seen:?}");
    for cid in &burst {
        let (status, s) =
            call(&server, &admin, reqwest::Method::GET, &format!("/v1/commands/{cid}"), None).await;
        assert_eq!(status, 200, "acknowledged command {cid} was lost: {s}");
        assert_eq!(s["state"], "PENDING", "{s}");
    }
    known.extend(ids.iter().map(|(c, _)| c.clone()));
    // Everything not terminal and not waiting for an upload is delivered: the 40 never leased now,
    // the 40 DISPATCHED ones once their lease ran out, with attempt 2.
    let mut redelivered = 0;
    let mut fresh = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while redelivered + fresh < 80 && std::time::Instant::now() < deadline {
        let (_, got) = call(&server, &token, post.clone(), "/v1/commands/leases", Some(json!({"deploymentId": dep, "target": {"resourceId": "api", "resourceType": "container"}, "maxLeases": 100, "leaseSeconds": 60, "waitSeconds": 2}))).await;
        for l in got["leases"].as_array().unwrap() {
            let cid = l["commandId"].as_str().unwrap();
            if !known.contains(cid) {
                // One of the burst (acknowledged or committed without its answer).
                assert_eq!(l["attempt"], 1);
                continue;
            }
            if leased_ids.contains(cid) {
                assert_eq!(l["attempt"], 2, "redelivered with attempt + 1: {l}");
                redelivered += 1;
            } else {
                assert_eq!(l["attempt"], 1);
                fresh += 1;
            }
        }
    }
    assert_eq!(
        (fresh, redelivered),
        (40, 40),
        "every pending command delivered once, every leased one redelivered"
    );
}
