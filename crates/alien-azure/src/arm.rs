//! One HTTP stack for Azure Resource Manager (and every other Azure REST call of the Entra ID /
//! ARM side of this crate): the workspace's reqwest (rustls/ring), a bearer token from a
//! [`TokenSource`], Azure's error body (`{"error": {"code", "message"}}`) turned into an
//! [`ArmError`] that names the call, and ARM's long-running operations (`Azure-AsyncOperation`,
//! else `Location`, else the resource's own `provisioningState`).
//!
//! The ARM endpoint is `https://management.azure.com` unless `AZURE_RESOURCE_MANAGER_ENDPOINT`
//! (a base URL) says otherwise; the tests point it at the contract stub.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::entra::TokenSource;

/// The public cloud's Resource Manager.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
/// The variable that overrides the Resource Manager endpoint (a base URL).
pub const ARM_ENDPOINT_VARIABLE: &str = "AZURE_RESOURCE_MANAGER_ENDPOINT";
/// The audience (resource) of ARM tokens.
pub const ARM_RESOURCE: &str = "https://management.azure.com/";

/// The process's one HTTP client for Azure's control plane (connection pools are per client).
pub fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// `value` (a URL) without a trailing slash.
pub fn base_url(value: &str) -> String {
    value.trim().trim_end_matches('/').to_owned()
}

/// The ARM base URL: `AZURE_RESOURCE_MANAGER_ENDPOINT`, else [`DEFAULT_ARM_ENDPOINT`].
pub fn arm_endpoint_from_env() -> String {
    match std::env::var(ARM_ENDPOINT_VARIABLE) {
        Ok(value) if !value.trim().is_empty() => base_url(&value),
        _ => DEFAULT_ARM_ENDPOINT.to_owned(),
    }
}

/// A failed Azure call: which call, the HTTP status when there was an answer, Azure's error
/// code (`ResourceNotFound`, `RoleAssignmentExists`, `invalid_client`...) and message. Never
/// holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct ArmError {
    /// The call, e.g. `ARM create container app api`.
    pub what: String,
    /// The HTTP status; `None` when no answer came or before sending.
    pub http_status: Option<u16>,
    /// Azure's error code, when given.
    pub code: Option<String>,
    /// What went wrong, with the status and code.
    pub message: String,
}

/// ARM's `{"error": {"code", "message"}}`, or Entra ID's `{"error", "error_description"}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Arm {
        error: ArmErrorDetail,
    },
    OAuth {
        error: String,
        #[serde(default)]
        error_description: String,
    },
}

#[derive(Deserialize)]
struct ArmErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: String,
}

impl ArmError {
    /// No answer came.
    pub fn transport(what: &str, err: &reqwest::Error) -> ArmError {
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        // reqwest's Display names the URL, which never carries a token here.
        ArmError {
            what: what.to_owned(),
            http_status: None,
            code: None,
            message: format!("{kind}: {err}"),
        }
    }

    /// An answer that is not what the API documents.
    pub fn decode(what: &str, detail: &str) -> ArmError {
        ArmError {
            what: what.to_owned(),
            http_status: None,
            code: None,
            message: format!("unexpected answer: {detail}"),
        }
    }

    /// A failure before anything was sent.
    pub fn local(what: &str, message: &str) -> ArmError {
        ArmError {
            what: what.to_owned(),
            http_status: None,
            code: Some("Local".to_owned()),
            message: message.to_owned(),
        }
    }

    /// `response` when it succeeded, else its error.
    pub async fn check(
        what: &str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, ArmError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Err(ArmError::from_body(what, status, &text))
    }

    /// The error of an answer with `status` and body `text`.
    pub fn from_body(what: &str, status: u16, text: &str) -> ArmError {
        let (code, detail) = match serde_json::from_str::<ErrorBody>(text) {
            Ok(ErrorBody::Arm { error }) => (error.code, error.message),
            Ok(ErrorBody::OAuth { error, error_description }) => (Some(error), error_description),
            Err(_) => (None, text.chars().take(300).collect::<String>()),
        };
        let mut message = format!("HTTP {status}");
        if let Some(code) = &code {
            message.push(' ');
            message.push_str(code);
        }
        if !detail.trim().is_empty() {
            message.push_str(": ");
            message.push_str(detail.trim());
        }
        ArmError { what: what.to_owned(), http_status: Some(status), code, message }
    }

