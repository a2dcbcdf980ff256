//! Where in the customer's project a deployment's containers run, from its platform target
//! (`spec/clouds.md`: `{projectId, serviceAccountEmail}`, which the impersonation reads) plus
//! what Cloud Run needs, which this deployer reads:
//!
//! ```json
//! {"projectId": "customer-project", "serviceAccountEmail": "alien-deployer@customer-project.iam.gserviceaccount.com",
//!  "region": "europe-west1", "projectNumber": "123456789012",
//!  "runtimeServiceAccountEmail": "alien-workload@customer-project.iam.gserviceaccount.com"}
//! ```
//!
//! `region` is the Cloud Run location; when the target has none, the deployment's own `region`
//! is used (as the ECS deployer does), and with neither the step fails naming `target.region`.

use alien_core::DeploymentError;
use serde_json::Value;

use crate::iam::is_service_account_email;

/// The error code of a target the deployer cannot use.
pub const INVALID_TARGET: &str = alien_deployer::codes::INVALID_TARGET;

/// What Cloud Run needs to know about the customer's project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTarget {
    /// The project services and secrets are created in.
    pub project_id: String,
    /// Its number, when given: the registry grant then needs no Resource Manager lookup.
    pub project_number: Option<String>,
    /// The Cloud Run location, e.g. `europe-west1`.
    pub region: String,
    /// The account the deployer acts as (impersonated).
    pub service_account_email: String,
    /// The identity the containers run as: `runtimeServiceAccountEmail`, else
    /// `serviceAccountEmail`.
    pub runtime_service_account_email: String,
}

fn invalid(field: &str, message: &str) -> DeploymentError {
    DeploymentError {
        code: INVALID_TARGET.into(),
        message: format!(
            "target.{field} {message}; gcp deployments give {{\"projectId\", \
             \"serviceAccountEmail\", \"region\"}} (docs/gcp.md)"
        ),
        resource_id: None,
    }
}

fn string<'a>(target: &'a Value, field: &str) -> Result<Option<&'a str>, DeploymentError> {
    match target.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(field, "must be a non-empty string")),
    }
}

fn is_project_id(id: &str) -> bool {
    let id = id.rsplit_once(':').map_or(id, |(_, p)| p);
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_region(region: &str) -> bool {
    region.contains('-')
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl RunTarget {
    /// The Cloud Run settings of a deployment's `target`, with `deployment_region` as the
    /// location when the target names none. A missing or malformed field is an error naming it.
    pub fn from_target(
        target: Option<&Value>,
        deployment_region: Option<&str>,
    ) -> Result<RunTarget, DeploymentError> {
        let target = match target {
            Some(value @ Value::Object(_)) => value,
            _ => return Err(invalid("projectId", "is missing (the deployment has no target)")),
        };
        let project_id =
            string(target, "projectId")?.ok_or_else(|| invalid("projectId", "is missing"))?;
        if !is_project_id(project_id) {
            return Err(invalid("projectId", "must be a project id such as my-project-123"));
        }
        let email = string(target, "serviceAccountEmail")?
            .ok_or_else(|| invalid("serviceAccountEmail", "is missing"))?;
        if !is_service_account_email(email) {
            return Err(invalid("serviceAccountEmail", "must be a service account email"));
        }
        let runtime = match string(target, "runtimeServiceAccountEmail")? {
            Some(runtime) if !is_service_account_email(runtime) => {
                return Err(invalid(
                    "runtimeServiceAccountEmail",
                    "must be a service account email",
                ));
            }
            Some(runtime) => runtime,
            None => email,
        };
        let region = match string(target, "region")? {
            Some(region) => region,
            None => deployment_region.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
                invalid("region", "is missing (neither the target nor the deployment names one)")
            })?,
        };
        if !is_region(region) {
            return Err(invalid("region", "must be a Cloud Run location such as europe-west1"));
        }
        let project_number = match target.get("projectNumber") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Some(n.clone())
            }
            Some(Value::Number(n)) if n.as_u64().is_some() => Some(n.to_string()),
            Some(_) => return Err(invalid("projectNumber", "must be the project's number")),
        };
        Ok(RunTarget {
            project_id: project_id.to_owned(),
            project_number,
            region: region.to_owned(),
            service_account_email: email.to_owned(),
            runtime_service_account_email: runtime.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn full() -> Value {
        json!({"projectId": "customer-project", "region": "europe-west1",
               "serviceAccountEmail": "alien-deployer@customer-project.iam.gserviceaccount.com"})
    }

    #[test]
    fn a_full_target_reads_with_defaults() {
        let target =
            RunTarget::from_target(Some(&full()), None).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(target.region, "europe-west1");
        assert_eq!(target.runtime_service_account_email, target.service_account_email);
        assert_eq!(target.project_number, None);
        let mut no_region = full();
        no_region["region"] = Value::Null;
        let target = RunTarget::from_target(Some(&no_region), Some("us-central1"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(target.region, "us-central1", "the deployment's region");
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases: [(&str, Value); 7] = [
            ("projectId", json!(null)),
            ("projectId", json!("Bad_Project")),
            ("serviceAccountEmail", json!("nobody")),
            ("region", json!(null)),
            ("region", json!("Europe West")),
            ("projectNumber", json!("12ab")),
            ("runtimeServiceAccountEmail", json!("x")),
        ];
        for (field, value) in cases {
            let mut target = full();
            target[field] = value;
            let err = RunTarget::from_target(Some(&target), None).map(|_| ()).unwrap_err();
            assert_eq!(err.code, INVALID_TARGET);
            assert!(err.message.starts_with(&format!("target.{field} ")), "{}", err.message);
        }
        let err = RunTarget::from_target(None, Some("europe-west1")).map(|_| ()).unwrap_err();
        assert!(err.message.contains("no target"), "{}", err.message);
    }
}
