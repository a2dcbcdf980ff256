//! Container Apps on Resource Manager, api-version 2024-03-01, as `ContainerApps.json`,
//! `ContainerAppsRevisions.json` and `CommonDefinitions.json` of azure-rest-api-specs
//! (`specification/app/resource-manager/Microsoft.App/stable/2024-03-01`) document them:
//!
//! - `PUT .../containerApps/{name}` (create or update): 201 on create, 200 on update, the app
//!   with `provisioningState: InProgress` and an `Azure-AsyncOperation` header; a template
//!   change makes a new revision `{name}--{revisionSuffix}` (a generated suffix when none);
//! - `GET` the app (secrets' values are never returned), 404 `ResourceNotFound`;
//! - `DELETE`: 202 with `Azure-AsyncOperation` and `Location`, 204 when absent;
//! - `GET .../containerApps/{name}/revisions`: `{value: [Revision]}`;
//! - `GET .../locations/{l}/containerappOperationStatuses/{id}`: `{id, name, status, error?}`.
//!
//! The request is checked where the service would refuse it: a location, the managed
//! environment, at least one container with a name and an image, a cpu/memory pair Container
//! Apps allows (0.25 vCPU steps up to 4, memory twice the cpu in Gi), `secretRef`s that name a
//! secret, an ingress target port. A revision fails to provision when the app was told to
//! ([`super::ContractStub::fail_revisions_of`]) or an image contains [`FAILING_IMAGE_MARKER`].

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Answer, Call, StubState, error, now, ok};

/// The Container Apps api-version.
pub(super) const API_VERSION: &str = "2024-03-01";
/// An image whose reference contains this never provisions.
pub const FAILING_IMAGE_MARKER: &str = "fails-to-start";

/// One container app.
#[derive(Debug, Clone)]
pub(super) struct App {
    pub(super) id: String,
    pub(super) body: Value,
    /// Revisions (their JSON), oldest first.
    pub(super) revisions: Vec<Value>,
    subscription: String,
    location: String,
}

/// Apps by lowercased ARM id; apps whose new revisions fail.
#[derive(Debug, Default)]
pub(super) struct AppsState {
    pub(super) apps: BTreeMap<String, App>,
    pub(super) failing: BTreeSet<String>,
}

/// What an operation does when it ends.
#[derive(Debug, Clone)]
pub(super) enum Effect {
    /// The app (key) settles: its newest revision provisions or fails.
    Settle(String),
    /// The app (key) goes away.
    Delete(String),
}

fn not_found(name: &str, group: &str) -> Answer {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.App/containerApps/{name}' under resource group '{group}' was not found."
        ),
    )
}

fn invalid(message: impl Into<String>) -> Answer {
    error(StatusCode::BAD_REQUEST, "ContainerAppInvalidRequest", message)
}

/// Whether `cpu` and `memory` are a pair Container Apps allows.
fn allowed_pair(cpu: f64, memory: &str) -> bool {
    let quarters = cpu * 4.0;
    let Some(gi) = memory.strip_suffix("Gi").and_then(|m| m.parse::<f64>().ok()) else {
        return false;
    };
    quarters.fract() == 0.0 && (1.0..=16.0).contains(&quarters) && (gi - cpu * 2.0).abs() < 1e-9
}

