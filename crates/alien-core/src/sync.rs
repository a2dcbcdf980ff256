//! Wire types of pull mode (spec/deployer.md "Pull mode"): `POST /v1/initialize` and
//! `POST /v1/sync`, shared by the manager that answers them and the agent that calls them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DeploymentError, DeploymentStatus, EnvironmentVariable, Id, Platform, Stack};

/// `POST /v1/initialize` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitializeRequest {
    /// The deployment's name in the group (a DNS label).
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

/// `POST /v1/sync` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    /// The agent's deployment.
    pub deployment_id: Id,
    /// What it runs now (absent on its very first sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_state: Option<AgentState>,
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
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("host", &self.host)
            .field("username", &self.username)
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
