//! The `/v1` API over real HTTP on 127.0.0.1 against a real SQLite store: fixtures as releases,
//! the auth matrix on every route, deployments end to end, bad input, revocation, audit, OpenAPI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::Path;

use alien_core::{DeploymentEvent, Id};
use alien_store::{DeploymentPatch, DeploymentStore, TokenStore};
use reqwest::Method;
use serde_json::{Value, json};
use support::{Api, b64, fixture, fixtures_dir};

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
    assert_eq!((status, bad["code"].as_str()), (404, Some("NOT_FOUND")), "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("runs no resource \"nope\""), "{bad}");

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

/// Who calls an operation of the auth matrix. Every operation targets `g1` or `d1` (in `g1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Admin,
    /// The token of the target's group (`g1`).
    Group,
    /// A token of another group (`g2`).
    OtherGroup,
    /// The target deployment's own token (`d1`).
    Deployment,
    /// The token of another deployment of the same group.
    Sibling,
    /// The token of a deployment of the other group.
    OtherGroupDeployment,
}

/// Who may call an operation: the rows of `spec/api.md`, "Tokens and auth".
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// No token needed; a token, valid or not, changes nothing (200).
    Public,
    /// Only a signed URL (`?exp=&sig=`): bearer tokens are not accepted (401 whatever the token).
    SignedUrlOnly,
    /// Any valid token.
    AnyToken,
    /// Admin tokens only.
    AdminOnly,
    /// Admin, or any group token (which sees its own group only).
    AdminOrAnyGroup,
    /// Admin, or the token of the target's group.
    AdminOrOwnGroup,
    /// Admin, the token of the target's group, or the target deployment's own token.
    AdminOwnGroupOrItself,
    /// Admin, or the target deployment's own token.
    AdminOrItself,
    /// Deployment tokens only, each sending as itself.
    DeploymentItself,
}

impl Rule {
    /// Whether a bearer token of `caller` is let through.
    fn allows(self, caller: Caller) -> bool {
        use Caller::*;
        match self {
            Rule::Public | Rule::AnyToken => true,
            Rule::SignedUrlOnly => false,
            Rule::AdminOnly => caller == Admin,
            Rule::AdminOrAnyGroup => matches!(caller, Admin | Group | OtherGroup),
            Rule::AdminOrOwnGroup => matches!(caller, Admin | Group),
            Rule::AdminOwnGroupOrItself => matches!(caller, Admin | Group | Deployment),
            Rule::AdminOrItself => matches!(caller, Admin | Deployment),
            Rule::DeploymentItself => matches!(caller, Deployment | Sibling | OtherGroupDeployment),
        }
    }
}

