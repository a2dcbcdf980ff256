//! The lease API of external push drivers (spec/deployer.md): a driver outside the manager steps
//! push deployments itself. It leases due deployments (`POST /v1/sync/acquire`), reports the state
//! it reached (`/v1/sync/reconcile`), keeps its leases alive (`/v1/sync/renew`) and gives them back
//! (`/v1/sync/release`).
//!
//! The leases are the deployment loop's own (`DeploymentStore::acquire_due_matching`): the loop
//! never steps a deployment a driver holds and a driver never gets one the loop holds; a lease
//! not renewed for `[server] deployment-lease-secs` lapses and anyone may take the deployment
//! over. Pull
//! deployments are never leased (their agent drives them).
//!
//! A lease belongs to a session: a name the driver chooses, namespaced by the token presenting it
//! (owner `session:<token id>:<session>`), so another token cannot act on a lease by guessing the
//! name, and no name can be the loop's (`manager-...`). Admin tokens drive every group, a
//! deployment-group token its own group, deployment tokens nothing (they are in the containers).

use alien_core::{
    ApiError, Deployment, DeploymentModel, DeploymentStatus, ErrorCode, FieldViolation, Id, IdKind,
    Platform, TokenType,
};
use alien_store::{AcquireFilter, SESSION_OWNER_PREFIX};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit::AuditTarget;
use alien_deployer::lifecycle;

use super::sync::{AgentState, SyncTarget, gated_target};
use super::{ApiState, Success};
use crate::auth::Subject;
use crate::policy::{Action, Target};
use crate::{ApiJson, HttpError};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/sync/acquire", post(acquire))
        .route("/v1/sync/reconcile", post(reconcile))
        .route("/v1/sync/renew", post(renew))
        .route("/v1/sync/release", post(release))
}

/// Longest session name.
pub const MAX_SESSION_LEN: usize = 64;
/// Deployments leased by one acquire when `limit` is not given.
pub const DEFAULT_ACQUIRE_LIMIT: u32 = 10;
/// Most deployments one acquire may lease (and may name in `deploymentIds`).
pub const MAX_ACQUIRE_LIMIT: u32 = 100;
/// Longest delay a release may put before the deployment is due again (one day).
pub const MAX_NEXT_STEP_AFTER_SECS: u64 = 86_400;

/// `POST /v1/sync/acquire` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcquireRequest {
    /// The driver's session: 1 to 64 characters of `A-Z a-z 0-9 . _ -`. Leases belong to it (and
    /// to the token presenting it).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub session: String,
    /// Only these deployments (each must exist, be a push deployment and be the caller's to
    /// drive); at most 100.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 100)]
    pub deployment_ids: Option<Vec<Id>>,
    /// Only deployments on these platforms (platforms that allow push mode).
    #[serde(default)]
    #[schema(min_items = 1)]
    pub platforms: Option<Vec<Platform>>,
    /// Most deployments to lease, 1..=100 (default 10).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A deployment leased to a session, with what the driver needs to step it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeasedDeployment {
    /// The deployment (its status says what to do: `pending`/`provisioning` -> provision,
    /// `update-pending`/`updating` -> update, `delete-pending`/`deleting` -> tear down).
    pub deployment: Deployment,
    /// The release to apply, as `/v1/sync` gives it to agents; absent when there is nothing to
    /// apply (the deployment runs it already, or is being deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<SyncTarget>,
    /// When the lease lapses unless renewed (renew and reconcile extend it).
    pub lease_expires_at: DateTime<Utc>,
}

/// The answer of an acquire.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcquireResponse {
    /// The deployments now leased to the session, most overdue first; empty when nothing is due.
    pub leases: Vec<LeasedDeployment>,
}

