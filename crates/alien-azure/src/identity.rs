//! The Azure [`Impersonator`]: an Entra ID token of a customer's identity, obtained with the
//! manager's management identity and no secret.
//!
//! The cross-tenant path is workload identity federation. The vendor's management identity
//! (`[impersonation.azure]`, a user-assigned managed identity) gets a token for
//! `api://AzureADTokenExchange`; that token is the client assertion of a client-credentials
//! request at the **customer's** tenant (`{authority}/{target.tenantId}/oauth2/v2.0/token`) for
//! `target.clientId`, an application (a multi-tenant app of the vendor consented in the
//! customer's tenant, or the customer's own app registration or user-assigned identity) whose
//! federated identity credential trusts the management identity (issuer the vendor tenant's
//! `https://login.microsoftonline.com/{tenant}/v2.0`, subject its principal id, audience
//! `api://AzureADTokenExchange`). The customer grants that application roles on the
//! subscription or resource group the deployment runs in; the token asked for is an ARM token
//! (`https://management.azure.com/.default`).
//!
//! Why not the managed-identity endpoint for the customer's identity directly: a managed
//! identity's token can only be fetched from compute the identity is attached to, in the
//! identity's own tenant; the manager runs in the vendor's. Federation is the documented way to
//! cross that line without a secret, and the customer can revoke it by deleting one credential.
//!
//! The token's lifetime is Entra ID's choice (about an hour), whatever duration the target
//! asks for. Tokens are never logged; caching per target is the `CachingImpersonator`'s job
//! (the management identity's own token is cached by its source).

use std::sync::Arc;

use alien_impersonation::{
    Cloud, Credentials, Identity, ImpersonationError, ImpersonationTarget, Impersonator,
};

use crate::arm::{ARM_RESOURCE, ArmError};
use crate::entra::{
    ClientCredential, ClientCredentials, TOKEN_EXCHANGE_AUDIENCE, TokenSource, authority_from_env,
    identity_token_source,
};

/// Federated workload identity from the management identity to customers' applications.
pub struct ManagedIdentityImpersonator {
    authority: String,
    assertion: Arc<dyn TokenSource>,
    home_tenant: Option<String>,
    resource: String,
}

/// Names the authority, the management identity and the home tenant; no token.
impl std::fmt::Debug for ManagedIdentityImpersonator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedIdentityImpersonator")
            .field("authority", &self.authority)
            .field("management", &self.assertion.describe())
            .field("home_tenant", &self.home_tenant)
            .field("resource", &self.resource)
            .finish()
    }
}

impl ManagedIdentityImpersonator {
    /// Exchanges tokens of `assertion` (the management identity, audience
    /// [`TOKEN_EXCHANGE_AUDIENCE`]) at `authority` (e.g. `https://login.microsoftonline.com`);
    /// targets without a tenant are looked up in `home_tenant`. Tokens are for ARM.
    pub fn new(
        authority: &str,
        assertion: Arc<dyn TokenSource>,
        home_tenant: Option<String>,
    ) -> ManagedIdentityImpersonator {
        ManagedIdentityImpersonator {
            authority: crate::arm::base_url(authority),
            assertion,
            home_tenant,
            resource: ARM_RESOURCE.to_owned(),
        }
    }

    /// From an `[impersonation.azure]` binding: the management identity `client_id` as the
    /// environment provides it (managed identity, workload identity), its `tenant_id` as home
    /// tenant, the authority from `AZURE_AUTHORITY_HOST`.
    pub fn from_binding(client_id: &str, tenant_id: Option<String>) -> ManagedIdentityImpersonator {
        let assertion = identity_token_source(Some(client_id), TOKEN_EXCHANGE_AUDIENCE);
        ManagedIdentityImpersonator::new(&authority_from_env(), assertion, tenant_id)
    }

    /// Refuses to use a management identity other than the one `[impersonation.azure]` names
    /// by `principalId` and `resourceId`: the management token's `oid` and `xms_mirid` claims
    /// (Entra ID's tokens of managed identities carry both) must match those given. The
    /// customers' federated credentials trust that one principal; another identity the
    /// environment happens to provide would only get `AADSTS70021` from every tenant.
    #[must_use]
    pub fn pinned(
        mut self,
        principal_id: Option<String>,
        resource_id: Option<String>,
    ) -> ManagedIdentityImpersonator {
        if principal_id.is_some() || resource_id.is_some() {
            self.assertion = Arc::new(Pinned { inner: self.assertion, principal_id, resource_id });
        }
        self
    }

    /// Tokens for `resource` instead of ARM (e.g. `https://containerregistry.azure.net`).
    #[must_use]
    pub fn with_resource(mut self, resource: &str) -> ManagedIdentityImpersonator {
        self.resource = resource.to_owned();
        self
    }
}

