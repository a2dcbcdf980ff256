//! The manager's own Google identity: where its OAuth access tokens come from.
//!
//! [`ambient_token_source`] follows Application Default Credentials, as Google's libraries do:
//! 1. `GOOGLE_OAUTH_ACCESS_TOKEN`: a token as is (what the Terraform provider honours);
//! 2. `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's `application_default_credentials.json`:
//!    a service-account key (a JWT signed with the key, exchanged at its `token_uri`) or an
//!    authorized user (a refresh token);
//! 3. the metadata server (`GCE_METADATA_HOST`, else `metadata.google.internal`): Cloud Run, GKE
//!    workload identity, Compute Engine.
//!
//! Tokens are cached until 80 % of their lifetime, one refresh at a time. None is ever logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;

use crate::rest::{ApiError, http_client};

/// The OAuth scope of every token this crate asks for.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where access tokens come from.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// A valid access token.
    async fn token(&self) -> Result<String, ApiError>;
    /// What this source is, for logs (never a secret).
    fn describe(&self) -> String;
    /// The service account this source acts as, when it knows (V4 URL signing needs it).
    async fn email(&self) -> Option<String> {
        None
    }
    /// Signs `payload` with RSA-SHA256 when this source holds a private key (a service-account
    /// key); `None` otherwise (then IAM Credentials `signBlob` signs).
    fn sign_locally(&self, payload: &[u8]) -> Option<Result<Vec<u8>, ApiError>> {
        let _ = payload;
        None
    }
}

/// A token given as is (an impersonated token, `GOOGLE_OAUTH_ACCESS_TOKEN`).
pub struct StaticToken {
    token: String,
    email: Option<String>,
}

impl StaticToken {
    /// `token`, acting as `email` when known.
    pub fn new(token: impl Into<String>, email: Option<String>) -> StaticToken {
        StaticToken { token: token.into(), email }
    }
}

#[async_trait::async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, ApiError> {
        Ok(self.token.clone())
    }
    fn describe(&self) -> String {
        match &self.email {
            Some(email) => format!("a token of {email}"),
            None => "a given access token".to_owned(),
        }
    }
    async fn email(&self) -> Option<String> {
        self.email.clone()
    }
}

/// A token and when to fetch the next one.
struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Cache of a fetched token, refreshed at 80 % of its lifetime, one fetch at a time.
#[derive(Default)]
struct TokenCache(tokio::sync::Mutex<Option<Cached>>);

impl TokenCache {
    async fn get<F, Fut>(&self, fetch: F) -> Result<String, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, Duration), ApiError>>,
    {
        let mut slot = self.0.lock().await;
        if let Some(cached) = slot.as_ref()
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let (token, lifetime) = fetch().await?;
        let refresh_at = Instant::now() + lifetime.mul_f64(0.8);
        *slot = Some(Cached { token: token.clone(), refresh_at });
        Ok(token)
    }
}

/// The answer of an OAuth token endpoint or the metadata server.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    fn into_parts(self) -> (String, Duration) {
        (self.access_token, Duration::from_secs(self.expires_in.unwrap_or(3600).max(60)))
    }
}

/// The metadata server of the machine the manager runs on.
pub struct MetadataServer {
    base: String,
    cache: TokenCache,
    email: tokio::sync::OnceCell<Option<String>>,
}

