//! The deployer's bookkeeping (the state's `azure` key: everything it created, by container),
//! the names it gives, where an app's rollout stands, and the outputs it reports
//! (`resources`, spec/containers.md).

use std::collections::BTreeMap;

use alien_core::{Deployment, DeploymentError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::size::AppSize;

/// Error code of a state whose `azure` bookkeeping does not read.
pub const STATE_UNREADABLE: &str = alien_deployer::codes::STATE_UNREADABLE;

/// The deployer's bookkeeping under the state's `azure` key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Book {
    /// Per container.
    #[serde(default)]
    pub containers: BTreeMap<String, AppBook>,
}

/// What one container's app is made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppBook {
    /// The app name ([`app_name`]).
    pub name: String,
    /// Its ARM id.
    pub id: String,
    /// The release whose spec was last sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Rollouts of this release that failed: a retry sends the spec with the next attempt, so
    /// Container Apps makes a new revision.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_attempts: u32,
    /// The release `failed_attempts` counts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted: Option<String>,
    /// The create or update operation (its URL) not yet seen ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The delete operation (its URL) not yet seen ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting: Option<String>,
    /// The size it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<AppSize>,
    /// The ingress target port, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `http`, `tcp` or none: how the port is exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<String>,
    /// Replicas Container Apps keeps at least.
    #[serde(default)]
    pub min_replicas: u32,
    /// Replicas Container Apps runs at most.
    #[serde(default)]
    pub max_replicas: u32,
}

impl Book {
    /// The bookkeeping in a state this deployer wrote; empty without one. A bookkeeping that
    /// does not read is an error, not an empty book: destroy would leave everything behind.
    pub(super) fn from_state(state: Option<&Value>) -> Result<Book, DeploymentError> {
        let Some(book) = state.and_then(|s| s.get("azure")) else { return Ok(Book::default()) };
        serde_json::from_value(book.clone()).map_err(|e| DeploymentError {
            code: STATE_UNREADABLE.into(),
            message: format!(
                "the deployment's azure state does not read ({e}); what it lists was not touched"
            ),
            resource_id: None,
        })
    }
}

/// The container app name of `container` of `deployment`: `alien-{container}-{hash}`, the
/// container id cut to 14 characters and 10 hex digits of a SHA-256 of the deployment id and
/// container id: unique per deployment, at most 31 characters, lowercase letters, digits and
/// single `-`, starting with a letter, as Container Apps requires (at most 32; `--` is
/// reserved for revision names).
pub fn app_name(deployment: &Deployment, container: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{}/{container}", deployment.id));
    let mut readable = String::new();
    for c in container.chars() {
        let c = if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && (readable.is_empty() || readable.ends_with('-'))) {
            readable.push(c);
        }
        if readable.len() == 14 {
            break;
        }
    }
    while readable.ends_with('-') {
        readable.pop();
    }
    if readable.is_empty() {
        format!("alien-{}", &hex::encode(digest)[..10])
    } else {
        format!("alien-{readable}-{}", &hex::encode(digest)[..10])
    }
}

/// `{platform, resources, azure}`.
pub(super) fn state_of(book: &Book, resources: &BTreeMap<String, Value>) -> Value {
    json!({"platform": "azure", "resources": resources, "azure": book})
}

/// Where an app's latest rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// The latest revision is provisioned and serves.
    Completed,
    /// Container Apps is still provisioning.
    InProgress,
    /// The latest revision failed; the message says why and what still serves.
    Failed(String),
}

/// The rollout of `app` (a container app) given its `revisions`: completed when the app is
/// `Succeeded` and its latest revision is the latest ready one; failed when the app or its
/// latest revision `Failed`.
pub fn rollout(app: &Value, revisions: &[Value]) -> Rollout {
    let properties = &app["properties"];
    let text = |field: &str| properties[field].as_str().unwrap_or_default();
    let latest = text("latestRevisionName");
    let revision = revisions.iter().find(|r| r["name"] == latest);
    let revision_state =
        revision.and_then(|r| r["properties"]["provisioningState"].as_str()).unwrap_or_default();
    let failed = text("provisioningState").eq_ignore_ascii_case("Failed")
        || revision_state.eq_ignore_ascii_case("Failed");
    if failed {
        let why = revision
            .and_then(|r| r["properties"]["provisioningError"].as_str())
            .filter(|e| !e.is_empty())
            .unwrap_or("no reason given");
        let serving = match text("latestReadyRevisionName") {
            "" => "no revision serves".to_owned(),
            ready if ready == latest => "no revision serves".to_owned(),
            ready => format!("traffic stays on revision {ready}"),
        };
        return Rollout::Failed(format!("revision {latest} failed: {why}; {serving}"));
    }
    if text("provisioningState").eq_ignore_ascii_case("Succeeded")
        && !latest.is_empty()
        && text("latestReadyRevisionName") == latest
    {
        Rollout::Completed
    } else {
        Rollout::InProgress
    }
}