/// The management identity's tokens, checked against the identity the binding names.
struct Pinned {
    inner: Arc<dyn TokenSource>,
    principal_id: Option<String>,
    resource_id: Option<String>,
}

/// The claims of an unverified JWT (the issuer's own token, read for what it names).
pub(crate) fn jwt_claims(jwt: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[async_trait::async_trait]
impl TokenSource for Pinned {
    async fn token(&self) -> Result<crate::AccessToken, ArmError> {
        let token = self.inner.token().await?;
        let claims = jwt_claims(token.secret()).unwrap_or_default();
        let what = format!("management identity ({})", self.inner.describe());
        for (key, claim, want) in [
            ("principalId", "oid", &self.principal_id),
            ("resourceId", "xms_mirid", &self.resource_id),
        ] {
            let Some(want) = want else { continue };
            let got = claims.get(claim).and_then(serde_json::Value::as_str);
            if !got.is_some_and(|got| got.eq_ignore_ascii_case(want)) {
                return Err(ArmError::local(
                    &what,
                    &format!(
                        "[impersonation.azure] {key} is {want}, but the identity this environment \
                         provides has {claim} {}; attach the configured identity or correct {key}",
                        got.unwrap_or("(none)")
                    ),
                ));
            }
        }
        Ok(token)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex digits.
pub fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A tenant id (a GUID) or a verified domain (`contoso.onmicrosoft.com`): nothing a URL path
/// would misread.
fn is_tenant(value: &str) -> bool {
    is_guid(value)
        || (value.contains('.')
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')))
}

/// The [`ImpersonationError`] of a failed exchange for `identity`.
fn classify(identity: &Identity, error: &ArmError) -> ImpersonationError {
    if error.denied() || error.not_found() {
        ImpersonationError::Denied { identity: identity.to_string(), message: error.to_string() }
    } else if error.transient() {
        ImpersonationError::Unavailable { message: error.to_string() }
    } else {
        ImpersonationError::Backend { message: error.to_string() }
    }
}

#[async_trait::async_trait]
impl Impersonator for ManagedIdentityImpersonator {
    async fn credentials(
        &self,
        target: &ImpersonationTarget,
    ) -> Result<Credentials, ImpersonationError> {
        let (client_id, tenant_id) = match target.identity() {
            Identity::Azure { client_id, tenant_id, .. } => (client_id, tenant_id),
            Identity::Ambient => return Ok(Credentials::Ambient),
            other => {
                return Err(ImpersonationError::NotConfigured {
                    cloud: other.cloud().unwrap_or(Cloud::Azure),
                });
            }
        };
        if !is_guid(client_id) {
            return Err(ImpersonationError::InvalidTarget {
                field: "target.clientId".into(),
                message: format!(
                    "must be a GUID such as 00000000-0000-0000-0000-000000000000, got {client_id:?}"
                ),
            });
        }
        let Some(tenant) = tenant_id.as_ref().or(self.home_tenant.as_ref()) else {
            return Err(ImpersonationError::InvalidTarget {
                field: "target.tenantId".into(),
                message: "is missing, and [impersonation.azure] names no tenantId".into(),
            });
        };
        if !is_tenant(tenant) {
            return Err(ImpersonationError::InvalidTarget {
                field: "target.tenantId".into(),
                message: format!("must be a tenant GUID or domain, got {tenant:?}"),
            });
        }
        let exchange = ClientCredentials::new(
            &self.authority,
            tenant,
            client_id,
            ClientCredential::AssertionFrom(self.assertion.clone()),
            &self.resource,
        );
        let token = exchange.token().await.map_err(|e| classify(target.identity(), &e))?;
        Ok(Credentials::Azure {
            access_token: token.secret().to_owned(),
            expires_at: token.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_and_tenants() {
        assert!(is_guid("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(!is_guid("0f8fad5b-d9cb-469f-a165-70867728950") && !is_guid("x"));
        assert!(is_tenant("contoso.onmicrosoft.com") && !is_tenant("a/b") && !is_tenant("common"));
    }

    #[test]
    fn failures_map_to_the_contract_errors() {
        let identity =
            Identity::Azure { client_id: "c".into(), tenant_id: None, subscription_id: None };
        let codes: Vec<&str> = [
            ArmError::from_body("x", 400, r#"{"error":"unauthorized_client"}"#),
            ArmError::from_body("x", 401, r#"{"error":"invalid_client"}"#),
            ArmError::from_body("x", 503, ""),
            ArmError::from_body("x", 400, r#"{"error":"invalid_request"}"#),
        ]
        .iter()
        .map(|e| classify(&identity, e).code())
        .collect();
        assert_eq!(
            codes,
            [
                "IMPERSONATION_DENIED",
                "IMPERSONATION_DENIED",
                "IMPERSONATION_UNAVAILABLE",
                "IMPERSONATION_FAILED"
            ]
        );
    }
}
