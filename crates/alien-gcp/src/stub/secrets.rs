//! Secret Manager v1 secrets, as
//! <https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets> documents
//! them (`google/cloud/secretmanager/v1/{service,resources}.proto`): create with
//! `?secretId=` and a `replication` (409 `ALREADY_EXISTS`), `:addVersion` with
//! `payload.data` in base64, get and delete (404 `NOT_FOUND`). Names in answers carry the
//! project number, as Google's do.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Answer, Call, StubState, error, invalid, not_found, now};

/// The Secret Manager part of the stub's state.
#[derive(Debug, Default)]
pub(super) struct SecretState {
    /// By `projects/{number or id}/secrets/{id}`.
    pub(super) secrets: BTreeMap<String, StubSecret>,
}

/// One secret.
#[derive(Debug, Clone)]
pub(super) struct StubSecret {
    body: Value,
    pub(super) versions: Vec<Vec<u8>>,
}

/// The key of `projects/{p}/secrets/{s}` (the project as its number when known).
pub(super) fn key_of(state: &StubState, name: &str) -> String {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["projects", p, "secrets", s, ..] => {
            format!("projects/{}/secrets/{s}", state.project_key(p))
        }
        _ => name.to_owned(),
    }
}

fn valid_secret_id(id: &str) -> bool {
    (1..=255).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(super) fn handle(state: &mut StubState, call: &Call<'_>) -> Answer {
    let s: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    let project = state.project_key(s[2]);
    match (call.method, s.as_slice()) {
        (&Method::POST, [_, _, _, "secrets"]) => create(state, call, &project),
        (method, [_, _, _, "secrets", last]) => {
            let (id, verb) = match last.split_once(':') {
                Some((id, verb)) => (id, Some(verb)),
                None => (*last, None),
            };
            let key = format!("projects/{project}/secrets/{id}");
            match (method, verb) {
                (&Method::POST, Some("addVersion")) => add_version(state, call, &key),
                (&Method::GET, None) => match state.secrets.secrets.get(&key) {
                    Some(secret) => (StatusCode::OK, secret.body.clone()),
                    None => not_found(&key),
                },
                (&Method::DELETE, None) => match state.secrets.secrets.remove(&key) {
                    Some(_) => (StatusCode::OK, json!({})),
                    None => not_found(&key),
                },
                _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such Secret Manager method"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such Secret Manager method"),
    }
}

/// `POST /v1/projects/{p}/secrets?secretId=` `{replication: {automatic: {}}}` -> Secret.
fn create(state: &mut StubState, call: &Call<'_>, project: &str) -> Answer {
    let Some(id) = call.query.get("secretId") else { return invalid("secret_id is required") };
    if !valid_secret_id(id) {
        return invalid(format!("secret_id '{id}' must be 1-255 of [a-zA-Z0-9_-]"));
    }
    let replication = call.body.get("replication");
    let automatic = replication.and_then(|r| r.get("automatic")).is_some();
    let managed = replication.and_then(|r| r.get("userManaged")).is_some();
    if !automatic && !managed {
        return invalid("secret.replication: automatic or userManaged is required");
    }
    let key = format!("projects/{project}/secrets/{id}");
    if state.secrets.secrets.contains_key(&key) {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("Secret [{key}] already exists."),
        );
    }
    let mut body = json!({"name": key, "replication": replication, "createTime": now(),
                          "etag": format!("\"{}\"", state.id())});
    if let Some(labels) = call.body.get("labels") {
        body["labels"] = labels.clone();
    }
    state.secrets.secrets.insert(key, StubSecret { body: body.clone(), versions: Vec::new() });
    (StatusCode::OK, body)
}

/// `POST /v1/{secret}:addVersion` `{payload: {data}}` -> SecretVersion `{name, state}`.
fn add_version(state: &mut StubState, call: &Call<'_>, key: &str) -> Answer {
    let Some(secret) = state.secrets.secrets.get_mut(key) else { return not_found(key) };
    let Some(data) = call.body.pointer("/payload/data").and_then(Value::as_str) else {
        return invalid("payload.data is required");
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
        return invalid("payload.data is not base64");
    };
    if bytes.len() > 64 * 1024 {
        return invalid("payload.data is larger than 64 KiB");
    }
    secret.versions.push(bytes);
    let n = secret.versions.len();
    (
        StatusCode::OK,
        json!({"name": format!("{key}/versions/{n}"), "createTime": now(), "state": "ENABLED"}),
    )
}
