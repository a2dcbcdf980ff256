//! [`EcrRegistry`] on moto: the registry host, repositories created on first use in the push
//! role's account, cached tokens, and the cross-account pull grant in the repository policy.
//!
//! moto has no registry (`/v2/`) API, so only the control plane is tested here: nothing is
//! pushed or pulled. moto's STS accepts every role, and what assumed credentials create lands in
//! the role's account, which is how these tests see that the push role was used.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_aws::moto::{ACCOUNT, Moto, unique_name};
use alien_aws::{AwsSettings, EcrRegistry, EcrSettings};
use alien_registry::{ArtifactRegistry, ArtifactRegistryError, PullFor};
use aws_credential_types::provider::SharedCredentialsProvider;
use serde_json::{Value, json};

const PUSH_ACCOUNT: &str = "210987654321";
const PULL_ACCOUNT: &str = "109876543210";

fn settings(aws: AwsSettings, prefix: &str) -> EcrSettings {
    EcrSettings {
        repository_prefix: prefix.to_owned(),
        push_role_arn: Some(format!("arn:aws:iam::{PUSH_ACCOUNT}:role/alien-ecr-push")),
        pull_role_arn: Some(format!("arn:aws:iam::{PULL_ACCOUNT}:role/alien-ecr-pull")),
        aws,
    }
}

