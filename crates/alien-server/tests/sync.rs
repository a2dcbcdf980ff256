//! Pull mode over HTTP: agents register with `/v1/initialize` and report and receive their target
//! with `/v1/sync`; bad input and the auth rows change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use reqwest::Method;
use serde_json::json;
use support::{Api, fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_syncs_and_converges() {
    let api = Api::start().await;
    let (group, group_token) = api.group("edge").await;
    let init = json!({"name": "site-1"});
    let (status, first) =
        api.call(Method::POST, "/v1/initialize", Some(&group_token), Some(init.clone())).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["created"], true);
    let dep = first["deploymentId"].as_str().unwrap().to_owned();
    let token = first["token"].as_str().unwrap().to_owned();
    // Initialize again (an agent that lost its state): the same deployment and token.
    let (status, again) =
        api.call(Method::POST, "/v1/initialize", Some(&group_token), Some(init)).await;
    assert_eq!((status, again["created"].clone()), (200, json!(false)), "{again}");
    assert_eq!(
        (again["deploymentId"].as_str(), again["token"].as_str()),
        (Some(dep.as_str()), Some(token.as_str()))
    );
    let info = api.admin(Method::GET, &format!("/v1/deployments/{dep}"), None).await;
    assert_eq!(info["deploymentModel"], "pull");
    assert_eq!(info["deploymentGroupId"], group);

    // No release yet: nothing to run.
    let (status, synced) =
        api.call(Method::POST, "/v1/sync", Some(&token), Some(json!({"deploymentId": dep}))).await;
    assert_eq!(status, 200, "{synced}");
    assert!(synced.get("target").is_none(), "{synced}");
    assert!(synced["commandsUrl"].as_str().unwrap().ends_with("/v1"));

    let release = api
        .admin(
            Method::POST,
            "/v1/releases",
            Some(json!({"stack": {"local": fixture("valid-web.json")}})),
        )
        .await;
    let rel = release["id"].as_str().unwrap().to_owned();
    let (_, synced) =
        api.call(Method::POST, "/v1/sync", Some(&token), Some(json!({"deploymentId": dep}))).await;
    let target = &synced["target"];
    assert_eq!(target["releaseId"], rel.as_str(), "{synced}");
    assert!(target["stack"]["resources"]["api"].is_object(), "{target}");
    assert_eq!(target["config"]["deploymentName"], "site-1");
    assert_eq!(target["config"]["registry"]["password"], token.as_str());

    // The agent applies it and reports progress, then success: the target disappears.
    let report = |status: &str, current: Option<&str>| {
        let mut state =
            json!({"status": status, "platform": "local", "stackState": {"resources": {}}});
        if let Some(r) = current {
            state["currentRelease"] = json!({"releaseId": r});
        }
        json!({"deploymentId": dep, "currentState": state})
    };
    let (status, synced) =
        api.call(Method::POST, "/v1/sync", Some(&token), Some(report("provisioning", None))).await;
    assert_eq!(status, 200, "{synced}");
    assert_eq!(synced["currentState"]["status"], "provisioning");
    assert!(synced["target"].is_object(), "still to run");
    let (_, synced) =
        api.call(Method::POST, "/v1/sync", Some(&token), Some(report("running", Some(&rel)))).await;
    assert_eq!(synced["currentState"]["status"], "running", "{synced}");
    assert!(synced.get("target").is_none(), "runs its target: {synced}");
    let info = api.admin(Method::GET, &format!("/v1/deployments/{dep}"), None).await;
    assert_eq!(info["currentReleaseId"], rel.as_str());
    assert!(info["lastHeartbeatAt"].is_string(), "each sync is a heartbeat: {info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_refuses_bad_input_and_foreign_tokens() {
    let api = Api::start().await;
    let (group, group_token) = api.group("edge").await;
    let (_, other_token) = api.group("other").await;
    let (_, created) = api
        .call(Method::POST, "/v1/initialize", Some(&group_token), Some(json!({"name": "a"})))
        .await;
    let dep = created["deploymentId"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    for (body, want, needle) in [
        (json!({"name": "Bad Name"}), 400, "name"),
        (json!({"name": "k", "platform": "aws"}), 400, "pull mode"),
        (json!({"name": "k", "extra": 1}), 400, "extra"),
    ] {
        let (status, r) =
            api.call(Method::POST, "/v1/initialize", Some(&group_token), Some(body)).await;
        assert_eq!(status, want, "{r}");
        assert!(r.to_string().contains(needle), "{r} lacks {needle}");
    }
    let (status, _) =
        api.call(Method::POST, "/v1/initialize", Some(&token), Some(json!({"name": "b"}))).await;
    assert_eq!(status, 403, "a deployment token does not register agents");
    let (status, r) = api
        .call(Method::POST, "/v1/initialize", Some(&api.admin), Some(json!({"name": "b"})))
        .await;
    assert_eq!(status, 400, "admins name the group: {r}");
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/initialize",
            Some(&api.admin),
            Some(json!({"name": "b", "deploymentGroupId": group})),
        )
        .await;
    assert_eq!(status, 201);
    // A push deployment of the same name is not taken over.
    api.deployment(&group, "pushy").await;
    let (status, r) = api
        .call(Method::POST, "/v1/initialize", Some(&group_token), Some(json!({"name": "pushy"})))
        .await;
    assert_eq!(status, 409, "{r}");

    let sync = json!({"deploymentId": dep});
    assert_eq!(
        api.call(Method::POST, "/v1/sync", Some(&other_token), Some(sync.clone())).await.0,
        403
    );
    assert_eq!(api.call(Method::POST, "/v1/sync", None, Some(sync.clone())).await.0, 401);
    assert_eq!(api.call(Method::POST, "/v1/sync", Some(&group_token), Some(sync)).await.0, 200);
    let (push, _) = api.deployment(&group, "pushed").await;
    let (status, r) = api
        .call(Method::POST, "/v1/sync", Some(&api.admin), Some(json!({"deploymentId": push})))
        .await;
    assert_eq!(status, 409, "push deployments are not synced: {r}");
    let wrong =
        json!({"deploymentId": dep, "currentState": {"status": "running", "platform": "aws"}});
    assert_eq!(api.call(Method::POST, "/v1/sync", Some(&token), Some(wrong)).await.0, 400);
    let manager_only =
        json!({"deploymentId": dep, "currentState": {"status": "stale", "platform": "local"}});
    let (status, r) = api.call(Method::POST, "/v1/sync", Some(&token), Some(manager_only)).await;
    assert_eq!(status, 409, "an agent cannot report a manager-only status: {r}");
    let missing = json!({"deploymentId": "dep_0000000000000000000000000000"});
    assert_eq!(api.call(Method::POST, "/v1/sync", Some(&api.admin), Some(missing)).await.0, 404);
}
