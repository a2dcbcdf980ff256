//! The `/v1` API over real HTTP on 127.0.0.1 against a real SQLite store: fixtures as releases,
//! the auth matrix on every route, deployments end to end, bad input, revocation, audit, OpenAPI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::Path;

use alien_core::{DeploymentEvent, Id};
use alien_store::{DeploymentPatch, DeploymentStore, TokenStore};
use reqwest::Method;
use serde_json::{Value, json};
use support::{Api, fixture, fixtures_dir};

#[tokio::test]
async fn every_fixture_posted_as_a_release_behaves_as_listed() {
    let api = Api::start().await;
    let expected = [
        ("invalid-no-ports.json", "every container must define at least one port"),
        ("invalid-replicas-and-autoscaling.json", "use either fixed replicas or autoscaling"),
        ("invalid-two-exposed-ports.json", "only one port may be exposed publicly"),
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        seen += 1;
        let body = json!({"stack": {"local": fixture(&name)}});
        let (status, response) =
            api.call(Method::POST, "/v1/releases", Some(&api.admin), Some(body)).await;
        if name.starts_with("valid-") {
            assert_eq!(status, 201, "{name}: {response}");
            assert!(response["id"].as_str().unwrap().starts_with("rel_"));
            assert_eq!(response["stack"]["local"], fixture(&name), "{name}: stored as posted");
        } else {
            let (_, message) = expected
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("unlisted {name}"));
            assert_eq!(status, 400, "{name}: {response}");
            assert_eq!(response["code"], "VALIDATION_FAILED");
            let errors = response["context"]["errors"].as_array().unwrap();
            assert!(
                errors.iter().any(|e| e["message"].as_str().unwrap().contains(message)
                    && e["path"].as_str().unwrap().starts_with("stack.local.resources.")),
                "{name}: {response}"
            );
        }
    }
    assert!(seen >= 5, "fixtures found: {seen}");
    let listed = api.admin(Method::GET, "/v1/releases", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "only the valid ones were stored");
}

#[tokio::test]
async fn all_violations_of_all_platforms_are_reported_at_once() {
    let api = Api::start().await;
    let body = json!({"stack": {
        "local": fixture("invalid-no-ports.json"),
        "aws": fixture("invalid-two-exposed-ports.json"),
    }});
    let (status, response) =
        api.call(Method::POST, "/v1/releases", Some(&api.admin), Some(body)).await;
    assert_eq!(status, 400);
    let paths: Vec<&str> = response["context"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("stack.local.")), "{paths:?}");
    assert!(paths.iter().any(|p| p.starts_with("stack.aws.")), "{paths:?}");
}

/// Container API rule 8: a release may not change a container's ports, `stateful` flag or
/// persistent mount path against the newest release of the same stack on the same platform.
/// The refusal names the container and the field, and nothing is stored; another stack id, or
/// the same stack on another platform, is not compared.
#[tokio::test]
async fn a_release_that_changes_what_a_deployment_cannot_take_is_refused() {
    let api = Api::start().await;
    let web = fixture("valid-web.json");
    let post = |stack: Value| {
        let api = &api;
        async move {
            api.call(Method::POST, "/v1/releases", Some(&api.admin), Some(json!({"stack": stack})))
                .await
        }
    };
    let (status, first) = post(json!({"local": web})).await;
    assert_eq!(status, 201, "{first}");

    let mut ports = web.clone();
    ports["resources"]["api"]["config"]["ports"][1]["port"] = json!(9191);
    let mut stateful = web.clone();
    stateful["resources"]["api"]["config"]["stateful"] = json!(true);
    for (changed, field) in [(ports.clone(), "ports"), (stateful, "stateful")] {
        let (status, response) = post(json!({"local": changed})).await;
        assert_eq!(status, 400, "{field}: {response}");
        assert_eq!(response["code"], "VALIDATION_FAILED");
        let errors = response["context"]["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{response}");
        assert_eq!(errors[0]["path"], format!("stack.local.resources.api.config.{field}"));
        assert!(errors[0]["message"].as_str().unwrap().contains("\"api\""), "{response}");
    }
    let listed = api.admin(Method::GET, "/v1/releases", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "nothing stored: {listed}");

    // The same stack on a platform it was never released for, and another stack id, pass.
    let (status, response) = post(json!({"aws": ports})).await;
    assert_eq!(status, 201, "{response}");
    let mut renamed = ports.clone();
    renamed["id"] = json!("my-other-app");
    let (status, response) = post(json!({"local": renamed})).await;
    assert_eq!(status, 201, "{response}");
    // An unchanged container set (other fields changed) passes too.
    let mut image = web.clone();
    image["resources"]["api"]["config"]["code"]["image"] = json!("ghcr.io/acme/api:v2");
    let (status, response) = post(json!({"local": image})).await;
    assert_eq!(status, 201, "{response}");
}

