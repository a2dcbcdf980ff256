//! The deployment lifecycle for its three drivers: the deployment loop (push mode, [`crate::runner`]),
//! agents' syncs (`POST /v1/sync`) and external drivers (`POST /v1/sync/reconcile`). Each rule is
//! here once, over the store's traits, and the drivers call it:
//!
//! - [`settle`]: a finished deletion removes the row (and its tokens); a deployment running an
//!   older release than its desired one (a release arrived meanwhile) goes back to
//!   `update-pending`;
//! - [`advance`]: [`settle`]'s catch-up, then an `update-pending` deployment begins its update
//!   when its group's rollout lets it (`RolloutPolicy::decide` behind `begin_update`);
//! - [`target`]: what a deployment should run: its desired release's stack for its platform, its
//!   environment variables and its token;
//! - [`record_agent_report`] and [`record_driver_report`]: a report of what runs, through the
//!   transition table (`AgentReported`);
//! - [`record_outcome`] and [`record_failure`]: the outcome of one of the loop's steps.
//!
//! Every write is conditional where a decision was made on a read, so a retry, release or delete
//! landing meanwhile is never overwritten. The rules themselves (which transition, which report
//! lags behind) live in alien-core; this module applies them to the store.

use alien_core::sync::{AgentState, runs_older_release};
use alien_core::{
    Deployment, DeploymentError, DeploymentEvent, DeploymentStatus, EnvironmentVariable, Id,
    RawToken, Stack,
};
use alien_store::{BeginUpdate, DeploymentPatch, Entity, Store, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde_json::Value;

use alien_impersonation::{Credentials, ImpersonationTarget, Impersonator, SessionName};

use crate::platform::StepOutcome;

/// A finished deletion removes the row (its tokens and lease go with it); a deployment that runs
/// an older release than its desired one, without having been asked to (a release arrived while
/// it updated, failed or was silent), is made `update-pending` again. Returns the deployment as
/// it now is (`deleted` for a removed row). A deployment that changed meanwhile is returned as
/// read: the next sync or step looks again.
pub async fn settle(store: &dyn Store, deployment: Deployment) -> StoreResult<Deployment> {
    if deployment.status == DeploymentStatus::Deleted {
        store.delete_deployment(&deployment.id).await?;
        return Ok(deployment);
    }
    let mut deployment = deployment;
    // A push deployment that is `running` is not due again, so a catch-up that lost a race
    // (a heartbeat moved it meanwhile) is decided again on a fresh read, a few times.
    for _ in 0..SETTLE_ATTEMPTS {
        if !runs_older_release(&deployment) {
            return Ok(deployment);
        }
        let patch = DeploymentPatch {
            reason: "a newer release arrived".into(),
            expect_status: Some(deployment.status),
            ..Default::default()
        };
        match store.transition(&deployment.id, DeploymentEvent::NewDesiredRelease, patch).await {
            Ok(pending) => return Ok(pending),
            Err(StoreError::Conflict(_) | StoreError::InvalidTransition(_)) => {
                match store.get_deployment(&deployment.id).await? {
                    Some(again) => deployment = again,
                    None => return Ok(deployment),
                }
            }
            Err(other) => return Err(other),
        }
    }
    Ok(deployment)
}

/// Reads and decisions [`settle`] makes at most when its conditional write keeps losing.
const SETTLE_ATTEMPTS: usize = 3;

/// Where [`advance`] left a deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Advanced {
    /// Nothing holds it: the deployment as it now is (`updating` if its update began).
    Ready(Deployment),
    /// Its group's rollout holds its update back.
    Held {
        /// The deployment, still `update-pending`.
        deployment: Deployment,
        /// When it may begin, when that is a time.
        until: Option<DateTime<Utc>>,
        /// Why.
        reason: String,
    },
}

/// [`settle`], then, for an `update-pending` deployment, the beginning of its update through its
/// group's rollout (`reason` goes to the event log).
pub async fn advance(
    store: &dyn Store,
    deployment: Deployment,
    reason: &str,
) -> StoreResult<Advanced> {
    let deployment = settle(store, deployment).await?;
    if runs_older_release(&deployment) {
        // The catch-up lost a race (the deployment changed meanwhile): nothing until it is read
        // again, so an older read never bypasses the rollout.
        let reason = "the deployment changed meanwhile; look again".to_owned();
        return Ok(Advanced::Held { deployment, until: None, reason });
    }
    if deployment.status != DeploymentStatus::UpdatePending {
        return Ok(Advanced::Ready(deployment));
    }
    let patch = DeploymentPatch { reason: reason.into(), ..Default::default() };
    match store.begin_update(&deployment.id, Utc::now(), patch).await? {
        BeginUpdate::Begun(begun) => Ok(Advanced::Ready(*begun)),
        BeginUpdate::Held { until, reason } => Ok(Advanced::Held { deployment, until, reason }),
    }
}

