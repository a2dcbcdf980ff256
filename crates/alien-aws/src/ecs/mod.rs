//! The AWS [`PlatformDeployer`]: each container of a release's stack as an ECS service on
//! Fargate in the customer's account, with the credentials the manager's impersonation minted
//! for the deployment (`docs/aws.md`).
//!
//! Per container `c` of deployment `d`:
//! - task definition family and service `alien-{d}-{c}` in the target's cluster: the image,
//!   cpu and memory rounded up to a Fargate size (the rounding is kept in the state), port
//!   mappings, plain variables as `environment`, secret ones (and the deployment token) as
//!   `secrets` read from SSM SecureString parameters `/alien/{d}/{c}/{NAME}`, the command, and
//!   `awslogs` to the log group `/alien/{d}/{c}`;
//! - `desiredCount` = replicas, or Application Auto Scaling target tracking between the
//!   autoscaling bounds;
//! - an exposed port behind a load balancer named `al-{hash}`: an ALB with an HTTP listener on
//!   80 (`http`, health-checked on the container's health check path) or an NLB with a TCP
//!   listener on the port (`tcp`).
//!
//! An update registers a new task-definition revision and updates the service; it is done when
//! the service's PRIMARY deployment runs that revision with `rolloutState` `COMPLETED`, and
//! failed when that deployment is `FAILED` or as many tasks failed as it wants running (the
//! circuit breaker rolls back: the previous revision keeps serving). Every step is idempotent:
//! what exists is found by name and reused, so a step repeated after a crash creates nothing
//! twice.

mod balancer;
mod book;
mod destroy;
mod fargate;
mod rollout;
mod target;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alien_core::stack::{Code, Expose};
use alien_core::{ContainerConfig, Deployment, DeploymentError};
use alien_deployer::platform::RefreshReport;
use alien_deployer::{Credentials, DeployRequest, PlatformDeployer, StepOutcome};
use alien_registry::ArtifactRegistry;
use aws_config::{Region, SdkConfig};
use serde_json::{Value, json};

pub use book::{Book, ContainerBook, LoadBalancerBook, outputs};
pub use fargate::{FargateSize, fargate_size};
pub use target::{EcsTarget, INVALID_TARGET};

use balancer::resource_label;
use book::{balancer_name, family, resource, state_of};
use destroy::destroy_container;
use rollout::{Rollout, describe_service, rollout};

use crate::config::{AwsSettings, with_credentials};
use crate::error::{AwsFailure, classify};

/// How long a step waits before looking at a rollout again.
const POLL: Duration = Duration::from_secs(5);

pub use alien_deployer::codes::{REGISTRY_ERROR, ROLLOUT_FAILED};
/// Error code of a failed AWS call.
pub const AWS_ERROR: &str = "AWS_ERROR";
/// Error code of a container the deployer cannot run (no image, a size above Fargate's).
pub const UNSUPPORTED: &str = alien_deployer::codes::UNSUPPORTED_CONTAINER;

/// The AWS platform deployer.
#[derive(Debug, Clone)]
pub struct EcsDeployer {
    sdk: SdkConfig,
    registry: Option<Arc<dyn ArtifactRegistry>>,
}

impl EcsDeployer {
    /// A deployer reaching AWS with `settings` (region, endpoint); credentials come with each
    /// step.
    pub async fn new(settings: &AwsSettings) -> EcsDeployer {
        EcsDeployer { sdk: settings.load().await, registry: None }
    }

