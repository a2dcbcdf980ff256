//! Wire types of pull mode (spec/deployer.md "Pull mode"): `POST /v1/initialize` and
//! `POST /v1/sync`, shared by the manager that answers them and the agent that calls them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Deployment, DeploymentError, DeploymentStatus, EnvironmentVariable, Id, Platform, Stack,
};

/// `POST /v1/initialize` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitializeRequest {
    /// The deployment's name in the group (a DNS label).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Platform (default `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The group, for admin tokens (a group token's own group otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_group_id: Option<Id>,
}

/// The agent's deployment and its token.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Initialized {
    /// The deployment (created now, or found by name).
    pub deployment_id: Id,
    /// Its deployment token: the agent keeps it (mode 0600) and syncs with it.
    pub token: String,
    /// Whether this call created the deployment.
    pub created: bool,
}

impl std::fmt::Debug for Initialized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initialized")
            .field("deployment_id", &self.deployment_id)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The release a deployment runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRef {
    /// `rel_...` id.
    pub release_id: Id,
}

/// What an agent reports, and what the manager answers it knows (field names of the public
/// `DeploymentState`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentState {
    /// Status of the deployment as the agent sees it.
    pub status: DeploymentStatus,
    /// Platform.
    pub platform: Platform,
    /// The release that runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_release: Option<ReleaseRef>,
    /// Platform state (outputs per container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub stack_state: Option<Value>,
    /// Error of the last failed step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeploymentError>,
}

impl AgentState {
    /// Whether the agent reports working on an operation (it took a retry or redeploy up).
    pub fn is_working(&self) -> bool {
        use DeploymentStatus as S;
        matches!(self.status, S::Provisioning | S::Updating | S::Deleting)
    }

    /// Whether this report lags behind the manager's view of `deployment`, so it is a heartbeat
    /// with state, not news: the agent has not begun its pending update (the rollout decides
    /// when it does), or it repeats an old failure after a user's retry or redeploy.
    pub fn lags_behind(&self, deployment: &Deployment) -> bool {
        deployment.status == DeploymentStatus::UpdatePending && !self.is_working()
            || deployment.retry_requested && self.status.is_failed()
    }

    /// Whether this report spends a requested retry or redeploy: the agent works on it, or runs
    /// the desired release.
    pub fn takes_up_retry(&self, deployment: &Deployment) -> bool {
        let runs_desired = self.status == DeploymentStatus::Running
            && self.current_release.as_ref().map(|r| &r.release_id)
                == deployment.desired_release_id.as_ref();
        self.is_working() || runs_desired
    }
}

/// Whether a pull `deployment` runs an older release than its desired one without having been
/// asked for it (a release arrived while its agent was stale, updating, or failing): it is made
/// `update-pending` again, through the group's rollout. A targeted redeploy (a rollback) is not.
pub fn runs_older_release(deployment: &Deployment) -> bool {
    matches!(deployment.status, DeploymentStatus::Running | DeploymentStatus::RefreshFailed)
        && deployment.desired_release_id.is_some()
        && deployment.desired_release_id != deployment.current_release_id
        && !deployment.retry_requested
}

/// `POST /v1/sync` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    /// The agent's deployment.
    pub deployment_id: Id,
    /// What it runs now (absent on its very first sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_state: Option<AgentState>,
    /// What happened since the last sync that changed no status (autoscaling steps), oldest
    /// first; recorded in the deployment's events. At most [`MAX_SYNC_EVENTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SyncEvent>,
}

/// Most events one sync carries.
pub const MAX_SYNC_EVENTS: usize = 100;

/// Reasons an agent may report events with.
pub const SYNC_EVENT_REASONS: [&str; 1] = ["autoscale"];

/// Most bytes of an event's `detail` (as JSON).
pub const MAX_SYNC_EVENT_DETAIL: usize = 4096;

/// Checks the events of a sync: at most [`MAX_SYNC_EVENTS`], each with one of
/// [`SYNC_EVENT_REASONS`] and a JSON object of at most [`MAX_SYNC_EVENT_DETAIL`] bytes as its
/// detail; the first violation names its field.
pub fn check_events(events: &[SyncEvent]) -> Result<(), crate::FieldViolation> {
    use crate::FieldViolation;
    if events.len() > MAX_SYNC_EVENTS {
        return Err(FieldViolation::new(
            "events",
            format!("at most {MAX_SYNC_EVENTS} per sync, got {}", events.len()),
        ));
    }
    for (i, event) in events.iter().enumerate() {
        if !SYNC_EVENT_REASONS.contains(&event.reason.as_str()) {
            return Err(FieldViolation::new(
                format!("events[{i}].reason"),
                format!("expected one of {SYNC_EVENT_REASONS:?}, got {:?}", event.reason),
            ));
        }
        let size = event.detail.to_string().len();
        if !event.detail.is_object() || size > MAX_SYNC_EVENT_DETAIL {
            return Err(FieldViolation::new(
                format!("events[{i}].detail"),
                format!(
                    "expected a JSON object of at most {MAX_SYNC_EVENT_DETAIL} bytes ({size} bytes)"
                ),
            ));
        }
    }
    Ok(())
}

/// An event an agent reports (see [`SyncRequest::events`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncEvent {
    /// One of [`SYNC_EVENT_REASONS`] (`autoscale`).
    pub reason: String,
    /// What happened (`{container, from, to, reason}` for `autoscale`); a JSON object of at
    /// most [`MAX_SYNC_EVENT_DETAIL`] bytes.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Where to pull images from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredentials {
    /// Registry host (and port).
    pub host: String,
    /// User name.
    pub username: String,
    /// Password (the deployment token: it pulls this deployment's release images only).
    pub password: String,
    /// The registry speaks plain HTTP (the manager's base URL or the `registryUrl` is written
    /// `http://`); otherwise HTTPS.
    #[serde(default)]
    pub plain_http: bool,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("plain_http", &self.plain_http)
            .finish_non_exhaustive()
    }
}

