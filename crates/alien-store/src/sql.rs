//! SQL fragments generated from the domain rules, dialect-neutral, so that the rules live only in
//! alien-core and every SQL backend states them the same way: the status mapping of a new release
//! is `DeploymentStatus::transition(NewDesiredRelease)` written as a `CASE`, the statuses the push
//! loop acquires are those of `DeploymentStatus::is_due`, and the statuses an agent's silence moves
//! are those `HeartbeatMissed` changes. Only fixed names (statuses) are put into SQL here. Also
//! what every backend does alike around its own statements: the checks of a deployment's
//! creation (here), the rows it reads ([`rows`]), the update behind a status change ([`patch`])
//! and the values of the rows it inserts ([`insert`]).

use alien_core::{DeploymentEvent, DeploymentStatus};

use crate::codec::count;
use crate::{NewDeployment, NewToken, StoreError, StoreResult};

pub mod insert;
pub mod patch;
pub mod rows;

/// Statuses as a list of SQL string literals (`'running', 'stale'`), for `IN (...)`.
pub fn quoted(statuses: impl IntoIterator<Item = DeploymentStatus>) -> String {
    statuses.into_iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
}

/// Statuses a new desired release applies to (everything outside the delete path that accepts it).
pub fn release_markable() -> impl Iterator<Item = DeploymentStatus> {
    DeploymentStatus::ALL
        .into_iter()
        .filter(|s| !s.is_deleting() && s.transition(DeploymentEvent::NewDesiredRelease).is_ok())
}

/// `CASE status WHEN ... END`: `DeploymentStatus::transition(NewDesiredRelease)` as SQL.
pub fn new_release_case() -> String {
    let mut case = String::from("CASE status");
    for status in release_markable() {
        if let Ok(next) = status.transition(DeploymentEvent::NewDesiredRelease)
            && next != status
        {
            case.push_str(&format!(" WHEN '{}' THEN '{}'", status.as_str(), next.as_str()));
        }
    }
    case.push_str(" ELSE status END");
    case
}

/// Statuses the push loop acts on (`DeploymentStatus::is_due`).
pub fn due_statuses() -> impl Iterator<Item = DeploymentStatus> {
    DeploymentStatus::ALL.into_iter().filter(|s| s.is_due())
}

/// Statuses an agent's silence changes (`HeartbeatMissed` moves them elsewhere).
pub fn silent_statuses() -> impl Iterator<Item = DeploymentStatus> {
    DeploymentStatus::ALL
        .into_iter()
        .filter(|s| s.transition(DeploymentEvent::HeartbeatMissed).is_ok_and(|t| t != *s))
}

/// [`StoreError::MaxDeploymentsReached`] when the group of `new`, allowed `max` deployments,
/// holds `held` already.
pub fn check_capacity(new: &NewDeployment, held: i64, max: i64) -> StoreResult<()> {
    if held >= max {
        return Err(StoreError::MaxDeploymentsReached {
            group: new.deployment_group_id.clone(),
            max: count("deployment_groups.max_deployments", max)?,
        });
    }
    Ok(())
}

/// The error of `new` whose name its group holds already.
pub fn name_conflict(new: &NewDeployment) -> StoreError {
    StoreError::NameConflict { name: new.name.clone(), group: new.deployment_group_id.clone() }
}

/// The token of `new`, bound to the deployment and its group.
pub fn deployment_token(new: &NewDeployment) -> NewToken {
    let mut token = new.token.clone();
    token.deployment_id = Some(new.id.clone());
    token.deployment_group_id = Some(new.deployment_group_id.clone());
    token
}
