//! [`IamImpersonator`] against the contract stub of IAM Credentials: the impersonation contract
//! suite, the request Google documents (scope, lifetime, delegation chain), and each refusal
//! mapped to its contract error. The stub accepts any caller token, so what these tests show is
//! the wire contract, not Google's authorization decisions.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use alien_gcp::auth::StaticToken;
use alien_gcp::stub::{ContractStub, verify_signed_blob};
use alien_gcp::{Api, IamImpersonator, Service, sign_blob};
use alien_impersonation::{
    Credentials, GCP_CLOUD_PLATFORM_SCOPE, Identity, ImpersonationError, ImpersonationTarget,
    Impersonator, SessionName,
};
use serde_json::json;

const CUSTOMER: &str = "alien-deployer@customer-project.iam.gserviceaccount.com";
const MANAGEMENT: &str = "alien-management@vendor-project.iam.gserviceaccount.com";

fn target(email: &str, duration: Option<Duration>) -> ImpersonationTarget {
    ImpersonationTarget::new(
        Identity::Gcp {
            service_account_email: email.to_owned(),
            scopes: vec![GCP_CLOUD_PLATFORM_SCOPE.to_owned()],
        },
        duration,
    )
}

async fn stub() -> ContractStub {
    ContractStub::start().await.unwrap()
}

fn impersonator(stub: &ContractStub, management: Option<&str>) -> IamImpersonator {
    let settings = stub.settings(Arc::new(StaticToken::new("manager-token", None)));
    IamImpersonator::new(&settings, management.map(str::to_owned))
}

#[tokio::test]
async fn the_contract_holds_on_the_contract_stub() {
    let stub = stub().await;
    alien_impersonation::contract::run_all(&impersonator(&stub, None), &[target(CUSTOMER, None)])
        .await;
    alien_impersonation::contract::run_all(
        &impersonator(&stub, Some(MANAGEMENT)),
        &[target(CUSTOMER, None)],
    )
    .await;
}

#[tokio::test]
async fn the_contract_stub_sees_the_documented_request_and_the_token_is_the_targets() {
    let stub = stub().await;
    let iam = impersonator(&stub, None);
    let credentials =
        iam.credentials(&target(CUSTOMER, Some(Duration::from_secs(900)))).await.unwrap();
    let Credentials::Gcp { access_token, expires_at } = &credentials else {
        panic!("{credentials:?}")
    };
    assert_eq!(stub.identity_of(access_token).as_deref(), Some(CUSTOMER));
    let left = *expires_at - chrono::Utc::now();
    assert!(left > chrono::TimeDelta::minutes(14) && left <= chrono::TimeDelta::minutes(15));
    let calls = stub.requests_to(":generateAccessToken");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, format!("/v1/projects/-/serviceAccounts/{CUSTOMER}:generateAccessToken"));
    assert_eq!(call.token.as_deref(), Some("manager-token"), "called as the manager");
    let body = call.body.as_ref().unwrap();
    assert_eq!(body["scope"], json!([GCP_CLOUD_PLATFORM_SCOPE]));
    assert_eq!(body["lifetime"], "900s");
    assert!(body.get("delegates").is_none(), "{body}");
}

#[tokio::test]
async fn a_management_account_is_the_delegation_chain_on_the_contract_stub() {
    let stub = stub().await;
    let iam = impersonator(&stub, Some(MANAGEMENT));
    assert_eq!(iam.management(), Some(MANAGEMENT));
    let credentials = iam.credentials(&target(CUSTOMER, None)).await.unwrap();
    let Credentials::Gcp { access_token, .. } = &credentials else { panic!() };
    assert_eq!(stub.identity_of(access_token).as_deref(), Some(CUSTOMER));
    let body = stub.requests_to(":generateAccessToken")[0].body.clone().unwrap();
    assert_eq!(body["delegates"], json!([format!("projects/-/serviceAccounts/{MANAGEMENT}")]));
    assert_eq!(body["lifetime"], "3600s");

    // The chain breaks where the management account is refused.
    stub.deny(MANAGEMENT);
    let err = iam.credentials(&target(CUSTOMER, None)).await.unwrap_err();
    assert_eq!(err.code(), "IMPERSONATION_DENIED", "{err}");
}

