//! The Azure [`PlatformDeployer`]: each container of a release's stack as a container app
//! (`Microsoft.App/containerApps`, ARM api-version 2024-03-01) in the customer's managed
//! environment, with the Entra ID token the manager's impersonation got for the deployment's
//! application (`docs/azure.md`).
//!
//! Per container `c` of deployment `d`, app
//! `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.App/containerApps/{name}`
//! ([`app_name`]: `alien-{c}-{hash}`) with the image, ingress on the exposed port (http, or tcp
//! with `exposedPort`), cpu and memory rounded up to an allowed pair (the rounding is kept in
//! the outputs), replica bounds and scale rules, plain variables as values and secret ones (and
//! those carrying the deployment token) as app secrets referenced by `secretRef`, startup and
//! liveness probes from the health check (see `spec.rs`).
//!
//! A new release puts the app (a new revision). The operation (`Azure-AsyncOperation`) is
//! followed on later steps (`Wait`), never waited for; a container is done when the app is
//! `Succeeded` with its latest revision ready, and failed (`ROLLOUT_FAILED`, naming the
//! container) when the latest revision did not provision, in which case single revision mode
//! keeps the previous revision serving. Every step is idempotent: apps are found by name, a put
//! of the same spec makes no new revision, a delete that meets none is done. Destroy deletes the
//! apps; their secrets go with them.

mod book;
mod size;
mod spec;
mod target;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alien_core::stack::{Code, Expose};
use alien_core::{ContainerConfig, Deployment, DeploymentError};
use alien_deployer::platform::RefreshReport;
use alien_deployer::{Credentials, DeployRequest, PlatformDeployer, StepOutcome};
use alien_registry::ArtifactRegistry;
use serde_json::{Value, json};

pub use alien_deployer::codes::{PLATFORM_NOT_SUPPORTED, REGISTRY_ERROR, ROLLOUT_FAILED};
pub use book::{AppBook, Book, Rollout, STATE_UNREADABLE, app_name, outputs, rollout};
pub use size::{AppSize, app_size};
pub use target::{AppsTarget, INVALID_TARGET};

use book::{resource, state_of};
use spec::{EnvValue, SpecInputs, app_body, replica_bounds, secret_name};

use crate::arm::{Arm, ArmError, OperationState};
use crate::entra::{AccessToken, StaticToken, TokenSource};

/// The Container Apps api-version.
pub const API_VERSION: &str = "2024-03-01";
/// How long a step waits before looking at a rollout again.
const POLL: Duration = Duration::from_secs(5);
/// Error code of a failed Azure call.
pub const AZURE_ERROR: &str = "AZURE_ERROR";
/// Error code of a container the deployer cannot run.
pub const UNSUPPORTED: &str = alien_deployer::codes::UNSUPPORTED_CONTAINER;
/// Variables that carry the deployment token: kept as app secrets like the secret variables.
const TOKEN_VARIABLES: [&str; 2] = ["ALIEN_COMMANDS_TOKEN", "OTEL_EXPORTER_OTLP_HEADERS"];

/// The Azure platform deployer.
#[derive(Debug, Clone)]
pub struct ContainerAppsDeployer {
    arm: Arm,
    registry: Option<Arc<dyn ArtifactRegistry>>,
}

impl ContainerAppsDeployer {
    /// A deployer calling Resource Manager as `arm` says (its endpoint; its identity is used
    /// for deployments whose credentials are ambient).
    pub fn new(arm: Arm) -> ContainerAppsDeployer {
        ContainerAppsDeployer { arm, registry: None }
    }

