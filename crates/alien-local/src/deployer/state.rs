//! The stack state the local platform returns (spec/containers.md, "Outputs"):
//!
//! ```json
//! {"platform": "local",
//!  "resources": {"<id>": {"type": "container", "status": "running",
//!     "outputs": {"name": "<id>", "status": "running", "currentReplicas": 2, "desiredReplicas": 2,
//!                 "internalDns": "10.0.2.2:41234", "url": "http://127.0.0.1:41234",
//!                 "internalPorts": {"8080": "10.0.2.2:41234", "9090": "10.0.2.2:41235"},
//!                 "replicas": [{"replicaId": "alien-<dep>-<id>-0", "healthy": true, "ordinal": 0,
//!                               "status": "running", "health": "healthy", "restarts": 0,
//!                               "startedAt": "..."}]},
//!     "error": {...}}},
//!  "local": {"engine": "podman", "containers": {"<id>": {"urlPort": 41234,
//!            "frontPorts": {"8080": 41234, "9090": 41235}, "failures": {...}}}}}
//! ```
//!
//! `local` is the deployer's own bookkeeping: the front ports and the consecutive failed probes
//! per replica. It is a cache: everything in it is found again from container labels (failure
//! counts start over) when the state is lost or stale.

use std::collections::BTreeMap;

use alien_core::DeploymentError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The deployer's bookkeeping under the state's `local` key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Book {
    /// The engine that ran the step.
    #[serde(default)]
    pub engine: String,
    /// Per container resource.
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerBook>,
}

/// Bookkeeping of one container resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerBook {
    /// The front's host port, when the container exposes a port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_port: Option<u16>,
    /// The front of every port: container port -> host port on 127.0.0.1.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub front_ports: BTreeMap<u32, u16>,
    /// Counted consecutive failed probes, by replica name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, u32>,
}

impl Book {
    /// The bookkeeping in `state`, or an empty one (a missing or unreadable `local` is not an
    /// error: labels tell the rest).
    pub fn from_state(state: Option<&Value>) -> Book {
        state
            .and_then(|s| s.get("local"))
            .and_then(|local| serde_json::from_value(local.clone()).ok())
            .unwrap_or_default()
    }
}

