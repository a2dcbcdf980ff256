//! The API error type and its JSON body (`spec/api.md` "Errors").
//!
//! Every error the HTTP API returns has the shape
//! `{"code", "message", "retryable", "context"?, "hint"?}`. The mapping from code to HTTP status
//! lives here, once ([`ErrorCode::status`]); the server only renders it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Machine-readable error codes of the API, spelled SCREAMING_SNAKE on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, bad query, bad path parameter).
    BadRequest,
    /// The request is well-formed but violates rules; `context.errors` lists each violation.
    ValidationFailed,
    /// No valid credentials were presented.
    Unauthorized,
    /// The credentials are valid but do not allow this action.
    Forbidden,
    /// No route matches the path.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The body's content type is not accepted by this route.
    UnsupportedMediaType,
    /// The named deployment does not exist.
    DeploymentNotFound,
    /// The named deployment group does not exist.
    DeploymentGroupNotFound,
    /// The named release does not exist.
    ReleaseNotFound,
    /// The named token does not exist.
    TokenNotFound,
    /// The named command does not exist.
    CommandNotFound,
    /// The request conflicts with the current state.
    Conflict,
    /// A deployment with this name already exists in the group.
    DeploymentNameConflict,
    /// The deployment is being stepped by someone else.
    DeploymentLocked,
    /// The deployment is already being deleted.
    DeploymentAlreadyDeleting,
    /// The deployment group is full.
    MaxDeploymentsReached,
    /// The body is larger than the route accepts.
    PayloadTooLarge,
    /// Too many requests; see `Retry-After`.
    RateLimited,
    /// A dependency (store, KV, payload store) is not available.
    Unavailable,
    /// The server failed; details are in its logs, never in the response.
    InternalError,
    /// No impersonation is configured for the cloud a request needs credentials for.
    ImpersonationNotConfigured,
    /// The cloud's identity service refused to issue credentials for the target.
    ImpersonationDenied,
    /// The cloud's identity service answered with something unusable.
    ImpersonationFailed,
}

impl ErrorCode {
    /// The HTTP status this code is returned with.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::BadRequest | Self::ValidationFailed => S::BAD_REQUEST,
            Self::Unauthorized => S::UNAUTHORIZED,
            Self::Forbidden => S::FORBIDDEN,
            Self::NotFound
            | Self::DeploymentNotFound
            | Self::DeploymentGroupNotFound
            | Self::ReleaseNotFound
            | Self::TokenNotFound
            | Self::CommandNotFound => S::NOT_FOUND,
            Self::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => S::UNSUPPORTED_MEDIA_TYPE,
            Self::Conflict
            | Self::DeploymentNameConflict
            | Self::DeploymentLocked
            | Self::DeploymentAlreadyDeleting
            // A full group is the state of the group, not a bad request (spec/api.md said 400).
            | Self::MaxDeploymentsReached => S::CONFLICT,
            Self::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            Self::RateLimited => S::TOO_MANY_REQUESTS,
            Self::Unavailable => S::SERVICE_UNAVAILABLE,
            Self::InternalError => S::INTERNAL_SERVER_ERROR,
            Self::ImpersonationNotConfigured => S::NOT_IMPLEMENTED,
            Self::ImpersonationDenied | Self::ImpersonationFailed => S::BAD_GATEWAY,
        }
    }

    /// Whether a client may retry the same request later and expect a different outcome.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::DeploymentLocked | Self::RateLimited | Self::Unavailable | Self::InternalError
        )
    }

    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 24] = [
        Self::BadRequest,
        Self::ValidationFailed,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::UnsupportedMediaType,
        Self::DeploymentNotFound,
        Self::DeploymentGroupNotFound,
        Self::ReleaseNotFound,
        Self::TokenNotFound,
        Self::CommandNotFound,
        Self::Conflict,
        Self::DeploymentNameConflict,
        Self::DeploymentLocked,
        Self::DeploymentAlreadyDeleting,
        Self::MaxDeploymentsReached,
        Self::PayloadTooLarge,
        Self::RateLimited,
        Self::Unavailable,
        Self::InternalError,
        Self::ImpersonationNotConfigured,
        Self::ImpersonationDenied,
        Self::ImpersonationFailed,
    ];
}

/// One rule violation: where (`resources.api.config.ports`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldViolation {
    /// Dotted path of the offending field inside the request body.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl FieldViolation {
    /// A violation at `path` with `message`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl std::fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// An API error: the JSON body of every non-2xx response outside `/v2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// Machine-readable code; decides the HTTP status.
    pub code: ErrorCode,
    /// Human-readable explanation. Never contains SQL, paths or secrets.
    pub message: String,
    /// Whether retrying the same request may succeed.
    pub retryable: bool,
    /// Structured detail (for `VALIDATION_FAILED`: `{"errors": [{path, message}]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// What the caller can do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    /// An error with `code` and `message`; `retryable` follows the code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retryable: code.retryable(),
            context: None,
            hint: None,
        }
    }

    /// Adds a hint telling the caller what to do.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds structured context.
    #[must_use]
    pub fn with_context(mut self, context: Value) -> Self {
        self.context = Some(context);
        self
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> http::StatusCode {
        self.code.status()
    }

    /// `400 BAD_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `400 VALIDATION_FAILED` listing every violation in `context.errors`.
    pub fn validation(violations: Vec<FieldViolation>) -> Self {
        let message = match violations.as_slice() {
            [one] => format!("validation failed: {one}"),
            many => format!("validation failed with {} errors", many.len()),
        };
        Self::new(ErrorCode::ValidationFailed, message)
            .with_context(json!({ "errors": violations }))
    }

    /// `500 INTERNAL_ERROR` with a generic message; log the cause separately.
    pub fn internal() -> Self {
        Self::new(ErrorCode::InternalError, "internal error; see the manager's logs")
    }

    /// The violations of a `VALIDATION_FAILED` error (empty for other errors).
    pub fn violations(&self) -> Vec<FieldViolation> {
        self.context
            .as_ref()
            .and_then(|c| c.get("errors"))
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_an_error_status_and_a_screaming_snake_name() {
        for code in ErrorCode::ALL {
            let status = code.status();
            assert!(status.is_client_error() || status.is_server_error(), "{code:?}");
            let name = serde_json::to_value(code).unwrap();
            let name = name.as_str().unwrap();
            assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{name}");
            let back: ErrorCode = serde_json::from_value(json!(name)).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn not_found_codes_end_in_not_found_and_map_to_404() {
        for code in ErrorCode::ALL {
            let name = serde_json::to_value(code).unwrap().as_str().unwrap().to_owned();
            assert_eq!(name.ends_with("NOT_FOUND"), code.status() == http::StatusCode::NOT_FOUND);
        }
    }

    #[test]
    fn validation_error_body_lists_every_violation() {
        let err = ApiError::validation(vec![
            FieldViolation::new("a", "x"),
            FieldViolation::new("b", "y"),
        ]);
        let body = serde_json::to_value(&err).unwrap();
        assert_eq!(body["code"], "VALIDATION_FAILED");
        assert_eq!(body["retryable"], false);
        assert_eq!(body["context"]["errors"][1]["path"], "b");
        assert!(body.get("hint").is_none());
        assert_eq!(err.violations().len(), 2);
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn internal_error_is_retryable_and_generic() {
        let err = ApiError::internal();
        assert_eq!(err.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.retryable);
        assert_eq!(serde_json::to_value(&err).unwrap()["code"], "INTERNAL_ERROR");
    }
}
