//! Turning stack JSON into a [`Stack`], with every shape error reported at once.
//!
//! Serde stops at the first error, so the stack is parsed in layers: the stack's own fields, then
//! each resource entry, then each resource's config, each with `serde_path_to_error` and a path
//! prefix. One bad field per resource is reported, for every resource.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;

use super::{CONTAINER_TYPE, ContainerConfig, ResourceConfig, ResourceEntry, Stack};
use crate::error::FieldViolation;

/// Parses stack JSON into a [`Stack`] without checking its rules (see [`Stack::validate`]).
///
/// Each violation has the path of the offending field (`resources.api.config.ports[0].expose`).
pub fn parse_stack(value: &Value) -> Result<Stack, Vec<FieldViolation>> {
    let header = deserialize_at::<Stack<IgnoredAny>>("", value);
    let mut resources = BTreeMap::new();
    let mut violations = Vec::new();
    let entries = value.get("resources").and_then(Value::as_object).into_iter().flatten();
    for (key, entry) in entries {
        match resource_entry(key, entry) {
            Ok(entry) => {
                resources.insert(key.clone(), entry);
            }
            Err(violation) => violations.push(violation),
        }
    }
    match header {
        Ok(header) if violations.is_empty() => Ok(Stack {
            id: header.id,
            resources,
            permissions: header.permissions,
            supported_platforms: header.supported_platforms,
        }),
        Ok(_) => Err(violations),
        Err(violation) => {
            violations.insert(0, violation);
            Err(violations)
        }
    }
}

/// Parses a stack of a new release and checks every rule, including that its code is built
/// ([`Stack::validate_for_release`]).
pub fn parse_release_stack(value: &Value) -> Result<Stack, Vec<FieldViolation>> {
    let stack = parse_stack(value)?;
    let violations = stack.validate_for_release();
    if violations.is_empty() { Ok(stack) } else { Err(violations) }
}

fn resource_entry(key: &str, value: &Value) -> Result<ResourceEntry, FieldViolation> {
    let prefix = format!("resources.{key}");
    let in_resource = |violation: FieldViolation| {
        FieldViolation::new(violation.path, format!("resource {key:?}: {}", violation.message))
    };
    let header =
        deserialize_at::<ResourceEntry<IgnoredAny>>(&prefix, value).map_err(in_resource)?;
    let config = resource_config(value.get("config").unwrap_or(&Value::Null))
        .map_err(|violation| in_resource(prefixed(&format!("{prefix}.config"), violation)))?;
    Ok(ResourceEntry {
        config,
        lifecycle: header.lifecycle,
        dependencies: header.dependencies,
        remote_access: header.remote_access,
    })
}

/// Parses a resource config; the violation's path is relative to the config.
pub(super) fn resource_config(value: &Value) -> Result<ResourceConfig, FieldViolation> {
    let Some(object) = value.as_object() else {
        return Err(FieldViolation::new("", "expected an object with a string `type`"));
    };
    match object.get("type").and_then(Value::as_str) {
        Some(CONTAINER_TYPE) => {
            let mut fields = object.clone();
            fields.remove("type");
            deserialize_at::<ContainerConfig>("", &Value::Object(fields))
                .map(|container| ResourceConfig::Container(Box::new(container)))
        }
        Some(_) => Ok(ResourceConfig::Other(value.clone())),
        None => Err(FieldViolation::new(
            "type",
            "expected a string resource type such as \"container\"",
        )),
    }
}

fn deserialize_at<T: DeserializeOwned>(prefix: &str, value: &Value) -> Result<T, FieldViolation> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let relative = FieldViolation::new(err.path().to_string(), err.inner().to_string());
        prefixed(prefix, relative)
    })
}

/// Puts `prefix` before a violation's relative path (`"."` and `""` mean the prefix itself).
fn prefixed(prefix: &str, violation: FieldViolation) -> FieldViolation {
    let relative = violation.path.as_str();
    let path = match relative {
        "" | "." => prefix.to_owned(),
        _ if prefix.is_empty() => relative.to_owned(),
        _ if relative.starts_with('[') => format!("{prefix}{relative}"),
        _ => format!("{prefix}.{relative}"),
    };
    FieldViolation::new(path, violation.message)
}

