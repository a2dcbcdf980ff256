//! Rules a value must follow beyond its type: intervals >= 1, URLs that parse, the 64-hex key,
//! non-empty binding fields, binding services that fit their slot.

use serde_json::Value;

use crate::{ArtifactRegistryBinding, ManagerConfig};

/// Why `[database] path` is refused together with `url`.
pub(crate) const PATH_WITH_URL: &str =
    "names a SQLite file, but the store is on PostgreSQL (database.url); remove one";

/// Every violation as `(key path, message)`; empty when the configuration is valid.
pub fn validate(config: &ManagerConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut err = |key: &str, message: String| out.push((key.to_owned(), message));
    let server = &config.server;
    for (key, value) in [
        ("server.deployment-interval-secs", server.deployment_interval_secs),
        ("server.heartbeat-interval-secs", server.heartbeat_interval_secs),
        ("server.request-timeout-secs", server.request_timeout_secs),
        ("server.shutdown-timeout-secs", server.shutdown_timeout_secs),
        ("server.header-read-timeout-secs", server.header_read_timeout_secs),
        ("server.body-idle-timeout-secs", server.body_idle_timeout_secs),
        ("telemetry.timeout-secs", config.telemetry.timeout_secs),
    ] {
        if value < 1 {
            err(key, format!("must be at least 1 (seconds), got {value}"));
        }
    }
    if server.deployment_lease_secs < 3 {
        err(
            "server.deployment-lease-secs",
            format!(
                "must be at least 3 (seconds: the lease is renewed every third of it), got {}",
                server.deployment_lease_secs
            ),
        );
    }
    if server.max_body_bytes < 1024 {
        err(
            "server.max-body-bytes",
            format!("must be at least 1024, got {}", server.max_body_bytes),
        );
    }
    match (&server.tls_cert, &server.tls_key) {
        (Some(_), None) => err("server.tls-key", "required with server.tls-cert".to_owned()),
        (None, Some(_)) => err("server.tls-cert", "required with server.tls-key".to_owned()),
        _ => {}
    }
    if server.max_connections < 1 {
        err("server.max-connections", "must be at least 1, got 0".to_owned());
    }
    if config.commands.max_payload_bytes < 1024 {
        err(
            "commands.max-payload-bytes",
            format!("must be at least 1024, got {}", config.commands.max_payload_bytes),
        );
    }
    if config.commands.deployment_quota_bytes < config.commands.max_payload_bytes {
        err(
            "commands.deployment-quota-bytes",
            format!(
                "must be at least commands.max-payload-bytes ({}), got {}",
                config.commands.max_payload_bytes, config.commands.deployment_quota_bytes
            ),
        );
    }
    if config.commands.retention_secs < 1 {
        err("commands.retention-secs", "must be at least 1, got 0".to_owned());
    }
    if config.telemetry.queue_bytes < 64 * 1024 {
        err(
            "telemetry.queue-bytes",
            format!("must be at least 65536, got {}", config.telemetry.queue_bytes),
        );
    }
    if server.host.trim().is_empty() {
        err("server.host", "must not be empty; expected a bind address such as 0.0.0.0".to_owned());
    }
    if let Some(url) = &server.base_url {
        check_url(&mut err, "server.base-url", url);
    }
    check_url(&mut err, "server.releases-url", &server.releases_url);
    if let Some(url) = &config.telemetry.otlp_endpoint {
        check_url(&mut err, "telemetry.otlp-endpoint", url);
    }
    if let Some(token) = &server.metrics_token
        && token.expose().trim().is_empty()
    {
        err("server.metrics-token", "must not be empty when set".to_owned());
    }
    if let Some(key) = &config.database.encryption_key {
        let key = key.expose();
        if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
            err(
                "database.encryption-key",
                format!(
                    "must be 64 hex characters (32 bytes), got {} characters; generate one with `openssl rand -hex 32`",
                    key.chars().count()
                ),
            );
        }
    }
    if config.database.state_dir.as_os_str().is_empty() {
        err("database.state-dir", "must not be empty".to_owned());
    }
    if config.database.path.as_os_str().is_empty() {
        err("database.path", "must not be empty".to_owned());
    }
    for name in config.telemetry.headers.keys() {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            err(&format!("telemetry.headers.{name}"), "is not a valid HTTP header name".to_owned());
        }
    }
    let registry = &config.artifact_registry;
    for (slot, binding, allowed) in [
        ("default", &registry.default, ["ecr", "gar", "acr", "local"].as_slice()),
        ("aws", &registry.aws, ["ecr", "local"].as_slice()),
        ("gcp", &registry.gcp, ["gar", "local"].as_slice()),
        ("azure", &registry.azure, ["acr", "local"].as_slice()),
    ] {
        let Some(binding) = binding else { continue };
        let key = format!("artifact-registry.{slot}");
        let service = binding.service();
        if !allowed.contains(&service) {
            err(
                &format!("{key}.service"),
                format!(
                    "`{service}` cannot serve the {slot} platform; expected one of {}",
                    allowed.join(", ")
                ),
            );
        }
        if let ArtifactRegistryBinding::Local { registry_url, data_dir, storage } = binding {
            if storage.is_some() && slot != "default" {
                err(
                    &format!("{key}.storage"),
                    "is honoured on [artifact-registry.default] only (the embedded registry keeps \
                     one store); remove it here"
                        .to_owned(),
                );
            }
            if storage.is_some() && data_dir.is_some() {
                err(
                    &format!("{key}.dataDir"),
                    "cannot be set with storage: the registry's blobs go to one place; remove \
                     one of them"
                        .to_owned(),
                );
            }
            if data_dir.is_some() && slot != "default" {
                err(
                    &format!("{key}.dataDir"),
                    "is honoured on [artifact-registry.default] only (the embedded registry keeps \
                     one store); remove it here"
                        .to_owned(),
                );
            }
            if let Some(url) = registry_url {
                check_registry_url(&mut err, &format!("{key}.registryUrl"), url);
            }
        }
        if let ArtifactRegistryBinding::Gar { repository_name, .. } = binding
            && !is_gar_repository(repository_name)
        {
            err(
                &format!("{key}.repositoryName"),
                format!(
                    "expected `projects/P/locations/L/repositories/R`, got `{repository_name}`"
                ),
            );
        }
    }
    // The management role is named twice: the name must be the ARN's.
    if let Some(crate::AwsImpersonation::Awsiam { role_name, role_arn, .. }) =
        &config.impersonation.aws
    {
        let arn_name = role_arn.split_once(":role/").map(|(_, path)| path.rsplit('/').next());
        match arn_name {
            Some(Some(name)) if name == role_name => {}
            Some(Some(name)) => err(
                "impersonation.aws.roleName",
                format!(
                    "is `{role_name}` but roleArn names the role `{name}`; make them name the \
                     same role"
                ),
            ),
            _ => err(
                "impersonation.aws.roleArn",
                format!(
                    "expected an IAM role ARN such as \
                     arn:aws:iam::123456789012:role/alien-management, got `{role_arn}`"
                ),
            ),
        }
    }
    // A `path` set to its default value is refused by the loader, which knows it was set.
    if let Some(url) = &config.database.url {
        check_postgres_url(&mut err, "database.url", url.expose());
        if config.database.path_is_set() {
            err("database.path", PATH_WITH_URL.to_owned());
        }
    }
    if let Some(crate::KvBinding::Postgres { url }) = &config.commands.kv {
        match url {
            Some(url) => check_postgres_url(&mut err, "commands.kv.url", url.expose()),
            None if config.database.url.is_none() => err(
                "commands.kv.url",
                "is required unless [database] url names the PostgreSQL database to share"
                    .to_owned(),
            ),
            None => {}
        }
    }
    // Binding fields: strings must not be empty, endpoint URLs must parse.
    let bindings = serde_json::to_value(config).unwrap_or(Value::Null);
    for (section, slots) in [
        ("artifact-registry", ["default", "aws", "gcp", "azure"].as_slice()),
        ("commands", ["kv", "storage"].as_slice()),
        ("impersonation", ["aws", "gcp", "azure"].as_slice()),
    ] {
        for slot in slots {
            let Some(fields) =
                bindings.get(section).and_then(|s| s.get(*slot)).and_then(Value::as_object)
            else {
                continue;
            };
            // One level of nesting: the registry's `storage` binding.
            let nested = fields.iter().flat_map(|(field, value)| match value.as_object() {
                Some(inner) => inner
                    .iter()
                    .map(|(sub, v)| (format!("{section}.{slot}.{field}.{sub}"), sub.as_str(), v))
                    .collect::<Vec<_>>(),
                None => vec![(format!("{section}.{slot}.{field}"), field.as_str(), value)],
            });
            for (key, field, value) in nested {
                let Some(text) = value.as_str() else { continue };
                if text.trim().is_empty() {
                    err(&key, "must not be empty".to_owned());
                } else if field == "endpointUrl" {
                    check_url(&mut err, &key, text);
                }
            }
        }
    }
    out
}

