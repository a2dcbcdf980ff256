//! Every TOML example of the public configuration reference (seed `000_c7fcf610756a94e2.txt`)
//! parses to the values it shows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::PathBuf;

use alien_config::*;

fn parse(text: &str) -> ManagerConfig {
    parse_toml(text).unwrap_or_else(|e| panic!("example does not parse: {e}\n{text}"))
}

#[test]
fn server_section() {
    let c = parse(
        r#"
[server]
port = 8080
host = "0.0.0.0"
base-url = "https://manager.example.com"
releases-url = "https://releases.alien.dev"
deployment-interval-secs = 10
heartbeat-interval-secs = 60
"#,
    );
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.server.host, "0.0.0.0");
    assert_eq!(c.server.base_url.as_deref(), Some("https://manager.example.com"));
    assert_eq!(c.server.releases_url, "https://releases.alien.dev");
    assert_eq!(c.server.deployment_interval_secs, 10);
    assert_eq!(c.server.heartbeat_interval_secs, 60);
}

#[test]
fn database_section() {
    let c = parse(
        r#"
[database]
path = "/var/lib/alien/alien-manager.db"
state-dir = "/var/lib/alien/state"
encryption-key = "your-64-char-hex-key"
"#,
    );
    assert_eq!(c.database.path, PathBuf::from("/var/lib/alien/alien-manager.db"));
    assert_eq!(c.database.state_dir, PathBuf::from("/var/lib/alien/state"));
    assert_eq!(
        c.database.encryption_key.as_ref().map(Secret::expose),
        Some("your-64-char-hex-key")
    );
    assert_eq!(c.database.database_file(), PathBuf::from("/var/lib/alien/alien-manager.db"));
}

#[test]
fn ecr_registry() {
    let c = parse(
        r#"
[artifact-registry.aws]
service = "ecr"
repositoryPrefix = "alien-artifacts"
pullRoleArn = "arn:aws:iam::123456789:role/ecr-pull"
pushRoleArn = "arn:aws:iam::123456789:role/ecr-push"
"#,
    );
    assert_eq!(
        c.artifact_registry.aws,
        Some(ArtifactRegistryBinding::Ecr {
            repository_prefix: "alien-artifacts".into(),
            pull_role_arn: Some("arn:aws:iam::123456789:role/ecr-pull".into()),
            push_role_arn: Some("arn:aws:iam::123456789:role/ecr-push".into()),
        })
    );
}

#[test]
fn gar_registry() {
    let c = parse(
        r#"
[artifact-registry.gcp]
service = "gar"
repositoryName = "projects/my-project/locations/us-central1/repositories/alien"
pullServiceAccountEmail = "pull@project.iam.gserviceaccount.com"
pushServiceAccountEmail = "push@project.iam.gserviceaccount.com"
"#,
    );
    assert_eq!(
        c.artifact_registry.gcp,
        Some(ArtifactRegistryBinding::Gar {
            repository_name: "projects/my-project/locations/us-central1/repositories/alien".into(),
            pull_service_account_email: Some("pull@project.iam.gserviceaccount.com".into()),
            push_service_account_email: Some("push@project.iam.gserviceaccount.com".into()),
        })
    );
}

#[test]
fn acr_registry() {
    let c = parse(
        r#"
[artifact-registry.azure]
service = "acr"
registryName = "myregistry"
resourceGroupName = "rg-alien"
"#,
    );
    assert_eq!(
        c.artifact_registry.azure,
        Some(ArtifactRegistryBinding::Acr {
            registry_name: "myregistry".into(),
            resource_group_name: "rg-alien".into(),
            repository_prefix: None,
            subscription_id: None,
            endpoint_url: None,
        })
    );
}

#[test]
fn explicit_local_registry() {
    let c = parse(
        r#"
[artifact-registry.default]
service = "local"
registryUrl = "localhost:5000"
dataDir = "/var/lib/alien/registry"
"#,
    );
    assert_eq!(
        c.artifact_registry.default,
        Some(ArtifactRegistryBinding::Local {
            registry_url: Some("localhost:5000".into()),
            data_dir: Some(PathBuf::from("/var/lib/alien/registry")),
            storage: None,
        })
    );
}

