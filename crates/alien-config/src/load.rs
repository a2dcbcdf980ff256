//! Layering: built-in defaults < TOML file < environment < CLI flags, one figment provider each.
//!
//! [`load`] merges the layers, extracts [`ManagerConfig`], validates it, and turns every problem
//! into a [`ConfigIssue`] naming where the value came from (file, variable or flag), the key path
//! and what was expected. Nothing is opened or bound here: the caller exits before that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{
    Figment, Metadata, Profile, Provider, providers::Format, providers::Serialized, providers::Toml,
};

use crate::error::{ConfigError, ConfigIssue};
use crate::schema::{self, ENV_PREFIX, SHORT_ENV, ValueKind};
use crate::{LogFormat, ManagerConfig, validate};

/// The file read when no `--config` is given and it exists in the working directory.
pub const DEFAULT_FILE: &str = "alien-manager.toml";

/// Source names shown by `config check`.
pub mod source {
    /// A built-in default.
    pub const DEFAULT: &str = "default";
    /// The TOML file.
    pub const FILE: &str = "file";
    /// An environment variable.
    pub const ENV: &str = "env";
    /// A command-line flag.
    pub const FLAG: &str = "flag";
}

/// What the command line says about configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliOverrides {
    /// `--config/-c`: the file to read (must exist).
    pub config: Option<PathBuf>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--host`.
    pub host: Option<String>,
    /// `--base-url`.
    pub base_url: Option<String>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--disable-deployment-loop`.
    pub disable_deployment_loop: bool,
    /// `--disable-heartbeat-loop`.
    pub disable_heartbeat_loop: bool,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// A validated configuration and the layers it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The effective configuration.
    pub config: ManagerConfig,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    figment: Figment,
}

impl LoadedConfig {
    /// Where the value at `path` came from: one of [`source`]'s names.
    pub fn source_of(&self, path: &str) -> &'static str {
        match self.figment.find_metadata(path).map(|m| m.name.as_ref()) {
            Some(source::FILE) => source::FILE,
            Some(source::ENV) => source::ENV,
            Some(source::FLAG) => source::FLAG,
            _ => source::DEFAULT,
        }
    }
}

/// Loads configuration from the process environment and the working directory.
pub fn load(cli: &CliOverrides) -> Result<LoadedConfig, ConfigError> {
    load_from(cli, std::env::vars(), Path::new("."))
}

/// Loads configuration with an explicit environment and working directory (for tests).
pub fn load_from(
    cli: &CliOverrides,
    env: impl IntoIterator<Item = (String, String)>,
    cwd: &Path,
) -> Result<LoadedConfig, ConfigError> {
    let file = match &cli.config {
        Some(path) if path.is_file() => Some(path.clone()),
        Some(path) => return Err(ConfigError::FileNotFound(path.clone())),
        None => Some(cwd.join(DEFAULT_FILE)).filter(|p| p.is_file()),
    };
    let mut figment = Figment::new()
        .merge(Renamed(source::DEFAULT, Serialized::defaults(ManagerConfig::default())));
    if let Some(path) = &file {
        figment = figment.merge(Renamed(source::FILE, Toml::file_exact(path)));
    }
    figment = figment.merge(EnvProvider::new(env)).merge(flags(cli));
    match figment.extract::<ManagerConfig>() {
        Ok(config) => {
            let loaded = LoadedConfig { config, file, figment };
            let mut issues = validate::validate(&loaded.config)
                .into_iter()
                .map(|(key, message)| loaded.issue(key, message))
                .collect::<Vec<_>>();
            // Set to its default value, `path` looks unset to `validate`; it was set all the
            // same, and would be ignored.
            let database = &loaded.config.database;
            if database.url.is_some()
                && !database.path_is_set()
                && loaded.source_of("database.path") != source::DEFAULT
            {
                issues.push(loaded.issue("database.path", validate::PATH_WITH_URL));
            }
            if issues.is_empty() { Ok(loaded) } else { Err(ConfigError::Invalid(issues)) }
        }
        Err(first) => Err(ConfigError::Invalid(every_issue(&figment, first))),
    }
}

impl LoadedConfig {
    /// The file, variable or flag that set `path`, for error messages.
    fn origin_of(&self, path: &str) -> String {
        origin_in(&self.figment, path)
    }

