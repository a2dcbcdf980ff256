//! Resource Manager v3 projects, as
//! <https://cloud.google.com/resource-manager/reference/rest/v3/projects/get> documents it:
//! `GET /v3/projects/{projectId or number}` -> `{name: "projects/{number}", projectId, state,
//! displayName}`; 403 `PERMISSION_DENIED` for a project the caller cannot see, which is also
//! Google's answer for one that does not exist.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::{Answer, Call, StubState, error};

pub(super) fn handle(state: &mut StubState, call: &Call<'_>) -> Answer {
    if *call.method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "UNIMPLEMENTED", "only GET");
    }
    let asked = call.segments[2].as_str();
    let found = state
        .projects
        .iter()
        .find(|(id, number)| id.as_str() == asked || number.as_str() == asked)
        .map(|(id, number)| (id.clone(), number.clone()));
    match found {
        Some((id, number)) => (
            StatusCode::OK,
            json!({"name": format!("projects/{number}"), "projectId": id, "state": "ACTIVE",
                   "displayName": id, "parent": "organizations/0"}),
        ),
        None => error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!(
                "Permission 'resourcemanager.projects.get' denied on resource \
                 '//cloudresourcemanager.googleapis.com/projects/{asked}' (or it may not exist)."
            ),
        ),
    }
}