/// `desiredReplicas` of `id` in a state, if recorded.
pub fn desired_in(state: Option<&Value>, id: &str) -> Option<u32> {
    state?
        .get("resources")?
        .get(id)?
        .get("outputs")?
        .get("desiredReplicas")?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

/// Replicas of container `id` that the state records as having come up (healthy, or died
/// since).
pub fn healthy_in(state: Option<&Value>, id: &str) -> Vec<String> {
    let replicas = state
        .and_then(|s| s.get("resources"))
        .and_then(|r| r.get(id))
        .and_then(|r| r.get("outputs"))
        .and_then(|o| o.get("replicas"))
        .and_then(Value::as_array);
    replicas
        .into_iter()
        .flatten()
        .filter(|r| {
            let flag = |name: &str| r.get(name).and_then(Value::as_bool) == Some(true);
            flag("healthy") || flag("died")
        })
        .filter_map(|r| r.get("replicaId").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The `notices` of resource `id` in a state (a refresh keeps what the last apply found).
pub fn notices_in(state: Option<&Value>, id: &str) -> Vec<String> {
    state
        .and_then(|s| s.get("resources"))
        .and_then(|r| r.get(id))
        .and_then(|r| r.get("notices"))
        .and_then(|n| serde_json::from_value(n.clone()).ok())
        .unwrap_or_default()
}

/// Container resource ids in a state.
pub fn resources_in(state: Option<&Value>) -> Vec<String> {
    state
        .and_then(|s| s.get("resources"))
        .and_then(Value::as_object)
        .map(|resources| {
            resources
                .iter()
                .filter(|(_, r)| r.get("type").and_then(Value::as_str) == Some("container"))
                .map(|(id, _)| id.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// One replica in the outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaReport {
    /// Container name.
    pub name: String,
    /// Whether its last probe passed.
    pub healthy: bool,
    /// Whether it stopped after it had been healthy (it is replaced on the next apply).
    pub died: bool,
    /// Its ordinal.
    pub ordinal: u32,
    /// The engine's status (`running`, `exited`, `created`...).
    pub status: String,
    /// `healthy`, `starting` (no probe passed yet, none failed), `unhealthy` or `stopped`.
    pub health: &'static str,
    /// Restarts by the engine.
    pub restarts: u32,
    /// When it last started (RFC 3339).
    pub started_at: Option<String>,
}

/// One container resource in the state.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerReport {
    /// Resource id.
    pub id: String,
    /// Resource status (`provisioning`, `running`, `updating`, `update-failed`, ...).
    pub resource_status: &'static str,
    /// Outputs status (`pending`, `running`, `stopped`, `failing`).
    pub status: &'static str,
    /// Desired replicas.
    pub desired: u32,
    /// `http://127.0.0.1:<front port>` (or `tcp://`), when a port is exposed.
    pub url: Option<String>,
    /// Where other containers on this host reach it (`<host gateway>:<front port>` of its
    /// exposed port, else of its first port).
    pub internal_dns: Option<String>,
    /// Where other containers reach each port: container port -> `<host gateway>:<front port>`.
    pub internal_ports: BTreeMap<u32, String>,
    /// Every replica, current and old.
    pub replicas: Vec<ReplicaReport>,
    /// The resource's error, when it failed.
    pub error: Option<DeploymentError>,
    /// Fields of the container that have no effect on the local platform, each with why.
    pub notices: Vec<String>,
}

impl ContainerReport {
    /// The outputs status for these replicas when nothing failed.
    pub fn status_of(replicas: &[ReplicaReport], any_running: bool) -> &'static str {
        if replicas.iter().any(|r| r.healthy) {
            "running"
        } else if !replicas.is_empty() && !any_running {
            "stopped"
        } else {
            "pending"
        }
    }

    fn to_json(&self) -> Value {
        let healthy = self.replicas.iter().filter(|r| r.healthy).count();
        let mut replicas = self.replicas.clone();
        replicas.sort_by_key(|r| r.ordinal);
        let mut outputs = json!({
            "name": self.id,
            "status": self.status,
            "currentReplicas": healthy,
            "desiredReplicas": self.desired,
            "internalDns": self.internal_dns,
            "replicas": replicas.iter().map(|r| {
                let mut replica = json!({
                    "replicaId": r.name, "healthy": r.healthy, "ordinal": r.ordinal,
                    "status": r.status, "health": r.health, "restarts": r.restarts,
                });
                if let Some(started) = &r.started_at {
                    replica["startedAt"] = json!(started);
                }
                if r.died {
                    replica["died"] = json!(true);
                }
                replica
            }).collect::<Vec<_>>(),
        });
        if !self.internal_ports.is_empty() {
            outputs["internalPorts"] = json!(self.internal_ports);
        }
        if let Some(url) = &self.url {
            outputs["url"] = json!(url);
        }
        let mut resource =
            json!({"type": "container", "status": self.resource_status, "outputs": outputs});
        if let Some(error) = &self.error {
            resource["error"] = json!(error);
        }
        if !self.notices.is_empty() {
            resource["notices"] = json!(self.notices);
        }
        resource
    }
}

/// The whole state.
pub fn state_json(reports: &[ContainerReport], book: &Book) -> Value {
    let resources: serde_json::Map<String, Value> =
        reports.iter().map(|r| (r.id.clone(), r.to_json())).collect();
    json!({"platform": "local", "resources": resources, "local": book})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_has_the_outputs_shape_of_the_spec_and_round_trips_its_bookkeeping() {
        let mut book = Book { engine: "podman".to_owned(), ..Book::default() };
        book.containers.insert(
            "api".to_owned(),
            ContainerBook {
                url_port: Some(41234),
                front_ports: BTreeMap::from([(8080, 41234)]),
                failures: BTreeMap::from([("alien-d-api-2".to_owned(), 1)]),
            },
        );
        let report = ContainerReport {
            id: "api".to_owned(),
            resource_status: "updating",
            status: "running",
            desired: 2,
            url: Some("http://127.0.0.1:41234".to_owned()),
            internal_dns: Some("10.0.2.2:41234".to_owned()),
            internal_ports: BTreeMap::from([(8080, "10.0.2.2:41234".to_owned())]),
            notices: Vec::new(),
            replicas: vec![
                ReplicaReport {
                    name: "alien-d-api-2".to_owned(),
                    healthy: false,
                    died: true,
                    ordinal: 2,
                    status: "exited".to_owned(),
                    health: "stopped",
                    restarts: 1,
                    started_at: None,
                },
                ReplicaReport {
                    name: "alien-d-api-0".to_owned(),
                    healthy: true,
                    died: false,
                    ordinal: 0,
                    status: "running".to_owned(),
                    health: "healthy",
                    restarts: 0,
                    started_at: Some("2026-12-07T10:00:00Z".to_owned()),
                },
            ],
            error: None,
        };
        let state = state_json(&[report], &book);
        assert_eq!(
            state["resources"],
            json!({"api": {"type": "container", "status": "updating", "outputs": {
            "name": "api", "status": "running", "currentReplicas": 1, "desiredReplicas": 2,
            "internalDns": "10.0.2.2:41234", "url": "http://127.0.0.1:41234",
            "internalPorts": {"8080": "10.0.2.2:41234"},
            "replicas": [
                {"replicaId": "alien-d-api-0", "healthy": true, "ordinal": 0, "status": "running",
                 "health": "healthy", "restarts": 0, "startedAt": "2026-12-07T10:00:00Z"},
                {"replicaId": "alien-d-api-2", "healthy": false, "ordinal": 2, "died": true,
                 "status": "exited", "health": "stopped", "restarts": 1}
            ]}}})
        );
        let mut came_up = healthy_in(Some(&state), "api");
        came_up.sort();
        assert_eq!(came_up, ["alien-d-api-0", "alien-d-api-2"], "healthy, or died since");
        assert_eq!(state["platform"], "local");
        assert_eq!(Book::from_state(Some(&state)), book);
        assert_eq!(desired_in(Some(&state), "api"), Some(2));
        assert_eq!(resources_in(Some(&state)), vec!["api".to_owned()]);
        assert_eq!(Book::from_state(Some(&json!({"local": "garbage"}))), Book::default());
        assert_eq!(Book::from_state(None), Book::default());
    }

    #[test]
    fn a_failed_resource_carries_its_error() {
        let report = ContainerReport {
            id: "api".to_owned(),
            resource_status: "update-failed",
            status: "failing",
            desired: 1,
            url: None,
            internal_dns: None,
            internal_ports: BTreeMap::new(),
            replicas: Vec::new(),
            error: Some(DeploymentError {
                code: "HEALTH_CHECK_FAILED".to_owned(),
                message: "m".to_owned(),
                resource_id: Some("api".to_owned()),
            }),
            notices: vec!["cluster `compute`: no local effect".to_owned()],
        };
        let state = state_json(&[report], &Book::default());
        assert_eq!(state["resources"]["api"]["error"]["code"], "HEALTH_CHECK_FAILED");
        assert_eq!(state["resources"]["api"]["error"]["resourceId"], "api");
        assert!(state["resources"]["api"]["outputs"].get("url").is_none());
        assert_eq!(state["resources"]["api"]["notices"][0], "cluster `compute`: no local effect");
    }
}
