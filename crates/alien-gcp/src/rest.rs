//! One HTTP stack for every Google API of this crate: the workspace's reqwest (rustls/ring), a
//! bearer token from a [`TokenSource`] (none for emulators), Google's JSON error body turned into
//! an [`ApiError`] that names the call, and long-running operations.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::TokenSource;
use crate::config::{Endpoint, GcpSettings, Service};

/// The process's one HTTP client for Google APIs (connection pools are per client).
pub fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// A failed call to a Google API: which call, the HTTP status and Google's status name when
/// there was an answer, and Google's message. Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct ApiError {
    /// The call, e.g. `Firestore commit`.
    pub what: String,
    /// The HTTP status, `None` when no answer came (connection, timeout) or before sending.
    pub http_status: Option<u16>,
    /// Google's status name (`NOT_FOUND`, `ALREADY_EXISTS`, `ABORTED`...), when given.
    pub status: Option<String>,
    /// What went wrong, with the status.
    pub message: String,
}

/// `{"error": {"code", "message", "status"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: Option<String>,
}

impl ApiError {
    /// No answer came.
    pub fn transport(what: &str, err: &reqwest::Error) -> ApiError {
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        // reqwest's Display names the URL, which never carries a token here.
        ApiError {
            what: what.to_owned(),
            http_status: None,
            status: None,
            message: format!("{kind}: {err}"),
        }
    }

    /// An answer that is not what the API documents.
    pub fn decode(what: &str, detail: &str) -> ApiError {
        ApiError {
            what: what.to_owned(),
            http_status: None,
            status: None,
            message: format!("unexpected answer: {detail}"),
        }
    }

    /// A failure before anything was sent.
    pub fn local(message: &str) -> ApiError {
        ApiError {
            what: "GCP".to_owned(),
            http_status: None,
            status: None,
            message: message.to_owned(),
        }
    }

    /// `response` when it succeeded, else its error.
    pub async fn check(
        what: &str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, ApiError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let code = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let (status, detail) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error.status, body.error.message),
            Err(_) => (None, text.chars().take(300).collect::<String>()),
        };
        let mut message = format!("HTTP {code}");
        if let Some(status) = &status {
            message.push(' ');
            message.push_str(status);
        }
        if !detail.trim().is_empty() {
            message.push_str(": ");
            message.push_str(detail.trim());
        }
        Err(ApiError { what: what.to_owned(), http_status: Some(code), status, message })
    }

    /// Whether trying again later may succeed (no answer, 429, 5xx, `UNAVAILABLE`).
    pub fn transient(&self) -> bool {
        match self.http_status {
            None => self.what != "GCP" && !self.message.starts_with("unexpected answer"),
            Some(code) => code == 429 || code >= 500,
        }
    }

    /// 404.
    pub fn not_found(&self) -> bool {
        self.http_status == Some(404)
    }

    /// 409 (exists, or `ABORTED` on Firestore).
    pub fn conflict(&self) -> bool {
        self.http_status == Some(409)
    }

    /// 401 or 403: the identity may not do this.
    pub fn denied(&self) -> bool {
        matches!(self.http_status, Some(401 | 403))
    }
}

/// One Google API at its endpoint, called as one identity.
#[derive(Clone)]
pub struct Api {
    endpoint: Endpoint,
    tokens: Arc<dyn TokenSource>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("endpoint", &self.endpoint)
            .field("as", &self.tokens.describe())
            .finish()
    }
}

impl Api {
    /// `service` as the settings say, with the manager's own identity.
    pub fn new(settings: &GcpSettings, service: Service) -> Api {
        Api { endpoint: settings.endpoint(service), tokens: settings.tokens.clone() }
    }

    /// The same API called as `tokens` (an impersonated identity).
    pub fn with_tokens(&self, tokens: Arc<dyn TokenSource>) -> Api {
        Api { endpoint: self.endpoint.clone(), tokens }
    }

    /// The base URL, e.g. `https://run.googleapis.com`.
    pub fn base(&self) -> &str {
        &self.endpoint.base
    }

    /// Whether this is an emulator (no token sent).
    pub fn emulator(&self) -> bool {
        self.endpoint.emulator
    }

    /// The identity calls are made as.
    pub fn tokens(&self) -> &Arc<dyn TokenSource> {
        &self.tokens
    }

    /// A request to `path` (starting with `/`, may carry a query), not yet authorized.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        http_client().request(method, format!("{}{path}", self.endpoint.base))
    }

    /// Sends `request` with the bearer token (none for an emulator); the response when it
    /// succeeded, else an [`ApiError`] naming `what`.
    pub async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let request = if self.endpoint.emulator {
            request
        } else {
            let token = self.tokens.token().await.map_err(|mut e| {
                e.message = format!("getting an access token ({}): {}", e.what, e.message);
                e.what = what.to_owned();
                e
            })?;
            request.bearer_auth(token)
        };
        let response = request.send().await.map_err(|e| ApiError::transport(what, &e))?;
        ApiError::check(what, response).await
    }

    /// A JSON call: `body` (when given) as JSON, the answer decoded.
    pub async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(what, request).await?;
        let bytes = response.bytes().await.map_err(|e| ApiError::transport(what, &e))?;
        if bytes.is_empty() {
            return serde_json::from_slice(b"{}")
                .or_else(|_| serde_json::from_slice(b"null"))
                .map_err(|e| ApiError::decode(what, &e.to_string()));
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::decode(what, &e.to_string()))
    }
}

/// A long-running operation (`google.longrunning.Operation`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Operation {
    /// `projects/{p}/locations/{l}/operations/{id}`.
    #[serde(default)]
    pub name: String,
    /// Whether it has finished.
    #[serde(default)]
    pub done: bool,
    /// The result when it succeeded.
    #[serde(default)]
    pub response: Option<Value>,
    /// The failure when it failed (`{code, message}`).
    #[serde(default)]
    pub error: Option<OperationError>,
}

/// `google.rpc.Status` of a failed operation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct OperationError {
    /// The gRPC code.
    #[serde(default)]
    pub code: i32,
    /// What failed.
    #[serde(default)]
    pub message: String,
}

impl Api {
    /// Polls operation `name` under `/{version}/` until it is done or `timeout` passes: its
    /// response, or its error naming `what`. A timeout returns the operation as last read
    /// (`done: false`).
    pub async fn wait_operation(
        &self,
        what: &str,
        version: &str,
        mut operation: Operation,
        timeout: Duration,
    ) -> Result<Operation, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(50);
        while !operation.done {
            if tokio::time::Instant::now() + delay > deadline || operation.name.is_empty() {
                return Ok(operation);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            let path = format!("/{version}/{}", operation.name);
            operation = self.json(what, reqwest::Method::GET, &path, None).await?;
        }
        if let Some(error) = &operation.error {
            return Err(ApiError {
                what: what.to_owned(),
                http_status: None,
                status: Some(format!("code {}", error.code)),
                message: format!("operation {} failed: {}", operation.name, error.message),
            });
        }
        Ok(operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_means_no_answer_429_or_5xx() {
        let e = |code: Option<u16>| ApiError {
            what: "x".into(),
            http_status: code,
            status: None,
            message: String::new(),
        };
        assert!(e(None).transient() && e(Some(429)).transient() && e(Some(503)).transient());
        assert!(!e(Some(404)).transient() && !e(Some(409)).transient());
        assert!(!ApiError::decode("x", "y").transient() && !ApiError::local("z").transient());
    }
}