/// `POST /v1/credentials/mint`: a deployment token mints for its own deployment, an admin for
/// any, a group token never. A local deployment gets the ambient identity; a cloud target without
/// an `[impersonation.<cloud>]` binding is 501 naming it; a malformed target or an unknown
/// resource is 400 naming the field; the answer is never cached.
#[tokio::test]
async fn credentials_are_minted_for_a_deployments_own_target_only() {
    let api = Api::start().await;
    let (group, group_token) = api.group("mint").await;
    let (d1, d1_token) = api.deployment(&group, "d1").await;
    let (d2, _) = api.deployment(&group, "d2").await;
    let mut stack = fixture("valid-web.json");
    api.admin(Method::POST, "/v1/releases", Some(json!({"stack": {"local": stack.clone()}}))).await;
    let mint = |deployment: &str, resource: &str| json!({"deploymentId": deployment, "resourceId": resource, "bindingName": "storage"});

    let response = reqwest::Client::new()
        .post(format!("{}/v1/credentials/mint", api.base))
        .bearer_auth(&d1_token)
        .json(&json!({"deploymentId": d1, "resourceId": "api", "bindingName": "b", "durationSeconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let minted: Value = response.json().await.unwrap();
    assert_eq!(minted["credentials"], json!({"kind": "ambient"}), "{minted}");
    assert_eq!(minted["durationSeconds"], 900, "clamped to the minimum");
    let (status, minted) = api
        .call(Method::POST, "/v1/credentials/mint", Some(&api.admin), Some(mint(&d2, "api")))
        .await;
    assert_eq!((status, minted["durationSeconds"].clone()), (200, json!(3600)), "{minted}");

    for (token, deployment) in [(&d1_token, &d2), (&group_token, &d1)] {
        let (status, refused) = api
            .call(Method::POST, "/v1/credentials/mint", Some(token), Some(mint(deployment, "api")))
            .await;
        assert_eq!((status, refused["code"].as_str()), (403, Some("FORBIDDEN")), "{refused}");
    }
    let (status, bad) = api
        .call(Method::POST, "/v1/credentials/mint", Some(&d1_token), Some(mint(&d1, "nope")))
        .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["context"]["errors"][0]["path"], "resourceId");

    // Cloud targets.
    stack["id"] = json!("my-app");
    api.admin(Method::POST, "/v1/releases", Some(json!({"stack": {"aws": stack}}))).await;
    let aws = |name: &str, target: Value| json!({"name": name, "platform": "aws", "deploymentGroupId": group, "target": target});
    let role =
        json!({"accountId": "123456789012", "roleArn": "arn:aws:iam::123456789012:role/alien"});
    let created =
        api.admin(Method::POST, "/v1/deployments", Some(aws("in-aws", role.clone()))).await;
    let in_aws = created["deployment"]["id"].as_str().unwrap().to_owned();
    let (status, refused) = api
        .call(Method::POST, "/v1/credentials/mint", Some(&api.admin), Some(mint(&in_aws, "api")))
        .await;
    assert_eq!((status, refused["code"].as_str()), (501, Some("IMPERSONATION_NOT_CONFIGURED")));
    assert!(refused["message"].as_str().unwrap().contains("[impersonation.aws]"), "{refused}");
    // A group token (held by a customer environment) may not point a deployment at an account:
    // it could name another customer's role and mint its credentials.
    let theirs = aws("theirs", role.clone());
    let (status, refused) =
        api.call(Method::POST, "/v1/deployments", Some(&group_token), Some(theirs)).await;
    assert_eq!((status, refused["code"].as_str()), (403, Some("FORBIDDEN")), "{refused}");
    let listed = api.admin(Method::GET, "/v1/deployments?name=theirs", None).await;
    assert_eq!(listed["items"], json!([]), "nothing created");
    let created = api
        .admin(Method::POST, "/v1/deployments", Some(aws("no-role", json!({"accountId": "1"}))))
        .await;
    let no_role = created["deployment"]["id"].as_str().unwrap().to_owned();
    let (status, bad) = api
        .call(Method::POST, "/v1/credentials/mint", Some(&api.admin), Some(mint(&no_role, "api")))
        .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["context"]["errors"][0]["path"], "target.roleArn", "{bad}");
}

/// Expected access of one token kind in the matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// Authorized: anything but 401/403 (the call may still be refused for other reasons).
    Ok,
    /// 403 FORBIDDEN.
    Deny,
}