#[test]
fn dynamodb_and_s3_commands() {
    let c = parse(
        r#"
[commands]
kv = { service = "dynamodb", tableName = "alien-commands", region = "us-east-1" }
storage = { service = "s3", bucketName = "alien-command-storage" }
"#,
    );
    assert_eq!(
        c.commands.kv,
        Some(KvBinding::Dynamodb {
            table_name: "alien-commands".into(),
            region: "us-east-1".into(),
            endpoint_url: None
        })
    );
    assert_eq!(
        c.commands.storage,
        Some(StorageBinding::S3 {
            bucket_name: "alien-command-storage".into(),
            region: None,
            endpoint_url: None
        })
    );
}

#[test]
fn firestore_and_gcs_commands() {
    let c = parse(
        r#"
[commands]
kv = { service = "firestore", projectId = "my-project", databaseId = "(default)", collectionName = "alien-commands" }
storage = { service = "gcs", bucketName = "alien-command-storage" }
"#,
    );
    assert_eq!(
        c.commands.kv,
        Some(KvBinding::Firestore {
            project_id: "my-project".into(),
            database_id: "(default)".into(),
            collection_name: "alien-commands".into(),
            endpoint_url: None,
        })
    );
    assert_eq!(
        c.commands.storage,
        Some(StorageBinding::Gcs {
            bucket_name: "alien-command-storage".into(),
            endpoint_url: None
        })
    );
}

#[test]
fn table_storage_and_blob_commands() {
    let c = parse(
        r#"
[commands]
kv = { service = "tablestorage", resourceGroupName = "rg-alien", accountName = "alienstate", tableName = "aliencommands" }
storage = { service = "blob", accountName = "alienstate", containerName = "alien-commands" }
"#,
    );
    assert_eq!(
        c.commands.kv,
        Some(KvBinding::Tablestorage {
            resource_group_name: "rg-alien".into(),
            account_name: "alienstate".into(),
            table_name: "aliencommands".into(),
            subscription_id: None,
            endpoint_url: None,
        })
    );
    assert_eq!(
        c.commands.storage,
        Some(StorageBinding::Blob {
            account_name: "alienstate".into(),
            container_name: "alien-commands".into(),
            endpoint_url: None
        })
    );
}

#[test]
fn local_commands_accept_both_spellings() {
    for (kv, storage) in [("local", "local"), ("local-kv", "local-storage")] {
        let c = parse(&format!(
            "[commands]\nkv = {{ service = \"{kv}\", dataDir = \"/kv\" }}\nstorage = {{ service = \"{storage}\" }}\n"
        ));
        assert_eq!(c.commands.kv, Some(KvBinding::Local { data_dir: Some("/kv".into()) }));
        assert_eq!(c.commands.storage, Some(StorageBinding::Local { storage_path: None }));
    }
}

#[test]
fn impersonation_examples() {
    let c = parse(
        r#"
[impersonation.aws]
service = "awsiam"
roleName = "alien-management"
roleArn = "arn:aws:iam::123456789:role/alien-management"

[impersonation.gcp]
service = "gcpserviceaccount"
email = "alien-management@project.iam.gserviceaccount.com"
uniqueId = "123456789012345678"

[impersonation.azure]
service = "azuremanagedidentity"
clientId = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
resourceId = "/subscriptions/.../providers/Microsoft.ManagedIdentity/..."
principalId = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
"#,
    );
    assert_eq!(
        c.impersonation.aws,
        Some(AwsImpersonation::Awsiam {
            role_name: "alien-management".into(),
            role_arn: "arn:aws:iam::123456789:role/alien-management".into(),
            external_id: None,
        })
    );
    assert_eq!(
        c.impersonation.gcp,
        Some(GcpImpersonation::Gcpserviceaccount {
            email: "alien-management@project.iam.gserviceaccount.com".into(),
            unique_id: Some("123456789012345678".into()),
        })
    );
    assert_eq!(
        c.impersonation.azure,
        Some(AzureImpersonation::Azuremanagedidentity {
            client_id: "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".into(),
            resource_id: Some("/subscriptions/.../providers/Microsoft.ManagedIdentity/...".into()),
            principal_id: Some("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".into()),
            tenant_id: None,
        })
    );
}

