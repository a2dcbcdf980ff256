//! Remote commands over HTTP (`spec/commands.md`): create, upload-complete, status, lease,
//! release, respond (bearer or presigned URL), and the local payload store's signed URLs.

use std::collections::HashMap;
use std::sync::Arc;

use alien_commands::wire::{
    CommandResponse, CommandStatusResponse, CreateCommandRequest, CreateCommandResponse,
    LeaseRequest, LeaseResponse, UploadComplete,
};
use alien_commands::{CommandEngine, CommandError, PayloadError, PayloadStore};
use alien_core::{ApiError, ErrorCode, FieldViolation, Id, IdKind, Platform};
use alien_store::Store;
use axum::body::Body;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::auth::{Authenticator, Subject, presented_token};
use crate::policy::{Action, Target};
use crate::{ApiJson, HttpError};

/// What the command routes share.
#[derive(Clone)]
pub struct CommandsState {
    /// The engine.
    pub engine: Arc<CommandEngine>,
    /// Large payloads.
    pub payloads: Arc<dyn PayloadStore>,
    /// Deployments (for authorization).
    pub store: Arc<dyn Store>,
    /// Container names of releases (command targets).
    pub containers: Arc<ReleaseContainers>,
    /// Decides access.
    pub authz: Arc<dyn crate::policy::Authz>,
    /// Token checks for the routes that also take presigned URLs.
    pub auth: Authenticator,
}

/// Routes behind the token layer.
pub fn authenticated_routes() -> Router<CommandsState> {
    Router::new()
        .route("/v1/commands", post(create))
        .route("/v1/commands/leases", post(lease))
        .route("/v1/commands/leases/{lease_id}/release", post(release))
        .route("/v1/commands/{id}", get(status))
        .route("/v1/commands/{id}/upload-complete", post(upload_complete))
        .route("/v1/commands/{id}/payload", get(get_params).put(put_params))
}

/// Routes that take a presigned URL instead of (or as well as) a token.
pub fn presigned_routes() -> Router<CommandsState> {
    Router::new()
        .route("/v1/commands/{id}/response", put(respond))
        .route("/v1/payloads/{*key}", get(download_payload).put(upload_payload))
}

/// Authorizes `action` on the deployment `deployment` (by id text); returns it.
async fn authorize_deployment(
    state: &CommandsState,
    subject: &Subject,
    action: Action,
    deployment: &str,
) -> Result<alien_core::Deployment, ApiError> {
    let id = Id::parse(IdKind::Deployment, deployment).map_err(|e| {
        ApiError::validation(vec![FieldViolation::new("deploymentId", e.to_string())])
    })?;
    super::authorized_deployment(&*state.store, &*state.authz, subject, action, &id).await
}

/// Authorizes `action` on the deployment of command `id`.
async fn authorize_command(
    state: &CommandsState,
    subject: &Subject,
    action: Action,
    id: &str,
) -> Result<(), ApiError> {
    let deployment = state.engine.deployment_of(id).await.map_err(crate::error::command_error)?;
    let deployment = deployment.ok_or_else(|| {
        ApiError::new(ErrorCode::CommandNotFound, format!("command {id} not found"))
    })?;
    authorize_on(state, subject, action, &deployment).await
}

/// Authorizes `action` on the deployment `deployment` when the deployment itself is not needed.
/// A deployment token acting on its own deployment (a receiver leasing and answering, the
/// calls of every command) is decided from the token alone: the token was found live, and a
/// deployment's tokens are revoked with it, so the store read would only confirm what the
/// token says. Every other caller goes through [`authorize_deployment`].
async fn authorize_on(
    state: &CommandsState,
    subject: &Subject,
    action: Action,
    deployment: &str,
) -> Result<(), ApiError> {
    if subject.token_type == alien_core::TokenType::Deployment
        && let (Some(own), Some(group)) = (&subject.deployment_id, &subject.deployment_group_id)
        && own.as_str() == deployment
    {
        state.authz.authorize(subject, action, crate::policy::Target::deployment(own, group))?;
        return Ok(());
    }
    authorize_deployment(state, subject, action, deployment).await.map(|_| ())
}