/// A relative violation as one line, for serde errors of [`ResourceConfig`]'s `Deserialize`.
pub(super) fn describe(violation: &FieldViolation) -> String {
    if violation.path.is_empty() { violation.message.clone() } else { violation.to_string() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn container(id: &str) -> Value {
        json!({
            "config": {
                "id": id, "type": "container",
                "code": {"type": "image", "image": "nginx:1"},
                "cpu": {"min": "1", "desired": "1"},
                "memory": {"min": "512Mi", "desired": "512Mi"},
                "environment": {}, "links": [],
                "permissions": "execution",
                "ports": [{"port": 80}],
                "stateful": false
            },
            "dependencies": [],
            "lifecycle": "live"
        })
    }

    #[test]
    fn other_resource_types_pass_through_unchanged() {
        let storage = json!({
            "config": {"id": "files", "type": "storage", "publicRead": true, "future": {"x": [1]}},
            "dependencies": [{"type": "container", "id": "api"}],
            "lifecycle": "frozen",
            "remoteAccess": true
        });
        let value = json!({
            "id": "app",
            "resources": {"api": container("api"), "files": storage},
            "permissions": {"profiles": {"execution": {}}, "management": "auto"},
            "supportedPlatforms": ["aws", "local"]
        });
        let stack = parse_stack(&value).unwrap();
        assert_eq!(stack.resources["files"].config.resource_type(), "storage");
        assert_eq!(stack.containers().count(), 1);
        assert_eq!(serde_json::to_value(&stack).unwrap(), value);
        let via_serde: Stack = serde_json::from_value(value).unwrap();
        assert_eq!(via_serde, stack);
    }

    #[test]
    fn shape_errors_of_every_resource_are_reported_with_paths() {
        let mut api = container("api");
        api["config"]["ports"][0]["expose"] = json!("udp");
        let mut web = container("web");
        web["config"]["replica"] = json!(2);
        let mut worker = container("worker");
        worker["lifecycle"] = json!("sometimes");
        let value = json!({
            "id": "app",
            "resources": {"api": api, "ok": container("ok"), "web": web, "worker": worker}
        });
        let violations = parse_stack(&value).unwrap_err();
        let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "resources.api.config.ports[0].expose",
                "resources.web.config.replica",
                "resources.worker.lifecycle"
            ]
        );
        assert!(violations[0].message.starts_with("resource \"api\": unknown variant `udp`"));
        assert!(violations[1].message.contains("unknown field `replica`"), "{}", violations[1]);
    }

    #[test]
    fn stack_level_errors_are_reported_with_resource_errors() {
        let mut api = container("api");
        api["config"]["cpu"] = json!(true);
        let value = json!({"resources": {"api": api}, "supportedPlatforms": ["aws"]});
        let violations = parse_stack(&value).unwrap_err();
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].message.contains("missing field `id`"), "{}", violations[0]);
        assert_eq!(violations[1].path, "resources.api.config.cpu");

        let violations =
            parse_stack(&json!({"id": "a", "resources": {}, "supportedPlatforms": ["mars"]}))
                .unwrap_err();
        assert_eq!(violations[0].path, "supportedPlatforms[0]");
    }

    #[test]
    fn configs_without_a_type_or_not_objects_are_rejected() {
        for (config, path) in [
            (json!({"id": "x"}), "resources.x.config.type"),
            (json!({"id": "x", "type": 3}), "resources.x.config.type"),
            (json!("container"), "resources.x.config"),
        ] {
            let value = json!({"id": "a", "resources": {"x": {
                "config": config, "lifecycle": "live", "dependencies": []
            }}});
            let violations = parse_stack(&value).unwrap_err();
            assert_eq!(violations.len(), 1);
            assert_eq!(violations[0].path, path);
        }
        let missing =
            json!({"id": "a", "resources": {"x": {"lifecycle": "live", "dependencies": []}}});
        let violations = parse_stack(&missing).unwrap_err();
        assert!(violations[0].message.contains("missing field `config`"), "{}", violations[0]);
        assert!(parse_stack(&json!([1, 2])).is_err());
        assert!(parse_stack(&json!({"id": "a", "resources": [], "extra": 1})).is_err());
    }

    #[test]
    fn serde_deserialize_of_a_bad_config_names_the_field() {
        let mut api = container("api");
        api["config"]["ports"][0]["expose"] = json!("udp");
        let err = serde_json::from_value::<ResourceEntry>(api).unwrap_err();
        assert!(err.to_string().starts_with("ports[0].expose: unknown variant"), "{err}");
    }
}
