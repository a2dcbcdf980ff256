//! Deployments: create, list, get, info, retry, redeploy, delete, events.

use std::collections::BTreeMap;

use alien_core::{
    ApiError, CreateDeployment, Deployment, DeploymentEvent, DeploymentModel, DeploymentStatus,
    ErrorCode, FieldViolation, Id, IdKind, Platform, TokenType,
};
use alien_store::{
    DeploymentFilter, DeploymentPatch, NewDeployment, NewToken, Page, PageRequest, StoreError,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub use alien_core::api::{
    CommandsInfo, DeleteAccepted, DeleteAction, DeleteBody, DeploymentCreated, DeploymentInfo,
    EventsPage, RedeployBody, ResourceInfo,
};
use serde_json::{Value, json};

use super::groups::created;
use super::releases::parse_platform;
use super::{ApiState, PageQuery, Success, optional_json, path_id};
use crate::auth::Subject;
use crate::policy::{Action, Target};
use crate::{ApiJson, HttpError};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/deployments", post(create_deployment).get(list_deployments))
        .route("/v1/deployments/{id}", get(get_deployment))
        .route("/v1/deployments/{id}/info", get(deployment_info))
        .route("/v1/deployments/{id}/events", get(deployment_events))
        .route("/v1/deployments/{id}/retry", post(retry))
        .route("/v1/deployments/{id}/redeploy", post(redeploy))
        .route("/v1/deployments/{id}/delete", post(delete))
}

/// Creates a deployment in a group.
#[utoipa::path(post, path = "/v1/deployments", tag = "deployments", request_body = CreateDeployment,
    responses((status = 201, body = DeploymentCreated), (status = 400, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn create_deployment(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<CreateDeployment>,
) -> Result<Response, HttpError> {
    state.authz.authorize(&subject, Action::CreateDeployment, Target::none())?;
    let mut violations = body.validate();
    let model = match body.platform.choose_model(body.deployment_model) {
        Ok(model) => Some(model),
        Err(e) => {
            violations.push(FieldViolation::new("deploymentModel", e.to_string()));
            None
        }
    };
    if !violations.is_empty() {
        return Err(ApiError::validation(violations).into());
    }
    let group = resolve_group(&state, &subject, body.deployment_group_id.as_ref()).await?;
    state.authz.authorize(&subject, Action::CreateDeployment, Target::group(&group))?;
    if body.target.is_some() {
        state.authz.authorize(&subject, Action::SetDeploymentTarget, Target::group(&group))?;
    }
    let id = Id::new(IdKind::Deployment);
    let token = NewToken::for_deployment(&id, &group).map_err(|_| ApiError::internal())?;
    let raw = token.raw.clone();
    let new = NewDeployment {
        id: id.clone(),
        name: body.name,
        platform: body.platform,
        deployment_model: model.unwrap_or(DeploymentModel::Push),
        deployment_group_id: group.clone(),
        environment_variables: body.environment_variables,
        stack_settings: body.stack_settings,
        region: body.region,
        target: body.target,
        token,
    };
    let deployment = state.store.create_deployment(new).await.map_err(crate::error::store_error)?;
    if deployment.desired_release_id.is_some() {
        state.deployments_changed.notify();
    }
    let body = DeploymentCreated {
        deployment_model: deployment.deployment_model,
        token: raw.expose().to_owned(),
        deployment,
    };
    Ok(created(body.deployment.id.to_string(), body))
}

/// The group a new deployment goes to: a group token's own; for admins the given one, or the
/// only one when exactly one exists.
pub(super) async fn resolve_group(
    state: &ApiState,
    subject: &Subject,
    given: Option<&Id>,
) -> Result<Id, ApiError> {
    if subject.token_type == TokenType::DeploymentGroup {
        let own = subject.deployment_group_id.clone().ok_or_else(ApiError::internal)?;
        if given.is_some_and(|g| *g != own) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "a deployment-group token creates deployments in its own group only",
            ));
        }
        return Ok(own);
    }
    if let Some(group) = given {
        return match state.store.get_group(group).await.map_err(crate::error::store_error)? {
            Some(_) => Ok(group.clone()),
            None => Err(crate::error::store_error(StoreError::NotFound {
                entity: alien_store::Entity::DeploymentGroup,
                id: group.to_string(),
            })),
        };
    }
    let groups = state
        .store
        .list_groups(&PageRequest { limit: 2, cursor: None })
        .await
        .map_err(crate::error::store_error)?;
    match groups.items.as_slice() {
        [only] => Ok(only.id.clone()),
        // Which group is a question of what exists, not of the request's shape: 409.
        [] => Err(ApiError::new(ErrorCode::Conflict, "no deployment group exists yet")
            .with_hint("create one with POST /v1/deployment-groups")),
        _ => Err(ApiError::new(
            ErrorCode::Conflict,
            "more than one deployment group exists: name one in deploymentGroupId",
        )),
    }
}