#[tokio::test]
async fn refusals_map_to_contract_errors_on_the_contract_stub() {
    let stub = stub().await;
    let iam = impersonator(&stub, None);

    stub.deny(CUSTOMER);
    let err = iam.credentials(&target(CUSTOMER, None)).await.unwrap_err();
    assert!(
        matches!(&err, ImpersonationError::Denied { identity, .. } if identity.contains(CUSTOMER)),
        "{err}"
    );
    assert!(!err.retryable());

    let other = "someone@customer-project.iam.gserviceaccount.com";
    stub.only_accounts(&[CUSTOMER]);
    let err = iam.credentials(&target(other, None)).await.unwrap_err();
    assert_eq!(err.code(), "IMPERSONATION_DENIED", "a missing account: {err}");

    stub.fail_next(":generateAccessToken", 503, "UNAVAILABLE");
    let err = iam.credentials(&target(other, None)).await.unwrap_err();
    assert!(err.retryable(), "{err}");

    let before = stub.requests().len();
    let err = iam.credentials(&target("not an email", None)).await.unwrap_err();
    assert!(
        matches!(&err, ImpersonationError::InvalidTarget { field, .. } if field == "target.serviceAccountEmail"),
        "{err}"
    );
    let aws = ImpersonationTarget::new(
        Identity::Aws {
            role_arn: "arn:aws:iam::210987654321:role/r".into(),
            external_id: None,
            session_name: SessionName::new("deploy", "dep_1"),
        },
        None,
    );
    let err = iam.credentials(&aws).await.unwrap_err();
    assert_eq!(err.code(), "IMPERSONATION_NOT_CONFIGURED");
    assert_eq!(stub.requests().len(), before, "refused without calling");
}

#[tokio::test]
async fn sign_blob_returns_the_signature_of_the_payload_on_the_contract_stub() {
    let stub = stub().await;
    let settings = stub.settings(Arc::new(StaticToken::new("manager-token", None)));
    let api = Api::new(&settings, Service::IamCredentials);
    let payload = b"GOOG4-RSA-SHA256\n20260101T000000Z\n...";
    let (key_id, signature) = sign_blob(&api, CUSTOMER, payload).await.unwrap();
    assert_eq!(key_id, alien_gcp::stub::SIGNING_KEY_ID);
    assert!(verify_signed_blob(payload, &signature));
    let call = &stub.requests_to(":signBlob")[0];
    assert_eq!(call.path, format!("/v1/projects/-/serviceAccounts/{CUSTOMER}:signBlob"));

    stub.deny(CUSTOMER);
    let err = sign_blob(&api, CUSTOMER, payload).await.unwrap_err();
    assert!(err.denied(), "{err}");
}

/// The manager's own identity from a service-account key: a JWT signed with the key, exchanged
/// at the key's `token_uri` (the contract stub's token endpoint, which verifies the signature),
/// the token cached.
#[tokio::test]
async fn a_service_account_key_exchanges_a_signed_jwt_on_the_contract_stub() {
    let stub = alien_gcp::stub::ContractStub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    alien_gcp::emulators::write_test_credentials(&path, &stub.token_uri()).unwrap();
    let source = alien_gcp::auth::from_credentials_file(&path).unwrap();
    let token = source.token().await.unwrap();
    assert!(token.starts_with("manager-token.alien@demo.iam.gserviceaccount.com."), "{token}");
    assert_eq!(source.token().await.unwrap(), token, "cached");
    assert_eq!(stub.requests_to("/token").len(), 1);
    assert_eq!(source.email().await.as_deref(), Some("alien@demo.iam.gserviceaccount.com"));
}