/// The access rule of every operation of `/openapi.json` (method, path template), per
/// `spec/api.md`. A documented operation missing here, or a row the document lacks, fails
/// `auth_matrix_covers_every_route`.
const ACCESS: &[(&str, &str, Rule)] = {
    use Rule::*;
    &[
        // Operational: no auth (`/metrics` has no `metrics-token` in these tests).
        ("GET", "/health", Public),
        ("GET", "/ready", Public),
        ("GET", "/metrics", Public),
        // The agent's install script: what a customer pipes to sh before they hold a token.
        ("GET", "/install/agent.sh", Public),
        ("GET", "/v1/whoami", AnyToken),
        // Deployment groups: create and mint group tokens: admin; read: all / own / no. Setting
        // the rollout policy is managing the group.
        ("POST", "/v1/deployment-groups", AdminOnly),
        ("GET", "/v1/deployment-groups", AdminOrAnyGroup),
        ("GET", "/v1/deployment-groups/{id}", AdminOrOwnGroup),
        ("PATCH", "/v1/deployment-groups/{id}", AdminOnly),
        ("POST", "/v1/deployment-groups/{id}/tokens", AdminOnly),
        // Releases: create: admin; read/list: everyone.
        ("POST", "/v1/releases", AdminOnly),
        ("GET", "/v1/releases", AnyToken),
        ("GET", "/v1/releases/latest", AnyToken),
        ("GET", "/v1/releases/{id}", AnyToken),
        // Deployments: create and list: admin / own group / no (the list names `g1`); read, info
        // (events and recent logs are reads), retry, redeploy: admin / own group / itself;
        // delete: admin.
        ("POST", "/v1/deployments", AdminOrOwnGroup),
        ("GET", "/v1/deployments", AdminOrOwnGroup),
        ("GET", "/v1/deployments/{id}", AdminOwnGroupOrItself),
        ("GET", "/v1/deployments/{id}/info", AdminOwnGroupOrItself),
        ("GET", "/v1/deployments/{id}/events", AdminOwnGroupOrItself),
        ("GET", "/v1/deployments/{id}/logs", AdminOwnGroupOrItself),
        ("POST", "/v1/deployments/{id}/retry", AdminOwnGroupOrItself),
        ("POST", "/v1/deployments/{id}/redeploy", AdminOwnGroupOrItself),
        ("POST", "/v1/deployments/{id}/delete", AdminOnly),
        // Sync: admin / own group / itself. The initialize call registers a new agent in `g1`,
        // which no deployment token is.
        ("POST", "/v1/initialize", AdminOrOwnGroup),
        ("POST", "/v1/sync", AdminOwnGroupOrItself),
        // External push drivers (deployer.md): admin / own group; deployment tokens live in the
        // containers and drive nothing.
        ("POST", "/v1/sync/acquire", AdminOrOwnGroup),
        ("POST", "/v1/sync/reconcile", AdminOrOwnGroup),
        ("POST", "/v1/sync/renew", AdminOrOwnGroup),
        ("POST", "/v1/sync/release", AdminOrOwnGroup),
        // Commands: create (and completing its upload): admin / own group / no; lease, respond,
        // release a lease, read status: admin / own group / itself. Reading and uploading
        // parameters through the API: admin (others get presigned URLs). Payload URLs are signed.
        ("POST", "/v1/commands", AdminOrOwnGroup),
        ("POST", "/v1/commands/{id}/upload-complete", AdminOrOwnGroup),
        ("GET", "/v1/commands/{id}", AdminOwnGroupOrItself),
        ("POST", "/v1/commands/leases", AdminOwnGroupOrItself),
        ("POST", "/v1/commands/leases/{lease_id}/release", AdminOwnGroupOrItself),
        ("PUT", "/v1/commands/{id}/response", AdminOwnGroupOrItself),
        ("GET", "/v1/commands/{id}/payload", AdminOnly),
        ("PUT", "/v1/commands/{id}/payload", AdminOnly),
        ("GET", "/v1/payloads/{key}", SignedUrlOnly),
        ("PUT", "/v1/payloads/{key}", SignedUrlOnly),
        // Telemetry ingest: deployment tokens only (telemetry.md).
        ("POST", "/v1/traces", DeploymentItself),
        ("POST", "/v1/logs", DeploymentItself),
        ("POST", "/v1/metrics", DeploymentItself),
        // Registry: build-config says where to push, and pushing is admin only (registry.md);
        // the platforms this manager deploys to are no secret.
        ("GET", "/v1/build-config", AdminOnly),
        ("GET", "/v1/platforms", AnyToken),
        // Credentials for a deployment's own workloads (clouds.md), or the vendor's.
        ("POST", "/v1/credentials/mint", AdminOrItself),
        // Tokens and the audit log: admin.
        ("GET", "/v1/tokens", AdminOnly),
        ("DELETE", "/v1/tokens/{id}", AdminOnly),
        ("GET", "/v1/audit", AdminOnly),
    ]
};

/// Parameters of the commands the matrix creates.
const PARAMS: &[u8] = b"matrix";

