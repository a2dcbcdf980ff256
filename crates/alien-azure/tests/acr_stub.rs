//! [`AcrRegistry`] against the contract stub: ACR's token exchange (Entra ID token -> refresh
//! token -> repository-scoped access token) and the `AcrPull` role assignment on the registry.
//! The stub's token service accepts any token the stub issued, so these tests show the wire
//! contract, not ACR's permission checks.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use alien_azure::acr::{ACR_PULL_ROLE, REFRESH_TOKEN_USERNAME};
use alien_azure::entra::{ManagedIdentityEndpoint, TokenSource};
use alien_azure::stub::{ContractStub, IDENTITY_HEADER};
use alien_azure::{AcrRegistry, AcrSettings, Arm};
use alien_registry::{ArtifactRegistry, PullFor};

const MANAGER: &str = "11111111-1111-1111-1111-111111111111";
const SUBSCRIPTION: &str = "55555555-5555-5555-5555-555555555555";
const PRINCIPAL: &str = "77777777-7777-7777-7777-777777777777";

fn registry(stub: &ContractStub, subscription: Option<&str>) -> AcrRegistry {
    let tokens: Arc<dyn TokenSource> = Arc::new(ManagedIdentityEndpoint::new(
        &stub.identity_endpoint(),
        IDENTITY_HEADER,
        Some(MANAGER.into()),
        "https://management.azure.com/",
    ));
    AcrRegistry::new(&AcrSettings {
        registry_name: "vendorregistry".into(),
        resource_group_name: "rg-alien".into(),
        subscription_id: subscription.map(str::to_owned),
        repository_prefix: Some("releases".into()),
        login_server_url: Some(stub.base().to_owned()),
        arm: Arm::new(stub.base(), tokens.clone()),
        tokens,
    })
    .unwrap()
}

#[tokio::test]
async fn push_credentials_are_the_exchanged_refresh_token_checked_for_the_repositories() {
    let stub = ContractStub::start().await.unwrap();
    let acr = registry(&stub, None);
    let push = acr.push_credentials(&["api".into(), "acme/worker".into()]).await.unwrap().unwrap();
    assert_eq!(push.username, REFRESH_TOKEN_USERNAME);
    assert!(push.password.starts_with(&format!("acr-refresh.{MANAGER}.")), "of the manager");
    assert!(!format!("{push:?}").contains(&push.password));
    assert!(push.expires_at > chrono::Utc::now());

    let exchange = &stub.requests_to("/oauth2/exchange")[0];
    assert_eq!(exchange.form["grant_type"], "access_token");
    assert_eq!(exchange.form["service"], "vendorregistry.azurecr.io");
    assert_eq!(stub.identity_of(&exchange.form["access_token"]).as_deref(), Some(MANAGER));
    let token = &stub.requests_to("/oauth2/token")[0];
    assert_eq!(token.form["grant_type"], "refresh_token");
    assert_eq!(token.form["refresh_token"], push.password);
    assert_eq!(
        token.form["scope"],
        "repository:releases/api:pull,push repository:releases/acme/worker:pull,push"
    );

    // A pull-mode agent never gets the manager's refresh token (it could push).
    let exchanges = stub.requests_to("/oauth2/exchange").len();
    let refused = acr
        .pull_credentials(PullFor { deployment_id: "dep_1", deployment_token: "ax_deploy_x" })
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("pull-mode agents get no ACR credentials"), "{refused}");
    assert!(!refused.contains(&push.password), "no token in the error");
    assert_eq!(stub.requests_to("/oauth2/exchange").len(), exchanges, "nothing exchanged for it");

    let err = acr.push_credentials(&["Not Valid".into()]).await.unwrap_err();
    assert!(err.to_string().contains("Not Valid"), "{err}");
}

#[tokio::test]
async fn a_refused_exchange_names_the_registry() {
    let stub = ContractStub::start().await.unwrap();
    let acr = registry(&stub, None);
    stub.fail_next("/oauth2/exchange", 401, "UNAUTHORIZED");
    let err = acr.push_credentials(&["api".into()]).await.unwrap_err();
    assert!(
        err.to_string().contains("vendorregistry.azurecr.io") && err.to_string().contains("401"),
        "{err}"
    );
}

#[tokio::test]
async fn grant_image_pull_assigns_acr_pull_on_the_registry_once() {
    let stub = ContractStub::start().await.unwrap();
    let acr = registry(&stub, Some(SUBSCRIPTION));
    let image = "vendorregistry.azurecr.io/releases/api:v1";
    assert!(!acr.grant_image_pull("ghcr.io/acme/api:v1", PRINCIPAL).await.unwrap());
    assert!(acr.grant_image_pull(image, PRINCIPAL).await.unwrap());
    assert!(acr.grant_image_pull(image, PRINCIPAL).await.unwrap(), "idempotent");
    let assignments = stub.role_assignments();
    assert_eq!(assignments.len(), 1);
    let (id, properties) = &assignments[0];
    let scope = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-alien/providers/Microsoft.ContainerRegistry/registries/vendorregistry"
    );
    assert!(
        id.starts_with(&format!("{scope}/providers/Microsoft.Authorization/roleAssignments/")),
        "{id}"
    );
    assert_eq!(properties["principalId"], PRINCIPAL);
    assert_eq!(properties["scope"], scope);
    assert!(properties["roleDefinitionId"].as_str().unwrap().ends_with(ACR_PULL_ROLE));
    let puts = stub.requests_to("/roleAssignments/");
    assert_eq!(puts.len(), 1, "the second grant costs nothing");
    assert_eq!(puts[0].query["api-version"], "2022-04-01");
    assert_eq!(stub.identity_of(puts[0].token.as_deref().unwrap()).as_deref(), Some(MANAGER));

    // Another process (no memory of the first grant) puts the same assignment: fine.
    let again = registry(&stub, Some(SUBSCRIPTION));
    assert!(again.grant_image_pull(image, PRINCIPAL).await.unwrap());
    assert_eq!(stub.role_assignments().len(), 1);

    // The same grant made by someone else under another name: RoleAssignmentExists is done.
    let other = "88888888-8888-8888-8888-888888888888";
    let arm = Arm::new(stub.base(), Arc::new(alien_azure::entra::StaticToken::new("someone")));
    let body = serde_json::json!({"properties": {"principalId": other,
        "roleDefinitionId": format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL_ROLE}")}});
    let path = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/99999999-9999-9999-9999-999999999999?api-version=2022-04-01"
    );
    arm.json::<serde_json::Value>("put", reqwest::Method::PUT, &path, Some(&body)).await.unwrap();
    assert!(again.grant_image_pull(image, other).await.unwrap());
    assert_eq!(stub.role_assignments().len(), 2);

    let err = registry(&stub, None).grant_image_pull(image, PRINCIPAL).await.unwrap_err();
    assert!(err.to_string().contains("AZURE_SUBSCRIPTION_ID"), "{err}");
    let err = acr.grant_image_pull(image, "not-a-guid").await.unwrap_err();
    assert!(err.to_string().contains("principal id"), "{err}");
    stub.fail_next("/roleAssignments/", 403, "AuthorizationFailed");
    let third = "99999999-0000-0000-0000-000000000000";
    let err = acr.grant_image_pull(image, third).await.unwrap_err();
    assert!(err.to_string().contains("AuthorizationFailed"), "{err}");
}