    /// A problem with the value at `key` (dotted path), naming where that value came from:
    /// for checks made after loading, such as whether a configured backend is in this build.
    pub fn issue(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigIssue {
        let key = key.into();
        ConfigIssue { origin: self.origin_of(&key), key, message: message.into() }
    }
}

/// The origin of the value at `path`, or of the nearest table around it that was set (a missing
/// field is named after the binding that lacks it).
fn origin_in(figment: &Figment, path: &str) -> String {
    let mut at = path;
    loop {
        if let Some(meta) = figment.find_metadata(at) {
            return origin(meta, at);
        }
        match at.rsplit_once('.') {
            Some((parent, _)) => at = parent,
            None => return "default".to_owned(),
        }
    }
}

/// Every problem of a configuration that does not deserialize: serde stops at the first error,
/// so the offending key is dropped from the merged values and the rest is read again (defaults
/// take the dropped key's place), until it deserializes; then the value rules run on what is
/// left. An unknown key and a malformed value in the same file are both reported.
fn every_issue(figment: &Figment, first: figment::Error) -> Vec<ConfigIssue> {
    /// More rounds than a file has keys with errors in practice; a bound against a loop.
    const MAX_ROUNDS: usize = 64;
    let mut issues = issues_of(first.clone());
    let Ok(mut merged) = figment.extract::<Value>() else { return issues };
    let mut errors = first;
    for _ in 0..MAX_ROUNDS {
        let mut removed = false;
        for error in errors {
            removed |= remove_path(&mut merged, &offending_path(&error));
        }
        if !removed {
            return issues;
        }
        let retry = Figment::from(Serialized::defaults(&merged));
        match retry.extract::<ManagerConfig>() {
            Ok(config) => {
                for (key, message) in validate::validate(&config) {
                    if !issues.iter().any(|i| i.key == key) {
                        issues.push(ConfigIssue { origin: origin_in(figment, &key), key, message });
                    }
                }
                return issues;
            }
            Err(next) => {
                for mut issue in issues_of(next.clone()) {
                    issue.origin = origin_in(figment, &issue.key);
                    if !issues.iter().any(|i| i.key == issue.key && i.message == issue.message) {
                        issues.push(issue);
                    }
                }
                errors = next;
            }
        }
    }
    issues
}

/// The key an error is about: the unknown key itself, or the value (a table such as a binding
/// with a missing field or an unknown `service`) that failed to deserialize.
fn offending_path(error: &figment::Error) -> Vec<String> {
    let mut path = error.path.clone();
    if let figment::error::Kind::UnknownField(field, _) = &error.kind
        && path.last() != Some(field)
    {
        path.push(field.clone());
    }
    if let figment::error::Kind::UnknownVariant(..) = &error.kind
        && path.last().is_some_and(|last| last == "service")
    {
        path.pop();
    }
    path
}

/// Removes the value at `path` from `value`; whether anything was removed.
fn remove_path(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut current = value;
    for key in parents {
        match current {
            Value::Dict(_, dict) => match dict.get_mut(key) {
                Some(next) => current = next,
                None => return false,
            },
            _ => return false,
        }
    }
    match current {
        Value::Dict(_, dict) => dict.remove(last).is_some(),
        _ => false,
    }
}

fn origin(meta: &Metadata, path: &str) -> String {
    if let Some(file) = meta.source.as_ref().and_then(|s| s.file_path()) {
        return file.display().to_string();
    }
    let keys: Vec<&str> = path.split('.').collect();
    meta.interpolate(&Profile::Default, &keys)
}

/// Parses a TOML document (the `--init` template, tests) without env or flags.
pub fn parse_toml(text: &str) -> Result<ManagerConfig, ConfigError> {
    Figment::new()
        .merge(Renamed(source::DEFAULT, Serialized::defaults(ManagerConfig::default())))
        .merge(Renamed(source::FILE, Toml::string(text)))
        .extract()
        .map_err(|e| ConfigError::Invalid(issues_of(e)))
}

/// Every figment error as an issue with origin, key path and expectation.
fn issues_of(errors: figment::Error) -> Vec<ConfigIssue> {
    errors
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            let message = e.kind.to_string();
            // figment's path of an unknown field already ends with it; a missing one does not.
            if let Some(field) = named_field(&e.kind, &message)
                && path.last() != Some(&field)
            {
                path.push(field);
            }
            let key = path.join(".");
            let origin = match &e.metadata {
                Some(meta) => origin(meta, &key),
                None => "configuration".to_owned(),
            };
            ConfigIssue { origin, key, message }
        })
        .collect()
}

/// The field an unknown/missing-field error is about, so the key path can name it.
fn named_field(kind: &figment::error::Kind, message: &str) -> Option<String> {
    use figment::error::Kind;
    match kind {
        Kind::UnknownField(field, _) => Some(field.clone()),
        Kind::MissingField(field) => Some(field.to_string()),
        Kind::Message(_) => ["unknown field `", "missing field `"].iter().find_map(|prefix| {
            let rest = message.split(prefix).nth(1)?;
            rest.split('`').next().map(str::to_owned)
        }),
        _ => None,
    }
}

