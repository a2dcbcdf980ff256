//! The GCP [`PlatformDeployer`]: each container of a release's stack as a Cloud Run service
//! (Admin API v2) in the customer's project, with the access token the manager's impersonation
//! minted for the deployment's service account (`docs/gcp.md`).
//!
//! Per container `c` of deployment `d`, service `projects/{p}/locations/{region}/services/{id}`
//! ([`service_id`]: `alien-{c}-{hash}`) with the image, one port, cpu and memory rounded up to a
//! Cloud Run size (the rounding is kept in the outputs), instance bounds from the replicas or
//! autoscaling, plain variables as values and secret ones (and every variable carrying the
//! deployment token) from Secret Manager, startup and liveness probes from the health check,
//! and public ingress for an exposed `http` port ([`spec`]). A `tcp` port cannot be served:
//! Cloud Run is HTTP only, and the step fails with `PLATFORM_NOT_SUPPORTED` naming the container.
//!
//! A new release creates the service or patches it (a new revision). The operation is followed
//! on later steps (`Wait`), never waited for; a container is done when reconciliation ended with
//! `terminalCondition` `CONDITION_SUCCEEDED`, the latest created revision ready and the current
//! generation observed, and failed (`ROLLOUT_FAILED`, naming the container) when the latest
//! revision failed, in which case Cloud Run keeps traffic on the previous revision. Every step is
//! idempotent: services and secrets are found by name, a create that meets an existing service
//! patches it, a delete that meets none is done.

mod book;
mod destroy;
mod secrets;
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

pub use book::{Book, Rollout, STATE_UNREADABLE, ServiceBook, outputs, rollout, service_id};
pub use size::{RunSize, run_size};
pub use target::{INVALID_TARGET, RunTarget};

use book::{resource, state_of};
use destroy::destroy_container;
use spec::{EnvValue, SpecInputs, instance_bounds, service_body};

use crate::auth::{StaticToken, TokenSource};
use crate::config::{GcpSettings, Service};
use crate::rest::{Api, ApiError, Operation};

/// How long a step waits before looking at a rollout again.
const POLL: Duration = Duration::from_secs(5);

pub use alien_deployer::codes::{PLATFORM_NOT_SUPPORTED, REGISTRY_ERROR, ROLLOUT_FAILED};
/// Error code of a failed Google API call.
pub const GCP_ERROR: &str = "GCP_ERROR";
/// Error code of a container the deployer cannot run (no image, larger than Cloud Run's
/// largest instance).
pub const UNSUPPORTED: &str = alien_deployer::codes::UNSUPPORTED_CONTAINER;

/// The GCP platform deployer.
#[derive(Debug, Clone)]
pub struct CloudRunDeployer {
    settings: GcpSettings,
    registry: Option<Arc<dyn ArtifactRegistry>>,
}

/// The APIs of one step, called as the deployment's identity.
pub(super) struct Clients {
    run: Api,
    secrets: Api,
}

impl CloudRunDeployer {
    /// A deployer reaching Google with `settings` (endpoints; its identity is used for
    /// deployments whose credentials are ambient).
    pub fn new(settings: &GcpSettings) -> CloudRunDeployer {
        CloudRunDeployer { settings: settings.clone(), registry: None }
    }

    /// Before a revision names an image of `registry` (the gcp platform's), the deployment's
    /// project is granted pull on it (GAR: its Cloud Run service agent becomes a reader).
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<dyn ArtifactRegistry>) -> CloudRunDeployer {
        self.registry = Some(registry);
        self
    }

    /// The APIs as `credentials` (an impersonated token), or as the manager when ambient.
    fn clients(
        &self,
        credentials: &Credentials,
        email: Option<&str>,
    ) -> Result<Clients, DeploymentError> {
        let tokens: Arc<dyn TokenSource> = match credentials {
            Credentials::Gcp { access_token, .. } => {
                Arc::new(StaticToken::new(access_token.clone(), email.map(str::to_owned)))
            }
            Credentials::Ambient => self.settings.tokens.clone(),
            other => {
                return Err(DeploymentError {
                    code: GCP_ERROR.into(),
                    message: format!("credentials of kind {} cannot act on GCP", other.kind()),
                    resource_id: None,
                });
            }
        };
        Ok(Clients {
            run: Api::new(&self.settings, Service::Run).with_tokens(tokens.clone()),
            secrets: Api::new(&self.settings, Service::SecretManager).with_tokens(tokens),
        })
    }
}

