//! Releases: `POST/GET /v1/releases`, `GET /v1/releases/latest`, `GET /v1/releases/{id}`.
//! Releases are immutable: there is no update or delete.

use alien_core::{ApiError, CreateRelease, IdKind, Platform, Release};
use alien_store::{Page, StoreError};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::groups::created;
use super::{ApiState, PageQuery, path_id};
use crate::auth::Subject;
use crate::policy::{Action, Target};
use crate::{ApiJson, HttpError};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/releases", post(create_release).get(list_releases))
        .route("/v1/releases/latest", get(latest_release))
        .route("/v1/releases/{id}", get(get_release))
}

/// Creates a release; every stack is validated and all violations are reported at once, including
/// changes a deployment of the previous release of the same stack cannot take (Container API
/// rule 8). Marks the deployments of its platforms to update to it.
#[utoipa::path(post, path = "/v1/releases", tag = "releases", request_body = CreateRelease,
    responses((status = 201, body = Release), (status = 400, body = ApiError)))]
pub async fn create_release(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<CreateRelease>,
) -> Result<Response, HttpError> {
    state.authz.authorize(&subject, Action::CreateRelease, Target::none())?;
    let release = body.validate().map_err(ApiError::validation)?;
    let incompatible = alien_store::update_incompatibilities(&*state.store, &release)
        .await
        .map_err(crate::error::store_error)?;
    if !incompatible.is_empty() {
        return Err(ApiError::validation(incompatible).into());
    }
    let created_release =
        state.store.create_release(release).await.map_err(crate::error::store_error)?;
    if created_release.marked > 0 {
        state.deployments_changed.notify_one();
    }
    tracing::info!(release = %created_release.release.id, marked = created_release.marked, "release created");
    Ok(created(created_release.release.id.to_string(), created_release.release))
}

/// Releases, newest first.
#[utoipa::path(get, path = "/v1/releases", tag = "releases", params(PageQuery),
    responses((status = 200, body = Page<Release>)))]
pub async fn list_releases(
    State(state): State<ApiState>,
    subject: Subject,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page<Release>>, HttpError> {
    state.authz.authorize(&subject, Action::ReadRelease, Target::none())?;
    Ok(Json(state.store.list_releases(&query.page()).await.map_err(crate::error::store_error)?))
}

/// `?platform=` of `GET /v1/releases/latest`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LatestQuery {
    /// Only releases with a stack for this platform.
    pub platform: Option<String>,
}

/// The newest release (with a stack for `platform`, if given).
#[utoipa::path(get, path = "/v1/releases/latest", tag = "releases", params(LatestQuery),
    responses((status = 200, body = Release), (status = 404, body = ApiError)))]
pub async fn latest_release(
    State(state): State<ApiState>,
    subject: Subject,
    Query(query): Query<LatestQuery>,
) -> Result<Json<Release>, HttpError> {
    state.authz.authorize(&subject, Action::ReadRelease, Target::none())?;
    let platform = query.platform.as_deref().map(parse_platform).transpose()?;
    let release = state.store.latest_release(platform).await.map_err(crate::error::store_error)?;
    let missing =
        StoreError::NotFound { entity: alien_store::Entity::Release, id: "latest".into() };
    Ok(Json(release.ok_or_else(|| crate::error::store_error(missing))?))
}

/// One release.
#[utoipa::path(get, path = "/v1/releases/{id}", tag = "releases",
    params(("id" = String, Path, description = "rel_... id")),
    responses((status = 200, body = Release), (status = 404, body = ApiError)))]
pub async fn get_release(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<Json<Release>, HttpError> {
    state.authz.authorize(&subject, Action::ReadRelease, Target::none())?;
    let id = path_id(IdKind::Release, &id)?;
    let release = state.store.get_release(&id).await.map_err(crate::error::store_error)?;
    let missing = || {
        crate::error::store_error(StoreError::NotFound {
            entity: alien_store::Entity::Release,
            id: id.to_string(),
        })
    };
    Ok(Json(release.ok_or_else(missing)?))
}

/// A `platform` query value, or 400 naming the parameter.
pub(super) fn parse_platform(value: &str) -> Result<Platform, ApiError> {
    value.parse::<Platform>().map_err(|e| {
        ApiError::validation(vec![alien_core::FieldViolation::new("platform", e.to_string())])
    })
}
