//! [`GarRegistry`] against the contract stub of Artifact Registry, IAM Credentials and Resource
//! Manager: host and repository name, the repository created on first use as the manager itself,
//! `oauth2accesstoken` credentials of the push and pull accounts (cached), and the pull grant to
//! a customer project's Cloud Run service agent by an etag-guarded read-modify-write.
//!
//! No image is pushed or pulled (the stub has no Docker registry API), and the stub does not
//! decide who may do what: it shows which account's token each call carried.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use alien_gcp::auth::StaticToken;
use alien_gcp::stub::ContractStub;
use alien_gcp::{GarRegistry, GarSettings};
use alien_registry::{ArtifactRegistry, ArtifactRegistryError, PullFor};
use serde_json::{Value, json};

const REPOSITORY: &str = "projects/vendor-project/locations/europe-west1/repositories/releases";
const PUSH: &str = "alien-gar-push@vendor-project.iam.gserviceaccount.com";
const PULL: &str = "alien-gar-pull@vendor-project.iam.gserviceaccount.com";
const AGENT: &str =
    "serviceAccount:service-123456789012@serverless-robot-prod.iam.gserviceaccount.com";

async fn setup() -> (ContractStub, GarRegistry) {
    let stub = ContractStub::start().await.unwrap();
    let settings = GarSettings {
        repository_name: REPOSITORY.into(),
        push_service_account_email: Some(PUSH.into()),
        pull_service_account_email: Some(PULL.into()),
        gcp: stub.settings(Arc::new(StaticToken::new("manager-token", None))),
    };
    let registry = GarRegistry::new(&settings).unwrap();
    (stub, registry)
}

#[tokio::test]
async fn push_credentials_create_the_repository_as_the_push_account_on_the_contract_stub() {
    let (stub, gar) = setup().await;
    assert_eq!((gar.kind(), gar.host()), ("gar", "europe-west1-docker.pkg.dev"));
    assert_eq!(gar.repository_name(), "vendor-project/releases");

    let push = gar.push_credentials(&["api".into()]).await.unwrap().unwrap();
    assert_eq!(push.username, "oauth2accesstoken");
    assert_eq!(stub.identity_of(&push.password).as_deref(), Some(PUSH));
    assert!(push.expires_at > chrono::Utc::now() + chrono::TimeDelta::minutes(50));
    assert!(!format!("{push:?}").contains(&push.password));
    let repository = stub.repository(REPOSITORY).expect("created");
    assert_eq!(repository["format"], "DOCKER");
    let created = stub.requests_to("/repositories");
    let create = created.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(create.query.get("repositoryId").map(String::as_str), Some("releases"));
    // The manager creates it: push tokens go to builders and must not manage the repository.
    assert_eq!(create.token.as_deref(), Some("manager-token"), "created as the manager");
    let mint = &stub.requests_to(":generateAccessToken")[0];
    assert_eq!(mint.token.as_deref(), Some("manager-token"), "minted as the manager");
    assert_eq!(
        mint.body.as_ref().unwrap()["scope"],
        json!(["https://www.googleapis.com/auth/cloud-platform"])
    );

    // Again: the cached token, the repository found.
    let again = gar.push_credentials(&["api".into(), "worker".into()]).await.unwrap().unwrap();
    assert_eq!(again.password, push.password);
    assert_eq!(gar.token_mints(), 1);
    let creates = stub.requests_to("/repositories").iter().filter(|r| r.method == "POST").count();
    assert_eq!(creates, 1);

    // Pull credentials are the pull account's.
    let who = PullFor { deployment_id: "dep_1", deployment_token: "ax_dep_unused" };
    let pull = gar.pull_credentials(who).await.unwrap();
    assert_eq!(
        (pull.host.as_str(), pull.username.as_str()),
        ("europe-west1-docker.pkg.dev", "oauth2accesstoken")
    );
    assert_eq!(stub.identity_of(&pull.password).as_deref(), Some(PULL));
    assert!(!pull.plain_http);
    gar.pull_credentials(who).await.unwrap();
    assert_eq!(gar.token_mints(), 2);

    let err = gar.push_credentials(&["Bad Name".into()]).await.unwrap_err();
    assert!(matches!(err, ArtifactRegistryError::InvalidRepository { .. }), "{err}");
}

#[tokio::test]
async fn an_existing_repository_is_used_as_it_is_on_the_contract_stub() {
    let (stub, gar) = setup().await;
    stub.add_repository(REPOSITORY);
    gar.push_credentials(&["api".into()]).await.unwrap();
    assert!(stub.requests_to("/repositories").iter().all(|r| r.method == "GET"));
}