/// Creates a command.
#[utoipa::path(post, path = "/v1/commands", tag = "commands", request_body = CreateCommandRequest,
    responses((status = 201, body = CreateCommandResponse), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 413, body = ApiError)))]
pub async fn create(
    State(state): State<CommandsState>,
    subject: Subject,
    ApiJson(body): ApiJson<CreateCommandRequest>,
) -> Result<Response, HttpError> {
    let deployment =
        authorize_deployment(&state, &subject, Action::CreateCommand, &body.deployment_id).await?;
    CommandEngine::check_create(&body).map_err(crate::error::command_error)?;
    let target = state.containers.target(&deployment, body.target_resource_id.as_deref()).await?;
    let created: CreateCommandResponse =
        state.engine.create(body, target).await.map_err(crate::error::command_error)?;
    let mut response = (StatusCode::CREATED, Json(&created)).into_response();
    response.extensions_mut().insert(super::audit::AuditTarget(created.command_id.clone()));
    Ok(response)
}

/// Marks large parameters as uploaded.
#[utoipa::path(post, path = "/v1/commands/{id}/upload-complete", tag = "commands", params(("id" = String, Path, description = "cmd_... id")),
    request_body = UploadComplete, responses((status = 200, body = Object), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn upload_complete(
    State(state): State<CommandsState>,
    subject: Subject,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UploadComplete>,
) -> Result<Json<serde_json::Value>, HttpError> {
    authorize_command(&state, &subject, Action::CreateCommand, &id).await?;
    let new_state =
        state.engine.upload_complete(&id, body.size).await.map_err(crate::error::command_error)?;
    Ok(Json(serde_json::json!({ "commandId": id, "state": new_state })))
}

/// A command's status.
#[utoipa::path(get, path = "/v1/commands/{id}", tag = "commands", params(("id" = String, Path, description = "cmd_... id")),
    responses((status = 200, body = CommandStatusResponse), (status = 404, body = ApiError)))]