fn is_gar_repository(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 6
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "repositories"
        && [parts[1], parts[3], parts[5]].iter().all(|p| !p.is_empty())
}

/// A registry as clients name it: `host[:port]`, or an `http://` / `https://` URL of one with no
/// path (the scheme says whether it is reached over TLS).
fn check_registry_url(err: &mut impl FnMut(&str, String), key: &str, value: &str) {
    let with_scheme =
        if value.contains("://") { value.to_owned() } else { format!("https://{value}") };
    match url::Url::parse(&with_scheme) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some_and(|h| !h.is_empty())
                && url.path().trim_end_matches('/').is_empty()
                && url.query().is_none()
                && url.username().is_empty() => {}
        _ => err(
            key,
            format!(
                "expected a registry host such as `registry.example.com:5000` (or an http:// or \
                 https:// URL of one, without a path), got `{value}`"
            ),
        ),
    }
}

fn check_postgres_url(err: &mut impl FnMut(&str, String), key: &str, value: &str) {
    let scheme_ok = value.starts_with("postgres://") || value.starts_with("postgresql://");
    if !scheme_ok || url::Url::parse(value).is_err() {
        err(
            key,
            "expected a PostgreSQL URL such as postgres://alien:<password>@db.internal:5432/alien"
                .to_owned(),
        );
    }
}

fn check_url(err: &mut impl FnMut(&str, String), key: &str, value: &str) {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        Ok(url) => {
            err(key, format!("expected an http:// or https:// URL with a host, got `{}`", url))
        }
        Err(e) => err(key, format!("expected an http:// or https:// URL, got `{value}` ({e})")),
    }
}
