//! Where in the customer's subscription a deployment's containers run, from its platform
//! target (`spec/clouds.md`: `{subscriptionId, tenantId, clientId}`, which the impersonation
//! reads) plus what Container Apps needs, which this deployer reads:
//!
//! ```json
//! {"subscriptionId": "…", "tenantId": "…", "clientId": "…",
//!  "resourceGroup": "rg-acme", "location": "westeurope",
//!  "environmentId": "/subscriptions/…/resourceGroups/rg-acme/providers/Microsoft.App/managedEnvironments/acme",
//!  "identityResourceId": "/subscriptions/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/alien-pull",
//!  "identityPrincipalId": "…"}
//! ```
//!
//! `location` falls back to the deployment's `region`. `identityResourceId` (a user-assigned
//! identity the apps run as and pull images with) and its `identityPrincipalId` (what the
//! registry grant names) are needed only for images of the configured registry.

use alien_core::DeploymentError;
use serde_json::Value;

use crate::identity::is_guid;

/// The error code of a target the deployer cannot use.
pub const INVALID_TARGET: &str = alien_deployer::codes::INVALID_TARGET;

/// What Container Apps needs to know about the customer's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsTarget {
    /// The subscription apps are created in.
    pub subscription_id: String,
    /// The customer's tenant.
    pub tenant_id: String,
    /// The application the deployer acts as (impersonated).
    pub client_id: String,
    /// The resource group apps are created in.
    pub resource_group: String,
    /// The managed environment's ARM id.
    pub environment_id: String,
    /// The Azure region, e.g. `westeurope`.
    pub location: String,
    /// The user-assigned identity the apps run as and pull with, if any.
    pub identity_resource_id: Option<String>,
    /// Its principal (object) id, if given.
    pub identity_principal_id: Option<String>,
}

fn invalid(field: &str, message: &str) -> DeploymentError {
    DeploymentError {
        code: INVALID_TARGET.into(),
        message: format!(
            "target.{field} {message}; azure deployments give {{\"subscriptionId\", \"tenantId\", \
             \"clientId\", \"resourceGroup\", \"environmentId\", \"location\"}} (docs/azure-arm.md)"
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

fn required<'a>(target: &'a Value, field: &str) -> Result<&'a str, DeploymentError> {
    string(target, field)?.ok_or_else(|| invalid(field, "is missing"))
}

fn guid<'a>(target: &'a Value, field: &str) -> Result<&'a str, DeploymentError> {
    let value = required(target, field)?;
    if !is_guid(value) {
        return Err(invalid(field, "must be a GUID"));
    }
    Ok(value)
}

/// Whether `id` is an ARM id of provider `provider` and type `kind` (case-insensitive).
fn is_arm_id(id: &str, provider: &str, kind: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() == 9
        && parts[0].is_empty()
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && parts[3].eq_ignore_ascii_case("resourceGroups")
        && parts[5].eq_ignore_ascii_case("providers")
        && parts[6].eq_ignore_ascii_case(provider)
        && parts[7].eq_ignore_ascii_case(kind)
        && parts.iter().skip(2).step_by(2).all(|p| !p.is_empty())
}

impl AppsTarget {
    /// The Container Apps settings of a deployment's `target`, with `deployment_region` as the
    /// location when the target names none. A missing or malformed field is an error naming it.
    pub fn from_target(
        target: Option<&Value>,
        deployment_region: Option<&str>,
    ) -> Result<AppsTarget, DeploymentError> {
        let target = match target {
            Some(value @ Value::Object(_)) => value,
            _ => {
                return Err(invalid("subscriptionId", "is missing (the deployment has no target)"));
            }
        };
        let subscription_id = guid(target, "subscriptionId")?;
        let tenant_id = required(target, "tenantId")?;
        let client_id = guid(target, "clientId")?;
        let resource_group = required(target, "resourceGroup")?;
        let group_ok = resource_group.len() <= 90
            && !resource_group.ends_with('.')
            && resource_group
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
        if !group_ok {
            return Err(invalid("resourceGroup", "must be a resource group name"));
        }
        let environment_id = required(target, "environmentId")?;
        if !is_arm_id(environment_id, "Microsoft.App", "managedEnvironments") {
            return Err(invalid(
                "environmentId",
                "must be a managed environment's id (/subscriptions/…/providers/Microsoft.App/managedEnvironments/…)",
            ));
        }
        let location = match string(target, "location")? {
            Some(location) => location,
            None => deployment_region.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
                invalid("location", "is missing (neither the target nor the deployment names one)")
            })?,
        };
        if location.is_empty() || !location.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid("location", "must be an Azure region name such as westeurope"));
        }
        let identity_resource_id = string(target, "identityResourceId")?;
        if let Some(id) = identity_resource_id
            && !is_arm_id(id, "Microsoft.ManagedIdentity", "userAssignedIdentities")
        {
            return Err(invalid("identityResourceId", "must be a user-assigned identity's id"));
        }
        let identity_principal_id = match string(target, "identityPrincipalId")? {
            Some(p) if !is_guid(p) => return Err(invalid("identityPrincipalId", "must be a GUID")),
            other => other,
        };
        Ok(AppsTarget {
            subscription_id: subscription_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            resource_group: resource_group.to_owned(),
            environment_id: environment_id.to_owned(),
            location: location.to_ascii_lowercase(),
            identity_resource_id: identity_resource_id.map(str::to_owned),
            identity_principal_id: identity_principal_id.map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const GUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn full() -> Value {
        json!({"subscriptionId": GUID, "tenantId": GUID, "clientId": GUID,
               "resourceGroup": "rg-acme", "location": "westeurope",
               "environmentId": format!("/subscriptions/{GUID}/resourceGroups/rg-acme/providers/Microsoft.App/managedEnvironments/acme")})
    }

    #[test]
    fn a_full_target_reads_and_the_location_falls_back() {
        let target =
            AppsTarget::from_target(Some(&full()), None).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(target.location, "westeurope");
        let mut no_location = full();
        no_location["location"] = Value::Null;
        let target = AppsTarget::from_target(Some(&no_location), Some("northeurope"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(target.location, "northeurope");
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases: [(&str, Value); 9] = [
            ("subscriptionId", json!(null)),
            ("subscriptionId", json!("nope")),
            ("tenantId", json!(null)),
            ("clientId", json!("x")),
            ("resourceGroup", json!(null)),
            ("environmentId", json!("/subscriptions/x/resourceGroups/y")),
            ("location", json!(null)),
            (
                "identityResourceId",
                json!(
                    "/subscriptions/a/resourceGroups/b/providers/Microsoft.App/managedEnvironments/c"
                ),
            ),
            ("identityPrincipalId", json!("p")),
        ];
        for (field, value) in cases {
            let mut target = full();
            target[field] = value;
            let err = AppsTarget::from_target(Some(&target), None).map(|_| ()).unwrap_err();
            assert_eq!(err.code, INVALID_TARGET);
            assert!(err.message.starts_with(&format!("target.{field} ")), "{}", err.message);
        }
        let err = AppsTarget::from_target(None, None).map(|_| ()).unwrap_err();
        assert!(err.message.contains("no target"), "{}", err.message);
    }
}
