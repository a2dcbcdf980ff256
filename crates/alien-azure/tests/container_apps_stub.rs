//! [`ContainerAppsDeployer`] against the contract stub of Resource Manager (Container Apps,
//! role assignments) and Entra ID, with the token the managed-identity impersonation got for
//! the deployment's application: the seed's `valid-web.json` stack created, re-applied,
//! updated, failed, fixed, refreshed and destroyed.
//!
//! What the stub cannot show: that an image exists and starts (a revision fails only when a
//! test says so), ARM's authorization decisions (the stub records which identity's token each
//! call carried), real provisioning timing (an operation ends on its second read), replica
//! counts beyond "the floor once provisioned", and environment features (tcp ingress needs a
//! VNet-integrated environment).
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use alien_azure::apps::{ROLLOUT_FAILED, app_name, outputs};
use alien_azure::entra::{ManagedIdentityEndpoint, StaticToken, TOKEN_EXCHANGE_AUDIENCE};
use alien_azure::stub::{ContractStub, IDENTITY_HEADER};
use alien_azure::{
    AcrRegistry, AcrSettings, Arm, ContainerAppsDeployer, ManagedIdentityImpersonator,
};
use alien_core::{Deployment, EnvironmentVariable, Id, IdKind, Stack, VariableType};
use alien_deployer::{ContainerEnv, Credentials, DeployRequest, PlatformDeployer, StepOutcome};
use alien_impersonation::{Identity, ImpersonationTarget, Impersonator};
use serde_json::{Value, json};

const SUBSCRIPTION: &str = "55555555-5555-5555-5555-555555555555";
const TENANT: &str = "33333333-3333-3333-3333-333333333333";
const CLIENT: &str = "22222222-2222-2222-2222-222222222222";
const MANAGEMENT: &str = "11111111-1111-1111-1111-111111111111";
const PRINCIPAL: &str = "77777777-7777-7777-7777-777777777777";
const GROUP: &str = "rg-acme";
const SECRET: &str = "s3cr3t-db-password-value";
const TOKEN: &str = "ax_dep_TOKENVALUE";

struct World {
    stub: ContractStub,
    deployer: ContainerAppsDeployer,
    credentials: Credentials,
    target: Value,
    deployment: Deployment,
}

fn environment_id() -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.App/managedEnvironments/acme-env"
    )
}

fn identity_id() -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/alien-pull"
    )
}

async fn world() -> World {
    let stub = ContractStub::start().await.unwrap();
    let management = Arc::new(ManagedIdentityEndpoint::new(
        &stub.identity_endpoint(),
        IDENTITY_HEADER,
        Some(MANAGEMENT.into()),
        TOKEN_EXCHANGE_AUDIENCE,
    ));
    let impersonator = ManagedIdentityImpersonator::new(stub.base(), management, None);
    let identity = Identity::Azure {
        client_id: CLIENT.into(),
        tenant_id: Some(TENANT.into()),
        subscription_id: Some(SUBSCRIPTION.into()),
    };
    let credentials =
        impersonator.credentials(&ImpersonationTarget::new(identity, None)).await.unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "id": Id::new(IdKind::Deployment).to_string(), "name": "acme",
        "platform": "azure", "status": "provisioning", "deploymentModel": "push",
        "deploymentGroupId": Id::new(IdKind::DeploymentGroup).to_string(),
        "retryRequested": false,
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
    }))
    .unwrap();
    let target = json!({"subscriptionId": SUBSCRIPTION, "tenantId": TENANT, "clientId": CLIENT,
        "resourceGroup": GROUP, "location": "westeurope", "environmentId": environment_id()});
    let arm = Arm::new(stub.base(), Arc::new(StaticToken::new("manager-token")));
    World { deployer: ContainerAppsDeployer::new(arm), stub, credentials, target, deployment }
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

    async fn step(&self, release: &Id, stack: &Stack, state: Option<&Value>) -> StepOutcome {
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
                credentials: &self.credentials,
            })
            .await
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

    fn app_id(&self, container: &str) -> String {
        format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.App/containerApps/{}",
            app_name(&self.deployment, container)
        )
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
                    assert_eq!(done, json!({"platform": "azure", "resources": {}}));
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

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

