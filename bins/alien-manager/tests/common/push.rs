//! Push-mode end-to-end helpers shared by the cloud tests (`aws.rs`, `gcp.rs`, `azure.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::Manager;

/// The deployment once its status is `want` (fails after a minute).
pub async fn wait_status(manager: &Manager, dep: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = manager
            .call(Method::GET, &format!("/v1/deployments/{dep}"), Some(&manager.admin), None)
            .await;
        let status = body["status"].as_str().unwrap_or_default().to_owned();
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "{dep} never became {want}: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes deployment `dep` with cleanup and waits until it is gone.
pub async fn delete_and_wait(manager: &Manager, dep: &str) {
    let (status, r) = manager
        .call(
            Method::POST,
            &format!("/v1/deployments/{dep}/delete"),
            Some(&manager.admin),
            Some(json!({"action": "cleanup"})),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {r}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = manager
            .call(Method::GET, &format!("/v1/deployments/{dep}"), Some(&manager.admin), None)
            .await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the deployment was never deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A command with 1 MiB of params through the configured commands store, answered by a receiver
/// started with `container_env` (the environment the platform gives the container): the caller
/// uploads through the presigned URL (which must start with `url_prefix`), the receiver reverses
/// the bytes, and the answer is read back through its presigned URL, byte for byte. Returns the
/// command id.
pub async fn reverse_a_large_command(
    manager: &Manager,
    group_token: &str,
    dep: &str,
    container_env: &BTreeMap<String, String>,
    url_prefix: &str,
) -> String {
    let config = alien_commands::receiver::ReceiverConfig::new(
        &container_env["ALIEN_COMMANDS_URL"],
        &container_env["ALIEN_COMMANDS_TOKEN"],
        &container_env["ALIEN_DEPLOYMENT_ID"],
        alien_core::command::wire::CommandTarget {
            resource_id: container_env["ALIEN_COMMANDS_TARGET_RESOURCE_ID"].clone(),
            resource_type: container_env["ALIEN_COMMANDS_TARGET_RESOURCE_TYPE"].clone(),
        },
    );
    let receiver = alien_commands::receiver::Receiver::new(config).handle(
        "reverse",
        |ctx: alien_commands::receiver::CommandContext| async move {
            let mut params = ctx.into_params();
            params.reverse();
            Ok::<_, alien_commands::receiver::HandlerError>(params)
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(receiver.run(async move {
        let _ = stopped.await;
    }));
    let params: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let body = json!({"deploymentId": dep, "command": "reverse", "params": {"mode": "storage", "size": params.len()}});
    let (status, created) =
        manager.call(Method::POST, "/v1/commands", Some(group_token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let command = created["commandId"].as_str().unwrap().to_owned();
    let backend = &created["storageUpload"]["putRequest"]["backend"];
    let put_url = backend["url"].as_str().unwrap();
    assert!(put_url.starts_with(url_prefix), "a presigned URL of the store: {put_url}");
    let http = reqwest::Client::new();
    // With the headers the presigned request names (Blob's `x-ms-blob-type`).
    let mut put = http.put(put_url).body(params.clone());
    for (name, value) in backend["headers"].as_object().into_iter().flatten() {
        put = put.header(name.as_str(), value.as_str().unwrap());
    }
    let r = put.send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (status, r) = manager
        .call(
            Method::POST,
            &format!("/v1/commands/{command}/upload-complete"),
            Some(group_token),
            Some(json!({"size": params.len()})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let done = manager.admin(Method::GET, &format!("/v1/commands/{command}"), None).await;
        if done["state"] == "SUCCEEDED" || done["state"] == "FAILED" {
            break done;
        }
        assert!(Instant::now() < deadline, "the command never ended: {done}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let url = done["response"]["response"]["storageGetRequest"]["backend"]["url"].as_str().unwrap();
    assert!(url.starts_with(url_prefix), "{url}");
    let got = http.get(url).send().await.unwrap().bytes().await.unwrap();
    let mut reversed = params;
    reversed.reverse();
    assert!(got.as_ref() == reversed.as_slice(), "the receiver's answer, byte for byte");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    command
}

/// Waits for `dep` to be `update-failed` and checks that its error is a `ROLLOUT_FAILED` of
/// the container `api` that names it; the deployment as read.
pub async fn expect_api_rollout_failed(manager: &Manager, dep: &str) -> Value {
    let failed = wait_status(manager, dep, "update-failed").await;
    let error = &failed["error"];
    assert_eq!(error["code"], "ROLLOUT_FAILED", "{failed}");
    assert_eq!(error["resourceId"], "api", "{failed}");
    assert!(error["message"].as_str().unwrap().contains("container api"), "{failed}");
    failed
}

/// Waits until `check` finds nothing left (its list of leftovers empty), at most 60 s.
pub async fn wait_until_nothing_left<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = check().await;
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left in {what}: {left:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
