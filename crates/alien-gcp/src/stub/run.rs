//! Cloud Run Admin API v2 services, as
//! <https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services> documents
//! them (`google/cloud/run/v2/service.proto`): create, get, patch and delete answer with
//! long-running operations; a template change makes a new revision; reconciliation ends in
//! `terminalCondition` `CONDITION_SUCCEEDED` (`latestReadyRevision` = `latestCreatedRevision`,
//! `observedGeneration` = `generation`, traffic on the new revision) or `CONDITION_FAILED`
//! (`latestReadyRevision`, `observedGeneration` and traffic stay on the last serving revision,
//! as the `reconciling` field's documentation says).

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Answer, Call, StubState, error, invalid, not_found, now};

/// An image containing this marker never becomes ready (as a container that does not listen).
pub const FAILING_IMAGE_MARKER: &str = "fail-revision";

const SERVICE_TYPE: &str = "type.googleapis.com/google.cloud.run.v2.Service";

/// The Cloud Run part of the stub's state.
#[derive(Debug, Default)]
pub(super) struct RunState {
    pub(super) services: BTreeMap<String, StubService>,
    /// Service ids whose new revisions fail.
    pub(super) failing: BTreeSet<String>,
}

/// One service: its JSON as GET answers it, and what the stub tracks besides.
#[derive(Debug, Clone)]
pub(super) struct StubService {
    pub(super) body: Value,
    pub(super) revisions: Vec<String>,
    /// The operation that settles it, while reconciling.
    pending: Option<String>,
}

/// The fields a client sets (the rest is output only).
const SETTABLE: [&str; 9] = [
    "description",
    "labels",
    "annotations",
    "ingress",
    "template",
    "traffic",
    "scaling",
    "invokerIamDisabled",
    "defaultUriDisabled",
];

/// Whether `id` is a valid service id: starts with a letter, fewer than 50 characters,
/// lowercase letters, digits and hyphens, no trailing hyphen (`CreateServiceRequest.service_id`).
fn valid_service_id(id: &str) -> bool {
    id.len() < 50
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_template(body: &Value) -> Result<(), Answer> {
    let containers = body.pointer("/template/containers").and_then(Value::as_array);
    match containers {
        Some(list) if !list.is_empty() => {}
        _ => {
            return Err(invalid("service.template.containers: at least one container is required"));
        }
    }
    for container in containers.into_iter().flatten() {
        if container.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(invalid("service.template.containers[].image is required"));
        }
        let ports = container.get("ports").and_then(Value::as_array).map_or(0, Vec::len);
        if ports > 1 {
            return Err(invalid("service.template.containers[].ports: at most one port"));
        }
        for variable in container.get("env").and_then(Value::as_array).into_iter().flatten() {
            let secret = variable.pointer("/valueSource/secretKeyRef/secret");
            if variable.get("value").is_some() && secret.is_some() {
                return Err(invalid("env: value and valueSource are exclusive"));
            }
        }
    }
    Ok(())
}

