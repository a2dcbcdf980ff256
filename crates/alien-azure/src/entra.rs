//! Entra ID access tokens for one resource (audience): where the manager's own Azure
//! identity comes from, and the client-assertion exchange impersonation builds on.
//!
//! [`ambient_token_source`] follows the order of Azure's `DefaultAzureCredential`:
//! 1. a client secret: `AZURE_CLIENT_SECRET` with `AZURE_CLIENT_ID` and `AZURE_TENANT_ID`;
//! 2. workload identity: `AZURE_FEDERATED_TOKEN_FILE` with `AZURE_CLIENT_ID` and
//!    `AZURE_TENANT_ID` (the file's JWT is the client assertion, re-read on every exchange
//!    because the platform rotates it);
//! 3. managed identity through `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` (App Service,
//!    Container Apps; api-version 2019-08-01, header `X-IDENTITY-HEADER`), a user-assigned
//!    identity chosen with `AZURE_CLIENT_ID`;
//! 4. managed identity through IMDS (`http://169.254.169.254/metadata/identity/oauth2/token`,
//!    api-version 2018-02-01, header `Metadata: true`; the host is overridable with
//!    `AZURE_POD_IDENTITY_AUTHORITY_HOST`, as the Azure SDKs allow).
//!
//! Entra ID's token endpoint is `{authority}/{tenant}/oauth2/v2.0/token`, the authority
//! `https://login.microsoftonline.com` unless `AZURE_AUTHORITY_HOST` says otherwise. Tokens are
//! cached until 80 % of their lifetime, one fetch at a time. None is ever logged, and the
//! `Debug` of every type here leaves them out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use crate::arm::{ArmError, http_client};

/// The public cloud's Entra ID authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The IMDS host.
pub const DEFAULT_IMDS: &str = "http://169.254.169.254";
/// The audience of the tokens a federated identity credential accepts as client assertion.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The managed-identity endpoint's api-version (`IDENTITY_ENDPOINT`).
pub const IDENTITY_ENDPOINT_API_VERSION: &str = "2019-08-01";
/// IMDS' api-version.
pub const IMDS_API_VERSION: &str = "2018-02-01";

/// An access token and when it stops working. Its `Debug` shows the expiry only.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    secret: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

impl AccessToken {
    /// `secret`, valid until `expires_at`.
    pub fn new(secret: impl Into<String>, expires_at: DateTime<Utc>) -> AccessToken {
        AccessToken { secret: secret.into(), expires_at }
    }

    /// The bearer token. **Secret.**
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Where access tokens for one resource come from.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// A valid access token.
    async fn token(&self) -> Result<AccessToken, ArmError>;
    /// What this source is, for logs (never a secret).
    fn describe(&self) -> String;
}

/// A token given as is (tests, an impersonated token handed to a deployer).
pub struct StaticToken(AccessToken);

impl StaticToken {
    /// `secret`, said to last one hour.
    pub fn new(secret: impl Into<String>) -> StaticToken {
        StaticToken(AccessToken::new(secret, Utc::now() + TimeDelta::hours(1)))
    }

    /// `token` as it is.
    pub fn of(token: AccessToken) -> StaticToken {
        StaticToken(token)
    }
}

#[async_trait::async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<AccessToken, ArmError> {
        Ok(self.0.clone())
    }
    fn describe(&self) -> String {
        "a given access token".to_owned()
    }
}

/// The last token and when to fetch the next one, refreshed at 80 % of its lifetime, one fetch
/// at a time.
#[derive(Default)]
pub(crate) struct TokenCache(tokio::sync::Mutex<Option<(AccessToken, DateTime<Utc>)>>);

impl TokenCache {
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<AccessToken, ArmError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<AccessToken, ArmError>>,
    {
        let mut slot = self.0.lock().await;
        let now = Utc::now();
        if let Some((token, refresh_at)) = slot.as_ref()
            && now < *refresh_at
        {
            return Ok(token.clone());
        }
        let token = fetch().await?;
        let refresh_at = now + (token.expires_at - now) * 8 / 10;
        *slot = Some((token.clone(), refresh_at));
        Ok(token)
    }
}

/// A token answer: Entra ID (`expires_in`, a number), the managed-identity endpoint and IMDS
/// (`expires_on` / `expires_in` as strings of seconds).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Seconds>,
    #[serde(default)]
    expires_on: Option<Seconds>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(i64),
    Text(String),
}

