//! Pull mode (spec/deployer.md): an agent in the customer environment registers with
//! `POST /v1/initialize` (a deployment-group token; creates or finds its deployment and returns
//! the deployment token) and then calls `POST /v1/sync` every interval: it reports what it runs,
//! and gets back the release it should run with everything needed to run it. Each sync is the
//! agent's heartbeat. The deployment loop never steps pull deployments.

use alien_core::deployment::check_name;
use alien_core::{
    ApiError, Deployment, DeploymentModel, ErrorCode, FieldViolation, Id, IdKind, Platform,
    TokenType,
};
use alien_deployer::lifecycle;
use alien_store::{DeploymentFilter, NewDeployment, PageRequest};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;

pub use alien_core::sync::{
    AgentState, InitializeRequest, Initialized, ReleaseRef, SyncRequest, SyncResponse, SyncTarget,
    TargetConfig,
};

use super::ApiState;
use crate::auth::Subject;
use crate::policy::{Action, Target};
use crate::{ApiJson, HttpError};

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/initialize", post(initialize)).route("/v1/sync", post(sync))
}

/// Registers an agent: creates its pull-mode deployment, or finds it by name (an agent that
/// lost its state directory gets its deployment back, not a duplicate).
#[utoipa::path(post, path = "/v1/initialize", tag = "sync", request_body = InitializeRequest,
    responses((status = 201, body = Initialized), (status = 200, body = Initialized), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
pub async fn initialize(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<InitializeRequest>,
) -> Result<Response, HttpError> {
    let platform = body.platform.unwrap_or(Platform::Local);
    let mut violations = Vec::new();
    if let Err(message) = check_name(&body.name) {
        violations.push(FieldViolation::new("name", message));
    }
    if !platform.allows(DeploymentModel::Pull) {
        violations.push(FieldViolation::new(
            "platform",
            format!("{platform} deployments cannot run in pull mode"),
        ));
    }
    if !violations.is_empty() {
        return Err(ApiError::validation(violations).into());
    }
    let group = match (subject.token_type, &body.deployment_group_id) {
        (TokenType::DeploymentGroup, given) => {
            let own = subject.deployment_group_id.clone().ok_or_else(ApiError::internal)?;
            if given.as_ref().is_some_and(|g| *g != own) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "a deployment-group token registers agents in its own group only",
                )
                .into());
            }
            own
        }
        // The given group, or the only one.
        (TokenType::Admin, given) => {
            super::deployments::resolve_group(&state, &subject, given.as_ref()).await?
        }
        (TokenType::Deployment, _) => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "initialize takes a deployment-group token; an agent with a deployment token syncs directly",
            )
            .into());
        }
    };
    state.authz.authorize(&subject, Action::CreateDeployment, Target::group(&group))?;
    let filter = DeploymentFilter {
        deployment_group_id: Some(group.clone()),
        name: Some(body.name.clone()),
        ..Default::default()
    };
    let found = state
        .store
        .list_deployments(&filter, &PageRequest { limit: 1, cursor: None })
        .await
        .map_err(crate::error::store_error)?;
    if let Some(existing) = found.items.into_iter().next() {
        if existing.deployment_model != DeploymentModel::Pull {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "deployment {} ({}) is a push deployment; an agent cannot take it over",
                    existing.name, existing.id
                ),
            )
            .into());
        }
        let token =
            state.store.deployment_token(&existing.id).await.map_err(crate::error::store_error)?;
        let token = token.ok_or_else(ApiError::internal)?;
        let body = Initialized {
            deployment_id: existing.id,
            token: token.expose().to_owned(),
            created: false,
        };
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let id = Id::new(IdKind::Deployment);
    let token =
        alien_store::NewToken::for_deployment(&id, &group).map_err(|_| ApiError::internal())?;
    let raw = token.raw.clone();
    let new = NewDeployment {
        id: id.clone(),
        name: body.name,
        platform,
        deployment_model: DeploymentModel::Pull,
        deployment_group_id: group.clone(),
        environment_variables: Vec::new(),
        stack_settings: None,
        region: None,
        target: None,
        token,
    };
    let deployment = state.store.create_deployment(new).await.map_err(crate::error::store_error)?;
    let body =
        Initialized { deployment_id: deployment.id, token: raw.expose().to_owned(), created: true };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// What the manager knows of `deployment`, in the shape agents report it.
pub(super) fn agent_state(deployment: &Deployment) -> AgentState {
    AgentState {
        status: deployment.status,
        platform: deployment.platform,
        current_release: deployment
            .current_release_id
            .clone()
            .map(|release_id| ReleaseRef { release_id }),
        stack_state: deployment.stack_state.clone(),
        error: deployment.error.clone(),
    }
}