/// Leases due push deployments to an external driver's session.
#[utoipa::path(post, path = "/v1/sync/acquire", tag = "sync", request_body = AcquireRequest,
    responses((status = 200, body = AcquireResponse), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub async fn acquire(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<AcquireRequest>,
) -> Result<Json<AcquireResponse>, HttpError> {
    state.authz.authorize(&subject, Action::DriveDeployments, Target::none())?;
    let mut violations = Vec::new();
    let owner = session_owner(&subject, &body.session, &mut violations);
    let limit = body.limit.unwrap_or(DEFAULT_ACQUIRE_LIMIT);
    check_acquire(&body, limit, &mut violations);
    if !violations.is_empty() {
        return Err(ApiError::validation(violations).into());
    }
    check_named(&state, &subject, body.deployment_ids.as_deref().unwrap_or_default()).await?;
    let filter = AcquireFilter {
        deployment_group_id: match subject.token_type {
            TokenType::Admin => None,
            _ => Some(subject.deployment_group_id.clone().ok_or_else(ApiError::internal)?),
        },
        deployment_ids: body.deployment_ids,
        platforms: body.platforms,
    };
    let now = Utc::now();
    let leased = state
        .store
        .acquire_due_matching(&owner, now, limit, lease_duration(&state), &filter)
        .await
        .map_err(crate::error::store_error)?;
    let base = state.config.server.effective_base_url();
    let mut leases = Vec::with_capacity(leased.len());
    for deployment in &leased {
        match gated_target(&state, deployment.clone(), &base).await {
            Ok((deployment, target)) => leases.push(LeasedDeployment {
                deployment,
                target,
                lease_expires_at: lease_expiry(&state, now),
            }),
            Err(err) => {
                // The driver never learns of these leases: give them back rather than let the
                // deployments wait for the leases to lapse.
                for deployment in &leased {
                    let _ = state.store.release_lease(&deployment.id, &owner, None).await;
                }
                return Err(err.into());
            }
        }
    }
    Ok(Json(AcquireResponse { leases }))
}

/// The checks of an acquire's fields that need no lookup.
fn check_acquire(body: &AcquireRequest, limit: u32, violations: &mut Vec<FieldViolation>) {
    if !(1..=MAX_ACQUIRE_LIMIT).contains(&limit) {
        violations.push(FieldViolation::new(
            "limit",
            format!("must be between 1 and {MAX_ACQUIRE_LIMIT}, got {limit}"),
        ));
    }
    if let Some(platforms) = &body.platforms {
        if platforms.is_empty() {
            violations.push(FieldViolation::new(
                "platforms",
                "name at least one platform, or leave the field out for all",
            ));
        }
        for (i, platform) in platforms.iter().enumerate() {
            if !platform.allows(DeploymentModel::Push) {
                violations.push(FieldViolation::new(
                    format!("platforms[{i}]"),
                    format!(
                        "{platform} deployments always run in pull mode: their agent drives them"
                    ),
                ));
            }
        }
    }
    if let Some(ids) = &body.deployment_ids {
        if ids.is_empty() {
            violations.push(FieldViolation::new(
                "deploymentIds",
                "name at least one deployment, or leave the field out for all",
            ));
        }
        if ids.len() > MAX_ACQUIRE_LIMIT as usize {
            violations.push(FieldViolation::new(
                "deploymentIds",
                format!("at most {MAX_ACQUIRE_LIMIT} deployments, got {}", ids.len()),
            ));
        }
        for (i, id) in ids.iter().enumerate() {
            if !id.is(IdKind::Deployment) {
                violations.push(FieldViolation::new(
                    format!("deploymentIds[{i}]"),
                    format!("{id} is not a deployment id (dep_...)"),
                ));
            }
        }
    }
}

/// Each deployment named in an acquire exists (else 404), is the caller's to drive (else 403)
/// and is a push deployment (else 409: its agent drives it).
async fn check_named(state: &ApiState, subject: &Subject, ids: &[Id]) -> Result<(), ApiError> {
    for (i, id) in ids.iter().enumerate() {
        let Some(deployment) =
            state.store.get_deployment(id).await.map_err(crate::error::store_error)?
        else {
            return Err(ApiError::new(
                ErrorCode::DeploymentNotFound,
                format!("deploymentIds[{i}]: deployment {id} not found"),
            ));
        };
        state.authz.authorize(
            subject,
            Action::DriveDeployments,
            Target::deployment(&deployment.id, &deployment.deployment_group_id),
        )?;
        if deployment.deployment_model == DeploymentModel::Pull {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("deploymentIds[{i}]: {id} is a pull deployment: its agent drives it"),
            ));
        }
    }
    Ok(())
}

/// `POST /v1/sync/reconcile` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReconcileRequest {
    /// The leased deployment.
    pub deployment_id: Id,
    /// The session holding its lease.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub session: String,
    /// The state the driver reached (the shape agents report on `/v1/sync`).
    pub state: AgentState,
}

