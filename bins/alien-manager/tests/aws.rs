//! AWS push mode end to end, against the real binary and moto (spec/testing.md): the seed's
//! "AWS Push-Mode" configuration with its endpoints pointed at moto, a deployment on platform
//! `aws` in another account (every resource checked is in that account: the impersonation is
//! real), its update, a failing rollout and the fix, a command with 1 MiB params through
//! DynamoDB and S3 answered by a receiver using the container's environment, credentials
//! minted for its workloads, and a cleanup that leaves nothing behind.
//!
//! What moto cannot show: it runs no task (`MOTO_ECS_SERVICE_RUNNING` reports them), never moves
//! an UpdateService rollout (the test finishes or fails it through `moto_serial.py`'s hook, as
//! ECS would report it), pulls no image, and its load balancers' DNS names resolve nowhere;
//! the receiver therefore runs here, with the environment ECS would give the container.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alien_aws::moto::{Moto, aws_env, unique_name};
use alien_aws::{DynamoKv, S3PayloadStore};
use common::push::{self, wait_status};
use common::{Manager, fixture};
use reqwest::Method;
use serde_json::{Value, json};

const ACCOUNT: &str = "210987654321";
const SECRET: &str = "db-password-never-in-plain-sight";

/// The seed's "Example: AWS Push-Mode", endpoints at moto, with a table and buckets of this
/// test's own.
fn seed_config(moto: &Moto, table: &str, bucket: &str) -> String {
    format!(
        r#"
[server]
deployment-interval-secs = 1

[artifact-registry.aws]
service = "ecr"
repositoryPrefix = "alien-artifacts"
pushRoleArn = "arn:aws:iam::123456789012:role/ecr-push"

[commands]
kv = {{ service = "dynamodb", tableName = "{table}", region = "us-east-1", endpointUrl = "{url}" }}
storage = {{ service = "s3", bucketName = "{bucket}", endpointUrl = "{url}" }}

[impersonation.aws]
service = "awsiam"
roleName = "alien-management"
roleArn = "arn:aws:iam::123456789012:role/alien-management"
"#,
        url = moto.url
    )
}

async fn commands_store(moto: &Moto) -> (String, String) {
    let table = unique_name("alien-commands");
    let bucket = unique_name("alien-command-storage");
    DynamoKv::connect(&table, &moto.settings()).await.create_table().await.unwrap();
    S3PayloadStore::connect(&bucket, &moto.settings()).await.create_bucket().await.unwrap();
    (table, bucket)
}

fn env(moto: &Moto) -> Vec<(&'static str, String)> {
    aws_env(&moto.url)
}