    /// Before a task definition names an image of `registry` (the aws platform's), the
    /// deployment's account is granted pull on it (ECR: a repository policy).
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<dyn ArtifactRegistry>) -> EcsDeployer {
        self.registry = Some(registry);
        self
    }

    /// The clients of one step: `credentials` in the deployment's region.
    fn clients(
        &self,
        deployment: &Deployment,
        credentials: &Credentials,
    ) -> Result<Clients, DeploymentError> {
        let mut sdk = with_credentials(&self.sdk, credentials).ok_or_else(|| DeploymentError {
            code: AWS_ERROR.into(),
            message: format!("credentials of kind {} cannot act on AWS", credentials.kind()),
            resource_id: None,
        })?;
        if let Some(region) = &deployment.region {
            sdk = sdk.to_builder().region(Region::new(region.clone())).build();
        }
        let region = sdk.region().map(ToString::to_string).ok_or_else(|| DeploymentError {
            code: AWS_ERROR.into(),
            message: "no AWS region: give the deployment a region, or set AWS_REGION".into(),
            resource_id: None,
        })?;
        Ok(Clients {
            ecs: aws_sdk_ecs::Client::new(&sdk),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            ssm: aws_sdk_ssm::Client::new(&sdk),
            scaling: aws_sdk_applicationautoscaling::Client::new(&sdk),
            region,
        })
    }
}

struct Clients {
    ecs: aws_sdk_ecs::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    ssm: aws_sdk_ssm::Client,
    scaling: aws_sdk_applicationautoscaling::Client,
    region: String,
}

fn aws_error(failure: AwsFailure, container: Option<&str>) -> DeploymentError {
    DeploymentError {
        code: AWS_ERROR.into(),
        message: match container {
            Some(c) => format!("container {c}: {}", failure.message),
            None => failure.message,
        },
        resource_id: container.map(str::to_owned),
    }
}

fn build_error(container: &str, err: impl std::fmt::Display) -> DeploymentError {
    DeploymentError {
        code: AWS_ERROR.into(),
        message: format!("container {container}: {err}"),
        resource_id: Some(container.to_owned()),
    }
}

/// The exposed port of a container, if any.
fn exposed(container: &ContainerConfig) -> Option<(u32, Expose)> {
    container.ports.iter().find_map(|p| p.expose.map(|e| (p.port, e)))
}

/// Replicas a container wants, and its autoscaling bounds.
fn desired(container: &ContainerConfig) -> u32 {
    match &container.autoscaling {
        Some(scaling) => scaling.desired,
        None => container.replicas.unwrap_or(1),
    }
}

impl EcsDeployer {
    /// Registers the container's task definition for this release (once: a repeated step
    /// reuses it).
    #[allow(clippy::too_many_arguments)] // one container's inputs, spelled out
    async fn task_definition(
        &self,
        clients: &Clients,
        request: &DeployRequest<'_>,
        target: &EcsTarget,
        id: &str,
        container: &ContainerConfig,
        size: FargateSize,
        book: &mut ContainerBook,
    ) -> Result<String, DeploymentError> {
        use aws_sdk_ecs::types::{
            Compatibility, ContainerDefinition, KeyValuePair, LogConfiguration, LogDriver,
            NetworkMode, PortMapping, Secret, TransportProtocol,
        };
        let release = request.release_id.to_string();
        if book.release.as_deref() == Some(release.as_str())
            && let Some(arn) = &book.task_definition
        {
            return Ok(arn.clone());
        }
        let Code::Image { image } = &container.code else {
            return Err(DeploymentError {
                code: UNSUPPORTED.into(),
                message: format!("container {id}: source code must be built into an image first"),
                resource_id: Some(id.to_owned()),
            });
        };
        // The customer's account may pull the image from the vendor's registry.
        if let (Some(registry), Some(account)) = (&self.registry, &target.account_id) {
            registry.grant_image_pull(image, account).await.map_err(|e| DeploymentError {
                code: REGISTRY_ERROR.into(),
                message: format!("container {id}: granting account {account} pull on {image}: {e}"),
                resource_id: Some(id.to_owned()),
            })?;
        }
        // Secrets first: a task definition may name a parameter only once it exists.
        let env = request.env.get(id).cloned().unwrap_or_default();
        let mut plain = Vec::new();
        let mut secrets = Vec::new();
        for (name, value) in &env.0 {
            if request.secret_names.contains(name) {
                let parameter = format!("/alien/{}/{id}/{name}", request.deployment.id);
                clients
                    .ssm
                    .put_parameter()
                    .name(&parameter)
                    .value(value)
                    .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                    .overwrite(true)
                    .send()
                    .await
                    .map_err(|e| aws_error(classify("SSM PutParameter", &e), Some(id)))?;
                book.parameters.insert(parameter.clone());
                secrets.push(
                    Secret::builder()
                        .name(name)
                        .value_from(parameter)
                        .build()
                        .map_err(|e| build_error(id, e))?,
                );
            } else {
                plain.push(KeyValuePair::builder().name(name).value(value).build());
            }
        }
        let logs = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", &book.log_group)
            .options("awslogs-region", &clients.region)
            .options("awslogs-stream-prefix", "alien")
            .build()
            .map_err(|e| build_error(id, e))?;
        let mut definition = ContainerDefinition::builder()
            .name(id)
            .image(image)
            .essential(true)
            .set_environment(Some(plain))
            .set_secrets(Some(secrets))
            .log_configuration(logs)
            .set_command(container.command.clone());
        for port in &container.ports {
            definition = definition.port_mappings(
                PortMapping::builder()
                    .container_port(i32::try_from(port.port).unwrap_or(0))
                    .protocol(TransportProtocol::Tcp)
                    .build(),
            );
        }
        let out = clients
            .ecs
            .register_task_definition()
            .family(&book.family)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu(size.cpu.to_string())
            .memory(size.memory.to_string())
            .execution_role_arn(&target.execution_role_arn)
            .container_definitions(definition.build())
            .tags(
                aws_sdk_ecs::types::Tag::builder()
                    .key("alien:deployment")
                    .value(request.deployment.id.to_string())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_error(classify("ECS RegisterTaskDefinition", &e), Some(id)))?;
        let arn = out
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .ok_or_else(|| build_error(id, "RegisterTaskDefinition returned no ARN"))?
            .to_owned();
        book.release = Some(release);
        book.task_definition = Some(arn.clone());
        Ok(arn)
    }