/// What a deployment should run, and the secrets it runs with.
#[derive(Debug, Clone)]
pub struct Target {
    /// The desired release.
    pub release_id: Id,
    /// That release's stack for the deployment's platform.
    pub stack: Stack,
    /// The deployment's environment variables (secrets opened).
    pub variables: Vec<EnvironmentVariable>,
    /// The deployment's own token (the containers' `ALIEN_*` credentials, registry pulls).
    pub token: RawToken,
    /// The deployment's platform target as it was given (what [`credentials_for`] impersonates).
    pub platform_target: Option<Value>,
}

/// Why a deployment has no [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoTarget {
    /// No release for its platform yet.
    NoRelease,
    /// The desired release has no stack for the deployment's platform.
    NoStack {
        /// The release.
        release_id: Id,
    },
}

impl NoTarget {
    /// As the error of a deployment step.
    pub fn error(&self, deployment: &Deployment) -> DeploymentError {
        match self {
            NoTarget::NoRelease => DeploymentError {
                code: NO_RELEASE.into(),
                message: "the deployment has no desired release".into(),
                resource_id: None,
            },
            NoTarget::NoStack { release_id } => DeploymentError {
                code: NO_STACK.into(),
                message: format!(
                    "release {release_id} has no stack for platform {}",
                    deployment.platform
                ),
                resource_id: None,
            },
        }
    }
}

/// Error code of a step of a deployment without a desired release.
pub const NO_RELEASE: &str = "NO_RELEASE";
/// Error code of a step whose release has no stack for the deployment's platform.
pub const NO_STACK: &str = "NO_STACK_FOR_PLATFORM";

/// The desired release's stack for `deployment`'s platform, with its variables, token and
/// platform target: one read of the store ([`alien_store::DeploymentStore::deployment_inputs`]).
pub async fn target(
    store: &dyn Store,
    deployment: &Deployment,
) -> StoreResult<Result<Target, NoTarget>> {
    let Some(release_id) = deployment.desired_release_id.clone() else {
        return Ok(Err(NoTarget::NoRelease));
    };
    let inputs = store.deployment_inputs(&deployment.id, Some(&release_id)).await?;
    // Releases are never deleted: a desired release that is gone is damage, not a missing row
    // the caller could fix (an agent would give up on a 404).
    let release = inputs.release.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "desired release {release_id} of deployment {} is missing",
            deployment.id
        ))
    })?;
    let Some(stack) = release.stack.get(&deployment.platform).cloned() else {
        return Ok(Err(NoTarget::NoStack { release_id }));
    };
    let token = inputs
        .token
        .ok_or_else(|| StoreError::Corrupt(format!("deployment {} has no token", deployment.id)))?;
    Ok(Ok(Target {
        release_id,
        stack,
        variables: inputs.variables,
        token,
        platform_target: inputs.target,
    }))
}

/// Credentials for `deployment`'s target from `impersonator` (`purpose` names the session, e.g.
/// `deploy`): [`credentials_for`] the target the store holds.
pub async fn credentials(
    store: &dyn Store,
    impersonator: &dyn Impersonator,
    deployment: &Deployment,
    purpose: &str,
) -> StoreResult<Result<Credentials, DeploymentError>> {
    let stored = store.deployment_target(&deployment.id).await?;
    Ok(credentials_for(impersonator, deployment, stored.as_ref(), purpose).await)
}

/// Credentials for `deployment`'s platform target `stored` from `impersonator`: the ambient
/// identity for a platform that is not a cloud or a deployment without a target. Why they could
/// not be had is a deployment error naming the binding to configure.
pub async fn credentials_for(
    impersonator: &dyn Impersonator,
    deployment: &Deployment,
    stored: Option<&Value>,
    purpose: &str,
) -> Result<Credentials, DeploymentError> {
    let session = SessionName::new(purpose, deployment.id.as_str());
    let minted = match ImpersonationTarget::from_deployment_target(
        deployment.platform,
        stored,
        session,
        None,
    ) {
        Ok(target) => impersonator.credentials(&target).await,
        Err(err) => Err(err),
    };
    minted.map_err(|err| DeploymentError {
        code: err.code().into(),
        message: err.to_string(),
        resource_id: None,
    })
}

/// Whether `deployment` has nothing to apply: it runs its desired release (no retry asked), or it
/// is being deleted.
pub fn has_nothing_to_apply(deployment: &Deployment) -> bool {
    let done = deployment.current_release_id.is_some()
        && deployment.current_release_id == deployment.desired_release_id
        && deployment.status == DeploymentStatus::Running
        && !deployment.retry_requested;
    done || deployment.status.is_deleting() || deployment.desired_release_id.is_none()
}