use Want::{Deny, Ok as Allow};

#[tokio::test]
async fn auth_matrix_covers_every_route() {
    let api = Api::start().await;
    let (g1, g1_token) = api.group("g1").await;
    let (g2, _) = api.group("g2").await;
    let (d1, d1_token) = api.deployment(&g1, "d1").await;
    let (d2, _) = api.deployment(&g2, "d2").await;
    let release = api
        .admin(
            Method::POST,
            "/v1/releases",
            Some(json!({"stack": {"local": fixture("valid-web.json")}})),
        )
        .await;
    let rel = release["id"].as_str().unwrap().to_owned();
    let spare = api.admin(Method::POST, &format!("/v1/deployment-groups/{g2}/tokens"), None).await;
    let some_token = spare["id"].as_str().unwrap().to_owned();
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        format!("n{n}")
    };

    // (method, path, body, admin, group token of g1, deployment token of d1)
    let rows: Vec<(Method, String, Option<Value>, Want, Want, Want)> = vec![
        (Method::GET, "/v1/whoami".into(), None, Allow, Allow, Allow),
        (
            Method::POST,
            "/v1/deployment-groups".into(),
            Some(json!({"name": "x"})),
            Allow,
            Deny,
            Deny,
        ),
        (Method::GET, "/v1/deployment-groups".into(), None, Allow, Allow, Deny),
        (Method::GET, format!("/v1/deployment-groups/{g1}"), None, Allow, Allow, Deny),
        (Method::GET, format!("/v1/deployment-groups/{g2}"), None, Allow, Deny, Deny),
        (Method::POST, format!("/v1/deployment-groups/{g1}/tokens"), None, Allow, Deny, Deny),
        (
            Method::PATCH,
            format!("/v1/deployment-groups/{g1}"),
            Some(json!({"rollout": null})),
            Allow,
            Deny,
            Deny,
        ),
        (
            Method::POST,
            "/v1/releases".into(),
            Some(json!({"stack": {"local": fixture("valid-web.json")}})),
            Allow,
            Deny,
            Deny,
        ),
        (Method::GET, "/v1/releases".into(), None, Allow, Allow, Allow),
        (Method::GET, "/v1/releases/latest".into(), None, Allow, Allow, Allow),
        (Method::GET, format!("/v1/releases/{rel}"), None, Allow, Allow, Allow),
        (
            Method::POST,
            "/v1/deployments".into(),
            Some(json!({"name": "new", "platform": "local", "deploymentGroupId": g1})),
            Allow,
            Allow,
            Deny,
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            Some(json!({"name": "new2", "platform": "local", "deploymentGroupId": g2})),
            Allow,
            Deny,
            Deny,
        ),
        (Method::GET, "/v1/deployments".into(), None, Allow, Allow, Deny),
        (Method::GET, format!("/v1/deployments?deploymentGroupId={g2}"), None, Allow, Deny, Deny),
        (Method::GET, format!("/v1/deployments/{d1}"), None, Allow, Allow, Allow),
        (Method::GET, format!("/v1/deployments/{d2}"), None, Allow, Deny, Deny),
        (Method::GET, format!("/v1/deployments/{d1}/info"), None, Allow, Allow, Allow),
        (Method::GET, format!("/v1/deployments/{d2}/info"), None, Allow, Deny, Deny),
        (Method::GET, format!("/v1/deployments/{d1}/events"), None, Allow, Allow, Allow),
        (Method::GET, format!("/v1/deployments/{d2}/events"), None, Allow, Deny, Deny),
        (Method::POST, format!("/v1/deployments/{d1}/retry"), None, Allow, Allow, Allow),
        (Method::POST, format!("/v1/deployments/{d2}/retry"), None, Allow, Deny, Deny),
        (Method::POST, format!("/v1/deployments/{d1}/redeploy"), None, Allow, Allow, Allow),
        (Method::POST, format!("/v1/deployments/{d2}/redeploy"), None, Allow, Deny, Deny),
        (
            Method::POST,
            format!("/v1/deployments/{d2}/delete"),
            Some(json!({"action": "cleanup"})),
            Allow,
            Deny,
            Deny,
        ),
        (
            Method::POST,
            format!("/v1/deployments/{d1}/delete"),
            Some(json!({"action": "cleanup"})),
            Allow,
            Deny,
            Deny,
        ),
        (Method::GET, "/v1/tokens".into(), None, Allow, Deny, Deny),
        (Method::DELETE, format!("/v1/tokens/{some_token}"), None, Allow, Deny, Deny),
        (Method::GET, "/v1/audit".into(), None, Allow, Deny, Deny),
        (Method::GET, "/v1/build-config?platform=local".into(), None, Allow, Allow, Deny),
        (Method::GET, "/v1/platforms".into(), None, Allow, Allow, Allow),
    ];
    let wrong = "ax_admin_0000000000000000000000000000000000000000";
    for (method, path, body, admin, group, deployment) in rows {
        let with_fresh_name = |body: &Option<Value>, name: String| {
            body.clone().map(|mut b| {
                if b.get("name").is_some() {
                    b["name"] = json!(name);
                }
                b
            })
        };
        for token in [None, Some(wrong), Some("not-a-token")] {
            let (status, response) = api.call(method.clone(), &path, token, body.clone()).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {response}");
            assert_eq!(response["code"], "UNAUTHORIZED");
        }
        // Forbidden kinds first, so the allowed (possibly state-changing) call comes last.
        let mut kinds = vec![
            ("group", g1_token.as_str(), group),
            ("deployment", d1_token.as_str(), deployment),
            ("admin", api.admin.as_str(), admin),
        ];
        kinds.sort_by_key(|(_, _, want)| *want == Allow);
        for (kind, token, want) in kinds {
            let (status, response) =
                api.call(method.clone(), &path, Some(token), with_fresh_name(&body, fresh())).await;
            match want {
                Deny => {
                    assert_eq!(status, 403, "{method} {path} as {kind}: {response}");
                    assert_eq!(response["code"], "FORBIDDEN");
                }
                Allow => assert!(
                    status != 401 && status != 403 && status < 500,
                    "{method} {path} as {kind}: {status} {response}"
                ),
            }
        }
    }
}