impl Seconds {
    fn value(&self) -> Option<i64> {
        match self {
            Seconds::Number(n) => Some(*n),
            Seconds::Text(t) => t.trim().parse().ok(),
        }
    }
}

impl TokenAnswer {
    fn into_token(self, what: &str) -> Result<AccessToken, ArmError> {
        if self.access_token.is_empty() {
            return Err(ArmError::decode(what, "an empty access_token"));
        }
        let now = Utc::now();
        let expires_at = match (
            self.expires_on.as_ref().and_then(Seconds::value),
            self.expires_in.as_ref().and_then(Seconds::value),
        ) {
            (Some(on), _) => DateTime::from_timestamp(on, 0).unwrap_or(now),
            (None, Some(secs)) => now + TimeDelta::seconds(secs),
            (None, None) => now + TimeDelta::minutes(10),
        };
        if expires_at <= now {
            return Err(ArmError::decode(what, "a token that has already expired"));
        }
        Ok(AccessToken { secret: self.access_token, expires_at })
    }
}

async fn read_token(what: &str, response: reqwest::Response) -> Result<AccessToken, ArmError> {
    let response = ArmError::check(what, response).await?;
    let answer: TokenAnswer =
        response.json().await.map_err(|e| ArmError::decode(what, &e.to_string()))?;
    answer.into_token(what)
}

/// `scope` of a v2.0 token request for `resource`: `{resource}/.default`.
pub fn default_scope(resource: &str) -> String {
    format!("{}/.default", resource.trim_end_matches('/'))
}

/// The managed identity of an App Service or Container Apps host: `IDENTITY_ENDPOINT` with the
/// `IDENTITY_HEADER` secret.
pub struct ManagedIdentityEndpoint {
    endpoint: String,
    header: String,
    client_id: Option<String>,
    resource: String,
    cache: TokenCache,
}

impl ManagedIdentityEndpoint {
    /// Tokens for `resource` from `endpoint` with `header`, as the user-assigned identity
    /// `client_id` (the system-assigned one when `None`).
    pub fn new(
        endpoint: &str,
        header: &str,
        client_id: Option<String>,
        resource: &str,
    ) -> ManagedIdentityEndpoint {
        ManagedIdentityEndpoint {
            endpoint: endpoint.trim().to_owned(),
            header: header.to_owned(),
            client_id,
            resource: resource.to_owned(),
            cache: TokenCache::default(),
        }
    }

    async fn fetch(&self) -> Result<AccessToken, ArmError> {
        let what = "the managed-identity endpoint";
        let mut query = vec![
            ("api-version", IDENTITY_ENDPOINT_API_VERSION),
            ("resource", self.resource.as_str()),
        ];
        if let Some(client_id) = &self.client_id {
            query.push(("client_id", client_id.as_str()));
        }
        let response = http_client()
            .get(&self.endpoint)
            .query(&query)
            .header("X-IDENTITY-HEADER", &self.header)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| ArmError::transport(what, &e))?;
        read_token(what, response).await
    }
}

#[async_trait::async_trait]
impl TokenSource for ManagedIdentityEndpoint {
    async fn token(&self) -> Result<AccessToken, ArmError> {
        self.cache.get(|| self.fetch()).await
    }
    fn describe(&self) -> String {
        match &self.client_id {
            Some(id) => format!("managed identity {id} at {}", self.endpoint),
            None => format!("the system-assigned managed identity at {}", self.endpoint),
        }
    }
}

/// The managed identity of a VM, VM scale set or AKS node: the Instance Metadata Service.
pub struct Imds {
    base: String,
    client_id: Option<String>,
    resource: String,
    cache: TokenCache,
}

impl Imds {
    /// Tokens for `resource` from IMDS at `base` (e.g. [`DEFAULT_IMDS`]), as `client_id`.
    pub fn new(base: &str, client_id: Option<String>, resource: &str) -> Imds {
        Imds {
            base: crate::arm::base_url(base),
            client_id,
            resource: resource.to_owned(),
            cache: TokenCache::default(),
        }
    }

