//! `GET /v1/whoami`: the calling token's identity and scope.

use alien_core::TokenType;
pub use alien_core::api::{Scope, WhoAmI};
use axum::routing::get;
use axum::{Json, Router};

use super::ApiState;
use crate::auth::Subject;

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
        kind: "serviceAccount".to_owned(),
        id: subject.token_id,
        token_type: subject.token_type,
        role: role.to_owned(),
        scope: Scope {
            scope_type: scope_type.to_owned(),
            deployment_group_id: subject.deployment_group_id,
            deployment_id: subject.deployment_id,
        },
    })
}
