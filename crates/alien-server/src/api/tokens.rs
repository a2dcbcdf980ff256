//! Tokens: `GET /v1/tokens`, `DELETE /v1/tokens/{id}` (revocation is effective at once).

pub use alien_core::api::TokenList;
use alien_core::{ApiError, IdKind};
use alien_store::StoreError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};

use super::{ApiState, path_id};
use crate::HttpError;
use crate::auth::Subject;
use crate::policy::{Action, Target};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/tokens", get(list_tokens))
        .route("/v1/tokens/{id}", delete(revoke_token))
}

/// Every live token.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList), (status = 403, body = ApiError)))]
pub async fn list_tokens(
    State(state): State<ApiState>,
    subject: Subject,
) -> Result<Json<TokenList>, HttpError> {
    state.authz.authorize(&subject, Action::ManageTokens, Target::none())?;
    Ok(Json(TokenList {
        items: state.store.list_tokens().await.map_err(crate::error::store_error)?,
    }))
}

/// Revokes a token.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "tok_... id")),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, description = "the last live admin token is never revoked", body = ApiError)))]
pub async fn revoke_token(
    State(state): State<ApiState>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    state.authz.authorize(&subject, Action::ManageTokens, Target::none())?;
    let id = path_id(IdKind::Token, &id)?;
    if state.store.revoke_token(&id).await.map_err(crate::error::store_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(crate::error::store_error(StoreError::NotFound {
            entity: alien_store::Entity::Token,
            id: id.to_string(),
        })
        .into())
    }
}
