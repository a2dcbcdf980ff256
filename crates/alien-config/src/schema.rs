//! The list of every configuration key, read off the config types' JSON schema.
//!
//! One walk over the `schemars` schema of [`ManagerConfig`] yields each key with its type,
//! default, description and environment names. The environment provider uses it to map
//! `ALIEN_<SECTION>__<KEY>` names onto keys (and to type their values), and the generated
//! reference (`docs/configuration.md`) is printed from it, so neither can drift from the types.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::ManagerConfig;

/// The short environment names of the public reference and the keys they set.
pub const SHORT_ENV: [(&str, &str); 4] = [
    ("PORT", "server.port"),
    ("HOST", "server.host"),
    ("BASE_URL", "server.base-url"),
    ("OTLP_ENDPOINT", "telemetry.otlp-endpoint"),
];

/// Prefix of the long environment names.
pub const ENV_PREFIX: &str = "ALIEN_";

/// Keys (or key prefixes) whose values are secrets: redacted wherever configuration is shown.
pub const SECRET_KEYS: [&str; 5] = [
    "database.encryption-key",
    "database.url",
    "server.metrics-token",
    "telemetry.headers",
    "commands.kv.url",
];

/// Whether the value at `path` is a secret.
pub fn is_secret(path: &str) -> bool {
    SECRET_KEYS
        .iter()
        .any(|s| path == *s || path.strip_prefix(s).is_some_and(|rest| rest.starts_with('.')))
}

/// What kind of value a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    /// A string.
    String,
    /// A non-negative integer.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// One of a fixed set of strings.
    Enum(Vec<String>),
    /// A table of string values with free keys.
    StringMap,
    /// A nested binding: a table tagged by `service`, with these services and their fields.
    Binding {
        /// The services it accepts.
        services: Vec<String>,
        /// Every field of any of them besides `service`.
        fields: Vec<String>,
    },
}

impl ValueKind {
    /// How the kind is written in the reference.
    pub fn describe(&self) -> String {
        match self {
            Self::String => "string".to_owned(),
            Self::Integer => "integer".to_owned(),
            Self::Boolean => "boolean".to_owned(),
            Self::Enum(values) => {
                values.iter().map(|v| format!("`\"{v}\"`")).collect::<Vec<_>>().join(" \\| ")
            }
            Self::StringMap => "table of strings".to_owned(),
            Self::Binding { services, fields } => {
                let services: Vec<String> = services.iter().map(|v| format!("`\"{v}\"`")).collect();
                let fields: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
                format!("table: `service` ({}), {}", services.join(" \\| "), fields.join(", "))
            }
        }
    }
}

/// One key of a section.
#[derive(Debug, Clone)]
pub struct KeyDoc {
    /// Dotted path, e.g. `server.base-url`.
    pub path: String,
    /// Value kind.
    pub kind: ValueKind,
    /// Default value, if the key has one.
    pub default: Option<Value>,
    /// Description from the type's doc comment.
    pub description: String,
}

/// One `service` variant of a binding slot.
#[derive(Debug, Clone)]
pub struct VariantDoc {
    /// The `service` value.
    pub service: String,
    /// Description of the variant.
    pub description: String,
    /// Fields besides `service`: name, kind, required, description.
    pub fields: Vec<FieldDoc>,
}

/// A field of a binding variant.
#[derive(Debug, Clone)]
pub struct FieldDoc {
    /// camelCase field name.
    pub name: String,
    /// Value kind.
    pub kind: ValueKind,
    /// Whether the field must be given.
    pub required: bool,
    /// Description from the doc comment.
    pub description: String,
}

/// A binding slot, e.g. `commands.kv`.
#[derive(Debug, Clone)]
pub struct BindingDoc {
    /// Dotted path of the slot.
    pub path: String,
    /// Description of the slot.
    pub description: String,
    /// The variants it accepts.
    pub variants: Vec<VariantDoc>,
}

/// A top-level section.
#[derive(Debug, Clone)]
pub struct SectionDoc {
    /// Section name, e.g. `artifact-registry`.
    pub name: String,
    /// Description of the section.
    pub description: String,
    /// Plain keys.
    pub keys: Vec<KeyDoc>,
    /// Binding slots.
    pub bindings: Vec<BindingDoc>,
}

/// Every section of the configuration, in declaration order.
pub fn sections() -> &'static [SectionDoc] {
    static SECTIONS: OnceLock<Vec<SectionDoc>> = OnceLock::new();
    SECTIONS.get_or_init(build_sections)
}

/// The environment variable names that set `path` (the long form, then the short one if any).
pub fn env_names(path: &str) -> Vec<String> {
    let long =
        format!("{ENV_PREFIX}{}", path.split('.').map(env_segment).collect::<Vec<_>>().join("__"));
    let mut names = vec![long];
    names.extend(SHORT_ENV.iter().filter(|(_, key)| *key == path).map(|(n, _)| (*n).to_owned()));
    names
}