    /// Before a revision names an image of `registry` (the azure platform's), the deployment's
    /// identity (`target.identityPrincipalId`) is granted pull on it (ACR: `AcrPull`), and the
    /// app pulls with that identity.
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<dyn ArtifactRegistry>) -> ContainerAppsDeployer {
        self.registry = Some(registry);
        self
    }

    /// Resource Manager as `credentials` (an impersonated token), or as the manager when
    /// ambient.
    fn arm_as(&self, credentials: &Credentials) -> Result<Arm, DeploymentError> {
        match credentials {
            Credentials::Azure { access_token, expires_at } => {
                let token = AccessToken::new(access_token.clone(), *expires_at);
                let tokens: Arc<dyn TokenSource> = Arc::new(StaticToken::of(token));
                Ok(self.arm.with_tokens(tokens))
            }
            Credentials::Ambient => Ok(self.arm.clone()),
            other => Err(DeploymentError {
                code: AZURE_ERROR.into(),
                message: format!("credentials of kind {} cannot act on Azure", other.kind()),
                resource_id: None,
            }),
        }
    }
}

fn azure_error(error: ArmError, container: Option<&str>) -> DeploymentError {
    DeploymentError {
        code: AZURE_ERROR.into(),
        message: match container {
            Some(c) => format!("container {c}: {error}"),
            None => error.to_string(),
        },
        resource_id: container.map(str::to_owned),
    }
}

fn container_error(code: &str, id: &str, message: impl std::fmt::Display) -> DeploymentError {
    DeploymentError {
        code: code.into(),
        message: format!("container {id}: {message}"),
        resource_id: Some(id.to_owned()),
    }
}

/// The app at ARM id `id`, `None` when it does not exist.
async fn get_app(arm: &Arm, id: &str) -> Result<Option<Value>, ArmError> {
    let path = format!("{id}?api-version={API_VERSION}");
    match arm.json("ARM get container app", reqwest::Method::GET, &path, None).await {
        Ok(app) => Ok(Some(app)),
        Err(e) if e.not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The revisions of app `id`.
async fn revisions(arm: &Arm, id: &str) -> Result<Vec<Value>, ArmError> {
    let path = format!("{id}/revisions?api-version={API_VERSION}");
    let list: Value =
        arm.json("ARM list container app revisions", reqwest::Method::GET, &path, None).await?;
    Ok(list["value"].as_array().cloned().unwrap_or_default())
}

/// What a container becomes, checked before anything is called.
struct Plan<'a> {
    image: &'a str,
    port: Option<u32>,
    expose: Option<Expose>,
    size: AppSize,
    bounds: (u32, u32),
}

fn plan<'a>(id: &str, container: &'a ContainerConfig) -> Result<Plan<'a>, DeploymentError> {
    let Code::Image { image } = &container.code else {
        return Err(container_error(
            UNSUPPORTED,
            id,
            "source code must be built into an image first",
        ));
    };
    if container.persistent_storage.is_some() {
        return Err(container_error(
            PLATFORM_NOT_SUPPORTED,
            id,
            "persistent storage is not supported by this Container Apps deployer (Azure Files \
             volumes are not mounted yet)",
        ));
    }
    if container.gpu.is_some() {
        return Err(container_error(
            PLATFORM_NOT_SUPPORTED,
            id,
            "GPUs are not supported by this Container Apps deployer",
        ));
    }
    let exposed = container.ports.iter().find(|p| p.expose.is_some());
    let port = exposed.or(container.ports.first()).map(|p| p.port);
    let cpu = container
        .cpu
        .desired()
        .cpu_millis()
        .map_err(|e| container_error(UNSUPPORTED, id, format!("cpu: {e}")))?;
    let memory = container
        .memory
        .desired()
        .bytes()
        .map_err(|e| container_error(UNSUPPORTED, id, format!("memory: {e}")))?;
    let size = app_size(cpu, memory).ok_or_else(|| {
        container_error(
            UNSUPPORTED,
            id,
            format!(
                "{cpu}m cpu and {memory} bytes of memory are more than the Consumption \
                 profile's largest replica (4 vCPU, 8 GiB)"
            ),
        )
    })?;
    Ok(Plan {
        image,
        port,
        expose: exposed.and_then(|p| p.expose),
        size,
        bounds: replica_bounds(container),
    })
}

/// App secrets: name and value.
type Secrets = Vec<(String, String)>;

