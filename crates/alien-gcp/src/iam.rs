//! The GCP [`Impersonator`]: IAM Credentials `generateAccessToken` for a deployment's service
//! account (`target.serviceAccountEmail`), with the identity's scopes and the target's duration
//! as `lifetime` (`{secs}s`).
//!
//! With an `[impersonation.gcp]` binding naming a management service account (`email`), every
//! call carries `delegates: ["projects/-/serviceAccounts/{management}"]`: Google's documented
//! delegation chain, in which the manager's identity may create tokens for the management
//! account and the management account for the customer's. Customers then trust one account
//! of the vendor (as AWS customers trust the management role), whatever identity the manager
//! runs as. Without one, the manager's own identity must be a token creator on the target.
//!
//! Also [`sign_blob`], IAM Credentials `signBlob`, for V4 URL signing without a local key.
//! Tokens are never logged; caching is the `CachingImpersonator`'s job.

use std::time::Duration;

use alien_impersonation::{
    Cloud, Credentials, GCP_CLOUD_PLATFORM_SCOPE, Identity, ImpersonationError,
    ImpersonationTarget, Impersonator,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::config::{GcpSettings, Service};
use crate::rest::{Api, ApiError};

/// `generateAccessToken`'s answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessToken {
    access_token: String,
    expire_time: String,
}

/// An access token minted for a service account.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The bearer token.
    pub access_token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Shows the expiry only.
impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Whether `email` looks like a service account email (`name@project.iam.gserviceaccount.com`
/// or any `user@domain`), with nothing a URL path would misread.
pub fn is_service_account_email(email: &str) -> bool {
    email.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty() && domain.contains('.') && !domain.starts_with('.')
    }) && email.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'-' | b'_'))
}

/// `projects/-/serviceAccounts/{email}`, the resource name IAM Credentials takes.
fn resource(email: &str) -> String {
    format!("projects/-/serviceAccounts/{email}")
}

/// IAM Credentials `generateAccessToken` for `email` through `delegates` (emails), as the
/// identity of `api`.
pub async fn generate_access_token(
    api: &Api,
    email: &str,
    scopes: &[String],
    lifetime: Duration,
    delegates: &[String],
) -> Result<MintedToken, ApiError> {
    let mut body = json!({
        "scope": scopes,
        "lifetime": format!("{}s", lifetime.as_secs().clamp(1, 43_200)),
    });
    if !delegates.is_empty() {
        body["delegates"] = json!(delegates.iter().map(|d| resource(d)).collect::<Vec<_>>());
    }
    let path = format!("/v1/{}:generateAccessToken", resource(email));
    let what = format!("IAM Credentials generateAccessToken for {email}");
    let token: AccessToken = api.json(&what, reqwest::Method::POST, &path, Some(&body)).await?;
    let expires_at = DateTime::parse_from_rfc3339(&token.expire_time)
        .map_err(|e| ApiError::decode(&what, &format!("expireTime {:?}: {e}", token.expire_time)))?
        .with_timezone(&Utc);
    if token.access_token.is_empty() {
        return Err(ApiError::decode(&what, "an empty accessToken"));
    }
    Ok(MintedToken { access_token: token.access_token, expires_at })
}

/// `signBlob`'s answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedBlob {
    key_id: String,
    signed_blob: String,
}

/// IAM Credentials `signBlob`: `payload` signed (RSA-SHA256) with a Google-managed key of
/// service account `email`, as the identity of `api` (an IAM Credentials [`Api`]); the key id
/// and the signature.
pub async fn sign_blob(
    api: &Api,
    email: &str,
    payload: &[u8],
) -> Result<(String, Vec<u8>), ApiError> {
    let what = format!("IAM Credentials signBlob as {email}");
    if !is_service_account_email(email) {
        return Err(ApiError::local(&format!("{what}: {email:?} is not a service account email")));
    }
    let path = format!("/v1/{}:signBlob", resource(email));
    let body = json!({"payload": STANDARD.encode(payload)});
    let signed: SignedBlob = api.json(&what, reqwest::Method::POST, &path, Some(&body)).await?;
    let signature = STANDARD
        .decode(&signed.signed_blob)
        .map_err(|e| ApiError::decode(&what, &format!("signedBlob is not base64: {e}")))?;
    Ok((signed.key_id, signature))
}

