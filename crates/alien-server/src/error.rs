//! Errors at the edge, in one place: every domain error (the store's, the commands protocol's,
//! the payload store's) mapped to the API's error and so to its HTTP status ([`store_error`],
//! [`command_error`], [`payload_error`], tested exhaustively below), [`ApiError`] rendered as a
//! response, and every error response that is not yet JSON (axum rejections, body limits,
//! timeouts, unknown routes) given the API's JSON error body.

use alien_commands::{CommandError, PayloadError};
use alien_core::FieldViolation;
use alien_core::{ApiError, ErrorCode};
use alien_impersonation::ImpersonationError;
use alien_store::{Entity, StoreError};
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

/// A store error as the API's error: which code (and so which HTTP status) each store outcome
/// answers. A refused transition (the deployment's status does not take the event) is 409
/// `CONFLICT` on every route, as is a conditional write that lost a race.
pub fn store_error(err: StoreError) -> ApiError {
    match &err {
        StoreError::NotFound { entity, id } => {
            let code = match entity {
                Entity::Deployment => ErrorCode::DeploymentNotFound,
                Entity::DeploymentGroup => ErrorCode::DeploymentGroupNotFound,
                Entity::Release => ErrorCode::ReleaseNotFound,
                Entity::Token => ErrorCode::TokenNotFound,
            };
            ApiError::new(code, format!("{entity} {id} not found"))
        }
        StoreError::NameConflict { .. } => {
            ApiError::new(ErrorCode::DeploymentNameConflict, err.to_string())
                .with_hint("choose another name or delete the existing deployment")
        }
        StoreError::GroupNameConflict { .. } => ApiError::new(ErrorCode::Conflict, err.to_string()),
        StoreError::MaxDeploymentsReached { .. } => {
            ApiError::new(ErrorCode::MaxDeploymentsReached, err.to_string())
                .with_hint("raise the group's maxDeployments or delete deployments")
        }
        StoreError::InvalidTransition(e) => refused_transition(e),
        StoreError::Conflict(_) => ApiError::new(ErrorCode::Conflict, err.to_string()),
        StoreError::BadCursor(_) => ApiError::bad_request("invalid cursor").with_hint(
            "pass the nextCursor of the previous page unchanged, or no cursor for the first page",
        ),
        StoreError::Locked(_) => ApiError::new(ErrorCode::DeploymentLocked, err.to_string()),
        StoreError::LastAdminToken(_) => ApiError::new(ErrorCode::Conflict, err.to_string())
            .with_hint(
                "keep it, or replace every admin token offline with `alien-manager admin-token reset`",
            ),
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %err, "store unavailable");
            ApiError::new(ErrorCode::Unavailable, "the database is unavailable; try again")
        }
        StoreError::WrongKey(_) | StoreError::Corrupt(_) | StoreError::Database(_) => {
            tracing::error!(error = %err, "store failure");
            ApiError::internal()
        }
    }
}

/// An event the deployment's status does not take: 409 `CONFLICT` naming the status, on every
/// route (a user's retry or redeploy, an agent's or a driver's report).
pub fn refused_transition(err: &alien_core::status::TransitionError) -> ApiError {
    ApiError::new(ErrorCode::Conflict, err.to_string()).with_hint(
        "the deployment's status does not allow this now; read it and try what it allows",
    )
}

/// A commands-protocol error as the API's error.
pub fn command_error(err: CommandError) -> ApiError {
    match err {
        CommandError::Invalid { field, message } => {
            ApiError::validation(vec![FieldViolation::new(field, message)])
        }
        CommandError::TooLarge(_) => ApiError::new(ErrorCode::PayloadTooLarge, err.to_string())
            .with_hint("send the params with mode \"storage\" and upload them to the returned URL"),
        CommandError::PayloadTooLarge { .. } => {
            ApiError::new(ErrorCode::PayloadTooLarge, err.to_string()).with_hint(
                "upload no more than the size the command declared; the manager's limit is [commands] max-payload-bytes",
            )
        }
        CommandError::QuotaExceeded { .. } => {
            ApiError::new(ErrorCode::PayloadTooLarge, err.to_string()).with_hint(
                "ended commands free their payloads after [commands] retention-secs; the quota is [commands] deployment-quota-bytes",
            )
        }
        CommandError::NotFound(_) | CommandError::LeaseNotFound(_) => {
            ApiError::new(ErrorCode::CommandNotFound, err.to_string())
        }
        CommandError::DeploymentNotFound(_) => {
            ApiError::new(ErrorCode::DeploymentNotFound, err.to_string())
        }
        CommandError::Conflict(_) => ApiError::new(ErrorCode::Conflict, err.to_string()),
        CommandError::Unavailable(_) => {
            tracing::warn!(error = %err, "commands backend unavailable");
            ApiError::new(ErrorCode::Unavailable, "the commands backend is unavailable; try again")
        }
    }
}