/// The container's environment: plain values, and app secrets for the rest.
fn environment(request: &DeployRequest<'_>, id: &str) -> (Vec<(String, EnvValue)>, Secrets) {
    let env = request.env.get(id).cloned().unwrap_or_default();
    let mut vars = Vec::new();
    let mut secrets = Vec::new();
    for (name, value) in env.0 {
        if request.secret_names.contains(&name) || TOKEN_VARIABLES.contains(&name.as_str()) {
            let secret = secret_name(&name);
            secrets.push((secret.clone(), value));
            vars.push((name, EnvValue::Secret(secret)));
        } else {
            vars.push((name, EnvValue::Plain(value)));
        }
    }
    (vars, secrets)
}

impl ContainerAppsDeployer {
    /// The `(login server, identity)` the app pulls `image` with, granting the identity pull
    /// on the registry first; `None` for images of other registries.
    async fn registry_for(
        &self,
        id: &str,
        image: &str,
        target: &AppsTarget,
    ) -> Result<Option<(String, String)>, DeploymentError> {
        let Some(registry) = &self.registry else { return Ok(None) };
        let host = registry.host();
        if !image.strip_prefix(host).is_some_and(|rest| rest.starts_with('/')) {
            return Ok(None);
        }
        let (Some(identity), Some(principal)) =
            (&target.identity_resource_id, &target.identity_principal_id)
        else {
            return Err(DeploymentError {
                code: INVALID_TARGET.into(),
                message: format!(
                    "container {id}: target.identityResourceId and target.identityPrincipalId \
                     are needed to pull {image} from {host} (a user-assigned identity the app \
                     pulls with)"
                ),
                resource_id: Some(id.to_owned()),
            });
        };
        registry.grant_image_pull(image, principal).await.map_err(|e| {
            container_error(
                REGISTRY_ERROR,
                id,
                format!("granting {principal} pull on {image}: {e}"),
            )
        })?;
        Ok(Some((host.to_owned(), identity.clone())))
    }