/// The steady form of an agent's report (running a release, with its platform state, no error):
/// what [`record_steady_heartbeat`] checks the deployment against. `None` for any other report.
pub fn steady_report(report: &AgentState) -> Option<alien_store::SteadyReport> {
    let (Some(release), Some(state)) = (&report.current_release, &report.stack_state) else {
        return None;
    };
    if report.status != DeploymentStatus::Running || report.error.is_some() {
        return None;
    }
    Some(alien_store::SteadyReport {
        platform: report.platform,
        release: release.release_id.clone(),
        stack_state: serde_json::to_string(state).ok()?,
    })
}

/// Most syncs: the agent reports exactly what the manager already holds for its deployment
/// (running its desired release, the same platform state, no error, no retry asked). Then the
/// report changes nothing but the heartbeat, [`record_agent_report`] would reach the same
/// answer (no target; the manager's view is the report), and this records only the heartbeat, in
/// one conditional write a store may group-commit. `false`: something differs (or the report is
/// not steady); record it the full way.
pub async fn record_steady_heartbeat(
    store: &dyn Store,
    deployment: &Id,
    report: &AgentState,
) -> StoreResult<bool> {
    let Some(steady) = steady_report(report) else { return Ok(false) };
    store.record_steady_heartbeat(deployment, &steady, Utc::now()).await
}

/// Records an agent's report ([`record_agent_report`]), deciding again on a fresh read when the
/// deployment changed meanwhile (a retry, a release, a delete landing during the sync), a few
/// times. `Ok(None)`: it kept changing; the agent syncs again. A deployment deleted meanwhile is
/// `NotFound`.
pub async fn record_agent_report_fresh(
    store: &dyn Store,
    deployment: Deployment,
    report: &AgentState,
) -> StoreResult<Option<Deployment>> {
    let mut deployment = deployment;
    for _ in 0..SETTLE_ATTEMPTS {
        if let Some(done) = record_agent_report(store, &deployment, report).await? {
            return Ok(Some(done));
        }
        deployment = store.get_deployment(&deployment.id).await?.ok_or_else(|| {
            StoreError::NotFound { entity: Entity::Deployment, id: deployment.id.to_string() }
        })?;
    }
    Ok(None)
}

/// Records an agent's report against `deployment` as read (`POST /v1/sync`). `Ok(None)`: the
/// deployment changed since it was read; read it again and call again.
///
/// A report that lags behind the manager (`AgentState::lags_behind`) is a heartbeat with state;
/// a report of the status the deployment already has is one conditional update; anything else
/// goes through the transition table, and a retry or redeploy is spent once the agent works on
/// it or runs the desired release. A refused report is `StoreError::InvalidTransition`.
pub async fn record_agent_report(
    store: &dyn Store,
    deployment: &Deployment,
    report: &AgentState,
) -> StoreResult<Option<Deployment>> {
    let now = Utc::now();
    if report.lags_behind(deployment) {
        let patch = DeploymentPatch {
            current_release_id: report.current_release.clone().map(|r| r.release_id),
            stack_state: report.stack_state.clone(),
            last_heartbeat_at: Some(now),
            ..Default::default()
        };
        return store.record_report(&deployment.id, deployment.status, patch).await;
    }
    let patch = DeploymentPatch {
        current_release_id: report.current_release.clone().map(|r| r.release_id),
        stack_state: report.stack_state.clone(),
        error: Some(report.error.clone()),
        retry_requested: report.takes_up_retry(deployment).then_some(false),
        last_heartbeat_at: Some(now),
        reason: "sync".into(),
        expect_status: Some(deployment.status),
        ..Default::default()
    };
    let event = DeploymentEvent::AgentReported(report.status);
    // Most syncs report the status the deployment already has: one conditional update.
    if deployment.status == report.status
        && deployment.status.transition(event) == Ok(deployment.status)
    {
        return store.record_report(&deployment.id, deployment.status, patch).await;
    }
    match store.transition(&deployment.id, event, patch).await {
        Ok(moved) => settle_deleted(store, moved).await.map(Some),
        Err(StoreError::Conflict(_) | StoreError::NotFound { .. }) => Ok(None),
        Err(other) => Err(other),
    }
}

/// What [`record_driver_report`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverReport {
    /// Recorded: the deployment as it now is (`deleted` when the report finished a deletion and
    /// the row is gone).
    Recorded(Box<Deployment>),
    /// The driver's session no longer holds the deployment's lease: nothing was recorded.
    LeaseLost,
}