async fn start(moto: &Moto, toml: &str) -> Manager {
    let env = env(moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Manager::start_deploying_with(toml, &env).await
}

fn release(image: &str) -> Value {
    let mut stack = fixture("valid-web.json");
    stack["resources"]["api"]["config"]["code"]["image"] = json!(image);
    json!({"stack": {"aws": stack}})
}

struct Target {
    sdk: aws_config::SdkConfig,
    access_key_id: String,
}

/// Credentials of the target account, as the manager's impersonation makes them.
async fn target_account(moto: &Moto) -> Target {
    let sts = alien_aws::StsImpersonator::new(&moto.settings(), None).await;
    let identity = alien_impersonation::Identity::Aws {
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/alien-deployer"),
        external_id: None,
        session_name: alien_impersonation::SessionName::new("test", "e2e"),
    };
    let target = alien_impersonation::ImpersonationTarget::new(identity, None);
    let credentials = alien_impersonation::Impersonator::credentials(&sts, &target).await.unwrap();
    let alien_impersonation::Credentials::Aws { access_key_id, .. } = &credentials else {
        panic!()
    };
    let sdk = alien_aws::with_credentials(&moto.settings().load().await, &credentials).unwrap();
    Target { sdk, access_key_id: access_key_id.clone() }
}

store_matrix! {
async fn seed_aws_push_mode_end_to_end() {
    let moto = Moto::start().await.unwrap();
    moto.set_env(&[("MOTO_ECS_SERVICE_RUNNING", Some("4"))]).await.unwrap();
    let (table, bucket) = commands_store(&moto).await;
    let manager = start(&moto, &seed_config(&moto, &table, &bucket)).await;
    let (_, ready) = manager.call(Method::GET, "/ready", None, None).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let account = target_account(&moto).await;
    let (vpc, subnets, group) = moto.default_network(&account.access_key_id).await.unwrap();

    // Where the CLI pushes: ECR, with short-lived push credentials and the repository made.
    let (status, build) = manager
        .call(
            Method::GET,
            "/v1/build-config?platform=aws&repositories=api",
            Some(&manager.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{build}");
    let registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    assert_eq!(
        (build["registry"].as_str(), build["repositoryName"].as_str()),
        (Some(registry), Some("alien-artifacts")),
        "{build}"
    );
    assert_eq!(build["credentials"]["username"], "AWS", "{build}");
    assert!(!build["credentials"]["password"].as_str().unwrap().is_empty());
    let image = |tag: &str| format!("{registry}/alien-artifacts/api:{tag}");

    // A release and a deployment in the customer's account.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("v1")))).await;
    let (group_id, group_token) = manager.group("customers").await;
    let body = json!({
        "name": "acme", "platform": "aws", "deploymentGroupId": group_id,
        "environmentVariables": [
            {"name": "DB_PASSWORD", "value": SECRET, "type": "secret"},
            {"name": "MODE", "value": "production", "type": "plain"}],
        "target": {
            "accountId": ACCOUNT, "roleArn": format!("arn:aws:iam::{ACCOUNT}:role/alien-deployer"),
            "externalId": "acme-guard", "vpcId": vpc, "subnetIds": subnets,
            "securityGroupIds": [group],
            "executionRoleArn": format!("arn:aws:iam::{ACCOUNT}:role/alien-ecs-execution")},
    });
    let created = manager.admin(Method::POST, "/v1/deployments", Some(body)).await;
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    let dep_token = created["token"].as_str().unwrap().to_owned();
    let info = wait_status(&manager, &dep, "running").await;

    // What runs: the service with the stack's image, size, ports and replicas.
    let family = format!("alien-{dep}-api");
    let ecs = aws_sdk_ecs::Client::new(&account.sdk);
    let describe = || async {
        ecs.describe_services().cluster("alien").services(&family).send().await.unwrap().services()
            [0]
        .clone()
    };
    let service = describe().await;
    assert_eq!(service.desired_count(), 4);
    let td_arn = service.task_definition().unwrap().to_owned();
    assert!(td_arn.contains(&format!(":{ACCOUNT}:task-definition/{family}:1")), "{td_arn}");
    let td = ecs.describe_task_definition().task_definition(&td_arn).send().await.unwrap();
    let td = td.task_definition().unwrap().clone();
    assert_eq!((td.cpu(), td.memory()), (Some("2048"), Some("4096")));
    let container = td.container_definitions()[0].clone();
    assert_eq!(container.image(), Some(image("v1").as_str()));
    // The customer's account may pull the vendor's repository.
    let ecr = aws_sdk_ecr::Client::new(&moto.settings().load().await);
    let policy =
        ecr.get_repository_policy().repository_name("alien-artifacts/api").send().await.unwrap();
    let policy = policy.policy_text().unwrap_or_default().to_owned();
    assert!(policy.contains(&format!("arn:aws:iam::{ACCOUNT}:root")), "{policy}");
    let ports: Vec<i32> =
        container.port_mappings().iter().filter_map(|p| p.container_port()).collect();
    assert_eq!(ports, [8080, 9090]);
    let plain: BTreeMap<String, String> = container
        .environment()
        .iter()
        .map(|kv| (kv.name().unwrap().to_owned(), kv.value().unwrap().to_owned()))
        .collect();
    let shown = format!("{td:?}");
    assert!(!shown.contains(SECRET), "the secret variable is in the task definition");
    assert!(!shown.contains(&dep_token), "the deployment token is in the task definition");
    assert_eq!(plain["MODE"], "production");
    let outputs = &info["deployment"]["stackState"]["resources"]["api"]["outputs"];
    let outputs = if outputs.is_null() {
        &info["stackState"]["resources"]["api"]["outputs"]
    } else {
        outputs
    };
    assert!(outputs["url"].as_str().unwrap_or_default().ends_with(".elb.amazonaws.com"), "{info}");
    assert_eq!(
        (outputs["currentReplicas"].as_i64(), outputs["desiredReplicas"].as_i64()),
        (Some(4), Some(4)),
        "{info}"
    );
    assert_eq!(outputs["status"], "running");

    // A command with 1 MiB params: stored in DynamoDB and S3, answered by a receiver with the
    // container's environment (the secrets as ECS injects them, from SSM).
    let ssm = aws_sdk_ssm::Client::new(&account.sdk);
    let mut container_env = plain.clone();
    for secret in container.secrets() {
        let value = ssm
            .get_parameter()
            .name(secret.value_from())
            .with_decryption(true)
            .send()
            .await
            .unwrap();
        container_env.insert(
            secret.name().to_owned(),
            value.parameter().unwrap().value().unwrap().to_owned(),
        );
    }
    assert_eq!(container_env["DB_PASSWORD"], SECRET);
    let prefix = format!("{}/{bucket}/", moto.url);
    let command =
        push::reverse_a_large_command(&manager, &group_token, &dep, &container_env, &prefix).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&moto.settings().load().await);
    let items = dynamo.scan().table_name(&table).send().await.unwrap();
    assert!(
        items.items().iter().any(|i| format!("{:?}", i.get("sk")).contains(&command)),
        "the command's state is in the DynamoDB table"
    );
    let s3 = alien_aws::s3_client(&moto.settings().load().await);
    let objects = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert!(
        objects.contents().iter().any(|o| o.key().unwrap_or_default().contains(&command)),
        "its payloads are in the bucket"
    );

    // Credentials minted for the deployment's workloads are its target role's.
    let body = json!({"deploymentId": dep, "resourceId": "api", "bindingName": "storage"});
    let (status, minted) =
        manager.call(Method::POST, "/v1/credentials/mint", Some(&dep_token), Some(body)).await;
    assert_eq!(status, 200, "{minted}");
    let creds: alien_impersonation::Credentials =
        serde_json::from_value(minted["credentials"].clone()).unwrap();
    let as_workload = alien_aws::with_credentials(&moto.settings().load().await, &creds).unwrap();
    let me = aws_sdk_sts::Client::new(&as_workload).get_caller_identity().send().await.unwrap();
    assert_eq!(me.account(), Some(ACCOUNT));
    assert!(me.arn().unwrap().contains("assumed-role/alien-deployer/"), "{:?}", me.arn());

    // A second release: a new revision and a service update, then running.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("v2")))).await;
    finish_rollout_of(&moto, &describe, &family, ":2", "COMPLETED").await;
    wait_status(&manager, &dep, "running").await;
    assert!(describe().await.task_definition().unwrap().ends_with(":2"));

    // A failing rollout: update-failed naming the container.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("broken")))).await;
    finish_rollout_of(&moto, &describe, &family, ":3", "FAILED").await;
    push::expect_api_rollout_failed(&manager, &dep).await;

    // A fixed release recovers.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("v4")))).await;
    finish_rollout_of(&moto, &describe, &family, ":4", "COMPLETED").await;
    wait_status(&manager, &dep, "running").await;

    // Cleanup leaves nothing of the deployment behind.
    push::delete_and_wait(&manager, &dep).await;
    nothing_left(&account.sdk, &dep, &family).await;
}
}

/// Waits until the service runs a task definition ending in `revision` (the manager issued the
/// update), then makes ECS's PRIMARY deployment report `state` for it.
async fn finish_rollout_of<F, Fut>(
    moto: &Moto,
    describe: &F,
    family: &str,
    revision: &str,
    state: &str,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = aws_sdk_ecs::types::Service>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !describe().await.task_definition().unwrap_or_default().ends_with(revision) {
        assert!(Instant::now() < deadline, "the manager never updated the service to {revision}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed = if state == "FAILED" { 4 } else { 0 };
    moto.patch_ecs_service(json!({
        "cluster": "alien", "service": family, "account": ACCOUNT, "syncDeployment": true,
        "rolloutState": state, "runningCount": 4, "failedTasks": failed,
    }))
    .await
    .unwrap();
}

async fn nothing_left(sdk: &aws_config::SdkConfig, dep: &str, family: &str) {
    let ecs = aws_sdk_ecs::Client::new(sdk);
    let services = ecs.list_services().cluster("alien").send().await.unwrap();
    let live: Vec<&String> =
        services.service_arns().iter().filter(|a| a.contains(family)).collect();
    if !live.is_empty() {
        let described =
            ecs.describe_services().cluster("alien").services(family).send().await.unwrap();
        assert!(
            described.services().iter().all(|s| s.status() == Some("INACTIVE")),
            "services left: {described:?}"
        );
    }
    for status in [
        aws_sdk_ecs::types::TaskDefinitionStatus::Active,
        aws_sdk_ecs::types::TaskDefinitionStatus::Inactive,
    ] {
        let left =
            ecs.list_task_definitions().family_prefix(family).status(status).send().await.unwrap();
        assert!(left.task_definition_arns().is_empty(), "task definitions left: {left:?}");
    }
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(sdk);
    let lbs = elb.describe_load_balancers().send().await.unwrap();
    assert!(lbs.load_balancers().is_empty(), "load balancers left: {lbs:?}");
    let groups = elb.describe_target_groups().send().await.unwrap();
    assert!(groups.target_groups().is_empty(), "target groups left: {groups:?}");
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    let left = logs
        .describe_log_groups()
        .log_group_name_prefix(format!("/alien/{dep}"))
        .send()
        .await
        .unwrap();
    assert!(left.log_groups().is_empty(), "log groups left: {left:?}");
    let ssm = aws_sdk_ssm::Client::new(sdk);
    let left = ssm
        .get_parameters_by_path()
        .path(format!("/alien/{dep}"))
        .recursive(true)
        .send()
        .await
        .unwrap();
    assert!(left.parameters().is_empty(), "parameters left: {left:?}");
}

/// The embedded registry with its blobs in an S3 bucket on moto passes the OCI conformance
/// suite, read strictly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_on_s3_passes_the_oci_conformance_suite() {
    use alien_registry_conformance::{
        Strictness, Target, results_table, run_all, unexpected_outcomes,
    };
    let moto = Moto::start().await.unwrap();
    let bucket = unique_name("alien-registry");
    S3PayloadStore::connect(&bucket, &moto.settings()).await.create_bucket().await.unwrap();
    let toml = format!(
        "[artifact-registry.default]\nservice = \"local\"\nstorage = {{ service = \"s3\", bucketName = \"{bucket}\", region = \"us-east-1\", endpointUrl = \"{}\" }}\n",
        moto.url
    );
    let manager = start(&moto, &toml).await;
    let ours = Target::new("alien-manager (S3)", manager.base.clone())
        .with_credentials("x", manager.admin.clone())
        .with_strictness(Strictness::Strict);
    let results = run_all(&ours).await;
    println!("{}", results_table(&results));
    let problems = unexpected_outcomes(&results, &[]);
    assert!(problems.is_empty(), "with S3 storage:\n  {}", problems.join("\n  "));
    let s3 = alien_aws::s3_client(&moto.settings().load().await);
    let objects = s3.list_objects_v2().bucket(&bucket).prefix("blobs/").send().await.unwrap();
    assert!(!objects.contents().is_empty(), "blobs are in the bucket");
}

/// A table or bucket that does not exist: the manager says which at start and `/ready` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_or_bucket_is_named_at_start_and_by_ready() {
    let moto = Moto::start().await.unwrap();
    let toml = seed_config(&moto, "alien-no-such-table", "alien-no-such-bucket");
    let manager = start(&moto, &toml).await;
    let (status, ready) = manager.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 503, "{ready}");
    let failed = &ready["context"]["failed"];
    assert!(failed["commands-kv"].as_str().unwrap().contains("alien-no-such-table"), "{ready}");
    assert!(
        failed["commands-payloads"].as_str().unwrap().contains("alien-no-such-bucket"),
        "{ready}"
    );
    let log = manager.server().log().join("\n");
    assert!(log.contains("alien-no-such-table") && log.contains("alien-no-such-bucket"), "{log}");
}
