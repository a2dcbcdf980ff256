//! Stamping every resource with the identity of the deployment that sent the data.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use crate::OtlpRequest;

/// Resource attribute: the deployment's id.
pub const ATTR_DEPLOYMENT_ID: &str = "alien.deployment.id";
/// Resource attribute: the deployment's name.
pub const ATTR_DEPLOYMENT_NAME: &str = "alien.deployment.name";
/// Resource attribute: the deployment group's id.
pub const ATTR_DEPLOYMENT_GROUP_ID: &str = "alien.deployment_group.id";
/// Resource attribute: the platform the deployment runs on.
pub const ATTR_PLATFORM: &str = "alien.platform";
/// Resource attribute: the release the deployment runs, when known.
pub const ATTR_RELEASE_ID: &str = "alien.release.id";

/// The keys the manager owns: values a workload sends for them are replaced (or removed).
pub const RESERVED_KEYS: [&str; 5] = [
    ATTR_DEPLOYMENT_ID,
    ATTR_DEPLOYMENT_NAME,
    ATTR_DEPLOYMENT_GROUP_ID,
    ATTR_PLATFORM,
    ATTR_RELEASE_ID,
];

/// Who sent a request, as established by the deployment token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentIdentity {
    /// Deployment id.
    pub deployment_id: String,
    /// Deployment name.
    pub deployment_name: String,
    /// Deployment group id.
    pub deployment_group_id: String,
    /// Platform (`aws`, `gcp`, `azure`, `kubernetes`, `local`, ...).
    pub platform: String,
    /// The release the deployment currently runs, when it has one.
    pub release_id: Option<String>,
}

impl DeploymentIdentity {
    /// The resource attributes that stamp this identity.
    pub fn resource_attributes(&self) -> Vec<KeyValue> {
        let mut attrs = vec![
            string_attr(ATTR_DEPLOYMENT_ID, &self.deployment_id),
            string_attr(ATTR_DEPLOYMENT_NAME, &self.deployment_name),
            string_attr(ATTR_DEPLOYMENT_GROUP_ID, &self.deployment_group_id),
            string_attr(ATTR_PLATFORM, &self.platform),
        ];
        if let Some(release) = &self.release_id {
            attrs.push(string_attr(ATTR_RELEASE_ID, release));
        }
        attrs
    }
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..Default::default()
    }
}

/// Sets the identity's attributes on every resource of `request` (creating missing resources),
/// after removing every attribute the workload sent under a reserved key, so each key appears
/// exactly once and `alien.release.id` is absent when the release is unknown.
pub fn stamp_identity(request: &mut OtlpRequest, identity: &DeploymentIdentity) {
    let attrs = identity.resource_attributes();
    for resource in request.resources_mut() {
        resource.attributes.retain(|kv| !RESERVED_KEYS.contains(&kv.key.as_str()));
        resource.attributes.extend(attrs.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
    use opentelemetry_proto::tonic::resource::v1::Resource;

    pub(crate) fn identity(release: Option<&str>) -> DeploymentIdentity {
        DeploymentIdentity {
            deployment_id: "dep_1".into(),
            deployment_name: "prod-eu".into(),
            deployment_group_id: "dg_1".into(),
            platform: "aws".into(),
            release_id: release.map(Into::into),
        }
    }

    fn values<'a>(attrs: &'a [KeyValue], key: &str) -> Vec<&'a str> {
        attrs
            .iter()
            .filter(|kv| kv.key == key)
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn spoofed_keys_are_overwritten_once_and_others_kept() {
        let spoofed = Resource {
            attributes: vec![
                string_attr("service.name", "api"),
                string_attr(ATTR_DEPLOYMENT_ID, "dep_other"),
                string_attr(ATTR_DEPLOYMENT_ID, "dep_other2"),
                string_attr(ATTR_RELEASE_ID, "rel_fake"),
                string_attr(ATTR_PLATFORM, "gcp"),
            ],
            ..Default::default()
        };
        let mut req = OtlpRequest::Logs(ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs { resource: Some(spoofed), ..Default::default() },
                ResourceLogs { resource: None, ..Default::default() },
            ],
        });
        stamp_identity(&mut req, &identity(None));
        let OtlpRequest::Logs(logs) = req else { panic!("not logs") };
        for rl in &logs.resource_logs {
            let attrs = &rl.resource.as_ref().unwrap().attributes;
            assert_eq!(values(attrs, ATTR_DEPLOYMENT_ID), ["dep_1"]);
            assert_eq!(values(attrs, ATTR_DEPLOYMENT_NAME), ["prod-eu"]);
            assert_eq!(values(attrs, ATTR_DEPLOYMENT_GROUP_ID), ["dg_1"]);
            assert_eq!(values(attrs, ATTR_PLATFORM), ["aws"]);
            // Unknown release: the workload's claim is removed, not kept.
            assert!(values(attrs, ATTR_RELEASE_ID).is_empty());
        }
        let first = &logs.resource_logs[0].resource.as_ref().unwrap().attributes;
        assert_eq!(values(first, "service.name"), ["api"]);
    }

    #[test]
    fn known_release_is_stamped() {
        let mut req = OtlpRequest::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs::default()],
        });
        stamp_identity(&mut req, &identity(Some("rel_9")));
        let OtlpRequest::Logs(logs) = req else { panic!("not logs") };
        let attrs = &logs.resource_logs[0].resource.as_ref().unwrap().attributes;
        assert_eq!(values(attrs, ATTR_RELEASE_ID), ["rel_9"]);
        assert_eq!(attrs.len(), 5);
    }
}