pub(super) fn gcp_error(error: ApiError, container: Option<&str>) -> DeploymentError {
    DeploymentError {
        code: GCP_ERROR.into(),
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

/// Reads Cloud Run operation `name`.
pub(super) async fn read_operation(api: &Api, name: &str) -> Result<Operation, ApiError> {
    api.json("Cloud Run get operation", reqwest::Method::GET, &format!("/v2/{name}"), None).await
}

/// The service `name`, `None` when it does not exist.
async fn get_service(api: &Api, name: &str) -> Result<Option<Value>, ApiError> {
    match api
        .json("Cloud Run get service", reqwest::Method::GET, &format!("/v2/{name}"), None)
        .await
    {
        Ok(service) => Ok(Some(service)),
        Err(e) if e.not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a container becomes, checked before anything is called.
struct Plan<'a> {
    image: &'a str,
    port: u32,
    public: bool,
    size: RunSize,
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
    let exposed = container.ports.iter().find(|p| p.expose.is_some());
    if let Some(port) = exposed.filter(|p| p.expose == Some(Expose::Tcp)) {
        return Err(container_error(
            PLATFORM_NOT_SUPPORTED,
            id,
            format!(
                "port {} is exposed as tcp, and Cloud Run serves HTTP only (HTTP/1, HTTP/2, gRPC, \
                 WebSockets): expose it as http, or deploy this stack on another platform",
                port.port
            ),
        ));
    }
    if container.persistent_storage.is_some() {
        return Err(container_error(
            PLATFORM_NOT_SUPPORTED,
            id,
            "persistent storage is not available on Cloud Run (instances have no disks)",
        ));
    }
    if container.gpu.is_some() {
        return Err(container_error(
            PLATFORM_NOT_SUPPORTED,
            id,
            "GPUs are not supported by this Cloud Run deployer",
        ));
    }
    let port = exposed.or(container.ports.first()).map(|p| p.port).ok_or_else(|| {
        container_error(UNSUPPORTED, id, "every container must define at least one port")
    })?;
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
    let size = run_size(cpu, memory).ok_or_else(|| {
        container_error(
            UNSUPPORTED,
            id,
            format!(
                "{cpu}m cpu and {memory} bytes of memory are more than Cloud Run's largest \
                 instance (8 vCPU, 32 GiB)"
            ),
        )
    })?;
    Ok(Plan { image, port, public: exposed.is_some(), size, bounds: instance_bounds(container) })
}

impl CloudRunDeployer {
    /// The container's environment, secret values stored in Secret Manager first.
    async fn environment(
        &self,
        clients: &Clients,
        request: &DeployRequest<'_>,
        target: &RunTarget,
        id: &str,
        entry: &mut ServiceBook,
    ) -> Result<Vec<(String, EnvValue)>, DeploymentError> {
        let env = request.env.get(id).cloned().unwrap_or_default();
        let labels =
            json!({"alien-deployment": request.deployment.id.to_string(), "alien-container": id});
        let mut vars = Vec::new();
        for (name, value) in &env.0 {
            if request.secret_names.contains(name) {
                let secret = secrets::secret_name(&target.project_id, &entry.service_id, name);
                let version = secrets::store(&clients.secrets, &secret, &labels, value)
                    .await
                    .map_err(|e| gcp_error(e, Some(id)))?;
                entry.secrets.insert(secret.clone());
                vars.push((name.clone(), EnvValue::Secret { secret, version }));
            } else {
                vars.push((name.clone(), EnvValue::Plain(value.clone())));
            }
        }
        Ok(vars)
    }

    /// Creates the service, or patches it when it exists (a create meeting one made since we
    /// looked patches too); the operation.
    async fn create_or_patch(
        &self,
        clients: &Clients,
        target: &RunTarget,
        entry: &ServiceBook,
        body: &Value,
    ) -> Result<Operation, ApiError> {
        let path = format!("/v2/{}", entry.name);
        if get_service(&clients.run, &entry.name).await?.is_none() {
            let create = format!(
                "/v2/projects/{}/locations/{}/services?serviceId={}",
                target.project_id, target.region, entry.service_id
            );
            match clients
                .run
                .json("Cloud Run create service", reqwest::Method::POST, &create, Some(body))
                .await
            {
                Ok(operation) => return Ok(operation),
                Err(e) if e.conflict() => {}
                Err(e) => return Err(e),
            }
        }
        clients
            .run
            .json("Cloud Run update service", reqwest::Method::PATCH, &path, Some(body))
            .await
    }

    /// One apply step for every container, the resources' report in `resources`; whether any
    /// is still rolling out.
    async fn apply_all(
        &self,
        clients: &Clients,
        request: &DeployRequest<'_>,
        target: &RunTarget,
        book: &mut Book,
        resources: &mut BTreeMap<String, Value>,
    ) -> Result<bool, DeploymentError> {
        book.project.clone_from(&target.project_id);
        book.region.clone_from(&target.region);
        let mut plans = Vec::new();
        for (id, container) in request.stack.containers() {
            plans.push((id, container, plan(id, container)?));
        }
        let release = request.release_id.to_string();
        let mut rolling = false;
        for (id, container, plan) in plans {
            let entry = book.containers.entry(id.to_owned()).or_insert_with(|| {
                let service_id = service_id(request.deployment, id);
                ServiceBook {
                    name: format!(
                        "projects/{}/locations/{}/services/{service_id}",
                        target.project_id, target.region
                    ),
                    service_id,
                    ..Default::default()
                }
            });
            entry.size = Some(plan.size);
            entry.port = plan.port;
            entry.public = plan.public;
            (entry.min_instances, entry.max_instances) = plan.bounds;
            if entry.release.as_deref() != Some(release.as_str()) {
                if entry.attempted.as_deref() != Some(release.as_str()) {
                    entry.failed_attempts = 0;
                    entry.attempted = Some(release.clone());
                }
                // The customer's project may pull the image from the vendor's registry.
                if let Some(registry) = &self.registry {
                    let project = target.project_number.as_deref().unwrap_or(&target.project_id);
                    registry.grant_image_pull(plan.image, project).await.map_err(|e| {
                        container_error(
                            REGISTRY_ERROR,
                            id,
                            format!("granting project {project} pull on {}: {e}", plan.image),
                        )
                    })?;
                }
                let env = self.environment(clients, request, target, id, entry).await?;
                let deployment_id = request.deployment.id.to_string();
                let body = service_body(
                    container,
                    &SpecInputs {
                        container_id: id,
                        image: plan.image,
                        port: plan.port,
                        public: plan.public,
                        size: plan.size,
                        min_instances: plan.bounds.0,
                        max_instances: plan.bounds.1,
                        env: &env,
                        service_account: &target.runtime_service_account_email,
                        deployment_id: &deployment_id,
                        release_id: &release,
                        attempt: entry.failed_attempts,
                    },
                );
                let operation = self
                    .create_or_patch(clients, target, entry, &body)
                    .await
                    .map_err(|e| gcp_error(e, Some(id)))?;
                entry.operation =
                    (!operation.done && !operation.name.is_empty()).then_some(operation.name);
                entry.release = Some(release.clone());
            }
            if let Some(operation) = entry.operation.clone() {
                match read_operation(&clients.run, &operation).await {
                    Ok(op) if !op.done => {
                        rolling = true;
                        resources
                            .insert(id.to_owned(), resource(entry, None, &Rollout::InProgress));
                        continue;
                    }
                    // Done, or expired: the service says how it went.
                    Ok(_) => entry.operation = None,
                    Err(e) if e.not_found() => entry.operation = None,
                    Err(e) => return Err(gcp_error(e, Some(id))),
                }
            }
            let Some(service) =
                get_service(&clients.run, &entry.name).await.map_err(|e| gcp_error(e, Some(id)))?
            else {
                // Deleted behind our back: send the spec again on the next step.
                entry.release = None;
                rolling = true;
                resources.insert(id.to_owned(), resource(entry, None, &Rollout::InProgress));
                continue;
            };
            let rollout = rollout(&service);
            resources.insert(id.to_owned(), resource(entry, Some(&service), &rollout));
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
                let removed = destroy_container(clients, &id, &mut entry).await;
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

/// The resources of `state` (the previous step's), for a failed step's state.
fn previous_resources(state: Option<&Value>) -> BTreeMap<String, Value> {
    state
        .and_then(|s| s.get("resources"))
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl PlatformDeployer for CloudRunDeployer {
    fn describe(&self) -> String {
        "Cloud Run (Admin API v2)".to_owned()
    }

    async fn apply(&self, request: DeployRequest<'_>) -> StepOutcome {
        let mut book = match Book::from_state(request.state) {
            Ok(book) => book,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let target = match RunTarget::from_target(
            request.platform_target,
            request.deployment.region.as_deref(),
        ) {
            Ok(target) => target,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let clients = match self.clients(request.credentials, Some(&target.service_account_email)) {
            Ok(clients) => clients,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let mut resources = BTreeMap::new();
        match self.apply_all(&clients, &request, &target, &mut book, &mut resources).await {
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
        let empty = json!({"platform": "gcp", "resources": {}});
        if book.containers.is_empty() {
            return StepOutcome::Done { state: empty };
        }
        let clients = match self.clients(credentials, None) {
            Ok(clients) => clients,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let mut waiting = false;
        let ids: Vec<String> = book.containers.keys().cloned().collect();
        for id in ids {
            let Some(mut entry) = book.containers.get(&id).cloned() else { continue };
            let result = destroy_container(&clients, &id, &mut entry).await;
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
        let clients = match self.clients(credentials, None) {
            Ok(clients) => clients,
            Err(error) => return RefreshReport { state: None, failing: Some(error) },
        };
        let mut resources = BTreeMap::new();
        let mut failing = None;
        for (id, entry) in &book.containers {
            let service = match get_service(&clients.run, &entry.name).await {
                Ok(service) => service,
                Err(e) => {
                    return RefreshReport { state: None, failing: Some(gcp_error(e, Some(id))) };
                }
            };
            let rollout = match &service {
                Some(service) => rollout(service),
                None => Rollout::Failed(format!("the service {} is gone", entry.name)),
            };
            if let (Rollout::Failed(why), None) = (&rollout, &failing) {
                failing = Some(container_error(ROLLOUT_FAILED, id, why));
            }
            resources.insert(id.clone(), resource(entry, service.as_ref(), &rollout));
        }
        RefreshReport { state: Some(state_of(&book, &resources)), failing }
    }
}
