//! The [`PlatformDeployer`] seam: how one platform reaches, reads and removes what a release
//! describes. Every call is idempotent and resumable from the state it returned last, which the
//! loop persists after every step: a manager killed mid-step repeats the step, never starts over.

use std::collections::BTreeMap;
use std::time::Duration;

use alien_core::{Deployment, DeploymentError, Id, Stack};
pub use alien_impersonation::Credentials;
use serde_json::Value;

use crate::env::ContainerEnv;

/// What [`PlatformDeployer::apply`] is asked to reach.
#[derive(Debug, Clone, Copy)]
pub struct DeployRequest<'a> {
    /// The deployment.
    pub deployment: &'a Deployment,
    /// The release it should run.
    pub release_id: &'a Id,
    /// That release's stack for the deployment's platform.
    pub stack: &'a Stack,
    /// The environment of each container, by resource id (secrets included: never log it).
    pub env: &'a BTreeMap<String, ContainerEnv>,
    /// The names in `env` whose values are secret ([`crate::env::secret_names`]): platforms
    /// with a secrets store keep these out of plain configuration.
    pub secret_names: &'a std::collections::BTreeSet<String>,
    /// The deployment's platform target as it was given (`{accountId, roleArn, ...}` on aws),
    /// if any: where in the customer's environment to deploy.
    pub platform_target: Option<&'a Value>,
    /// The platform state the previous step returned, if any.
    pub state: Option<&'a Value>,
    /// Credentials for the deployment's target, minted by the manager's `Impersonator`
    /// (`Credentials::Ambient`: use this process's own identity).
    pub credentials: &'a Credentials,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// The target is reached; `state` describes what runs (replicas, outputs such as `url`).
    Done {
        /// The state to persist.
        state: Value,
    },
    /// Progress was made but the target is not reached yet (a replica starting, a health check
    /// not yet passing): call again after `wait` with `state`. The loop does not block on it.
    Wait {
        /// The state to persist.
        state: Value,
        /// When to step again.
        wait: Duration,
    },
    /// The step failed; the deployment moves to its `*-failed` status with `error`.
    Failed {
        /// The state to persist, when the step changed anything.
        state: Option<Value>,
        /// What failed (code, message, resource).
        error: DeploymentError,
    },
}

/// What a refresh found.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshReport {
    /// The state as read now (outputs, replica health), when it could be read.
    pub state: Option<Value>,
    /// The first failing resource, if any.
    pub failing: Option<DeploymentError>,
}

/// One platform's deployer.
#[async_trait::async_trait]
pub trait PlatformDeployer: Send + Sync {
    /// What deploys, for people (`GET /v1/platforms`): e.g. `podman on this host`.
    fn describe(&self) -> String {
        "a platform deployer".to_owned()
    }

    /// One step toward running `request.release_id`.
    async fn apply(&self, request: DeployRequest<'_>) -> StepOutcome;
    /// One step toward removing what `state` describes; with `cleanup`, persistent volumes too.
    async fn destroy(
        &self,
        deployment: &Deployment,
        state: Option<&Value>,
        cleanup: bool,
        credentials: &Credentials,
    ) -> StepOutcome;
    /// Reads what runs: outputs and health (the heartbeat).
    async fn refresh(
        &self,
        deployment: &Deployment,
        state: Option<&Value>,
        credentials: &Credentials,
    ) -> RefreshReport;
}

/// A platform deployer an agent can drive: it learns the manager's registry from the first
/// target (images there are pulled with the deployment token).
pub trait AgentPlatform: PlatformDeployer {
    /// Images of `host` are pulled with the deployment token, over plain HTTP when `insecure`.
    fn trust_registry(&self, host: &str, insecure: bool);
    /// The address containers reach this host at (manager URLs on loopback are rewritten to it).
    fn host_gateway(&self) -> String;
}