/// `base-url` -> `BASE_URL`, `repositoryPrefix` -> `REPOSITORY_PREFIX`.
fn env_segment(segment: &str) -> String {
    let mut out = String::new();
    for c in segment.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(if c == '-' { '_' } else { c.to_ascii_uppercase() });
    }
    out
}

/// A key that an environment variable can set.
#[derive(Debug, Clone)]
pub(crate) struct EnvTarget {
    /// Canonical dotted path.
    pub path: String,
    /// Kind, to type the variable's value.
    pub kind: ValueKind,
}

/// Every settable leaf: `(normalized path, target)`. Normalized = lowercase without `-`/`_`.
pub(crate) fn env_targets() -> &'static [(String, EnvTarget)] {
    static TARGETS: OnceLock<Vec<(String, EnvTarget)>> = OnceLock::new();
    TARGETS.get_or_init(|| {
        let mut out = Vec::new();
        for section in sections() {
            for key in &section.keys {
                out.push((
                    normalize(&key.path),
                    EnvTarget { path: key.path.clone(), kind: key.kind.clone() },
                ));
            }
            for binding in &section.bindings {
                let service = format!("{}.service", binding.path);
                let services = binding.variants.iter().map(|v| v.service.clone()).collect();
                out.push((
                    normalize(&service),
                    EnvTarget { path: service, kind: ValueKind::Enum(services) },
                ));
                for variant in &binding.variants {
                    for field in &variant.fields {
                        let path = format!("{}.{}", binding.path, field.name);
                        let mut targets = vec![(path.clone(), field.kind.clone())];
                        // A nested binding's own service and fields.
                        if let ValueKind::Binding { services, fields } = &field.kind {
                            targets = vec![(
                                format!("{path}.service"),
                                ValueKind::Enum(services.clone()),
                            )];
                            for name in fields {
                                targets.push((format!("{path}.{name}"), ValueKind::String));
                            }
                        }
                        for (path, kind) in targets {
                            if !out.iter().any(|(_, t): &(String, EnvTarget)| t.path == path) {
                                out.push((normalize(&path), EnvTarget { path, kind }));
                            }
                        }
                    }
                }
            }
        }
        out
    })
}

/// Lowercase, separators `-` and `_` dropped; segments kept apart by `.`.
pub(crate) fn normalize(path: &str) -> String {
    path.chars().filter(|c| *c != '-' && *c != '_').map(|c| c.to_ascii_lowercase()).collect()
}

fn build_sections() -> Vec<SectionDoc> {
    let schema = schemars::schema_for!(ManagerConfig);
    let root = schema.as_value();
    let walker =
        Walker { defs: root.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default() };
    walker.properties(root).into_iter().map(|(name, node)| walker.section(&name, &node)).collect()
}

struct Walker {
    defs: Map<String, Value>,
}

impl Walker {
    /// Follows `$ref` and unwraps `anyOf: [X, null]`.
    fn resolve(&self, node: &Value) -> Value {
        if let Some(name) =
            node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/"))
        {
            let mut target = self.defs.get(name).cloned().unwrap_or(Value::Null);
            if let (Some(obj), Some(desc)) = (target.as_object_mut(), node.get("description")) {
                obj.insert("description".into(), desc.clone());
            }
            return self.resolve(&target);
        }
        if let Some(any) = node.get("anyOf").and_then(Value::as_array)
            && let Some(inner) = any.iter().find(|v| v.get("type") != Some(&Value::from("null")))
        {
            let mut resolved = self.resolve(inner);
            if let (Some(obj), Some(desc)) = (resolved.as_object_mut(), node.get("description")) {
                obj.insert("description".into(), desc.clone());
            }
            return resolved;
        }
        node.clone()
    }