/// The deployment after a reconcile.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileResponse {
    /// The deployment as the manager now knows it (`deleted` once a deletion finished: the row
    /// is gone then).
    pub deployment: Deployment,
    /// What is still to apply (absent when it runs its desired release or is being deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<SyncTarget>,
    /// When the lease, extended by this call, lapses; absent once the deployment is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// Records the state a driver reached on a deployment it holds the lease of.
///
/// The report goes through the transition table as an agent's report does (`AgentReported`:
/// `update-pending`, `delete-pending` and `stale` cannot be reported) with the current release,
/// platform state and error; reaching `running` or a `*-failed` status ends a requested retry;
/// `running` on an older release than the desired one makes the deployment `update-pending`
/// again; `deleted` removes the row. An unchanged status that is still in progress (`pending`,
/// `provisioning`, `updating`, `deleting`, ...) records the platform state only (progress
/// within a step). The call also renews the lease.
#[utoipa::path(post, path = "/v1/sync/reconcile", tag = "sync", request_body = ReconcileRequest,
    responses((status = 200, body = ReconcileResponse), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn reconcile(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<ReconcileRequest>,
) -> Result<Response, HttpError> {
    let mut violations = Vec::new();
    let (deployment, owner) =
        leased_deployment(&state, &subject, &body.deployment_id, &body.session, &mut violations)
            .await?;
    let report = body.state;
    if report.platform != deployment.platform {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("state.platform: the deployment runs on {}", deployment.platform),
        )
        .into());
    }
    let now = Utc::now();
    if !state
        .store
        .renew_lease(&deployment.id, &owner, now)
        .await
        .map_err(crate::error::store_error)?
    {
        return Err(lease_not_held(&state, &deployment, &body.session).into());
    }
    let id = deployment.id.clone();
    let detail = json!({ "session": body.session });
    let recorded =
        lifecycle::record_driver_report(state.store.as_ref(), &deployment, &owner, report, detail)
            .await
            .map_err(crate::error::store_error)?;
    let deployment = match recorded {
        lifecycle::DriverReport::Recorded(deployment) => *deployment,
        lifecycle::DriverReport::LeaseLost => {
            return Err(lease_not_held(&state, &deployment, &body.session).into());
        }
    };
    if deployment.status == DeploymentStatus::Deleted {
        let body = ReconcileResponse { deployment, target: None, lease_expires_at: None };
        return Ok(audited(&id, body));
    }
    let base = state.config.server.effective_base_url();
    let (deployment, target) = gated_target(&state, deployment, &base).await?;
    let body =
        ReconcileResponse { deployment, target, lease_expires_at: Some(lease_expiry(&state, now)) };
    Ok(audited(&id, body))
}

/// `POST /v1/sync/renew` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewRequest {
    /// The leased deployment.
    pub deployment_id: Id,
    /// The session holding its lease.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub session: String,
}

/// A renewed lease.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewResponse {
    /// The deployment.
    pub deployment_id: Id,
    /// When the lease now lapses unless renewed again.
    pub lease_expires_at: DateTime<Utc>,
}

/// Extends a session's lease; 409 when the session no longer holds it (released, or lapsed and
/// taken over).
#[utoipa::path(post, path = "/v1/sync/renew", tag = "sync", request_body = RenewRequest,
    responses((status = 200, body = RenewResponse), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn renew(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<RenewRequest>,
) -> Result<Response, HttpError> {
    let mut violations = Vec::new();
    let (deployment, owner) =
        leased_deployment(&state, &subject, &body.deployment_id, &body.session, &mut violations)
            .await?;
    let now = Utc::now();
    if !state
        .store
        .renew_lease(&deployment.id, &owner, now)
        .await
        .map_err(crate::error::store_error)?
    {
        return Err(lease_not_held(&state, &deployment, &body.session).into());
    }
    let body = RenewResponse {
        deployment_id: deployment.id.clone(),
        lease_expires_at: lease_expiry(&state, now),
    };
    Ok(audited(&deployment.id, body))
}

/// `POST /v1/sync/release` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The leased deployment.
    pub deployment_id: Id,
    /// The session holding its lease.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub session: String,
    /// Seconds before the deployment is due again, for anyone (0..=86400; default 0: due at once
    /// if it still has work to do).
    #[serde(default)]
    #[schema(maximum = 86400)]
    pub next_step_after_secs: Option<u64>,
}

