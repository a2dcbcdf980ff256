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

mod fargate;
mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use alien_core::stack::{Code, Expose};
use alien_core::{ContainerConfig, Deployment, DeploymentError, Id};
use alien_deployer::platform::RefreshReport;
use alien_deployer::{Credentials, DeployRequest, PlatformDeployer, StepOutcome};
use alien_registry::ArtifactRegistry;
use aws_config::{Region, SdkConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest as _;

pub use fargate::{FargateSize, fargate_size};
pub use target::{EcsTarget, INVALID_TARGET};

use crate::config::{AwsSettings, with_credentials};
use crate::error::{AwsFailure, classify};

/// How long a step waits before looking at a rollout again.
const POLL: Duration = Duration::from_secs(5);

/// Error code of a failed ECS rollout.
pub const ROLLOUT_FAILED: &str = "ROLLOUT_FAILED";
/// Error code of a failed AWS call.
pub const AWS_ERROR: &str = "AWS_ERROR";
/// Error code of a registry that could not grant the deployment's account pull.
pub const REGISTRY_ERROR: &str = "REGISTRY_ERROR";
/// Error code of a container the deployer cannot run (no image, a size above Fargate's).
pub const UNSUPPORTED: &str = "UNSUPPORTED_CONTAINER";

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

/// The deployer's bookkeeping under the state's `aws` key: everything it created, by container,
/// so destroy finds it all even after the stack changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Book {
    /// The region the resources are in.
    #[serde(default)]
    pub region: String,
    /// The cluster.
    #[serde(default)]
    pub cluster: String,
    /// Per container resource.
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerBook>,
}

/// What one container's service is made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerBook {
    /// Task definition family, also the service name.
    pub family: String,
    /// The release whose task definition is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// That task definition's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    /// The size it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<FargateSize>,
    /// The log group.
    pub log_group: String,
    /// SSM parameters holding its secret variables.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub parameters: BTreeSet<String>,
    /// The load balancer in front of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerBook>,
    /// Whether autoscaling is registered for the service.
    #[serde(default)]
    pub autoscaling: bool,
    /// Replicas wanted.
    #[serde(default)]
    pub desired: u32,
}

/// A load balancer, its target group and listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerBook {
    /// `application` or `network`.
    pub kind: String,
    /// Its name (also the target group's).
    pub name: String,
    /// ARN.
    #[serde(default)]
    pub arn: String,
    /// DNS name.
    #[serde(default)]
    pub dns_name: String,
    /// Target group ARN.
    #[serde(default)]
    pub target_group_arn: String,
    /// Listener ARN.
    #[serde(default)]
    pub listener_arn: String,
    /// The container port behind it.
    pub port: u32,
    /// The listener's port.
    pub listener_port: u32,
}

impl Book {
    fn from_state(state: Option<&Value>) -> Book {
        state
            .and_then(|s| s.get("aws"))
            .and_then(|b| serde_json::from_value(b.clone()).ok())
            .unwrap_or_default()
    }
}

/// `alien-{deployment}-{container}`.
fn family(deployment: &Deployment, container: &str) -> String {
    format!("alien-{}-{container}", deployment.id)
}