pub async fn status(
    State(state): State<CommandsState>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<Json<CommandStatusResponse>, HttpError> {
    authorize_command(&state, &subject, Action::ReadCommand, &id).await?;
    Ok(Json(state.engine.status(&id).await.map_err(crate::error::command_error)?))
}

/// Reads a command's parameters (admin).
#[utoipa::path(get, path = "/v1/commands/{id}/payload", tag = "commands", params(("id" = String, Path, description = "cmd_... id")),
    responses((status = 200, description = "the parameters", content_type = "application/octet-stream"), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn get_params(
    State(state): State<CommandsState>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    state.authz.authorize(&subject, Action::ManageCommandPayloads, Target::none())?;
    let stream = state.engine.params(&id).await.map_err(crate::error::command_error)?;
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// Uploads the parameters of a command waiting for them (admin); then call `upload-complete`.
#[utoipa::path(put, path = "/v1/commands/{id}/payload", tag = "commands", params(("id" = String, Path, description = "cmd_... id")),
    responses((status = 200, body = Object), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn put_params(
    State(state): State<CommandsState>,
    subject: Subject,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<serde_json::Value>, HttpError> {
    state.authz.authorize(&subject, Action::ManageCommandPayloads, Target::none())?;
    let body =
        request.into_body().into_data_stream().map(|r| r.map_err(std::io::Error::other)).boxed();
    let size = state.engine.put_params(&id, body).await.map_err(crate::error::command_error)?;
    Ok(Json(serde_json::json!({ "commandId": id, "size": size })))
}

/// Leases commands (long poll with `waitSeconds`).
#[utoipa::path(post, path = "/v1/commands/leases", tag = "commands", request_body = LeaseRequest,
    responses((status = 200, body = LeaseResponse), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub async fn lease(
    State(state): State<CommandsState>,
    subject: Subject,
    ApiJson(body): ApiJson<LeaseRequest>,
) -> Result<Json<LeaseResponse>, HttpError> {
    authorize_on(&state, &subject, Action::HandleCommand, &body.deployment_id).await?;
    Ok(Json(state.engine.lease(&body).await.map_err(crate::error::command_error)?))
}

/// Gives a leased command back.
#[utoipa::path(post, path = "/v1/commands/leases/{lease_id}/release", tag = "commands", params(("lease_id" = String, Path, description = "lease_... id")),
    responses((status = 200, body = Object), (status = 404, body = ApiError)))]
pub async fn release(
    State(state): State<CommandsState>,
    subject: Subject,
    Path(lease_id): Path<String>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let command =
        state.engine.command_of_lease(&lease_id).await.map_err(crate::error::command_error)?;
    let command = command.ok_or_else(|| {
        crate::error::command_error(CommandError::LeaseNotFound(lease_id.clone()))
    })?;
    authorize_command(&state, &subject, Action::HandleCommand, &command).await?;
    state.engine.release(&lease_id).await.map_err(crate::error::command_error)?;
    Ok(Json(serde_json::json!({ "success": true })))
}

/// `?response_token=&expires=` of a presigned response URL.
#[derive(Debug, Default, Deserialize)]
pub struct ResponseQuery {
    /// HMAC of `commands.v1:{id}:{expires}`.
    pub response_token: Option<String>,
    /// Unix seconds.
    pub expires: Option<u64>,
}

/// Submits a response, with the deployment's token or the presigned URL of the envelope.
#[utoipa::path(put, path = "/v1/commands/{id}/response", tag = "commands",
    params(("id" = String, Path, description = "cmd_... id"), ("response_token" = Option<String>, Query, description = "presigned token (instead of a bearer token)"), ("expires" = Option<u64>, Query, description = "expiry of the presigned token")),
    request_body = CommandResponse, responses((status = 200, body = Object), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn respond(
    State(state): State<CommandsState>,
    Path(id): Path<String>,
    Query(query): Query<ResponseQuery>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<serde_json::Value>, HttpError> {
    // Who answers is settled before the body is read: a caller without a valid token or URL
    // gets 401, never a parse error about a body it had no right to send.
    match (&query.response_token, query.expires) {
        (Some(token), Some(expires)) => {
            if !state.engine.verify_response_token(&id, token, expires) {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "invalid or expired response URL",
                )
                .into());
            }
        }
        _ => {
            let raw = presented_token(&headers).ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthorized, "missing token or response_token")
            })?;
            let subject = state.auth.subject_of(&raw).await?.ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthorized, "invalid, revoked or expired token")
            })?;
            authorize_command(&state, &subject, Action::HandleCommand, &id).await?;
        }
    }
    let ApiJson(body) = ApiJson::<CommandResponse>::from_request(request, &()).await?;
    let new_state = state.engine.respond(&id, body).await.map_err(crate::error::command_error)?;
    Ok(Json(serde_json::json!({ "commandId": id, "state": new_state })))
}

/// `?exp=&sig=` of a payload URL.
#[derive(Debug, Default, Deserialize)]
pub struct PayloadQuery {
    /// Unix seconds.
    pub exp: Option<u64>,
    /// Hex HMAC.
    pub sig: Option<String>,
}

/// Checks a payload URL's signature for `method`.
fn verify_payload_url(
    state: &CommandsState,
    method: &Method,
    key: &str,
    query: &PayloadQuery,
) -> Result<(), HttpError> {
    let (Some(exp), Some(sig)) = (query.exp, query.sig.as_deref()) else {
        return Err(ApiError::new(ErrorCode::Unauthorized, "payload URLs need exp and sig").into());
    };
    state
        .payloads
        .verify_signed(method.as_str(), key, exp, sig)
        .map_err(|e| crate::error::payload_error(e).into())
}