    /// Whether trying again later may succeed (no answer, 429, 5xx).
    pub fn transient(&self) -> bool {
        match self.http_status {
            None => {
                self.code.as_deref() != Some("Local")
                    && !self.message.starts_with("unexpected answer")
            }
            Some(code) => code == 429 || code >= 500,
        }
    }

    /// 404.
    pub fn not_found(&self) -> bool {
        self.http_status == Some(404)
    }

    /// 409.
    pub fn conflict(&self) -> bool {
        self.http_status == Some(409)
    }

    /// 401 or 403, or Entra ID refusing the client (`invalid_client`, `unauthorized_client`,
    /// `invalid_grant`).
    pub fn denied(&self) -> bool {
        matches!(self.http_status, Some(401 | 403))
            || matches!(
                self.code.as_deref(),
                Some("invalid_client" | "unauthorized_client" | "invalid_grant")
            )
    }
}

/// Azure Resource Manager at its endpoint, called as one identity.
#[derive(Clone)]
pub struct Arm {
    base: String,
    tokens: Arc<dyn TokenSource>,
}

impl std::fmt::Debug for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arm")
            .field("base", &self.base)
            .field("as", &self.tokens.describe())
            .finish()
    }
}

/// What a long-running operation ended as.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// It succeeded; the final resource or result body when one was read (`Value::Null`
    /// otherwise).
    Succeeded(Value),
    /// It was still running when the wait ended: the URL to poll again (persist it and
    /// come back).
    Running(String),
}

impl Arm {
    /// ARM at `base` (e.g. [`DEFAULT_ARM_ENDPOINT`]) as `tokens` (ARM-audience tokens).
    pub fn new(base: &str, tokens: Arc<dyn TokenSource>) -> Arm {
        Arm { base: base_url(base), tokens }
    }