    /// Creates or updates the service to run `task_definition` with `desired` replicas.
    async fn service(
        &self,
        clients: &Clients,
        target: &EcsTarget,
        id: &str,
        book: &ContainerBook,
        task_definition: &str,
    ) -> Result<(), DeploymentError> {
        use aws_sdk_ecs::types::{
            AssignPublicIp, AwsVpcConfiguration, DeploymentCircuitBreaker, DeploymentConfiguration,
            LaunchType, LoadBalancer, NetworkConfiguration,
        };
        let existing = describe_service(clients, &target.cluster, &book.family)
            .await
            .map_err(|f| aws_error(f, Some(id)))?;
        let desired = i32::try_from(book.desired).unwrap_or(1);
        match existing {
            Some(service) if service.status() == Some("ACTIVE") => {
                // Autoscaling owns the count once registered.
                let count_differs = !book.autoscaling && service.desired_count() != desired;
                if service.task_definition() != Some(task_definition) || count_differs {
                    let mut update = clients
                        .ecs
                        .update_service()
                        .cluster(&target.cluster)
                        .service(&book.family)
                        .task_definition(task_definition);
                    if !book.autoscaling {
                        update = update.desired_count(desired);
                    }
                    update
                        .send()
                        .await
                        .map_err(|e| aws_error(classify("ECS UpdateService", &e), Some(id)))?;
                }
            }
            _ => {
                let vpc = AwsVpcConfiguration::builder()
                    .set_subnets(Some(target.subnet_ids.clone()))
                    .set_security_groups(Some(target.security_group_ids.clone()))
                    .assign_public_ip(if target.assign_public_ip {
                        AssignPublicIp::Enabled
                    } else {
                        AssignPublicIp::Disabled
                    })
                    .build()
                    .map_err(|e| build_error(id, e))?;
                let breaker =
                    DeploymentCircuitBreaker::builder().enable(true).rollback(true).build();
                let mut create = clients
                    .ecs
                    .create_service()
                    .cluster(&target.cluster)
                    .service_name(&book.family)
                    .task_definition(task_definition)
                    .desired_count(desired)
                    .launch_type(LaunchType::Fargate)
                    .network_configuration(
                        NetworkConfiguration::builder().awsvpc_configuration(vpc).build(),
                    )
                    .deployment_configuration(
                        DeploymentConfiguration::builder()
                            .deployment_circuit_breaker(breaker)
                            .build(),
                    );
                if let Some(lb) = &book.load_balancer {
                    create = create.load_balancers(
                        LoadBalancer::builder()
                            .target_group_arn(&lb.target_group_arn)
                            .container_name(id)
                            .container_port(i32::try_from(lb.port).unwrap_or(0))
                            .build(),
                    );
                }
                create
                    .send()
                    .await
                    .map_err(|e| aws_error(classify("ECS CreateService", &e), Some(id)))?;
            }
        }
        Ok(())
    }