/// A payload-store error (presigned URLs) as the API's error.
pub fn payload_error(err: PayloadError) -> ApiError {
    match err {
        PayloadError::BadSignature => ApiError::new(ErrorCode::Unauthorized, err.to_string()),
        PayloadError::InvalidKey(_) => ApiError::bad_request(err.to_string()),
        PayloadError::NotFound(_) => ApiError::new(ErrorCode::NotFound, err.to_string()),
        PayloadError::Unavailable(_) | PayloadError::Backend(_) => {
            tracing::warn!(error = %err, "payload store failed");
            ApiError::new(ErrorCode::Unavailable, "the payload store is unavailable; try again")
        }
    }
}

/// An impersonation error as the API's error.
pub fn impersonation_error(err: ImpersonationError) -> ApiError {
    let code = match &err {
        ImpersonationError::NotConfigured { .. } => ErrorCode::ImpersonationNotConfigured,
        ImpersonationError::InvalidTarget { field, message } => {
            return ApiError::validation(vec![FieldViolation::new(field.clone(), message.clone())])
                .with_hint("the deployment's target does not have the shape its platform needs");
        }
        ImpersonationError::Denied { .. } => ErrorCode::ImpersonationDenied,
        ImpersonationError::Unavailable { .. } => ErrorCode::Unavailable,
        ImpersonationError::Backend { .. } => ErrorCode::ImpersonationFailed,
    };
    ApiError::new(code, err.to_string())
}

impl From<StoreError> for HttpError {
    fn from(err: StoreError) -> Self {
        Self(store_error(err))
    }
}

/// An [`ApiError`] on its way out as a response.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

/// Longest quoted value an error message repeats back, in characters.
const QUOTED_MAX: usize = 64;
/// Longest error text answered, in characters.
const TEXT_MAX: usize = 1024;

/// Error text as it is answered: a value quoted in it (between `"` or backticks) longer than
/// [`QUOTED_MAX`] characters keeps only its beginning, and the whole text at most [`TEXT_MAX`]
/// characters, so an error never echoes a large input back (a 4 MB body, say).
pub fn clip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len().min(TEXT_MAX + 8));
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let closing =
            if c == '"' || c == '`' { chars[i + 1..].iter().position(|&d| d == c) } else { None };
        match closing {
            Some(len) if len > QUOTED_MAX => {
                out.push(c);
                out.extend(&chars[i + 1..i + 1 + QUOTED_MAX]);
                out.push('…');
                out.push(c);
                i += len + 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if out.chars().count() > TEXT_MAX {
        out = out.chars().take(TEXT_MAX).collect();
        out.push('…');
    }
    out
}

/// [`clip`] on every string of an error's context (field violations, reasons).
fn clip_context(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => *text = clip(text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(clip_context),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(clip_context),
        _ => {}
    }
}

impl IntoResponse for HttpError {
    fn into_response(mut self) -> Response {
        self.0.message = clip(&self.0.message);
        if let Some(context) = self.0.context.as_mut() {
            clip_context(context);
        }
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
        if !json_content_type(req.headers()) {
            return Err(HttpError(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected `Content-Type: application/json`",
            )));
        }
        let body = axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
            HttpError(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request(rejection.body_text())
            })
        })?;
        decode_json(&body).map(Self).map_err(HttpError)
    }
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON body as `T` ([`crate::strict_json`]): malformed JSON is 400 `BAD_REQUEST`, the wrong
/// shape 400 `VALIDATION_FAILED` naming the field.
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    crate::strict_json::from_slice(body).map_err(|err| match err {
        crate::strict_json::BodyError::Syntax(message) => {
            ApiError::bad_request(format!("malformed JSON body: {message}"))
                .with_hint("send a valid JSON document")
        }
        crate::strict_json::BodyError::Data { path, message } => {
            ApiError::validation(vec![alien_core::FieldViolation::new(path, message)])
        }
    })
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

