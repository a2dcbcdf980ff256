//! `GET /v1/whoami`: the calling token's identity and scope.

use alien_core::{Id, TokenType};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::ApiState;
use crate::auth::Subject;

/// The caller's identity.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    /// Always `serviceAccount`.
    pub kind: &'static str,
    /// Token id.
    pub id: Id,
    /// Token kind.
    pub token_type: TokenType,
    /// `workspace-admin`, `deployment-group-deployer` or `deployment-manager`.
    pub role: &'static str,
    /// What the token reaches.
    pub scope: Scope,
}

/// A token's scope.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// `workspace`, `deployment-group` or `deployment`.
    #[serde(rename = "type")]
    pub scope_type: &'static str,
    /// The group, for group and deployment tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_group_id: Option<Id>,
    /// The deployment, for deployment tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<Id>,
}

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/whoami", get(whoami))
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/whoami", tag = "identity",
    responses((status = 200, body = WhoAmI), (status = 401, body = alien_core::ApiError)))]
pub async fn whoami(subject: Subject) -> Json<WhoAmI> {
    let (role, scope_type) = match subject.token_type {
        TokenType::Admin => ("workspace-admin", "workspace"),
        TokenType::DeploymentGroup => ("deployment-group-deployer", "deployment-group"),
        TokenType::Deployment => ("deployment-manager", "deployment"),
    };
    Json(WhoAmI {
        kind: "serviceAccount",
        id: subject.token_id,
        token_type: subject.token_type,
        role,
        scope: Scope {
            scope_type,
            deployment_group_id: subject.deployment_group_id,
            deployment_id: subject.deployment_id,
        },
    })
}