/// An agent's sync: records its report (and heartbeat), answers its target.
#[utoipa::path(post, path = "/v1/sync", tag = "sync", request_body = SyncRequest,
    responses((status = 200, body = SyncResponse), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn sync(
    State(state): State<ApiState>,
    subject: Subject,
    ApiJson(body): ApiJson<SyncRequest>,
) -> Result<Json<SyncResponse>, HttpError> {
    if let Some(answer) = steady_sync(&state, &subject, &body).await? {
        return Ok(answer);
    }
    let deployment = super::authorized_deployment(
        &*state.store,
        &*state.authz,
        &subject,
        Action::Sync,
        &body.deployment_id,
    )
    .await?;
    if deployment.deployment_model != DeploymentModel::Pull {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "deployment {} is a push deployment: the manager steps it (external drivers use /v1/sync/acquire)",
                deployment.id
            ),
        )
        .into());
    }
    alien_core::sync::check_events(&body.events)
        .map_err(|violation| ApiError::validation(vec![violation]))?;
    let Some(report) = body.current_state else {
        state
            .store
            .record_heartbeat(&deployment.id, Utc::now())
            .await
            .map_err(crate::error::store_error)?;
        record_events(&state, &deployment.id, &body.events).await?;
        return answer(&state, deployment).await;
    };
    if report.platform != deployment.platform {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("currentState.platform: the deployment runs on {}", deployment.platform),
        )
        .into());
    }
    let recorded = lifecycle::record_agent_report_fresh(state.store.as_ref(), deployment, &report)
        .await
        .map_err(crate::error::store_error)?;
    if let Some(done) = recorded {
        // Only once the report is taken: a refused sync records nothing, and its retry does.
        record_events(&state, &done.id, &body.events).await?;
        return answer(&state, done).await;
    }
    Err(ApiError::new(ErrorCode::Conflict, "the deployment kept changing during the sync")
        .with_hint("sync again")
        .into())
}

/// An agent syncing with its own deployment token, reporting exactly what the manager holds
/// ([`lifecycle::record_steady_heartbeat`]): its heartbeat is recorded without reading the
/// deployment, and the answer is the full path's (no target; the manager's view is the report).
/// `None`: anything else, for the full path.
async fn steady_sync(
    state: &ApiState,
    subject: &Subject,
    body: &SyncRequest,
) -> Result<Option<Json<SyncResponse>>, HttpError> {
    let (Some(report), Some(group)) = (&body.current_state, &subject.deployment_group_id) else {
        return Ok(None);
    };
    let own = subject.token_type == TokenType::Deployment
        && subject.deployment_id.as_ref() == Some(&body.deployment_id);
    if !own || !body.events.is_empty() {
        return Ok(None);
    }
    state.authz.authorize(subject, Action::Sync, Target::deployment(&body.deployment_id, group))?;
    let steady =
        lifecycle::record_steady_heartbeat(state.store.as_ref(), &body.deployment_id, report)
            .await
            .map_err(crate::error::store_error)?;
    if !steady {
        return Ok(None);
    }
    Ok(Some(Json(SyncResponse {
        target: None,
        current_state: report.clone(),
        commands_url: format!("{}/v1", state.config.server.effective_base_url()),
    })))
}

/// Records an agent's events in its deployment's events.
async fn record_events(
    state: &ApiState,
    deployment: &alien_core::Id,
    events: &[alien_core::sync::SyncEvent],
) -> Result<(), ApiError> {
    for event in events {
        state
            .store
            .record_event(deployment, &event.reason, event.detail.clone())
            .await
            .map_err(crate::error::store_error)?;
    }
    Ok(())
}

/// The answer of a sync: the manager's view and the target.
async fn answer(state: &ApiState, deployment: Deployment) -> Result<Json<SyncResponse>, HttpError> {
    let base = state.config.server.effective_base_url();
    let (deployment, target) = gated_target(state, deployment, &base).await?;
    Ok(Json(SyncResponse {
        target,
        current_state: agent_state(&deployment),
        commands_url: format!("{base}/v1"),
    }))
}

/// The target of a deployment behind the lifecycle's rules ([`alien_deployer::lifecycle::advance`]):
/// a deployment running an older release than its desired one is `update-pending` again, an
/// `update-pending` deployment begins its update (`updating`) when its group's rollout lets it, and
/// gets no target while it is held back.
pub(super) async fn gated_target(
    state: &ApiState,
    deployment: Deployment,
    base: &str,
) -> Result<(Deployment, Option<SyncTarget>), ApiError> {
    let advanced = lifecycle::advance(state.store.as_ref(), deployment, "rollout")
        .await
        .map_err(crate::error::store_error)?;
    match advanced {
        lifecycle::Advanced::Ready(deployment) => {
            let target = target_of(state, &deployment, base).await?;
            Ok((deployment, target))
        }
        lifecycle::Advanced::Held { deployment, .. } => Ok((deployment, None)),
    }
}

/// The desired release, unless the deployment already runs it ([`lifecycle::target`] with the
/// registry to pull from and the manager's URL).
pub(super) async fn target_of(
    state: &ApiState,
    deployment: &Deployment,
    base: &str,
) -> Result<Option<SyncTarget>, ApiError> {
    if lifecycle::has_nothing_to_apply(deployment) {
        return Ok(None);
    }
    let target = lifecycle::target(state.store.as_ref(), deployment)
        .await
        .map_err(crate::error::store_error)?;
    let Ok(target) = target else { return Ok(None) };
    let token = target.token;
    Ok(Some(SyncTarget {
        release_id: target.release_id,
        stack: target.stack,
        config: TargetConfig {
            deployment_name: deployment.name.clone(),
            environment_variables: target.variables,
            manager_url: base.to_owned(),
            registry: state
                .registries
                .for_platform(deployment.platform)
                .pull_credentials(alien_registry::PullFor {
                    deployment_id: deployment.id.as_str(),
                    deployment_token: token.expose(),
                })
                .await
                .map_err(|e| {
                    tracing::warn!(deployment = %deployment.id, error = %e, "no pull credentials");
                    ApiError::new(alien_core::ErrorCode::Unavailable, e.to_string())
                })?,
        },
    }))
}