/// Downloads a payload through a manager-signed URL.
#[utoipa::path(get, path = "/v1/payloads/{key}", tag = "commands",
    params(("key" = String, Path, description = "payload key", pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,254})*$", max_length = 1024), ("exp" = u64, Query, description = "expiry (unix seconds)"), ("sig" = String, Query, description = "HMAC signature")),
    responses((status = 200, description = "the payload bytes", content_type = "application/octet-stream"), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
pub async fn download_payload(
    State(state): State<CommandsState>,
    Path(key): Path<String>,
    Query(query): Query<PayloadQuery>,
) -> Result<Response, HttpError> {
    verify_payload_url(&state, &Method::GET, &key, &query)?;
    let size = state.payloads.size(&key).await.map_err(crate::error::payload_error)?;
    let size =
        size.ok_or_else(|| crate::error::payload_error(PayloadError::NotFound(key.clone())))?;
    let stream = state.payloads.read(&key).await.map_err(crate::error::payload_error)?;
    let mut response = Response::new(Body::from_stream(stream));
    if let Ok(value) = size.to_string().parse() {
        response.headers_mut().insert(axum::http::header::CONTENT_LENGTH, value);
    }
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// Uploads a payload (large params or a large response) through a manager-signed URL; answers
/// `{size}`.
#[utoipa::path(put, path = "/v1/payloads/{key}", tag = "commands",
    params(("key" = String, Path, description = "payload key", pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,254})*$", max_length = 1024), ("exp" = u64, Query, description = "expiry (unix seconds)"), ("sig" = String, Query, description = "HMAC signature")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "`{size}`: the bytes stored"), (status = 401, body = ApiError), (status = 413, body = ApiError)))]
pub async fn upload_payload(
    State(state): State<CommandsState>,
    Path(key): Path<String>,
    Query(query): Query<PayloadQuery>,
    request: Request,
) -> Result<Response, HttpError> {
    verify_payload_url(&state, &Method::PUT, &key, &query)?;
    let body =
        request.into_body().into_data_stream().map(|r| r.map_err(std::io::Error::other)).boxed();
    // Within what the command declared (params) or the manager's limit (responses), stopped
    // at the first byte past it.
    let size = state.engine.upload(&key, body).await.map_err(crate::error::command_error)?;
    Ok(Json(serde_json::json!({ "size": size })).into_response())
}

/// The container names of each release's stack, per platform: what a command's target is chosen
/// from. Releases are immutable, so they are remembered (a bounded map).
pub struct ReleaseContainers {
    store: Arc<dyn Store>,
    containers: std::sync::Mutex<ContainerNames>,
}

/// Container names by release and platform.
type ContainerNames = HashMap<(Id, Platform), Arc<Vec<String>>>;

/// Releases whose container names [`ReleaseContainers`] remembers at most.
const REMEMBERED_RELEASES: usize = 1024;

impl ReleaseContainers {
    /// Container names read from `store`.
    pub fn new(store: Arc<dyn Store>) -> ReleaseContainers {
        ReleaseContainers { store, containers: std::sync::Mutex::new(HashMap::new()) }
    }

    async fn containers(
        &self,
        release: &Id,
        platform: Platform,
    ) -> Result<Option<Arc<Vec<String>>>, alien_store::StoreError> {
        let key = (release.clone(), platform);
        let remembered = self.remembered().get(&key).cloned();
        if let Some(names) = remembered {
            return Ok(Some(names));
        }
        let Some(release) = self.store.get_release(release).await? else { return Ok(None) };
        let names: Arc<Vec<String>> = Arc::new(
            release
                .stack
                .get(&platform)
                .map(|stack| stack.containers().map(|(name, _)| name.to_owned()).collect())
                .unwrap_or_default(),
        );
        let mut remembered = self.remembered();
        if remembered.len() >= REMEMBERED_RELEASES {
            remembered.clear();
        }
        remembered.insert(key, names.clone());
        Ok(Some(names))
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, ContainerNames> {
        self.containers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ReleaseContainers {
    /// The container of `deployment` a command goes to ([`alien_core::command::command_target`]
    /// over the container names of its current release); 409 when it cannot take one.
    pub async fn target(
        &self,
        deployment: &alien_core::Deployment,
        requested: Option<&str>,
    ) -> Result<alien_core::command::wire::CommandTarget, ApiError> {
        let containers = match &deployment.current_release_id {
            Some(release) => self
                .containers(release, deployment.platform)
                .await
                .map_err(crate::error::store_error)?,
            None => None,
        };
        alien_core::command::command_target(
            deployment,
            containers.as_deref().map(Vec::as_slice),
            requested,
        )
        .map_err(|e| ApiError::new(ErrorCode::Conflict, e.to_string()))
    }
}