/// Ends a session's lease; 409 when the session does not hold it.
#[utoipa::path(post, path = "/v1/sync/release", tag = "sync", request_body = ReleaseRequest,
    responses((status = 200, body = Success), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn release(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<ReleaseRequest>,
) -> Result<Response, HttpError> {
    let mut violations = Vec::new();
    let delay = body.next_step_after_secs.unwrap_or(0);
    if delay > MAX_NEXT_STEP_AFTER_SECS {
        violations.push(FieldViolation::new(
            "nextStepAfterSecs",
            format!("at most {MAX_NEXT_STEP_AFTER_SECS} (one day), got {delay}"),
        ));
    }
    let (deployment, owner) =
        leased_deployment(&state, &subject, &body.deployment_id, &body.session, &mut violations)
            .await?;
    let next = (delay > 0)
        .then(|| Utc::now() + chrono::Duration::seconds(i64::try_from(delay).unwrap_or(i64::MAX)));
    if !state
        .store
        .release_lease(&deployment.id, &owner, next)
        .await
        .map_err(crate::error::store_error)?
    {
        return Err(lease_not_held(&state, &deployment, &body.session).into());
    }
    Ok(audited(&deployment.id, Success { success: true }))
}

/// The lease owner of `session` presented by `subject`, or a violation naming `session`.
fn session_owner(subject: &Subject, session: &str, violations: &mut Vec<FieldViolation>) -> String {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let problem = if session.is_empty() {
        Some("must not be empty".to_owned())
    } else if session.len() > MAX_SESSION_LEN {
        Some(format!("at most {MAX_SESSION_LEN} characters, got {}", session.len()))
    } else if !session.chars().all(valid_char) {
        Some("only letters, digits, '.', '_' and '-' are allowed".to_owned())
    } else {
        None
    };
    if let Some(problem) = problem {
        violations.push(FieldViolation::new("session", problem));
    }
    format!("{SESSION_OWNER_PREFIX}{}:{session}", subject.token_id)
}

/// Checks the input of a call on one leased deployment (`violations` may hold earlier ones),
/// then finds the deployment (404) and checks that the caller may drive it (403).
async fn leased_deployment(
    state: &ApiState,
    subject: &Subject,
    id: &Id,
    session: &str,
    violations: &mut Vec<FieldViolation>,
) -> Result<(Deployment, String), ApiError> {
    state.authz.authorize(subject, Action::DriveDeployments, Target::none())?;
    let owner = session_owner(subject, session, violations);
    if !id.is(IdKind::Deployment) {
        violations.push(FieldViolation::new(
            "deploymentId",
            format!("{id} is not a deployment id (dep_...)"),
        ));
    }
    if !violations.is_empty() {
        return Err(ApiError::validation(std::mem::take(violations)));
    }
    let deployment = super::authorized_deployment(
        &*state.store,
        &*state.authz,
        subject,
        Action::DriveDeployments,
        id,
    )
    .await?;
    Ok((deployment, owner))
}

fn lease_not_held(state: &ApiState, deployment: &Deployment, session: &str) -> ApiError {
    if deployment.deployment_model == DeploymentModel::Pull {
        return ApiError::new(
            ErrorCode::Conflict,
            format!(
                "deployment {} is a pull deployment: its agent drives it and it is never leased",
                deployment.id
            ),
        );
    }
    ApiError::new(
        ErrorCode::Conflict,
        format!(
            "session {session:?} does not hold the lease of deployment {}: it was never acquired \
             by this session and token, was released, or lapsed and was taken over",
            deployment.id
        ),
    )
    .with_hint(format!(
        "acquire it again with POST /v1/sync/acquire; a lease lapses {} s after it was acquired, \
         renewed or reconciled",
        state.config.server.deployment_lease_secs
    ))
}

/// How long a lease lasts without renewal (`[server] deployment-lease-secs`, the loop's too).
fn lease_duration(state: &ApiState) -> std::time::Duration {
    std::time::Duration::from_secs(state.config.server.deployment_lease_secs)
}

fn lease_expiry(state: &ApiState, from: DateTime<Utc>) -> DateTime<Utc> {
    from + chrono::Duration::from_std(lease_duration(state)).unwrap_or(chrono::Duration::MAX)
}

/// 200 with the body, naming the deployment in the audit log (the route has no id in its path).
fn audited<T: Serialize>(id: &Id, body: T) -> Response {
    let mut response = Json(body).into_response();
    response.extensions_mut().insert(AuditTarget(id.to_string()));
    response
}