/// Why `body` would be refused, if it would.
fn check(body: &Value) -> Option<String> {
    if body["location"].as_str().is_none_or(str::is_empty) {
        return Some("location is required".into());
    }
    let properties = &body["properties"];
    if properties["managedEnvironmentId"]
        .as_str()
        .or(properties["environmentId"].as_str())
        .is_none()
    {
        return Some("properties.environmentId is required".into());
    }
    let secrets: BTreeSet<&str> = properties["configuration"]["secrets"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    let containers = properties["template"]["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        return Some("properties.template.containers must not be empty".into());
    }
    for container in &containers {
        if container["name"].as_str().is_none_or(str::is_empty)
            || container["image"].as_str().is_none_or(str::is_empty)
        {
            return Some("every container needs a name and an image".into());
        }
        let resources = &container["resources"];
        if let (Some(cpu), Some(memory)) = (resources["cpu"].as_f64(), resources["memory"].as_str())
            && !allowed_pair(cpu, memory)
        {
            return Some(format!(
                "The total requested CPU and memory resources for this application (CPU: {cpu}, \
                 memory: {memory}) is invalid."
            ));
        }
        for env in container["env"].as_array().into_iter().flatten() {
            if let Some(reference) = env["secretRef"].as_str()
                && !secrets.contains(reference)
            {
                return Some(format!("secretRef {reference} names no secret of the app"));
            }
        }
    }
    let ingress = &properties["configuration"]["ingress"];
    if !ingress.is_null() && ingress["targetPort"].as_u64().is_none() {
        return Some("ingress.targetPort is required".into());
    }
    None
}

pub(super) fn handle(state: &mut StubState, call: &Call<'_>) -> Answer {
    if call.query.get("api-version").map(String::as_str) != Some(API_VERSION) {
        return error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "api-version 2024-03-01 is required",
        );
    }
    let subscription = call.segment(1).to_owned();
    let group = call.segment(3).to_owned();
    let name = call.segment(7).to_owned();
    let id = format!(
        "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.App/containerApps/{name}"
    );
    let key = id.to_ascii_lowercase();
    let rest: Vec<&str> = call.segments.iter().skip(8).map(String::as_str).collect();
    match (call.method, rest.as_slice()) {
        (&Method::GET, []) => match state.apps.apps.get(&key) {
            Some(app) => ok(app.body.clone()),
            None => not_found(&name, &group),
        },
        (&Method::GET, ["revisions"]) => match state.apps.apps.get(&key) {
            Some(app) => ok(json!({"value": app.revisions})),
            None => not_found(&name, &group),
        },
        (&Method::PUT, []) => put(state, call.body, &id, &key, &subscription, &name),
        (&Method::DELETE, []) => {
            let Some(app) = state.apps.apps.get(&key).cloned() else {
                return (StatusCode::NO_CONTENT, Vec::new(), Value::Null);
            };
            let url = state.operation(&app.subscription, &app.location, Effect::Delete(key));
            (
                StatusCode::ACCEPTED,
                vec![("azure-asyncoperation", url.clone()), ("location", url)],
                Value::Null,
            )
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not served by the stub"),
    }
}

fn put(
    state: &mut StubState,
    body: &Value,
    id: &str,
    key: &str,
    subscription: &str,
    name: &str,
) -> Answer {
    if let Some(message) = check(body) {
        return invalid(message);
    }
    let location = body["location"].as_str().unwrap_or_default().to_owned();
    let environment = body["properties"]["managedEnvironmentId"]
        .as_str()
        .or(body["properties"]["environmentId"].as_str())
        .unwrap_or_default()
        .to_owned();
    let domain = format!(
        "{}.{location}.azurecontainerapps.io",
        environment.rsplit('/').next().unwrap_or("env").to_ascii_lowercase()
    );
    let existing = state.apps.apps.get(key).cloned();
    let created = existing.is_none();
    let template = body["properties"]["template"].clone();
    let previous_template = existing.as_ref().map(|a| a.body["properties"]["template"].clone());
    let mut revisions = existing.as_ref().map(|a| a.revisions.clone()).unwrap_or_default();
    let mut stored = body.clone();
    // Secrets' values are write-only.
    if let Some(secrets) = stored["properties"]["configuration"]["secrets"].as_array_mut() {
        for secret in secrets {
            if let Some(object) = secret.as_object_mut() {
                object.remove("value");
            }
        }
    }
    let new_revision = previous_template.as_ref() != Some(&template);
    let latest = if new_revision {
        let suffix = template["revisionSuffix"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map_or_else(|| format!("{:07x}", state.id()), str::to_owned);
        let revision_name = format!("{name}--{suffix}");
        if revisions.iter().any(|r| r["name"] == revision_name.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                "ContainerAppRevisionSuffixConflict",
                format!("revision {revision_name} already exists; use another revisionSuffix"),
            );
        }
        revisions.push(json!({
            "id": format!("{id}/revisions/{revision_name}"),
            "name": revision_name,
            "type": "Microsoft.App/containerApps/revisions",
            "properties": {
                "createdTime": now(), "fqdn": format!("{revision_name}.{domain}"),
                "template": template, "active": true, "replicas": 0, "trafficWeight": 0,
                "healthState": "None", "provisioningState": "Provisioning", "runningState": "Processing",
            },
        }));
        revision_name
    } else {
        existing
            .as_ref()
            .and_then(|a| a.body["properties"]["latestRevisionName"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let ready = existing
        .as_ref()
        .map(|a| a.body["properties"]["latestReadyRevisionName"].clone())
        .unwrap_or(Value::Null);
    let properties = &mut stored["properties"];
    properties["provisioningState"] = json!("InProgress");
    properties["runningStatus"] = json!("Running");
    properties["managedEnvironmentId"] = json!(environment);
    properties["environmentId"] = json!(environment);
    properties["latestRevisionName"] = json!(latest);
    properties["latestReadyRevisionName"] = ready;
    properties["latestRevisionFqdn"] = json!(format!("{latest}.{domain}"));
    if properties["configuration"]["ingress"].is_object() {
        properties["configuration"]["ingress"]["fqdn"] = json!(format!("{name}.{domain}"));
    }
    properties["outboundIpAddresses"] = json!(["20.0.0.1"]);
    stored["id"] = json!(id);
    stored["name"] = json!(name);
    stored["type"] = json!("Microsoft.App/containerApps");
    let answer = stored.clone();
    state.apps.apps.insert(
        key.to_owned(),
        App {
            id: id.to_owned(),
            body: stored,
            revisions,
            subscription: subscription.to_owned(),
            location: location.clone(),
        },
    );
    let url = state.operation(subscription, &location, Effect::Settle(key.to_owned()));
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    (status, vec![("azure-asyncoperation", url)], answer)
}

/// Ends an operation: `Err` is the operation's error body.
pub(super) fn settle(state: &mut StubState, effect: &Effect) -> Result<(), Value> {
    match effect {
        Effect::Delete(key) => {
            state.apps.apps.remove(key);
            Ok(())
        }
        Effect::Settle(key) => {
            let failing = &state.apps.failing;
            let Some(app) = state.apps.apps.get_mut(key) else { return Ok(()) };
            let name = app.body["name"].as_str().unwrap_or_default().to_owned();
            let latest = app.body["properties"]["latestRevisionName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let fails = failing.contains(&name)
                || app.body["properties"]["template"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["image"].as_str().is_some_and(|i| i.contains(FAILING_IMAGE_MARKER)));
            let min =
                app.body["properties"]["template"]["scale"]["minReplicas"].as_u64().unwrap_or(0);
            let replicas = min.max(1);
            for revision in &mut app.revisions {
                let is_latest = revision["name"] == latest.as_str();
                let p = &mut revision["properties"];
                if is_latest {
                    if fails {
                        p["provisioningState"] = json!("Failed");
                        p["runningState"] = json!("Failed");
                        p["healthState"] = json!("Unhealthy");
                        p["replicas"] = json!(0);
                        p["provisioningError"] = json!("Container exited with code 1 (stub)");
                    } else {
                        p["provisioningState"] = json!("Provisioned");
                        p["runningState"] = json!("Running");
                        p["healthState"] = json!("Healthy");
                        p["replicas"] = json!(replicas);
                        p["trafficWeight"] = json!(100);
                    }
                } else if !fails {
                    p["active"] = json!(false);
                    p["replicas"] = json!(0);
                    p["trafficWeight"] = json!(0);
                }
            }
            let properties = &mut app.body["properties"];
            if fails {
                properties["provisioningState"] = json!("Failed");
                Err(json!({
                    "code": "ContainerAppOperationError",
                    "message": format!("Failed to provision revision for container app '{name}'. Error details: The following field(s) are either invalid or missing. Revision {latest} failed: container exited (stub)."),
                }))
            } else {
                properties["provisioningState"] = json!("Succeeded");
                properties["latestReadyRevisionName"] = json!(latest);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::allowed_pair;

    #[test]
    fn cpu_memory_pairs() {
        assert!(
            allowed_pair(0.25, "0.5Gi") && allowed_pair(2.0, "4Gi") && allowed_pair(4.0, "8Gi")
        );
        assert!(
            !allowed_pair(0.3, "0.6Gi") && !allowed_pair(1.0, "1Gi") && !allowed_pair(8.0, "16Gi")
        );
    }
}
