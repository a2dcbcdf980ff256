//! Deployments and deployment groups (`spec/api.md` "Deployments", "Deployment groups").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DeploymentModel, DeploymentStatus, FieldViolation, Id, Platform};

/// Default `maxDeployments` of a group.
pub const DEFAULT_MAX_DEPLOYMENTS: u32 = 100;

/// A group of deployments sharing tokens and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentGroup {
    /// `dg_...` id.
    pub id: Id,
    /// Name, unique in the workspace.
    pub name: String,
    /// Most deployments the group may hold.
    pub max_deployments: u32,
    /// Deployments it holds now.
    pub deployment_count: u32,
    /// How a new release rolls out over the group (absent: to every deployment at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A group's staged rollout (spec/deployer.md "Rollout policy"): a new release is applied to at
/// most `batchSize` deployments of the group at a time; the next batch starts once every
/// deployment of the previous one left `updating` and `batchDelaySecs` passed; with
/// `pauseOnFailure`, an `update-failed` deployment halts the rollout until it is retried or
/// redeployed. A deployment-targeted redeploy (a rollback) or retry is not held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutPolicy {
    /// Deployments updated at once (1..=100000; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100000)]
    pub batch_size: Option<u32>,
    /// Seconds between the end of a batch and the start of the next (0..=86400; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 86400)]
    pub batch_delay_secs: Option<u32>,
    /// Halt the rollout while a deployment of the group is `update-failed` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_on_failure: Option<bool>,
}

/// What a group's rollout stands at, as read for one deployment that wants to begin its update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupRollout {
    /// The deployment was targeted by a redeploy or retry (a rollback is never held).
    pub targeted: bool,
    /// Deployments of the group `updating` now.
    pub updating: u32,
    /// Deployments of the group `update-failed` now.
    pub failed: u32,
    /// Updates begun in the current batch.
    pub batch_begun: u32,
    /// When the group's last update ended.
    pub last_done_at: Option<DateTime<Utc>>,
}

/// The rollout's answer for one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutDecision {
    /// Begin now; `batch_begun` is the batch count to store (`None`: not counted).
    Begin {
        /// The new count of updates begun in the batch.
        batch_begun: Option<u32>,
    },
    /// Not now.
    Hold {
        /// When it may begin, when that is a time (the batch delay).
        until: Option<DateTime<Utc>>,
        /// Why (for logs and events).
        reason: String,
    },
}

impl RolloutPolicy {
    /// Deployments updated at once.
    pub fn batch_size(&self) -> u32 {
        self.batch_size.unwrap_or(1)
    }

    /// Seconds between batches.
    pub fn batch_delay_secs(&self) -> u32 {
        self.batch_delay_secs.unwrap_or(0)
    }

    /// Whether a failed deployment halts the rollout.
    pub fn pause_on_failure(&self) -> bool {
        self.pause_on_failure.unwrap_or(false)
    }

    /// Whether an `update-pending` deployment of a group may begin its update now: the rollout
    /// rule, decided on what the store read (`group`) in the transaction that then writes the
    /// decision. No policy, or a deployment-targeted redeploy or retry (a rollback), begins at
    /// once without counting; otherwise the batch is counted, and a full batch waits until none
    /// of it is updating and the delay since the last update ended has passed.
    pub fn decide(
        policy: Option<&RolloutPolicy>,
        group: &GroupRollout,
        now: DateTime<Utc>,
    ) -> RolloutDecision {
        let Some(policy) = policy.filter(|_| !group.targeted) else {
            return RolloutDecision::Begin { batch_begun: None };
        };
        if policy.pause_on_failure() && group.failed > 0 {
            return RolloutDecision::Hold {
                until: None,
                reason: format!(
                    "the group's rollout is paused: {} deployment(s) update-failed",
                    group.failed
                ),
            };
        }
        let size = policy.batch_size();
        let mut begun = group.batch_begun;
        if begun >= size {
            if group.updating > 0 {
                return RolloutDecision::Hold {
                    until: None,
                    reason: format!("the group's batch of {size} is updating"),
                };
            }
            let delay = chrono::Duration::seconds(i64::from(policy.batch_delay_secs()));
            let ready_at = group.last_done_at.map(|at| at + delay);
            if let Some(ready_at) = ready_at
                && now < ready_at
            {
                return RolloutDecision::Hold {
                    until: Some(ready_at),
                    reason: format!(
                        "the next batch starts {}s after the previous one",
                        policy.batch_delay_secs()
                    ),
                };
            }
            begun = 0;
        }
        if group.updating >= size {
            // Updates of an earlier rollout still run (a newer release reset the batch).
            return RolloutDecision::Hold {
                until: None,
                reason: format!("{} deployments of the group are updating", group.updating),
            };
        }
        RolloutDecision::Begin { batch_begun: Some(begun + 1) }
    }