/// An ECR client acting in `account` (through a role of it), as a test's own eyes.
async fn ecr_in(moto: &Moto, account: &str) -> aws_sdk_ecr::Client {
    let sdk = moto.settings().load().await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(format!(
        "arn:aws:iam::{account}:role/test-observer"
    ))
    .session_name("test-observer")
    .configure(&sdk)
    .build()
    .await;
    let sdk =
        sdk.to_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build();
    aws_sdk_ecr::Client::new(&sdk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_credentials_create_repositories_in_the_push_roles_account() {
    let moto = Moto::start().await.unwrap();
    let prefix = unique_name("alien");
    let ecr = EcrRegistry::new(&settings(moto.settings(), &prefix)).await.unwrap();
    assert_eq!(ecr.host(), format!("{PUSH_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"));
    assert_eq!(ecr.kind(), "ecr");
    assert_eq!(ecr.repository_name(), prefix);

    let credentials = ecr.push_credentials(&["web".into()]).await.unwrap().unwrap();
    assert_eq!(credentials.username, "AWS");
    assert!(!credentials.password.is_empty());
    // moto's expiry is 2015-01-01: the token is then used for 10 minutes.
    let left = credentials.expires_at - chrono::Utc::now();
    assert!(left > chrono::TimeDelta::minutes(9), "{left}");
    assert!(!format!("{credentials:?}").contains(&credentials.password));

    let repository = format!("{prefix}/web");
    let theirs = ecr_in(&moto, PUSH_ACCOUNT).await;
    let found = theirs.describe_repositories().repository_names(&repository).send().await.unwrap();
    let found = &found.repositories()[0];
    assert_eq!(found.registry_id(), Some(PUSH_ACCOUNT));
    assert_eq!(found.image_tag_mutability().map(|m| m.as_str()), Some("MUTABLE"));
    assert_eq!(found.image_scanning_configuration().map(|c| c.scan_on_push()), Some(true));
    let default = aws_sdk_ecr::Client::new(&moto.settings().load().await);
    let missing = default.describe_repositories().repository_names(&repository).send().await;
    let err = missing.expect_err("the default account does not have it");
    assert!(format!("{err:?}").contains("RepositoryNotFoundException"), "{err:?}");

    // The second push reuses the token and creates only what is missing.
    let again = ecr.push_credentials(&["web".into(), "worker".into()]).await.unwrap().unwrap();
    assert_eq!(again.password, credentials.password);
    assert_eq!(again.expires_at, credentials.expires_at);
    assert_eq!(ecr.token_fetches(), 1);
    let worker = format!("{prefix}/worker");
    theirs.describe_repositories().repository_names(&worker).send().await.unwrap();

    // Pull credentials come from the pull identity: a token of its own.
    let who = PullFor { deployment_id: "dep_1", deployment_token: "ax_dep_unused" };
    let pull = ecr.pull_credentials(who).await.unwrap();
    assert_eq!(pull.host, ecr.host());
    assert_eq!(pull.username, "AWS");
    assert!(!pull.password.is_empty() && !pull.plain_http);
    assert_eq!(ecr.token_fetches(), 2);
    ecr.pull_credentials(who).await.unwrap();
    assert_eq!(ecr.token_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_roles_the_host_is_the_managers_account() {
    let moto = Moto::start().await.unwrap();
    let mut settings = settings(moto.settings(), "alien");
    settings.push_role_arn = None;
    settings.pull_role_arn = None;
    let ecr = EcrRegistry::new(&settings).await.unwrap();
    assert_eq!(ecr.host(), format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"));
    ecr.push_credentials(&["web".into()]).await.unwrap().unwrap();
    let default = aws_sdk_ecr::Client::new(&moto.settings().load().await);
    default.describe_repositories().repository_names("alien/web").send().await.unwrap();
    // Without a pull role, pull-mode agents get nothing (the manager's own token could push).
    let fetches = ecr.token_fetches();
    let who = PullFor { deployment_id: "dep_1", deployment_token: "ax_dep_unused" };
    let refused = ecr.pull_credentials(who).await.unwrap_err().to_string();
    assert!(refused.contains("pullRoleArn"), "{refused}");
    assert_eq!(ecr.token_fetches(), fetches, "no token fetched for it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_grants_merge_into_one_statement() {
    let moto = Moto::start().await.unwrap();
    let prefix = unique_name("alien");
    let ecr = EcrRegistry::new(&settings(moto.settings(), &prefix)).await.unwrap();
    ecr.push_credentials(&["api".into()]).await.unwrap();
    let repository = ecr.repository_of(&format!("{}/{prefix}/api:v1", ecr.host())).unwrap();
    assert_eq!(repository, format!("{prefix}/api"));

    let theirs = ecr_in(&moto, PUSH_ACCOUNT).await;
    let unrelated = json!({"Sid": "Theirs", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::333333333333:root"}, "Action": "ecr:BatchGetImage"});
    let policy = json!({"Version": "2012-10-17", "Statement": [unrelated]});
    theirs
        .set_repository_policy()
        .repository_name(&repository)
        .policy_text(policy.to_string())
        .send()
        .await
        .unwrap();

    for account in ["111111111111", "111111111111", "222222222222"] {
        ecr.grant_pull(&repository, account).await.unwrap();
    }
    // Another replica (no memory of the grants) finds them in the policy.
    let other = EcrRegistry::new(&settings(moto.settings(), &prefix)).await.unwrap();
    other.grant_pull(&repository, "222222222222").await.unwrap();

    let text = theirs.get_repository_policy().repository_name(&repository).send().await.unwrap();
    let doc: Value = serde_json::from_str(text.policy_text().unwrap()).unwrap();
    let statements = doc["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{doc}");
    assert!(statements.contains(&unrelated), "{doc}");
    let ours: Vec<&Value> = statements.iter().filter(|s| s["Sid"] == "AlienPull").collect();
    assert_eq!(ours.len(), 1, "{doc}");
    assert_eq!(
        ours[0]["Principal"]["AWS"],
        json!(["arn:aws:iam::111111111111:root", "arn:aws:iam::222222222222:root"])
    );
    assert_eq!(
        ours[0]["Action"],
        json!([
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "ecr:BatchCheckLayerAvailability"
        ])
    );

    let err = ecr.grant_pull("elsewhere/api", "111111111111").await.unwrap_err();
    assert!(err.to_string().contains("elsewhere/api"), "{err}");
    let err = ecr.grant_pull(&repository, "12345").await.unwrap_err();
    assert!(err.to_string().contains("\"12345\""), "{err}");
}

/// Bad names are refused before any AWS call: the endpoint here answers nothing.
#[tokio::test]
async fn invalid_repository_names_are_refused_without_calling_aws() {
    let aws = AwsSettings::new(Some("us-east-1"), Some("http://127.0.0.1:9"));
    let mut aws = aws;
    aws.credentials = Some(alien_aws::moto::test_credentials());
    let ecr = EcrRegistry::new(&settings(aws, "alien")).await.unwrap();
    for bad in ["Web", "we b", "web/", "-web", "a--b"] {
        let err = ecr.push_credentials(&["ok".into(), bad.into()]).await.unwrap_err();
        let ArtifactRegistryError::InvalidRepository { repository, message } = &err else {
            panic!("{bad}: {err}")
        };
        assert_eq!(repository, bad);
        assert!(message.contains(&format!("alien/{bad}")), "{message}");
    }
    assert_eq!(ecr.token_fetches(), 0);

    let mut bad_prefix = settings(AwsSettings::default(), "Alien");
    bad_prefix.aws.region = Some("us-east-1".into());
    let err = EcrRegistry::new(&bad_prefix).await.unwrap_err().to_string();
    assert!(err.starts_with("repositoryPrefix: \"Alien\""), "{err}");
}
