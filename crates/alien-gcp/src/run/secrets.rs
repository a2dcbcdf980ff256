//! A container's secret variables in Secret Manager, in the customer's project: one secret
//! `{service id}-{NAME}` per variable (automatic replication), a new version per release whose
//! number the revision pins, so a changed value reaches only the revisions made after it. The
//! revision's service account needs `roles/secretmanager.secretAccessor` on them (or on the
//! project), which the customer grants with the deployer's roles.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::rest::{Api, ApiError};

/// `AddSecretVersion`'s answer.
#[derive(Deserialize)]
struct Version {
    name: String,
}

/// `projects/{project}/secrets/{service_id}-{variable}`.
pub(super) fn secret_name(project: &str, service_id: &str, variable: &str) -> String {
    format!("projects/{project}/secrets/{service_id}-{variable}")
}

/// Stores `value` as a new version of secret `name` (created when missing); the version
/// number.
pub(super) async fn store(
    api: &Api,
    name: &str,
    labels: &serde_json::Value,
    value: &str,
) -> Result<String, ApiError> {
    let (parent, id) = name.rsplit_once("/secrets/").unwrap_or((name, ""));
    let create = format!("/v1/{parent}/secrets?secretId={id}");
    let body = json!({"replication": {"automatic": {}}, "labels": labels});
    match api
        .json::<serde_json::Value>(
            "Secret Manager create secret",
            reqwest::Method::POST,
            &create,
            Some(&body),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if e.conflict() => {}
        Err(e) => return Err(e),
    }
    let data = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
    let version: Version = api
        .json(
            "Secret Manager add secret version",
            reqwest::Method::POST,
            &format!("/v1/{name}:addVersion"),
            Some(&json!({"payload": {"data": data}})),
        )
        .await?;
    // `projects/{number}/secrets/{id}/versions/{n}`: Google answers with the project number.
    version
        .name
        .rsplit_once("/versions/")
        .map(|(_, n)| n.to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::decode(
                "Secret Manager add secret version",
                &format!("a version name {:?}", version.name),
            )
        })
}

/// Deletes secret `name` with all its versions; one already gone is fine.
pub(super) async fn delete(api: &Api, name: &str) -> Result<(), ApiError> {
    match api
        .json::<serde_json::Value>(
            "Secret Manager delete secret",
            reqwest::Method::DELETE,
            &format!("/v1/{name}"),
            None,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
