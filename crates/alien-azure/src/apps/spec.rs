//! The `Microsoft.App/containerApps` resource a container becomes (api-version 2024-03-01,
//! `ContainerApps.json` and `CommonDefinitions.json`):
//!
//! - `configuration`: single revision mode; ingress on the exposed port (`external`, transport
//!   `auto` for http, `tcp` with `exposedPort` for tcp), else internal ingress on the first
//!   port; secrets (`{name, value}`) for the secret variables; a `registries` entry pulling
//!   with the user-assigned identity for images of the configured registry;
//! - `template`: one container (image, `command`, `resources` from [`AppSize`], env as `value`
//!   or `secretRef`, a startup and a liveness probe from the health check), a `revisionSuffix`
//!   fixed by the template itself (so re-sending it makes no new revision, and a retry's attempt
//!   number makes one), and `scale`: fixed replicas as min = max, autoscaling as its bounds with
//!   an `http` rule (`concurrentRequests` = `targetHttpInFlightPerReplica`) and `custom` `cpu` /
//!   `memory` utilization rules.

use alien_core::ContainerConfig;
use alien_core::stack::Expose;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::size::AppSize;

/// One environment variable of the revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EnvValue {
    /// In the template as is.
    Plain(String),
    /// From the app's secret of this name.
    Secret(String),
}

/// What [`app_body`] needs besides the container.
pub(super) struct SpecInputs<'a> {
    pub(super) container_id: &'a str,
    pub(super) image: &'a str,
    pub(super) port: Option<u32>,
    pub(super) expose: Option<Expose>,
    pub(super) size: AppSize,
    pub(super) min_replicas: u32,
    pub(super) max_replicas: u32,
    pub(super) env: &'a [(String, EnvValue)],
    /// Secret name -> value.
    pub(super) secrets: &'a [(String, String)],
    /// `(login server, identity resource id)` when the image is pulled with the identity.
    pub(super) registry: Option<(&'a str, &'a str)>,
    pub(super) identity: Option<&'a str>,
    pub(super) environment_id: &'a str,
    pub(super) location: &'a str,
    pub(super) deployment_id: &'a str,
    pub(super) release_id: &'a str,
    /// Failed rollouts of this release before (a retry's revision differs by it).
    pub(super) attempt: u32,
}

/// The name of the app secret holding variable `name`: lowercase letters, digits and `-`.
pub(super) fn secret_name(name: &str) -> String {
    let readable: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect();
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    format!("{}-{}", readable.trim_matches('-'), &digest[..6]).trim_start_matches('-').to_owned()
}

fn probes(container: &ContainerConfig, port: Option<u32>) -> Vec<Value> {
    let Some(check) = container.health_check.as_ref() else { return Vec::new() };
    let Some(port) = check.port.or(port) else { return Vec::new() };
    let http_get = json!({"path": check.path(), "port": port});
    let timeout = check.timeout_seconds().clamp(1, 240);
    let failures = check.failure_threshold.unwrap_or(3).clamp(1, 10);
    vec![
        // Container Apps allows at most 10 failures: 10 every 6 s gives a minute to boot.
        json!({"type": "Startup", "httpGet": http_get, "timeoutSeconds": timeout,
               "periodSeconds": 6.max(timeout), "failureThreshold": 10}),
        json!({"type": "Liveness", "httpGet": http_get, "timeoutSeconds": timeout,
               "periodSeconds": 10.max(timeout), "failureThreshold": failures}),
    ]
}

fn scale_rules(container: &ContainerConfig) -> Vec<Value> {
    let Some(scaling) = &container.autoscaling else { return Vec::new() };
    let mut rules = Vec::new();
    if let Some(in_flight) = scaling.target_http_in_flight_per_replica {
        rules.push(json!({"name": "http-in-flight",
            "http": {"metadata": {"concurrentRequests": in_flight.max(1).to_string()}}}));
    }
    for (name, target) in
        [("cpu", &scaling.target_cpu_percent), ("memory", &scaling.target_memory_percent)]
    {
        if let Some(percent) = target.as_ref().and_then(serde_json::Number::as_f64) {
            let value = (percent.round() as u64).clamp(1, 100).to_string();
            rules.push(json!({"name": name,
                "custom": {"type": name, "metadata": {"type": "Utilization", "value": value}}}));
        }
    }
    rules
}

