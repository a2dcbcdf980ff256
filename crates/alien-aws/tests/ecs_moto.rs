//! [`EcsDeployer`] on moto, with credentials STS minted for a target role in another account
//! (moto places what those credentials create in the role's account, so every resource checked
//! below proves the impersonation): the seed's `valid-web.json` stack deployed, updated, failed,
//! fixed and destroyed.
//!
//! What moto cannot show, and how the test stands in: moto runs no task (its
//! `MOTO_ECS_SERVICE_RUNNING` setting reports running tasks at CreateService), never moves an
//! UpdateService rollout (the test finishes or fails it through `moto_serial.py`'s
//! `/_alien/ecs-service` hook, as ECS would report it), pulls no image, and its load balancer
//! DNS names resolve nowhere.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use alien_aws::moto::Moto;
use alien_aws::{EcsDeployer, StsImpersonator, with_credentials};
use alien_core::{Deployment, EnvironmentVariable, Id, Stack, VariableType};
use alien_deployer::{ContainerEnv, Credentials, DeployRequest, PlatformDeployer, StepOutcome};
use alien_impersonation::{Identity, ImpersonationTarget, Impersonator, SessionName};
use serde_json::{Value, json};

const ACCOUNT: &str = "210987654321";
const CLUSTER: &str = "alien";
const SECRET: &str = "s3cr3t-db-password-value";

struct World {
    moto: Moto,
    deployer: EcsDeployer,
    credentials: Credentials,
    target: Value,
    deployment: Deployment,
    as_target: aws_config::SdkConfig,
}

async fn world() -> World {
    let moto = Moto::start().await.unwrap();
    moto.set_env(&[("MOTO_ECS_SERVICE_RUNNING", Some("4"))]).await.unwrap();
    let sts = StsImpersonator::new(&moto.settings(), None).await;
    let role = format!("arn:aws:iam::{ACCOUNT}:role/alien-deployer");
    let identity = Identity::Aws {
        role_arn: role.clone(),
        external_id: None,
        session_name: SessionName::new("deploy", "dep_test"),
    };
    let credentials = sts.credentials(&ImpersonationTarget::new(identity, None)).await.unwrap();
    let Credentials::Aws { access_key_id, .. } = &credentials else { panic!() };
    let (vpc, subnets, group) = moto.default_network(access_key_id).await.unwrap();
    let target = json!({
        "accountId": ACCOUNT, "roleArn": role, "vpcId": vpc, "subnetIds": subnets,
        "securityGroupIds": [group],
        "executionRoleArn": format!("arn:aws:iam::{ACCOUNT}:role/alien-ecs-execution"),
    });
    let deployment: Deployment = serde_json::from_value(json!({
        "id": Id::new(alien_core::IdKind::Deployment).to_string(), "name": "acme",
        "platform": "aws", "status": "provisioning", "deploymentModel": "push",
        "deploymentGroupId": Id::new(alien_core::IdKind::DeploymentGroup).to_string(),
        "retryRequested": false,
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
    }))
    .unwrap();
    let sdk = moto.settings().load().await;
    let as_target = with_credentials(&sdk, &credentials).unwrap();
    let deployer = EcsDeployer::new(&moto.settings()).await;
    World { moto, deployer, credentials, target, deployment, as_target }
}

/// The fixture's stack with `image`.
fn stack(image: &str) -> Stack {
    stack_with(image, |_| {})
}

/// The fixture's stack with `image`, its container's config changed by `edit`.
fn stack_with(image: &str, edit: impl FnOnce(&mut Value)) -> Stack {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/valid-web.json");
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    value["resources"]["api"]["config"]["code"]["image"] = json!(image);
    edit(&mut value["resources"]["api"]["config"]);
    alien_core::parse_release_stack(&value).unwrap()
}

