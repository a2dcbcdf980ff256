//! The deployer's bookkeeping (the state's `gcp` key: everything it created, by container),
//! the names it gives, where a service's rollout stands, and the outputs it reports
//! (`resources`, spec/containers.md).

use std::collections::{BTreeMap, BTreeSet};

use alien_core::{Deployment, DeploymentError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::size::RunSize;

/// Error code of a state whose `gcp` bookkeeping does not read.
pub const STATE_UNREADABLE: &str = alien_deployer::codes::STATE_UNREADABLE;

/// The deployer's bookkeeping under the state's `gcp` key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Book {
    /// The project the services are in.
    #[serde(default)]
    pub project: String,
    /// The Cloud Run location.
    #[serde(default)]
    pub region: String,
    /// Per container.
    #[serde(default)]
    pub containers: BTreeMap<String, ServiceBook>,
}

/// What one container's service is made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBook {
    /// The service id ([`service_id`]).
    pub service_id: String,
    /// `projects/{p}/locations/{l}/services/{id}`.
    pub name: String,
    /// The release whose spec was last sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Rollouts of this release that failed: a retry sends the spec again with the next
    /// attempt, so Cloud Run makes a new revision.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_attempts: u32,
    /// The release `failed_attempts` counts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted: Option<String>,
    /// The create or update operation not yet seen done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The delete operation not yet seen done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting: Option<String>,
    /// Secret Manager secrets holding its secret variables (`projects/{p}/secrets/{id}`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub secrets: BTreeSet<String>,
    /// The size it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<RunSize>,
    /// The container port Cloud Run sends requests to.
    #[serde(default)]
    pub port: u32,
    /// Whether the port is exposed (`http`): public ingress, unauthenticated invocations.
    #[serde(default)]
    pub public: bool,
    /// Instances Cloud Run keeps at least.
    #[serde(default)]
    pub min_instances: u32,
    /// Instances Cloud Run runs at most.
    #[serde(default)]
    pub max_instances: u32,
}

impl Book {
    /// The bookkeeping in a state this deployer wrote; empty without one. A bookkeeping that
    /// does not read is an error, not an empty book: destroy would leave everything behind.
    pub(super) fn from_state(state: Option<&Value>) -> Result<Book, DeploymentError> {
        let Some(book) = state.and_then(|s| s.get("gcp")) else { return Ok(Book::default()) };
        serde_json::from_value(book.clone()).map_err(|e| DeploymentError {
            code: STATE_UNREADABLE.into(),
            message: format!(
                "the deployment's gcp state does not read ({e}); what it lists was not touched"
            ),
            resource_id: None,
        })
    }
}

/// The Cloud Run service id of `container` of `deployment`: `alien-{container}-{hash}`, the
/// container id cut to 32 characters and 10 hex digits of a SHA-256 of the deployment id and
/// container id, so it is unique per deployment, at most 49 characters, starts with a letter and
/// ends with a digit or letter, as Cloud Run requires.
pub fn service_id(deployment: &Deployment, container: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{}/{container}", deployment.id));
    let mut readable: String = container
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(32)
        .collect();
    while readable.ends_with('-') {
        readable.pop();
    }
    format!("alien-{readable}-{}", &hex::encode(digest)[..10])
}

/// `{platform, resources, gcp}`.
pub(super) fn state_of(book: &Book, resources: &BTreeMap<String, Value>) -> Value {
    json!({"platform": "gcp", "resources": resources, "gcp": book})
}

/// Where a service's latest rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// The latest revision is ready and serves.
    Completed,
    /// Cloud Run is still reconciling.
    InProgress,
    /// The latest revision failed; the message says why and what still serves.
    Failed(String),
}

fn short(revision: &str) -> &str {
    revision.rsplit('/').next().unwrap_or(revision)
}

/// The rollout of `service` (a Cloud Run v2 Service): completed when reconciliation is over
/// with `terminalCondition` `CONDITION_SUCCEEDED`, the latest created revision ready and the
/// observed generation the current one; failed on `CONDITION_FAILED`.
pub fn rollout(service: &Value) -> Rollout {
    let text = |field: &str| service.get(field).and_then(Value::as_str).unwrap_or_default();
    if service.get("reconciling").and_then(Value::as_bool) == Some(true) {
        return Rollout::InProgress;
    }
    let state = service.pointer("/terminalCondition/state").and_then(Value::as_str);
    match state {
        Some("CONDITION_SUCCEEDED")
            if text("latestReadyRevision") == text("latestCreatedRevision")
                && text("observedGeneration") == text("generation") =>
        {
            Rollout::Completed
        }
        Some("CONDITION_FAILED") => {
            let message = service
                .pointer("/terminalCondition/message")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            let serving = match text("latestReadyRevision") {
                "" => "no revision serves".to_owned(),
                ready => format!("traffic stays on revision {}", short(ready)),
            };
            Rollout::Failed(format!(
                "revision {} failed: {message}; {serving}",
                short(text("latestCreatedRevision"))
            ))
        }
        _ => Rollout::InProgress,
    }
}