/// A request body.
enum Body {
    Empty,
    Json(Value),
    Bytes(&'static str, Vec<u8>),
}

/// The real ids the matrix fills path parameters and bodies with.
struct Targets {
    g1: String,
    d1: String,
    release: String,
    /// A token id to revoke (none the matrix calls with).
    spare_token: String,
    /// A PENDING command of `d1`.
    command: String,
    /// A PENDING_UPLOAD command of `d1` whose parameters are uploaded.
    uploaded: String,
    /// A PENDING_UPLOAD command of `d1` waiting for its parameters.
    awaiting_params: String,
    /// A DISPATCHED command of `d1`.
    dispatched: String,
    /// Leases of `d1`'s commands: each call releasing one takes a fresh one.
    leases: Vec<String>,
    names: usize,
}

impl Targets {
    /// The path (real ids, the query an allowed caller would give) and body of a call to
    /// `method template`; bodies are what an allowed caller sends to succeed where that is cheap.
    fn request(&mut self, method: &str, template: &str) -> (String, Body) {
        let path = self.path(method, template);
        let (d1, g1) = (self.d1.clone(), self.g1.clone());
        let target = json!({"resourceId": "api", "resourceType": "container"});
        let json = match (method, template) {
            ("POST", "/v1/deployment-groups") => json!({"name": self.fresh_name()}),
            ("PATCH", "/v1/deployment-groups/{id}") => json!({"rollout": null}),
            // Another platform than `d1`'s: the release leaves it `running`.
            ("POST", "/v1/releases") => json!({"stack": {"aws": fixture("valid-web.json")}}),
            ("POST", "/v1/deployments") => {
                json!({"name": self.fresh_name(), "platform": "local", "deploymentGroupId": g1})
            }
            ("POST", "/v1/deployments/{id}/delete") => json!({"action": "cleanup"}),
            ("POST", "/v1/initialize") => {
                json!({"name": self.fresh_name(), "deploymentGroupId": g1})
            }
            ("POST", "/v1/sync") => json!({"deploymentId": d1}),
            ("POST", "/v1/sync/acquire") => json!({"session": "matrix", "deploymentIds": [d1]}),
            ("POST", "/v1/sync/reconcile") => json!({"deploymentId": d1, "session": "matrix",
                "state": {"status": "running", "platform": "local"}}),
            ("POST", "/v1/sync/renew" | "/v1/sync/release") => {
                json!({"deploymentId": d1, "session": "matrix"})
            }
            ("POST", "/v1/commands") => json!({"deploymentId": d1, "command": "work",
                "params": {"mode": "inline", "inlineBase64": b64(PARAMS)}}),
            ("POST", "/v1/commands/{id}/upload-complete") => json!({"size": PARAMS.len()}),
            ("POST", "/v1/commands/leases") => json!({"deploymentId": d1, "target": target}),
            ("PUT", "/v1/commands/{id}/response") => {
                json!({"status": "success", "response": {"mode": "inline", "inlineBase64": ""}})
            }
            ("POST", "/v1/credentials/mint") => {
                json!({"deploymentId": d1, "resourceId": "api", "bindingName": "storage"})
            }
            ("PUT", "/v1/commands/{id}/payload") => {
                return (path, Body::Bytes("application/octet-stream", PARAMS.to_vec()));
            }
            // An empty OTLP export request is a valid one.
            ("POST", "/v1/traces" | "/v1/logs" | "/v1/metrics") => {
                return (path, Body::Bytes("application/x-protobuf", Vec::new()));
            }
            _ => return (path, Body::Empty),
        };
        (path, Body::Json(json))
    }

    fn path(&mut self, method: &str, template: &str) -> String {
        let id = match (method, template) {
            (_, t) if t.starts_with("/v1/deployment-groups/{id}") => self.g1.clone(),
            (_, t) if t.starts_with("/v1/deployments/{id}") => self.d1.clone(),
            (_, "/v1/releases/{id}") => self.release.clone(),
            (_, "/v1/tokens/{id}") => self.spare_token.clone(),
            (_, "/v1/commands/{id}/upload-complete") => self.uploaded.clone(),
            (_, "/v1/commands/{id}/response") => self.dispatched.clone(),
            ("PUT", "/v1/commands/{id}/payload") => self.awaiting_params.clone(),
            (_, "/v1/commands/{id}" | "/v1/commands/{id}/payload") => self.command.clone(),
            (_, "/v1/commands/leases/{lease_id}/release") => {
                let lease = self.leases.pop().expect("a fresh lease per call: lease more");
                return template.replace("{lease_id}", &lease);
            }
            (_, "/v1/payloads/{key}") => {
                return format!("/v1/payloads/arc/commands/{}/params", self.command);
            }
            ("GET", "/v1/deployments") => {
                return format!("{template}?deploymentGroupId={}", self.g1);
            }
            (_, "/v1/build-config" | "/v1/releases/latest") => {
                return format!("{template}?platform=local");
            }
            (_, t) => {
                assert!(!t.contains('{'), "{method} {t}: give its path parameters an id here");
                return t.to_owned();
            }
        };
        template.replace("{id}", &id)
    }