    /// Target tracking on the service's desired count for the container's autoscaling targets.
    async fn autoscaling(
        &self,
        clients: &Clients,
        target: &EcsTarget,
        id: &str,
        container: &ContainerConfig,
        book: &ContainerBook,
    ) -> Result<bool, DeploymentError> {
        use aws_sdk_applicationautoscaling::types::{
            MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension,
            ServiceNamespace, TargetTrackingScalingPolicyConfiguration,
        };
        let Some(scaling) = &container.autoscaling else { return Ok(false) };
        let resource = format!("service/{}/{}", target.cluster, book.family);
        clients
            .scaling
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&resource)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .min_capacity(i32::try_from(scaling.min).unwrap_or(1))
            .max_capacity(i32::try_from(scaling.max).unwrap_or(1))
            .send()
            .await
            .map_err(|e| {
                aws_error(classify("Auto Scaling RegisterScalableTarget", &e), Some(id))
            })?;
        let label = book.load_balancer.as_ref().and_then(resource_label);
        let as_f64 = |n: &serde_json::Number| n.as_f64().unwrap_or(0.0);
        let mut policies: Vec<(&str, MetricType, f64, Option<String>)> = Vec::new();
        if let Some(cpu) = &scaling.target_cpu_percent {
            policies.push((
                "alien-cpu",
                MetricType::EcsServiceAverageCpuUtilization,
                as_f64(cpu),
                None,
            ));
        }
        if let Some(memory) = &scaling.target_memory_percent {
            policies.push((
                "alien-memory",
                MetricType::EcsServiceAverageMemoryUtilization,
                as_f64(memory),
                None,
            ));
        }
        if let (Some(in_flight), Some(label)) = (scaling.target_http_in_flight_per_replica, label) {
            // ALB's per-target metric is requests per minute; in-flight requests per replica
            // are that rate times the mean request time, which AWS does not know: one in-flight
            // request is taken as 60 requests a minute (one-second requests).
            policies.push((
                "alien-requests",
                MetricType::AlbRequestCountPerTarget,
                f64::from(in_flight) * 60.0,
                Some(label),
            ));
        }
        for (name, metric, value, label) in policies {
            let spec = PredefinedMetricSpecification::builder()
                .predefined_metric_type(metric)
                .set_resource_label(label)
                .build()
                .map_err(|e| build_error(id, e))?;
            let config = TargetTrackingScalingPolicyConfiguration::builder()
                .target_value(value)
                .predefined_metric_specification(spec)
                .build()
                .map_err(|e| build_error(id, e))?;
            clients
                .scaling
                .put_scaling_policy()
                .policy_name(name)
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(&resource)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .policy_type(PolicyType::TargetTrackingScaling)
                .target_tracking_scaling_policy_configuration(config)
                .send()
                .await
                .map_err(|e| aws_error(classify("Auto Scaling PutScalingPolicy", &e), Some(id)))?;
        }
        Ok(true)
    }

    /// One apply step for every container; `Ok(None)` when all rollouts completed, else the
    /// resources' report and whether any is still rolling out.
    async fn apply_all(
        &self,
        clients: &Clients,
        request: &DeployRequest<'_>,
        book: &mut Book,
    ) -> Result<(BTreeMap<String, Value>, bool), DeploymentError> {
        let needs_vpc = request.stack.containers().any(|(_, c)| exposed(c).is_some());
        let target = EcsTarget::from_target(request.platform_target, needs_vpc)?;
        book.region.clone_from(&clients.region);
        book.cluster.clone_from(&target.cluster);
        clients
            .ecs
            .create_cluster()
            .cluster_name(&target.cluster)
            .send()
            .await
            .map_err(|e| aws_error(classify("ECS CreateCluster", &e), None))?;
        let mut resources = BTreeMap::new();
        let mut rolling = false;
        for (id, container) in request.stack.containers() {
            let size = container_size(id, container)?;
            let entry = book.containers.entry(id.to_owned()).or_insert_with(|| ContainerBook {
                family: family(request.deployment, id),
                log_group: format!("/alien/{}/{id}", request.deployment.id),
                ..Default::default()
            });
            entry.size = Some(size);
            entry.desired = desired(container);
            ensure_log_group(clients, &entry.log_group)
                .await
                .map_err(|f| aws_error(f, Some(id)))?;
            let task_definition =
                self.task_definition(clients, request, &target, id, container, size, entry).await?;
            if let Some(port) = exposed(container) {
                let name = balancer_name(request.deployment, id);
                entry.load_balancer =
                    Some(self.load_balancer(clients, &target, id, &name, container, port).await?);
            }
            self.service(clients, &target, id, entry, &task_definition).await?;
            if !entry.autoscaling {
                entry.autoscaling =
                    self.autoscaling(clients, &target, id, container, entry).await?;
            }
            let service = describe_service(clients, &target.cluster, &entry.family)
                .await
                .map_err(|f| aws_error(f, Some(id)))?;
            let rollout = rollout(service.as_ref(), &task_definition, entry.desired);
            if let Rollout::Failed(why) = &rollout {
                return Err(DeploymentError {
                    code: ROLLOUT_FAILED.into(),
                    message: format!(
                        "container {id}: the ECS rollout of {task_definition} failed ({why}); \
                         the previous revision keeps serving"
                    ),
                    resource_id: Some(id.to_owned()),
                });
            }
            rolling |= rollout == Rollout::InProgress;
            resources.insert(id.to_owned(), resource(entry, service.as_ref(), &rollout));
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
                let Some(entry) = book.containers.get(&id).cloned() else { continue };
                if destroy_container(clients, &target.cluster, &id, &entry).await? {
                    book.containers.remove(&id);
                } else {
                    rolling = true;
                }
            }
        }
        Ok((resources, rolling))
    }
}

