//! The typed client of the alien-manager HTTP API: one [`Client`] with a method per operation
//! the `alien` CLI and the pull-mode agent use, typed with the shared bodies of `alien-core`
//! (`alien_core::api`, the domain types, the pull-mode wire types). Errors the manager answers
//! keep its code, message and hint and the HTTP status ([`ClientError::Api`]).
//!
//! [`registry`] pushes local OCI image layouts to the registry the manager names for a platform.
//!
//! It must never depend on the server crates, and never show the API key: [`ApiKey`] keeps it
//! out of `Debug` output, and errors name URLs and statuses only.

use std::time::Duration;

use alien_core::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;

mod operations;
pub mod registry;

pub use operations::{DeploymentQuery, PageParams};

/// A manager token (admin, deployment-group or deployment) used as the bearer credential. Its
/// `Debug` shows the token's kind only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key as given (surrounding whitespace removed).
    pub fn new(raw: impl Into<String>) -> ApiKey {
        ApiKey(raw.into().trim().to_owned())
    }

    /// The secret: for the `Authorization` header only; never print or log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The token's kind from its prefix (`None` when the key is not in the manager's format).
    pub fn token_type(&self) -> Option<alien_core::TokenType> {
        alien_core::TokenType::of_raw(&self.0)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.token_type() {
            Some(kind) => write!(f, "ApiKey({kind}, redacted)"),
            None => f.write_str("ApiKey(redacted)"),
        }
    }
}

/// What went wrong calling the manager.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The manager answered with an API error (its JSON body).
    #[error("{} ({status}): {}", code_name(.body.code), .body.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// The manager's error: code, message, hint.
        body: ApiError,
    },
    /// An error status without the API's error body (a proxy, a load balancer).
    #[error("the manager answered {status}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        message: String,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("cannot reach the manager at {url}: {detail}")]
    Unreachable {
        /// The URL called (never carries credentials).
        url: String,
        /// What failed.
        detail: String,
    },
    /// A success status whose body is not what the API describes.
    #[error("unexpected answer from {url}: {detail}")]
    Decode {
        /// The URL called.
        url: String,
        /// What did not parse.
        detail: String,
    },
    /// The manager URL is not usable.
    #[error("manager URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
}

/// The wire name of an error code (`DEPLOYMENT_NOT_FOUND`).
pub fn code_name(code: alien_core::ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

impl ClientError {
    /// The HTTP status the manager answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The manager's API error, when it sent one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Api { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: no answer, an unreadable answer, 5xx or 429.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Decode { .. } => true,
            Self::Api { status, .. } | Self::Http { status, .. } => {
                *status >= 500 || *status == 429
            }
            Self::BadUrl { .. } => false,
        }
    }
}

/// The manager's HTTP API. Cloning is cheap (one connection pool).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    key: ApiKey,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base.as_str()).field("key", &self.key).finish()
    }
}

/// How long one API call may take (connect, send, answer).
const TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// A client of the manager at `base_url` (`http://` or `https://`, no credentials or query)
    /// calling with `key`. Proxies from the environment apply.
    pub fn new(base_url: &str, key: ApiKey) -> Result<Client, ClientError> {
        // A URL with credentials in it is not repeated in the error.
        let shown = match url::Url::parse(base_url.trim()) {
            Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            }
            _ => base_url.to_owned(),
        };
        let bad =
            |reason: &str| ClientError::BadUrl { url: shown.clone(), reason: reason.to_owned() };
        let mut base = url::Url::parse(base_url.trim()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("must start with http:// or https://"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad("must not carry credentials (use the API key)"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        if base.cannot_be_a_base() || base.host_str().is_none() {
            return Err(bad("needs a host"));
        }
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&path);
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("alien-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { http, base, key })
    }

    /// The same manager with another key (the agent swaps its group token for its deployment's).
    pub fn with_key(&self, key: ApiKey) -> Client {
        Client { http: self.http.clone(), base: self.base.clone(), key }
    }

    /// The manager's URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The key this client calls with.
    pub fn key(&self) -> &ApiKey {
        &self.key
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub(crate) async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.send(reqwest::Method::GET, path, None::<&()>).await
    }

    pub(crate) async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// One call: JSON body when given, JSON answer (an empty answer reads as `null`).
    pub(crate) async fn send<B: Serialize, R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let url = self.url(path);
        let mut request = self.http.request(method, &url).bearer_auth(self.key.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| unreachable(&url, e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| unreachable(&url, e))?;
        if status.is_success() {
            let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(text)
                .map_err(|e| ClientError::Decode { url, detail: e.to_string() });
        }
        Err(error_answer(status.as_u16(), &bytes))
    }
}

/// A reqwest error with its causes, without the URL (signed URLs carry secrets in queries).
pub(crate) fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

/// `url` without its query (presigned URLs carry their signature there).
pub(crate) fn without_query(url: &str) -> String {
    url.split('?').next().unwrap_or_default().to_owned()
}

pub(crate) fn unreachable(url: &str, error: reqwest::Error) -> ClientError {
    ClientError::Unreachable { url: without_query(url), detail: describe(error) }
}

/// The error of a non-2xx answer: the API's body when it is one.
pub(crate) fn error_answer(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(body) => ClientError::Api { status, body },
        Err(_) => ClientError::Http {
            status,
            message: String::from_utf8_lossy(body)
                .chars()
                .take(300)
                .collect::<String>()
                .trim()
                .to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let key = ApiKey::new(format!("ax_admin_{}", "0123456789".repeat(4)));
        let client = Client::new("http://127.0.0.1:1", key.clone()).ok();
        for text in [format!("{key:?}"), format!("{client:?}")] {
            assert!(!text.contains("0123456789"), "{text}");
        }
        assert_eq!(format!("{key:?}"), "ApiKey(admin, redacted)");
    }

    #[test]
    fn manager_urls_are_checked_and_normalised() {
        let key = ApiKey::new("k");
        let client = Client::new("http://127.0.0.1:8080/", key.clone());
        assert_eq!(
            client.map(|c| c.base_url().to_owned()).ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
        let error = Client::new("http://user:s3cret@x", key.clone()).err();
        assert!(!error.map(|e| e.to_string()).unwrap_or_default().contains("s3cret"));
        for bad in ["127.0.0.1:8080", "ftp://x", "http://u:p@x", "http://x/?a=1", "not a url"] {
            assert!(
                matches!(Client::new(bad, key.clone()), Err(ClientError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_answers_keep_the_api_body_or_the_text() {
        let body = br#"{"code":"DEPLOYMENT_NOT_FOUND","message":"deployment x not found","retryable":false,"hint":"list them"}"#;
        let error = error_answer(404, body);
        let api = error.api_error().cloned();
        assert_eq!(api.as_ref().map(|a| a.code), Some(alien_core::ErrorCode::DeploymentNotFound));
        assert_eq!(api.and_then(|a| a.hint).as_deref(), Some("list them"));
        assert!(!error.is_transient());
        assert_eq!(error.to_string(), "DEPLOYMENT_NOT_FOUND (404): deployment x not found");
        let proxy = error_answer(502, b"<html>bad gateway</html>");
        assert!(
            matches!(&proxy, ClientError::Http { status: 502, message } if message.contains("bad gateway"))
        );
        assert!(proxy.is_transient());
        assert!(error_answer(429, b"").is_transient());
    }
}
