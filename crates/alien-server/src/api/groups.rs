//! Deployment groups: `POST/GET /v1/deployment-groups`, `GET/PATCH /v1/deployment-groups/{id}`,
//! `POST /v1/deployment-groups/{id}/tokens`.

use alien_core::deployment::DEFAULT_MAX_DEPLOYMENTS;
use alien_core::{
    ApiError, CreateDeploymentGroup, DeploymentGroup, Id, IdKind, UpdateDeploymentGroup,
};
use alien_store::{NewToken, Page, StoreError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

pub use alien_core::api::{CreateGroupToken, GroupTokenCreated};

use super::audit::AuditTarget;
use super::{ApiState, PageQuery, path_id};
use crate::auth::Subject;
use crate::policy::{Action, Scope, Target};
use crate::{ApiJson, HttpError};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/deployment-groups", post(create_group).get(list_groups))
        .route("/v1/deployment-groups/{id}", get(get_group).patch(update_group))
        .route("/v1/deployment-groups/{id}/tokens", post(create_group_token))
}

/// Creates a deployment group.
#[utoipa::path(post, path = "/v1/deployment-groups", tag = "deployment-groups", request_body = CreateDeploymentGroup,
    responses((status = 201, body = DeploymentGroup), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
pub async fn create_group(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<CreateDeploymentGroup>,
) -> Result<Response, HttpError> {
    state.authz.authorize(&subject, Action::ManageGroups, Target::none())?;
    let violations = body.validate();
    if !violations.is_empty() {
        return Err(ApiError::validation(violations).into());
    }
    let max = body.max_deployments.unwrap_or(DEFAULT_MAX_DEPLOYMENTS);
    let mut group =
        state.store.create_group(&body.name, max).await.map_err(crate::error::store_error)?;
    if body.rollout.is_some() {
        group = state
            .store
            .set_group_rollout(&group.id, body.rollout)
            .await
            .map_err(crate::error::store_error)?;
    }
    Ok(created(group.id.to_string(), group))
}

/// Deployment groups the caller can see.
#[utoipa::path(get, path = "/v1/deployment-groups", tag = "deployment-groups", params(PageQuery),
    responses((status = 200, body = Page<DeploymentGroup>), (status = 403, body = ApiError)))]
pub async fn list_groups(
    State(state): State<ApiState>,
    subject: Subject,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page<DeploymentGroup>>, HttpError> {
    let page = query.page(alien_store::MAX_PAGE, Some(IdKind::DeploymentGroup))?;
    match state.authz.authorize(&subject, Action::ReadGroup, Target::none())? {
        Scope::All => {
            Ok(Json(state.store.list_groups(&page).await.map_err(crate::error::store_error)?))
        }
        Scope::Group(own) => {
            let own = state.store.get_group(&own).await.map_err(crate::error::store_error)?;
            Ok(Json(Page { items: own.into_iter().collect(), next_cursor: None }))
        }
        Scope::Deployment(_) => Ok(Json(Page { items: Vec::new(), next_cursor: None })),
    }
}

/// One deployment group.
#[utoipa::path(get, path = "/v1/deployment-groups/{id}", tag = "deployment-groups",
    params(("id" = String, Path, description = "dg_... id")),
    responses((status = 200, body = DeploymentGroup), (status = 404, body = ApiError)))]
pub async fn get_group(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<Json<DeploymentGroup>, HttpError> {
    let id = path_id(IdKind::DeploymentGroup, &id)?;
    state.authz.authorize(&subject, Action::ReadGroup, Target::group(&id))?;
    let group = state.store.get_group(&id).await.map_err(crate::error::store_error)?;
    Ok(Json(group.ok_or_else(|| not_found(&id))?))
}

/// Sets or removes a group's rollout policy (it applies to updates that have not begun).
#[utoipa::path(patch, path = "/v1/deployment-groups/{id}", tag = "deployment-groups",
    params(("id" = String, Path, description = "dg_... id")), request_body = UpdateDeploymentGroup,
    responses((status = 200, body = DeploymentGroup), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn update_group(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateDeploymentGroup>,
) -> Result<Json<DeploymentGroup>, HttpError> {
    let id = path_id(IdKind::DeploymentGroup, &id)?;
    state.authz.authorize(&subject, Action::ManageGroups, Target::group(&id))?;
    if let Some(rollout) = &body.rollout {
        let violations = rollout.validate("rollout");
        if !violations.is_empty() {
            return Err(ApiError::validation(violations).into());
        }
    }
    let group = state
        .store
        .set_group_rollout(&id, body.rollout)
        .await
        .map_err(crate::error::store_error)?;
    Ok(Json(group))
}

/// Mints a deployment-group token.
#[utoipa::path(post, path = "/v1/deployment-groups/{id}/tokens", tag = "deployment-groups",
    params(("id" = String, Path, description = "dg_... id")), request_body(content = Option<CreateGroupToken>),
    responses((status = 201, body = GroupTokenCreated), (status = 404, body = ApiError)))]
pub async fn create_group_token(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let id = path_id(IdKind::DeploymentGroup, &id)?;
    state.authz.authorize(&subject, Action::ManageGroups, Target::group(&id))?;
    let body: CreateGroupToken = super::optional_json(&body)?;
    if state.store.get_group(&id).await.map_err(crate::error::store_error)?.is_none() {
        return Err(not_found(&id).into());
    }
    let token = NewToken::for_group(&id, body.name).map_err(|_| ApiError::internal())?;
    let raw = token.raw.clone();
    let record = state.store.create_token(token).await.map_err(crate::error::store_error)?;
    let created_body = GroupTokenCreated {
        token: raw.expose().to_owned(),
        deployment_group_id: id,
        id: record.id,
    };
    Ok(created(created_body.id.to_string(), created_body))
}

fn not_found(id: &Id) -> ApiError {
    crate::error::store_error(StoreError::NotFound {
        entity: alien_store::Entity::DeploymentGroup,
        id: id.to_string(),
    })
}

/// 201 with the body, naming the created id for the audit log.
pub(super) fn created<T: Serialize>(target: String, body: T) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.extensions_mut().insert(AuditTarget(target));
    response
}
