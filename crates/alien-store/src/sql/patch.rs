//! The update behind a transition and behind a report of an unchanged status, for every SQL
//! backend: the status rule checked, the values of the backend's `patch_deployment_sql!` (whose
//! placeholders differ per engine) in their order, and the event a transition records.

use alien_core::{DeploymentEvent, DeploymentStatus, Id};

use crate::codec::{opt_to_json, parse, to_json};
use crate::{DeploymentPatch, Entity, StoreError, StoreResult};

/// The statuses (from, to) of a transition of `dep` by `event` from its `status` column: the
/// patch's expected status checked, then `DeploymentStatus::transition`.
pub fn transition_statuses(
    dep: &str,
    status: &str,
    event: DeploymentEvent,
    patch: &DeploymentPatch,
) -> StoreResult<(DeploymentStatus, DeploymentStatus)> {
    let from: DeploymentStatus = parse("deployments.status", status)?;
    if let Some(expected) = patch.expect_status
        && expected != from
    {
        return Err(StoreError::Conflict(format!(
            "deployment {dep} is {from}, no longer {expected}"
        )));
    }
    let to = from.transition(event)?;
    Ok((from, to))
}

/// The values of `patch_deployment_sql!`, in the order of its placeholders (1 to 11).
pub struct PatchValues<'a> {
    /// 1: the new status.
    pub status: &'static str,
    /// 2: the new desired release, if any.
    pub desired_release_id: Option<&'a str>,
    /// 3: the new current release, if any.
    pub current_release_id: Option<&'a str>,
    /// 4: the new stack state (JSON), if any.
    pub stack_state: Option<String>,
    /// 5: whether the error is set (to 6, which may clear it).
    pub set_error: bool,
    /// 6: the new error (JSON), or none.
    pub error: Option<String>,
    /// 7: the new retry flag, if any.
    pub retry_requested: Option<bool>,
    /// 8: the new last heartbeat (Unix milliseconds), if any.
    pub last_heartbeat_at: Option<i64>,
    /// 9: the update time (Unix milliseconds).
    pub updated_at: i64,
    /// 10: the deployment's id.
    pub id: &'a str,
    /// 11: the status the deployment must still have.
    pub expected_status: &'static str,
}

impl<'a> PatchValues<'a> {
    /// The values of a transition of `dep` from `from` to `to` at `now` with `patch`.
    pub fn transition(
        dep: &'a str,
        from: DeploymentStatus,
        to: DeploymentStatus,
        patch: &'a DeploymentPatch,
        now: i64,
    ) -> StoreResult<Self> {
        let mut values = Self::report(dep, to, patch, now)?;
        values.desired_release_id = patch.desired_release_id.as_ref().map(Id::as_str);
        values.expected_status = from.as_str();
        Ok(values)
    }

    /// The values of a report of the unchanged `status` of `dep` at `now` with `patch` (which
    /// sets no desired release).
    pub fn report(
        dep: &'a str,
        status: DeploymentStatus,
        patch: &'a DeploymentPatch,
        now: i64,
    ) -> StoreResult<Self> {
        let error = match &patch.error {
            Some(Some(error)) => Some(to_json("the deployment error", error)?),
            _ => None,
        };
        Ok(Self {
            status: status.as_str(),
            desired_release_id: None,
            current_release_id: patch.current_release_id.as_ref().map(Id::as_str),
            stack_state: opt_to_json("the stack state", patch.stack_state.as_ref())?,
            set_error: patch.error.is_some(),
            error,
            retry_requested: patch.retry_requested,
            last_heartbeat_at: patch.last_heartbeat_at.map(|t| t.timestamp_millis()),
            updated_at: now,
            id: dep,
            expected_status: status.as_str(),
        })
    }
}

/// Binds [`PatchValues`] to a query of `patch_deployment_sql!`, in placeholder order.
#[macro_export]
macro_rules! bind_patch {
    ($query:expr, $values:expr) => {{
        let values: $crate::sql::patch::PatchValues<'_> = $values;
        $query
            .bind(values.status)
            .bind(values.desired_release_id)
            .bind(values.current_release_id)
            .bind(values.stack_state)
            .bind(values.set_error)
            .bind(values.error)
            .bind(values.retry_requested)
            .bind(values.last_heartbeat_at)
            .bind(values.updated_at)
            .bind(values.id)
            .bind(values.expected_status)
    }};
}
pub use crate::bind_patch;

/// The conflict of a transition of `dep` by `event` whose conditional update found the status
/// changed meanwhile.
pub fn changed_meanwhile(dep: &str, event: DeploymentEvent) -> StoreError {
    StoreError::Conflict(format!("deployment {dep} changed status while {event} was being applied"))
}

/// The error of a patch naming releases (`ids`) that do not exist (a foreign key refused it).
pub fn missing_release<'a>(ids: impl IntoIterator<Item = &'a Id>) -> StoreError {
    StoreError::NotFound {
        entity: Entity::Release,
        id: ids.into_iter().map(Id::to_string).collect::<Vec<_>>().join(" or "),
    }
}

/// Whether a transition from `from` to `to` ends an update, from which the group's next rollout
/// batch counts (going stale ends none: its agent fell silent).
pub fn ends_update(from: DeploymentStatus, to: DeploymentStatus) -> bool {
    from == DeploymentStatus::Updating
        && !matches!(to, DeploymentStatus::Updating | DeploymentStatus::Stale)
}

/// The reason of the event a transition by `event` from `from` to `to` records, given the
/// deployment's `desired` release before it; `None` when it records none (the status unchanged
/// and no new desired release).
pub fn event_reason(
    from: DeploymentStatus,
    to: DeploymentStatus,
    event: DeploymentEvent,
    patch: &DeploymentPatch,
    desired: Option<&str>,
) -> Option<String> {
    let new_desired =
        patch.desired_release_id.as_ref().is_some_and(|d| desired != Some(d.as_str()));
    if to == from && !new_desired {
        return None;
    }
    Some(if patch.reason.is_empty() { event.to_string() } else { patch.reason.clone() })
}
