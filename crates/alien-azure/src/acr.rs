//! Azure Container Registry as an [`ArtifactRegistry`] (`[artifact-registry.<platform>]`
//! `service = "acr"`).
//!
//! - Host `{registryName}.azurecr.io`; images are `{host}/{repositoryPrefix}/{name}:{tag}`
//!   (ACR creates a repository on its first push, so nothing is created ahead).
//! - Credentials come from ACR's token exchange, as `az acr login --expose-token` does: an
//!   Entra ID token of the manager's identity is exchanged at `POST /oauth2/exchange` for an
//!   ACR refresh token; Docker clients log in with the username
//!   `00000000-0000-0000-0000-000000000000` and the refresh token as password, and their
//!   client exchanges it at `/oauth2/token` for repository-scoped access tokens itself. The
//!   password must be the refresh token: a Docker client sends the password it was given to
//!   `/oauth2/token` as a refresh token, so an access token there would be refused. Push
//!   credentials first ask `/oauth2/token` for `repository:{repo}:pull,push` on every
//!   repository named, which fails early, naming the registry, when the token service refuses.
//!   Refresh tokens are cached to 80 % of their lifetime (their JWT `exp`, else an hour), one
//!   exchange in flight.
//! - [`AcrRegistry::grant_pull`]: the deployment's identity (its principal id) gets `AcrPull` on
//!   the registry through an ARM role assignment whose name is derived from the registry, the
//!   role and the principal, so a repeated grant is the same PUT; `RoleAssignmentExists` (the
//!   same grant made under another name) counts as done.
//!
//! No token is ever logged.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use alien_core::api::PushCredentials;
use alien_core::sync::RegistryCredentials;
use alien_registry::{ArtifactRegistry, ArtifactRegistryError, PullFor};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::json;
use sha2::Digest as _;

use crate::arm::{Arm, ArmError, http_client};
use crate::entra::TokenSource;
use crate::identity::is_guid;

/// The username of Basic credentials that carry an ACR refresh token.
pub const REFRESH_TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";
/// The built-in `AcrPull` role's id.
pub const ACR_PULL_ROLE: &str = "7f951dda-4ed3-4680-a7ca-43fe172d538d";
/// Role assignments' api-version.
pub const ROLE_ASSIGNMENTS_API_VERSION: &str = "2022-04-01";
/// Repository prefix when the binding names none.
pub const DEFAULT_PREFIX: &str = "alien-artifacts";

/// An ACR binding.
#[derive(Clone)]
pub struct AcrSettings {
    /// Registry name (`myregistry`).
    pub registry_name: String,
    /// Resource group of the registry.
    pub resource_group_name: String,
    /// Subscription of the registry (the binding has no such field yet: the binary passes
    /// `AZURE_SUBSCRIPTION_ID`); only grants need it.
    pub subscription_id: Option<String>,
    /// Prefix of repository names ([`DEFAULT_PREFIX`] when `None`).
    pub repository_prefix: Option<String>,
    /// Base URL of the registry's token service; `https://{registryName}.azurecr.io` when
    /// `None` (tests point it at the contract stub).
    pub login_server_url: Option<String>,
    /// The manager's Entra ID tokens (ARM audience: ACR's exchange accepts them).
    pub tokens: Arc<dyn TokenSource>,
    /// Resource Manager as the manager (role assignments).
    pub arm: Arm,
}

impl std::fmt::Debug for AcrSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcrSettings")
            .field("registry_name", &self.registry_name)
            .field("resource_group_name", &self.resource_group_name)
            .field("subscription_id", &self.subscription_id)
            .field("repository_prefix", &self.repository_prefix)
            .field("tokens", &self.tokens.describe())
            .finish_non_exhaustive()
    }
}

/// Why an [`AcrRegistry`] cannot be made; the message names the setting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AcrError(String);

/// An ACR refresh token and when it is replaced.
#[derive(Clone)]
struct Refresh {
    token: String,
    expires_at: DateTime<Utc>,
    refresh_at: DateTime<Utc>,
}