/// `al-` and 16 hex digits of a hash of the deployment and container: load balancer and
/// target group names are at most 32 characters.
fn balancer_name(deployment: &Deployment, container: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{}/{container}", deployment.id));
    format!("al-{}", &hex::encode(digest)[..16])
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

fn state_of(book: &Book, resources: &BTreeMap<String, Value>) -> Value {
    json!({"platform": "aws", "resources": resources, "aws": book})
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

    /// The load balancer, target group and listener of an exposed port (found by name, else
    /// created).
    async fn load_balancer(
        &self,
        clients: &Clients,
        target: &EcsTarget,
        id: &str,
        name: &str,
        container: &ContainerConfig,
        (port, expose): (u32, Expose),
    ) -> Result<LoadBalancerBook, DeploymentError> {
        use aws_sdk_elasticloadbalancingv2::types::{
            Action, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Matcher,
            ProtocolEnum, TargetTypeEnum,
        };
        let (kind, lb_type, protocol, listener_port) = match expose {
            Expose::Http => {
                ("application", LoadBalancerTypeEnum::Application, ProtocolEnum::Http, 80)
            }
            Expose::Tcp => ("network", LoadBalancerTypeEnum::Network, ProtocolEnum::Tcp, port),
        };
        let port_i32 = i32::try_from(port).unwrap_or(0);
        let elb = &clients.elb;
        let found = elb.describe_load_balancers().names(name).send().await;
        let lb = match found {
            Ok(out) => out.load_balancers().first().cloned(),
            Err(err) => {
                let failure = classify("ELB DescribeLoadBalancers", &err);
                if failure.code.as_deref() != Some("LoadBalancerNotFound") {
                    return Err(aws_error(failure, Some(id)));
                }
                None
            }
        };
        let lb = match lb {
            Some(lb) => lb,
            None => elb
                .create_load_balancer()
                .name(name)
                .r#type(lb_type)
                .scheme(LoadBalancerSchemeEnum::InternetFacing)
                .set_subnets(Some(target.subnet_ids.clone()))
                .set_security_groups(Some(target.security_group_ids.clone()))
                .send()
                .await
                .map_err(|e| aws_error(classify("ELB CreateLoadBalancer", &e), Some(id)))?
                .load_balancers()
                .first()
                .cloned()
                .ok_or_else(|| build_error(id, "CreateLoadBalancer returned nothing"))?,
        };
        let lb_arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
        let found = elb.describe_target_groups().names(name).send().await;
        let group = match found {
            Ok(out) => out.target_groups().first().cloned(),
            Err(err) => {
                let failure = classify("ELB DescribeTargetGroups", &err);
                if failure.code.as_deref() != Some("TargetGroupNotFound") {
                    return Err(aws_error(failure, Some(id)));
                }
                None
            }
        };
        let group = match group {
            Some(group) => group,
            None => {
                let mut create = elb
                    .create_target_group()
                    .name(name)
                    .protocol(protocol.clone())
                    .port(port_i32)
                    .set_vpc_id(target.vpc_id.clone())
                    .target_type(TargetTypeEnum::Ip);
                if expose == Expose::Http {
                    let check = container.health_check.as_ref();
                    let path = check.and_then(|c| c.path.clone()).unwrap_or_else(|| "/".into());
                    create = create
                        .health_check_path(path)
                        .matcher(Matcher::builder().http_code("200-399").build());
                    if let Some(threshold) = check.and_then(|c| c.failure_threshold) {
                        create = create.unhealthy_threshold_count(
                            i32::try_from(threshold.clamp(2, 10)).unwrap_or(2),
                        );
                    }
                }
                create
                    .send()
                    .await
                    .map_err(|e| aws_error(classify("ELB CreateTargetGroup", &e), Some(id)))?
                    .target_groups()
                    .first()
                    .cloned()
                    .ok_or_else(|| build_error(id, "CreateTargetGroup returned nothing"))?
            }
        };
        let group_arn = group.target_group_arn().unwrap_or_default().to_owned();
        let listeners = elb
            .describe_listeners()
            .load_balancer_arn(&lb_arn)
            .send()
            .await
            .map_err(|e| aws_error(classify("ELB DescribeListeners", &e), Some(id)))?;
        let listener_arn = match listeners.listeners().first() {
            Some(listener) => listener.listener_arn().unwrap_or_default().to_owned(),
            None => elb
                .create_listener()
                .load_balancer_arn(&lb_arn)
                .protocol(protocol)
                .port(i32::try_from(listener_port).unwrap_or(80))
                .default_actions(
                    Action::builder()
                        .r#type(ActionTypeEnum::Forward)
                        .target_group_arn(&group_arn)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| aws_error(classify("ELB CreateListener", &e), Some(id)))?
                .listeners()
                .first()
                .and_then(|l| l.listener_arn())
                .unwrap_or_default()
                .to_owned(),
        };
        Ok(LoadBalancerBook {
            kind: kind.to_owned(),
            name: name.to_owned(),
            arn: lb_arn,
            dns_name: lb.dns_name().unwrap_or_default().to_owned(),
            target_group_arn: group_arn,
            listener_arn,
            port,
            listener_port,
        })
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

/// `app/<lb-name>/<lb-id>/targetgroup/<tg-name>/<tg-id>` (ALBRequestCountPerTarget's label).
fn resource_label(lb: &LoadBalancerBook) -> Option<String> {
    if lb.kind != "application" {
        return None;
    }
    let lb_part = lb.arn.split_once(":loadbalancer/")?.1;
    let tg_part = lb.target_group_arn.rsplit_once(':')?.1;
    Some(format!("{lb_part}/{tg_part}"))
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

async fn describe_service(
    clients: &Clients,
    cluster: &str,
    name: &str,
) -> Result<Option<aws_sdk_ecs::types::Service>, AwsFailure> {
    match clients.ecs.describe_services().cluster(cluster).services(name).send().await {
        Ok(out) => Ok(out.services().first().cloned()),
        Err(err) => {
            let failure = classify("ECS DescribeServices", &err);
            if failure.code.as_deref() == Some("ClusterNotFoundException") {
                Ok(None)
            } else {
                Err(failure)
            }
        }
    }
}

/// Where a service's rollout of a task definition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rollout {
    Completed,
    InProgress,
    Failed(String),
}

/// The rollout of `task_definition` in `service`, read from its PRIMARY deployment.
fn rollout(
    service: Option<&aws_sdk_ecs::types::Service>,
    task_definition: &str,
    desired: u32,
) -> Rollout {
    use aws_sdk_ecs::types::DeploymentRolloutState;
    let Some(service) = service else { return Rollout::InProgress };
    let primary = service.deployments().iter().find(|d| d.status() == Some("PRIMARY"));
    let Some(primary) = primary.filter(|d| d.task_definition() == Some(task_definition)) else {
        return Rollout::InProgress;
    };
    let failed = u32::try_from(primary.failed_tasks()).unwrap_or(0);
    match primary.rollout_state() {
        Some(DeploymentRolloutState::Failed) => Rollout::Failed(format!(
            "rollout FAILED{}",
            primary.rollout_state_reason().map(|r| format!(": {r}")).unwrap_or_default()
        )),
        Some(DeploymentRolloutState::Completed)
            if u32::try_from(primary.running_count()).unwrap_or(0) >= desired =>
        {
            Rollout::Completed
        }
        _ if failed > 0 && failed >= desired.max(1) => {
            Rollout::Failed(format!("{failed} tasks failed to start"))
        }
        _ => Rollout::InProgress,
    }
}

/// One container's entry of the state's `resources` (spec/containers.md "Outputs").
fn resource(
    book: &ContainerBook,
    service: Option<&aws_sdk_ecs::types::Service>,
    rollout: &Rollout,
) -> Value {
    let running = service.map_or(0, |s| s.running_count());
    let status = match rollout {
        Rollout::Completed => "running",
        Rollout::InProgress => "pending",
        Rollout::Failed(_) => "failed",
    };
    let mut outputs = json!({
        "name": book.family,
        "status": status,
        "currentReplicas": running,
        "desiredReplicas": service.map_or(i64::from(book.desired), |s| i64::from(s.desired_count())),
    });
    if let Some(lb) = &book.load_balancer {
        outputs["url"] = json!(match lb.kind.as_str() {
            "application" => format!("http://{}", lb.dns_name),
            _ => format!("{}:{}", lb.dns_name, lb.listener_port),
        });
        outputs["loadBalancer"] = json!(lb.dns_name);
    }
    if let Some(size) = &book.size {
        outputs["fargate"] = json!({
            "cpu": size.cpu, "memory": size.memory, "rounded": size.rounded(),
            "requestedCpuMillis": size.requested_cpu_millis,
            "requestedMemoryMiB": size.requested_memory_mib,
        });
    }
    json!({"type": "container", "status": status, "outputs": outputs})
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
        let mut book = Book::from_state(request.state);
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
        let mut book = Book::from_state(state);
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
        let book = Book::from_state(state);
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

/// Removes one container's resources; `Ok(false)` while its service is still draining.
async fn destroy_container(
    clients: &Clients,
    cluster: &str,
    id: &str,
    entry: &ContainerBook,
) -> Result<bool, DeploymentError> {
    use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
    let fail = |f: AwsFailure| aws_error(f, Some(id));
    let gone =
        |f: &AwsFailure, codes: &[&str]| f.code.as_deref().is_some_and(|c| codes.contains(&c));
    if entry.autoscaling {
        let resource = format!("service/{cluster}/{}", entry.family);
        // Policies first: deregistering the target leaves them behind on some implementations.
        for name in ["alien-cpu", "alien-memory", "alien-requests"] {
            let deleted = clients
                .scaling
                .delete_scaling_policy()
                .policy_name(name)
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(&resource)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .send()
                .await;
            if let Err(err) = deleted {
                let f = classify("Auto Scaling DeleteScalingPolicy", &err);
                if !gone(&f, &["ObjectNotFoundException", "ValidationException"]) {
                    return Err(fail(f));
                }
            }
        }
        let deregistered = clients
            .scaling
            .deregister_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&resource)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .send()
            .await;
        if let Err(err) = deregistered {
            let f = classify("Auto Scaling DeregisterScalableTarget", &err);
            if !gone(&f, &["ObjectNotFoundException", "ValidationException"]) {
                return Err(fail(f));
            }
        }
    }
    let service = describe_service(clients, cluster, &entry.family).await.map_err(fail)?;
    match service.as_ref().and_then(|s| s.status()) {
        Some("ACTIVE") => {
            clients
                .ecs
                .delete_service()
                .cluster(cluster)
                .service(&entry.family)
                .force(true)
                .send()
                .await
                .map_err(|e| fail(classify("ECS DeleteService", &e)))?;
            let after = describe_service(clients, cluster, &entry.family).await.map_err(fail)?;
            if after.as_ref().and_then(|s| s.status()) == Some("DRAINING") {
                return Ok(false);
            }
        }
        Some("DRAINING") => return Ok(false),
        _ => {}
    }
    if let Some(lb) = &entry.load_balancer {
        let elb = &clients.elb;
        if !lb.listener_arn.is_empty()
            && let Err(err) = elb.delete_listener().listener_arn(&lb.listener_arn).send().await
        {
            let f = classify("ELB DeleteListener", &err);
            if !gone(&f, &["ListenerNotFound"]) {
                return Err(fail(f));
            }
        }
        if !lb.target_group_arn.is_empty()
            && let Err(err) =
                elb.delete_target_group().target_group_arn(&lb.target_group_arn).send().await
        {
            let f = classify("ELB DeleteTargetGroup", &err);
            if gone(&f, &["ResourceInUse"]) {
                return Ok(false);
            }
            if !gone(&f, &["TargetGroupNotFound"]) {
                return Err(fail(f));
            }
        }
        if !lb.arn.is_empty()
            && let Err(err) = elb.delete_load_balancer().load_balancer_arn(&lb.arn).send().await
        {
            let f = classify("ELB DeleteLoadBalancer", &err);
            if !gone(&f, &["LoadBalancerNotFound"]) {
                return Err(fail(f));
            }
        }
    }
    // Every revision of the family, not only the last one recorded.
    let mut revisions = Vec::new();
    for status in [
        aws_sdk_ecs::types::TaskDefinitionStatus::Active,
        aws_sdk_ecs::types::TaskDefinitionStatus::Inactive,
    ] {
        let mut pages = clients
            .ecs
            .list_task_definitions()
            .family_prefix(&entry.family)
            .status(status.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| fail(classify("ECS ListTaskDefinitions", &e)))?;
            for arn in page.task_definition_arns() {
                // The prefix also matches `alien-{d}-{c}-x`; keep this family's own revisions.
                let name = arn.rsplit_once('/').map_or(arn.as_str(), |(_, n)| n);
                if name.rsplit_once(':').is_some_and(|(f, _)| f == entry.family) {
                    revisions.push((
                        arn.clone(),
                        status == aws_sdk_ecs::types::TaskDefinitionStatus::Active,
                    ));
                }
            }
        }
    }
    for (arn, active) in &revisions {
        if *active {
            clients
                .ecs
                .deregister_task_definition()
                .task_definition(arn)
                .send()
                .await
                .map_err(|e| fail(classify("ECS DeregisterTaskDefinition", &e)))?;
        }
    }
    for chunk in revisions.chunks(10) {
        clients
            .ecs
            .delete_task_definitions()
            .set_task_definitions(Some(chunk.iter().map(|(arn, _)| arn.clone()).collect()))
            .send()
            .await
            .map_err(|e| fail(classify("ECS DeleteTaskDefinitions", &e)))?;
    }
    if let Err(err) = clients.logs.delete_log_group().log_group_name(&entry.log_group).send().await
    {
        let f = classify("Logs DeleteLogGroup", &err);
        if !gone(&f, &["ResourceNotFoundException"]) {
            return Err(fail(f));
        }
    }
    let parameters: Vec<String> = entry.parameters.iter().cloned().collect();
    for chunk in parameters.chunks(10) {
        clients
            .ssm
            .delete_parameters()
            .set_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| fail(classify("SSM DeleteParameters", &e)))?;
    }
    Ok(true)
}

/// The outputs of a deployment's container in a state this deployer wrote (for tests and
/// tools): `url`, replica counts, status.
pub fn outputs<'a>(state: &'a Value, container: &str) -> Option<&'a Value> {
    state.get("resources")?.get(container)?.get("outputs")
}