/// A container's Fargate size, or why it has none.
fn container_size(id: &str, container: &ContainerConfig) -> Result<FargateSize, DeploymentError> {
    let unsupported = |message: String| DeploymentError {
        code: UNSUPPORTED.into(),
        message: format!("container {id}: {message}"),
        resource_id: Some(id.to_owned()),
    };
    let cpu = container.cpu.desired().cpu_millis().map_err(|e| unsupported(format!("cpu: {e}")))?;
    let memory =
        container.memory.desired().bytes().map_err(|e| unsupported(format!("memory: {e}")))?;
    fargate_size(cpu, memory).ok_or_else(|| {
        unsupported(format!(
            "{cpu}m cpu and {memory} bytes of memory are more than Fargate's largest task \
             (16 vCPU, 120 GiB)"
        ))
    })
}

async fn ensure_log_group(clients: &Clients, name: &str) -> Result<(), AwsFailure> {
    match clients.logs.create_log_group().log_group_name(name).send().await {
        Ok(_) => {}
        Err(err) => {
            let failure = classify("Logs CreateLogGroup", &err);
            if failure.code.as_deref() != Some("ResourceAlreadyExistsException") {
                return Err(failure);
            }
        }
    }
    clients
        .logs
        .put_retention_policy()
        .log_group_name(name)
        .retention_in_days(30)
        .send()
        .await
        .map_err(|e| classify("Logs PutRetentionPolicy", &e))?;
    Ok(())
}