#[test]
fn telemetry_with_headers() {
    let c = parse(
        r#"
[telemetry]
otlp-endpoint = "https://otel-collector.example.com:4318"

[telemetry.headers]
DD-API-KEY = "your-datadog-key"
Authorization = "Basic base64encoded"
"#,
    );
    assert_eq!(
        c.telemetry.otlp_endpoint.as_deref(),
        Some("https://otel-collector.example.com:4318")
    );
    let headers: BTreeMap<&str, &str> =
        c.telemetry.headers.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(
        headers,
        BTreeMap::from([
            ("DD-API-KEY", "your-datadog-key"),
            ("Authorization", "Basic base64encoded")
        ])
    );
}

#[test]
fn minimal_production_example() {
    let c = parse(
        r#"
[server]
port = 8080
base-url = "https://manager.example.com"

[database]
path = "/var/lib/alien/alien-manager.db"
state-dir = "/var/lib/alien/state"
encryption-key = "your-64-char-hex-key"

[telemetry]
otlp-endpoint = "https://otel-collector.example.com:4318"
"#,
    );
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.server.effective_base_url(), "https://manager.example.com");
    assert_eq!(c.server.host, "0.0.0.0", "unset keys keep their defaults");
    assert_eq!(c.database.state_dir, PathBuf::from("/var/lib/alien/state"));
    assert_eq!(
        c.telemetry.otlp_endpoint.as_deref(),
        Some("https://otel-collector.example.com:4318")
    );
}

#[test]
fn aws_push_mode_example() {
    let c = parse(
        r#"
[server]
base-url = "https://manager.example.com"

[database]
path = "/var/lib/alien/alien-manager.db"
state-dir = "/var/lib/alien/state"
encryption-key = "your-64-char-hex-key"

[artifact-registry.aws]
service = "ecr"
repositoryPrefix = "alien-artifacts"
pushRoleArn = "arn:aws:iam::123456789:role/ecr-push"

[commands]
kv = { service = "dynamodb", tableName = "alien-commands", region = "us-east-1" }
storage = { service = "s3", bucketName = "alien-command-storage" }

[impersonation.aws]
service = "awsiam"
roleName = "alien-management"
roleArn = "arn:aws:iam::123456789:role/alien-management"

[telemetry]
otlp-endpoint = "https://otel-collector.example.com:4318"
"#,
    );
    assert_eq!(c.server.port, 8080);
    assert_eq!(
        c.artifact_registry.aws,
        Some(ArtifactRegistryBinding::Ecr {
            repository_prefix: "alien-artifacts".into(),
            pull_role_arn: None,
            push_role_arn: Some("arn:aws:iam::123456789:role/ecr-push".into()),
        })
    );
    assert!(matches!(c.commands.kv, Some(KvBinding::Dynamodb { .. })));
    assert!(matches!(c.commands.storage, Some(StorageBinding::S3 { .. })));
    assert!(matches!(c.impersonation.aws, Some(AwsImpersonation::Awsiam { .. })));
}

#[test]
fn local_development_example_is_the_defaults() {
    assert_eq!(parse(""), ManagerConfig::default());
    let d = ManagerConfig::default();
    assert_eq!((d.server.port, d.server.host.as_str()), (8080, "0.0.0.0"));
    assert_eq!(d.server.effective_base_url(), "http://localhost:8080");
    assert_eq!(d.server.releases_url, "https://releases.alien.dev");
    assert_eq!((d.server.deployment_interval_secs, d.server.heartbeat_interval_secs), (10, 60));
    assert_eq!(d.database.database_file(), PathBuf::from(".alien-manager/alien-manager.db"));
}

/// The seed's placeholder key parses (it is an example), but a manager will not start with it.
#[test]
fn placeholder_encryption_key_parses_but_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.toml");
    std::fs::write(&file, "[database]\nencryption-key = \"your-64-char-hex-key\"\n").unwrap();
    let cli = CliOverrides { config: Some(file), ..Default::default() };
    let err = load_from(&cli, Vec::new(), dir.path()).unwrap_err().to_string();
    assert!(err.contains("database.encryption-key"), "{err}");
    assert!(err.contains("64 hex"), "{err}");
}