/// The release a container's task definition was registered for (for tests).
pub fn registered_release(state: &Value, container: &str) -> Option<Id> {
    Book::from_state(Some(state)).containers.get(container)?.release.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_aws_limits() {
        let deployment: Deployment = serde_json::from_value(json!({
            "id": "dep_0123456789abcdefghijklmnopqr", "name": "acme", "platform": "aws",
            "status": "pending", "deploymentModel": "push", "retryRequested": false,
            "deploymentGroupId": "dg_0123456789abcdefghijklmnopqr",
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        let name = balancer_name(&deployment, "a-rather-long-container-name");
        assert_eq!(name.len(), 19);
        assert!(name.starts_with("al-") && name[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(name, balancer_name(&deployment, "other"));
        assert_eq!(family(&deployment, "web"), "alien-dep_0123456789abcdefghijklmnopqr-web");
    }

    #[test]
    fn request_count_label_is_built_from_the_arns() {
        let lb = LoadBalancerBook {
            kind: "application".into(),
            arn: "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/al-1/50dc6c495c0c9188"
                .into(),
            target_group_arn:
                "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/al-1/73e2d6bc24d8a067".into(),
            ..Default::default()
        };
        assert_eq!(
            resource_label(&lb).unwrap(),
            "app/al-1/50dc6c495c0c9188/targetgroup/al-1/73e2d6bc24d8a067"
        );
        assert_eq!(resource_label(&LoadBalancerBook { kind: "network".into(), ..lb }), None);
    }

    fn service(td: &str, state: &str, running: i32, failed: i32) -> aws_sdk_ecs::types::Service {
        use aws_sdk_ecs::types::{Deployment as EcsDeployment, DeploymentRolloutState, Service};
        Service::builder()
            .status("ACTIVE")
            .task_definition(td)
            .deployments(
                EcsDeployment::builder()
                    .status("PRIMARY")
                    .task_definition(td)
                    .rollout_state(DeploymentRolloutState::from(state))
                    .running_count(running)
                    .failed_tasks(failed)
                    .build(),
            )
            .build()
    }

    #[test]
    fn rollouts_complete_fail_or_wait() {
        let td = "arn:td:2";
        assert_eq!(rollout(None, td, 1), Rollout::InProgress);
        assert_eq!(rollout(Some(&service(td, "COMPLETED", 2, 0)), td, 2), Rollout::Completed);
        assert_eq!(rollout(Some(&service(td, "COMPLETED", 1, 0)), td, 2), Rollout::InProgress);
        assert_eq!(
            rollout(Some(&service("arn:td:1", "COMPLETED", 2, 0)), td, 2),
            Rollout::InProgress
        );
        assert!(matches!(rollout(Some(&service(td, "FAILED", 0, 0)), td, 2), Rollout::Failed(_)));
        assert!(matches!(
            rollout(Some(&service(td, "IN_PROGRESS", 0, 2)), td, 2),
            Rollout::Failed(_)
        ));
        assert_eq!(rollout(Some(&service(td, "IN_PROGRESS", 0, 1)), td, 2), Rollout::InProgress);
    }
}
