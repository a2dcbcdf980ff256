//! Where a command runs: a container of the deployment's current release, and the deployment must
//! be running. [`command_target`] is the rule; the server feeds it the deployment and the
//! container names of its release.

use crate::command::wire::CommandTarget;
use crate::{Deployment, DeploymentStatus};

/// Why a command cannot go to a deployment (each is a conflict with its state, `409`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandTargetError {
    /// The deployment is not `running`.
    #[error("deployment {deployment} is {status}; commands need a running deployment")]
    NotRunning {
        /// The deployment.
        deployment: String,
        /// Its status.
        status: DeploymentStatus,
    },
    /// The deployment runs no release yet.
    #[error("deployment {deployment} runs no release yet")]
    NoRelease {
        /// The deployment.
        deployment: String,
    },
    /// The named container is not in the release.
    #[error("deployment {deployment} has no container {requested:?}; it has {containers:?}")]
    UnknownContainer {
        /// The deployment.
        deployment: String,
        /// The container asked for.
        requested: String,
        /// The containers it has.
        containers: Vec<String>,
    },
    /// The release has no container.
    #[error("deployment {deployment} runs no container")]
    NoContainer {
        /// The deployment.
        deployment: String,
    },
    /// Several containers and none named.
    #[error(
        "deployment {deployment} runs several containers ({containers:?}); name one in targetResourceId"
    )]
    Ambiguous {
        /// The deployment.
        deployment: String,
        /// The containers it has.
        containers: Vec<String>,
    },
}

/// The container of `deployment` a command goes to: the one `requested` names, or the only one
/// of its current release. `containers` are the container ids of that release's stack for the
/// deployment's platform (`None`: the release is not known).
pub fn command_target(
    deployment: &Deployment,
    containers: Option<&[String]>,
    requested: Option<&str>,
) -> Result<CommandTarget, CommandTargetError> {
    let id = deployment.id.to_string();
    if deployment.status != DeploymentStatus::Running {
        return Err(CommandTargetError::NotRunning { deployment: id, status: deployment.status });
    }
    let containers = match (&deployment.current_release_id, containers) {
        (Some(_), Some(containers)) => containers,
        _ => return Err(CommandTargetError::NoRelease { deployment: id }),
    };
    let chosen = match (requested, containers) {
        (Some(name), _) if containers.iter().any(|c| c == name) => name.to_owned(),
        (Some(name), _) => {
            return Err(CommandTargetError::UnknownContainer {
                deployment: id,
                requested: name.to_owned(),
                containers: containers.to_vec(),
            });
        }
        (None, [only]) => only.clone(),
        (None, []) => return Err(CommandTargetError::NoContainer { deployment: id }),
        (None, _) => {
            return Err(CommandTargetError::Ambiguous {
                deployment: id,
                containers: containers.to_vec(),
            });
        }
    };
    Ok(CommandTarget { resource_id: chosen, resource_type: "container".to_owned() })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn deployment(status: DeploymentStatus, release: bool) -> Deployment {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "id": crate::Id::new(crate::IdKind::Deployment).to_string(),
            "name": "d",
            "deploymentGroupId": crate::Id::new(crate::IdKind::DeploymentGroup).to_string(),
            "platform": "local",
            "deploymentModel": "push",
            "status": "running",
            "retryRequested": false,
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        d.status = status;
        d.current_release_id = release.then(|| crate::Id::new(crate::IdKind::Release));
        d
    }

    #[test]
    fn a_command_goes_to_the_named_or_only_container_of_a_running_deployment() {
        let running = deployment(DeploymentStatus::Running, true);
        let one = ["api".to_owned()];
        let two = ["api".to_owned(), "worker".to_owned()];
        let target = |c: &[String], r| command_target(&running, Some(c), r);
        assert_eq!(target(&one, None).unwrap().resource_id, "api");
        assert_eq!(target(&two, Some("worker")).unwrap().resource_id, "worker");
        assert!(matches!(target(&two, None), Err(CommandTargetError::Ambiguous { .. })));
        assert!(matches!(
            target(&two, Some("db")),
            Err(CommandTargetError::UnknownContainer { .. })
        ));
        assert!(matches!(target(&[], None), Err(CommandTargetError::NoContainer { .. })));
        let updating = deployment(DeploymentStatus::Updating, true);
        let err = command_target(&updating, Some(&one), None).unwrap_err();
        assert!(err.to_string().contains("is updating; commands need a running deployment"));
        let fresh = deployment(DeploymentStatus::Running, false);
        assert!(matches!(
            command_target(&fresh, Some(&one), None),
            Err(CommandTargetError::NoRelease { .. })
        ));
        let unknown_release = command_target(&running, None, None);
        assert!(matches!(unknown_release, Err(CommandTargetError::NoRelease { .. })));
    }
}
