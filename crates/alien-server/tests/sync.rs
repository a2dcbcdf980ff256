//! Pull mode over HTTP: agents register with `/v1/initialize` and report and receive their target
//! with `/v1/sync`; external push drivers lease deployments with `/v1/sync/acquire|reconcile|
//! renew|release`; bad input and the auth rows change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};
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
    assert_eq!(target["config"]["registry"]["plainHttp"], true, "the base URL is http://");

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
    assert_eq!(status, 409, "admins name the group when several exist: {r}");
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
    assert_eq!(api.call(Method::POST, "/v1/sync", Some(&token), Some(wrong)).await.0, 409);
    let manager_only =
        json!({"deploymentId": dep, "currentState": {"status": "stale", "platform": "local"}});
    let (status, r) = api.call(Method::POST, "/v1/sync", Some(&token), Some(manager_only)).await;
    assert_eq!(status, 409, "an agent cannot report a manager-only status: {r}");
    let missing = json!({"deploymentId": "dep_0000000000000000000000000000"});
    assert_eq!(api.call(Method::POST, "/v1/sync", Some(&api.admin), Some(missing)).await.0, 404);
}

// ---- external push drivers: the lease API ----

/// `POST /v1/sync/<op>` with `token`.
async fn lease(api: &Api, op: &str, token: &str, body: Value) -> (u16, Value) {
    api.call(Method::POST, &format!("/v1/sync/{op}"), Some(token), Some(body)).await
}