#[tokio::test]
async fn deploy_update_fail_fix_refresh_and_destroy_on_the_contract_stub() {
    let w = world().await;
    let id = w.app_id("api");
    let v1 = Id::new(IdKind::Release);
    let state = w.converge(&v1, &stack("ghcr.io/acme/api:v1"), None).await;

    // What was put: the documented app shape, as the customer's application.
    let puts: Vec<_> = w.stub.requests().into_iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 1);
    let put = &puts[0];
    assert_eq!(put.path, id);
    assert_eq!(put.query["api-version"], "2024-03-01");
    let info = w.stub.token_info(put.token.as_deref().unwrap()).unwrap();
    assert_eq!((info.client_id.as_str(), info.tenant.as_deref()), (CLIENT, Some(TENANT)));
    let body = put.body.as_ref().unwrap();
    assert_eq!(body["location"], "westeurope");
    assert_eq!(body["properties"]["environmentId"], environment_id());
    let configuration = &body["properties"]["configuration"];
    assert_eq!(configuration["activeRevisionsMode"], "Single");
    assert_eq!(configuration["ingress"]["external"], true);
    assert_eq!(configuration["ingress"]["targetPort"], 8080);
    assert_eq!(configuration["ingress"]["transport"], "auto");
    let template = &body["properties"]["template"];
    let container = &template["containers"][0];
    assert_eq!(container["image"], "ghcr.io/acme/api:v1");
    assert_eq!(container["command"], json!(["./server", "--port", "8080"]));
    // 2 vCPU and 1 GiB asked: the allowed pair is 2 vCPU with 4 GiB.
    assert_eq!(container["resources"], json!({"cpu": 2.0, "memory": "4Gi"}));
    let env = env_of(container);
    assert_eq!(env["MODE"], json!({"name": "MODE", "value": "production"}));
    assert_eq!(env["LOG_LEVEL"]["value"], "info");
    let secret_ref = env["DB_PASSWORD"]["secretRef"].as_str().unwrap();
    assert!(env["DB_PASSWORD"].get("value").is_none());
    assert!(env["ALIEN_COMMANDS_TOKEN"]["secretRef"].is_string(), "the token is a secret too");
    let secrets = configuration["secrets"].as_array().unwrap();
    assert!(secrets.iter().any(|s| s["name"] == secret_ref && s["value"] == SECRET));
    assert!(
        !env_of(container).values().any(|e| e["value"].as_str().is_some_and(|v| v.contains(TOKEN))),
        "no token in plain env"
    );
    let probes = container["probes"].as_array().unwrap();
    assert_eq!(probes[0]["type"], "Startup");
    assert_eq!(probes[1]["type"], "Liveness");
    assert_eq!(probes[1]["httpGet"], json!({"path": "/health", "port": 8080}));
    assert_eq!(probes[1]["failureThreshold"], 3);
    let scale = &template["scale"];
    assert_eq!((scale["minReplicas"].as_u64(), scale["maxReplicas"].as_u64()), (Some(2), Some(20)));
    let rules = scale["rules"].as_array().unwrap();
    assert_eq!(rules[0]["http"]["metadata"]["concurrentRequests"], "100");
    assert_eq!(
        rules[1]["custom"],
        json!({"type": "cpu", "metadata": {"type": "Utilization", "value": "70"}})
    );
    assert_eq!(rules[2]["custom"]["type"], "memory");
    assert!(template["revisionSuffix"].as_str().unwrap().starts_with('r'));

    // The outputs.
    let out = outputs(&state, "api").unwrap();
    assert_eq!(out["status"], "running");
    let fqdn = out["latestRevisionFqdn"].as_str().unwrap();
    assert_eq!(out["url"], format!("https://{fqdn}"));
    assert_eq!(out["currentReplicas"], 2);
    assert_eq!(out["containerApps"]["rounded"], true);
    assert_eq!(state["resources"]["api"]["status"], "running");
    // The stored app shows no secret value (Container Apps never returns them).
    assert!(!w.stub.app(&id).unwrap().to_string().contains(SECRET));

    // Re-applying the same release sends nothing.
    let puts = || w.stub.requests().iter().filter(|r| r.method == "PUT").count();
    let before = puts();
    let again = w.step(&v1, &stack("ghcr.io/acme/api:v1"), Some(&state)).await;
    assert!(matches!(again, StepOutcome::Done { .. }), "{again:?}");
    assert_eq!(puts(), before);

    // An update makes a new revision.
    let v2 = Id::new(IdKind::Release);
    let state = w.converge(&v2, &stack("ghcr.io/acme/api:v2"), Some(&state)).await;
    assert_eq!(w.stub.revisions(&id).len(), 2);
    let v2_revision = outputs(&state, "api").unwrap()["latestReadyRevisionName"].clone();

    // A revision that does not provision fails the update, naming the container; the previous
    // one keeps serving.
    w.stub.fail_revisions_of(&app_name(&w.deployment, "api"));
    let v3 = Id::new(IdKind::Release);
    let mut outcome = w.step(&v3, &stack("ghcr.io/acme/api:v3"), Some(&state)).await;
    for _ in 0..3 {
        if let StepOutcome::Wait { state, .. } = &outcome {
            outcome = w.step(&v3, &stack("ghcr.io/acme/api:v3"), Some(state)).await;
        }
    }
    let StepOutcome::Failed { state: Some(failed), error } = outcome else { panic!("{outcome:?}") };
    assert_eq!(error.code, ROLLOUT_FAILED);
    assert_eq!(error.resource_id.as_deref(), Some("api"));
    assert!(error.message.starts_with("container api: "), "{}", error.message);
    assert!(
        error.message.contains(&format!("stays on revision {}", v2_revision.as_str().unwrap())),
        "{}",
        error.message
    );
    assert_eq!(failed["resources"]["api"]["status"], "update-failed");

    // Refresh reports it failing.
    let report = w.deployer.refresh(&w.deployment, Some(&failed), &w.credentials).await;
    assert_eq!(report.failing.unwrap().code, ROLLOUT_FAILED);

    // Fixed: retrying the same release makes another revision, which provisions.
    w.stub.heal_revisions_of(&app_name(&w.deployment, "api"));
    let revisions_before = w.stub.revisions(&id).len();
    let state = w.converge(&v3, &stack("ghcr.io/acme/api:v3"), Some(&failed)).await;
    assert_eq!(w.stub.revisions(&id).len(), revisions_before + 1, "a retry is a new revision");
    let report = w.deployer.refresh(&w.deployment, Some(&state), &w.credentials).await;
    assert!(report.failing.is_none(), "{report:?}");
    assert_eq!(outputs(report.state.as_ref().unwrap(), "api").unwrap()["status"], "running");

    w.destroy_all(state).await;
    assert!(w.stub.apps().is_empty());
    let deletes: Vec<_> = w.stub.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert!(!deletes.is_empty() && deletes.iter().all(|r| r.path == id));
}

