//! The deployer's bookkeeping (the state's `aws` key: everything it created, by container),
//! the names it gives, and the outputs it reports (`resources`, spec/containers.md).

use std::collections::{BTreeMap, BTreeSet};

use alien_core::{Deployment, DeploymentError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::fargate::FargateSize;
use super::rollout::Rollout;

/// Error code of a state whose `aws` bookkeeping does not read.
pub const STATE_UNREADABLE: &str = alien_deployer::codes::STATE_UNREADABLE;

/// The deployer's bookkeeping under the state's `aws` key: everything it created, by container,
/// so destroy finds it all even after the stack changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Book {
    /// The region the resources are in.
    #[serde(default)]
    pub region: String,
    /// The cluster.
    #[serde(default)]
    pub cluster: String,
    /// Per container resource.
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerBook>,
}

/// What one container's service is made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerBook {
    /// Task definition family, also the service name.
    pub family: String,
    /// The release whose task definition is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// That task definition's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    /// The size it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<FargateSize>,
    /// The log group.
    pub log_group: String,
    /// SSM parameters holding its secret variables.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub parameters: BTreeSet<String>,
    /// The load balancer in front of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerBook>,
    /// Whether autoscaling is registered for the service.
    #[serde(default)]
    pub autoscaling: bool,
    /// Replicas wanted.
    #[serde(default)]
    pub desired: u32,
}

/// A load balancer, its target group and listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerBook {
    /// `application` or `network`.
    pub kind: String,
    /// Its name (also the target group's).
    pub name: String,
    /// ARN.
    #[serde(default)]
    pub arn: String,
    /// DNS name.
    #[serde(default)]
    pub dns_name: String,
    /// Target group ARN.
    #[serde(default)]
    pub target_group_arn: String,
    /// Listener ARN.
    #[serde(default)]
    pub listener_arn: String,
    /// The container port behind it.
    pub port: u32,
    /// The listener's port.
    pub listener_port: u32,
}

impl Book {
    /// The bookkeeping in a state this deployer wrote; empty without one. A bookkeeping that
    /// does not read is an error, not an empty book: destroy would leave everything behind.
    pub(super) fn from_state(state: Option<&Value>) -> Result<Book, DeploymentError> {
        let Some(book) = state.and_then(|s| s.get("aws")) else { return Ok(Book::default()) };
        serde_json::from_value(book.clone()).map_err(|e| DeploymentError {
            code: STATE_UNREADABLE.into(),
            message: format!(
                "the deployment's aws state does not read ({e}); what it lists was not touched"
            ),
            resource_id: None,
        })
    }
}

/// `alien-{deployment}-{container}`.
pub(super) fn family(deployment: &Deployment, container: &str) -> String {
    format!("alien-{}-{container}", deployment.id)
}

/// `al-` and 16 hex digits of a hash of the deployment and container: load balancer and
/// target group names are at most 32 characters.
pub(super) fn balancer_name(deployment: &Deployment, container: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{}/{container}", deployment.id));
    format!("al-{}", &hex::encode(digest)[..16])
}

pub(super) fn state_of(book: &Book, resources: &BTreeMap<String, Value>) -> Value {
    json!({"platform": "aws", "resources": resources, "aws": book})
}

/// One container's entry of the state's `resources` (spec/containers.md "Outputs").
pub(super) fn resource(
    book: &ContainerBook,
    service: Option<&aws_sdk_ecs::types::Service>,
    rollout: &Rollout,
) -> Value {
    let running = service.map_or(0, |s| s.running_count());
    let status = match rollout {
        Rollout::Completed => "running",
        Rollout::InProgress => "pending",
        Rollout::Failed(_) => "failed",
    };
    let mut outputs = json!({
        "name": book.family,
        "status": status,
        "currentReplicas": running,
        "desiredReplicas": service.map_or(i64::from(book.desired), |s| i64::from(s.desired_count())),
    });
    if let Some(lb) = &book.load_balancer {
        outputs["url"] = json!(match lb.kind.as_str() {
            "application" => format!("http://{}", lb.dns_name),
            _ => format!("{}:{}", lb.dns_name, lb.listener_port),
        });
        outputs["loadBalancer"] = json!(lb.dns_name);
    }
    if let Some(size) = &book.size {
        outputs["fargate"] = json!({
            "cpu": size.cpu, "memory": size.memory, "rounded": size.rounded(),
            "requestedCpuMillis": size.requested_cpu_millis,
            "requestedMemoryMiB": size.requested_memory_mib,
        });
    }
    json!({"type": "container", "status": status, "outputs": outputs})
}

/// The outputs of a deployment's container in a state this deployer wrote (for tests and
/// tools): `url`, replica counts, status.
pub fn outputs<'a>(state: &'a Value, container: &str) -> Option<&'a Value> {
    state.get("resources")?.get(container)?.get("outputs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_that_does_not_read_is_an_error() {
        assert_eq!(Book::from_state(None).unwrap(), Book::default());
        assert_eq!(Book::from_state(Some(&json!({"platform": "aws"}))).unwrap(), Book::default());
        let err = Book::from_state(Some(&json!({"aws": {"containers": 7}}))).unwrap_err();
        assert_eq!(err.code, STATE_UNREADABLE);
    }

    #[test]
    fn names_fit_aws_limits() {
        let deployment: Deployment = serde_json::from_value(json!({
            "id": "dep_0123456789abcdefghijklmnopqr", "name": "acme", "platform": "aws",
            "status": "pending", "deploymentModel": "push", "retryRequested": false,
            "deploymentGroupId": "dg_0123456789abcdefghijklmnopqr",
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        let name = balancer_name(&deployment, "a-rather-long-container-name");
        assert_eq!(name.len(), 19);
        assert!(name.starts_with("al-") && name[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(name, balancer_name(&deployment, "other"));
        assert_eq!(family(&deployment, "web"), "alien-dep_0123456789abcdefghijklmnopqr-web");
    }
}