    /// The same endpoint called as another identity.
    pub fn with_tokens(&self, tokens: Arc<dyn TokenSource>) -> Arm {
        Arm { base: self.base.clone(), tokens }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path_and_query` (starting with `/`), or to an absolute URL as given (the
    /// operation URLs ARM hands back), not yet authorized.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        if path.starts_with("http://") || path.starts_with("https://") {
            http_client().request(method, path)
        } else {
            http_client().request(method, format!("{}{path}", self.base))
        }
    }

    /// Sends `request` with the bearer token; the response whatever its status.
    pub async fn send_unchecked(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ArmError> {
        let token = self.tokens.token().await.map_err(|mut e| {
            e.message = format!("getting an access token ({}): {}", e.what, e.message);
            e.what = what.to_owned();
            e
        })?;
        request.bearer_auth(token.secret()).send().await.map_err(|e| ArmError::transport(what, &e))
    }

    /// Sends `request` with the bearer token: the response when it succeeded, else an
    /// [`ArmError`] naming `what`.
    pub async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ArmError> {
        let response = self.send_unchecked(what, request).await?;
        ArmError::check(what, response).await
    }

    /// A JSON call: `body` (when given) as JSON, the answer decoded (an empty answer as `{}`
    /// or `null`).
    pub async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ArmError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(what, request).await?;
        decode(what, response).await
    }

    /// Starts a long-running call (`PUT`, `PATCH`, `DELETE`) and waits up to `timeout` for it:
    /// [`Completion::Succeeded`] with the final body, [`Completion::Running`] with the URL to
    /// poll when it is still going, or the operation's error naming `what`.
    pub async fn long_running(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Completion, ArmError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(what, request).await?;
        let poll = operation_url(&response);
        let status = response.status().as_u16();
        let first: Value = decode(what, response).await?;
        match poll {
            Some(url) => self.wait(what, &url, timeout).await,
            None if status == 202 => Ok(Completion::Succeeded(Value::Null)),
            None => Ok(Completion::Succeeded(first)),
        }
    }

    /// Starts a long-running call without waiting: the answer's body (`Value::Null` when
    /// empty), its status and the operation URL to follow (`Azure-AsyncOperation`, else
    /// `Location`), if any.
    pub async fn start(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Started, ArmError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(what, request).await?;
        let operation = operation_url(&response);
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| ArmError::transport(what, &e))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ArmError::decode(what, &e.to_string()))?
        };
        Ok(Started { status, body, operation })
    }

    /// Reads operation `url` once: where it stands.
    pub async fn poll(&self, what: &str, url: &str) -> Result<OperationState, ArmError> {
        let response = self.send(what, self.request(reqwest::Method::GET, url)).await?;
        let code = response.status().as_u16();
        let body: Value = decode(what, response).await?;
        Ok(operation_state(code, &body))
    }

    /// Polls operation `url` (an `Azure-AsyncOperation` or `Location` URL) until it ends or
    /// `timeout` passes.
    pub async fn wait(
        &self,
        what: &str,
        url: &str,
        timeout: Duration,
    ) -> Result<Completion, ArmError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            let response = self.send(what, self.request(reqwest::Method::GET, url)).await?;
            let code = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body: Value = decode(what, response).await?;
            match operation_state(code, &body) {
                OperationState::Succeeded => return Ok(Completion::Succeeded(body)),
                OperationState::Failed(message) => {
                    let code = body
                        .pointer("/error/code")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| Some("OperationFailed".to_owned()));
                    return Err(ArmError {
                        what: what.to_owned(),
                        http_status: None,
                        code,
                        message: format!("the operation failed: {message}"),
                    });
                }
                OperationState::Running => {}
            }
            if let Some(secs) = retry_after {
                delay = Duration::from_secs(secs).min(Duration::from_secs(10));
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Ok(Completion::Running(url.to_owned()));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

async fn decode<T: DeserializeOwned>(
    what: &str,
    response: reqwest::Response,
) -> Result<T, ArmError> {
    let bytes = response.bytes().await.map_err(|e| ArmError::transport(what, &e))?;
    if bytes.is_empty() {
        return serde_json::from_slice(b"{}")
            .or_else(|_| serde_json::from_slice(b"null"))
            .map_err(|e| ArmError::decode(what, &e.to_string()));
    }
    serde_json::from_slice(&bytes).map_err(|e| ArmError::decode(what, &e.to_string()))
}

/// The URL to poll for a long-running call: `Azure-AsyncOperation`, else `Location`.
fn operation_url(response: &reqwest::Response) -> Option<String> {
    ["azure-asyncoperation", "location"].iter().find_map(|name| {
        response.headers().get(*name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    })
}

/// The answer to the start of a long-running call.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The HTTP status (200, 201, 202, 204).
    pub status: u16,
    /// The body, `Value::Null` when empty.
    pub body: Value,
    /// The operation URL to follow, if any.
    pub operation: Option<String>,
}

/// Where an operation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationState {
    /// It ended well.
    Succeeded,
    /// It failed (or was canceled): why.
    Failed(String),
    /// It is still running.
    Running,
}

/// An operation read: an `Azure-AsyncOperation` status body (`status`), a resource
/// (`properties.provisioningState`), or a `Location` answer (202 while running).
fn operation_state(http: u16, body: &Value) -> OperationState {
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .or_else(|| body.pointer("/properties/provisioningState").and_then(Value::as_str));
    match status.map(str::to_ascii_lowercase).as_deref() {
        Some("succeeded") => OperationState::Succeeded,
        Some("failed" | "canceled" | "cancelled") => OperationState::Failed(
            body.pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or(status.unwrap_or("failed"))
                .to_owned(),
        ),
        Some(_) => OperationState::Running,
        None if http == 202 => OperationState::Running,
        None => OperationState::Succeeded,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn azure_and_entra_error_bodies_are_read() {
        let arm = ArmError::from_body(
            "ARM get app",
            404,
            r#"{"error":{"code":"ResourceNotFound","message":"gone"}}"#,
        );
        assert_eq!(arm.code.as_deref(), Some("ResourceNotFound"));
        assert_eq!(arm.to_string(), "ARM get app: HTTP 404 ResourceNotFound: gone");
        assert!(arm.not_found() && !arm.transient());
        let entra = ArmError::from_body(
            "Entra ID token",
            400,
            r#"{"error":"invalid_client","error_description":"AADSTS700016"}"#,
        );
        assert!(entra.denied(), "{entra}");
        assert!(ArmError::from_body("x", 503, "busy").transient());
        assert!(!ArmError::local("x", "y").transient());
    }

    #[test]
    fn operation_states() {
        assert_eq!(
            operation_state(200, &json!({"status": "Succeeded"})),
            OperationState::Succeeded
        );
        assert_eq!(operation_state(200, &json!({"status": "InProgress"})), OperationState::Running);
        assert_eq!(
            operation_state(200, &json!({"status": "Failed", "error": {"message": "no"}})),
            OperationState::Failed("no".into())
        );
        let resource = json!({"properties": {"provisioningState": "InProgress"}});
        assert_eq!(operation_state(200, &resource), OperationState::Running);
        assert_eq!(operation_state(202, &json!({})), OperationState::Running);
        assert_eq!(operation_state(200, &json!({})), OperationState::Succeeded);
    }
}
