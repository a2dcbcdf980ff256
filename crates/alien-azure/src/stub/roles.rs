//! Role assignments: `PUT|GET|DELETE {scope}/providers/Microsoft.Authorization/roleAssignments/{name}`
//! (api-version 2022-04-01), as `authorization-RoleAssignmentsCalls.json` of
//! azure-rest-api-specs documents them: PUT `{properties: {roleDefinitionId, principalId,
//! principalType?}}` answers 201 with the assignment (`{id, type, name, properties: {scope,
//! roleDefinitionId, principalId, principalType, createdOn}}`), 200 when the same assignment
//! is put again under its name; another name for the same principal, role and scope is
//! 409 `RoleAssignmentExists`. DELETE answers 200 with the assignment, 204 when absent.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Answer, Call, StubState, error, now, ok};

/// The api-version of role assignments.
pub(super) const API_VERSION: &str = "2022-04-01";

/// One assignment.
#[derive(Debug, Clone)]
pub(super) struct Assignment {
    pub(super) id: String,
    pub(super) properties: Value,
}

/// Assignments by lowercased id.
#[derive(Debug, Default)]
pub(super) struct RoleState {
    pub(super) assignments: BTreeMap<String, Assignment>,
}

fn body_of(assignment: &Assignment) -> Value {
    let name = assignment.id.rsplit('/').next().unwrap_or_default();
    json!({
        "id": assignment.id, "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": assignment.properties,
    })
}

pub(super) fn handle(state: &mut StubState, call: &Call<'_>) -> Answer {
    if call.query.get("api-version").map(String::as_str) != Some(API_VERSION) {
        return error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "api-version 2022-04-01 is required",
        );
    }
    let id = format!("/{}", call.segments.join("/"));
    let key = id.to_ascii_lowercase();
    let scope = id
        [..id.to_ascii_lowercase().find("/providers/microsoft.authorization/").unwrap_or(0)]
        .to_owned();
    match *call.method {
        Method::GET => match state.roles.assignments.get(&key) {
            Some(assignment) => ok(body_of(assignment)),
            None => error(
                StatusCode::NOT_FOUND,
                "RoleAssignmentNotFound",
                "The role assignment does not exist.",
            ),
        },
        Method::DELETE => match state.roles.assignments.remove(&key) {
            Some(assignment) => ok(body_of(&assignment)),
            None => (StatusCode::NO_CONTENT, Vec::new(), Value::Null),
        },
        Method::PUT => {
            let properties = &call.body["properties"];
            let (Some(role), Some(principal)) = (
                properties["roleDefinitionId"].as_str().filter(|r| !r.is_empty()),
                properties["principalId"].as_str().filter(|p| !p.is_empty()),
            ) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRoleAssignmentRequest",
                    "properties.roleDefinitionId and properties.principalId are required",
                );
            };
            let same = |a: &Assignment| {
                a.properties["principalId"] == principal
                    && a.properties["roleDefinitionId"].as_str().map(str::to_ascii_lowercase)
                        == Some(role.to_ascii_lowercase())
                    && a.properties["scope"].as_str().map(str::to_ascii_lowercase)
                        == Some(scope.to_ascii_lowercase())
            };
            if let Some(existing) = state.roles.assignments.get(&key) {
                if same(existing) {
                    return ok(body_of(existing));
                }
                return error(
                    StatusCode::CONFLICT,
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                );
            }
            if state.roles.assignments.values().any(same) {
                return error(
                    StatusCode::CONFLICT,
                    "RoleAssignmentExists",
                    "The role assignment already exists.",
                );
            }
            let assignment = Assignment {
                id: id.clone(),
                properties: json!({
                    "scope": scope, "roleDefinitionId": role, "principalId": principal,
                    "principalType": properties["principalType"].as_str().unwrap_or("ServicePrincipal"),
                    "createdOn": now(),
                }),
            };
            let body = body_of(&assignment);
            state.roles.assignments.insert(key, assignment);
            (StatusCode::CREATED, Vec::new(), body)
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "GET, PUT or DELETE"),
    }
}