/// One container's entry of the state's `resources` (spec/containers.md "Outputs").
pub(super) fn resource(
    book: &AppBook,
    app: Option<&Value>,
    revisions: &[Value],
    rollout: &Rollout,
) -> Value {
    let status = match rollout {
        Rollout::Completed => "running",
        Rollout::InProgress => "pending",
        Rollout::Failed(_) => "failing",
    };
    let properties = app.map(|a| &a["properties"]);
    let field = |name: &str| properties.map(|p| p[name].clone()).unwrap_or(Value::Null);
    let latest = field("latestRevisionName");
    let current = revisions
        .iter()
        .find(|r| r["name"] == latest)
        .and_then(|r| r["properties"]["replicas"].as_u64())
        .unwrap_or(0);
    let mut outputs = json!({
        "name": book.name,
        "app": book.id,
        "status": status,
        "currentReplicas": current,
        "desiredReplicas": book.min_replicas.max(1),
        "minReplicas": book.min_replicas,
        "maxReplicas": book.max_replicas,
        "latestRevisionName": latest,
        "latestReadyRevisionName": field("latestReadyRevisionName"),
        "replicas": [],
    });
    if let Some(fqdn) = field("latestRevisionFqdn").as_str().filter(|f| !f.is_empty()) {
        outputs["latestRevisionFqdn"] = json!(fqdn);
        match (book.expose.as_deref(), book.port) {
            (Some("http"), _) => outputs["url"] = json!(format!("https://{fqdn}")),
            (Some("tcp"), Some(port)) => outputs["url"] = json!(format!("tcp://{fqdn}:{port}")),
            _ => {}
        }
    }
    if let Some(fqdn) = properties.and_then(|p| p["configuration"]["ingress"]["fqdn"].as_str()) {
        outputs["internalDns"] = json!(fqdn);
    }
    if let Some(size) = &book.size {
        outputs["containerApps"] = json!({
            "cpu": size.cpu(), "memory": size.memory(), "rounded": size.rounded(),
            "requestedCpuMillis": size.requested_cpu_millis,
            "requestedMemoryMiB": size.requested_memory_mib,
        });
    }
    if let Rollout::Failed(why) = rollout {
        outputs["error"] = json!(why);
    }
    let resource_status = match rollout {
        Rollout::Completed => "running",
        Rollout::InProgress => "provisioning",
        Rollout::Failed(_) => "update-failed",
    };
    json!({"type": "container", "status": resource_status, "outputs": outputs})
}

/// The outputs of a deployment's container in a state this deployer wrote (for tests and
/// tools): `url`, replica counts, status.
pub fn outputs<'a>(state: &'a Value, container: &str) -> Option<&'a Value> {
    state.get("resources")?.get(container)?.get("outputs")
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Deployment {
        serde_json::from_value(json!({
            "id": "dep_0123456789abcdefghijklmnopqr", "name": "acme", "platform": "azure",
            "status": "pending", "deploymentModel": "push", "retryRequested": false,
            "deploymentGroupId": "dg_0123456789abcdefghijklmnopqr",
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn app_names_are_valid_and_unique_per_deployment() {
        let d = deployment();
        for container in ["api", "9lives", "a--b__c", "a-rather-long-container-name", "__"] {
            let name = app_name(&d, container);
            assert!(
                name.len() <= 32 && name.starts_with("alien-") && !name.contains("--"),
                "{name}"
            );
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
        }
        assert_ne!(app_name(&d, "api"), app_name(&d, "web"));
    }

    #[test]
    fn rollouts_complete_fail_or_wait() {
        let app = |state: &str, latest: &str, ready: &str| {
            json!({"properties": {"provisioningState": state, "latestRevisionName": latest,
                                  "latestReadyRevisionName": ready}})
        };
        let revision = |name: &str, state: &str| json!({"name": name, "properties": {"provisioningState": state, "provisioningError": "exit 1"}});
        assert_eq!(rollout(&app("Succeeded", "a--2", "a--2"), &[]), Rollout::Completed);
        assert_eq!(rollout(&app("InProgress", "a--2", "a--1"), &[]), Rollout::InProgress);
        let Rollout::Failed(why) =
            rollout(&app("Failed", "a--2", "a--1"), &[revision("a--2", "Failed")])
        else {
            panic!("failed")
        };
        assert!(
            why.contains("a--2 failed: exit 1") && why.contains("stays on revision a--1"),
            "{why}"
        );
        assert!(matches!(
            rollout(&app("Succeeded", "a--2", "a--1"), &[revision("a--2", "Failed")]),
            Rollout::Failed(_)
        ));
        assert!(Book::from_state(Some(&json!({"azure": {"containers": 1}}))).is_err());
    }
}