/// One container's entry of the state's `resources` (spec/containers.md "Outputs").
///
/// Cloud Run's Admin API does not report how many instances run (that is a Cloud Monitoring
/// metric): `desiredReplicas` is the instance floor Cloud Run keeps (`minInstanceCount`, which
/// equals the count for fixed replicas), and `currentReplicas` is that floor while the latest
/// revision is ready, else 0.
pub(super) fn resource(book: &ServiceBook, service: Option<&Value>, rollout: &Rollout) -> Value {
    let status = match rollout {
        Rollout::Completed => "running",
        Rollout::InProgress => "pending",
        Rollout::Failed(_) => "failing",
    };
    let floor = service
        .and_then(|s| s.pointer("/template/scaling/minInstanceCount"))
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(book.min_instances));
    let current = if *rollout == Rollout::Completed { floor } else { 0 };
    let field = |name: &str| service.and_then(|s| s.get(name)).cloned().unwrap_or(Value::Null);
    let mut outputs = json!({
        "name": book.service_id,
        "service": book.name,
        "status": status,
        "currentReplicas": current,
        "desiredReplicas": floor,
        "minInstances": book.min_instances,
        "maxInstances": book.max_instances,
        "latestReadyRevision": field("latestReadyRevision"),
        "latestCreatedRevision": field("latestCreatedRevision"),
        "replicas": [],
    });
    let uri = service.and_then(|s| s.get("uri")).and_then(Value::as_str).filter(|u| !u.is_empty());
    if let Some(uri) = uri {
        outputs["internalDns"] = json!(uri.trim_start_matches("https://"));
        if book.public {
            outputs["url"] = json!(uri);
        }
    }
    if let Some(size) = &book.size {
        outputs["cloudRun"] = json!({
            "cpu": size.cpu.to_string(), "memory": format!("{}Mi", size.memory_mib),
            "rounded": size.rounded(), "requestedCpuMillis": size.requested_cpu_millis,
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
            "id": "dep_0123456789abcdefghijklmnopqr", "name": "acme", "platform": "gcp",
            "status": "pending", "deploymentModel": "push", "retryRequested": false,
            "deploymentGroupId": "dg_0123456789abcdefghijklmnopqr",
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn service_ids_are_valid_cloud_run_ids_and_unique_per_deployment() {
        let d = deployment();
        let long = "a-rather-long-container-name-that-goes-on-to-63-characters-xyz";
        for container in ["api", "9lives", long, "abcdefghijklmnopqrstuvwxyz01234-x"] {
            let id = service_id(&d, container);
            assert!(id.len() < 50, "{id}");
            assert!(id.starts_with("alien-") && !id.ends_with('-'), "{id}");
            assert!(!id.contains("--"), "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
        assert!(service_id(&d, "api").starts_with("alien-api-"));
        assert_ne!(service_id(&d, "api"), service_id(&d, "web"));
    }

    #[test]
    fn bookkeeping_that_does_not_read_is_an_error() {
        assert_eq!(Book::from_state(None).ok(), Some(Book::default()));
        let err = Book::from_state(Some(&json!({"gcp": {"containers": 7}}))).err();
        assert_eq!(err.map(|e| e.code), Some(STATE_UNREADABLE.to_owned()));
    }

    #[test]
    fn rollouts_complete_fail_or_wait() {
        let done = json!({"reconciling": false, "generation": "2", "observedGeneration": "2",
            "latestReadyRevision": "x/revisions/s-2", "latestCreatedRevision": "x/revisions/s-2",
            "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED"}});
        assert_eq!(rollout(&done), Rollout::Completed);
        let mut stale = done.clone();
        stale["generation"] = json!("3");
        assert_eq!(rollout(&stale), Rollout::InProgress, "not yet observed");
        let mut reconciling = done.clone();
        reconciling["reconciling"] = json!(true);
        assert_eq!(rollout(&reconciling), Rollout::InProgress);
        let mut failed = done;
        failed["latestCreatedRevision"] = json!("x/revisions/s-3");
        failed["terminalCondition"] =
            json!({"type": "Ready", "state": "CONDITION_FAILED", "message": "no listen"});
        let Rollout::Failed(why) = rollout(&failed) else { panic!("failed") };
        assert!(why.contains("s-3 failed: no listen") && why.contains("stays on revision s-2"));
    }
}
