//! Registry errors with the OCI error codes, statuses and body
//! (`{"errors":[{"code","message","detail"}]}`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An OCI distribution error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RegistryError {
    /// HTTP status.
    pub status: StatusCode,
    /// OCI error code (`BLOB_UNKNOWN`, ...).
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl RegistryError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 404 `BLOB_UNKNOWN`.
    pub fn blob_unknown(digest: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {digest} is unknown to this repository"),
        )
    }

    /// 404 `BLOB_UPLOAD_UNKNOWN`.
    pub fn upload_unknown() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload session is unknown or was cancelled",
        )
    }

    /// 400 `BLOB_UPLOAD_INVALID`.
    pub fn upload_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", message)
    }

    /// 416 for a chunk that does not start where the upload ends.
    pub fn range_invalid(expected: u64) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            format!("chunk out of order: the upload continues at offset {expected}"),
        )
    }

    /// 416 for a `Content-Range` that does not parse.
    pub fn range_invalid_header(value: &str) -> Self {
        let shown: String = value.chars().take(100).collect();
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            format!("invalid Content-Range {shown:?}; expected <start>-<end>"),
        )
    }

    /// 400 `DIGEST_INVALID`.
    pub fn digest_invalid(value: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("invalid or mismatched digest {value}"),
        )
    }

    /// 404 `MANIFEST_UNKNOWN`.
    pub fn manifest_unknown(reference: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest {reference} is unknown to this repository"),
        )
    }

    /// 400 `MANIFEST_INVALID`.
    pub fn manifest_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message)
    }

    /// 400 `MANIFEST_BLOB_UNKNOWN`.
    pub fn manifest_blob_unknown(digest: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!("manifest references {digest}, which is not in this repository"),
        )
    }

    /// 400 `NAME_INVALID`.
    pub fn name_invalid(name: &str) -> Self {
        let shown: String = name.chars().take(300).collect();
        Self::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid repository name {shown:?}"),
        )
    }

    /// 404 `NAME_UNKNOWN`.
    pub fn name_unknown(name: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", format!("repository {name} is not known"))
    }

    /// 400 `TAG_INVALID`.
    pub fn tag_invalid(tag: &str) -> Self {
        let shown: String = tag.chars().take(200).collect();
        Self::new(StatusCode::BAD_REQUEST, "TAG_INVALID", format!("invalid tag {shown:?}"))
    }

    /// 400 `SIZE_INVALID`.
    pub fn size_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", message)
    }

    /// 401 `UNAUTHORIZED` (with `WWW-Authenticate`).
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required: Basic with a manager token as password",
        )
    }

    /// 403 `DENIED`.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "DENIED", message)
    }

    /// 405 `UNSUPPORTED`.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
    }

    /// 416 for an unsatisfiable `Range`.
    pub fn range_not_satisfiable(size: u64) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UNKNOWN",
            format!("requested range is outside the blob of {size} bytes"),
        )
    }

    /// 500, details only in the log.
    pub fn internal(context: impl std::fmt::Display) -> Self {
        tracing::error!(%context, "registry failure");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            "internal error; see the manager's logs",
        )
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"code": self.code, "message": self.message, "detail": {}}]});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"alien-manager\""),
            );
        }
        response
    }
}

impl From<object_store::Error> for RegistryError {
    fn from(err: object_store::Error) -> Self {
        RegistryError::internal(err)
    }
}
