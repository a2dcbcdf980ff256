//! Rendering [`ApiError`] as an HTTP response, and turning every error response that is not yet
//! JSON (axum rejections, body limits, timeouts, unknown routes) into the API's JSON error body.

use alien_core::{ApiError, ErrorCode};
use axum::body::Body;
use axum::extract::{FromRequest, Request, rejection::JsonRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

/// An [`ApiError`] on its way out as a response.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let mut response = (status, axum::Json(&self.0)).into_response();
        let code =
            serde_json::to_value(self.0.code).ok().and_then(|v| v.as_str().map(str::to_owned));
        if let Some(code) = code {
            response.extensions_mut().insert(crate::api::audit::AuditOutcome(code));
        }
        if self.0.code == ErrorCode::RateLimited {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A JSON body extractor whose rejections are API errors: malformed JSON -> 400 `BAD_REQUEST`,
/// wrong shape -> 400 `VALIDATION_FAILED` naming the field, wrong content type -> 415, too large -> 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(HttpError(json_rejection(rejection))),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // axum's message is "Failed to deserialize ...: <path>: <serde message>".
            let detail = e.body_text();
            let detail =
                detail.split_once(": ").map_or(detail.as_str(), |(_, rest)| rest).to_owned();
            let (path, message) = match detail.split_once(": ") {
                Some((path, message)) if !path.contains(' ') => {
                    (path.to_owned(), message.to_owned())
                }
                _ => (String::new(), detail.clone()),
            };
            ApiError::validation(vec![alien_core::FieldViolation::new(path, message)])
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("malformed JSON body: {}", inner(&e.body_text())))
                .with_hint("send a valid JSON document")
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            too_large()
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

fn inner(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, rest)| rest)
}

fn too_large() -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, "request body is larger than this route accepts")
        .with_hint("see [server] max-body-bytes")
}

/// Marks an error response whose body is already in the protocol's own format (an OTLP
/// `google.rpc.Status`, say): [`json_error_bodies`] leaves it alone.
#[derive(Debug, Clone, Copy)]
pub struct KeepErrorBody;

/// Middleware: an error response without a JSON body gets the API's JSON error body.
pub async fn json_error_bodies(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || is_json(&response)
        || response.extensions().get::<KeepErrorBody>().is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Bodies of error responses made by layers are short texts; read a bounded amount.
    let text = match http_body_util::Limited::new(body, 4096).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    let err = match status {
        StatusCode::NOT_FOUND => {
            ApiError::new(ErrorCode::NotFound, format!("no route for {method} {path}"))
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {path}"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            if text.is_empty() { "unsupported content type".to_owned() } else { text },
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::new(ErrorCode::Unavailable, "the request took too long and was cancelled")
        }
        StatusCode::UNAUTHORIZED => {
            ApiError::new(ErrorCode::Unauthorized, "missing or invalid token")
        }
        StatusCode::FORBIDDEN => ApiError::new(ErrorCode::Forbidden, "not allowed"),
        s if s.is_server_error() => ApiError::internal(),
        _ => ApiError::bad_request(if text.is_empty() { "bad request".to_owned() } else { text }),
    };
    let mut out = HttpError(err).into_response();
    // Keep the status a layer chose (e.g. 408) only when it maps to the same class of error.
    *out.status_mut() = if status == StatusCode::REQUEST_TIMEOUT {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        out.status()
    };
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// The body of a panic response: a generic 500 (the panic is logged, never returned).
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    HttpError(ApiError::internal()).into_response()
}