/// IAM Credentials `generateAccessToken`, from the manager's identity or through a management
/// service account.
#[derive(Clone)]
pub struct IamImpersonator {
    api: Api,
    management: Option<String>,
}

/// Names the endpoint and the management account; no token.
impl std::fmt::Debug for IamImpersonator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamImpersonator")
            .field("endpoint", &self.api.base())
            .field("via", &self.management)
            .finish()
    }
}

impl IamImpersonator {
    /// Impersonates as the identity of `settings`, through `management` (the
    /// `[impersonation.gcp]` `email`) when given.
    pub fn new(settings: &GcpSettings, management: Option<String>) -> IamImpersonator {
        IamImpersonator { api: Api::new(settings, Service::IamCredentials), management }
    }

    /// The management account calls delegate through, if any.
    pub fn management(&self) -> Option<&str> {
        self.management.as_deref()
    }
}

/// The [`ImpersonationError`] of a failed call for `identity`.
fn classify(identity: &Identity, error: &ApiError) -> ImpersonationError {
    if error.denied() || error.not_found() {
        ImpersonationError::Denied { identity: identity.to_string(), message: error.to_string() }
    } else if error.transient() {
        ImpersonationError::Unavailable { message: error.to_string() }
    } else {
        ImpersonationError::Backend { message: error.to_string() }
    }
}

#[async_trait::async_trait]
impl Impersonator for IamImpersonator {
    async fn credentials(
        &self,
        target: &ImpersonationTarget,
    ) -> Result<Credentials, ImpersonationError> {
        let (email, scopes) = match target.identity() {
            Identity::Gcp { service_account_email, scopes } => (service_account_email, scopes),
            Identity::Ambient => return Ok(Credentials::Ambient),
            other => {
                return Err(ImpersonationError::NotConfigured {
                    cloud: other.cloud().unwrap_or(Cloud::Gcp),
                });
            }
        };
        if !is_service_account_email(email) {
            return Err(ImpersonationError::InvalidTarget {
                field: "target.serviceAccountEmail".into(),
                message: format!(
                    "must be a service account email such as \
                     alien-deployer@my-project.iam.gserviceaccount.com, got {email:?}"
                ),
            });
        }
        let scopes: Vec<String> = if scopes.is_empty() {
            vec![GCP_CLOUD_PLATFORM_SCOPE.to_owned()]
        } else {
            scopes.clone()
        };
        let delegates: Vec<String> = self.management.iter().cloned().collect();
        let token = generate_access_token(&self.api, email, &scopes, target.duration(), &delegates)
            .await
            .map_err(|e| classify(target.identity(), &e))?;
        Ok(Credentials::Gcp { access_token: token.access_token, expires_at: token.expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_emails() {
        for good in
            ["a@p.iam.gserviceaccount.com", "alien-deployer@my-project.iam.gserviceaccount.com"]
        {
            assert!(is_service_account_email(good), "{good}");
        }
        for bad in ["", "nobody", "@p.iam", "a@nodot", "a b@p.com", "a@p.com/../x", "a@p.com:x"] {
            assert!(!is_service_account_email(bad), "{bad}");
        }
    }

    #[test]
    fn failures_map_to_the_contract_errors() {
        let identity = Identity::Gcp {
            service_account_email: "a@p.iam.gserviceaccount.com".into(),
            scopes: Vec::new(),
        };
        let error = |code: Option<u16>| ApiError {
            what: "IAM".into(),
            http_status: code,
            status: None,
            message: "m".into(),
        };
        let codes: Vec<&str> = [Some(403), Some(404), Some(503), None, Some(400)]
            .into_iter()
            .map(|c| classify(&identity, &error(c)).code())
            .collect();
        assert_eq!(
            codes,
            [
                "IMPERSONATION_DENIED",
                "IMPERSONATION_DENIED",
                "IMPERSONATION_UNAVAILABLE",
                "IMPERSONATION_UNAVAILABLE",
                "IMPERSONATION_FAILED"
            ]
        );
    }
}