#[cfg(test)]
mod clip_tests {
    use super::clip;

    #[test]
    fn long_quoted_values_are_cut_short_values_and_the_rest_stay() {
        let long = "A".repeat(4 << 20);
        let message = format!("invalid type: string \"{long}\", expected struct CommandResponse");
        let clipped = clip(&message);
        assert!(clipped.len() < 200, "{}", clipped.len());
        assert!(clipped.starts_with(&format!("invalid type: string \"{}…\"", "A".repeat(64))));
        assert!(clipped.ends_with(", expected struct CommandResponse"), "{clipped}");
        let short = "unknown variant `sucess`, expected `success` or `error`";
        assert_eq!(clip(short), short);
        let text = "x".repeat(5000);
        assert_eq!(clip(&text).chars().count(), 1025, "the whole text is bounded too");
        assert_eq!(clip("a \" lone quote"), "a \" lone quote");
        assert_eq!(clip("é`ü`"), "é`ü`");
    }
}

#[cfg(test)]
mod mapping_tests {
    use alien_core::{DeploymentEvent, DeploymentStatus, Id, IdKind};
    use axum::http::StatusCode;

    use super::*;

    /// Fails to compile when a variant is added: add it to the table below too.
    fn covered(err: &StoreError) {
        match err {
            StoreError::NotFound { .. }
            | StoreError::NameConflict { .. }
            | StoreError::GroupNameConflict { .. }
            | StoreError::MaxDeploymentsReached { .. }
            | StoreError::InvalidTransition(_)
            | StoreError::Conflict(_)
            | StoreError::Locked(_)
            | StoreError::LastAdminToken(_)
            | StoreError::WrongKey(_)
            | StoreError::Unavailable(_)
            | StoreError::BadCursor(_)
            | StoreError::Corrupt(_)
            | StoreError::Database(_) => {}
        }
    }

    #[test]
    fn every_store_error_has_its_code_and_status() {
        let group = Id::new(IdKind::DeploymentGroup);
        let refused = DeploymentStatus::Running.transition(DeploymentEvent::Retry).unwrap_err();
        let not_found = |entity| StoreError::NotFound { entity, id: "x".into() };
        let table = [
            (not_found(Entity::Deployment), ErrorCode::DeploymentNotFound, 404),
            (not_found(Entity::DeploymentGroup), ErrorCode::DeploymentGroupNotFound, 404),
            (not_found(Entity::Release), ErrorCode::ReleaseNotFound, 404),
            (not_found(Entity::Token), ErrorCode::TokenNotFound, 404),
            (
                StoreError::NameConflict { name: "a".into(), group: group.clone() },
                ErrorCode::DeploymentNameConflict,
                409,
            ),
            (StoreError::GroupNameConflict { name: "a".into() }, ErrorCode::Conflict, 409),
            (
                StoreError::MaxDeploymentsReached { group: group.clone(), max: 1 },
                ErrorCode::MaxDeploymentsReached,
                409,
            ),
            (StoreError::InvalidTransition(refused), ErrorCode::Conflict, 409),
            (StoreError::Conflict("raced".into()), ErrorCode::Conflict, 409),
            (StoreError::LastAdminToken(Id::new(IdKind::Token)), ErrorCode::Conflict, 409),
            (StoreError::Locked(Id::new(IdKind::Deployment)), ErrorCode::DeploymentLocked, 409),
            (StoreError::WrongKey("k".into()), ErrorCode::InternalError, 500),
            (StoreError::Unavailable("busy".into()), ErrorCode::Unavailable, 503),
            (StoreError::BadCursor("c".into()), ErrorCode::BadRequest, 400),
            (StoreError::Corrupt("c".into()), ErrorCode::InternalError, 500),
            (StoreError::Database("d".into()), ErrorCode::InternalError, 500),
        ];
        for (err, code, status) in table {
            covered(&err);
            let shown = err.to_string();
            let api = store_error(err);
            assert_eq!(
                (api.code, api.status()),
                (code, StatusCode::from_u16(status).unwrap()),
                "{shown}"
            );
            if status == 500 {
                assert!(!api.message.contains(&shown), "internal details stay in the log: {shown}");
            }
        }
    }