impl MetadataServer {
    /// At `GCE_METADATA_HOST` (`host:port`), else `metadata.google.internal`.
    pub fn from_env() -> MetadataServer {
        let host = std::env::var("GCE_METADATA_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "metadata.google.internal".to_owned());
        MetadataServer {
            base: crate::config::base_url(&host),
            cache: TokenCache::default(),
            email: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, ApiError> {
        let url =
            format!("{}/computeMetadata/v1/instance/service-accounts/default/{path}", self.base);
        let response = http_client()
            .get(&url)
            .header("Metadata-Flavor", "Google")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| ApiError::transport("the metadata server", &e))?;
        ApiError::check("the metadata server", response).await
    }
}

#[async_trait::async_trait]
impl TokenSource for MetadataServer {
    async fn token(&self) -> Result<String, ApiError> {
        self.cache
            .get(|| async {
                let response = self.get("token").await?;
                let token: TokenResponse = response
                    .json()
                    .await
                    .map_err(|e| ApiError::decode("the metadata server's token", &e.to_string()))?;
                Ok(token.into_parts())
            })
            .await
    }
    fn describe(&self) -> String {
        format!("the metadata server at {}", self.base)
    }
    async fn email(&self) -> Option<String> {
        self.email
            .get_or_init(|| async {
                let response = self.get("email").await.ok()?;
                response.text().await.ok().map(|e| e.trim().to_owned())
            })
            .await
            .clone()
    }
}

/// An Application Default Credentials file.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CredentialsFile {
    ServiceAccount {
        client_email: String,
        private_key: String,
        #[serde(default)]
        private_key_id: Option<String>,
        #[serde(default)]
        token_uri: Option<String>,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
    },
}

const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A service-account key: tokens from a signed JWT; V4 URLs signed locally.
pub struct ServiceAccountKey {
    email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    token_uri: String,
    cache: TokenCache,
}

impl ServiceAccountKey {
    /// From the key's fields (`private_key` in PEM, PKCS#8).
    pub fn new(
        email: String,
        private_key_pem: &str,
        key_id: Option<String>,
        token_uri: Option<String>,
    ) -> Result<ServiceAccountKey, String> {
        let der = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes())
            .map_err(|e| format!("private_key is not a PEM private key: {e}"))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err("private_key must be a PKCS#8 RSA key (BEGIN PRIVATE KEY)".to_owned());
        };
        let key = RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der())
            .map_err(|e| format!("private_key is not a usable RSA key: {e}"))?;
        Ok(ServiceAccountKey {
            email,
            key_id,
            key,
            token_uri: token_uri.unwrap_or_else(|| TOKEN_URI.to_owned()),
            cache: TokenCache::default(),
        })
    }

    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), payload, &mut signature)
            .map_err(|_| ApiError::local("RSA signing with the service-account key failed"))?;
        Ok(signature)
    }

    /// The signed JWT asking for a cloud-platform token.
    fn assertion(&self) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.clone().into();
        }
        let claims = serde_json::json!({
            "iss": self.email, "scope": CLOUD_PLATFORM, "aud": self.token_uri,
            "iat": now, "exp": now + 3600,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[async_trait::async_trait]
impl TokenSource for ServiceAccountKey {
    async fn token(&self) -> Result<String, ApiError> {
        self.cache
            .get(|| async {
                let assertion = self.assertion()?;
                let form = [
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ];
                token_grant(&self.token_uri, &form).await
            })
            .await
    }
    fn describe(&self) -> String {
        format!("the service-account key of {}", self.email)
    }
    async fn email(&self) -> Option<String> {
        Some(self.email.clone())
    }
    fn sign_locally(&self, payload: &[u8]) -> Option<Result<Vec<u8>, ApiError>> {
        Some(self.sign(payload))
    }
}

/// A gcloud user login (`gcloud auth application-default login`): a refresh token.
pub struct AuthorizedUser {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    cache: TokenCache,
}

#[async_trait::async_trait]
impl TokenSource for AuthorizedUser {
    async fn token(&self) -> Result<String, ApiError> {
        self.cache
            .get(|| async {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("client_id", self.client_id.as_str()),
                    ("client_secret", self.client_secret.as_str()),
                    ("refresh_token", self.refresh_token.as_str()),
                ];
                token_grant(TOKEN_URI, &form).await
            })
            .await
    }
    fn describe(&self) -> String {
        "the gcloud application-default user login".to_owned()
    }
}

async fn token_grant(uri: &str, form: &[(&str, &str)]) -> Result<(String, Duration), ApiError> {
    let response = http_client()
        .post(uri)
        .form(form)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| ApiError::transport("the OAuth token endpoint", &e))?;
    let response = ApiError::check("the OAuth token endpoint", response).await?;
    let token: TokenResponse = response
        .json()
        .await
        .map_err(|e| ApiError::decode("the OAuth token endpoint's answer", &e.to_string()))?;
    Ok(token.into_parts())
}

/// Reads an Application Default Credentials file.
pub fn from_credentials_file(path: &std::path::Path) -> Result<Arc<dyn TokenSource>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading credentials file {}: {e}", path.display()))?;
    let file: CredentialsFile = serde_json::from_str(&text).map_err(|e| {
        format!(
            "credentials file {}: expected a service_account or authorized_user JSON: {e}",
            path.display()
        )
    })?;
    Ok(match file {
        CredentialsFile::ServiceAccount {
            client_email,
            private_key,
            private_key_id,
            token_uri,
        } => Arc::new(
            ServiceAccountKey::new(client_email, &private_key, private_key_id, token_uri)
                .map_err(|e| format!("credentials file {}: {e}", path.display()))?,
        ),
        CredentialsFile::AuthorizedUser { client_id, client_secret, refresh_token } => {
            Arc::new(AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                cache: TokenCache::default(),
            })
        }
    })
}

/// Application Default Credentials, as the module documentation lists them. A credentials file
/// that cannot be used is logged and the metadata server used instead (calls then fail naming
/// it, and `/ready` reports them).
pub fn ambient_token_source() -> Arc<dyn TokenSource> {
    if let Ok(token) = std::env::var("GOOGLE_OAUTH_ACCESS_TOKEN")
        && !token.trim().is_empty()
    {
        return Arc::new(StaticToken::new(token.trim(), None));
    }
    let explicit = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty());
    let gcloud = std::env::var_os("HOME").map(|home| {
        std::path::PathBuf::from(home).join(".config/gcloud/application_default_credentials.json")
    });
    let file = match (explicit, gcloud) {
        (Some(path), _) => Some(std::path::PathBuf::from(path)),
        (None, Some(path)) if path.exists() => Some(path),
        _ => None,
    };
    if let Some(path) = file {
        match from_credentials_file(&path) {
            Ok(source) => return source,
            Err(err) => tracing::error!(error = %err, "GCP credentials file unusable"),
        }
    }
    Arc::new(MetadataServer::from_env())
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
                    Ok(("t".to_owned(), Duration::from_secs(3600)))
                })
                .await
                .unwrap_or_default();
            assert_eq!(token, "t");
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_credentials_file_of_another_type_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("creds.json");
        std::fs::write(&path, r#"{"type":"external_account"}"#).unwrap_or_else(|e| panic!("{e}"));
        let err = from_credentials_file(&path).err().unwrap_or_default();
        assert!(err.contains("creds.json") && err.contains("service_account"), "{err}");
    }
}