/// ACR: see the module documentation.
pub struct AcrRegistry {
    host: String,
    token_service: String,
    repository_name: String,
    registry_id: Option<String>,
    tokens: Arc<dyn TokenSource>,
    arm: Arm,
    cache: tokio::sync::Mutex<Option<Refresh>>,
    granted: Mutex<HashSet<String>>,
}

/// Names the registry; no token.
impl std::fmt::Debug for AcrRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcrRegistry")
            .field("host", &self.host)
            .field("repository_name", &self.repository_name)
            .field("registry_id", &self.registry_id)
            .finish_non_exhaustive()
    }
}

/// Whether an image path component is one Docker accepts.
fn is_image_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.split(['.', '_', '-']).all(|run| {
                    !run.is_empty()
                        && run.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        })
}

/// The `exp` of a JWT, unverified.
fn jwt_expiry(jwt: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(crate::identity::jwt_claims(jwt)?.get("exp")?.as_i64()?, 0)
}

/// A role assignment name (a GUID) fixed by `parts`.
fn assignment_name(parts: &[&str]) -> String {
    let digest = sha2::Sha256::digest(parts.join("|").to_ascii_lowercase().as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid().to_string()
}

#[derive(Deserialize)]
struct ExchangeAnswer {
    refresh_token: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

impl AcrRegistry {
    /// The registry of `settings`; nothing is called until credentials or a grant are asked.
    pub fn new(settings: &AcrSettings) -> Result<AcrRegistry, AcrError> {
        let name = settings.registry_name.trim();
        let name_ok =
            (5..=50).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric());
        if !name_ok {
            return Err(AcrError(format!(
                "registryName: {name:?} is not a registry name (5 to 50 letters and digits)"
            )));
        }
        let group = settings.resource_group_name.trim();
        if group.is_empty() || group.contains('/') {
            return Err(AcrError(format!("resourceGroupName: {group:?} is not a resource group")));
        }
        let prefix =
            settings.repository_prefix.as_deref().unwrap_or(DEFAULT_PREFIX).trim_matches('/');
        if !is_image_name(prefix) {
            return Err(AcrError(format!(
                "repositoryPrefix: {prefix:?} is not a repository path (lowercase letters, digits, \
                 '.', '_', '-', '/')"
            )));
        }
        let registry_id = match settings.subscription_id.as_deref() {
            Some(subscription) if is_guid(subscription) => Some(format!(
                "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.ContainerRegistry/registries/{name}"
            )),
            Some(other) => {
                return Err(AcrError(format!("subscriptionId: {other:?} is not a GUID")));
            }
            None => None,
        };
        let host = format!("{}.azurecr.io", name.to_ascii_lowercase());
        let token_service = settings
            .login_server_url
            .as_deref()
            .map_or_else(|| format!("https://{host}"), crate::arm::base_url);
        Ok(AcrRegistry {
            host,
            token_service,
            repository_name: prefix.to_owned(),
            registry_id,
            tokens: settings.tokens.clone(),
            arm: settings.arm.clone(),
            cache: tokio::sync::Mutex::new(None),
            granted: Mutex::new(HashSet::new()),
        })
    }

    /// The registry's ARM id, when its subscription is known.
    pub fn registry_id(&self) -> Option<&str> {
        self.registry_id.as_deref()
    }

    /// Whether `image` (`{host}/{prefix}/{name}[:tag][@digest]`) is in this registry under
    /// the prefix.
    pub fn holds(&self, image: &str) -> bool {
        image
            .strip_prefix(&self.host)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.strip_prefix(&self.repository_name))
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
    }

    fn unavailable(&self, message: String) -> ArtifactRegistryError {
        ArtifactRegistryError::Unavailable { registry: self.host.clone(), message }
    }

    /// An ACR refresh token of the manager's identity (cached).
    async fn refresh_token(&self) -> Result<Refresh, ArmError> {
        let mut slot = self.cache.lock().await;
        let now = Utc::now();
        if let Some(cached) = slot.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(cached.clone());
        }
        let what = format!("ACR token exchange at {}", self.host);
        let aad = self.tokens.token().await.map_err(|e| ArmError { what: what.clone(), ..e })?;
        let form = [
            ("grant_type", "access_token"),
            ("service", self.host.as_str()),
            ("access_token", aad.secret()),
        ];
        let response = http_client()
            .post(format!("{}/oauth2/exchange", self.token_service))
            .form(&form)
            .send()
            .await
            .map_err(|e| ArmError::transport(&what, &e))?;
        let response = ArmError::check(&what, response).await?;
        let answer: ExchangeAnswer =
            response.json().await.map_err(|e| ArmError::decode(&what, &e.to_string()))?;
        let expires_at = jwt_expiry(&answer.refresh_token)
            .filter(|e| *e > now)
            .unwrap_or(now + TimeDelta::hours(1));
        let refresh_at = now + (expires_at - now) * 8 / 10;
        let refresh = Refresh { token: answer.refresh_token, expires_at, refresh_at };
        *slot = Some(refresh.clone());
        Ok(refresh)
    }

    /// An ACR access token for `scopes` (`repository:{name}:pull,push`), from the cached
    /// refresh token, for clients that call the registry with a bearer token.
    pub async fn access_token(&self, scopes: &[String]) -> Result<String, ArtifactRegistryError> {
        let refresh = self.refresh_token().await.map_err(|e| self.unavailable(e.to_string()))?;
        let what = format!("ACR token for {}", scopes.join(" "));
        let scope = scopes.join(" ");
        let form = [
            ("grant_type", "refresh_token"),
            ("service", self.host.as_str()),
            ("scope", scope.as_str()),
            ("refresh_token", refresh.token.as_str()),
        ];
        let response = http_client()
            .post(format!("{}/oauth2/token", self.token_service))
            .form(&form)
            .send()
            .await
            .map_err(|e| self.unavailable(ArmError::transport(&what, &e).to_string()))?;
        let response =
            ArmError::check(&what, response).await.map_err(|e| self.unavailable(e.to_string()))?;
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| self.unavailable(ArmError::decode(&what, &e.to_string()).to_string()))?;
        Ok(answer.access_token)
    }

    /// Lets `principal_id` (the object id of the identity that pulls: a container app's
    /// managed identity) pull from the registry: `AcrPull` on the registry. Idempotent; once
    /// granted by this process it costs nothing.
    pub async fn grant_pull(&self, principal_id: &str) -> Result<(), ArtifactRegistryError> {
        if !is_guid(principal_id) {
            return Err(ArtifactRegistryError::InvalidRepository {
                repository: self.host.clone(),
                message: format!(
                    "the pulling identity must be a principal id (a GUID), got {principal_id:?}"
                ),
            });
        }
        let Some(scope) = &self.registry_id else {
            return Err(self.unavailable(
                "granting AcrPull needs the registry's subscription: set the binding's subscriptionId or AZURE_SUBSCRIPTION_ID"
                    .into(),
            ));
        };
        if self.granted.lock().is_ok_and(|g| g.contains(principal_id)) {
            return Ok(());
        }
        let subscription = scope.split('/').nth(2).unwrap_or_default();
        let role = format!(
            "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL_ROLE}"
        );
        let name = assignment_name(&[scope, ACR_PULL_ROLE, principal_id]);
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={ROLE_ASSIGNMENTS_API_VERSION}"
        );
        let body = json!({"properties": {
            "roleDefinitionId": role, "principalId": principal_id, "principalType": "ServicePrincipal",
        }});
        let what = format!("ARM assign AcrPull on {} to {principal_id}", self.host);
        match self
            .arm
            .json::<serde_json::Value>(&what, reqwest::Method::PUT, &path, Some(&body))
            .await
        {
            Ok(_) => {
                tracing::info!(registry = %self.host, principal = %principal_id, "AcrPull granted")
            }
            Err(e) if e.code.as_deref() == Some("RoleAssignmentExists") => {}
            Err(e) => return Err(self.unavailable(e.to_string())),
        }
        if let Ok(mut granted) = self.granted.lock() {
            granted.insert(principal_id.to_owned());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ArtifactRegistry for AcrRegistry {
    fn kind(&self) -> &'static str {
        "acr"
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn repository_name(&self) -> &str {
        &self.repository_name
    }

    /// Refused: the only token this registry could hand out is the manager identity's refresh
    /// token, which pushes to the whole registry (`AcrPush`) for hours; a pull-mode agent holding
    /// it could replace other customers' images. Pull-only tokens need ACR scope maps (to come).
    /// Push deployments need none: their identity pulls with `AcrPull`.
    async fn pull_credentials(
        &self,
        _who: PullFor<'_>,
    ) -> Result<RegistryCredentials, ArtifactRegistryError> {
        Err(self.unavailable(
            "pull-mode agents get no ACR credentials: the manager's refresh token could push; \
             pull-only tokens (scope maps) are not supported yet"
                .to_owned(),
        ))
    }

    async fn push_credentials(
        &self,
        repositories: &[String],
    ) -> Result<Option<PushCredentials>, ArtifactRegistryError> {
        let mut scopes = Vec::new();
        for name in repositories {
            if !is_image_name(name) {
                return Err(ArtifactRegistryError::InvalidRepository {
                    repository: name.clone(),
                    message: "is not an image name: lowercase letters and digits, joined by \
                              single '.', '_' or '-', in '/'-separated parts"
                        .into(),
                });
            }
            scopes.push(format!("repository:{}/{name}:pull,push", self.repository_name));
        }
        if !scopes.is_empty() {
            self.access_token(&scopes).await?;
        }
        let refresh = self.refresh_token().await.map_err(|e| self.unavailable(e.to_string()))?;
        Ok(Some(PushCredentials {
            username: REFRESH_TOKEN_USERNAME.into(),
            password: refresh.token,
            expires_at: refresh.expires_at,
        }))
    }

    /// `account` is the principal id of the identity that pulls; see
    /// [`AcrRegistry::grant_pull`].
    async fn grant_image_pull(
        &self,
        image: &str,
        account: &str,
    ) -> Result<bool, ArtifactRegistryError> {
        if !self.holds(image) {
            return Ok(false);
        }
        self.grant_pull(account).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entra::StaticToken;

    fn settings(name: &str, prefix: Option<&str>) -> AcrSettings {
        let tokens: Arc<dyn TokenSource> = Arc::new(StaticToken::new("t"));
        AcrSettings {
            registry_name: name.into(),
            resource_group_name: "rg-alien".into(),
            subscription_id: None,
            repository_prefix: prefix.map(str::to_owned),
            login_server_url: None,
            arm: Arm::new(crate::arm::DEFAULT_ARM_ENDPOINT, tokens.clone()),
            tokens,
        }
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        let registry =
            AcrRegistry::new(&settings("MyRegistry", None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(registry.host(), "myregistry.azurecr.io");
        assert_eq!(registry.repository_name(), DEFAULT_PREFIX);
        assert!(registry.holds("myregistry.azurecr.io/alien-artifacts/api:v1"));
        assert!(!registry.holds("myregistry.azurecr.io/other/api:v1"));
        assert!(!registry.holds("ghcr.io/acme/api:v1"));
        for (bad, field) in [("ab", "registryName"), ("my-registry", "registryName")] {
            let err = AcrRegistry::new(&settings(bad, None)).map(|_| ()).unwrap_err().to_string();
            assert!(err.starts_with(field), "{err}");
        }
        let err =
            AcrRegistry::new(&settings("myregistry", Some("Bad Prefix"))).map(|_| ()).unwrap_err();
        assert!(err.to_string().starts_with("repositoryPrefix"), "{err}");
    }

    #[test]
    fn assignment_names_are_fixed_guids() {
        let a = assignment_name(&["/subscriptions/s/x", ACR_PULL_ROLE, "p"]);
        assert!(is_guid(&a), "{a}");
        assert_eq!(a, assignment_name(&["/SUBSCRIPTIONS/s/x", ACR_PULL_ROLE, "p"]));
        assert_ne!(a, assignment_name(&["/subscriptions/s/x", ACR_PULL_ROLE, "q"]));
    }
}