    #[test]
    fn every_command_and_payload_error_has_its_code_and_status() {
        let commands = [
            (
                CommandError::Invalid { field: "command", message: "m".into() },
                ErrorCode::ValidationFailed,
                400,
            ),
            (CommandError::TooLarge(1), ErrorCode::PayloadTooLarge, 413),
            (
                CommandError::PayloadTooLarge { what: "params".into(), max: 1 },
                ErrorCode::PayloadTooLarge,
                413,
            ),
            (
                CommandError::QuotaExceeded {
                    deployment: "d".into(),
                    used: 1,
                    adding: 1,
                    quota: 1,
                },
                ErrorCode::PayloadTooLarge,
                413,
            ),
            (CommandError::NotFound("c".into()), ErrorCode::CommandNotFound, 404),
            (CommandError::DeploymentNotFound("d".into()), ErrorCode::DeploymentNotFound, 404),
            (CommandError::Conflict("c".into()), ErrorCode::Conflict, 409),
            (CommandError::LeaseNotFound("l".into()), ErrorCode::CommandNotFound, 404),
            (CommandError::Unavailable("u".into()), ErrorCode::Unavailable, 503),
        ];
        for (err, code, status) in commands {
            match &err {
                CommandError::Invalid { .. }
                | CommandError::TooLarge(_)
                | CommandError::PayloadTooLarge { .. }
                | CommandError::QuotaExceeded { .. }
                | CommandError::NotFound(_)
                | CommandError::DeploymentNotFound(_)
                | CommandError::Conflict(_)
                | CommandError::LeaseNotFound(_)
                | CommandError::Unavailable(_) => {}
            }
            let api = command_error(err);
            assert_eq!((api.code, api.status().as_u16()), (code, status));
        }
        let payloads = [
            (PayloadError::InvalidKey("k".into()), ErrorCode::BadRequest, 400),
            (PayloadError::NotFound("k".into()), ErrorCode::NotFound, 404),
            (PayloadError::BadSignature, ErrorCode::Unauthorized, 401),
            (PayloadError::Unavailable("u".into()), ErrorCode::Unavailable, 503),
            (PayloadError::Backend("b".into()), ErrorCode::Unavailable, 503),
        ];
        for (err, code, status) in payloads {
            match &err {
                PayloadError::InvalidKey(_)
                | PayloadError::NotFound(_)
                | PayloadError::BadSignature
                | PayloadError::Unavailable(_)
                | PayloadError::Backend(_) => {}
            }
            let api = payload_error(err);
            assert_eq!((api.code, api.status().as_u16()), (code, status));
        }
    }

    #[test]
    fn every_impersonation_error_has_its_code_and_status() {
        use alien_impersonation::Cloud;
        let table = [
            (
                ImpersonationError::NotConfigured { cloud: Cloud::Aws },
                ErrorCode::ImpersonationNotConfigured,
                501,
            ),
            (
                ImpersonationError::InvalidTarget {
                    field: "target.roleArn".into(),
                    message: "m".into(),
                },
                ErrorCode::ValidationFailed,
                400,
            ),
            (
                ImpersonationError::Denied { identity: "role r".into(), message: "m".into() },
                ErrorCode::ImpersonationDenied,
                502,
            ),
            (ImpersonationError::Unavailable { message: "m".into() }, ErrorCode::Unavailable, 503),
            (
                ImpersonationError::Backend { message: "m".into() },
                ErrorCode::ImpersonationFailed,
                502,
            ),
        ];
        for (err, code, status) in table {
            match &err {
                ImpersonationError::NotConfigured { .. }
                | ImpersonationError::InvalidTarget { .. }
                | ImpersonationError::Denied { .. }
                | ImpersonationError::Unavailable { .. }
                | ImpersonationError::Backend { .. } => {}
            }
            let api = impersonation_error(err);
            assert_eq!((api.code, api.status().as_u16()), (code, status));
        }
    }
}