/// Everything an agent needs besides the stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetConfig {
    /// The deployment's name.
    pub deployment_name: String,
    /// Its variables, secrets decrypted (for this deployment's token only).
    pub environment_variables: Vec<EnvironmentVariable>,
    /// The manager's public URL.
    pub manager_url: String,
    /// Image pull credentials.
    pub registry: RegistryCredentials,
}

/// The release to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncTarget {
    /// The release.
    pub release_id: Id,
    /// Its stack for the agent's platform.
    #[schema(value_type = Object)]
    pub stack: Stack,
    /// How to run it.
    pub config: TargetConfig,
}

/// The answer of a sync.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncResponse {
    /// What to run, when the agent does not run it yet, did not finish, or was asked to apply
    /// it again (a retry or redeploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<SyncTarget>,
    /// The deployment as the manager now knows it.
    pub current_state: AgentState,
    /// Base URL of the commands API (`{manager}/v1`).
    pub commands_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeploymentModel, IdKind};
    use DeploymentStatus as S;

    fn deployment(
        status: S,
        current: Option<&Id>,
        desired: Option<&Id>,
        retry: bool,
    ) -> Deployment {
        let now = chrono::Utc::now();
        Deployment {
            id: Id::new(IdKind::Deployment),
            name: "d".into(),
            platform: Platform::Local,
            status,
            deployment_model: DeploymentModel::Pull,
            deployment_group_id: Id::new(IdKind::DeploymentGroup),
            current_release_id: current.cloned(),
            desired_release_id: desired.cloned(),
            stack_state: None,
            error: None,
            retry_requested: retry,
            region: None,
            last_heartbeat_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn report(status: S, current: Option<&Id>) -> AgentState {
        AgentState {
            status,
            platform: Platform::Local,
            current_release: current.map(|id| ReleaseRef { release_id: id.clone() }),
            stack_state: None,
            error: None,
        }
    }

    #[test]
    fn reports_behind_the_manager_are_heartbeats() {
        let (old, new) = (Id::new(IdKind::Release), Id::new(IdKind::Release));
        let pending = deployment(S::UpdatePending, Some(&old), Some(&new), false);
        for status in [S::Running, S::RefreshFailed, S::UpdateFailed] {
            assert!(report(status, Some(&old)).lags_behind(&pending), "{status}");
        }
        assert!(!report(S::Updating, Some(&old)).lags_behind(&pending), "working on it");
        let retried = deployment(S::Updating, Some(&old), Some(&new), true);
        assert!(report(S::UpdateFailed, Some(&old)).lags_behind(&retried));
        assert!(!report(S::Updating, Some(&old)).lags_behind(&retried));
        let failed = deployment(S::UpdateFailed, Some(&old), Some(&new), false);
        assert!(!report(S::UpdateFailed, Some(&old)).lags_behind(&failed), "news, no retry asked");
    }

    #[test]
    fn a_retry_is_spent_by_working_on_it_or_running_the_desired_release() {
        let (old, new) = (Id::new(IdKind::Release), Id::new(IdKind::Release));
        let d = deployment(S::Updating, Some(&old), Some(&new), true);
        assert!(report(S::Updating, Some(&old)).takes_up_retry(&d));
        assert!(report(S::Running, Some(&new)).takes_up_retry(&d));
        assert!(!report(S::Running, Some(&old)).takes_up_retry(&d));
        assert!(!report(S::UpdateFailed, Some(&old)).takes_up_retry(&d));
    }

    #[test]
    fn an_agent_behind_its_desired_release_is_pending_again_unless_it_was_asked() {
        let (old, new) = (Id::new(IdKind::Release), Id::new(IdKind::Release));
        assert!(runs_older_release(&deployment(S::Running, Some(&old), Some(&new), false)));
        assert!(runs_older_release(&deployment(S::RefreshFailed, Some(&old), Some(&new), false)));
        assert!(!runs_older_release(&deployment(S::Running, Some(&new), Some(&new), false)));
        assert!(
            !runs_older_release(&deployment(S::Running, Some(&old), Some(&new), true)),
            "rollback"
        );
        assert!(!runs_older_release(&deployment(S::Updating, Some(&old), Some(&new), false)));
    }

    #[test]
    fn events_are_checked_for_reason_detail_and_count() {
        let event =
            |reason: &str, detail: serde_json::Value| SyncEvent { reason: reason.into(), detail };
        let good = event("autoscale", serde_json::json!({"container": "web", "from": 1, "to": 4}));
        assert_eq!(check_events(std::slice::from_ref(&good)), Ok(()));
        let path = |events: &[SyncEvent]| check_events(events).unwrap_err().path;
        assert_eq!(
            path(&[good.clone(), event("created", serde_json::json!({}))]),
            "events[1].reason"
        );
        assert_eq!(path(&[event("autoscale", serde_json::json!("grew"))]), "events[0].detail");
        let big = serde_json::json!({"pad": "x".repeat(MAX_SYNC_EVENT_DETAIL)});
        assert_eq!(path(&[event("autoscale", big)]), "events[0].detail");
        assert_eq!(path(&vec![good; MAX_SYNC_EVENTS + 1]), "events");
    }
}
