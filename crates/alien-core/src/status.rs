//! The deployment lifecycle: [`DeploymentStatus`], the [`DeploymentEvent`]s that move it, and the one
//! transition function ([`DeploymentStatus::transition`], `spec/deployer.md` "Lifecycle").
//!
//! The function is model-agnostic: the push loop sends the step and refresh events, the pull sync
//! sends [`DeploymentEvent::AgentReported`] and [`DeploymentEvent::HeartbeatMissed`], the API sends
//! the user's intents. An `Err` means "this event does not apply now": the API answers 400/409, a
//! loop leaves the deployment alone (someone else changed its intent meanwhile).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a deployment is in its lifecycle, kebab-case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentStatus {
    /// Created, waiting for a release for its platform (or for the loop to start it).
    Pending,
    /// The first release is being applied.
    Provisioning,
    /// Applying the first release failed; `retry` resumes it.
    ProvisioningFailed,
    /// The current release is deployed and healthy.
    Running,
    /// A heartbeat found a failing resource; recovers on retry or the next healthy refresh.
    RefreshFailed,
    /// A newer desired release waits to be applied.
    UpdatePending,
    /// The desired release is being applied over the current one.
    Updating,
    /// Applying the desired release failed; `retry` resumes it.
    UpdateFailed,
    /// Deletion was requested and waits for the loop.
    DeletePending,
    /// Resources are being torn down.
    Deleting,
    /// Tearing down failed; `retry` resumes it.
    DeleteFailed,
    /// Everything is torn down; the row is about to be removed.
    Deleted,
    /// A pull-mode agent missed 3 heartbeat intervals; back on its next sync.
    Stale,
}

/// Everything that moves a deployment from one status to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "status", rename_all = "kebab-case")]
pub enum DeploymentEvent {
    /// The loop starts applying the desired release to a pending deployment.
    BeginProvisioning,
    /// The operation in progress (provisioning, updating or deleting) reached its target.
    StepSucceeded,
    /// The operation in progress failed; the previous state is kept.
    StepFailed,
    /// A release became the deployment's desired release (new release, or rollout batch).
    NewDesiredRelease,
    /// The loop starts applying a pending update.
    BeginUpdate,
    /// A push-mode heartbeat found every resource healthy.
    RefreshHealthy,
    /// A push-mode heartbeat found a failing resource.
    RefreshFailed,
    /// A user asked to resume the failed operation.
    Retry,
    /// A user asked to apply the desired (or a given earlier) release again.
    Redeploy,
    /// A user asked to delete the deployment.
    DeleteRequested,
    /// The loop starts tearing down a deployment whose deletion was requested.
    BeginDelete,
    /// A pull-mode agent did not sync for 3 heartbeat intervals.
    HeartbeatMissed,
    /// A pull-mode agent reported its own status on sync.
    AgentReported(DeploymentStatus),
}

/// An event that does not apply to a deployment in a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a deployment in status {from} does not accept the event {event}")]
pub struct TransitionError {
    /// The status the deployment is in.
    pub from: DeploymentStatus,
    /// The event that was refused.
    pub event: DeploymentEvent,
}