    /// One apply step for every container, the resources' report in `resources`; whether any
    /// is still rolling out.
    async fn apply_all(
        &self,
        arm: &Arm,
        request: &DeployRequest<'_>,
        target: &AppsTarget,
        book: &mut Book,
        resources: &mut BTreeMap<String, Value>,
    ) -> Result<bool, DeploymentError> {
        let mut plans = Vec::new();
        for (id, container) in request.stack.containers() {
            plans.push((id, container, plan(id, container)?));
        }
        let release = request.release_id.to_string();
        let deployment_id = request.deployment.id.to_string();
        let mut rolling = false;
        for (id, container, plan) in plans {
            let entry = book.containers.entry(id.to_owned()).or_insert_with(|| {
                let name = app_name(request.deployment, id);
                AppBook {
                    id: format!(
                        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.App/containerApps/{name}",
                        target.subscription_id, target.resource_group
                    ),
                    name,
                    ..Default::default()
                }
            });
            entry.size = Some(plan.size);
            entry.port = plan.port;
            entry.expose = plan.expose.map(|e| match e {
                Expose::Http => "http".to_owned(),
                Expose::Tcp => "tcp".to_owned(),
            });
            (entry.min_replicas, entry.max_replicas) = plan.bounds;
            if entry.release.as_deref() != Some(release.as_str()) {
                if entry.attempted.as_deref() != Some(release.as_str()) {
                    entry.failed_attempts = 0;
                    entry.attempted = Some(release.clone());
                }
                let registry = self.registry_for(id, plan.image, target).await?;
                let (env, secrets) = environment(request, id);
                let body = app_body(
                    container,
                    &SpecInputs {
                        container_id: id,
                        image: plan.image,
                        port: plan.port,
                        expose: plan.expose,
                        size: plan.size,
                        min_replicas: plan.bounds.0,
                        max_replicas: plan.bounds.1,
                        env: &env,
                        secrets: &secrets,
                        registry: registry.as_ref().map(|(s, i)| (s.as_str(), i.as_str())),
                        identity: target.identity_resource_id.as_deref(),
                        environment_id: &target.environment_id,
                        location: &target.location,
                        deployment_id: &deployment_id,
                        release_id: &release,
                        attempt: entry.failed_attempts,
                    },
                );
                let path = format!("{}?api-version={API_VERSION}", entry.id);
                let started = arm
                    .start("ARM put container app", reqwest::Method::PUT, &path, Some(&body))
                    .await
                    .map_err(|e| azure_error(e, Some(id)))?;
                entry.operation = started.operation;
                entry.release = Some(release.clone());
            }
            if let Some(operation) = entry.operation.clone() {
                match arm.poll("ARM container app operation", &operation).await {
                    Ok(OperationState::Running) => {
                        rolling = true;
                        resources.insert(
                            id.to_owned(),
                            resource(entry, None, &[], &Rollout::InProgress),
                        );
                        continue;
                    }
                    // Ended, or expired: the app says how it went.
                    Ok(_) => entry.operation = None,
                    Err(e) if e.not_found() => entry.operation = None,
                    Err(e) => return Err(azure_error(e, Some(id))),
                }
            }
            let Some(app) = get_app(arm, &entry.id).await.map_err(|e| azure_error(e, Some(id)))?
            else {
                // Deleted behind our back: send the spec again on the next step.
                entry.release = None;
                rolling = true;
                resources.insert(id.to_owned(), resource(entry, None, &[], &Rollout::InProgress));
                continue;
            };
            let revisions =
                revisions(arm, &entry.id).await.map_err(|e| azure_error(e, Some(id)))?;
            let rollout = rollout(&app, &revisions);
            resources.insert(id.to_owned(), resource(entry, Some(&app), &revisions, &rollout));
            match rollout {
                Rollout::Failed(why) => {
                    // A retry of this release sends its spec again, as a new revision.
                    entry.release = None;
                    entry.failed_attempts += 1;
                    return Err(container_error(ROLLOUT_FAILED, id, why));
                }
                Rollout::InProgress => rolling = true,
                Rollout::Completed => {}
            }
        }
        // Containers the release no longer has go once the ones it has run.
        if !rolling {
            let gone: Vec<String> = book
                .containers
                .keys()
                .filter(|id| request.stack.container(id).is_none())
                .cloned()
                .collect();
            for id in gone {
                let Some(mut entry) = book.containers.get(&id).cloned() else { continue };
                let removed = destroy_app(arm, &id, &mut entry).await;
                book.containers.insert(id.clone(), entry);
                if removed? {
                    book.containers.remove(&id);
                } else {
                    rolling = true;
                }
            }
        }
        Ok(rolling)
    }
}

/// One step of removing a container's app (its secrets go with it); `Ok(false)` while the
/// deletion runs. What is already gone is done.
async fn destroy_app(arm: &Arm, id: &str, entry: &mut AppBook) -> Result<bool, DeploymentError> {
    let fail = |e| azure_error(e, Some(id));
    if let Some(operation) = entry.deleting.clone() {
        match arm.poll("ARM container app delete operation", &operation).await {
            Ok(OperationState::Running) => return Ok(false),
            Ok(OperationState::Failed(why)) => {
                entry.deleting = None;
                return Err(container_error(
                    AZURE_ERROR,
                    id,
                    format!("deleting {}: {why}", entry.name),
                ));
            }
            Ok(OperationState::Succeeded) => entry.deleting = None,
            Err(e) if e.not_found() => entry.deleting = None,
            Err(e) => return Err(fail(e)),
        }
    }
    let path = format!("{}?api-version={API_VERSION}", entry.id);
    match arm.start("ARM delete container app", reqwest::Method::DELETE, &path, None).await {
        Ok(started) if started.status == 202 => {
            entry.deleting = started.operation;
            entry.operation = None;
            Ok(entry.deleting.is_none())
        }
        Ok(_) => Ok(true),
        Err(e) if e.not_found() => Ok(true),
        Err(e) => Err(fail(e)),
    }
}