/// Filters of `GET /v1/deployments`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ListQuery {
    /// Only this group.
    pub deployment_group_id: Option<String>,
    /// Only this status.
    #[param(value_type = Option<DeploymentStatus>)]
    pub status: Option<String>,
    /// Only this platform.
    #[param(value_type = Option<Platform>)]
    pub platform: Option<String>,
    /// Only this name.
    pub name: Option<String>,
    /// Items per page (1..=1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Cursor.
    pub cursor: Option<String>,
}

/// Deployments the caller can see, filtered.
#[utoipa::path(get, path = "/v1/deployments", tag = "deployments", params(ListQuery),
    responses((status = 200, body = Page<Deployment>), (status = 400, body = ApiError)))]
pub async fn list_deployments(
    State(state): State<ApiState>,
    subject: Subject,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<Deployment>>, HttpError> {
    let mut violations = Vec::new();
    let group = match &query.deployment_group_id {
        Some(g) => Id::parse(IdKind::DeploymentGroup, g)
            .map_err(|e| violations.push(FieldViolation::new("deploymentGroupId", e.to_string())))
            .ok(),
        None => None,
    };
    let status = match &query.status {
        Some(s) => s
            .parse::<DeploymentStatus>()
            .map_err(|e| violations.push(FieldViolation::new("status", e.to_string())))
            .ok(),
        None => None,
    };
    let platform: Option<Platform> = match &query.platform {
        Some(p) => parse_platform(p).map_err(|e| violations.extend(e.violations())).ok(),
        None => None,
    };
    if !violations.is_empty() {
        return Err(ApiError::validation(violations).into());
    }
    let scope = state.authz.authorize(&subject, Action::ListDeployments, Target::none())?;
    let group = scope.group_filter(group)?;
    let filter =
        DeploymentFilter { deployment_group_id: group, status, platform, name: query.name };
    let page = PageQuery { limit: query.limit, cursor: query.cursor }
        .page(alien_store::MAX_PAGE, Some(IdKind::Deployment))?;
    Ok(Json(state.store.list_deployments(&filter, &page).await.map_err(crate::error::store_error)?))
}

/// Loads a deployment the caller may act on with `action`.
async fn load(
    state: &ApiState,
    subject: &Subject,
    id: &str,
    action: Action,
) -> Result<Deployment, ApiError> {
    let id = path_id(IdKind::Deployment, id)?;
    super::authorized_deployment(&*state.store, &*state.authz, subject, action, &id).await
}

/// One deployment.
#[utoipa::path(get, path = "/v1/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "dep_... id")),
    responses((status = 200, body = Deployment), (status = 404, body = ApiError)))]
pub async fn get_deployment(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, HttpError> {
    Ok(Json(load(&state, &subject, &id, Action::ReadDeployment).await?))
}

/// Status, resources and commands endpoint of a deployment.
#[utoipa::path(get, path = "/v1/deployments/{id}/info", tag = "deployments",
    params(("id" = String, Path, description = "dep_... id")),
    responses((status = 200, body = DeploymentInfo), (status = 404, body = ApiError)))]
pub async fn deployment_info(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<Json<DeploymentInfo>, HttpError> {
    let deployment = load(&state, &subject, &id, Action::ReadDeployment).await?;
    let mut resources = BTreeMap::new();
    if let Some(Value::Object(map)) =
        deployment.stack_state.as_ref().and_then(|s| s.get("resources"))
    {
        for (rid, resource) in map {
            let text = |key: &str| resource.get(key).and_then(Value::as_str).map(str::to_owned);
            resources.insert(
                rid.clone(),
                ResourceInfo {
                    resource_type: text("type").unwrap_or_else(|| "unknown".into()),
                    status: text("status").unwrap_or_else(|| "unknown".into()),
                    url: resource
                        .pointer("/outputs/url")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                },
            );
        }
    }
    Ok(Json(DeploymentInfo {
        status: deployment.status,
        platform: deployment.platform,
        resources,
        commands: CommandsInfo {
            url: format!("{}/v1", state.config.server.effective_base_url()),
            deployment_id: deployment.id,
        },
        error: deployment.error,
    }))
}

/// `?limit=` of the events route.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Most events (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A deployment's recent status changes, newest first.
#[utoipa::path(get, path = "/v1/deployments/{id}/events", tag = "deployments",
    params(("id" = String, Path, description = "dep_... id"), EventsQuery),
    responses((status = 200, body = EventsPage), (status = 404, body = ApiError)))]