/// Records the state an external driver reached on a deployment it holds the lease of
/// (`owner`, `POST /v1/sync/reconcile`).
///
/// An unchanged status that is still in progress records the platform state only (progress
/// within a step); anything else goes through the transition table as an agent's report does,
/// with the current release, platform state and error, and reaching `running` or a `*-failed`
/// status ends a requested retry. A refused report is `StoreError::InvalidTransition`.
pub async fn record_driver_report(
    store: &dyn Store,
    deployment: &Deployment,
    owner: &str,
    report: AgentState,
    detail: Value,
) -> StoreResult<DriverReport> {
    let settles = report.status == DeploymentStatus::Running || report.status.is_failed();
    if report.status == deployment.status && !settles {
        if let Some(stack_state) = &report.stack_state
            && !store.save_progress(&deployment.id, owner, stack_state).await?
        {
            return Ok(DriverReport::LeaseLost);
        }
        let now = store.get_deployment(&deployment.id).await?.ok_or_else(|| {
            StoreError::NotFound { entity: Entity::Deployment, id: deployment.id.to_string() }
        })?;
        return Ok(DriverReport::Recorded(Box::new(now)));
    }
    let patch = DeploymentPatch {
        current_release_id: report.current_release.map(|r| r.release_id),
        stack_state: report.stack_state,
        error: Some(report.error),
        retry_requested: settles.then_some(false),
        reason: "reconcile".into(),
        detail: Some(detail),
        ..Default::default()
    };
    let event = DeploymentEvent::AgentReported(report.status);
    let moved = store.transition(&deployment.id, event, patch).await?;
    Ok(DriverReport::Recorded(Box::new(settle_deleted(store, moved).await?)))
}

/// The deletion half of [`settle`] (a report's catch-up happens when its target is computed).
async fn settle_deleted(store: &dyn Store, moved: Deployment) -> StoreResult<Deployment> {
    if moved.status == DeploymentStatus::Deleted {
        store.delete_deployment(&moved.id).await?;
    }
    Ok(moved)
}

/// What a recorded step leaves for later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStep {
    /// The step finished (`running`, `deleted`, a `*-failed` status): due when something changes.
    Finished,
    /// The platform is converging: step again after this.
    Wait(std::time::Duration),
}

/// Records the outcome of one of the loop's apply (`release_id`) or destroy (`None`) steps on a
/// deployment leased by `owner`. The platform state is saved first (so a delete requested
/// meanwhile knows what to remove, and a crash repeats the step from it); `Done` moves the
/// deployment on ([`settle`]d: a finished deletion removes the row, a release that arrived
/// during the update makes it `update-pending`), `Failed` to its `*-failed` status.
pub async fn record_outcome(
    store: &dyn Store,
    owner: &str,
    deployment: &Deployment,
    release_id: Option<&Id>,
    outcome: StepOutcome,
) -> StoreResult<AfterStep> {
    match outcome {
        StepOutcome::Done { state } => {
            save(store, owner, deployment, &state).await?;
            let done = DeploymentPatch {
                current_release_id: release_id.cloned(),
                error: release_id.map(|_| None),
                retry_requested: release_id.map(|_| false),
                reason: "step".into(),
                ..Default::default()
            };
            let moved =
                store.transition(&deployment.id, DeploymentEvent::StepSucceeded, done).await?;
            settle(store, moved).await?;
            Ok(AfterStep::Finished)
        }
        StepOutcome::Wait { state, wait } => {
            save(store, owner, deployment, &state).await?;
            Ok(AfterStep::Wait(wait))
        }
        StepOutcome::Failed { state, error } => {
            record_failure(store, owner, deployment, state.as_ref(), error).await?;
            Ok(AfterStep::Finished)
        }
    }
}

/// A failed step: the state it left is saved, and the deployment moves to its `*-failed` status
/// with `error` (a requested retry is spent).
pub async fn record_failure(
    store: &dyn Store,
    owner: &str,
    deployment: &Deployment,
    state: Option<&Value>,
    error: DeploymentError,
) -> StoreResult<()> {
    if let Some(state) = state {
        save(store, owner, deployment, state).await?;
    }
    tracing::warn!(deployment = %deployment.id, code = %error.code, resource = ?error.resource_id, message = %error.message, "deployment step failed");
    let failed = DeploymentPatch {
        error: Some(Some(error)),
        retry_requested: Some(false),
        reason: "step".into(),
        ..Default::default()
    };
    store.transition(&deployment.id, DeploymentEvent::StepFailed, failed).await?;
    Ok(())
}

/// Saves the platform state of a step under `owner`'s lease (a lost lease is logged: the step's
/// outcome is still recorded, as the next holder starts from the state it reads).
pub async fn save(
    store: &dyn Store,
    owner: &str,
    deployment: &Deployment,
    state: &Value,
) -> StoreResult<()> {
    if !store.save_progress(&deployment.id, owner, state).await? {
        tracing::warn!(deployment = %deployment.id, "lost the deployment's lease during a step");
    }
    Ok(())
}
