//! [`CloudRunDeployer`] against the contract stub of Cloud Run Admin v2, Secret Manager and IAM
//! Credentials, with the access token IAM Credentials minted for the deployment's service
//! account: the seed's `valid-web.json` stack created, re-applied, updated, failed, fixed,
//! refreshed and destroyed.
//!
//! What the stub cannot show: that an image exists and starts (a revision fails only when a test
//! says so), Google's authorization decisions (the stub records which account's token each call
//! carried), real reconciliation timing (an operation finishes on its second read), and
//! instance counts (Cloud Run's Admin API has none).
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use alien_core::{Deployment, EnvironmentVariable, Id, IdKind, Stack, VariableType};
use alien_deployer::{ContainerEnv, Credentials, DeployRequest, PlatformDeployer, StepOutcome};
use alien_gcp::auth::StaticToken;
use alien_gcp::run::{self, outputs, service_id};
use alien_gcp::stub::ContractStub;
use alien_gcp::{CloudRunDeployer, GarRegistry, GarSettings, IamImpersonator};
use alien_impersonation::{GCP_CLOUD_PLATFORM_SCOPE, Identity, ImpersonationTarget, Impersonator};
use serde_json::{Value, json};

const PROJECT: &str = "customer-project";
const NUMBER: &str = "123456789012";
const REGION: &str = "europe-west1";
const DEPLOYER: &str = "alien-deployer@customer-project.iam.gserviceaccount.com";
const SECRET: &str = "s3cr3t-db-password-value";
const TOKEN: &str = "ax_dep_TOKENVALUE";

struct World {
    stub: ContractStub,
    deployer: CloudRunDeployer,
    credentials: Credentials,
    target: Value,
    deployment: Deployment,
}

async fn world() -> World {
    let stub = ContractStub::start().await.unwrap();
    stub.add_project(PROJECT, NUMBER);
    let settings = stub.settings(Arc::new(StaticToken::new("manager-token", None)));
    let iam = IamImpersonator::new(&settings, None);
    let identity = Identity::Gcp {
        service_account_email: DEPLOYER.into(),
        scopes: vec![GCP_CLOUD_PLATFORM_SCOPE.into()],
    };
    let credentials = iam.credentials(&ImpersonationTarget::new(identity, None)).await.unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "id": Id::new(IdKind::Deployment).to_string(), "name": "acme",
        "platform": "gcp", "status": "provisioning", "deploymentModel": "push",
        "deploymentGroupId": Id::new(IdKind::DeploymentGroup).to_string(),
        "retryRequested": false,
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
    }))
    .unwrap();
    let target = json!({"projectId": PROJECT, "serviceAccountEmail": DEPLOYER, "region": REGION});
    World { deployer: CloudRunDeployer::new(&settings), stub, credentials, target, deployment }
}

/// The fixture's stack with `image`, its container's config changed by `edit`.
fn stack_with(image: &str, edit: impl FnOnce(&mut Value)) -> Stack {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/valid-web.json");
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    value["resources"]["api"]["config"]["code"]["image"] = json!(image);
    edit(&mut value["resources"]["api"]["config"]);
    alien_core::parse_release_stack(&value).unwrap()
}

fn stack(image: &str) -> Stack {
    stack_with(image, |_| {})
}

impl World {
    fn env(&self, stack: &Stack) -> (BTreeMap<String, ContainerEnv>, BTreeSet<String>) {
        let variables = vec![
            EnvironmentVariable {
                name: "DB_PASSWORD".into(),
                value: SECRET.into(),
                var_type: VariableType::Secret,
            },
            EnvironmentVariable {
                name: "MODE".into(),
                value: "production".into(),
                var_type: VariableType::Plain,
            },
        ];
        let env = alien_deployer::stack_env(
            stack,
            &self.deployment,
            &variables,
            "https://manager.example.com",
            TOKEN,
        );
        (env, alien_deployer::secret_names(&variables))
    }

    async fn step_as(
        &self,
        release: &Id,
        stack: &Stack,
        state: Option<&Value>,
        credentials: &Credentials,
    ) -> StepOutcome {
        let (env, secret_names) = self.env(stack);
        self.deployer
            .apply(DeployRequest {
                deployment: &self.deployment,
                release_id: release,
                stack,
                env: &env,
                secret_names: &secret_names,
                platform_target: Some(&self.target),
                state,
                credentials,
            })
            .await
    }