/// The resources of `state` (the previous step's), for a failed step's state.
fn previous_resources(state: Option<&Value>) -> BTreeMap<String, Value> {
    state
        .and_then(|s| s.get("resources"))
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl PlatformDeployer for ContainerAppsDeployer {
    fn describe(&self) -> String {
        format!("Azure Container Apps (ARM {API_VERSION})")
    }

    async fn apply(&self, request: DeployRequest<'_>) -> StepOutcome {
        let mut book = match Book::from_state(request.state) {
            Ok(book) => book,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let target = match AppsTarget::from_target(
            request.platform_target,
            request.deployment.region.as_deref(),
        ) {
            Ok(target) => target,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let arm = match self.arm_as(request.credentials) {
            Ok(arm) => arm,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let mut resources = BTreeMap::new();
        match self.apply_all(&arm, &request, &target, &mut book, &mut resources).await {
            Ok(false) => StepOutcome::Done { state: state_of(&book, &resources) },
            Ok(true) => StepOutcome::Wait { state: state_of(&book, &resources), wait: POLL },
            Err(error) => {
                let mut all = previous_resources(request.state);
                all.extend(resources);
                StepOutcome::Failed { state: Some(state_of(&book, &all)), error }
            }
        }
    }

    async fn destroy(
        &self,
        _deployment: &Deployment,
        state: Option<&Value>,
        _cleanup: bool,
        credentials: &Credentials,
    ) -> StepOutcome {
        let mut book = match Book::from_state(state) {
            Ok(book) => book,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let empty = json!({"platform": "azure", "resources": {}});
        if book.containers.is_empty() {
            return StepOutcome::Done { state: empty };
        }
        let arm = match self.arm_as(credentials) {
            Ok(arm) => arm,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let mut waiting = false;
        let ids: Vec<String> = book.containers.keys().cloned().collect();
        for id in ids {
            let Some(mut entry) = book.containers.get(&id).cloned() else { continue };
            let result = destroy_app(&arm, &id, &mut entry).await;
            book.containers.insert(id.clone(), entry);
            match result {
                Ok(true) => {
                    book.containers.remove(&id);
                }
                Ok(false) => waiting = true,
                Err(error) => {
                    return StepOutcome::Failed {
                        state: Some(state_of(&book, &BTreeMap::new())),
                        error,
                    };
                }
            }
        }
        if waiting {
            StepOutcome::Wait { state: state_of(&book, &BTreeMap::new()), wait: POLL }
        } else {
            StepOutcome::Done { state: empty }
        }
    }

    async fn refresh(
        &self,
        _deployment: &Deployment,
        state: Option<&Value>,
        credentials: &Credentials,
    ) -> RefreshReport {
        let book = match Book::from_state(state) {
            Ok(book) => book,
            Err(error) => return RefreshReport { state: None, failing: Some(error) },
        };
        let arm = match self.arm_as(credentials) {
            Ok(arm) => arm,
            Err(error) => return RefreshReport { state: None, failing: Some(error) },
        };
        let mut resources = BTreeMap::new();
        let mut failing = None;
        for (id, entry) in &book.containers {
            let app = match get_app(&arm, &entry.id).await {
                Ok(app) => app,
                Err(e) => {
                    return RefreshReport { state: None, failing: Some(azure_error(e, Some(id))) };
                }
            };
            let (rollout, revisions) = match &app {
                Some(app) => match revisions(&arm, &entry.id).await {
                    Ok(revisions) => (rollout(app, &revisions), revisions),
                    Err(e) => {
                        return RefreshReport {
                            state: None,
                            failing: Some(azure_error(e, Some(id))),
                        };
                    }
                },
                None => (Rollout::Failed(format!("the app {} is gone", entry.name)), Vec::new()),
            };
            if let (Rollout::Failed(why), None) = (&rollout, &failing) {
                failing = Some(container_error(ROLLOUT_FAILED, id, why));
            }
            resources.insert(id.clone(), resource(entry, app.as_ref(), &revisions, &rollout));
        }
        RefreshReport { state: Some(state_of(&book, &resources)), failing }
    }
}