#[tokio::test]
async fn a_tcp_port_is_tcp_ingress_on_its_exposed_port_on_the_contract_stub() {
    let w = world().await;
    let tcp = stack_with("ghcr.io/acme/db:v1", |config| {
        config["ports"] = json!([{"port": 5432, "expose": "tcp"}]);
        config["healthCheck"] = Value::Null;
        config["autoscaling"] = Value::Null;
        config["replicas"] = json!(1);
        config["cpu"] = json!({"desired": "0.5", "min": "0.5"});
    });
    let state = w.converge(&Id::new(IdKind::Release), &tcp, None).await;
    let app = w.stub.app(&w.app_id("api")).unwrap();
    let ingress = &app["properties"]["configuration"]["ingress"];
    assert_eq!(
        (ingress["transport"].as_str(), ingress["exposedPort"].as_u64()),
        (Some("tcp"), Some(5432))
    );
    let scale = &app["properties"]["template"]["scale"];
    assert_eq!((scale["minReplicas"].as_u64(), scale["maxReplicas"].as_u64()), (Some(1), Some(1)));
    assert_eq!(
        app["properties"]["template"]["containers"][0]["resources"],
        json!({"cpu": 0.5, "memory": "1Gi"})
    );
    let url = outputs(&state, "api").unwrap()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("tcp://") && url.ends_with(":5432"), "{url}");
}