impl DeploymentStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [DeploymentStatus; 13] = [
        Self::Pending,
        Self::Provisioning,
        Self::ProvisioningFailed,
        Self::Running,
        Self::RefreshFailed,
        Self::UpdatePending,
        Self::Updating,
        Self::UpdateFailed,
        Self::DeletePending,
        Self::Deleting,
        Self::DeleteFailed,
        Self::Deleted,
        Self::Stale,
    ];

    /// The status after `event`, or why `event` does not apply to this status.
    ///
    /// Design decisions beyond `spec/deployer.md`:
    /// - a new desired release retargets an operation in flight (provisioning, updating) instead
    ///   of being lost, sends a provisioning failure back to pending (so the new release is
    ///   provisioned), and is recorded on a stale deployment for the agent's next sync;
    /// - redeploy from `provisioning-failed` goes to `pending` (nothing was ever running), and from
    ///   `update-pending` changes which release is pending; it is refused once deletion started;
    /// - a pull agent's report is mirrored, except that it cannot leave the delete path once a
    ///   deletion was requested, nor enter it on its own; `update-pending`, `delete-pending` and
    ///   `stale` are the manager's own statuses and cannot be reported.
    pub fn transition(self, event: DeploymentEvent) -> Result<DeploymentStatus, TransitionError> {
        use DeploymentEvent as E;
        use DeploymentStatus as S;
        let next = match (self, event) {
            (S::Pending, E::BeginProvisioning) => S::Provisioning,
            (S::Provisioning | S::Updating, E::StepSucceeded) => S::Running,
            (S::Deleting, E::StepSucceeded) => S::Deleted,
            (S::Provisioning, E::StepFailed) => S::ProvisioningFailed,
            (S::Updating, E::StepFailed) => S::UpdateFailed,
            (S::Deleting, E::StepFailed) => S::DeleteFailed,

            (S::Pending | S::ProvisioningFailed, E::NewDesiredRelease) => S::Pending,
            (
                S::Running | S::RefreshFailed | S::UpdatePending | S::UpdateFailed,
                E::NewDesiredRelease,
            ) => S::UpdatePending,
            (S::Provisioning | S::Updating | S::Stale, E::NewDesiredRelease) => self,
            (S::UpdatePending, E::BeginUpdate) => S::Updating,

            (S::Running | S::RefreshFailed, E::RefreshHealthy) => S::Running,
            (S::Running | S::RefreshFailed, E::RefreshFailed) => S::RefreshFailed,

            (S::ProvisioningFailed, E::Retry) => S::Provisioning,
            (S::RefreshFailed, E::Retry) => S::Running,
            (S::UpdateFailed, E::Retry) => S::Updating,
            (S::DeleteFailed, E::Retry) => S::Deleting,

            (S::ProvisioningFailed, E::Redeploy) => S::Pending,
            (S::Running | S::RefreshFailed | S::UpdatePending | S::UpdateFailed, E::Redeploy) => {
                S::UpdatePending
            }

            (_, E::DeleteRequested) if !self.deletion_started() => S::DeletePending,
            (S::DeletePending, E::BeginDelete) => S::Deleting,

            (_, E::HeartbeatMissed) if self.is_agent_driven() => S::Stale,
            (_, E::AgentReported(reported)) if self.accepts_agent_report(reported) => reported,

            _ => return Err(TransitionError { from: self, event }),
        };
        Ok(next)
    }

    /// Whether the push deployment loop steps a deployment in this status when it is due: the
    /// statuses with work in progress or waiting to start (`pending` only once it has a desired
    /// release, which the store checks). A `retry` of a `*-failed` or `refresh-failed` status is
    /// due through its flag, not its status.
    pub fn is_due(self) -> bool {
        matches!(
            self,
            Self::Pending
                | Self::Provisioning
                | Self::UpdatePending
                | Self::Updating
                | Self::DeletePending
                | Self::Deleting
        )
    }

    /// Whether the deployment waits for a user's `retry` (any `*-failed` status).
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            Self::ProvisioningFailed
                | Self::RefreshFailed
                | Self::UpdateFailed
                | Self::DeleteFailed
        )
    }

    /// Whether no event can move the deployment any more (`deleted`).
    pub fn is_terminal(self) -> bool {
        self == Self::Deleted
    }

    /// Whether a deletion was requested and the deployment is on its way out.
    pub fn is_deleting(self) -> bool {
        matches!(self, Self::DeletePending | Self::Deleting | Self::DeleteFailed | Self::Deleted)
    }

    /// The wire name, e.g. `"update-pending"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Provisioning => "provisioning",
            Self::ProvisioningFailed => "provisioning-failed",
            Self::Running => "running",
            Self::RefreshFailed => "refresh-failed",
            Self::UpdatePending => "update-pending",
            Self::Updating => "updating",
            Self::UpdateFailed => "update-failed",
            Self::DeletePending => "delete-pending",
            Self::Deleting => "deleting",
            Self::DeleteFailed => "delete-failed",
            Self::Deleted => "deleted",
            Self::Stale => "stale",
        }
    }

    /// A new delete request is refused once one is being carried out (`delete-failed` may be
    /// requested again).
    fn deletion_started(self) -> bool {
        matches!(self, Self::DeletePending | Self::Deleting | Self::Deleted)
    }

    /// Statuses in which a pull agent is expected to sync, so a missing heartbeat means stale.
    fn is_agent_driven(self) -> bool {
        !self.is_deleting() && self != Self::Stale
    }

    fn accepts_agent_report(self, reported: DeploymentStatus) -> bool {
        let delete_report = matches!(reported, Self::Deleting | Self::DeleteFailed | Self::Deleted);
        let manager_only =
            matches!(reported, Self::UpdatePending | Self::DeletePending | Self::Stale);
        match self {
            Self::Deleted => false,
            Self::DeletePending | Self::Deleting | Self::DeleteFailed => delete_report,
            _ => !delete_report && !manager_only,
        }
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`DeploymentStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown deployment status {given:?}; expected one of pending, provisioning, \
     provisioning-failed, running, refresh-failed, update-pending, updating, update-failed, \
     delete-pending, deleting, delete-failed, deleted, stale"
)]
pub struct ParseStatusError {
    /// What was given.
    pub given: String,
}

impl FromStr for DeploymentStatus {
    type Err = ParseStatusError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| ParseStatusError { given: value.to_owned() })
    }
}

impl DeploymentEvent {
    /// The events without a payload; with `AgentReported(s)` for every status they are all events.
    pub const SIMPLE: [DeploymentEvent; 12] = [
        Self::BeginProvisioning,
        Self::StepSucceeded,
        Self::StepFailed,
        Self::NewDesiredRelease,
        Self::BeginUpdate,
        Self::RefreshHealthy,
        Self::RefreshFailed,
        Self::Retry,
        Self::Redeploy,
        Self::DeleteRequested,
        Self::BeginDelete,
        Self::HeartbeatMissed,
    ];

    /// Every event, including `AgentReported` with each status.
    pub fn all() -> impl Iterator<Item = DeploymentEvent> {
        Self::SIMPLE.into_iter().chain(DeploymentStatus::ALL.into_iter().map(Self::AgentReported))
    }
}

impl fmt::Display for DeploymentEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::BeginProvisioning => "begin-provisioning",
            Self::StepSucceeded => "step-succeeded",
            Self::StepFailed => "step-failed",
            Self::NewDesiredRelease => "new-desired-release",
            Self::BeginUpdate => "begin-update",
            Self::RefreshHealthy => "refresh-healthy",
            Self::RefreshFailed => "refresh-failed",
            Self::Retry => "retry",
            Self::Redeploy => "redeploy",
            Self::DeleteRequested => "delete-requested",
            Self::BeginDelete => "begin-delete",
            Self::HeartbeatMissed => "heartbeat-missed",
            Self::AgentReported(status) => return write!(f, "agent-reported({status})"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::DeploymentStatus as S;
    use super::*;

    const PE: Option<S> = Some(S::Pending);
    const PR: Option<S> = Some(S::Provisioning);
    const PF: Option<S> = Some(S::ProvisioningFailed);
    const RU: Option<S> = Some(S::Running);
    const RF: Option<S> = Some(S::RefreshFailed);
    const UP: Option<S> = Some(S::UpdatePending);
    const UG: Option<S> = Some(S::Updating);
    const UF: Option<S> = Some(S::UpdateFailed);
    const DP: Option<S> = Some(S::DeletePending);
    const DG: Option<S> = Some(S::Deleting);
    const DF: Option<S> = Some(S::DeleteFailed);
    const DD: Option<S> = Some(S::Deleted);
    const ST: Option<S> = Some(S::Stale);
    const __: Option<S> = None;

    /// Columns follow `DeploymentEvent::SIMPLE`:
    /// begin-provisioning, step-succeeded, step-failed, new-desired-release, begin-update,
    /// refresh-healthy, refresh-failed, retry, redeploy, delete-requested, begin-delete,
    /// heartbeat-missed. `__` = refused.
    #[rustfmt::skip]
    const SIMPLE_EVENTS: [(S, [Option<S>; 12]); 13] = [
        //                    BP  SS  SF  NR  BU  RH  RF  RT  RD  DR  BD  HM
        (S::Pending,            [PR, __, __, PE, __, __, __, __, __, DP, __, ST]),
        (S::Provisioning,       [__, RU, PF, PR, __, __, __, __, __, DP, __, ST]),
        (S::ProvisioningFailed, [__, __, __, PE, __, __, __, PR, PE, DP, __, ST]),
        (S::Running,            [__, __, __, UP, __, RU, RF, __, UP, DP, __, ST]),
        (S::RefreshFailed,      [__, __, __, UP, __, RU, RF, RU, UP, DP, __, ST]),
        (S::UpdatePending,      [__, __, __, UP, UG, __, __, __, UP, DP, __, ST]),
        (S::Updating,           [__, RU, UF, UG, __, __, __, __, __, DP, __, ST]),
        (S::UpdateFailed,       [__, __, __, UP, __, __, __, UG, UP, DP, __, ST]),
        (S::DeletePending,      [__, __, __, __, __, __, __, __, __, __, DG, __]),
        (S::Deleting,           [__, DD, DF, __, __, __, __, __, __, __, __, __]),
        (S::DeleteFailed,       [__, __, __, __, __, __, __, DG, __, DP, __, __]),
        (S::Deleted,            [__, __, __, __, __, __, __, __, __, __, __, __]),
        (S::Stale,              [__, __, __, ST, __, __, __, __, __, DP, __, __]),
    ];

    /// `AgentReported(column)` from each row; columns follow `DeploymentStatus::ALL`.
    #[rustfmt::skip]
    const AGENT_REPORTS: [(S, [Option<S>; 13]); 13] = [
        //                    PE  PR  PF  RU  RF  UP  UG  UF  DP  DG  DF  DD  ST
        (S::Pending,            [PE, PR, PF, RU, RF, __, UG, UF, __, __, __, __, __]),
        (S::Provisioning,       [PE, PR, PF, RU, RF, __, UG, UF, __, __, __, __, __]),
        (S::ProvisioningFailed, [PE, PR, PF, RU, RF, __, UG, UF, __, __, __, __, __]),
        (S::Running,            [PE, PR, PF, RU, RF, __, UG, UF, __, __, __, __, __]),
        (S::RefreshFailed,      [PE, PR, PF, RU, RF, __, UG, UF, __, __, __, __, __]),
        (S::UpdatePending,      [PE, PR, PF, RU, RF, __, UG, UF, __, __, __, __, __]),
        (S::Updating,           [PE, PR, PF, RU, RF, __, UG, UF, __, __, __, __, __]),
        (S::UpdateFailed,       [PE, PR, PF, RU, RF, __, UG, UF, __, __, __, __, __]),
        (S::DeletePending,      [__, __, __, __, __, __, __, __, __, DG, DF, DD, __]),
        (S::Deleting,           [__, __, __, __, __, __, __, __, __, DG, DF, DD, __]),
        (S::DeleteFailed,       [__, __, __, __, __, __, __, __, __, DG, DF, DD, __]),
        (S::Deleted,            [__, __, __, __, __, __, __, __, __, __, __, __, __]),
        (S::Stale,              [PE, PR, PF, RU, RF, __, UG, UF, __, __, __, __, __]),
    ];

    /// Fails to compile when a status is added, so the tables and `ALL` must be extended.
    fn position(status: S) -> usize {
        match status {
            S::Pending => 0,
            S::Provisioning => 1,
            S::ProvisioningFailed => 2,
            S::Running => 3,
            S::RefreshFailed => 4,
            S::UpdatePending => 5,
            S::Updating => 6,
            S::UpdateFailed => 7,
            S::DeletePending => 8,
            S::Deleting => 9,
            S::DeleteFailed => 10,
            S::Deleted => 11,
            S::Stale => 12,
        }
    }

    /// Fails to compile when an event is added, so the tables and `SIMPLE` must be extended.
    fn column(event: DeploymentEvent) -> usize {
        use DeploymentEvent as E;
        match event {
            E::BeginProvisioning => 0,
            E::StepSucceeded => 1,
            E::StepFailed => 2,
            E::NewDesiredRelease => 3,
            E::BeginUpdate => 4,
            E::RefreshHealthy => 5,
            E::RefreshFailed => 6,
            E::Retry => 7,
            E::Redeploy => 8,
            E::DeleteRequested => 9,
            E::BeginDelete => 10,
            E::HeartbeatMissed => 11,
            E::AgentReported(status) => 12 + position(status),
        }
    }

    fn expected(from: S, event: DeploymentEvent) -> Option<S> {
        let row = position(from);
        match event {
            DeploymentEvent::AgentReported(reported) => AGENT_REPORTS[row].1[position(reported)],
            simple => SIMPLE_EVENTS[row].1[column(simple)],
        }
    }

    #[test]
    fn tables_and_lists_are_in_the_same_order() {
        for (i, status) in S::ALL.into_iter().enumerate() {
            assert_eq!(position(status), i);
            assert_eq!(SIMPLE_EVENTS[i].0, status);
            assert_eq!(AGENT_REPORTS[i].0, status);
        }
        let events: Vec<_> = DeploymentEvent::all().collect();
        assert_eq!(events.len(), 12 + 13);
        for (i, event) in events.into_iter().enumerate() {
            assert_eq!(column(event), i, "{event}");
        }
    }

    #[test]
    fn every_status_and_event_pair_matches_the_table() {
        let mut checked = 0;
        for from in S::ALL {
            for event in DeploymentEvent::all() {
                let actual = from.transition(event);
                match expected(from, event) {
                    Some(to) => assert_eq!(actual, Ok(to), "{from} + {event}"),
                    None => assert_eq!(
                        actual,
                        Err(TransitionError { from, event }),
                        "{from} + {event} should be refused"
                    ),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 13 * 25);
    }

    #[test]
    fn the_refusal_names_the_status_and_the_event() {
        let err = S::Running.transition(DeploymentEvent::Retry).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a deployment in status running does not accept the event retry"
        );
        let err = S::Deleting.transition(DeploymentEvent::AgentReported(S::Running)).unwrap_err();
        assert!(err.to_string().ends_with("agent-reported(running)"), "{err}");
    }

    #[test]
    fn the_documented_happy_paths() {
        use DeploymentEvent as E;
        let walk = |start: S, events: &[E]| {
            events.iter().try_fold(start, |status, event| status.transition(*event))
        };
        assert_eq!(
            walk(S::Pending, &[E::NewDesiredRelease, E::BeginProvisioning, E::StepSucceeded]),
            Ok(S::Running)
        );
        assert_eq!(
            walk(
                S::Running,
                &[E::NewDesiredRelease, E::BeginUpdate, E::StepFailed, E::Retry, E::StepSucceeded]
            ),
            Ok(S::Running)
        );
        assert_eq!(
            walk(
                S::Running,
                &[E::DeleteRequested, E::BeginDelete, E::StepFailed, E::Retry, E::StepSucceeded]
            ),
            Ok(S::Deleted)
        );
        assert_eq!(
            walk(S::Running, &[E::HeartbeatMissed, E::AgentReported(S::Running)]),
            Ok(S::Running)
        );
    }

    #[test]
    fn failed_and_terminal_statuses() {
        let failed: Vec<S> = S::ALL.into_iter().filter(|s| s.is_failed()).collect();
        assert_eq!(
            failed,
            [S::ProvisioningFailed, S::RefreshFailed, S::UpdateFailed, S::DeleteFailed]
        );
        for status in S::ALL {
            assert_eq!(status.is_failed(), status.as_str().ends_with("-failed"));
            assert_eq!(status.is_failed(), status.transition(DeploymentEvent::Retry).is_ok());
            let stuck = DeploymentEvent::all().all(|e| status.transition(e).is_err());
            assert_eq!(status.is_terminal(), stuck, "{status}");
        }
    }

    #[test]
    fn statuses_are_kebab_case_on_the_wire() {
        for status in S::ALL {
            let wire = serde_json::to_value(status).unwrap();
            assert_eq!(wire, json!(status.as_str()));
            assert_eq!(serde_json::from_value::<S>(wire).unwrap(), status);
            assert_eq!(status.as_str().parse::<S>().unwrap(), status);
        }
        assert_eq!(serde_json::to_value(S::ProvisioningFailed).unwrap(), "provisioning-failed");
        let err = "Running".parse::<S>().unwrap_err();
        assert!(err.to_string().contains("expected one of pending"), "{err}");
    }

    #[test]
    fn events_serialize_with_a_type_tag() {
        assert_eq!(serde_json::to_value(DeploymentEvent::Retry).unwrap(), json!({"type": "retry"}));
        let report = DeploymentEvent::AgentReported(S::UpdateFailed);
        let wire = serde_json::to_value(report).unwrap();
        assert_eq!(wire, json!({"type": "agent-reported", "status": "update-failed"}));
        for event in DeploymentEvent::all() {
            let back: DeploymentEvent =
                serde_json::from_value(serde_json::to_value(event).unwrap()).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn the_loop_steps_work_in_progress_and_work_waiting_to_start() {
        use DeploymentStatus as S;
        let due: Vec<S> = S::ALL.into_iter().filter(|s| s.is_due()).collect();
        assert_eq!(
            due,
            [
                S::Pending,
                S::Provisioning,
                S::UpdatePending,
                S::Updating,
                S::DeletePending,
                S::Deleting
            ]
        );
    }
}