fn reader_members(policy: &Value) -> Vec<String> {
    policy["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["role"] == "roles/artifactregistry.reader")
        .flat_map(|b| b["members"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_cloud_run_agent_of_the_customer_project_gets_read_on_the_contract_stub() {
    let (stub, gar) = setup().await;
    stub.add_repository(REPOSITORY);
    stub.add_project("customer-project", "123456789012");
    let theirs =
        json!({"role": "roles/artifactregistry.writer", "members": ["user:ci@vendor.example"]});
    stub.set_bindings(REPOSITORY, json!([theirs]));
    // Someone else changes the policy between our read and our write: the write is refused
    // (ABORTED) and the read-modify-write starts over.
    stub.fail_next(":setIamPolicy", 409, "ABORTED");

    let image = "europe-west1-docker.pkg.dev/vendor-project/releases/api:v1";
    assert!(gar.grant_image_pull(image, "customer-project").await.unwrap());
    let policy = stub.policy(REPOSITORY);
    assert_eq!(reader_members(&policy), [AGENT]);
    assert!(policy["bindings"].as_array().unwrap().contains(&theirs), "{policy}");
    let sets = stub.requests_to(":setIamPolicy");
    assert_eq!(sets.len(), 2, "retried after the conflict");
    let etag = sets[1].body.as_ref().unwrap()["policy"]["etag"].as_str().unwrap().to_owned();
    assert!(!etag.is_empty(), "the write carries the etag it read");
    assert!(
        sets.iter().all(|s| s.token.as_deref() == Some("manager-token")),
        "the policy is the manager's to set, never a push token's"
    );

    // Granted once: no more calls, by id or by number.
    let before = stub.requests().len();
    assert!(gar.grant_image_pull(image, "customer-project").await.unwrap());
    assert!(gar.grant_image_pull(image, "123456789012").await.unwrap());
    assert_eq!(stub.requests().len(), before);

    // An image elsewhere needs no grant.
    assert!(!gar.grant_image_pull("ghcr.io/acme/api:v1", "customer-project").await.unwrap());
    assert!(
        !gar.grant_image_pull(
            "europe-west1-docker.pkg.dev/other/releases/api:v1",
            "customer-project"
        )
        .await
        .unwrap()
    );
}

#[tokio::test]
async fn a_grant_already_in_the_policy_writes_nothing_on_the_contract_stub() {
    let (stub, gar) = setup().await;
    stub.add_repository(REPOSITORY);
    stub.set_bindings(
        REPOSITORY,
        json!([{"role": "roles/artifactregistry.reader", "members": [AGENT]}]),
    );
    let image = "europe-west1-docker.pkg.dev/vendor-project/releases/api:v1";
    assert!(gar.grant_image_pull(image, "123456789012").await.unwrap());
    assert!(stub.requests_to(":setIamPolicy").is_empty());
    assert!(stub.requests_to("/v3/projects").is_empty(), "a number needs no lookup");
}

#[tokio::test]
async fn a_project_the_manager_cannot_see_fails_saying_what_to_do_on_the_contract_stub() {
    let (stub, gar) = setup().await;
    stub.add_repository(REPOSITORY);
    let image = "europe-west1-docker.pkg.dev/vendor-project/releases/api:v1";
    let err = gar.grant_image_pull(image, "unknown-project").await.unwrap_err().to_string();
    assert!(err.contains("PERMISSION_DENIED") && err.contains("projectNumber"), "{err}");
}

/// Without a pull account, pull-mode agents get nothing: the token would be the manager's own,
/// good for every API the manager may call. No token is minted or handed out for it.
#[tokio::test]
async fn without_a_pull_account_agents_get_no_token_on_the_contract_stub() {
    let stub = ContractStub::start().await.unwrap();
    let settings = GarSettings {
        repository_name: REPOSITORY.into(),
        push_service_account_email: Some(PUSH.into()),
        pull_service_account_email: None,
        gcp: stub.settings(Arc::new(StaticToken::new("manager-token", None))),
    };
    let gar = GarRegistry::new(&settings).unwrap();
    let who = PullFor { deployment_id: "dep_1", deployment_token: "ax_dep_unused" };
    let refused = gar.pull_credentials(who).await.unwrap_err().to_string();
    assert!(refused.contains("pullServiceAccountEmail"), "{refused}");
    assert!(!refused.contains("manager-token"), "{refused}");
    assert!(stub.requests().is_empty(), "nothing called for it");
}