    async fn fetch(&self) -> Result<AccessToken, ArmError> {
        let what = "IMDS";
        let mut query =
            vec![("api-version", IMDS_API_VERSION), ("resource", self.resource.as_str())];
        if let Some(client_id) = &self.client_id {
            query.push(("client_id", client_id.as_str()));
        }
        let response = http_client()
            .get(format!("{}/metadata/identity/oauth2/token", self.base))
            .query(&query)
            .header("Metadata", "true")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| ArmError::transport(what, &e))?;
        read_token(what, response).await
    }
}

#[async_trait::async_trait]
impl TokenSource for Imds {
    async fn token(&self) -> Result<AccessToken, ArmError> {
        self.cache.get(|| self.fetch()).await
    }
    fn describe(&self) -> String {
        format!("IMDS at {}", self.base)
    }
}

/// What proves an app registration's (or a user-assigned identity's) identity at Entra ID's
/// token endpoint.
pub enum ClientCredential {
    /// `client_secret`. **Secret.**
    Secret(String),
    /// A JWT read from this file on every exchange (workload identity's projected token).
    AssertionFile(PathBuf),
    /// A token of another identity, for audience [`TOKEN_EXCHANGE_AUDIENCE`]: a federated
    /// identity credential of the client trusts that identity (the manager's management
    /// identity).
    AssertionFrom(Arc<dyn TokenSource>),
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientCredential::Secret(_) => f.write_str("Secret(<redacted>)"),
            ClientCredential::AssertionFile(path) => write!(f, "AssertionFile({})", path.display()),
            ClientCredential::AssertionFrom(source) => {
                write!(f, "AssertionFrom({})", source.describe())
            }
        }
    }
}

/// Entra ID's client-credentials grant (`{authority}/{tenant}/oauth2/v2.0/token`) for one
/// client in one tenant, with a secret or a client assertion.
pub struct ClientCredentials {
    authority: String,
    tenant: String,
    client_id: String,
    credential: ClientCredential,
    scope: String,
    cache: TokenCache,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("authority", &self.authority)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .field("scope", &self.scope)
            .finish()
    }
}

impl ClientCredentials {
    /// Tokens for `resource` (asked as scope `{resource}/.default`) of `client_id` in `tenant`,
    /// at `authority` (e.g. [`DEFAULT_AUTHORITY`]).
    pub fn new(
        authority: &str,
        tenant: &str,
        client_id: &str,
        credential: ClientCredential,
        resource: &str,
    ) -> ClientCredentials {
        ClientCredentials {
            authority: crate::arm::base_url(authority),
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            credential,
            scope: default_scope(resource),
            cache: TokenCache::default(),
        }
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant)
    }

    async fn fetch(&self) -> Result<AccessToken, ArmError> {
        let what = format!("Entra ID token for {} in tenant {}", self.client_id, self.tenant);
        let assertion = match &self.credential {
            ClientCredential::Secret(_) => None,
            ClientCredential::AssertionFile(path) => {
                let jwt = std::fs::read_to_string(path).map_err(|e| {
                    ArmError::local(&what, &format!("reading {}: {e}", path.display()))
                })?;
                Some(jwt.trim().to_owned())
            }
            ClientCredential::AssertionFrom(source) => Some(
                source
                    .token()
                    .await
                    .map_err(|e| ArmError {
                        message: format!(
                            "getting the client assertion from {}: {}",
                            source.describe(),
                            e.message
                        ),
                        what: what.clone(),
                        ..e
                    })?
                    .secret,
            ),
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
        ];
        match (&self.credential, &assertion) {
            (ClientCredential::Secret(secret), _) => form.push(("client_secret", secret.as_str())),
            (_, Some(assertion)) => {
                form.push(("client_assertion_type", JWT_BEARER_ASSERTION));
                form.push(("client_assertion", assertion.as_str()));
            }
            (_, None) => {}
        }
        let response = http_client()
            .post(self.token_endpoint())
            .form(&form)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| ArmError::transport(&what, &e))?;
        read_token(&what, response).await
    }
}

#[async_trait::async_trait]
impl TokenSource for ClientCredentials {
    async fn token(&self) -> Result<AccessToken, ArmError> {
        self.cache.get(|| self.fetch()).await
    }
    fn describe(&self) -> String {
        let how = match &self.credential {
            ClientCredential::Secret(_) => "a client secret",
            ClientCredential::AssertionFile(_) => "workload identity",
            ClientCredential::AssertionFrom(_) => "a federated credential",
        };
        format!("client {} in tenant {} with {how}", self.client_id, self.tenant)
    }
}