#[async_trait::async_trait]
impl PlatformDeployer for EcsDeployer {
    fn describe(&self) -> String {
        match self.sdk.region() {
            Some(region) => format!("ECS on Fargate (default region {region})"),
            None => "ECS on Fargate".to_owned(),
        }
    }

    async fn apply(&self, request: DeployRequest<'_>) -> StepOutcome {
        let mut book = match Book::from_state(request.state) {
            Ok(book) => book,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let clients = match self.clients(request.deployment, request.credentials) {
            Ok(clients) => clients,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        match self.apply_all(&clients, &request, &mut book).await {
            Ok((resources, false)) => StepOutcome::Done { state: state_of(&book, &resources) },
            Ok((resources, true)) => {
                StepOutcome::Wait { state: state_of(&book, &resources), wait: POLL }
            }
            Err(error) => {
                let resources = request
                    .state
                    .and_then(|s| s.get("resources"))
                    .and_then(|r| serde_json::from_value(r.clone()).ok())
                    .unwrap_or_default();
                StepOutcome::Failed { state: Some(state_of(&book, &resources)), error }
            }
        }
    }

    async fn destroy(
        &self,
        deployment: &Deployment,
        state: Option<&Value>,
        _cleanup: bool,
        credentials: &Credentials,
    ) -> StepOutcome {
        let mut book = match Book::from_state(state) {
            Ok(book) => book,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        if book.containers.is_empty() {
            return StepOutcome::Done { state: json!({"platform": "aws", "resources": {}}) };
        }
        let clients = match self.clients(deployment, credentials) {
            Ok(clients) => clients,
            Err(error) => return StepOutcome::Failed { state: None, error },
        };
        let ids: Vec<String> = book.containers.keys().cloned().collect();
        for id in ids {
            let Some(entry) = book.containers.get(&id).cloned() else { continue };
            match destroy_container(&clients, &book.cluster, &id, &entry).await {
                Ok(true) => {
                    book.containers.remove(&id);
                }
                Ok(false) => {
                    let state = state_of(&book, &BTreeMap::new());
                    return StepOutcome::Wait { state, wait: POLL };
                }
                Err(error) => {
                    return StepOutcome::Failed {
                        state: Some(state_of(&book, &BTreeMap::new())),
                        error,
                    };
                }
            }
        }
        StepOutcome::Done { state: json!({"platform": "aws", "resources": {}}) }
    }

    async fn refresh(
        &self,
        deployment: &Deployment,
        state: Option<&Value>,
        credentials: &Credentials,
    ) -> RefreshReport {
        let book = match Book::from_state(state) {
            Ok(book) => book,
            Err(error) => return RefreshReport { state: None, failing: Some(error) },
        };
        let clients = match self.clients(deployment, credentials) {
            Ok(clients) => clients,
            Err(error) => return RefreshReport { state: None, failing: Some(error) },
        };
        let mut resources = BTreeMap::new();
        let mut failing = None;
        for (id, entry) in &book.containers {
            let service = match describe_service(&clients, &book.cluster, &entry.family).await {
                Ok(service) => service,
                Err(failure) => {
                    return RefreshReport {
                        state: None,
                        failing: Some(aws_error(failure, Some(id))),
                    };
                }
            };
            let active = service.as_ref().is_some_and(|s| s.status() == Some("ACTIVE"));
            let task_definition = entry.task_definition.clone().unwrap_or_default();
            let mut rollout = rollout(service.as_ref(), &task_definition, entry.desired);
            if !active {
                rollout = Rollout::Failed("the service is gone".into());
            }
            if let (Rollout::Failed(why), None) = (&rollout, &failing) {
                failing = Some(DeploymentError {
                    code: ROLLOUT_FAILED.into(),
                    message: format!("container {id}: {why}"),
                    resource_id: Some(id.clone()),
                });
            }
            resources.insert(id.clone(), resource(entry, service.as_ref(), &rollout));
        }
        RefreshReport { state: Some(state_of(&book, &resources)), failing }
    }
}