#[tokio::test]
async fn deployments_end_to_end() {
    let api = Api::start().await;
    let (group, group_token) = api.group("prod").await;
    // No release yet: the deployment waits in pending without a desired release.
    let body = json!({
        "name": "acme", "platform": "local",
        "environmentVariables": [
            {"name": "LOG_LEVEL", "value": "debug", "type": "plain"},
            {"name": "DB_PASSWORD", "value": "s3cr3t-value", "type": "secret"}
        ]
    });
    let (status, created) =
        api.call(Method::POST, "/v1/deployments", Some(&group_token), Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["deploymentModel"], "push");
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ax_deploy_"));
    let id = created["deployment"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["deployment"]["status"], "pending");
    assert_eq!(created["deployment"]["deploymentGroupId"], group);
    assert!(created["deployment"].get("desiredReleaseId").is_none());
    let text = created.to_string();
    assert!(!text.contains("s3cr3t-value") && !text.contains("locked"), "{text}");

    // Same name again: 409; kubernetes push: 400; the deployment's token can read itself.
    let (status, conflict) =
        api.call(Method::POST, "/v1/deployments", Some(&group_token), Some(body)).await;
    assert_eq!((status, conflict["code"].as_str()), (409, Some("DEPLOYMENT_NAME_CONFLICT")));
    let k8s = json!({"name": "k", "platform": "kubernetes", "deploymentModel": "push"});
    let (status, bad) =
        api.call(Method::POST, "/v1/deployments", Some(&group_token), Some(k8s)).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["context"]["errors"][0]["path"], "deploymentModel");
    let (status, me) =
        api.call(Method::GET, &format!("/v1/deployments/{id}"), Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(!me.to_string().contains("s3cr3t-value"));
    let whoami = api.call(Method::GET, "/v1/whoami", Some(&token), None).await.1;
    assert_eq!(whoami["scope"]["deploymentId"], id);
    assert_eq!(whoami["tokenType"], "deployment");

    // A release for the platform becomes the pending deployment's desired release.
    let release = api
        .admin(
            Method::POST,
            "/v1/releases",
            Some(json!({"stack": {"local": fixture("valid-web.json")}})),
        )
        .await;
    let rel = release["id"].as_str().unwrap();
    let got = api.admin(Method::GET, &format!("/v1/deployments/{id}"), None).await;
    assert_eq!(got["desiredReleaseId"], rel);
    assert_eq!(got["status"], "pending");

    // Drive it to running through the store, then a new release marks it update-pending.
    let dep_id = Id::parse_any(&id).unwrap();
    for event in [DeploymentEvent::BeginProvisioning, DeploymentEvent::StepSucceeded] {
        api.store
            .transition(
                &dep_id,
                event,
                DeploymentPatch { reason: "test".into(), ..Default::default() },
            )
            .await
            .unwrap();
    }
    let release2 = api
        .admin(
            Method::POST,
            "/v1/releases",
            Some(json!({"stack": {"local": fixture("valid-stateful-gpu.json")}, "version": "2"})),
        )
        .await;
    let got = api.admin(Method::GET, &format!("/v1/deployments/{id}"), None).await;
    assert_eq!(got["status"], "update-pending");
    assert_eq!(got["desiredReleaseId"], release2["id"]);
    // A release for another platform leaves it alone.
    api.admin(
        Method::POST,
        "/v1/releases",
        Some(json!({"stack": {"aws": fixture("valid-web.json")}})),
    )
    .await;
    let got = api.admin(Method::GET, &format!("/v1/deployments/{id}"), None).await;
    assert_eq!(got["desiredReleaseId"], release2["id"]);
    let latest = api.admin(Method::GET, "/v1/releases/latest?platform=local", None).await;
    assert_eq!(latest["id"], release2["id"]);

    // Retry from a non-failed status: 409 CONFLICT, as every refused transition (issue 12);
    // redeploy to an earlier release (rollback) is accepted.
    let (status, refused) =
        api.call(Method::POST, &format!("/v1/deployments/{id}/retry"), Some(&token), None).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("CONFLICT")), "{refused}");
    let (status, r) = api
        .call(
            Method::POST,
            &format!("/v1/deployments/{id}/redeploy"),
            Some(&token),
            Some(json!({"releaseId": rel})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let got = api.admin(Method::GET, &format!("/v1/deployments/{id}"), None).await;
    assert_eq!(got["desiredReleaseId"], rel);

    // Filters.
    let list =
        api.admin(Method::GET, "/v1/deployments?status=update-pending&platform=local", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let list = api.admin(Method::GET, "/v1/deployments?status=running", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (status, bad) =
        api.call(Method::GET, "/v1/deployments?status=bogus", Some(&api.admin), None).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["context"]["errors"][0]["path"], "status");

    // Events, info, delete.
    let events = api.admin(Method::GET, &format!("/v1/deployments/{id}/events"), None).await;
    assert!(events["items"].as_array().unwrap().len() >= 4, "{events}");
    let info = api.admin(Method::GET, &format!("/v1/deployments/{id}/info"), None).await;
    assert_eq!(info["commands"]["deploymentId"], id);
    let (status, accepted) = api
        .call(
            Method::POST,
            &format!("/v1/deployments/{id}/delete"),
            Some(&api.admin),
            Some(json!({"action": "cleanup"})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["action"], "cleanup");
    let (status, again) = api
        .call(
            Method::POST,
            &format!("/v1/deployments/{id}/delete"),
            Some(&api.admin),
            Some(json!({"action": "cleanup"})),
        )
        .await;
    assert_eq!((status, again["code"].as_str()), (409, Some("DEPLOYMENT_ALREADY_DELETING")));
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/deployments/{id}/delete"),
            Some(&api.admin),
            Some(json!({"action": "forget"})),
        )
        .await;
    assert_eq!(status, 202);
    let (status, gone) =
        api.call(Method::GET, &format!("/v1/deployments/{id}"), Some(&api.admin), None).await;
    assert_eq!((status, gone["code"].as_str()), (404, Some("DEPLOYMENT_NOT_FOUND")));
    let (status, _) = api.call(Method::GET, "/v1/whoami", Some(&token), None).await;
    assert_eq!(status, 401, "forget revoked the deployment's token");
}

#[tokio::test]
async fn admins_must_name_the_group_when_several_exist() {
    let api = Api::start().await;
    let body = json!({"name": "a", "platform": "local"});
    let (status, r) =
        api.call(Method::POST, "/v1/deployments", Some(&api.admin), Some(body.clone())).await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["context"]["errors"][0]["path"], "deploymentGroupId");
    api.group("one").await;
    let (status, r) =
        api.call(Method::POST, "/v1/deployments", Some(&api.admin), Some(body.clone())).await;
    assert_eq!(status, 201, "the only group is used: {r}");
    api.group("two").await;
    let (status, r) = api
        .call(
            Method::POST,
            "/v1/deployments",
            Some(&api.admin),
            Some(json!({"name": "b", "platform": "local"})),
        )
        .await;
    assert_eq!(status, 400, "{r}");
}

#[tokio::test]
async fn max_deployments_is_enforced() {
    let api = Api::start().await;
    let group = api
        .admin(
            Method::POST,
            "/v1/deployment-groups",
            Some(json!({"name": "small", "maxDeployments": 1})),
        )
        .await;
    let g = group["id"].as_str().unwrap();
    api.deployment(g, "one").await;
    let body = json!({"name": "two", "platform": "local", "deploymentGroupId": g});
    let (status, r) = api.call(Method::POST, "/v1/deployments", Some(&api.admin), Some(body)).await;
    assert_eq!((status, r["code"].as_str()), (400, Some("MAX_DEPLOYMENTS_REACHED")));
    let group = api.admin(Method::GET, &format!("/v1/deployment-groups/{g}"), None).await;
    assert_eq!(group["deploymentCount"], 1);
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named_and_nothing_written() {
    let api = Api::start().await;
    let (group, _) = api.group("g").await;
    let cases: Vec<(Method, String, Value, u16, &str, &str)> = vec![
        (
            Method::POST,
            "/v1/deployments".into(),
            json!({"name": "x", "platform": "local", "typo": 1}),
            400,
            "VALIDATION_FAILED",
            "typo",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            json!({"name": 5, "platform": "local"}),
            400,
            "VALIDATION_FAILED",
            "name",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            json!({"name": "Bad Name", "platform": "local"}),
            400,
            "VALIDATION_FAILED",
            "name",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            json!({"name": "x", "platform": "mars"}),
            400,
            "VALIDATION_FAILED",
            "platform",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            json!({"name": "x", "platform": "local", "deploymentGroupId": "dg_nope"}),
            400,
            "VALIDATION_FAILED",
            "deploymentGroupId",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            json!({"name": "x", "platform": "local", "environmentVariables": [{"name": "ALIEN_X", "value": "1", "type": "plain"}]}),
            400,
            "VALIDATION_FAILED",
            "environmentVariables[0].name",
        ),
        (
            Method::POST,
            "/v1/deployment-groups".into(),
            json!({"name": "-bad"}),
            400,
            "VALIDATION_FAILED",
            "name",
        ),
        (
            Method::POST,
            "/v1/releases".into(),
            json!({"stack": {}}),
            400,
            "VALIDATION_FAILED",
            "stack",
        ),
        (
            Method::POST,
            "/v1/releases".into(),
            json!({"stack": {"local": {"id": "x"}}}),
            400,
            "VALIDATION_FAILED",
            "stack.local",
        ),
    ];
    for (method, path, body, status, code, field) in cases {
        let (got, response) =
            api.call(method.clone(), &path, Some(&api.admin), Some(body.clone())).await;
        assert_eq!(got, status, "{path} {body}: {response}");
        assert_eq!(response["code"], code, "{path} {body}: {response}");
        assert!(response.to_string().contains(field), "{path} {body}: {response} lacks {field}");
    }
    // Malformed JSON, invalid ids in paths, oversize bodies.
    let client = reqwest::Client::new();
    let malformed = client
        .post(format!("{}/v1/deployments", api.base))
        .bearer_auth(&api.admin)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    for path in [
        "/v1/deployments/nope",
        "/v1/deployments/rel_0000000000000000000000000000",
        "/v1/releases/dep_x",
        "/v1/deployment-groups/x",
    ] {
        let (status, r) = api.call(Method::GET, path, Some(&api.admin), None).await;
        assert_eq!(status, 400, "{path}: {r}");
        assert_eq!(r["context"]["errors"][0]["path"], "id", "{path}: {r}");
    }
    let huge = json!({"name": "x", "platform": "local", "region": "r".repeat(3 * 1024 * 1024)});
    let (status, r) = api.call(Method::POST, "/v1/deployments", Some(&api.admin), Some(huge)).await;
    assert_eq!((status, r["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));
    let list =
        api.admin(Method::GET, &format!("/v1/deployments?deploymentGroupId={group}"), None).await;
    assert_eq!(list["items"], json!([]), "no row written");
    let releases = api.admin(Method::GET, "/v1/releases", None).await;
    assert_eq!(releases["items"], json!([]));
}

#[tokio::test]
async fn revocation_is_immediate_and_last_use_is_recorded_in_batches() {
    let api = Api::start().await;
    let (_, group_token) = api.group("g").await;
    assert_eq!(api.call(Method::GET, "/v1/whoami", Some(&group_token), None).await.0, 200);
    let tokens = api.admin(Method::GET, "/v1/tokens", None).await;
    let items = tokens["items"].as_array().unwrap();
    assert!(!tokens.to_string().contains(&group_token), "raw tokens are never listed");
    let record = items.iter().find(|t| t["tokenType"] == "deployment-group").unwrap();
    let id = record["id"].as_str().unwrap().to_owned();
    assert_eq!(record["keyPrefix"].as_str().unwrap(), &group_token[..12]);
    let (status, _) =
        api.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(&api.admin), None).await;
    assert_eq!(status, 204);
    let (status, r) = api.call(Method::GET, "/v1/whoami", Some(&group_token), None).await;
    assert_eq!((status, r["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let (status, r) =
        api.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(&api.admin), None).await;
    assert_eq!((status, r["code"].as_str()), (404, Some("TOKEN_NOT_FOUND")));
    // The admin token's use is flushed within the batch interval.
    let admin_id = api
        .store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.token_type == alien_core::TokenType::Admin)
        .unwrap()
        .id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(12);
    loop {
        let record = api.store.get_token(&admin_id).await.unwrap().unwrap();
        if record.last_used_at.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lastUsedAt never written");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn mutating_calls_are_audited_without_secrets() {
    let api = Api::start().await;
    let (group, _) = api.group("g").await;
    let body = json!({"name": "a", "platform": "local", "deploymentGroupId": group,
        "environmentVariables": [{"name": "PW", "value": "very-secret-pw", "type": "secret"}]});
    api.admin(Method::POST, "/v1/deployments", Some(body)).await;
    let (status, _) = api
        .call(Method::POST, "/v1/deployment-groups", Some(&api.admin), Some(json!({"name": "g"})))
        .await;
    assert_eq!(status, 409);
    api.admin(Method::GET, "/v1/releases", None).await;
    // An agent's sync is machine traffic, not audited.
    let (_, group_token) = api.group("agents").await;
    let (status, init) = api
        .call(Method::POST, "/v1/initialize", Some(&group_token), Some(json!({"name": "s"})))
        .await;
    assert_eq!(status, 201, "{init}");
    let sync = json!({"deploymentId": init["deploymentId"]});
    let token = init["token"].as_str().unwrap();
    let (status, _) = api.call(Method::POST, "/v1/sync", Some(token), Some(sync)).await;
    assert_eq!(status, 200);
    let audit = api.admin(Method::GET, "/v1/audit", None).await;
    let items = audit["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "POST /v1/initialize",
            "POST /v1/deployment-groups/{id}/tokens",
            "POST /v1/deployment-groups",
            "POST /v1/deployment-groups",
            "POST /v1/deployments",
            "POST /v1/deployment-groups/{id}/tokens",
            "POST /v1/deployment-groups"
        ],
        "newest first, reads and syncs not audited"
    );
    assert_eq!(items[0]["tokenType"], "deployment-group");
    let items = &items[3..];
    assert_eq!(items[0]["outcome"], "CONFLICT");
    assert_eq!(items[1]["outcome"], "success");
    assert!(items[1]["targetId"].as_str().unwrap().starts_with("dep_"));
    assert_eq!(items[1]["tokenType"], "admin");
    assert!(!audit.to_string().contains("very-secret-pw"));
    assert!(!audit.to_string().contains(&api.admin));
}

#[tokio::test]
async fn openapi_document_is_served_and_committed() {
    let api = Api::start().await;
    let (status, doc) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/whoami",
        "/v1/deployment-groups",
        "/v1/deployment-groups/{id}",
        "/v1/deployment-groups/{id}/tokens",
        "/v1/releases",
        "/v1/releases/latest",
        "/v1/releases/{id}",
        "/v1/deployments",
        "/v1/deployments/{id}",
        "/v1/deployments/{id}/info",
        "/v1/deployments/{id}/events",
        "/v1/deployments/{id}/retry",
        "/v1/deployments/{id}/redeploy",
        "/v1/deployments/{id}/delete",
        "/v1/tokens",
        "/v1/tokens/{id}",
        "/v1/audit",
        "/v1/build-config",
        "/v1/platforms",
        "/v1/commands",
        "/v1/commands/{id}",
        "/v1/commands/{id}/upload-complete",
        "/v1/commands/{id}/response",
        "/v1/commands/leases",
        "/v1/commands/leases/{lease_id}/release",
        "/v1/payloads/{key}",
        "/v1/commands/{id}/payload",
        "/v1/sync/acquire",
        "/v1/sync/reconcile",
        "/v1/sync/renew",
        "/v1/sync/release",
        "/health",
        "/ready",
        "/metrics",
        "/v1/credentials/mint",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the OpenAPI document");
    }
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let committed = std::fs::read_to_string(committed).unwrap_or_default();
    assert!(
        committed == alien_server::api::openapi::openapi_json(),
        "docs/openapi.json is out of date; run `cargo xtask docs`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_makes_ready_503_and_writes_fail_cleanly() {
    use sqlx::Connection;
    let api = Api::start().await;
    let (status, _) = api.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 200);
    // Another process holds the write lock.
    let url = format!("sqlite://{}", api.store.path().display());
    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
    let (status, ready) = api.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["code"], "UNAVAILABLE");
    assert!(ready["context"]["failed"]["store"].is_string(), "{ready}");
    let (status, write) = api
        .call(Method::POST, "/v1/deployment-groups", Some(&api.admin), Some(json!({"name": "g"})))
        .await;
    assert_eq!(status, 503, "{write}");
    assert_eq!(
        (write["code"].as_str(), write["retryable"].as_bool()),
        (Some("UNAVAILABLE"), Some(true))
    );
    assert!(!write.to_string().contains(".db"), "no paths leak: {write}");
    // Reads go on meanwhile.
    assert_eq!(api.call(Method::GET, "/v1/releases", Some(&api.admin), None).await.0, 200);
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    assert_eq!(api.call(Method::GET, "/ready", None, None).await.0, 200);
    let groups = api.admin(Method::GET, "/v1/deployment-groups", None).await;
    assert_eq!(groups["items"], json!([]), "the refused write left nothing");
}

#[tokio::test]
async fn build_config_points_at_the_embedded_registry() {
    let api = Api::start().await;
    let config = api.admin(Method::GET, "/v1/build-config?platform=aws", None).await;
    let host = api.base.trim_start_matches("http://");
    assert_eq!(config["registry"], host, "the host of base-url");
    assert_eq!(config["repositoryName"], "artifacts");
    let (status, bad) =
        api.call(Method::GET, "/v1/build-config?platform=mars", Some(&api.admin), None).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["context"]["errors"][0]["path"], "platform");
    // Without a deployment loop, only what agents deploy (issue 12: the platforms this manager
    // can really deploy to, with the registry and deployer of each).
    let platforms = api.admin(Method::GET, "/v1/platforms", None).await;
    assert_eq!(platforms["platforms"], json!(["local"]), "{platforms}");
    let local = &platforms["details"][0];
    assert_eq!((local["pull"].clone(), local.get("push")), (json!(true), None), "{platforms}");
    assert_eq!(local["registry"]["kind"], "embedded");
    assert_eq!(local["registry"]["repositoryName"], "artifacts");
}