impl World {
    fn env(
        &self,
        stack: &Stack,
    ) -> (BTreeMap<String, ContainerEnv>, std::collections::BTreeSet<String>) {
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
            "ax_dep_TOKENVALUE",
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

    fn family(&self) -> String {
        format!("alien-{}-api", self.deployment.id)
    }

    async fn service(&self) -> aws_sdk_ecs::types::Service {
        let out = aws_sdk_ecs::Client::new(&self.as_target)
            .describe_services()
            .cluster(CLUSTER)
            .services(self.family())
            .send()
            .await
            .unwrap();
        out.services()[0].clone()
    }

    async fn finish_rollout(&self, state: &str) {
        self.moto
            .patch_ecs_service(json!({
                "cluster": CLUSTER, "service": self.family(), "account": ACCOUNT,
                "syncDeployment": true, "rolloutState": state, "runningCount": 4,
                "failedTasks": if state == "FAILED" { 4 } else { 0 },
            }))
            .await
            .unwrap();
    }
}

fn done(outcome: StepOutcome) -> Value {
    match outcome {
        StepOutcome::Done { state } => state,
        other => panic!("expected done, got {other:?}"),
    }
}

fn waiting(outcome: StepOutcome) -> Value {
    match outcome {
        StepOutcome::Wait { state, wait } => {
            assert!(wait <= Duration::from_secs(10));
            state
        }
        other => panic!("expected wait, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_update_fail_fix_and_destroy() {
    let w = world().await;
    let ecs = aws_sdk_ecs::Client::new(&w.as_target);

    // First release: created whole, and running as moto reports it.
    let v1 = Id::new(alien_core::IdKind::Release);
    let state = done(w.step(&v1, &stack("registry.example.com/acme/api:v1"), None).await);
    let service = w.service().await;
    assert_eq!(service.desired_count(), 4, "the autoscaling's desired count");
    let td_arn = service.task_definition().unwrap().to_owned();
    assert!(
        td_arn.contains(&format!(":{ACCOUNT}:task-definition/")),
        "in the target account: {td_arn}"
    );
    let td = ecs.describe_task_definition().task_definition(&td_arn).send().await.unwrap();
    let td = td.task_definition().unwrap();
    assert_eq!(
        (td.cpu(), td.memory()),
        (Some("2048"), Some("4096")),
        "2 vCPU and 1Gi rounded to Fargate"
    );
    let c = &td.container_definitions()[0];
    assert_eq!(c.image(), Some("registry.example.com/acme/api:v1"));
    let ports: Vec<i32> = c.port_mappings().iter().filter_map(|p| p.container_port()).collect();
    assert_eq!(ports, [8080, 9090]);
    assert_eq!(c.command(), ["./server", "--port", "8080"]);
    let plain: BTreeMap<&str, &str> =
        c.environment().iter().map(|kv| (kv.name().unwrap(), kv.value().unwrap())).collect();
    assert_eq!(plain.get("MODE"), Some(&"production"));
    assert_eq!(plain.get("LOG_LEVEL"), Some(&"info"));
    let shown = format!("{td:?}");
    assert!(
        !shown.contains(SECRET) && !shown.contains("TOKENVALUE"),
        "a secret in the task definition"
    );
    let secrets: Vec<&str> = c.secrets().iter().map(|s| s.name()).collect();
    assert!(
        secrets.contains(&"DB_PASSWORD") && secrets.contains(&"ALIEN_COMMANDS_TOKEN"),
        "{secrets:?}"
    );
    let ssm = aws_sdk_ssm::Client::new(&w.as_target);
    let parameter = c.secrets().iter().find(|s| s.name() == "DB_PASSWORD").unwrap().value_from();
    let stored = ssm.get_parameter().name(parameter).with_decryption(true).send().await.unwrap();
    assert_eq!(stored.parameter().unwrap().value(), Some(SECRET));
    let logs = c.log_configuration().unwrap();
    assert_eq!(logs.options().unwrap()["awslogs-group"], format!("/alien/{}/api", w.deployment.id));
    let outputs = alien_aws::ecs::outputs(&state, "api").unwrap();
    assert_eq!(outputs["status"], "running");
    assert_eq!(
        (outputs["currentReplicas"].as_i64(), outputs["desiredReplicas"].as_i64()),
        (Some(4), Some(4))
    );
    let url = outputs["url"].as_str().unwrap();
    assert!(url.starts_with("http://al-") && url.ends_with(".elb.amazonaws.com"), "{url}");
    assert_eq!(outputs["fargate"]["rounded"], true);
    let lbs = service.load_balancers();
    assert_eq!((lbs[0].container_name(), lbs[0].container_port()), (Some("api"), Some(8080)));
    let scaling = aws_sdk_applicationautoscaling::Client::new(&w.as_target);
    let policies = scaling
        .describe_scaling_policies()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
        .send()
        .await
        .unwrap();
    let mut names: Vec<&str> =
        policies.scaling_policies().iter().map(|p| p.policy_name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["alien-cpu", "alien-memory", "alien-requests"]);

    // The same release again creates nothing new.
    let again = done(w.step(&v1, &stack("registry.example.com/acme/api:v1"), Some(&state)).await);
    assert_eq!(w.service().await.task_definition(), Some(td_arn.as_str()));

    // Second release: a new revision and a service update, done once ECS reports the rollout.
    let v2 = Id::new(alien_core::IdKind::Release);
    let v2_stack = stack("registry.example.com/acme/api:v2");
    let state = waiting(w.step(&v2, &v2_stack, Some(&again)).await);
    let td2 = w.service().await.task_definition().unwrap().to_owned();
    assert!(td2.ends_with(":2"), "{td2}");
    w.finish_rollout("COMPLETED").await;
    let state = done(w.step(&v2, &v2_stack, Some(&state)).await);

    // Third release fails its rollout: the error names the container.
    let v3 = Id::new(alien_core::IdKind::Release);
    let v3_stack = stack("registry.example.com/acme/api:broken");
    let state = waiting(w.step(&v3, &v3_stack, Some(&state)).await);
    w.finish_rollout("FAILED").await;
    let state = match w.step(&v3, &v3_stack, Some(&state)).await {
        StepOutcome::Failed { state, error } => {
            assert_eq!(error.code, alien_aws::ecs::ROLLOUT_FAILED);
            assert_eq!(error.resource_id.as_deref(), Some("api"));
            assert!(error.message.contains("container api"), "{}", error.message);
            state.unwrap()
        }
        other => panic!("expected failed, got {other:?}"),
    };

    // A fixed release recovers.
    let v4 = Id::new(alien_core::IdKind::Release);
    let v4_stack = stack("registry.example.com/acme/api:v4");
    let state = waiting(w.step(&v4, &v4_stack, Some(&state)).await);
    w.finish_rollout("COMPLETED").await;
    let state = done(w.step(&v4, &v4_stack, Some(&state)).await);
    assert!(w.service().await.task_definition().unwrap().ends_with(":4"));

    // Refresh reads the outputs.
    let report = w.deployer.refresh(&w.deployment, Some(&state), &w.credentials).await;
    assert_eq!(report.failing, None);
    assert_eq!(
        alien_aws::ecs::outputs(report.state.as_ref().unwrap(), "api").unwrap()["status"],
        "running"
    );

    // Destroy leaves nothing of the deployment behind.
    let mut state = Some(state);
    for _ in 0..10 {
        match w.deployer.destroy(&w.deployment, state.as_ref(), true, &w.credentials).await {
            StepOutcome::Done { .. } => {
                state = None;
                break;
            }
            StepOutcome::Wait { state: next, .. } => state = Some(next),
            StepOutcome::Failed { error, .. } => panic!("destroy failed: {error:?}"),
        }
    }
    assert!(state.is_none(), "destroy finished");
    assert_nothing_left(&w).await;
}

async fn assert_nothing_left(w: &World) {
    let ecs = aws_sdk_ecs::Client::new(&w.as_target);
    let service = w.service().await;
    assert_eq!(service.status(), Some("INACTIVE"), "the service is deleted");
    for status in [
        aws_sdk_ecs::types::TaskDefinitionStatus::Active,
        aws_sdk_ecs::types::TaskDefinitionStatus::Inactive,
    ] {
        let left = ecs
            .list_task_definitions()
            .family_prefix(w.family())
            .status(status)
            .send()
            .await
            .unwrap();
        assert!(left.task_definition_arns().is_empty(), "task definitions left: {left:?}");
    }
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&w.as_target);
    let lbs = elb.describe_load_balancers().send().await.unwrap();
    assert!(lbs.load_balancers().is_empty(), "{lbs:?}");
    let groups = elb.describe_target_groups().send().await.unwrap();
    assert!(groups.target_groups().is_empty(), "{groups:?}");
    let logs = aws_sdk_cloudwatchlogs::Client::new(&w.as_target);
    let groups = logs.describe_log_groups().log_group_name_prefix("/alien/").send().await.unwrap();
    assert!(groups.log_groups().is_empty(), "{groups:?}");
    let ssm = aws_sdk_ssm::Client::new(&w.as_target);
    let left = ssm.get_parameters_by_path().path("/alien").recursive(true).send().await.unwrap();
    assert!(left.parameters().is_empty(), "{left:?}");
    let scaling = aws_sdk_applicationautoscaling::Client::new(&w.as_target);
    let targets = scaling
        .describe_scalable_targets()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
        .send()
        .await
        .unwrap();
    assert!(targets.scalable_targets().is_empty(), "{targets:?}");
}

/// A target without the network the deployer needs fails naming the field, before any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_subnets_is_refused_naming_the_field() {
    let mut w = world().await;
    w.target.as_object_mut().unwrap().remove("subnetIds");
    let v1 = Id::new(alien_core::IdKind::Release);
    match w.step(&v1, &stack("registry.example.com/acme/api:v1"), None).await {
        StepOutcome::Failed { error, .. } => {
            assert_eq!(error.code, alien_aws::ecs::INVALID_TARGET);
            assert!(error.message.starts_with("target.subnetIds "), "{}", error.message);
        }
        other => panic!("expected failed, got {other:?}"),
    }
}

/// A `tcp` port goes behind a network load balancer with a TCP listener on the port, and the
/// output `url` is `<dns name>:<port>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_port_goes_behind_a_network_load_balancer() {
    use aws_sdk_elasticloadbalancingv2::types::{LoadBalancerTypeEnum, ProtocolEnum};
    let w = world().await;
    let tcp = stack_with("registry.example.com/acme/db:v1", |config| {
        config["ports"] = json!([{"port": 5432, "expose": "tcp"}]);
        config["autoscaling"] = Value::Null;
        config["replicas"] = json!(4);
        config["healthCheck"] = Value::Null;
    });
    let v1 = Id::new(alien_core::IdKind::Release);
    let state = done(w.step(&v1, &tcp, None).await);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&w.as_target);
    let lbs = elb.describe_load_balancers().send().await.unwrap();
    let lb = &lbs.load_balancers()[0];
    assert_eq!(lb.r#type(), Some(&LoadBalancerTypeEnum::Network));
    let listeners =
        elb.describe_listeners().load_balancer_arn(lb.load_balancer_arn().unwrap()).send().await;
    let listener = &listeners.unwrap().listeners()[0].clone();
    assert_eq!((listener.protocol(), listener.port()), (Some(&ProtocolEnum::Tcp), Some(5432)));
    let groups = elb.describe_target_groups().send().await.unwrap();
    let group = &groups.target_groups()[0];
    assert_eq!((group.protocol(), group.port()), (Some(&ProtocolEnum::Tcp), Some(5432)));
    let outputs = alien_aws::ecs::outputs(&state, "api").unwrap();
    assert_eq!(outputs["url"], format!("{}:5432", lb.dns_name().unwrap()));
    assert_eq!(w.service().await.desired_count(), 4, "replicas without autoscaling");
    assert!(
        w.deployer.destroy(&w.deployment, Some(&state), true, &w.credentials).await
            == StepOutcome::Done { state: json!({"platform": "aws", "resources": {}}) }
    );
    assert_nothing_left(&w).await;
}

