//! Releases: `POST/GET /v1/releases`, `GET /v1/releases/latest`, `GET /v1/releases/{id}`.
//! Releases are immutable: there is no update or delete.

use alien_core::{ApiError, CreateRelease, Id, IdKind, Platform, Release};
use alien_store::{Page, StoreError};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::groups::created;
use super::{ApiState, PageQuery, path_id};
use crate::auth::Subject;
use crate::policy::{Action, Scope, Target};
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
        state.deployments_changed.notify();
    }
    tracing::info!(release = %created_release.release.id, marked = created_release.marked, "release created");
    Ok(created(created_release.release.id.to_string(), created_release.release))
}

/// Most releases on one page of `GET /v1/releases` (a release carries its stacks: a page of a
/// thousand could be gigabytes).
pub const MAX_RELEASE_PAGE: u32 = 100;

/// The releases a deployment token may read: its deployment's current and desired ones.
async fn own_releases(state: &ApiState, deployment: &alien_core::Id) -> Result<Vec<Id>, HttpError> {
    let found = state.store.get_deployment(deployment).await.map_err(crate::error::store_error)?;
    let Some(found) = found else { return Ok(Vec::new()) };
    let mut ids: Vec<Id> = found.desired_release_id.into_iter().collect();
    if let Some(current) = found.current_release_id
        && !ids.contains(&current)
    {
        ids.push(current);
    }
    Ok(ids)
}

/// `?limit=&cursor=` of `GET /v1/releases`: a release carries its stacks, so pages are smaller.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReleasePageQuery {
    /// Releases per page (1..=100, default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
}

/// Releases, newest first (at most [`MAX_RELEASE_PAGE`] a page). A deployment token sees its
/// own deployment's releases (current and desired) only.
#[utoipa::path(get, path = "/v1/releases", tag = "releases", params(ReleasePageQuery),
    responses((status = 200, body = Page<Release>)))]
pub async fn list_releases(
    State(state): State<ApiState>,
    subject: Subject,
    Query(query): Query<ReleasePageQuery>,
) -> Result<Json<Page<Release>>, HttpError> {
    let page = PageQuery { limit: query.limit, cursor: query.cursor }
        .page(MAX_RELEASE_PAGE, Some(IdKind::Release))?;
    let scope = state.authz.authorize(&subject, Action::ReadRelease, Target::none())?;
    if let Scope::Deployment(own) = scope {
        let mut items = Vec::new();
        for id in own_releases(&state, &own).await? {
            if let Some(release) =
                state.store.get_release(&id).await.map_err(crate::error::store_error)?
            {
                items.push(release);
            }
        }
        items.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        return Ok(Json(Page { items, next_cursor: None }));
    }
    Ok(Json(state.store.list_releases(&page).await.map_err(crate::error::store_error)?))
}

/// `?platform=` of `GET /v1/releases/latest`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LatestQuery {
    /// Only releases with a stack for this platform.
    #[param(value_type = Option<Platform>)]
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
    let scope = state.authz.authorize(&subject, Action::ReadRelease, Target::none())?;
    let platform = query.platform.as_deref().map(parse_platform).transpose()?;
    let release = match scope {
        // A deployment token: the newest of its own releases (with a stack for `platform`).
        Scope::Deployment(own) => {
            let mut newest: Option<Release> = None;
            for id in own_releases(&state, &own).await? {
                let release =
                    state.store.get_release(&id).await.map_err(crate::error::store_error)?;
                if let Some(release) = release
                    && platform.is_none_or(|p| release.stack.contains_key(&p))
                    && newest.as_ref().is_none_or(|n| release.created_at > n.created_at)
                {
                    newest = Some(release);
                }
            }
            newest
        }
        _ => state.store.latest_release(platform).await.map_err(crate::error::store_error)?,
    };
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
    let scope = state.authz.authorize(&subject, Action::ReadRelease, Target::none())?;
    let id = path_id(IdKind::Release, &id)?;
    if let Scope::Deployment(own) = scope
        && !own_releases(&state, &own).await?.contains(&id)
    {
        return Err(ApiError::new(
            alien_core::ErrorCode::Forbidden,
            "a deployment token reads its own deployment's releases only",
        )
        .into());
    }
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
