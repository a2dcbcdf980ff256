//! [`ManagedIdentityImpersonator`] and the Entra ID token sources against the contract stub:
//! the impersonation contract suite, the requests Microsoft documents (managed-identity
//! endpoint, IMDS, the v2.0 token endpoint with a client assertion or a secret), and each
//! refusal mapped to its contract error. The stub trusts any federated assertion unless told
//! otherwise, so what these tests show is the wire contract, not Entra ID's decisions.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use alien_azure::entra::{
    ClientCredential, ClientCredentials, Imds, ManagedIdentityEndpoint, TOKEN_EXCHANGE_AUDIENCE,
    TokenSource,
};
use alien_azure::stub::{ContractStub, IDENTITY_HEADER, SYSTEM_ASSIGNED};
use alien_azure::{ArmError, ManagedIdentityImpersonator};
use alien_impersonation::{
    Credentials, Identity, ImpersonationError, ImpersonationTarget, Impersonator, SessionName,
};

const MANAGEMENT: &str = "11111111-1111-1111-1111-111111111111";
const CUSTOMER: &str = "22222222-2222-2222-2222-222222222222";
const CUSTOMER_TENANT: &str = "33333333-3333-3333-3333-333333333333";
const VENDOR_TENANT: &str = "44444444-4444-4444-4444-444444444444";
const ARM: &str = "https://management.azure.com/";

fn target(client_id: &str, tenant: Option<&str>) -> ImpersonationTarget {
    ImpersonationTarget::new(
        Identity::Azure {
            client_id: client_id.to_owned(),
            tenant_id: tenant.map(str::to_owned),
            subscription_id: Some("55555555-5555-5555-5555-555555555555".into()),
        },
        None,
    )
}

fn management(stub: &ContractStub) -> Arc<dyn TokenSource> {
    Arc::new(ManagedIdentityEndpoint::new(
        &stub.identity_endpoint(),
        IDENTITY_HEADER,
        Some(MANAGEMENT.to_owned()),
        TOKEN_EXCHANGE_AUDIENCE,
    ))
}

fn impersonator(stub: &ContractStub) -> ManagedIdentityImpersonator {
    ManagedIdentityImpersonator::new(stub.base(), management(stub), Some(VENDOR_TENANT.into()))
}

#[tokio::test]
async fn the_contract_holds_on_the_contract_stub() {
    let stub = ContractStub::start().await.unwrap();
    alien_impersonation::contract::run_all(
        &impersonator(&stub),
        &[target(CUSTOMER, Some(CUSTOMER_TENANT)), target(CUSTOMER, None)],
    )
    .await;
}