pub async fn deployment_events(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventsPage>, HttpError> {
    let deployment = load(&state, &subject, &id, Action::ReadDeployment).await?;
    super::check_limit(query.limit, 1000)?;
    let limit = query.limit.unwrap_or(100);
    let items = state
        .store
        .deployment_events(&deployment.id, limit)
        .await
        .map_err(crate::error::store_error)?;
    Ok(Json(EventsPage { items }))
}

/// Resumes a failed deployment at the step that failed.
#[utoipa::path(post, path = "/v1/deployments/{id}/retry", tag = "deployments",
    params(("id" = String, Path, description = "dep_... id")),
    responses((status = 200, body = Success), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn retry(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<Json<Success>, HttpError> {
    let deployment = load(&state, &subject, &id, Action::OperateDeployment).await?;
    // Only a `*-failed` status takes a retry (the transition table): others are 409.
    let patch = DeploymentPatch {
        retry_requested: Some(true),
        reason: "retry".into(),
        ..Default::default()
    };
    apply(&state, &deployment.id, DeploymentEvent::Retry, patch).await?;
    Ok(super::success())
}

/// Applies the desired release again, or the given release (rollback).
#[utoipa::path(post, path = "/v1/deployments/{id}/redeploy", tag = "deployments",
    params(("id" = String, Path, description = "dep_... id")), request_body(content = Option<RedeployBody>),
    responses((status = 200, body = Success), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn redeploy(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Success>, HttpError> {
    let deployment = load(&state, &subject, &id, Action::OperateDeployment).await?;
    let body: RedeployBody = optional_json(&body)?;
    let release = match body.release_id.or_else(|| deployment.desired_release_id.clone()) {
        Some(release) => release,
        None => {
            return Err(ApiError::new(ErrorCode::Conflict, "there is no release to redeploy yet")
                .with_hint("create a release with POST /v1/releases")
                .into());
        }
    };
    let stored = state.store.get_release(&release).await.map_err(crate::error::store_error)?;
    let stored = stored.ok_or_else(|| {
        crate::error::store_error(StoreError::NotFound {
            entity: alien_store::Entity::Release,
            id: release.to_string(),
        })
    })?;
    if !stored.has_platform(deployment.platform) {
        return Err(ApiError::validation(vec![FieldViolation::new(
            "releaseId",
            format!("release {} has no stack for platform {}", stored.id, deployment.platform),
        )])
        .into());
    }
    let patch = DeploymentPatch {
        desired_release_id: Some(release.clone()),
        // Also applies the release again when it already runs (a pull agent learns it so).
        retry_requested: Some(true),
        reason: "redeploy".into(),
        detail: Some(json!({ "releaseId": release })),
        ..Default::default()
    };
    apply(&state, &deployment.id, DeploymentEvent::Redeploy, patch).await?;
    Ok(super::success())
}

/// Deletes a deployment.
#[utoipa::path(post, path = "/v1/deployments/{id}/delete", tag = "deployments",
    params(("id" = String, Path, description = "dep_... id")), request_body(content = Option<DeleteBody>),
    responses((status = 202, body = DeleteAccepted), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn delete(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let deployment = load(&state, &subject, &id, Action::DeleteDeployment).await?;
    let body: DeleteBody = optional_json(&body)?;
    let message = match body.action {
        DeleteAction::Forget => {
            state
                .store
                .delete_deployment(&deployment.id)
                .await
                .map_err(crate::error::store_error)?;
            format!(
                "deployment {} was removed and its tokens revoked; its resources were left in place",
                deployment.id
            )
        }
        DeleteAction::Cleanup => {
            if deployment.status.is_deleting() {
                return Err(ApiError::new(
                    ErrorCode::DeploymentAlreadyDeleting,
                    format!("deployment {} is already {}", deployment.id, deployment.status),
                )
                .into());
            }
            let patch = DeploymentPatch { reason: "delete".into(), ..Default::default() };
            apply(&state, &deployment.id, DeploymentEvent::DeleteRequested, patch).await?;
            format!("deployment {} will be torn down and then removed", deployment.id)
        }
    };
    Ok((StatusCode::ACCEPTED, Json(DeleteAccepted { action: body.action, message }))
        .into_response())
}

/// Applies a user's event; an event the status does not accept is a 409 naming the status.
async fn apply(
    state: &ApiState,
    id: &Id,
    event: DeploymentEvent,
    patch: DeploymentPatch,
) -> Result<Deployment, ApiError> {
    let moved =
        state.store.transition(id, event, patch).await.map_err(crate::error::store_error)?;
    state.deployments_changed.notify();
    Ok(moved)
}