#[tokio::test]
async fn a_target_missing_a_field_is_refused_naming_it_on_the_contract_stub() {
    let mut w = world().await;
    w.target.as_object_mut().unwrap().remove("environmentId");
    let before = w.stub.requests().len();
    let outcome = w.step(&Id::new(IdKind::Release), &stack("ghcr.io/acme/api:v1"), None).await;
    let StepOutcome::Failed { error, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(error.code, "INVALID_TARGET");
    assert!(error.message.starts_with("target.environmentId "), "{}", error.message);
    assert_eq!(w.stub.requests().len(), before, "nothing called");
}

#[tokio::test]
async fn an_image_of_the_registry_is_granted_and_pulled_with_the_identity_on_the_contract_stub() {
    let mut w = world().await;
    let manager: Arc<dyn alien_azure::TokenSource> = Arc::new(StaticToken::new("manager-token"));
    let acr = AcrRegistry::new(&AcrSettings {
        registry_name: "vendorregistry".into(),
        resource_group_name: "rg-vendor".into(),
        subscription_id: Some("99999999-9999-9999-9999-999999999999".into()),
        repository_prefix: Some("releases".into()),
        login_server_url: Some(w.stub.base().to_owned()),
        arm: Arm::new(w.stub.base(), manager.clone()),
        tokens: manager.clone(),
    })
    .unwrap();
    w.deployer =
        ContainerAppsDeployer::new(Arm::new(w.stub.base(), manager)).with_registry(Arc::new(acr));
    let image = "vendorregistry.azurecr.io/releases/api:v1";

    // Without the identity the app would pull with, the step says which fields are missing.
    let outcome = w.step(&Id::new(IdKind::Release), &stack(image), None).await;
    let StepOutcome::Failed { error, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(error.code, "INVALID_TARGET");
    assert!(error.message.contains("target.identityResourceId"), "{}", error.message);

    w.target["identityResourceId"] = json!(identity_id());
    w.target["identityPrincipalId"] = json!(PRINCIPAL);
    w.converge(&Id::new(IdKind::Release), &stack(image), None).await;
    let assignments = w.stub.role_assignments();
    assert_eq!(assignments.len(), 1);
    assert_eq!(assignments[0].1["principalId"], PRINCIPAL);
    let grant = &w.stub.requests_to("/roleAssignments/")[0];
    assert_eq!(grant.token.as_deref(), Some("manager-token"), "granted as the manager");
    let app = w.stub.app(&w.app_id("api")).unwrap();
    assert_eq!(
        app["properties"]["configuration"]["registries"],
        json!([{"server": "vendorregistry.azurecr.io", "identity": identity_id()}])
    );
    assert_eq!(app["identity"]["type"], "UserAssigned");
    assert!(app["identity"]["userAssignedIdentities"][identity_id()].is_object());

    // Images elsewhere need no grant.
    let before = w.stub.requests_to("/roleAssignments/").len();
    w.converge(&Id::new(IdKind::Release), &stack("ghcr.io/acme/api:v9"), None).await;
    assert_eq!(w.stub.requests_to("/roleAssignments/").len(), before);
}

#[tokio::test]
async fn a_container_dropped_by_a_release_is_removed_on_the_contract_stub() {
    let w = world().await;
    let two = {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/valid-web.json");
        let mut value: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut worker = value["resources"]["api"].clone();
        worker["config"]["id"] = json!("worker");
        value["resources"]["worker"] = worker;
        alien_core::parse_release_stack(&value).unwrap()
    };
    let state = w.converge(&Id::new(IdKind::Release), &two, None).await;
    assert_eq!(w.stub.apps().len(), 2);
    let mut state = Some(state);
    let one = stack("ghcr.io/acme/api:v1");
    let release = Id::new(IdKind::Release);
    for _ in 0..6 {
        match w.step(&release, &one, state.as_ref()).await {
            StepOutcome::Done { state: done } => {
                state = Some(done);
                break;
            }
            StepOutcome::Wait { state: next, .. } => state = Some(next),
            StepOutcome::Failed { error, .. } => panic!("{error:?}"),
        }
    }
    assert_eq!(w.stub.apps(), vec![w.app_id("api")]);
    assert!(state.unwrap()["azure"]["containers"].get("worker").is_none());
}
