//! End to end on the local platform, against the real binary and podman (feature `peer-tests`):
//! the hello-app image is pushed to the manager's own registry with skopeo, a release and a
//! deployment are created over the API, and the manager's deployment loop runs it with podman
//! until its URL answers; a command reaches the running container's receiver; a new release
//! rolls out while a client polls the URL; delete with cleanup removes every container.

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::database::TestDatabase;
use common::local::{
    containers_of, delete_with_cleanup, group, hello_app_layout, peer_dir, podman_env,
    push_hello_app, release, releases_of, stack, stack_with, volumes_of, wait_failed, wait_gone,
    wait_running_on, wait_status,
};
use common::{
    Server, TEST_KEY, b64, call, printed_admin_token, serve_deploying, serve_deploying_on,
};
use reqwest::Method;
use serde_json::{Value, json};

store_matrix! {
async fn push_mode_on_podman_runs_commands_updates_and_deletes() {
    let dir = peer_dir("e2e-local-");
    let (_copy, layout) = hello_app_layout();
    let db = TestDatabase::for_test().await;
    let mut env: Vec<(String, String)> = podman_env(dir.path());
    env.push(("ALIEN_DATABASE__ENCRYPTION_KEY".into(), TEST_KEY.into()));
    env.extend(db.env().into_iter().map(|(k, v)| (k.to_owned(), v)));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start(serve_deploying(&dir.path().join("state"), &env_refs));
    let admin = printed_admin_token(&server).unwrap();
    let image = push_hello_app(&server, &admin, &layout, "v1");

    release(&server, &admin, stack(&image, "first")).await;
    let group = group(&server, &admin, "e2e").await;
    let started = Instant::now();
    let body = json!({"name": "hello", "platform": "local", "deploymentGroupId": group});
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

    // A new release rolls out while a client polls the URL every 50 ms, watched until the
    // deployment runs the new release with only new replicas: no failed request in the span.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            // A failed request is an error answer or a dropped connection; a slow answer on a
            // loaded machine is not a failure of the rollout (10 s bounds it).
            let client =
                reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let (mut answers, mut failed) = (std::collections::BTreeMap::new(), Vec::new());
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = started.elapsed();
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let page: Value = r.json().await.unwrap_or(Value::Null);
                        let message = page["message"].as_str().unwrap_or("?").to_owned();
                        *answers.entry(message).or_insert(0u32) += 1;
                    }
                    Ok(r) => failed.push(format!("{at:?}: status {}", r.status())),
                    Err(e) => failed.push(format!("{at:?}: {e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (answers, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = release(&server, &admin, stack(&image, "second")).await;
    wait_running_on(&server, &admin, &dep, &second, Duration::from_secs(90)).await;
    let second_id = second["id"].as_str().unwrap();
    let replicas = releases_of(&env, &dep);
    assert!(
        !replicas.is_empty() && replicas.iter().all(|r| r == second_id),
        "running on {second_id} with its replicas only: {replicas:?}"
    );
    // A few more answers from the new replicas alone, then the whole span is counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answers, failed) = poller.await.unwrap();
    let answered: u32 = answers.values().sum();
    eprintln!(
        "rolling update, polled until only the new replicas ran: {answered} answered {answers:?}, {} failed",
        failed.len()
    );
    assert!(answers.get("first").is_some_and(|n| *n > 0), "the old release answered: {answers:?}");
    assert!(answers.get("second").is_some_and(|n| *n > 0), "the new one answers: {answers:?}");
    assert_eq!(answers.len(), 2, "only the two releases answered: {answers:?}");
    assert!(
        failed.is_empty(),
        "failed requests during the rollout ({answered} answered): {failed:#?}"
    );

    // A release whose containers fail their health check: update-failed naming the container,
    // the previous release still answering; retry fails the same way; a fixed release recovers.
    release(&server, &admin, stack_with(&image, "broken", true)).await;
    let failed = wait_failed(&server, &admin, &dep, "update-failed").await;
    assert_eq!(failed["error"]["resourceId"], "web", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap().contains("web"), "{failed}");
    let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(page["message"], "second", "the previous release keeps serving");
    let (status, r) =
        call(&server, &admin, Method::POST, &format!("/v1/deployments/{dep}/retry"), None).await;
    assert_eq!(status, 200, "{r}");
    wait_failed(&server, &admin, &dep, "update-failed").await;
    let third = release(&server, &admin, stack(&image, "third")).await;
    let d = wait_running_on(&server, &admin, &dep, &third, Duration::from_secs(90)).await;
    assert!(d.get("error").is_none_or(Value::is_null), "error cleared: {d}");
    let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(page["message"], "third");

    // Delete with cleanup: every container of the deployment goes.
    delete_with_cleanup(&server, &admin, &dep).await;
    wait_gone(&server, &admin, &dep, Duration::from_secs(60)).await;
    assert!(containers_of(&env, &dep).is_empty(), "containers left behind");
}
}

store_matrix! {
/// Kill -9 of the manager in the middle of a rolling update: after a restart on the same state
/// directory the update completes, with exactly the desired replicas of the new release (no
/// duplicate, no orphan of the old one); delete with cleanup then removes containers and the
/// persistent volume.
async fn a_manager_killed_mid_rollout_finishes_it_after_restart() {
    let dir = peer_dir("e2e-crash-");
    let (_copy, layout) = hello_app_layout();
    let db = TestDatabase::for_test().await;
    let mut env: Vec<(String, String)> = podman_env(dir.path());
    env.push(("ALIEN_DATABASE__ENCRYPTION_KEY".into(), TEST_KEY.into()));
    env.extend(db.env().into_iter().map(|(k, v)| (k.to_owned(), v)));
    // The heartbeat refreshes running deployments every second.
    env.push(("ALIEN_SERVER__HEARTBEAT_INTERVAL_SECS".into(), "1".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let state = dir.path().join("state");
    let server = Server::start(serve_deploying(&state, &env_refs));
    let admin = printed_admin_token(&server).unwrap();
    let image = push_hello_app(&server, &admin, &layout, "v1");
    let stateful = |message: &str| {
        let mut stack = stack(&image, message);
        let web = &mut stack["resources"]["web"]["config"];
        web["stateful"] = json!(true);
        web["persistentStorage"] = json!({"size": "1Gi", "mountPath": "/data"});
        stack
    };
    release(&server, &admin, stateful("one")).await;
    let group = group(&server, &admin, "c").await;
    let body = json!({"name": "crashy", "platform": "local", "deploymentGroupId": group});
    let (status, created) =
        call(&server, &admin, Method::POST, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    let running = wait_status(&server, &admin, &dep, "running", Duration::from_secs(60)).await;
    let url =
        running["stackState"]["resources"]["web"]["outputs"]["url"].as_str().unwrap().to_owned();
    assert_eq!(volumes_of(&env, &dep).len(), 1, "one persistent volume");

    // A second release; the manager dies as soon as the first new replica exists.
    let second = release(&server, &admin, stateful("two")).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let releases = releases_of(&env, &dep);
        if releases.contains(&second_id) {
            assert!(releases.len() > 2 || releases.iter().any(|r| r != &second_id), "{releases:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the update did not start: {releases:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, mid) =
        call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
    assert_eq!(mid["status"], "updating", "killed mid-rollout: {mid}");
    let port = server.port();
    server.kill9();
    eprintln!("killed mid-rollout with containers of releases {:?}", releases_of(&env, &dep));

    // Restarted on the same state directory and port: the update completes.
    let server = Server::start(serve_deploying_on(&state, port, &env_refs));
    let restarted = Instant::now();
    wait_running_on(&server, &admin, &dep, &second, Duration::from_secs(90)).await;
    eprintln!("update finished {:.1}s after the restart", restarted.elapsed().as_secs_f64());
    assert_eq!(
        releases_of(&env, &dep),
        vec![second_id.clone(), second_id.clone()],
        "exactly two replicas, both of the new release: {:?}",
        containers_of(&env, &dep)
    );
    let names = containers_of(&env, &dep);
    assert_eq!(names.len(), 2, "{names:?}");
    let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(page["message"], "two", "the same url serves the new release");
    assert_eq!(volumes_of(&env, &dep).len(), 1, "the volume was kept through the update");

    // A replica dies: the heartbeat finds it (refresh-failed naming the container); a retry
    // applies the release again and brings the deployment back with both replicas.
    let victim = names[0].clone();
    let kill = std::process::Command::new("podman")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["kill", &victim])
        .output()
        .unwrap();
    assert!(kill.status.success(), "{}", String::from_utf8_lossy(&kill.stderr));
    let failed = wait_failed(&server, &admin, &dep, "refresh-failed").await;
    assert_eq!(failed["error"]["resourceId"], "web", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap().contains(&victim), "{failed}");
    assert!(failed["lastHeartbeatAt"].is_string(), "{failed}");
    let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(page["message"], "two", "the other replica keeps serving");
    let (status, r) =
        call(&server, &admin, Method::POST, &format!("/v1/deployments/{dep}/retry"), None).await;
    assert_eq!(status, 200, "{r}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, d) =
            call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        let outputs = &d["stackState"]["resources"]["web"]["outputs"];
        if d["status"] == "running"
            && d["retryRequested"] == false
            && outputs["currentReplicas"] == 2
        {
            assert!(d.get("error").is_none_or(Value::is_null), "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "the retry did not heal it: {d}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(containers_of(&env, &dep).len(), 2, "{:?}", containers_of(&env, &dep));

    // Delete with cleanup removes containers and the volume.
    delete_with_cleanup(&server, &admin, &dep).await;
    wait_gone(&server, &admin, &dep, Duration::from_secs(60)).await;
    assert!(containers_of(&env, &dep).is_empty(), "containers left behind");
    assert!(volumes_of(&env, &dep).is_empty(), "volume left behind");
}
}
