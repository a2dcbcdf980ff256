//! Where a service's rollout of a task definition stands, read from its PRIMARY deployment.

use super::Clients;
use crate::error::{AwsFailure, classify};

pub(super) async fn describe_service(
    clients: &Clients,
    cluster: &str,
    name: &str,
) -> Result<Option<aws_sdk_ecs::types::Service>, AwsFailure> {
    match clients.ecs.describe_services().cluster(cluster).services(name).send().await {
        Ok(out) => Ok(out.services().first().cloned()),
        Err(err) => {
            let failure = classify("ECS DescribeServices", &err);
            if failure.code.as_deref() == Some("ClusterNotFoundException") {
                Ok(None)
            } else {
                Err(failure)
            }
        }
    }
}

/// Where a service's rollout of a task definition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rollout {
    Completed,
    InProgress,
    Failed(String),
}

/// The rollout of `task_definition` in `service`, read from its PRIMARY deployment.
pub(super) fn rollout(
    service: Option<&aws_sdk_ecs::types::Service>,
    task_definition: &str,
    desired: u32,
) -> Rollout {
    use aws_sdk_ecs::types::DeploymentRolloutState;
    let Some(service) = service else { return Rollout::InProgress };
    let primary = service.deployments().iter().find(|d| d.status() == Some("PRIMARY"));
    let Some(primary) = primary.filter(|d| d.task_definition() == Some(task_definition)) else {
        return Rollout::InProgress;
    };
    let failed = u32::try_from(primary.failed_tasks()).unwrap_or(0);
    match primary.rollout_state() {
        Some(DeploymentRolloutState::Failed) => Rollout::Failed(format!(
            "rollout FAILED{}",
            primary.rollout_state_reason().map(|r| format!(": {r}")).unwrap_or_default()
        )),
        Some(DeploymentRolloutState::Completed)
            if u32::try_from(primary.running_count()).unwrap_or(0) >= desired =>
        {
            Rollout::Completed
        }
        _ if failed > 0 && failed >= desired.max(1) => {
            Rollout::Failed(format!("{failed} tasks failed to start"))
        }
        _ => Rollout::InProgress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(td: &str, state: &str, running: i32, failed: i32) -> aws_sdk_ecs::types::Service {
        use aws_sdk_ecs::types::{Deployment as EcsDeployment, DeploymentRolloutState, Service};
        Service::builder()
            .status("ACTIVE")
            .task_definition(td)
            .deployments(
                EcsDeployment::builder()
                    .status("PRIMARY")
                    .task_definition(td)
                    .rollout_state(DeploymentRolloutState::from(state))
                    .running_count(running)
                    .failed_tasks(failed)
                    .build(),
            )
            .build()
    }

    #[test]
    fn rollouts_complete_fail_or_wait() {
        let td = "arn:td:2";
        assert_eq!(rollout(None, td, 1), Rollout::InProgress);
        assert_eq!(rollout(Some(&service(td, "COMPLETED", 2, 0)), td, 2), Rollout::Completed);
        assert_eq!(rollout(Some(&service(td, "COMPLETED", 1, 0)), td, 2), Rollout::InProgress);
        assert_eq!(
            rollout(Some(&service("arn:td:1", "COMPLETED", 2, 0)), td, 2),
            Rollout::InProgress
        );
        assert!(matches!(rollout(Some(&service(td, "FAILED", 0, 0)), td, 2), Rollout::Failed(_)));
        assert!(matches!(
            rollout(Some(&service(td, "IN_PROGRESS", 0, 2)), td, 2),
            Rollout::Failed(_)
        ));
        assert_eq!(rollout(Some(&service(td, "IN_PROGRESS", 0, 1)), td, 2), Rollout::InProgress);
    }
}