/// A provider under another name (the name is what `config check` reports).
struct Renamed<P>(&'static str, P);

impl<P: Provider> Provider for Renamed<P> {
    fn metadata(&self) -> Metadata {
        let inner = self.1.metadata();
        let mut meta = Metadata::named(self.0);
        meta.source = inner.source;
        meta
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        self.1.data()
    }
}

/// The CLI flags that were given, as a provider.
fn flags(cli: &CliOverrides) -> impl Provider {
    let mut values: Vec<(&str, &str, Value)> = Vec::new();
    if let Some(port) = cli.port {
        values.push(("server.port", "--port", Value::from(port)));
    }
    if let Some(host) = &cli.host {
        values.push(("server.host", "--host", Value::from(host.clone())));
    }
    if let Some(url) = &cli.base_url {
        values.push(("server.base-url", "--base-url", Value::from(url.clone())));
    }
    if let Some(dir) = &cli.state_dir {
        values.push(("database.state-dir", "--state-dir", Value::from(dir.display().to_string())));
    }
    if cli.disable_deployment_loop {
        values.push(("server.deployment-loop", "--disable-deployment-loop", Value::from(false)));
    }
    if cli.disable_heartbeat_loop {
        values.push(("server.heartbeat-loop", "--disable-heartbeat-loop", Value::from(false)));
    }
    if let Some(format) = cli.log_format {
        let name = match format {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        };
        values.push(("server.log-format", "--log-format", Value::from(name)));
    }
    KeyValues::new(source::FLAG, "flag", values)
}

/// Environment variables mapped onto keys: the short documented names and `ALIEN_<SECTION>__<KEY>`.
struct EnvProvider(KeyValues);

impl EnvProvider {
    fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let mut values: Vec<(String, String, Value)> = Vec::new();
        // Long names first so the short ones, merged later, win.
        for (name, raw) in &vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if let Some((path, kind)) = env_key(rest) {
                values.push((path, name.clone(), typed(&kind, raw)));
            }
        }
        for (name, path) in SHORT_ENV {
            if let Some(raw) = vars.get(name) {
                let kind = schema::env_targets()
                    .iter()
                    .find(|(_, t)| t.path == path)
                    .map(|(_, t)| t.kind.clone())
                    .unwrap_or(ValueKind::String);
                values.push((path.to_owned(), name.to_owned(), typed(&kind, raw)));
            }
        }
        Self(KeyValues::new(source::ENV, "environment variable", values))
    }
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        self.0.data()
    }
}

/// `SERVER__BASE_URL` -> (`server.base-url`, kind). Unknown names still map (to a lowercase,
/// dashed path) so that `deny_unknown_fields` reports them instead of ignoring a typo; names
/// that do not look like `SECTION__KEY` are not ours and are skipped.
fn env_key(rest: &str) -> Option<(String, ValueKind)> {
    let segments: Vec<&str> = rest.split("__").collect();
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let dashed: Vec<String> =
        segments.iter().map(|s| s.to_ascii_lowercase().replace('_', "-")).collect();
    let section = dashed[0].as_str();
    if !schema::sections().iter().any(|s| s.name == section) {
        return None;
    }
    let normalized = schema::normalize(&dashed.join("."));
    if let Some((_, target)) = schema::env_targets().iter().find(|(n, _)| *n == normalized) {
        return Some((target.path.clone(), target.kind.clone()));
    }
    // A free key under a table of strings (telemetry.headers.X): keep the key as written.
    let parent = schema::normalize(&dashed[..dashed.len() - 1].join("."));
    if let Some((_, target)) =
        schema::env_targets().iter().find(|(n, t)| *n == parent && t.kind == ValueKind::StringMap)
    {
        let key = segments[segments.len() - 1].replace('_', "-");
        return Some((format!("{}.{key}", target.path), ValueKind::String));
    }
    Some((dashed.join("."), ValueKind::String))
}

/// Types a variable's text by the key's kind; text that does not parse stays a string so the
/// deserializer reports "expected u16, found string".
fn typed(kind: &ValueKind, raw: &str) -> Value {
    match kind {
        ValueKind::Integer => {
            raw.trim().parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(raw))
        }
        ValueKind::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::from(true),
            "false" | "0" | "no" => Value::from(false),
            _ => Value::from(raw),
        },
        _ => Value::from(raw),
    }
}

/// A flat list of `(key path, origin name, value)` as a provider whose metadata names, for each
/// key, the variable or flag that set it.
struct KeyValues {
    name: &'static str,
    kind: &'static str,
    values: Vec<(String, String, Value)>,
}

impl KeyValues {
    fn new<K: Into<String>, O: Into<String>>(
        name: &'static str,
        kind: &'static str,
        values: Vec<(K, O, Value)>,
    ) -> Self {
        let values = values.into_iter().map(|(k, o, v)| (k.into(), o.into(), v)).collect();
        Self { name, kind, values }
    }
}

impl Provider for KeyValues {
    fn metadata(&self) -> Metadata {
        let origins: BTreeMap<String, String> =
            self.values.iter().map(|(k, o, _)| (k.clone(), o.clone())).collect();
        let kind = self.kind;
        Metadata::named(self.name).interpolater(move |_: &Profile, keys: &[&str]| {
            let key = keys.join(".");
            let found = origins
                .iter()
                .filter(|(k, _)| {
                    key == **k
                        || key.starts_with(&format!("{k}."))
                        || k.starts_with(&format!("{key}."))
                })
                .map(|(_, o)| o.as_str())
                .next();
            match found {
                Some(origin) => format!("{kind} {origin}"),
                None => format!("{kind} for {key}"),
            }
        })
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut dict = Dict::new();
        for (key, _, value) in &self.values {
            let nested = figment::util::nest(key, value.clone());
            if let Value::Dict(_, d) = nested {
                merge_dict(&mut dict, d);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Later entries win, nested tables merge.
fn merge_dict(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, new)) => merge_dict(existing, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
