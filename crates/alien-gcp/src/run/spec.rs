//! The Cloud Run v2 `Service` a container becomes (`google/cloud/run/v2/{service,
//! revision_template,k8s.min}.proto`, JSON in lowerCamelCase).
//!
//! - one container: the image, `command` as the entrypoint, one port (the exposed one, else the
//!   first: Cloud Run routes requests to one port), `resources.limits` from [`RunSize`];
//! - env: plain variables as `value`, secret ones as `valueSource.secretKeyRef` pinned to the
//!   version this release stored;
//! - scaling: fixed replicas as `minInstanceCount` = `maxInstanceCount`; autoscaling as its
//!   min and max, with `targetHttpInFlightPerReplica` as `maxInstanceRequestConcurrency` (Cloud
//!   Run scales on concurrency and cpu by itself; the cpu and memory targets have no field);
//! - the health check as a startup probe (every 5 s, at least 12 failures: a minute to boot)
//!   and a liveness probe (every 10 s, `failureThreshold` failures), both HTTP GET on its path
//!   and port (Cloud Run probes only GET);
//! - an exposed `http` port: ingress from everywhere and unauthenticated invocations
//!   (`invokerIamDisabled`); otherwise internal ingress and IAM-checked invocations.

use alien_core::ContainerConfig;
use serde_json::{Value, json};

use super::size::RunSize;

/// One environment variable of the revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EnvValue {
    /// In the service's configuration as is.
    Plain(String),
    /// From Secret Manager: `projects/{p}/secrets/{id}` at `version`.
    Secret {
        /// The secret's name.
        secret: String,
        /// Its version.
        version: String,
    },
}

/// What [`service_body`] needs besides the container.
pub(super) struct SpecInputs<'a> {
    pub(super) container_id: &'a str,
    pub(super) image: &'a str,
    pub(super) port: u32,
    pub(super) public: bool,
    pub(super) size: RunSize,
    pub(super) min_instances: u32,
    pub(super) max_instances: u32,
    pub(super) env: &'a [(String, EnvValue)],
    pub(super) service_account: &'a str,
    pub(super) deployment_id: &'a str,
    pub(super) release_id: &'a str,
    /// Failed rollouts of this release before (a retry's revision differs by it).
    pub(super) attempt: u32,
}

fn probes(container: &ContainerConfig, port: u32) -> Option<(Value, Value)> {
    let check = container.health_check.as_ref()?;
    let port = check.port.unwrap_or(port);
    let http_get = json!({"path": check.path(), "port": port});
    let timeout = check.timeout_seconds();
    let failures = check.failure_threshold.unwrap_or(3).max(1);
    let startup = json!({
        "httpGet": http_get, "timeoutSeconds": timeout, "periodSeconds": 5.max(timeout),
        "failureThreshold": failures.max(12),
    });
    let liveness = json!({
        "httpGet": http_get, "timeoutSeconds": timeout, "periodSeconds": 10.max(timeout),
        "failureThreshold": failures,
    });
    Some((startup, liveness))
}

/// The Service to create or patch.
pub(super) fn service_body(container: &ContainerConfig, inputs: &SpecInputs<'_>) -> Value {
    let env: Vec<Value> = inputs
        .env
        .iter()
        .map(|(name, value)| match value {
            EnvValue::Plain(value) => json!({"name": name, "value": value}),
            EnvValue::Secret { secret, version } => json!({"name": name, "valueSource": {
                "secretKeyRef": {"secret": secret, "version": version}}}),
        })
        .collect();
    let mut run_container = json!({
        "name": inputs.container_id,
        "image": inputs.image,
        "ports": [{"containerPort": inputs.port}],
        "resources": {"limits": inputs.size.limits()},
        "env": env,
    });
    if let Some(command) = container.command.as_ref().filter(|c| !c.is_empty()) {
        run_container["command"] = json!(command);
    }
    if let Some((startup, liveness)) = probes(container, inputs.port) {
        run_container["startupProbe"] = startup;
        run_container["livenessProbe"] = liveness;
    }
    let labels =
        json!({"alien-deployment": inputs.deployment_id, "alien-container": inputs.container_id});
    let mut annotations = json!({"alien.dev/release": inputs.release_id});
    if inputs.attempt > 0 {
        annotations["alien.dev/attempt"] = json!(inputs.attempt.to_string());
    }
    let mut template = json!({
        "labels": labels,
        "annotations": annotations,
        "serviceAccount": inputs.service_account,
        "scaling": {"minInstanceCount": inputs.min_instances, "maxInstanceCount": inputs.max_instances},
        "containers": [run_container],
    });
    if let Some(in_flight) =
        container.autoscaling.as_ref().and_then(|a| a.target_http_in_flight_per_replica)
    {
        template["maxInstanceRequestConcurrency"] = json!(in_flight.clamp(1, 1000));
    }
    json!({
        "labels": labels,
        "ingress": if inputs.public { "INGRESS_TRAFFIC_ALL" } else { "INGRESS_TRAFFIC_INTERNAL_ONLY" },
        "invokerIamDisabled": inputs.public,
        "template": template,
        "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
    })
}

/// The instance bounds of `container`: fixed replicas as min = max; autoscaling's min and max.
pub(super) fn instance_bounds(container: &ContainerConfig) -> (u32, u32) {
    match (&container.autoscaling, container.replicas) {
        (Some(scaling), _) => (scaling.min, scaling.max.max(scaling.min).max(1)),
        (None, Some(replicas)) => (replicas, replicas.max(1)),
        (None, None) => (1, 1),
    }
}