#[tokio::test]
async fn the_management_token_is_the_client_assertion_at_the_customers_tenant() {
    let stub = ContractStub::start().await.unwrap();
    let credentials =
        impersonator(&stub).credentials(&target(CUSTOMER, Some(CUSTOMER_TENANT))).await.unwrap();
    let Credentials::Azure { access_token, expires_at } = &credentials else {
        panic!("{credentials:?}")
    };
    let info = stub.token_info(access_token).unwrap();
    assert_eq!(info.client_id, CUSTOMER);
    assert_eq!(info.tenant.as_deref(), Some(CUSTOMER_TENANT));
    assert_eq!(info.resource, ARM);
    assert_eq!(info.via.as_deref(), Some(MANAGEMENT), "federated from the management identity");
    let left = *expires_at - chrono::Utc::now();
    assert!(left > chrono::TimeDelta::minutes(55), "{left}");

    let msi = &stub.requests_to("/msi/token")[0];
    assert_eq!(msi.method, "GET");
    assert_eq!(msi.query["api-version"], "2019-08-01");
    assert_eq!(msi.query["resource"], TOKEN_EXCHANGE_AUDIENCE);
    assert_eq!(msi.query["client_id"], MANAGEMENT);
    assert_eq!(msi.headers["x-identity-header"], IDENTITY_HEADER);

    let exchange = &stub.requests_to("/oauth2/v2.0/token")[0];
    assert_eq!(exchange.path, format!("/{CUSTOMER_TENANT}/oauth2/v2.0/token"));
    assert_eq!(exchange.form["grant_type"], "client_credentials");
    assert_eq!(exchange.form["client_id"], CUSTOMER);
    assert_eq!(exchange.form["scope"], "https://management.azure.com/.default");
    assert_eq!(
        exchange.form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let assertion = &exchange.form["client_assertion"];
    assert_eq!(stub.identity_of(assertion).as_deref(), Some(MANAGEMENT));
    assert!(!exchange.form.contains_key("client_secret"));

    // A target without a tenant goes to the management identity's home tenant; the
    // management token is reused (cached to 80 % of its lifetime).
    impersonator(&stub).credentials(&target(CUSTOMER, None)).await.unwrap();
    let iam = impersonator(&stub);
    iam.credentials(&target(CUSTOMER, None)).await.unwrap();
    iam.credentials(&target(CUSTOMER, Some(CUSTOMER_TENANT))).await.unwrap();
    let exchanges = stub.requests_to("/oauth2/v2.0/token");
    assert_eq!(exchanges[1].path, format!("/{VENDOR_TENANT}/oauth2/v2.0/token"));
    assert_eq!(
        stub.requests_to("/msi/token").len(),
        3,
        "one per impersonator (each its own source)"
    );
}

#[tokio::test]
async fn refusals_map_to_contract_errors_on_the_contract_stub() {
    let stub = ContractStub::start().await.unwrap();
    let iam = impersonator(&stub);
    let customer = target(CUSTOMER, Some(CUSTOMER_TENANT));

    stub.trust_only(CUSTOMER, &["someone-else"]);
    let err = iam.credentials(&customer).await.unwrap_err();
    assert!(
        matches!(&err, ImpersonationError::Denied { identity, message } if identity.contains(CUSTOMER) && message.contains("AADSTS70021")),
        "{err}"
    );
    assert!(!err.retryable());
    stub.trust_only(CUSTOMER, &[MANAGEMENT]);
    iam.credentials(&customer).await.unwrap();

    stub.deny(CUSTOMER);
    let err = iam.credentials(&customer).await.unwrap_err();
    assert_eq!(err.code(), "IMPERSONATION_DENIED", "{err}");

    let other = "66666666-6666-6666-6666-666666666666";
    stub.fail_next("/oauth2/v2.0/token", 503, "temporarily_unavailable");
    let err = iam.credentials(&target(other, Some(CUSTOMER_TENANT))).await.unwrap_err();
    assert!(err.retryable(), "{err}");

    let before = stub.requests().len();
    let err = iam.credentials(&target("not-a-guid", Some(CUSTOMER_TENANT))).await.unwrap_err();
    assert!(
        matches!(&err, ImpersonationError::InvalidTarget { field, .. } if field == "target.clientId"),
        "{err}"
    );
    let no_home = ManagedIdentityImpersonator::new(stub.base(), management(&stub), None);
    let err = no_home.credentials(&target(other, None)).await.unwrap_err();
    assert!(
        matches!(&err, ImpersonationError::InvalidTarget { field, .. } if field == "target.tenantId"),
        "{err}"
    );
    let err = iam.credentials(&target(other, Some("../common"))).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_TARGET", "{err}");
    let aws = ImpersonationTarget::new(
        Identity::Aws {
            role_arn: "arn:aws:iam::210987654321:role/r".into(),
            external_id: None,
            session_name: SessionName::new("deploy", "dep_1"),
        },
        None,
    );
    assert_eq!(iam.credentials(&aws).await.unwrap_err().code(), "IMPERSONATION_NOT_CONFIGURED");
    assert_eq!(stub.requests().len(), before, "refused without calling");
}

#[tokio::test]
async fn the_managed_identity_endpoint_needs_its_header_and_caches() {
    let stub = ContractStub::start().await.unwrap();
    let wrong = ManagedIdentityEndpoint::new(&stub.identity_endpoint(), "wrong", None, ARM);
    let err = wrong.token().await.unwrap_err();
    assert_eq!(err.http_status, Some(401), "{err}");

    let system =
        ManagedIdentityEndpoint::new(&stub.identity_endpoint(), IDENTITY_HEADER, None, ARM);
    let token = system.token().await.unwrap();
    assert_eq!(system.token().await.unwrap(), token, "cached");
    let info = stub.token_info(token.secret()).unwrap();
    assert_eq!((info.client_id.as_str(), info.resource.as_str()), (SYSTEM_ASSIGNED, ARM));
    assert!(!stub.requests_to("/msi/token")[1].query.contains_key("client_id"));
    assert_eq!(stub.requests_to("/msi/token").len(), 2, "one refused, one fetched");
    assert!(!format!("{token:?}").contains(token.secret()));
}

#[tokio::test]
async fn imds_sends_the_metadata_header_and_the_client_id() {
    let stub = ContractStub::start().await.unwrap();
    let imds = Imds::new(stub.base(), Some(MANAGEMENT.into()), ARM);
    let token = imds.token().await.unwrap();
    assert_eq!(stub.identity_of(token.secret()).as_deref(), Some(MANAGEMENT));
    let call = &stub.requests_to("/metadata/identity/oauth2/token")[0];
    assert_eq!(call.headers["metadata"], "true");
    assert_eq!(call.query["api-version"], "2018-02-01");
    assert_eq!(call.query["resource"], ARM);
    assert!(token.expires_at > chrono::Utc::now() + chrono::TimeDelta::minutes(55));
}

#[tokio::test]
async fn workload_identity_reads_the_federated_token_file_on_each_exchange() {
    let stub = ContractStub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    let jwt = |sub: &str| {
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(&format!(r#"{{"sub":"{sub}"}}"#)))
    };
    std::fs::write(&file, jwt("system:serviceaccount:alien:manager")).unwrap();
    let source = ClientCredentials::new(
        stub.base(),
        VENDOR_TENANT,
        MANAGEMENT,
        ClientCredential::AssertionFile(file.clone()),
        ARM,
    );
    let token = source.token().await.unwrap();
    let info = stub.token_info(token.secret()).unwrap();
    assert_eq!(info.via.as_deref(), Some("system:serviceaccount:alien:manager"));
    let call = &stub.requests_to("/oauth2/v2.0/token")[0];
    assert_eq!(call.form["client_assertion"], jwt("system:serviceaccount:alien:manager"));

    std::fs::remove_file(&file).unwrap();
    let fresh = ClientCredentials::new(
        stub.base(),
        VENDOR_TENANT,
        MANAGEMENT,
        ClientCredential::AssertionFile(file.clone()),
        ARM,
    );
    let err: ArmError = fresh.token().await.unwrap_err();
    assert!(err.message.contains("azure-identity-token"), "names the file: {err}");
}

#[tokio::test]
async fn a_client_secret_is_sent_as_client_secret() {
    let stub = ContractStub::start().await.unwrap();
    let source = ClientCredentials::new(
        stub.base(),
        VENDOR_TENANT,
        MANAGEMENT,
        ClientCredential::Secret("s3cret-value".into()),
        ARM,
    );
    let token = source.token().await.unwrap();
    assert_eq!(stub.identity_of(token.secret()).as_deref(), Some(MANAGEMENT));
    let call = &stub.requests_to("/oauth2/v2.0/token")[0];
    assert_eq!(call.form["client_secret"], "s3cret-value");
    assert!(!format!("{source:?}").contains("s3cret"));
}