    /// Checks the bounds; `field` prefixes the names of violations (e.g. `rollout`).
    pub fn validate(&self, field: &str) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if let Some(size) = self.batch_size
            && !(1..=100_000).contains(&size)
        {
            out.push(FieldViolation::new(
                format!("{field}.batchSize"),
                format!("must be between 1 and 100000, got {size}"),
            ));
        }
        if let Some(delay) = self.batch_delay_secs
            && delay > 86_400
        {
            out.push(FieldViolation::new(
                format!("{field}.batchDelaySecs"),
                format!("must be between 0 and 86400 (a day), got {delay}"),
            ));
        }
        out
    }
}

/// `PATCH /v1/deployment-groups/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateDeploymentGroup {
    /// The new rollout policy; `null` removes it.
    pub rollout: Option<RolloutPolicy>,
}

/// `POST /v1/deployment-groups` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDeploymentGroup {
    /// Name: 1..=63 of `[a-z0-9-]`, starting and ending alphanumeric.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Most deployments (1..=100000, default 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub max_deployments: Option<u32>,
    /// Staged rollout of new releases (absent: every deployment at once).
    #[serde(default)]
    pub rollout: Option<RolloutPolicy>,
}

impl CreateDeploymentGroup {
    /// Checks the name and the limit.
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if let Err(message) = check_name(&self.name) {
            out.push(FieldViolation::new("name", message));
        }
        if let Some(max) = self.max_deployments
            && !(1..=100_000).contains(&max)
        {
            out.push(FieldViolation::new(
                "maxDeployments",
                format!("must be between 1 and 100000, got {max}"),
            ));
        }
        if let Some(rollout) = &self.rollout {
            out.extend(rollout.validate("rollout"));
        }
        out
    }
}

/// How an environment variable is stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    /// Stored and returned as is.
    Plain,
    /// Sealed at rest, never returned by the API.
    Secret,
}

/// A deployment's environment variable.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentVariable {
    /// Name: `[A-Za-z_][A-Za-z0-9_]*`, not starting with `ALIEN_`.
    #[schema(pattern = "^[A-Za-z_][A-Za-z0-9_]*$")]
    pub name: String,
    /// Value (at most 32 KiB of UTF-8).
    #[schema(max_length = 32768)]
    pub value: String,
    /// Plain or secret.
    #[serde(rename = "type")]
    pub var_type: VariableType,
}

impl std::fmt::Debug for EnvironmentVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = match self.var_type {
            VariableType::Plain => self.value.as_str(),
            VariableType::Secret => "<redacted>",
        };
        write!(f, "{}={value:?} ({:?})", self.name, self.var_type)
    }
}

/// `POST /v1/deployments` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDeployment {
    /// Name, unique in its group: 1..=63 of `[a-z0-9-]`, starting and ending alphanumeric.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Target platform.
    pub platform: Platform,
    /// Group (required for admins when more than one group exists).
    #[serde(default)]
    pub deployment_group_id: Option<Id>,
    /// Push or pull (platform rules apply).
    #[serde(default)]
    pub deployment_model: Option<DeploymentModel>,
    /// Environment variables (at most 256).
    #[serde(default)]
    #[schema(max_items = 256)]
    pub environment_variables: Vec<EnvironmentVariable>,
    /// Platform-specific settings, stored as given.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub stack_settings: Option<Value>,
    /// Cloud region.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub region: Option<String>,
    /// Platform-specific target (account, project...), stored as given.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub target: Option<Value>,
}

/// Most environment variables a deployment may have.
pub const MAX_VARIABLES: usize = 256;
/// Largest environment variable value, in bytes.
pub const MAX_VARIABLE_VALUE: usize = 32 * 1024;
/// Most bytes of a deployment's variables together (`NAME=value` each): with the stack's own
/// variables (as much again, [`crate::stack::MAX_ENV_TOTAL`]) and the manager's, a container's
/// environment stays well inside Linux's limit on a process's arguments and environment (2 MiB
/// with the usual 8 MiB stack), so it can start.
pub const MAX_VARIABLES_TOTAL: usize = 512 * 1024;