    async fn step(&self, release: &Id, stack: &Stack, state: Option<&Value>) -> StepOutcome {
        self.step_as(release, stack, state, &self.credentials).await
    }

    /// Steps until done (at most five steps), checking that the first one waits.
    async fn converge(&self, release: &Id, stack: &Stack, state: Option<&Value>) -> Value {
        let mut state = waiting(self.step(release, stack, state).await);
        for _ in 0..5 {
            match self.step(release, stack, Some(&state)).await {
                StepOutcome::Done { state } => return state,
                StepOutcome::Wait { state: next, .. } => state = next,
                StepOutcome::Failed { error, .. } => panic!("failed: {error:?}"),
            }
        }
        panic!("no convergence: {state}")
    }

    fn service_id(&self, container: &str) -> String {
        service_id(&self.deployment, container)
    }

    fn service_name(&self, container: &str) -> String {
        format!("projects/{PROJECT}/locations/{REGION}/services/{}", self.service_id(container))
    }

    async fn destroy_all(&self, state: Value) {
        let mut state = Some(state);
        for _ in 0..10 {
            match self
                .deployer
                .destroy(&self.deployment, state.as_ref(), true, &self.credentials)
                .await
            {
                StepOutcome::Done { state: done } => {
                    assert_eq!(done, json!({"platform": "gcp", "resources": {}}));
                    return;
                }
                StepOutcome::Wait { state: next, .. } => state = Some(next),
                StepOutcome::Failed { error, .. } => panic!("destroy failed: {error:?}"),
            }
        }
        panic!("destroy did not finish");
    }
}

fn waiting(outcome: StepOutcome) -> Value {
    match outcome {
        StepOutcome::Wait { state, wait } => {
            assert!(wait.as_secs() <= 10, "{wait:?}");
            state
        }
        other => panic!("expected wait, got {other:?}"),
    }
}