pub(super) fn handle(state: &mut StubState, call: &Call<'_>) -> Answer {
    let s: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    let parent = s[1..5].join("/");
    match (call.method, s.as_slice()) {
        (&Method::POST, [_, _, _, _, _, "services"]) => create(state, call, &parent),
        (method, [_, _, _, _, _, "services", id]) => {
            let name = format!("{parent}/services/{id}");
            match *method {
                Method::GET => get(state, &name),
                Method::PATCH => patch(state, call, &parent, id, &name),
                Method::DELETE => delete(state, &parent, &name),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "UNIMPLEMENTED", "method"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such Cloud Run method"),
    }
}

/// `POST /v2/{parent}/services?serviceId=` -> Operation; 409 `ALREADY_EXISTS` when it exists.
fn create(state: &mut StubState, call: &Call<'_>, parent: &str) -> Answer {
    let Some(id) = call.query.get("serviceId") else {
        return invalid("service_id is required");
    };
    if !valid_service_id(id) {
        return invalid(format!(
            "service_id '{id}' must begin with a letter, contain only lowercase letters, digits \
             and hyphens, not end with a hyphen, and have fewer than 50 characters"
        ));
    }
    let name = format!("{parent}/services/{id}");
    if state.run.services.contains_key(&name) {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("Resource '{id}' already exists."),
        );
    }
    if let Err(answer) = check_template(call.body) {
        return answer;
    }
    let mut body = json!({
        "name": name, "uid": format!("uid-{}", state.id()), "generation": "1",
        "createTime": now(), "updateTime": now(), "creator": "stub",
        "ingress": "INGRESS_TRAFFIC_ALL", "launchStage": "GA",
        "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
        "conditions": [], "etag": format!("\"{}\"", state.id()),
    });
    copy_settable(call.body, &mut body);
    let mut service = StubService { body, revisions: Vec::new(), pending: None };
    new_revision(&mut service, id);
    let op = start(state, parent, &name, &mut service);
    state.run.services.insert(name, service);
    (StatusCode::OK, op)
}

fn copy_settable(from: &Value, to: &mut Value) {
    for field in SETTABLE {
        if let Some(value) = from.get(field) {
            to[field] = value.clone();
        }
    }
}

/// A new revision `{id}-{n:05}-{suffix}` becomes the latest created one.
fn new_revision(service: &mut StubService, id: &str) {
    let n = service.revisions.len() + 1;
    let suffix: String = format!("{:x}", n * 2654435761).chars().rev().take(3).collect();
    let revision =
        format!("{}/revisions/{id}-{n:05}-{suffix}", service.body["name"].as_str().unwrap_or(""));
    service.revisions.push(revision.clone());
    service.body["latestCreatedRevision"] = json!(revision);
}

/// Marks `service` reconciling under a new operation.
fn start(state: &mut StubState, parent: &str, name: &str, service: &mut StubService) -> Value {
    service.body["reconciling"] = json!(true);
    service.body["terminalCondition"] = json!({
        "type": "Ready", "state": "CONDITION_RECONCILING", "lastTransitionTime": now(),
    });
    let op = state.operation(parent, Some(name.to_owned()), SERVICE_TYPE, None, name);
    service.pending = op["name"].as_str().map(str::to_owned);
    op
}

/// `GET /v2/{name}`: the service; a read also moves its pending operation on.
fn get(state: &mut StubState, name: &str) -> Answer {
    let pending = match state.run.services.get(name) {
        None => return not_found(name),
        Some(service) => service.pending.clone(),
    };
    if let Some(op) = pending {
        state.read_operation(&op);
    }
    match state.run.services.get(name) {
        Some(service) => (StatusCode::OK, service.body.clone()),
        None => not_found(name),
    }
}

/// `PATCH /v2/{name}` -> Operation; a template change makes a new revision. 404 unless
/// `allowMissing`.
fn patch(state: &mut StubState, call: &Call<'_>, parent: &str, id: &str, name: &str) -> Answer {
    let Some(mut service) = state.run.services.get(name).cloned() else {
        if call.query.get("allowMissing").is_some_and(|v| v == "true") {
            let mut query = call.query.clone();
            query.insert("serviceId".into(), id.to_owned());
            let create_call = Call {
                method: &Method::POST,
                segments: call.segments.clone(),
                query: &query,
                body: call.body,
            };
            return create(state, &create_call, parent);
        }
        return not_found(name);
    };
    if let Err(answer) = check_template(call.body) {
        return answer;
    }
    let template_changed = call.body.get("template") != service.body.get("template");
    copy_settable(call.body, &mut service.body);
    let generation =
        service.body["generation"].as_str().and_then(|g| g.parse::<i64>().ok()).unwrap_or(0) + 1;
    service.body["generation"] = json!(generation.to_string());
    service.body["updateTime"] = json!(now());
    if template_changed {
        new_revision(&mut service, id);
    }
    let op = start(state, parent, name, &mut service);
    state.run.services.insert(name.to_owned(), service);
    (StatusCode::OK, op)
}

/// `DELETE /v2/{name}` -> Operation whose response is the deleted service.
fn delete(state: &mut StubState, parent: &str, name: &str) -> Answer {
    let Some(service) = state.run.services.remove(name) else { return not_found(name) };
    let op = state.operation(parent, None, SERVICE_TYPE, Some(Ok(service.body)), name);
    (StatusCode::OK, op)
}

/// Ends the reconciliation of service `name`: the latest revision serves, or it failed and
/// the previous one keeps serving. The operation's result.
pub(super) fn settle(state: &mut StubState, name: &str) -> Result<Value, Value> {
    let failing_ids = state.run.failing.clone();
    let Some(service) = state.run.services.get_mut(name) else {
        return Err(json!({"code": 5, "message": format!("service {name} is gone")}));
    };
    service.pending = None;
    let body = &mut service.body;
    let id = name.rsplit('/').next().unwrap_or_default().to_owned();
    let latest = body["latestCreatedRevision"].as_str().unwrap_or_default().to_owned();
    let short = latest.rsplit('/').next().unwrap_or_default().to_owned();
    let marked = body
        .pointer("/template/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["image"].as_str().is_some_and(|i| i.contains(FAILING_IMAGE_MARKER)));
    body["reconciling"] = json!(false);
    if failing_ids.contains(&id) || marked {
        let message = format!(
            "Revision '{short}' is not ready and cannot serve traffic. The user-provided \
             container failed to start and listen on the port defined by the PORT environment \
             variable."
        );
        body["terminalCondition"] = json!({
            "type": "Ready", "state": "CONDITION_FAILED", "message": message,
            "lastTransitionTime": now(), "severity": "ERROR",
        });
        body["conditions"] = json!([
            {"type": "ConfigurationsReady", "state": "CONDITION_FAILED", "message": message,
             "revisionReason": "HEALTH_CHECK_CONTAINER_ERROR"},
            {"type": "RoutesReady", "state": "CONDITION_SUCCEEDED"},
        ]);
        return Err(json!({"code": 9, "message": message}));
    }
    let id_hash = format!("{:x}", id.len() * 7_919 + 1_000_003);
    body["terminalCondition"] = json!({
        "type": "Ready", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": now(),
    });
    body["conditions"] = json!([
        {"type": "RoutesReady", "state": "CONDITION_SUCCEEDED"},
        {"type": "ConfigurationsReady", "state": "CONDITION_SUCCEEDED"},
    ]);
    body["latestReadyRevision"] = json!(latest);
    body["observedGeneration"] = body["generation"].clone();
    body["trafficStatuses"] = json!([{
        "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "revision": short, "percent": 100,
    }]);
    let uri = format!("https://{id}-{id_hash}-uc.a.run.app");
    body["uri"] = json!(uri);
    body["urls"] = json!([uri]);
    Ok(body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ids_follow_the_documented_rule() {
        for good in ["a", "alien-api-0123456789", &format!("a{}", "b".repeat(48))] {
            assert!(valid_service_id(good), "{good}");
        }
        for bad in ["", "1abc", "Abc", "abc-", "a_b", &format!("a{}", "b".repeat(49))] {
            assert!(!valid_service_id(bad), "{bad}");
        }
    }
}