/// The Entra ID authority: `AZURE_AUTHORITY_HOST`, else [`DEFAULT_AUTHORITY`].
pub fn authority_from_env() -> String {
    env("AZURE_AUTHORITY_HOST")
        .map_or_else(|| DEFAULT_AUTHORITY.to_owned(), |a| crate::arm::base_url(&a))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The environment's identity for `resource`, as the module documentation lists the sources.
pub fn ambient_token_source(resource: &str) -> Arc<dyn TokenSource> {
    identity_token_source(None, resource)
}

/// The environment's identity for `resource`, as [`ambient_token_source`], but as the
/// identity `client_id` when given (the `[impersonation.azure]` management identity's client
/// id) instead of `AZURE_CLIENT_ID`.
pub fn identity_token_source(client_id: Option<&str>, resource: &str) -> Arc<dyn TokenSource> {
    let client_id = client_id.map(str::to_owned).or_else(|| env("AZURE_CLIENT_ID"));
    let tenant = env("AZURE_TENANT_ID");
    if let (Some(client_id), Some(tenant)) = (&client_id, &tenant) {
        let credential = if let Some(secret) = env("AZURE_CLIENT_SECRET") {
            Some(ClientCredential::Secret(secret))
        } else {
            env("AZURE_FEDERATED_TOKEN_FILE")
                .map(|file| ClientCredential::AssertionFile(PathBuf::from(file)))
        };
        if let Some(credential) = credential {
            return Arc::new(ClientCredentials::new(
                &authority_from_env(),
                tenant,
                client_id,
                credential,
                resource,
            ));
        }
    }
    if let (Some(endpoint), Some(header)) = (env("IDENTITY_ENDPOINT"), env("IDENTITY_HEADER")) {
        return Arc::new(ManagedIdentityEndpoint::new(&endpoint, &header, client_id, resource));
    }
    let imds = env("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_IMDS.to_owned());
    Arc::new(Imds::new(&imds, client_id, resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cache_fetches_once_until_80_percent_of_the_lifetime() {
        let cache = TokenCache::default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let token = cache
                .get(|| async {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(AccessToken::new("t", Utc::now() + TimeDelta::hours(1)))
                })
                .await;
            assert_eq!(token.ok().map(|t| t.secret), Some("t".to_owned()));
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A token already past 80 % is fetched again.
        let cache = TokenCache::default();
        for _ in 0..2 {
            let _ = cache
                .get(|| async {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(AccessToken::new("t", Utc::now() + TimeDelta::milliseconds(1)))
                })
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn token_answers_of_every_endpoint_are_read() {
        let read = |json: &str| {
            serde_json::from_str::<TokenAnswer>(json)
                .map_err(|e| e.to_string())
                .and_then(|a| a.into_token("t").map_err(|e| e.to_string()))
        };
        let soon = Utc::now() + TimeDelta::minutes(50);
        let entra = read(r#"{"access_token":"a","expires_in":3599,"token_type":"Bearer"}"#);
        assert!(entra.is_ok_and(|t| t.expires_at > soon));
        let on = (Utc::now() + TimeDelta::hours(1)).timestamp();
        let msi = read(&format!(r#"{{"access_token":"a","expires_on":"{on}"}}"#));
        assert!(msi.is_ok_and(|t| t.expires_at.timestamp() == on));
        let imds = read(r#"{"access_token":"a","expires_in":"3599"}"#);
        assert!(imds.is_ok_and(|t| t.expires_at > soon));
        assert!(read(r#"{"access_token":"","expires_in":1}"#).is_err());
        assert!(read(r#"{"access_token":"a","expires_on":"1"}"#).is_err(), "expired");
    }

    #[test]
    fn no_secret_in_debug() {
        let token = AccessToken::new("SECRET-TOKEN", Utc::now());
        assert!(!format!("{token:?}").contains("SECRET"));
        let credentials = ClientCredentials::new(
            DEFAULT_AUTHORITY,
            "tenant",
            "client",
            ClientCredential::Secret("SECRET-VALUE".into()),
            crate::arm::ARM_RESOURCE,
        );
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("SECRET") && shown.contains("client"), "{shown}");
        assert_eq!(
            credentials.token_endpoint(),
            "https://login.microsoftonline.com/tenant/oauth2/v2.0/token"
        );
        assert_eq!(credentials.scope, "https://management.azure.com/.default");
    }
}