fn done(outcome: StepOutcome) -> Value {
    match outcome {
        StepOutcome::Done { state } => state,
        other => panic!("expected done, got {other:?}"),
    }
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

fn short(revision: &Value) -> String {
    revision.as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn deploy_update_fail_fix_refresh_and_destroy_on_the_contract_stub() {
    let w = world().await;
    let name = w.service_name("api");
    let sid = w.service_id("api");

    // First release: created, not done on the first look, running on a later one.
    let v1 = Id::new(IdKind::Release);
    let state = w.converge(&v1, &stack("ghcr.io/acme/api:v1"), None).await;
    let creates: Vec<_> =
        w.stub.requests_to("/services").into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].path, format!("/v2/projects/{PROJECT}/locations/{REGION}/services"));
    assert_eq!(creates[0].query.get("serviceId"), Some(&sid));
    // Every Cloud Run and Secret Manager call carried the deployment account's token.
    for call in w
        .stub
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v2/") || r.path.contains("/secrets"))
    {
        let token = call.token.as_deref().unwrap();
        assert_eq!(
            w.stub.identity_of(token).as_deref(),
            Some(DEPLOYER),
            "{} {}",
            call.method,
            call.path
        );
    }

    let service = w.stub.service(&name).unwrap();
    assert_eq!(service["ingress"], "INGRESS_TRAFFIC_ALL");
    assert_eq!(service["invokerIamDisabled"], true);
    let template = &service["template"];
    assert_eq!(
        template["serviceAccount"], DEPLOYER,
        "the target's account when the stack names none"
    );
    assert_eq!(template["scaling"], json!({"minInstanceCount": 2, "maxInstanceCount": 20}));
    assert_eq!(template["maxInstanceRequestConcurrency"], 100);
    let container = &template["containers"][0];
    assert_eq!(container["image"], "ghcr.io/acme/api:v1");
    assert_eq!(container["ports"], json!([{"containerPort": 8080}]), "the exposed port only");
    assert_eq!(container["resources"]["limits"], json!({"cpu": "2", "memory": "1024Mi"}));
    assert_eq!(container["command"], json!(["./server", "--port", "8080"]));
    let startup = &container["startupProbe"];
    assert_eq!(startup["httpGet"], json!({"path": "/health", "port": 8080}));
    assert_eq!(startup["timeoutSeconds"], 1);
    let liveness = &container["livenessProbe"];
    assert_eq!(
        (liveness["failureThreshold"].as_u64(), liveness["timeoutSeconds"].as_u64()),
        (Some(3), Some(1))
    );
    let env = env_of(container);
    assert_eq!(env["MODE"]["value"], "production");
    assert_eq!(env["LOG_LEVEL"]["value"], "info");
    assert_eq!(env["ALIEN_COMMANDS_URL"]["value"], "https://manager.example.com/v1");
    for secret in ["DB_PASSWORD", "ALIEN_COMMANDS_TOKEN", "OTEL_EXPORTER_OTLP_HEADERS"] {
        let reference = &env[secret]["valueSource"]["secretKeyRef"];
        assert_eq!(
            reference["secret"],
            format!("projects/{PROJECT}/secrets/{sid}-{secret}"),
            "{secret}"
        );
        assert_eq!(reference["version"], "1");
        assert!(env[secret].get("value").is_none());
    }
    let password = w.stub.secret_versions(&format!("projects/{PROJECT}/secrets/{sid}-DB_PASSWORD"));
    assert_eq!(password, [SECRET.as_bytes().to_vec()]);
    for call in w.stub.requests_to("/v2/") {
        let body = call.body.map(|b| b.to_string()).unwrap_or_default();
        assert!(
            !body.contains(SECRET) && !body.contains("TOKENVALUE"),
            "a secret in plain configuration"
        );
    }
    let out = outputs(&state, "api").unwrap();
    assert_eq!(out["status"], "running");
    assert_eq!(out["url"], service["uri"]);
    assert!(out["url"].as_str().unwrap().starts_with("https://"));
    assert_eq!(
        (out["currentReplicas"].as_u64(), out["desiredReplicas"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(out["cloudRun"]["rounded"], false);
    assert_eq!(state["resources"]["api"]["status"], "running");

    // The same release again changes nothing.
    let before = w.stub.requests().iter().filter(|r| r.method != "GET").count();
    let again = done(w.step(&v1, &stack("ghcr.io/acme/api:v1"), Some(&state)).await);
    assert_eq!(w.stub.requests().iter().filter(|r| r.method != "GET").count(), before);

    // Second release: a patch, a new revision serving once ready; 1.5 vCPU rounds up to 2.
    let v2 = Id::new(IdKind::Release);
    let v2_stack =
        stack_with("ghcr.io/acme/api:v2", |c| c["cpu"] = json!({"min": "0.5", "desired": "1500m"}));
    let state = w.converge(&v2, &v2_stack, Some(&again)).await;
    assert_eq!(w.stub.requests_to(&name).iter().filter(|r| r.method == "PATCH").count(), 1);
    let revisions = w.stub.revisions(&name);
    assert_eq!(revisions.len(), 2);
    let service = w.stub.service(&name).unwrap();
    assert_eq!(service["latestReadyRevision"], revisions[1]);
    assert_eq!(service["template"]["containers"][0]["image"], "ghcr.io/acme/api:v2");
    let out = outputs(&state, "api").unwrap();
    assert_eq!(out["cloudRun"]["rounded"], true);
    assert_eq!(out["cloudRun"]["cpu"], "2");
    let password = w.stub.secret_versions(&format!("projects/{PROJECT}/secrets/{sid}-DB_PASSWORD"));
    assert_eq!(password.len(), 2, "a version per release");

    // Third release: its revision does not become ready. The step fails naming the container
    // and the revisions; traffic stays on the second revision.
    w.stub.fail_revisions_of(&sid);
    let v3 = Id::new(IdKind::Release);
    let v3_stack = stack("ghcr.io/acme/api:broken");
    let state = waiting(w.step(&v3, &v3_stack, Some(&state)).await);
    let state = match w.step(&v3, &v3_stack, Some(&state)).await {
        StepOutcome::Failed { state, error } => {
            assert_eq!(error.code, run::ROLLOUT_FAILED);
            assert_eq!(error.resource_id.as_deref(), Some("api"));
            let revisions = w.stub.revisions(&name);
            assert!(error.message.starts_with("container api: "), "{}", error.message);
            assert!(
                error.message.contains(&format!("revision {} failed", short(&json!(revisions[2])))),
                "{}",
                error.message
            );
            assert!(
                error.message.contains(&format!(
                    "traffic stays on revision {}",
                    short(&json!(revisions[1]))
                )),
                "{}",
                error.message
            );
            state.unwrap()
        }
        other => panic!("expected failed, got {other:?}"),
    };
    assert_eq!(state["resources"]["api"]["status"], "update-failed");
    let service = w.stub.service(&name).unwrap();
    let revisions = w.stub.revisions(&name);
    assert_eq!(service["latestReadyRevision"], revisions[1], "the previous revision stays ready");
    assert_eq!(service["trafficStatuses"][0]["revision"], short(&json!(revisions[1])));
    assert_eq!(service["terminalCondition"]["state"], "CONDITION_FAILED");

    // Refresh sees the failure.
    let report = w.deployer.refresh(&w.deployment, Some(&state), &w.credentials).await;
    assert_eq!(report.failing.unwrap().resource_id.as_deref(), Some("api"));

    // A retry of the same release (the cause fixed outside, e.g. the image pushed at last)
    // sends its spec again: a new revision, marked as the second attempt, which serves.
    w.stub.heal_revisions_of(&sid);
    let state = w.converge(&v3, &v3_stack, Some(&state)).await;
    let revisions = w.stub.revisions(&name);
    assert_eq!(revisions.len(), 4, "a new revision for the retry");
    let service = w.stub.service(&name).unwrap();
    assert_eq!(service["latestReadyRevision"], revisions[3]);
    assert_eq!(service["template"]["annotations"]["alien.dev/attempt"], "1");

    // A fixed release recovers (and counts its attempts afresh).
    let v4 = Id::new(IdKind::Release);
    let state = w.converge(&v4, &stack("ghcr.io/acme/api:v4"), Some(&state)).await;
    let service = w.stub.service(&name).unwrap();
    assert_eq!(service["latestReadyRevision"], w.stub.revisions(&name)[4]);
    assert!(service["template"]["annotations"].get("alien.dev/attempt").is_none());

    // Refresh reads the outputs.
    let report = w.deployer.refresh(&w.deployment, Some(&state), &w.credentials).await;
    assert_eq!(report.failing, None);
    let refreshed = report.state.unwrap();
    let out = outputs(&refreshed, "api").unwrap();
    assert_eq!(out["status"], "running");
    assert_eq!(out["url"], service["uri"]);
    assert_eq!(out["latestReadyRevision"], service["latestReadyRevision"]);

    // Destroy leaves nothing behind.
    w.destroy_all(state).await;
    assert!(w.stub.services().is_empty(), "{:?}", w.stub.services());
    assert!(w.stub.secrets().is_empty(), "{:?}", w.stub.secrets());
    // And again, from nothing: done at once.
    w.destroy_all(json!({"platform": "gcp", "resources": {}})).await;
}

/// A create that meets a service made since the deployer looked (another replica, a step
/// repeated after the state was lost) patches it instead.
#[tokio::test]
async fn a_create_meeting_an_existing_service_patches_it_on_the_contract_stub() {
    let w = world().await;
    let name = w.service_name("api");
    let v1 = Id::new(IdKind::Release);
    w.converge(&v1, &stack("ghcr.io/acme/api:v1"), None).await;
    // The state is lost, and the service looks absent once: the create gets 409.
    w.stub.fail_next(&format!("/services/{}", w.service_id("api")), 404, "NOT_FOUND");
    let v2 = Id::new(IdKind::Release);
    let state = w.converge(&v2, &stack("ghcr.io/acme/api:v2"), None).await;
    let calls = w.stub.requests_to("/services");
    let creates = calls.iter().filter(|r| r.method == "POST").count();
    let patches = calls.iter().filter(|r| r.method == "PATCH").count();
    assert_eq!((creates, patches), (2, 1), "the second create met the service and patched it");
    assert_eq!(
        w.stub.service(&name).unwrap()["template"]["containers"][0]["image"],
        "ghcr.io/acme/api:v2"
    );
    assert_eq!(outputs(&state, "api").unwrap()["status"], "running");
}

/// Cloud Run serves HTTP only: a `tcp` port fails before any call, naming the container.
#[tokio::test]
async fn a_tcp_port_is_not_supported_on_cloud_run_on_the_contract_stub() {
    let w = world().await;
    let tcp = stack_with("ghcr.io/acme/db:v1", |c| {
        c["ports"] = json!([{"port": 5432, "expose": "tcp"}]);
        c["healthCheck"] = Value::Null;
    });
    let before = w.stub.requests().len();
    match w.step(&Id::new(IdKind::Release), &tcp, None).await {
        StepOutcome::Failed { error, .. } => {
            assert_eq!(error.code, run::PLATFORM_NOT_SUPPORTED);
            assert_eq!(error.resource_id.as_deref(), Some("api"));
            assert!(
                error.message.contains("container api") && error.message.contains("tcp"),
                "{}",
                error.message
            );
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(w.stub.requests().len(), before, "nothing called");
}

/// A target without a region (and a deployment without one) fails naming `target.region`.
#[tokio::test]
async fn a_target_without_a_region_is_refused_naming_the_field_on_the_contract_stub() {
    let mut w = world().await;
    w.target.as_object_mut().unwrap().remove("region");
    match w.step(&Id::new(IdKind::Release), &stack("ghcr.io/acme/api:v1"), None).await {
        StepOutcome::Failed { error, .. } => {
            assert_eq!(error.code, run::INVALID_TARGET);
            assert!(error.message.starts_with("target.region "), "{}", error.message);
        }
        other => panic!("expected failed, got {other:?}"),
    }
}

/// An image of the platform's GAR repository: the customer project's Cloud Run agent is granted
/// read on it before the revision names it. Ambient credentials act as the manager.
#[tokio::test]
async fn an_image_of_the_registry_is_granted_before_it_is_named_on_the_contract_stub() {
    let w = world().await;
    let repository = "projects/vendor-project/locations/europe-west1/repositories/releases";
    w.stub.add_repository(repository);
    let settings = w.stub.settings(Arc::new(StaticToken::new("manager-token", None)));
    let gar = GarRegistry::new(&GarSettings {
        repository_name: repository.into(),
        push_service_account_email: None,
        pull_service_account_email: None,
        gcp: settings.clone(),
    })
    .unwrap();
    let deployer = CloudRunDeployer::new(&settings).with_registry(Arc::new(gar));
    let w = World { deployer, ..w };
    let image = "europe-west1-docker.pkg.dev/vendor-project/releases/api:v1";
    let state = waiting(
        w.step_as(&Id::new(IdKind::Release), &stack(image), None, &Credentials::Ambient).await,
    );
    let policy = w.stub.policy(repository);
    let agent =
        format!("serviceAccount:service-{NUMBER}@serverless-robot-prod.iam.gserviceaccount.com");
    assert_eq!(
        policy["bindings"],
        json!([{"role": "roles/artifactregistry.reader", "members": [agent]}])
    );
    let sets = w.stub.requests().iter().position(|r| r.path.ends_with(":setIamPolicy")).unwrap();
    let create = w
        .stub
        .requests()
        .iter()
        .position(|r| r.path.ends_with("/services") && r.method == "POST")
        .unwrap();
    assert!(sets < create, "granted before the service names the image");
    let create = &w.stub.requests()[create];
    assert_eq!(create.token.as_deref(), Some("manager-token"), "ambient: the manager's identity");
    assert!(state["gcp"]["containers"]["api"]["operation"].is_string());
}

/// A container the next release no longer has is removed, with its secrets, once the release
/// runs.
#[tokio::test]
async fn a_container_dropped_by_a_release_is_removed_on_the_contract_stub() {
    let w = world().await;
    let state = w.converge(&Id::new(IdKind::Release), &stack("ghcr.io/acme/api:v1"), None).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/valid-web.json");
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut api = value["resources"]["api"].take();
    api["config"]["id"] = json!("web");
    value["resources"] = json!({"web": api});
    let web = alien_core::parse_release_stack(&value).unwrap();
    let mut state = waiting(w.step(&Id::new(IdKind::Release), &web, Some(&state)).await);
    let v2 = Id::new(IdKind::Release);
    for _ in 0..6 {
        match w.step(&v2, &web, Some(&state)).await {
            StepOutcome::Done { state: done } => {
                state = done;
                break;
            }
            StepOutcome::Wait { state: next, .. } => state = next,
            StepOutcome::Failed { error, .. } => panic!("{error:?}"),
        }
    }
    assert!(state["resources"].get("api").is_none(), "{state}");
    assert!(state["gcp"]["containers"].get("api").is_none(), "{state}");
    assert_eq!(w.stub.services(), [w.service_name("web")]);
    let api_sid = w.service_id("api");
    assert!(w.stub.secrets().iter().all(|s| !s.contains(&api_sid)), "{:?}", w.stub.secrets());
}