impl CreateDeployment {
    /// Checks name and variables (platform/model and group rules need the store; see the server).
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if let Err(message) = check_name(&self.name) {
            out.push(FieldViolation::new("name", message));
        }
        for (field, value) in [("stackSettings", &self.stack_settings), ("target", &self.target)] {
            if value.as_ref().is_some_and(|v| !v.is_object()) {
                out.push(FieldViolation::new(field, "must be a JSON object"));
            }
        }
        if self.environment_variables.len() > MAX_VARIABLES {
            out.push(FieldViolation::new(
                "environmentVariables",
                format!("at most {MAX_VARIABLES} variables"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, var) in self.environment_variables.iter().enumerate() {
            let path = format!("environmentVariables[{i}]");
            if let Err(message) = check_variable_name(&var.name) {
                out.push(FieldViolation::new(format!("{path}.name"), message));
            } else if !seen.insert(var.name.as_str()) {
                out.push(FieldViolation::new(
                    format!("{path}.name"),
                    format!("{} is given twice", var.name),
                ));
            }
            if var.value.len() > MAX_VARIABLE_VALUE {
                out.push(FieldViolation::new(
                    format!("{path}.value"),
                    format!("must be at most {MAX_VARIABLE_VALUE} bytes"),
                ));
            }
        }
        let total: usize =
            self.environment_variables.iter().map(|v| v.name.len() + 1 + v.value.len()).sum();
        if total > MAX_VARIABLES_TOTAL {
            out.push(FieldViolation::new(
                "environmentVariables",
                format!(
                    "the variables take {total} bytes (NAME=value each); at most {MAX_VARIABLES_TOTAL} fit in a container's environment"
                ),
            ));
        }
        if let Some(region) = &self.region
            && (region.is_empty() || region.len() > 64)
        {
            out.push(FieldViolation::new("region", "must be 1..=64 characters"));
        }
        out
    }
}

/// Checks a group or deployment name: a DNS label.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: expected 1 to 63 of lowercase letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// Checks an environment variable name.
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "{name:?} is not a valid variable name: expected [A-Za-z_][A-Za-z0-9_]*"
        ));
    }
    if name.starts_with("ALIEN_") {
        return Err(format!(
            "{name:?}: the ALIEN_ prefix is reserved for variables the manager injects"
        ));
    }
    Ok(())
}

/// What went wrong in the last step of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentError {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// The resource that failed, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