/// A container the next release no longer has is removed once the release runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_dropped_by_a_release_is_removed() {
    let w = world().await;
    let v1 = Id::new(alien_core::IdKind::Release);
    let state = done(w.step(&v1, &stack("registry.example.com/acme/api:v1"), None).await);
    // Release 2 runs the container as `web` only.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/valid-web.json");
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut api = value["resources"]["api"].take();
    api["config"]["id"] = json!("web");
    value["resources"] = json!({"web": api});
    let web = alien_core::parse_release_stack(&value).unwrap();
    let v2 = Id::new(alien_core::IdKind::Release);
    let state = done(w.step(&v2, &web, Some(&state)).await);
    assert!(state["resources"].get("api").is_none(), "{state}");
    assert!(state["aws"]["containers"].get("api").is_none(), "{state}");
    assert_eq!(w.service().await.status(), Some("INACTIVE"), "api's service is deleted");
    let ecs = aws_sdk_ecs::Client::new(&w.as_target);
    let web_service = ecs
        .describe_services()
        .cluster(CLUSTER)
        .services(format!("alien-{}-web", w.deployment.id))
        .send()
        .await
        .unwrap();
    assert_eq!(web_service.services()[0].status(), Some("ACTIVE"));
    let left = ecs.list_task_definitions().family_prefix(w.family()).send().await.unwrap();
    assert!(left.task_definition_arns().is_empty(), "{left:?}");
}