    fn properties(&self, node: &Value) -> Vec<(String, Value)> {
        node.get("properties")
            .and_then(Value::as_object)
            .map(|props| props.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn section(&self, name: &str, node: &Value) -> SectionDoc {
        let resolved = self.resolve(node);
        let mut section = SectionDoc {
            name: name.to_owned(),
            description: description(node).or_else(|| description(&resolved)).unwrap_or_default(),
            keys: Vec::new(),
            bindings: Vec::new(),
        };
        let defaults = node.get("default").cloned().unwrap_or(Value::Null);
        for (key, child) in self.properties(&resolved) {
            let path = format!("{name}.{key}");
            let child_resolved = self.resolve(&child);
            if let Some(variants) = self.binding_variants(&child_resolved) {
                section.bindings.push(BindingDoc {
                    path,
                    description: description(&child).unwrap_or_default(),
                    variants,
                });
            } else {
                section.keys.push(KeyDoc {
                    kind: self.kind(&child_resolved),
                    default: child.get("default").cloned().or_else(|| defaults.get(&key).cloned()),
                    description: description(&child).unwrap_or_default(),
                    path,
                });
            }
        }
        section
    }

    fn binding_variants(&self, node: &Value) -> Option<Vec<VariantDoc>> {
        let variants = node.get("oneOf")?.as_array()?;
        let mut out = Vec::new();
        for variant in variants {
            let service = variant.pointer("/properties/service/const")?.as_str()?.to_owned();
            let required: Vec<&str> = variant
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let fields = self
                .properties(variant)
                .into_iter()
                .filter(|(name, _)| name != "service")
                .map(|(name, field)| FieldDoc {
                    kind: self.kind(&self.resolve(&field)),
                    required: required.contains(&name.as_str()),
                    description: description(&field).unwrap_or_default(),
                    name,
                })
                .collect();
            out.push(VariantDoc {
                service,
                description: description(variant).unwrap_or_default(),
                fields,
            });
        }
        Some(out)
    }

    fn kind(&self, node: &Value) -> ValueKind {
        if let Some(variants) = self.binding_variants(node) {
            let mut fields: Vec<String> = Vec::new();
            for field in variants.iter().flat_map(|v| &v.fields) {
                if !fields.contains(&field.name) {
                    fields.push(field.name.clone());
                }
            }
            return ValueKind::Binding {
                services: variants.into_iter().map(|v| v.service).collect(),
                fields,
            };
        }
        if let Some(values) = node.get("oneOf").and_then(Value::as_array) {
            let consts: Vec<String> = values
                .iter()
                .filter_map(|v| v.get("const").and_then(Value::as_str))
                .map(str::to_owned)
                .collect();
            if consts.len() == values.len() {
                return ValueKind::Enum(consts);
            }
        }
        if let Some(values) = node.get("enum").and_then(Value::as_array) {
            return ValueKind::Enum(
                values.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            );
        }
        let types: Vec<&str> = match node.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if types.contains(&"integer") {
            ValueKind::Integer
        } else if types.contains(&"boolean") {
            ValueKind::Boolean
        } else if types.contains(&"object") {
            ValueKind::StringMap
        } else {
            ValueKind::String
        }
    }
}

fn description(node: &Value) -> Option<String> {
    node.get("description")
        .and_then(Value::as_str)
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> KeyDoc {
        sections()
            .iter()
            .flat_map(|s| s.keys.iter())
            .find(|k| k.path == path)
            .cloned()
            .unwrap_or_else(|| panic!("no key {path}"))
    }

    #[test]
    fn sections_follow_the_types_in_order() {
        let names: Vec<&str> = sections().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["server", "database", "artifact-registry", "commands", "impersonation", "telemetry"]
        );
    }

    #[test]
    fn keys_carry_kind_default_and_description() {
        let port = key("server.port");
        assert_eq!(port.kind, ValueKind::Integer);
        assert_eq!(port.default, Some(Value::from(8080)));
        assert!(port.description.contains("port"));
        assert_eq!(key("server.base-url").default, None);
        assert_eq!(key("telemetry.self").kind, ValueKind::Boolean);
        assert_eq!(key("telemetry.headers").kind, ValueKind::StringMap);
        assert_eq!(
            key("server.log-format").kind,
            ValueKind::Enum(vec!["pretty".into(), "json".into()])
        );
        assert_eq!(key("database.encryption-key").kind, ValueKind::String);
    }

    #[test]
    fn bindings_list_every_service_with_required_fields() {
        let kv = sections()
            .iter()
            .flat_map(|s| s.bindings.iter())
            .find(|b| b.path == "commands.kv")
            .expect("commands.kv");
        let services: Vec<&str> = kv.variants.iter().map(|v| v.service.as_str()).collect();
        assert_eq!(services, ["dynamodb", "firestore", "tablestorage", "postgres", "local"]);
        let dynamo = &kv.variants[0];
        let table = dynamo.fields.iter().find(|f| f.name == "tableName").expect("tableName");
        assert!(table.required);
        let endpoint = dynamo.fields.iter().find(|f| f.name == "endpointUrl").expect("endpointUrl");
        assert!(!endpoint.required);
    }

    #[test]
    fn env_names_use_prefix_sections_and_short_names() {
        assert_eq!(env_names("server.port"), ["ALIEN_SERVER__PORT", "PORT"]);
        assert_eq!(env_names("database.encryption-key"), ["ALIEN_DATABASE__ENCRYPTION_KEY"]);
        assert_eq!(env_names("database.url"), ["ALIEN_DATABASE__URL"]);
        assert_eq!(env_names("commands.kv.tableName"), ["ALIEN_COMMANDS__KV__TABLE_NAME"]);
    }

    #[test]
    fn secrets_are_recognised_by_path() {
        assert!(is_secret("database.encryption-key"));
        assert!(is_secret("database.url"));
        assert!(is_secret("telemetry.headers.DD-API-KEY"));
        assert!(!is_secret("telemetry.headers-x"));
        assert!(!is_secret("server.port"));
    }
}