/// The deployment ids of an acquire's answer.
fn leased(body: &Value) -> BTreeSet<String> {
    body["leases"]
        .as_array()
        .unwrap_or_else(|| panic!("no leases in {body}"))
        .iter()
        .map(|l| l["deployment"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn ids<const N: usize>(ids: [&String; N]) -> BTreeSet<String> {
    ids.into_iter().cloned().collect()
}

/// A push deployment named `name` in `group` on `platform`.
async fn push_deployment(api: &Api, group: &str, name: &str, platform: &str) -> String {
    let body = json!({"name": name, "platform": platform, "deploymentGroupId": group});
    let created = api.admin(Method::POST, "/v1/deployments", Some(body)).await;
    created["deployment"]["id"].as_str().unwrap().to_owned()
}

async fn release_for(api: &Api, platforms: &[&str]) -> String {
    let stack: serde_json::Map<String, Value> =
        platforms.iter().map(|p| ((*p).to_owned(), fixture("valid-web.json"))).collect();
    let release = api.admin(Method::POST, "/v1/releases", Some(json!({"stack": stack}))).await;
    release["id"].as_str().unwrap().to_owned()
}

async fn events(api: &Api, id: &str) -> Value {
    api.admin(Method::GET, &format!("/v1/deployments/{id}/events"), None).await
}

async fn deployment(api: &Api, id: &str) -> Value {
    api.admin(Method::GET, &format!("/v1/deployments/{id}"), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_acquire_due_push_deployments_by_filter() {
    let api = Api::start().await;
    let rel = release_for(&api, &["local", "aws"]).await;
    let (g, g_token) = api.group("g").await;
    let (h, _) = api.group("h").await;
    let l1 = push_deployment(&api, &g, "l1", "local").await;
    let l2 = push_deployment(&api, &g, "l2", "local").await;
    let a1 = push_deployment(&api, &g, "a1", "aws").await;
    let l3 = push_deployment(&api, &h, "l3", "local").await;
    // A pull deployment is never leased: its agent drives it.
    let (status, _) = api
        .call(Method::POST, "/v1/initialize", Some(&g_token), Some(json!({"name": "agent"})))
        .await;
    assert_eq!(status, 201);

    let before = chrono::Utc::now();
    let (status, by_platform) =
        lease(&api, "acquire", &api.admin, json!({"session": "aws-driver", "platforms": ["aws"]}))
            .await;
    assert_eq!(status, 200, "{by_platform}");
    assert_eq!(leased(&by_platform), ids([&a1]));
    let first = &by_platform["leases"][0];
    assert_eq!(first["deployment"]["status"], "pending");
    assert_eq!(first["target"]["releaseId"], rel.as_str(), "{first}");
    assert!(first["target"]["stack"]["resources"]["api"].is_object(), "{first}");
    assert_eq!(first["target"]["config"]["deploymentName"], "a1");
    let expires: chrono::DateTime<chrono::Utc> =
        first["leaseExpiresAt"].as_str().unwrap().parse().unwrap();
    let ttl = expires - before;
    assert!(ttl > chrono::Duration::seconds(290) && ttl < chrono::Duration::seconds(310), "{ttl}");

    let (status, named) =
        lease(&api, "acquire", &api.admin, json!({"session": "named", "deploymentIds": [l3]}))
            .await;
    assert_eq!((status, leased(&named)), (200, ids([&l3])), "{named}");
    // A group token, unfiltered: its own group's due push deployments that nobody holds.
    let (status, own) = lease(&api, "acquire", &g_token, json!({"session": "group-driver"})).await;
    assert_eq!((status, leased(&own)), (200, ids([&l1, &l2])), "{own}");
    // Everything due is held now: an admin session without filters gets nothing.
    let (status, none) = lease(&api, "acquire", &api.admin, json!({"session": "late"})).await;
    assert_eq!((status, leased(&none)), (200, BTreeSet::new()), "{none}");

    // `limit` bounds one acquire.
    for (token, session, id) in [(&g_token, "group-driver", &l1), (&g_token, "group-driver", &l2)] {
        let body = json!({"session": session, "deploymentId": id});
        assert_eq!(lease(&api, "release", token, body).await.0, 200);
    }
    let (status, one) =
        lease(&api, "acquire", &api.admin, json!({"session": "late", "limit": 1})).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(leased(&one).len(), 1, "{one}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_never_get_the_same_deployment() {
    let api = Api::start().await;
    release_for(&api, &["local"]).await;
    let (g, g_token) = api.group("fleet").await;
    let mut all = BTreeSet::new();
    for i in 0..12 {
        all.insert(push_deployment(&api, &g, &format!("d{i}"), "local").await);
    }
    let mut owners: BTreeMap<String, &str> = BTreeMap::new();
    loop {
        let body = |s: &str| json!({"session": s, "limit": 2});
        let (a, b, c) = tokio::join!(
            lease(&api, "acquire", &api.admin, body("a")),
            lease(&api, "acquire", &api.admin, body("b")),
            lease(&api, "acquire", &g_token, body("c")),
        );
        let mut got = 0;
        for (session, (status, body)) in [("a", a), ("b", b), ("c", c)] {
            assert_eq!(status, 200, "{body}");
            for id in leased(&body) {
                got += 1;
                if let Some(first) = owners.insert(id.clone(), session) {
                    panic!("{id} leased to {first} and to {session}");
                }
            }
        }
        if got == 0 {
            break;
        }
    }
    assert_eq!(owners.keys().cloned().collect::<BTreeSet<_>>(), all);

    // A session is its token's: the same name under another token holds nothing.
    let (id, holder) = owners.iter().next().unwrap();
    let holder_token = if *holder == "c" { &g_token } else { &api.admin };
    let other_token = if *holder == "c" { &api.admin } else { &g_token };
    let body = json!({"session": holder, "deploymentId": id});
    let (status, r) = lease(&api, "renew", other_token, body.clone()).await;
    assert_eq!(status, 409, "{r}");
    assert_eq!(lease(&api, "renew", holder_token, body).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_loop_and_drivers_never_share_a_lease() {
    use alien_store::DeploymentStore as _;
    let api = Api::start().await;
    release_for(&api, &["local"]).await;
    let (g, _) = api.group("g").await;
    let driven = push_deployment(&api, &g, "driven", "local").await;
    let (status, r) =
        lease(&api, "acquire", &api.admin, json!({"session": "drv", "deploymentIds": [driven]}))
            .await;
    assert_eq!((status, leased(&r)), (200, ids([&driven])), "{r}");
    let looped = push_deployment(&api, &g, "looped", "local").await;
    // The manager's loop (owner `manager-...`) takes what is free, never what the session holds.
    let now = chrono::Utc::now();
    let taken = api
        .store
        .acquire_due("manager-test", now, 100, alien_store::LEASE_STALE_AFTER)
        .await
        .unwrap();
    let taken: BTreeSet<String> = taken.into_iter().map(|d| d.id.to_string()).collect();
    assert_eq!(taken, ids([&looped]));
    // ... and a driver never gets what the loop holds.
    let (status, r) = lease(&api, "acquire", &api.admin, json!({"session": "drv2"})).await;
    assert_eq!((status, leased(&r)), (200, BTreeSet::new()), "{r}");
    let body = json!({"session": "drv", "deploymentId": looped});
    assert_eq!(lease(&api, "renew", &api.admin, body).await.0, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_moves_a_deployment_only_under_the_lease() {
    let api = Api::start().await;
    let rel = release_for(&api, &["local"]).await;
    let (g, _) = api.group("g").await;
    let dep = push_deployment(&api, &g, "d", "local").await;
    let report = |session: &str, status: &str, current: Option<&str>, progress: u32| {
        let mut state = json!({"status": status, "platform": "local",
            "stackState": {"resources": {"api": {"progress": progress}}}});
        if let Some(r) = current {
            state["currentRelease"] = json!({"releaseId": r});
        }
        json!({"deploymentId": dep, "session": session, "state": state})
    };
    let untouched = deployment(&api, &dep).await;
    let untouched_events = events(&api, &dep).await;

    // Without the lease: 409, and nothing changes.
    let (status, r) =
        lease(&api, "reconcile", &api.admin, report("drv", "running", Some(&rel), 1)).await;
    assert_eq!(status, 409, "{r}");
    assert_eq!(r["code"], "CONFLICT");
    assert!(r["message"].as_str().unwrap().contains("does not hold the lease"), "{r}");
    assert_eq!(deployment(&api, &dep).await, untouched);
    assert_eq!(events(&api, &dep).await, untouched_events);

    let (status, r) = lease(&api, "acquire", &api.admin, json!({"session": "drv"})).await;
    assert_eq!((status, leased(&r)), (200, ids([&dep])), "{r}");
    // Another session, or a report of the wrong platform, still changes nothing.
    let (status, r) =
        lease(&api, "reconcile", &api.admin, report("thief", "running", Some(&rel), 1)).await;
    assert_eq!(status, 409, "{r}");
    let mut wrong = report("drv", "provisioning", None, 1);
    wrong["state"]["platform"] = json!("aws");
    let (status, r) = lease(&api, "reconcile", &api.admin, wrong).await;
    assert_eq!(status, 409, "{r}");
    assert!(r.to_string().contains("state.platform"), "{r}");
    let (status, r) = lease(&api, "reconcile", &api.admin, report("drv", "stale", None, 1)).await;
    assert_eq!(status, 409, "a manager-only status cannot be reported: {r}");
    assert_eq!(deployment(&api, &dep).await, untouched);

    // With the lease: pending -> provisioning, progress within provisioning, then running.
    let (status, r) =
        lease(&api, "reconcile", &api.admin, report("drv", "provisioning", None, 1)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["deployment"]["status"], "provisioning");
    assert_eq!(r["target"]["releaseId"], rel.as_str(), "still to apply: {r}");
    assert!(r["leaseExpiresAt"].is_string(), "{r}");
    let (status, r) =
        lease(&api, "reconcile", &api.admin, report("drv", "provisioning", None, 2)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["deployment"]["status"], "provisioning");
    assert_eq!(r["deployment"]["stackState"]["resources"]["api"]["progress"], 2, "{r}");
    let (status, r) =
        lease(&api, "reconcile", &api.admin, report("drv", "running", Some(&rel), 3)).await;
    assert_eq!(status, 200, "{r}");
    assert!(r.get("target").is_none(), "runs its desired release: {r}");
    let after = deployment(&api, &dep).await;
    assert_eq!(after["status"], "running");
    assert_eq!(after["currentReleaseId"], rel.as_str());
    assert_eq!(after["stackState"], json!({"resources": {"api": {"progress": 3}}}));
    let history = events(&api, &dep).await;
    let newest = &history["items"][0];
    assert_eq!(
        (newest["from"].as_str(), newest["to"].as_str()),
        (Some("provisioning"), Some("running"))
    );
    assert_eq!(newest["reason"], "reconcile");
    assert_eq!(newest["detail"]["session"], "drv", "{newest}");
    // The session still holds the lease until it releases it.
    let body = json!({"session": "drv", "deploymentId": dep});
    assert_eq!(lease(&api, "release", &api.admin, body).await.0, 200);
    let (status, r) = lease(&api, "acquire", &api.admin, json!({"session": "next"})).await;
    assert_eq!((status, leased(&r)), (200, BTreeSet::new()), "running: nothing to do: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_deletes_a_deployment_it_leased() {
    let api = Api::start().await;
    let rel = release_for(&api, &["local"]).await;
    let (g, _) = api.group("g").await;
    let dep = push_deployment(&api, &g, "d", "local").await;
    let state = |status: &str| json!({"status": status, "platform": "local", "currentRelease": {"releaseId": rel}});
    lease(&api, "acquire", &api.admin, json!({"session": "drv"})).await;
    let body = json!({"session": "drv", "deploymentId": dep, "state": state("running")});
    assert_eq!(lease(&api, "reconcile", &api.admin, body).await.0, 200);
    let body = json!({"session": "drv", "deploymentId": dep});
    assert_eq!(lease(&api, "release", &api.admin, body).await.0, 200);

    let delete = json!({"action": "cleanup"});
    api.admin(Method::POST, &format!("/v1/deployments/{dep}/delete"), Some(delete)).await;
    let (status, r) = lease(&api, "acquire", &api.admin, json!({"session": "drv"})).await;
    assert_eq!((status, leased(&r)), (200, ids([&dep])), "{r}");
    assert_eq!(r["leases"][0]["deployment"]["status"], "delete-pending");
    assert!(r["leases"][0].get("target").is_none(), "nothing to apply: {r}");
    for status in ["deleting", "deleted"] {
        let body = json!({"session": "drv", "deploymentId": dep, "state": state(status)});
        let (code, r) = lease(&api, "reconcile", &api.admin, body).await;
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["deployment"]["status"], status);
    }
    let (status, _) =
        api.call(Method::GET, &format!("/v1/deployments/{dep}"), Some(&api.admin), None).await;
    assert_eq!(status, 404, "a finished deletion removes the deployment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_and_release_end_a_lease_for_good() {
    let api = Api::start().await;
    release_for(&api, &["local"]).await;
    let (g, _) = api.group("g").await;
    let dep = push_deployment(&api, &g, "d", "local").await;
    let held = json!({"session": "a", "deploymentId": dep});
    let (status, r) = lease(&api, "acquire", &api.admin, json!({"session": "a"})).await;
    assert_eq!((status, leased(&r)), (200, ids([&dep])), "{r}");
    let (status, r) = lease(&api, "renew", &api.admin, held.clone()).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["deploymentId"], dep.as_str());
    assert!(r["leaseExpiresAt"].is_string(), "{r}");

    // A release delayed too far is refused, and the lease stays.
    let mut too_late = held.clone();
    too_late["nextStepAfterSecs"] = json!(86_401);
    let (status, r) = lease(&api, "release", &api.admin, too_late).await;
    assert_eq!(status, 400, "{r}");
    assert!(r.to_string().contains("nextStepAfterSecs"), "{r}");
    assert_eq!(lease(&api, "renew", &api.admin, held.clone()).await.0, 200);

    assert_eq!(lease(&api, "release", &api.admin, held.clone()).await.0, 200);
    let (status, r) = lease(&api, "renew", &api.admin, held.clone()).await;
    assert_eq!(status, 409, "renew after release: {r}");
    assert!(r["hint"].as_str().unwrap().contains("/v1/sync/acquire"), "{r}");
    assert_eq!(lease(&api, "release", &api.admin, held.clone()).await.0, 409);

    // Another session takes it over; released with a delay, it is not due before its time.
    let (status, r) = lease(&api, "acquire", &api.admin, json!({"session": "b"})).await;
    assert_eq!((status, leased(&r)), (200, ids([&dep])), "{r}");
    assert_eq!(lease(&api, "renew", &api.admin, held).await.0, 409, "the old session lost it");
    let delayed = json!({"session": "b", "deploymentId": dep, "nextStepAfterSecs": 600});
    assert_eq!(lease(&api, "release", &api.admin, delayed).await.0, 200);
    let (status, r) = lease(&api, "acquire", &api.admin, json!({"session": "c"})).await;
    assert_eq!((status, leased(&r)), (200, BTreeSet::new()), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_api_refuses_bad_input_and_foreign_tokens() {
    let api = Api::start().await;
    release_for(&api, &["local"]).await;
    let (g, g_token) = api.group("g").await;
    let (_, other_token) = api.group("other").await;
    let dep = push_deployment(&api, &g, "d", "local").await;
    let dep_token = {
        let created = api
            .admin(
                Method::POST,
                "/v1/deployments",
                Some(json!({"name": "with-token", "platform": "local", "deploymentGroupId": g})),
            )
            .await;
        created["token"].as_str().unwrap().to_owned()
    };
    let (_, agent) = api
        .call(Method::POST, "/v1/initialize", Some(&g_token), Some(json!({"name": "agent"})))
        .await;
    let pull = agent["deploymentId"].as_str().unwrap().to_owned();
    let release_id = api.admin(Method::GET, "/v1/releases/latest", None).await["id"].clone();
    let unknown = "dep_0000000000000000000000000000";

    for (body, field) in [
        (json!({"session": ""}), "session"),
        (json!({"session": "has space"}), "session"),
        (json!({"session": "x".repeat(65)}), "session"),
        (json!({}), "session"),
        (json!({"session": "s", "limit": 0}), "limit"),
        (json!({"session": "s", "limit": 101}), "limit"),
        (json!({"session": "s", "limit": -1}), "limit"),
        (json!({"session": "s", "platforms": []}), "platforms"),
        (json!({"session": "s", "platforms": ["kubernetes"]}), "platforms[0]"),
        (json!({"session": "s", "platforms": ["mars"]}), "platforms"),
        (json!({"session": "s", "deploymentIds": []}), "deploymentIds"),
        (json!({"session": "s", "deploymentIds": [release_id]}), "deploymentIds[0]"),
        (json!({"session": "s", "extra": 1}), "extra"),
    ] {
        let (status, r) = lease(&api, "acquire", &api.admin, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {r}");
        assert!(r.to_string().contains(field), "{body} -> {r} does not name {field}");
    }
    // What exists and how it runs is no question of the request's shape: 404 and 409.
    for (body, want, field) in [
        (json!({"session": "s", "deploymentIds": [dep, unknown]}), 404, "deploymentIds[1]"),
        (json!({"session": "s", "deploymentIds": [pull]}), 409, "deploymentIds[0]"),
    ] {
        let (status, r) = lease(&api, "acquire", &api.admin, body.clone()).await;
        assert_eq!(status, want, "{body} -> {r}");
        assert!(r.to_string().contains(field), "{body} -> {r} does not name {field}");
    }
    for op in ["reconcile", "renew", "release"] {
        let state = json!({"status": "provisioning", "platform": "local"});
        for (body, want, needle) in [
            (json!({"session": "", "deploymentId": dep, "state": state}), 400, "session"),
            (
                json!({"session": "s", "deploymentId": release_id, "state": state}),
                400,
                "deploymentId",
            ),
            (
                json!({"session": "s", "deploymentId": unknown, "state": state}),
                404,
                "DEPLOYMENT_NOT_FOUND",
            ),
            (json!({"session": "s", "deploymentId": pull, "state": state}), 409, "pull deployment"),
        ] {
            let mut body = body;
            if op != "reconcile" {
                body.as_object_mut().unwrap().remove("state");
            }
            let (status, r) = lease(&api, op, &api.admin, body.clone()).await;
            assert_eq!(status, want, "{op} {body} -> {r}");
            assert!(r.to_string().contains(needle), "{op} {body} -> {r} lacks {needle}");
        }
    }

    // Deployment tokens never drive; another group's token does not reach this group.
    let named = json!({"session": "s", "deploymentIds": [dep]});
    for (op, body) in [
        ("acquire", json!({"session": "s"})),
        ("acquire", named.clone()),
        ("renew", json!({"session": "s", "deploymentId": dep})),
        ("release", json!({"session": "s", "deploymentId": dep})),
        (
            "reconcile",
            json!({"session": "s", "deploymentId": dep,
            "state": {"status": "provisioning", "platform": "local"}}),
        ),
    ] {
        let (status, r) = lease(&api, op, &dep_token, body.clone()).await;
        assert_eq!(status, 403, "deployment token, {op}: {r}");
        assert_eq!(r["code"], "FORBIDDEN");
        if body.get("deploymentId").is_some() || body.get("deploymentIds").is_some() {
            assert_eq!(lease(&api, op, &other_token, body).await.0, 403, "other group, {op}");
        }
    }
    let (status, _) =
        api.call(Method::POST, "/v1/sync/acquire", None, Some(json!({"session": "s"}))).await;
    assert_eq!(status, 401);

    // None of it changed anything: both push deployments are still pending and free.
    let (status, r) = lease(&api, "acquire", &g_token, json!({"session": "s"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(leased(&r).len(), 2, "{r}");
    assert!(leased(&r).contains(&dep));
    assert_eq!(deployment(&api, &dep).await["status"], "pending");
    // The other group's token acquires nothing of this group.
    let body = json!({"session": "s", "deploymentId": dep});
    assert_eq!(lease(&api, "release", &g_token, body).await.0, 200);
    let (status, r) = lease(&api, "acquire", &other_token, json!({"session": "s"})).await;
    assert_eq!((status, leased(&r)), (200, BTreeSet::new()), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_carries_out_redeploys_and_retries() {
    use alien_core::{DeploymentEvent, Id};
    use alien_store::{DeploymentPatch, DeploymentStore as _};
    let api = Api::start().await;
    let rel = release_for(&api, &["local"]).await;
    let (g, _) = api.group("g").await;
    let dep = push_deployment(&api, &g, "d", "local").await;
    let report = |status: &str| {
        let state = json!({"status": status, "platform": "local",
            "currentRelease": {"releaseId": rel}});
        json!({"session": "drv", "deploymentId": dep, "state": state})
    };
    let done = json!({"session": "drv", "deploymentId": dep});
    let acquire = || lease(&api, "acquire", &api.admin, json!({"session": "drv"}));
    assert_eq!(leased(&acquire().await.1), ids([&dep]));
    assert_eq!(lease(&api, "reconcile", &api.admin, report("running")).await.0, 200);
    assert_eq!(lease(&api, "release", &api.admin, done.clone()).await.0, 200);

    // Redeploy: update-pending; handed to the driver with its target, the update begins
    // (updating); the driver updates, and it is done (not due any more).
    api.admin(Method::POST, &format!("/v1/deployments/{dep}/redeploy"), None).await;
    let (_, r) = acquire().await;
    assert_eq!(r["leases"][0]["deployment"]["status"], "updating", "{r}");
    assert_eq!(r["leases"][0]["target"]["releaseId"], rel.as_str(), "{r}");
    for status in ["updating", "running"] {
        let (code, r) = lease(&api, "reconcile", &api.admin, report(status)).await;
        assert_eq!((code, r["deployment"]["status"].as_str()), (200, Some(status)), "{r}");
    }
    assert_eq!(lease(&api, "release", &api.admin, done.clone()).await.0, 200);
    assert_eq!(deployment(&api, &dep).await["retryRequested"], false);
    assert_eq!(leased(&acquire().await.1), BTreeSet::new());

    // A retry of a failed refresh: running again with a retry to carry out; reporting running
    // (the same status) ends it.
    let id = Id::parse_any(&dep).unwrap();
    let failed = DeploymentPatch { reason: "test".into(), ..Default::default() };
    api.store.transition(&id, DeploymentEvent::RefreshFailed, failed).await.unwrap();
    api.admin(Method::POST, &format!("/v1/deployments/{dep}/retry"), None).await;
    let (_, r) = acquire().await;
    assert_eq!(r["leases"][0]["deployment"]["status"], "running", "{r}");
    assert_eq!(r["leases"][0]["deployment"]["retryRequested"], true, "{r}");
    let (status, r) = lease(&api, "reconcile", &api.admin, report("running")).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["deployment"]["retryRequested"], false, "{r}");
    assert!(r.get("target").is_none(), "{r}");
    assert_eq!(lease(&api, "release", &api.admin, done).await.0, 200);
    assert_eq!(leased(&acquire().await.1), BTreeSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_arriving_while_a_driver_provisions_is_not_lost() {
    let api = Api::start().await;
    let v1 = release_for(&api, &["local"]).await;
    let (g, _) = api.group("g").await;
    let dep = push_deployment(&api, &g, "d", "local").await;
    let report = |status: &str| {
        let state = json!({"status": status, "platform": "local",
            "currentRelease": {"releaseId": v1}});
        json!({"session": "drv", "deploymentId": dep, "state": state})
    };
    lease(&api, "acquire", &api.admin, json!({"session": "drv"})).await;
    assert_eq!(lease(&api, "reconcile", &api.admin, report("provisioning")).await.0, 200);
    let v2 = release_for(&api, &["local"]).await;
    // The driver finishes v1: the deployment runs it, and is updating to v2 at once (its
    // target in the answer).
    let (status, r) = lease(&api, "reconcile", &api.admin, report("running")).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["deployment"]["status"], "updating", "{r}");
    assert_eq!(r["deployment"]["currentReleaseId"], v1.as_str());
    assert_eq!(r["target"]["releaseId"], v2.as_str(), "{r}");
}

/// An agent's failure is reported once; a user's retry (or redeploy) is not undone by the
/// agent's next, older report of that failure: the answer carries the target again until the
/// agent reports working on it. A redeploy of the release it already runs reaches it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_old_failure_report_does_not_undo_a_retry_or_redeploy() {
    let api = Api::start().await;
    let (_, group_token) = api.group("edge").await;
    let (_, init) = api
        .call(Method::POST, "/v1/initialize", Some(&group_token), Some(json!({"name": "s"})))
        .await;
    let dep = init["deploymentId"].as_str().unwrap().to_owned();
    let token = init["token"].as_str().unwrap().to_owned();
    let rel = release_for(&api, &["local"]).await;
    let sync = |state: Value| {
        let body = json!({"deploymentId": dep, "currentState": state});
        let (api, token) = (&api, token.clone());
        async move { api.call(Method::POST, "/v1/sync", Some(&token), Some(body)).await }
    };
    let report = |status: &str, current: Option<&str>| {
        let mut state = json!({"status": status, "platform": "local"});
        if let Some(release) = current {
            state["currentRelease"] = json!({"releaseId": release});
        }
        if status.ends_with("failed") {
            state["error"] =
                json!({"code": "HEALTH_CHECK_FAILED", "message": "api: 500", "resourceId": "api"});
        }
        state
    };
    let (status, _) = sync(report("provisioning", None)).await;
    assert_eq!(status, 200);
    let (_, answer) = sync(report("provisioning-failed", None)).await;
    assert_eq!(answer["currentState"]["status"], "provisioning-failed", "{answer}");
    assert_eq!(deployment(&api, &dep).await["error"]["resourceId"], "api");

    // Retry: the agent's next report still says failed; the retry stands and the target comes.
    api.admin(Method::POST, &format!("/v1/deployments/{dep}/retry"), None).await;
    let (status, answer) = sync(report("provisioning-failed", None)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["currentState"]["status"], "provisioning", "{answer}");
    assert_eq!(answer["target"]["releaseId"], rel.as_str(), "{answer}");
    assert_eq!(deployment(&api, &dep).await["retryRequested"], true);
    // The agent takes it up, then succeeds: the retry is spent.
    let (_, answer) = sync(report("provisioning", None)).await;
    assert_eq!(answer["currentState"]["status"], "provisioning");
    assert_eq!(deployment(&api, &dep).await["retryRequested"], false);
    let (_, answer) = sync(report("running", Some(&rel))).await;
    assert_eq!(answer["currentState"]["status"], "running");
    assert!(answer.get("target").is_none(), "it runs its target: {answer}");

    // Redeploy of the release it runs: the target comes back until the agent reports updating.
    api.admin(Method::POST, &format!("/v1/deployments/{dep}/redeploy"), None).await;
    let (_, answer) = sync(report("running", Some(&rel))).await;
    assert_eq!(answer["target"]["releaseId"], rel.as_str(), "redeploy reaches it: {answer}");
    let (_, answer) = sync(report("updating", Some(&rel))).await;
    assert_eq!(answer["currentState"]["status"], "updating");
    let (_, answer) = sync(report("running", Some(&rel))).await;
    assert!(answer.get("target").is_none(), "done: {answer}");
    assert_eq!(deployment(&api, &dep).await["retryRequested"], false);
    // An agent that applied it at once and reports `running` on it spends the redeploy too (no
    // endless re-apply).
    api.admin(Method::POST, &format!("/v1/deployments/{dep}/redeploy"), None).await;
    let (_, answer) = sync(report("running", Some(&rel))).await;
    assert_eq!(answer["target"]["releaseId"], rel.as_str(), "{answer}");
    let (_, answer) = sync(report("running", Some(&rel))).await;
    assert!(answer.get("target").is_none(), "spent: {answer}");
    assert_eq!(answer["currentState"]["status"], "running");
    assert_eq!(deployment(&api, &dep).await["retryRequested"], false);
}

/// Deleting a pull deployment: the agent learns it on its sync, reports `deleting` then
/// `deleted`, and the row goes with its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reporting_deleted_removes_its_deployment() {
    let api = Api::start().await;
    let (_, group_token) = api.group("edge").await;
    let (_, init) = api
        .call(Method::POST, "/v1/initialize", Some(&group_token), Some(json!({"name": "gone"})))
        .await;
    let dep = init["deploymentId"].as_str().unwrap().to_owned();
    let token = init["token"].as_str().unwrap().to_owned();
    let rel = release_for(&api, &["local"]).await;
    let sync = |status: &str| {
        let body = json!({"deploymentId": dep, "currentState": {
            "status": status, "platform": "local", "currentRelease": {"releaseId": rel}}});
        let (api, token) = (&api, token.clone());
        async move { api.call(Method::POST, "/v1/sync", Some(&token), Some(body)).await }
    };
    assert_eq!(sync("running").await.0, 200);
    api.admin(
        Method::POST,
        &format!("/v1/deployments/{dep}/delete"),
        Some(json!({"action": "cleanup"})),
    )
    .await;
    // An agent that has not heard yet reports running: refused (409), nothing changes.
    let (status, refused) = sync("running").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(deployment(&api, &dep).await["status"], "delete-pending");
    let (status, answer) =
        api.call(Method::POST, "/v1/sync", Some(&token), Some(json!({"deploymentId": dep}))).await;
    assert_eq!(status, 200);
    assert_eq!(answer["currentState"]["status"], "delete-pending", "{answer}");
    assert!(answer.get("target").is_none());
    let (_, answer) = sync("deleting").await;
    assert_eq!(answer["currentState"]["status"], "deleting");
    let (status, answer) = sync("deleted").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["currentState"]["status"], "deleted");
    let path = format!("/v1/deployments/{dep}");
    let (status, _) = api.call(Method::GET, &path, Some(&api.admin), None).await;
    assert_eq!(status, 404, "the row is gone");
    let (status, _) = sync("deleted").await;
    assert_eq!(status, 401, "and its token with it");
}

/// A group's rollout policy over the API: set on creation, changed with PATCH (bad values are
/// refused naming the field); agents of the group get a new release one batch at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_rollout_reaches_agents_one_batch_at_a_time() {
    let api = Api::start().await;
    let body = json!({"name": "staged", "rollout": {"batchSize": 1, "pauseOnFailure": true}});
    let group = api.admin(Method::POST, "/v1/deployment-groups", Some(body)).await;
    assert_eq!(group["rollout"], json!({"batchSize": 1, "pauseOnFailure": true}), "{group}");
    let gid = group["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/deployment-groups/{gid}");
    for (bad, field) in [
        (json!({"rollout": {"batchSize": 0}}), "rollout.batchSize"),
        (json!({"rollout": {"batchDelaySecs": 90000}}), "rollout.batchDelaySecs"),
    ] {
        let (status, err) = api.call(Method::PATCH, &path, Some(&api.admin), Some(bad)).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["context"]["errors"][0]["path"], field, "{err}");
    }
    let (status, err) = api
        .call(Method::PATCH, &path, Some(&api.admin), Some(json!({"rollout": {"size": 1}})))
        .await;
    assert_eq!(status, 400, "unknown field: {err}");
    assert_eq!(api.admin(Method::GET, &path, None).await["rollout"]["batchSize"], 1, "unchanged");

    let token = api.admin(Method::POST, &format!("{path}/tokens"), None).await;
    let group_token = token["token"].as_str().unwrap().to_owned();
    let first = release_for(&api, &["local"]).await;
    let mut agents = Vec::new();
    for name in ["a", "b"] {
        let (_, init) = api
            .call(Method::POST, "/v1/initialize", Some(&group_token), Some(json!({"name": name})))
            .await;
        agents.push((
            init["deploymentId"].as_str().unwrap().to_owned(),
            init["token"].as_str().unwrap().to_owned(),
        ));
    }
    let sync = |agent: &(String, String), status: &str, release: &str| {
        let body = json!({"deploymentId": agent.0, "currentState": {
            "status": status, "platform": "local", "currentRelease": {"releaseId": release}}});
        let (api, token) = (&api, agent.1.clone());
        async move { api.call(Method::POST, "/v1/sync", Some(&token), Some(body)).await.1 }
    };
    // Both provision the first release (provisioning is not staged).
    for agent in &agents {
        let body = json!({"deploymentId": agent.0});
        let (_, answer) = api.call(Method::POST, "/v1/sync", Some(&agent.1), Some(body)).await;
        assert_eq!(answer["target"]["releaseId"], first.as_str(), "{answer}");
        sync(agent, "running", &first).await;
    }
    let second = release_for(&api, &["local"]).await;
    // One batch of 1: the first agent to sync gets the update, the other waits.
    let a = sync(&agents[0], "running", &first).await;
    assert_eq!(a["target"]["releaseId"], second.as_str(), "{a}");
    assert_eq!(a["currentState"]["status"], "updating");
    let b = sync(&agents[1], "running", &first).await;
    assert!(b.get("target").is_none(), "held back: {b}");
    assert_eq!(b["currentState"]["status"], "update-pending");
    // A held agent reporting trouble does not slip past the rollout either.
    let b = sync(&agents[1], "refresh-failed", &first).await;
    assert!(b.get("target").is_none(), "still held: {b}");
    assert_eq!(b["currentState"]["status"], "update-pending");
    // The first fails: paused on failure.
    sync(&agents[0], "update-failed", &first).await;
    let b = sync(&agents[1], "running", &first).await;
    assert!(b.get("target").is_none(), "paused: {b}");
    // Retried and done: the next batch goes.
    api.admin(Method::POST, &format!("/v1/deployments/{}/retry", agents[0].0), None).await;
    sync(&agents[0], "updating", &first).await;
    sync(&agents[0], "running", &second).await;
    let b = sync(&agents[1], "running", &first).await;
    assert_eq!(b["target"]["releaseId"], second.as_str(), "{b}");
    // Without a policy, nothing is held.
    let cleared = api.admin(Method::PATCH, &path, Some(json!({"rollout": null}))).await;
    assert!(cleared.get("rollout").is_none(), "{cleared}");
}

/// An agent's events (its platform's autoscaling steps) are recorded in its deployment's events
/// with its status unchanged; a sync with an unknown reason, a detail that is not a small
/// object, or too many events is a 400 naming the field and records nothing, not even the
/// valid ones before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_report_autoscaling_events_with_their_syncs() {
    let api = Api::start().await;
    let (_, group_token) = api.group("scaled").await;
    let (_, first) = api
        .call(Method::POST, "/v1/initialize", Some(&group_token), Some(json!({"name": "s"})))
        .await;
    let dep = first["deploymentId"].as_str().unwrap().to_owned();
    let token = first["token"].as_str().unwrap().to_owned();
    let step = |from: u32, to: u32| json!({"reason": "autoscale", "detail": {"container": "web", "from": from, "to": to, "reason": "8 requests in flight"}});
    let body = json!({"deploymentId": dep, "events": [step(1, 4), step(4, 2)]});
    let (status, synced) = api.call(Method::POST, "/v1/sync", Some(&token), Some(body)).await;
    assert_eq!(status, 200, "{synced}");
    let recorded: Vec<Value> = events(&api, &dep).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "autoscale")
        .cloned()
        .collect();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(
        (recorded[0]["detail"]["to"].as_u64(), recorded[1]["detail"]["to"].as_u64()),
        (Some(2), Some(4)),
        "newest first"
    );
    assert_eq!(
        (recorded[0]["from"].as_str(), recorded[0]["to"].as_str()),
        (Some("pending"), Some("pending"))
    );

    let too_many: Vec<Value> = (0..101).map(|i| step(i, i + 1)).collect();
    for (events_field, field) in [
        (json!([step(1, 2), {"reason": "created", "detail": {}}]), "events[1].reason"),
        (json!([{"reason": "autoscale", "detail": "grew"}]), "events[0].detail"),
        (json!([{"reason": "autoscale", "detail": {"pad": "x".repeat(5000)}}]), "events[0].detail"),
        (Value::Array(too_many), "events"),
    ] {
        let body = json!({"deploymentId": dep, "events": events_field});
        let (status, refused) = api.call(Method::POST, "/v1/sync", Some(&token), Some(body)).await;
        assert_eq!(status, 400, "{field}: {refused}");
        assert!(refused.to_string().contains(field), "{field}: {refused}");
    }
    let after = events(&api, &dep).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "autoscale")
        .count();
    assert_eq!(after, 2, "nothing recorded by the refused syncs");
}
