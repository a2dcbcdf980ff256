//! Request and response bodies of the HTTP API that are not domain types of their own: pages,
//! identity, registry configuration, tokens, deployment details, logs, health. The server renders
//! them and `alien-client` reads them, so both sides use the same types and the JSON has one
//! definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    Deployment, DeploymentError, DeploymentEventRecord, DeploymentModel, DeploymentStatus, Id,
    Platform, TokenRecord, TokenType,
};

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor of the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `{"success": true}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Success {
    /// Always true.
    pub success: bool,
}

/// The caller's identity.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    /// Always `serviceAccount`.
    pub kind: String,
    /// Token id.
    pub id: Id,
    /// Token kind.
    pub token_type: TokenType,
    /// `workspace-admin`, `deployment-group-deployer` or `deployment-manager`.
    pub role: String,
    /// What the token reaches.
    pub scope: Scope,
}

/// A token's scope.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// `workspace`, `deployment-group` or `deployment`.
    #[serde(rename = "type")]
    pub scope_type: String,
    /// The group, for group and deployment tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_group_id: Option<Id>,
    /// The deployment, for deployment tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<Id>,
}

/// Where to push images for a platform.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildConfig {
    /// Registry host (and port), e.g. `manager.example.com` or `localhost:8080`.
    pub registry: String,
    /// Repository (prefix) to push to: images go to `<registry>/<repositoryName>/<image>:<tag>`.
    pub repository_name: String,
    /// Credentials to push with, when the registry does not take the manager token (a cloud
    /// registry such as ECR); absent: push with the manager token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PushCredentials>,
}

/// Basic credentials that push to a registry until `expiresAt`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushCredentials {
    /// User name (`AWS` for ECR).
    pub username: String,
    /// Password. **Secret.**
    pub password: String,
    /// When the registry stops accepting them.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Shows the user name and expiry; never the password.
impl std::fmt::Debug for PushCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What this manager can deploy to.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Platforms {
    /// Platforms a deployment can be made for and reach `running`: those with a deployer in this
    /// manager (push) and `local` (pull: the agent deploys on its own host).
    pub platforms: Vec<Platform>,
    /// For each of them, the registry its images live in and what deploys it.
    pub details: Vec<PlatformDetail>,
}

/// One platform of [`Platforms`].
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformDetail {
    /// The platform.
    pub platform: Platform,
    /// Where its release images live.
    pub registry: PlatformRegistry,
    /// What deploys push-mode deployments of it in this manager (absent: none here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<String>,
    /// Whether pull-mode agents deploy it.
    pub pull: bool,
}

/// The registry of a platform.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformRegistry {
    /// `embedded`, `ecr`, `gar` or `acr`.
    pub kind: String,
    /// Registry host (and port).
    pub host: String,
    /// Repository (prefix) images are pushed under.
    pub repository_name: String,
}

/// Optional body of `POST /v1/deployment-groups/{id}/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGroupToken {
    /// A label for the token.
    #[serde(default)]
    pub name: Option<String>,
}

/// A new group token; `token` is shown only here.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupTokenCreated {
    /// The raw token.
    pub token: String,
    /// Its group.
    pub deployment_group_id: Id,
    /// The token's id.
    pub id: Id,
}

impl std::fmt::Debug for GroupTokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupTokenCreated")
            .field("deployment_group_id", &self.deployment_group_id)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Live tokens (never their raw values).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    /// The tokens.
    pub items: Vec<TokenRecord>,
}

/// A created deployment and its token (shown only here).
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCreated {
    /// The deployment.
    pub deployment: Deployment,
    /// Push or pull.
    pub deployment_model: DeploymentModel,
    /// Its new deployment token.
    pub token: String,
}

impl std::fmt::Debug for DeploymentCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentCreated")
            .field("deployment", &self.deployment)
            .field("deployment_model", &self.deployment_model)
            .finish_non_exhaustive()
    }
}

/// A deployment's resources at a glance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInfo {
    /// Lifecycle status.
    pub status: DeploymentStatus,
    /// Platform.
    pub platform: Platform,
    /// Resources by id.
    pub resources: BTreeMap<String, ResourceInfo>,
    /// Where its commands go.
    pub commands: CommandsInfo,
    /// Error of the last failed step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeploymentError>,
}

/// One resource of [`DeploymentInfo`].
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// Resource type (`container`...).
    pub resource_type: String,
    /// Resource status.
    pub status: String,
    /// Public URL when exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Commands endpoint of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandsInfo {
    /// Base URL of the commands API.
    pub url: String,
    /// The deployment.
    pub deployment_id: Id,
}

/// Events of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventsPage {
    /// Newest first.
    pub items: Vec<DeploymentEventRecord>,
}

/// Optional body of redeploy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeployBody {
    /// Release to apply (e.g. an earlier one, to roll back); default: the desired release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_id: Option<Id>,
}

/// `cleanup` tears down and removes the row once deleted; `forget` removes the row now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeleteAction {
    /// Tear down the deployment's resources, then remove it.
    #[default]
    Cleanup,
    /// Remove the record and revoke its tokens; leave resources alone.
    Forget,
}

/// Body of delete.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteBody {
    /// What to do (default `cleanup`).
    #[serde(default)]
    pub action: DeleteAction,
}

/// Answer of delete.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeleteAccepted {
    /// The action taken.
    pub action: DeleteAction,
    /// What happens next.
    pub message: String,
}

/// One log record as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentLogRecord {
    /// When the event happened (or was observed), RFC 3339 in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Severity as the workload named it (`INFO`, `Error`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_text: Option<String>,
    /// OpenTelemetry severity number (1-24; 9 = INFO, 17 = ERROR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_number: Option<i32>,
    /// The body: a string, or structured JSON for map and array bodies.
    #[schema(value_type = Object)]
    pub body: Value,
    /// The record's attributes.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// `service.name` of the resource that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Trace id (hex), when the record belongs to a trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Span id (hex), when the record belongs to a span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// The answer of [`RecentLogs::recent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentLogsPage {
    /// The deployment.
    pub deployment_id: String,
    /// The most recent records, oldest first.
    pub records: Vec<RecentLogRecord>,
}

/// The body of `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `healthy`.
    pub status: String,
    /// The manager's version.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secrets of created tokens never reach Debug output (logs, panics).
    #[test]
    fn created_tokens_are_not_in_debug_output() {
        let group = GroupTokenCreated {
            token: "ax_dg_secret".into(),
            deployment_group_id: Id::new(crate::IdKind::DeploymentGroup),
            id: Id::new(crate::IdKind::Token),
        };
        assert!(!format!("{group:?}").contains("ax_dg_secret"));
    }

    #[test]
    fn delete_body_round_trips_and_defaults_to_cleanup() {
        let body: DeleteBody = serde_json::from_str("{}").unwrap_or_default();
        assert_eq!(body.action, DeleteAction::Cleanup);
        let forget = serde_json::to_value(DeleteBody { action: DeleteAction::Forget });
        assert_eq!(forget.ok(), Some(serde_json::json!({"action": "forget"})));
    }
}
