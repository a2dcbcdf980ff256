//! `POST /v1/credentials/mint`: short-lived cloud credentials for a deployment's target, through
//! the [`alien_impersonation::Impersonator`] the manager was built with (`spec/api.md`
//! "Credentials", `spec/clouds.md` "Impersonation in the deployment flow").
//!
//! A deployment token mints for its own deployment, an admin for any; group tokens may not (they
//! are held by a customer environment's deployer, not by a workload). A deployment on a platform
//! that is not a cloud, or without a `target` (single-account mode), gets `{"kind": "ambient"}`:
//! its environment's own credentials. A cloud target without an `[impersonation.<cloud>]`
//! binding is 501 `IMPERSONATION_NOT_CONFIGURED` naming it.

use std::time::Duration;

use alien_core::{ApiError, ErrorCode, FieldViolation, Id};
use alien_impersonation::{Credentials, ImpersonationTarget, SessionName};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::ApiState;
use crate::auth::Subject;
use crate::policy::Action;
use crate::{ApiJson, HttpError};

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/credentials/mint", post(mint))
}

/// `POST /v1/credentials/mint` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MintRequest {
    /// The deployment whose target the credentials are for.
    pub deployment_id: Id,
    /// The resource (container) of the deployment's release that asks.
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub resource_id: String,
    /// The binding of that resource the credentials are for (recorded, at most 128 characters).
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub binding_name: String,
    /// Lifetime asked for, in seconds; clamped to 900..=3600 (default 3600).
    #[serde(default)]
    pub duration_seconds: Option<u64>,
}

/// Minted credentials.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Minted {
    /// `{"kind": "aws", "accessKeyId", "secretAccessKey", "sessionToken", "expiresAt"}`,
    /// `{"kind": "gcp" | "azure", "accessToken", "expiresAt"}`, or `{"kind": "ambient"}` (use your
    /// environment's own credentials).
    #[schema(value_type = Object)]
    pub credentials: Credentials,
    /// The lifetime that was asked of the provider, in seconds (after clamping).
    pub duration_seconds: u64,
}

/// Longest accepted `bindingName` and `resourceId`.
const MAX_NAME_LEN: usize = 128;

/// Mints short-lived credentials for a deployment's target.
#[utoipa::path(post, path = "/v1/credentials/mint", tag = "credentials", request_body = MintRequest,
    responses((status = 200, body = Minted), (status = 400, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 501, body = ApiError), (status = 502, body = ApiError),
        (status = 503, body = ApiError)))]
pub async fn mint(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<MintRequest>,
) -> Result<Response, HttpError> {
    let deployment = super::authorized_deployment(
        &*state.store,
        &*state.authz,
        &subject,
        Action::MintCredentials,
        &body.deployment_id,
    )
    .await?;
    let mut violations = Vec::new();
    for (field, value) in [("resourceId", &body.resource_id), ("bindingName", &body.binding_name)] {
        if value.trim().is_empty() || value.chars().count() > MAX_NAME_LEN {
            violations
                .push(FieldViolation::new(field, format!("must be 1..={MAX_NAME_LEN} characters")));
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::validation(violations).into());
    }
    if !runs_resource(&state, &deployment, &body.resource_id).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("deployment {} runs no resource {:?}", deployment.id, body.resource_id),
        )
        .into());
    }
    let requested = body.duration_seconds.map(Duration::from_secs);
    let session = SessionName::new("mint", deployment.id.as_str());
    let stored =
        state.store.deployment_target(&deployment.id).await.map_err(crate::error::store_error)?;
    let target = ImpersonationTarget::from_deployment_target(
        deployment.platform,
        stored.as_ref(),
        session,
        requested,
    )
    .map_err(crate::error::impersonation_error)?;
    let credentials =
        state.impersonator.credentials(&target).await.map_err(crate::error::impersonation_error)?;
    tracing::info!(
        deployment = %deployment.id,
        resource = %body.resource_id,
        binding = %body.binding_name,
        kind = credentials.kind(),
        "credentials minted"
    );
    let minted = Minted { credentials, duration_seconds: target.duration().as_secs() };
    let mut response = Json(minted).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.extensions_mut().insert(super::audit::AuditTarget(deployment.id.to_string()));
    Ok(response)
}

/// Whether `resource` is a resource of the deployment's current (or else desired) release.
async fn runs_resource(
    state: &ApiState,
    deployment: &alien_core::Deployment,
    resource: &str,
) -> Result<bool, ApiError> {
    let Some(release) =
        deployment.current_release_id.as_ref().or(deployment.desired_release_id.as_ref())
    else {
        return Ok(false);
    };
    let release = state.store.get_release(release).await.map_err(crate::error::store_error)?;
    Ok(release
        .and_then(|r| r.stack.get(&deployment.platform).map(|s| s.resources.contains_key(resource)))
        .unwrap_or(false))
}