/// The container app to put.
pub(super) fn app_body(container: &ContainerConfig, inputs: &SpecInputs<'_>) -> Value {
    let env: Vec<Value> = inputs
        .env
        .iter()
        .map(|(name, value)| match value {
            EnvValue::Plain(value) => json!({"name": name, "value": value}),
            EnvValue::Secret(secret) => json!({"name": name, "secretRef": secret}),
        })
        .collect();
    let mut app_container = json!({
        "name": inputs.container_id,
        "image": inputs.image,
        "resources": {"cpu": inputs.size.cpu(), "memory": inputs.size.memory()},
        "env": env,
        "probes": probes(container, inputs.port),
    });
    if let Some(command) = container.command.as_ref().filter(|c| !c.is_empty()) {
        app_container["command"] = json!(command);
    }
    let mut template = json!({
        "containers": [app_container],
        "scale": {"minReplicas": inputs.min_replicas, "maxReplicas": inputs.max_replicas,
                  "rules": scale_rules(container)},
    });
    // The suffix is fixed by everything else the revision is made of.
    let mut fingerprint = sha2::Sha256::new();
    fingerprint.update(template.to_string().as_bytes());
    for (name, value) in inputs.secrets {
        fingerprint.update(format!("\0{name}\0{value}").as_bytes());
    }
    fingerprint.update(format!("\0{}", inputs.attempt).as_bytes());
    template["revisionSuffix"] = json!(format!("r{}", &hex::encode(fingerprint.finalize())[..9]));

    let mut configuration = json!({
        "activeRevisionsMode": "Single",
        "secrets": inputs.secrets.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>(),
    });
    if let Some(port) = inputs.port {
        let mut ingress = json!({
            "external": inputs.expose.is_some(),
            "targetPort": port,
            "transport": "auto",
            "allowInsecure": false,
            "traffic": [{"latestRevision": true, "weight": 100}],
        });
        if inputs.expose == Some(Expose::Tcp) {
            ingress["transport"] = json!("tcp");
            ingress["exposedPort"] = json!(port);
        }
        configuration["ingress"] = ingress;
    }
    if let Some((server, identity)) = inputs.registry {
        configuration["registries"] = json!([{"server": server, "identity": identity}]);
    }
    let mut body = json!({
        "location": inputs.location,
        "tags": {"alien-deployment": inputs.deployment_id, "alien-container": inputs.container_id,
                 "alien-release": inputs.release_id},
        "properties": {
            "environmentId": inputs.environment_id,
            "configuration": configuration,
            "template": template,
        },
    });
    if let Some(identity) = inputs.identity {
        body["identity"] =
            json!({"type": "UserAssigned", "userAssignedIdentities": {identity: {}}});
    }
    body
}

/// The replica bounds of `container`: fixed replicas as min = max; autoscaling's min and max.
pub(super) fn replica_bounds(container: &ContainerConfig) -> (u32, u32) {
    match (&container.autoscaling, container.replicas) {
        (Some(scaling), _) => (scaling.min, scaling.max.max(scaling.min).max(1)),
        (None, Some(replicas)) => (replicas, replicas.max(1)),
        (None, None) => (1, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::secret_name;

    #[test]
    fn secret_names_are_lowercase_and_distinct() {
        let a = secret_name("DB_PASSWORD");
        assert!(a.starts_with("db-password-") && a.len() == "db-password-".len() + 6, "{a}");
        assert_ne!(secret_name("A_B"), secret_name("A-B"));
        assert!(
            secret_name("_X")
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
}