    fn fresh_name(&mut self) -> String {
        self.names += 1;
        format!("matrix-{}", self.names)
    }
}

async fn send(
    api: &Api,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> (u16, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", api.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request = match body {
        Body::Empty => request,
        Body::Json(json) => request.json(&json),
        Body::Bytes(content_type, bytes) => {
            request.header("content-type", content_type).body(bytes)
        }
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Drives a deployment to `running` on its desired release through the store.
async fn make_running(api: &Api, id: &str) {
    let id = Id::parse_any(id).unwrap();
    let release = api.store.get_deployment(&id).await.unwrap().unwrap().desired_release_id;
    for (event, current_release_id) in [
        (DeploymentEvent::BeginProvisioning, None),
        (DeploymentEvent::StepSucceeded, Some(release.unwrap())),
    ] {
        let patch =
            DeploymentPatch { current_release_id, reason: "test".into(), ..Default::default() };
        api.store.transition(&id, event, patch).await.unwrap();
    }
}

/// The ids the matrix calls with: a release, groups `g1` and `g2` with their tokens, `d1` (running,
/// in `g1`) with a sibling in `g1` and a deployment in `g2`, commands of `d1` in every state a
/// command route needs, leases, and a spare token to revoke.
async fn matrix_targets(api: &Api) -> (Targets, Vec<(Caller, String)>) {
    let release = api
        .admin(
            Method::POST,
            "/v1/releases",
            Some(json!({"stack": {"local": fixture("valid-web.json")}})),
        )
        .await;
    let (g1, g1_token) = api.group("g1").await;
    let (g2, g2_token) = api.group("g2").await;
    let (d1, d1_token) = api.deployment(&g1, "d1").await;
    let (_, sibling_token) = api.deployment(&g1, "d1-sibling").await;
    let (_, d2_token) = api.deployment(&g2, "d2").await;
    make_running(api, &d1).await;
    let spare = api.admin(Method::POST, &format!("/v1/deployment-groups/{g2}/tokens"), None).await;

    let command = |mode: Value| json!({"deploymentId": d1, "command": "work", "params": mode});
    let inline = command(json!({"mode": "inline", "inlineBase64": b64(PARAMS)}));
    let storage = command(json!({"mode": "storage", "size": PARAMS.len()}));
    const LEASED: usize = 12;
    for _ in 0..LEASED {
        api.admin(Method::POST, "/v1/commands", Some(inline.clone())).await;
    }
    let target = json!({"resourceId": "api", "resourceType": "container"});
    let lease =
        json!({"deploymentId": d1, "target": target, "maxLeases": LEASED, "leaseSeconds": 3600});
    let leased = api.admin(Method::POST, "/v1/commands/leases", Some(lease)).await;
    let mut leases: Vec<(String, String)> = leased["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["leaseId"].as_str().unwrap().into(), l["commandId"].as_str().unwrap().into()))
        .collect();
    assert_eq!(leases.len(), LEASED, "{leased}");
    let dispatched = leases.pop().unwrap().1;
    let created = api.admin(Method::POST, "/v1/commands", Some(inline)).await;
    let pending = created["commandId"].as_str().unwrap().to_owned();
    let created = api.admin(Method::POST, "/v1/commands", Some(storage.clone())).await;
    let uploaded = created["commandId"].as_str().unwrap().to_owned();
    let put = created["storageUpload"]["putRequest"]["backend"]["url"].as_str().unwrap();
    let r = reqwest::Client::new().put(put).body(PARAMS).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let created = api.admin(Method::POST, "/v1/commands", Some(storage)).await;
    let awaiting_params = created["commandId"].as_str().unwrap().to_owned();

    let targets = Targets {
        g1,
        d1,
        release: release["id"].as_str().unwrap().to_owned(),
        spare_token: spare["id"].as_str().unwrap().to_owned(),
        command: pending,
        uploaded,
        awaiting_params,
        dispatched,
        leases: leases.into_iter().map(|(lease, _)| lease).collect(),
        names: 0,
    };
    let callers = vec![
        (Caller::Admin, api.admin.clone()),
        (Caller::Group, g1_token),
        (Caller::OtherGroup, g2_token),
        (Caller::Deployment, d1_token),
        (Caller::Sibling, sibling_token),
        (Caller::OtherGroupDeployment, d2_token),
    ];
    (targets, callers)
}

/// Every operation of the server's own `/openapi.json` (the `/v2` registry routes aside: see
/// `registry_auth.rs`) called without a valid token and with each kind of token, against the
/// access rule `ACCESS` states for it.
#[tokio::test]
async fn auth_matrix_covers_every_route() {
    let api = Api::start().await;
    let (status, doc) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200, "the document itself is public: {doc}");
    let mut operations: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path.starts_with("/v2/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
                .contains(&method.as_str())
            {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let rule_of = |method: &str, path: &str| {
        let rows: Vec<Rule> =
            ACCESS.iter().filter(|(m, p, _)| *m == method && *p == path).map(|r| r.2).collect();
        assert!(rows.len() <= 1, "{method} {path} has {} rows in ACCESS", rows.len());
        rows.first().copied()
    };
    let unlisted: Vec<String> = operations
        .iter()
        .filter(|(m, p)| rule_of(m, p).is_none())
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        unlisted.is_empty(),
        "documented routes without an access rule in ACCESS: {unlisted:?}"
    );
    let undocumented: Vec<String> = ACCESS
        .iter()
        .filter(|(m, p, _)| !operations.iter().any(|(om, op)| om == m && op == p))
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "ACCESS rows /openapi.json does not document: {undocumented:?}"
    );

    let (mut targets, callers) = matrix_targets(&api).await;
    // `d1` leaves `running` last (commands need it running): redeployed, then deleted.
    operations.sort_by_key(|(m, p)| match (m.as_str(), p.as_str()) {
        ("POST", "/v1/deployments/{id}/redeploy") => 1,
        ("POST", "/v1/deployments/{id}/delete") => 2,
        _ => 0,
    });
    let unknown_admin = format!("ax_admin_{}", "0".repeat(40));
    let mut calls = 0;
    for (method, template) in &operations {
        let rule = rule_of(method, template).unwrap();
        for token in [None, Some(unknown_admin.as_str()), Some("not-a-token")] {
            let (path, body) = targets.request(method, template);
            let (status, response) = send(&api, method, &path, token, body).await;
            calls += 1;
            if let Rule::Public = rule {
                assert_eq!(status, 200, "{method} {path} with {token:?}: {response}");
                continue;
            }
            assert_eq!(status, 401, "{method} {path} with {token:?}: {response}");
            assert_eq!(response["code"], "UNAUTHORIZED", "{method} {path}: {response}");
        }
        // The refused calls first, so the allowed (possibly state-changing) ones come last.
        let mut ordered = callers.clone();
        ordered.sort_by_key(|(caller, _)| rule.allows(*caller));
        for (caller, token) in ordered {
            let (path, body) = targets.request(method, template);
            let (status, response) = send(&api, method, &path, Some(&token), body).await;
            calls += 1;
            let call = format!("{method} {path} as {caller:?} ({rule:?})");
            match rule {
                Rule::Public => assert_eq!(status, 200, "{call}: {response}"),
                Rule::SignedUrlOnly => {
                    assert_eq!(status, 401, "{call}: {response}");
                    assert_eq!(response["code"], "UNAUTHORIZED", "{call}: {response}");
                }
                _ if rule.allows(caller) => assert!(
                    status != 401 && status != 403 && status < 500,
                    "{call}: {status} {response}"
                ),
                _ => {
                    assert_eq!(status, 403, "{call}: {response}");
                    assert_eq!(response["code"], "FORBIDDEN", "{call}: {response}");
                }
            }
        }
    }
    assert_eq!(calls, operations.len() * 9);
}

/// A cloud registry as `GET /v1/build-config` sees it: push credentials for good names, a
/// refusal for `bad-for-the-cloud`, and an outage for `down`.
#[derive(Debug)]
struct CloudRegistry;

#[async_trait::async_trait]
impl alien_registry::ArtifactRegistry for CloudRegistry {
    fn kind(&self) -> &'static str {
        "ecr"
    }
    fn host(&self) -> &str {
        "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    }
    fn repository_name(&self) -> &str {
        "alien"
    }
    async fn pull_credentials(
        &self,
        _: alien_registry::PullFor<'_>,
    ) -> Result<alien_core::sync::RegistryCredentials, alien_registry::ArtifactRegistryError> {
        unreachable!("build-config never pulls")
    }
    async fn push_credentials(
        &self,
        repositories: &[String],
    ) -> Result<Option<alien_core::api::PushCredentials>, alien_registry::ArtifactRegistryError>
    {
        use alien_registry::ArtifactRegistryError as E;
        if let Some(bad) = repositories.iter().find(|r| *r == "bad-for-the-cloud") {
            return Err(E::InvalidRepository { repository: bad.clone(), message: "no".into() });
        }
        if repositories.iter().any(|r| r == "down") {
            return Err(E::Unavailable {
                registry: self.host().into(),
                message: "throttled".into(),
            });
        }
        assert_eq!(repositories, ["web", "worker"], "deduplicated, in order");
        Ok(Some(alien_core::api::PushCredentials {
            username: "AWS".into(),
            password: "ecr-token".into(),
            expires_at: chrono::Utc::now(),
        }))
    }
}

#[tokio::test]
async fn build_config_checks_repositories_and_answers_push_credentials() {
    let registries = alien_registry::ArtifactRegistries::new(std::sync::Arc::new(
        alien_registry::EmbeddedRegistry::new("127.0.0.1:1"),
    ))
    .with_platform(alien_core::Platform::Aws, std::sync::Arc::new(CloudRegistry));
    let api = Api::start_with(Some(registries)).await;

    // The embedded registry takes the manager token: no credentials.
    let local =
        api.admin(Method::GET, "/v1/build-config?platform=local&repositories=web", None).await;
    assert_eq!(local["repositoryName"], "artifacts");
    assert!(local.get("credentials").is_none(), "{local}");

    let aws = api
        .admin(Method::GET, "/v1/build-config?platform=aws&repositories=web,worker,web", None)
        .await;
    assert_eq!(aws["registry"], "123456789012.dkr.ecr.us-east-1.amazonaws.com");
    assert_eq!(aws["credentials"]["username"], "AWS");
    assert_eq!(aws["credentials"]["password"], "ecr-token");
    assert!(aws["credentials"]["expiresAt"].is_string(), "{aws}");

    for (query, bad) in [
        ("repositories=web,Web", "\"Web\""),
        ("repositories=web,,worker", "\"\""),
        ("repositories=web%20app", "\"web app\""),
        ("repositories=bad-for-the-cloud", "bad-for-the-cloud"),
    ] {
        let path = format!("/v1/build-config?platform=aws&{query}");
        let (status, body) = api.call(Method::GET, &path, Some(&api.admin), None).await;
        assert_eq!(status, 400, "{query}: {body}");
        let violation = &body["context"]["errors"][0];
        assert_eq!(violation["path"], "repositories", "{body}");
        assert!(violation["message"].as_str().unwrap().contains(bad), "{query}: {body}");
    }

    let path = "/v1/build-config?platform=aws&repositories=down";
    let (status, body) = api.call(Method::GET, path, Some(&api.admin), None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["message"].as_str().unwrap().contains("throttled"), "{body}");
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
    assert_eq!((status, r["code"].as_str()), (409, Some("CONFLICT")), "no group yet: {r}");
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
    assert_eq!(status, 409, "{r}");
    assert!(r["message"].as_str().unwrap().contains("deploymentGroupId"), "{r}");
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
    assert_eq!((status, r["code"].as_str()), (409, Some("MAX_DEPLOYMENTS_REACHED")));
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
        "/install/agent.sh",
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