/// A deployment as the API shows it (no tokens, secret values or lock fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `dep_...` id.
    pub id: Id,
    /// Name, unique in its group.
    pub name: String,
    /// Target platform.
    pub platform: Platform,
    /// Lifecycle status.
    pub status: DeploymentStatus,
    /// Push or pull.
    pub deployment_model: DeploymentModel,
    /// Its group.
    pub deployment_group_id: Id,
    /// Release it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_release_id: Option<Id>,
    /// Release it should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_release_id: Option<Id>,
    /// Platform state of its resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub stack_state: Option<Value>,
    /// Error of the last failed step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeploymentError>,
    /// A retry was asked for and not yet taken up.
    pub retry_requested: bool,
    /// Cloud region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Last heartbeat or sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One recorded status change of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEventRecord {
    /// Status before (absent for creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DeploymentStatus>,
    /// Status after.
    pub to: DeploymentStatus,
    /// What caused it (`created`, `release`, `retry`, `redeploy`, `delete`, ...).
    pub reason: String,
    /// Extra detail (release id, error...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
    /// When.
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::{GroupRollout, RolloutDecision, RolloutPolicy};

    #[test]
    fn a_deployments_variables_fit_a_containers_environment_together() {
        use crate::{EnvironmentVariable, Platform, VariableType};
        let variables = |n: usize| -> Vec<EnvironmentVariable> {
            (0..n)
                .map(|i| EnvironmentVariable {
                    name: format!("V{i:03}"),
                    value: "v".repeat(super::MAX_VARIABLE_VALUE),
                    var_type: VariableType::Plain,
                })
                .collect()
        };
        let body = |n| {
            serde_json::from_value::<super::CreateDeployment>(serde_json::json!({
                "name": "d", "platform": Platform::Local, "environmentVariables": variables(n)
            }))
            .unwrap()
        };
        // 15 x (5 + 32768) bytes fit in 512 KiB; 17 do not.
        assert_eq!(body(15).validate(), []);
        let refused = body(17).validate();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].path, "environmentVariables");
        assert!(refused[0].message.contains("at most 524288"), "{}", refused[0].message);
    }

    #[test]
    fn the_rollout_decides_batches_delays_pauses_and_rollbacks() {
        let now = chrono::Utc::now();
        let policy = RolloutPolicy {
            batch_size: Some(2),
            batch_delay_secs: Some(60),
            pause_on_failure: Some(true),
        };
        let decide = |group: GroupRollout| RolloutPolicy::decide(Some(&policy), &group, now);
        let begin = |n| RolloutDecision::Begin { batch_begun: Some(n) };
        assert_eq!(decide(GroupRollout::default()), begin(1));
        assert_eq!(
            decide(GroupRollout { batch_begun: 1, updating: 1, ..Default::default() }),
            begin(2)
        );
        // A full batch still updating holds; once done, the delay counts from the last end.
        let full = GroupRollout { batch_begun: 2, updating: 1, ..Default::default() };
        assert!(matches!(decide(full), RolloutDecision::Hold { until: None, .. }));
        let recent = now - chrono::Duration::seconds(10);
        let waiting =
            GroupRollout { batch_begun: 2, last_done_at: Some(recent), ..Default::default() };
        assert_eq!(
            decide(waiting),
            RolloutDecision::Hold {
                until: Some(recent + chrono::Duration::seconds(60)),
                reason: "the next batch starts 60s after the previous one".into(),
            }
        );
        let long_ago = now - chrono::Duration::seconds(61);
        let ready =
            GroupRollout { batch_begun: 2, last_done_at: Some(long_ago), ..Default::default() };
        assert_eq!(decide(ready), begin(1));
        // Updates of an earlier rollout still running hold a fresh batch too.
        assert!(matches!(
            decide(GroupRollout { updating: 2, ..Default::default() }),
            RolloutDecision::Hold { .. }
        ));
        // A failure pauses; a rollback (targeted) or no policy at all goes at once, uncounted.
        assert!(matches!(
            decide(GroupRollout { failed: 1, ..Default::default() }),
            RolloutDecision::Hold { .. }
        ));
        let targeted =
            GroupRollout { targeted: true, failed: 1, updating: 5, ..Default::default() };
        assert_eq!(decide(targeted), RolloutDecision::Begin { batch_begun: None });
        assert_eq!(
            RolloutPolicy::decide(None, &GroupRollout { updating: 9, ..Default::default() }, now),
            RolloutDecision::Begin { batch_begun: None }
        );
        // Without a pause, a failure does not hold.
        let no_pause = RolloutPolicy { pause_on_failure: None, ..policy };
        let failed = GroupRollout { failed: 3, ..Default::default() };
        assert_eq!(RolloutPolicy::decide(Some(&no_pause), &failed, now), begin(1));
    }

    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "my-app", "a1", &"x".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64), "ü"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn variable_names_follow_shell_rules_and_reserve_alien() {
        for ok in ["A", "_x", "LOG_LEVEL", "a1"] {
            assert!(check_variable_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "ALIEN_X"] {
            assert!(check_variable_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_values_never_show_in_debug() {
        let var = EnvironmentVariable {
            name: "K".into(),
            value: "hunter2".into(),
            var_type: VariableType::Secret,
        };
        assert!(!format!("{var:?}").contains("hunter2"));
    }

    #[test]
    fn create_deployment_reports_every_violation() {
        let body: CreateDeployment = serde_json::from_value(serde_json::json!({
            "name": "Bad_Name", "platform": "local",
            "environmentVariables": [
                {"name": "ALIEN_X", "value": "1", "type": "plain"},
                {"name": "A", "value": "1", "type": "secret"},
                {"name": "A", "value": "2", "type": "plain"}
            ]
        }))
        .unwrap();
        let paths: Vec<String> = body.validate().into_iter().map(|v| v.path).collect();
        assert_eq!(paths, ["name", "environmentVariables[0].name", "environmentVariables[2].name"]);
    }
}
