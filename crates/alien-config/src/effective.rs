//! The effective configuration as `config check` prints it: one `key = value  # source` line per
//! value, secrets redacted.

use serde_json::Value;

use crate::LoadedConfig;
use crate::schema::is_secret;

/// One effective value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveValue {
    /// Dotted key path.
    pub key: String,
    /// The value as TOML-ish text (`<redacted>` for secrets).
    pub value: String,
    /// `default`, `file`, `env`, `flag`, or `derived` for computed defaults.
    pub source: String,
}

/// Every value of the effective configuration, in declaration order.
pub fn effective_values(loaded: &LoadedConfig) -> Vec<EffectiveValue> {
    let mut out = Vec::new();
    let value = serde_json::to_value(&loaded.config).unwrap_or(Value::Null);
    flatten(loaded, "", &value, &mut out);
    if loaded.config.server.base_url.is_none() {
        let at = out.iter().position(|v| v.key == "server.host").map_or(out.len(), |i| i + 1);
        out.insert(
            at,
            EffectiveValue {
                key: "server.base-url".to_owned(),
                value: quote(&loaded.config.server.effective_base_url()),
                source: "derived".to_owned(),
            },
        );
    }
    out
}

fn flatten(loaded: &LoadedConfig, prefix: &str, value: &Value, out: &mut Vec<EffectiveValue>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(loaded, &key, v, out);
            }
        }
        Value::Object(_) => {}
        other => out.push(EffectiveValue {
            value: if is_secret(prefix) { "\"<redacted>\"".to_owned() } else { render(other) },
            source: loaded.source_of(prefix).to_owned(),
            key: prefix.to_owned(),
        }),
    }
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// The listing `config check` prints.
pub fn render_effective(loaded: &LoadedConfig) -> String {
    let values = effective_values(loaded);
    let width = values.iter().map(|v| v.key.len() + v.value.len() + 3).max().unwrap_or(0);
    let mut text = String::new();
    if let Some(file) = &loaded.file {
        text.push_str(&format!("# file: {}\n", file.display()));
    } else {
        text.push_str("# file: none (defaults, environment and flags only)\n");
    }
    for v in values {
        let line = format!("{} = {}", v.key, v.value);
        text.push_str(&format!("{line:<width$}  # {}\n", v.source));
    }
    text
}
