//! Artifact Registry v1 repositories, as
//! <https://cloud.google.com/artifact-registry/docs/reference/rest/v1/projects.locations.repositories>
//! documents them (`google/devtools/artifactregistry/v1/{service,repository}.proto`): get (404),
//! create with `?repositoryId=` as a long-running operation (409 `ALREADY_EXISTS`), delete, and
//! the IAM policy (`:getIamPolicy`, `:setIamPolicy` with `google.iam.v1.Policy`), whose `etag`
//! guards read-modify-write: a stale etag is 409 `ABORTED`, as
//! <https://cloud.google.com/iam/docs/policies#etag> describes.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Answer, Call, StubState, error, invalid, not_found, now};

const REPOSITORY_TYPE: &str = "type.googleapis.com/google.devtools.artifactregistry.v1.Repository";

/// The Artifact Registry part of the stub's state.
#[derive(Debug, Default)]
pub(super) struct RegistryState {
    pub(super) repositories: BTreeMap<String, Value>,
    /// Repository -> (bindings, etag counter).
    policies: BTreeMap<String, (Value, u64)>,
}

impl RegistryState {
    fn etag(n: u64) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("etag-{n:08}"))
    }

    /// The policy of `name` as `getIamPolicy` answers it.
    pub(super) fn policy(&self, name: &str) -> Value {
        let (bindings, n) = self.policies.get(name).cloned().unwrap_or((json!([]), 0));
        let mut policy = json!({"version": 1, "etag": Self::etag(n)});
        if bindings.as_array().is_some_and(|b| !b.is_empty()) {
            policy["bindings"] = bindings;
        }
        policy
    }

    /// Replaces the bindings of `name`; the etag moves on.
    pub(super) fn set_bindings(&mut self, name: &str, bindings: Value) {
        let n = self.policies.get(name).map_or(0, |(_, n)| *n) + 1;
        self.policies.insert(name.to_owned(), (bindings, n));
    }
}

fn valid_repository_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(super) fn insert_repository(state: &mut StubState, name: &str, body: &Value) -> Value {
    let repository = json!({
        "name": name,
        "format": body.get("format").cloned().unwrap_or(json!("DOCKER")),
        "mode": body.get("mode").cloned().unwrap_or(json!("STANDARD_REPOSITORY")),
        "description": body.get("description").cloned().unwrap_or(json!("")),
        "createTime": now(), "updateTime": now(), "sizeBytes": "0",
    });
    state.registry.repositories.insert(name.to_owned(), repository.clone());
    repository
}

pub(super) fn handle(state: &mut StubState, call: &Call<'_>) -> Answer {
    let s: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    let parent = s[1..5].join("/");
    match (call.method, s.as_slice()) {
        (&Method::POST, [_, _, _, _, _, "repositories"]) => create(state, call, &parent),
        (method, [_, _, _, _, _, "repositories", last]) => {
            let (id, verb) = match last.split_once(':') {
                Some((id, verb)) => (id, Some(verb)),
                None => (*last, None),
            };
            let name = format!("{parent}/repositories/{id}");
            if !state.registry.repositories.contains_key(&name) {
                return not_found(&name);
            }
            match (method, verb) {
                (&Method::GET, None) => {
                    (StatusCode::OK, state.registry.repositories[&name].clone())
                }
                (&Method::DELETE, None) => {
                    let deleted = state.registry.repositories.remove(&name);
                    state.registry.policies.remove(&name);
                    let result = Some(Ok(deleted.unwrap_or(Value::Null)));
                    let op = state.operation(&parent, None, REPOSITORY_TYPE, result, &name);
                    (StatusCode::OK, op)
                }
                (&Method::GET | &Method::POST, Some("getIamPolicy")) => {
                    (StatusCode::OK, state.registry.policy(&name))
                }
                (&Method::POST, Some("setIamPolicy")) => set_policy(state, call, &name),
                _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such Artifact Registry method"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such Artifact Registry method"),
    }
}

/// `POST /v1/{parent}/repositories?repositoryId=` -> Operation (response: the Repository).
fn create(state: &mut StubState, call: &Call<'_>, parent: &str) -> Answer {
    let Some(id) = call.query.get("repositoryId") else {
        return invalid("repository_id is required");
    };
    if !valid_repository_id(id) {
        return invalid(format!("repository_id '{id}' is not a valid repository id"));
    }
    let name = format!("{parent}/repositories/{id}");
    if state.registry.repositories.contains_key(&name) {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("the repository already exists: {name}"),
        );
    }
    let repository = insert_repository(state, &name, call.body);
    let op = state.operation(parent, None, REPOSITORY_TYPE, Some(Ok(repository)), &name);
    (StatusCode::OK, op)
}

/// `POST /v1/{resource}:setIamPolicy` `{policy: {bindings, etag?}}` -> the stored Policy.
fn set_policy(state: &mut StubState, call: &Call<'_>, name: &str) -> Answer {
    let Some(policy) = call.body.get("policy") else { return invalid("policy is required") };
    let current = state.registry.policy(name);
    if let Some(etag) = policy.get("etag").and_then(Value::as_str)
        && Some(etag) != current["etag"].as_str()
    {
        return error(
            StatusCode::CONFLICT,
            "ABORTED",
            "There were concurrent policy changes. Please retry the whole read-modify-write \
             with exponential backoff.",
        );
    }
    let bindings = policy.get("bindings").cloned().unwrap_or(json!([]));
    for binding in bindings.as_array().into_iter().flatten() {
        let role = binding.get("role").and_then(Value::as_str).unwrap_or_default();
        if !role.starts_with("roles/") {
            return invalid(format!("role '{role}' is not a role name"));
        }
    }
    state.registry.set_bindings(name, bindings);
    (StatusCode::OK, state.registry.policy(name))
}
