//! The typed configuration: every section and binding of `alien-manager.toml`.
//!
//! Sections use kebab-case keys, binding tables camelCase keys tagged by `service`, as the public
//! configuration reference does. Every struct denies unknown fields so a typo is an error, not a
//! silently ignored setting. Doc comments here become `docs/configuration.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole configuration of one manager process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManagerConfig {
    /// HTTP server and background loops.
    pub server: ServerConfig,
    /// The SQLite database, the state directory and encryption at rest.
    pub database: DatabaseConfig,
    /// Where release images live, per platform.
    pub artifact_registry: ArtifactRegistryConfig,
    /// Backends of the remote-commands protocol.
    pub commands: CommandsConfig,
    /// Service identities the manager assumes to reach customer clouds.
    pub impersonation: ImpersonationConfig,
    /// Forwarding of OpenTelemetry data.
    pub telemetry: TelemetryConfig,
}

impl ManagerConfig {
    /// Every configured backend binding as `(key path, service)`, e.g.
    /// `("commands.kv", "dynamodb")`: what the binary checks against the backends it was built
    /// with, before anything is created.
    pub fn bindings(&self) -> Vec<(&'static str, &'static str)> {
        let registry = &self.artifact_registry;
        let mut out = Vec::new();
        for (key, binding) in [
            ("artifact-registry.default", &registry.default),
            ("artifact-registry.aws", &registry.aws),
            ("artifact-registry.gcp", &registry.gcp),
            ("artifact-registry.azure", &registry.azure),
        ] {
            if let Some(binding) = binding {
                out.push((key, binding.service()));
            }
        }
        if let Some(ArtifactRegistryBinding::Local { storage: Some(storage), .. }) =
            &registry.default
        {
            out.push(("artifact-registry.default.storage", storage.service()));
        }
        if let Some(kv) = &self.commands.kv {
            out.push(("commands.kv", kv.service()));
        }
        if let Some(storage) = &self.commands.storage {
            out.push(("commands.storage", storage.service()));
        }
        let identities = &self.impersonation;
        if let Some(AwsImpersonation::Awsiam { .. }) = identities.aws {
            out.push(("impersonation.aws", "awsiam"));
        }
        if let Some(GcpImpersonation::Gcpserviceaccount { .. }) = identities.gcp {
            out.push(("impersonation.gcp", "gcpserviceaccount"));
        }
        if let Some(AzureImpersonation::Azuremanagedidentity { .. }) = identities.azure {
            out.push(("impersonation.azure", "azuremanagedidentity"));
        }
        out
    }
}

/// `[server]`: the HTTP server and the background loops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// HTTP server port (0 picks a free port and logs it).
    pub port: u16,
    /// Bind address.
    pub host: String,
    /// Public URL of this manager; set it behind a reverse proxy or load balancer. Defaults to
    /// `http://localhost:{port}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Base URL for binary downloads (agent, deploy CLI).
    pub releases_url: String,
    /// How often the deployment loop runs, in seconds (>= 1).
    pub deployment_interval_secs: u64,
    /// Seconds a deployment's lease lasts without renewal (>= 3; renewed every third of it while
    /// a step runs): after it, another replica takes over the deployment of one that died.
    pub deployment_lease_secs: u64,
    /// Expected heartbeat interval from agents and of the heartbeat loop, in seconds (>= 1).
    pub heartbeat_interval_secs: u64,
    /// Run the deployment loop (`--disable-deployment-loop` turns it off).
    pub deployment_loop: bool,
    /// Run the heartbeat loop (`--disable-heartbeat-loop` turns it off).
    pub heartbeat_loop: bool,
    /// Bearer token required by `GET /metrics`; unset means `/metrics` is open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<Secret>,
    /// Largest accepted JSON request body, in bytes.
    pub max_body_bytes: u64,
    /// Time limit for one API request, in seconds (>= 1); long polls set their own.
    pub request_timeout_secs: u64,
    /// How long a graceful shutdown waits for in-flight requests, in seconds.
    pub shutdown_timeout_secs: u64,
    /// Time a client has to send a request's head, in seconds (>= 1); the same clock closes a
    /// keep-alive connection left idle that long between requests.
    pub header_read_timeout_secs: u64,
    /// Longest wait for the next bytes of a request body, in seconds (>= 1): a stalled upload
    /// ends (408) instead of holding its connection.
    pub body_idle_timeout_secs: u64,
    /// Slowest average rate a request body may arrive at after its first 10 seconds, in bytes
    /// per second (0: no minimum).
    pub min_body_bytes_per_sec: u64,
    /// Connections served at once (>= 1); past it, new connections wait until one closes, and
    /// a log line says so.
    pub max_connections: u32,
    /// TLS certificate chain (PEM) to serve HTTPS with, together with `tls-key`; reread on
    /// SIGHUP. Unset: plain HTTP (put a TLS-terminating proxy in front, the recommended setup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `tls-cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Log output: `pretty` for people, `json` for log pipelines.
    pub log_format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            port: 8080,
            host: "0.0.0.0".to_owned(),
            base_url: None,
            releases_url: "https://releases.alien.dev".to_owned(),
            deployment_interval_secs: 10,
            deployment_lease_secs: 300,
            heartbeat_interval_secs: 60,
            deployment_loop: true,
            heartbeat_loop: true,
            metrics_token: None,
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_timeout_secs: 10,
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 30,
            min_body_bytes_per_sec: 1024,
            max_connections: 1024,
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::Pretty,
        }
    }
}

impl ServerConfig {
    /// The public URL: `base-url` if set, else `http://localhost:{port}` (`https://` when the
    /// manager serves TLS itself); no trailing slash.
    pub fn effective_base_url(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if self.tls_cert.is_some() => format!("https://localhost:{}", self.port),
            None => format!("http://localhost:{}", self.port),
        }
    }

    /// Host (and port) of the public URL: where clients reach the registry at `/v2/`.
    pub fn public_host(&self) -> String {
        let base = self.effective_base_url();
        let without_scheme = base.split_once("://").map_or(base.as_str(), |(_, rest)| rest);
        without_scheme.split('/').next().unwrap_or(without_scheme).to_owned()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[database]`: the store (a SQLite file, or PostgreSQL at `url`), the state directory and
/// encryption at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DatabaseConfig {
    /// SQLite database file; a relative path is resolved against `state-dir`. Not used with
    /// `url`.
    pub path: PathBuf,
    /// PostgreSQL instead of the SQLite file, `postgres://user:password@host:port/database`:
    /// what several replicas share (docs/scale-out.md). The commands KV then defaults to the
    /// same database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Directory for state files and local artifacts (created 0700 if missing).
    pub state_dir: PathBuf,
    /// AEGIS-256 key for sensitive data at rest: 64 hex characters (`openssl rand -hex 32`).
    /// Unset: a key is generated once in `{state-dir}/encryption.key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<Secret>,
}

/// `[database] path`'s default.
const DEFAULT_DATABASE_FILE: &str = "alien-manager.db";

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_DATABASE_FILE),
            url: None,
            state_dir: PathBuf::from(".alien-manager"),
            encryption_key: None,
        }
    }
}

impl DatabaseConfig {
    /// The database file, with a relative `path` resolved against `state-dir`.
    pub fn database_file(&self) -> PathBuf {
        if self.path.is_absolute() { self.path.clone() } else { self.state_dir.join(&self.path) }
    }

    /// Whether `path` differs from its default (with `url`, a `path` is refused).
    pub fn path_is_set(&self) -> bool {
        self.path != Path::new(DEFAULT_DATABASE_FILE)
    }

    /// A path inside the state directory.
    pub fn state_path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.state_dir.join(name)
    }
}

/// `[artifact-registry]`: a platform uses its own entry, else `default`, else the embedded registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ArtifactRegistryConfig {
    /// Registry for every platform without its own entry (default: the embedded registry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<ArtifactRegistryBinding>,
    /// Registry for AWS deployments (`ecr` or `local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<ArtifactRegistryBinding>,
    /// Registry for GCP deployments (`gar` or `local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcp: Option<ArtifactRegistryBinding>,
    /// Registry for Azure deployments (`acr` or `local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure: Option<ArtifactRegistryBinding>,
}

/// An artifact registry binding, tagged by `service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "service",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum ArtifactRegistryBinding {
    /// Amazon ECR.
    Ecr {
        /// Prefix for ECR repository names: images go to `<repositoryPrefix>/<resource>`.
        repository_prefix: String,
        /// IAM role ARN for pull permissions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pull_role_arn: Option<String>,
        /// IAM role ARN for push and pull permissions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        push_role_arn: Option<String>,
    },
    /// Google Artifact Registry.
    Gar {
        /// Full repository name: `projects/P/locations/L/repositories/R`.
        repository_name: String,
        /// Service account email for pull permissions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pull_service_account_email: Option<String>,
        /// Service account email for push and pull permissions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        push_service_account_email: Option<String>,
    },
    /// Azure Container Registry.
    Acr {
        /// Registry name (e.g. `myregistry`).
        registry_name: String,
        /// Resource group where the registry is located.
        resource_group_name: String,
        /// Prefix for repository names.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repository_prefix: Option<String>,
        /// Subscription of the registry (default: `AZURE_SUBSCRIPTION_ID`, else the
        /// subscription of `[impersonation.azure]` `resourceId`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_id: Option<String>,
        /// Base URL of the registry's login server instead of `https://{registryName}.azurecr.io`
        /// (its token service; tests point it at a contract stub).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// The embedded registry, or another registry reachable at `registryUrl`.
    Local {
        /// Registry host (and port) clients use, e.g. `localhost:5000`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registry_url: Option<String>,
        /// Data directory of the embedded registry (default `{state-dir}/registry`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_dir: Option<PathBuf>,
        /// Object storage for the embedded registry's blobs instead of `dataDir` (an S3 or GCS
        /// bucket, an Azure Blob container); on `[artifact-registry.default]` only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storage: Option<RegistryStorage>,
    },
}

/// Where the embedded registry keeps its blobs when not on local disk, tagged by `service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "service",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum RegistryStorage {
    /// An Amazon S3 bucket (or an S3-compatible service at `endpointUrl`).
    S3 {
        /// Bucket name.
        bucket_name: String,
        /// AWS region.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// Endpoint override (emulator, MinIO).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// A Google Cloud Storage bucket.
    Gcs {
        /// Bucket name.
        bucket_name: String,
        /// Endpoint override (emulator; else `STORAGE_EMULATOR_HOST`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// An Azure Blob Storage container.
    Blob {
        /// Storage account name.
        account_name: String,
        /// Container name.
        container_name: String,
        /// Endpoint override (Azurite; else `AZURITE_BLOB_STORAGE_URL` with
        /// `AZURE_STORAGE_USE_EMULATOR`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
}

impl RegistryStorage {
    /// The `service` tag.
    pub fn service(&self) -> &'static str {
        match self {
            Self::S3 { .. } => "s3",
            Self::Gcs { .. } => "gcs",
            Self::Blob { .. } => "blob",
        }
    }
}

impl ArtifactRegistryBinding {
    /// The `service` tag.
    pub fn service(&self) -> &'static str {
        match self {
            Self::Ecr { .. } => "ecr",
            Self::Gar { .. } => "gar",
            Self::Acr { .. } => "acr",
            Self::Local { .. } => "local",
        }
    }
}

/// `[commands]`: backends of the remote-commands protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// KV store for command state (default: SQLite file in `{state-dir}/commands_kv`; with
    /// `[database] url`, that PostgreSQL database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv: Option<KvBinding>,
    /// Blob storage for large payloads (default: `{state-dir}/commands_storage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageBinding>,
    /// Largest uploaded payload (a command's params or response), in bytes: a command declaring
    /// more is refused, an upload stops at the first byte past it (413).
    #[serde(rename = "max-payload-bytes")]
    pub max_payload_bytes: u64,
    /// Command payload bytes one deployment may store at once (params and responses of its
    /// commands until they are forgotten): more is refused with 413 and nothing of it kept. At
    /// least `max-payload-bytes`.
    #[serde(rename = "deployment-quota-bytes")]
    pub deployment_quota_bytes: u64,
    /// Seconds an ended command (and its payloads) is kept before it is forgotten: its status
    /// then answers 404 and its payloads leave the deployment's quota.
    #[serde(rename = "retention-secs")]
    pub retention_secs: u64,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            kv: None,
            storage: None,
            max_payload_bytes: 256 * 1024 * 1024,
            deployment_quota_bytes: 1024 * 1024 * 1024,
            retention_secs: 24 * 60 * 60,
        }
    }
}

/// A KV binding for command state, tagged by `service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "service",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum KvBinding {
    /// Amazon DynamoDB.
    Dynamodb {
        /// Table name.
        table_name: String,
        /// AWS region.
        region: String,
        /// Endpoint override (emulator or compatible service).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// Google Cloud Firestore.
    Firestore {
        /// GCP project id.
        project_id: String,
        /// Firestore database id, e.g. `(default)`.
        database_id: String,
        /// Collection holding command documents.
        collection_name: String,
        /// Endpoint override (emulator).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// Azure Table Storage.
    Tablestorage {
        /// Resource group of the storage account: its endpoints are read from Resource Manager
        /// unless `endpointUrl` (or the emulator's variables) name them.
        resource_group_name: String,
        /// Storage account name.
        account_name: String,
        /// Table name.
        table_name: String,
        /// Subscription of the storage account (default: `AZURE_SUBSCRIPTION_ID`, else the
        /// subscription of `[impersonation.azure]` `resourceId`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_id: Option<String>,
        /// Endpoint override (Azurite).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// PostgreSQL, shared by every replica of a manager (docs/scale-out.md).
    Postgres {
        /// Connection URL, `postgres://user:password@host:port/database` (the KV keeps its
        /// table in the schema `alien_commands`); default: `[database] url`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<Secret>,
    },
    /// SQLite file on local disk (also spelled `local-kv`).
    #[serde(alias = "local-kv")]
    Local {
        /// Directory of the KV file (default `{state-dir}/commands_kv`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_dir: Option<PathBuf>,
    },
}

impl KvBinding {
    /// The `service` tag.
    pub fn service(&self) -> &'static str {
        match self {
            Self::Dynamodb { .. } => "dynamodb",
            Self::Firestore { .. } => "firestore",
            Self::Tablestorage { .. } => "tablestorage",
            Self::Postgres { .. } => "postgres",
            Self::Local { .. } => "local",
        }
    }
}

/// A blob storage binding for large command payloads, tagged by `service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "service",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum StorageBinding {
    /// Amazon S3.
    S3 {
        /// Bucket name.
        bucket_name: String,
        /// AWS region.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// Endpoint override (emulator, MinIO).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// Google Cloud Storage.
    Gcs {
        /// Bucket name.
        bucket_name: String,
        /// Endpoint override (emulator).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// Azure Blob Storage.
    Blob {
        /// Storage account name.
        account_name: String,
        /// Container name.
        container_name: String,
        /// Endpoint override (Azurite).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// Files on local disk served through manager-signed URLs (also spelled `local-storage`).
    #[serde(alias = "local-storage")]
    Local {
        /// Directory of payload files (default `{state-dir}/commands_storage`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storage_path: Option<PathBuf>,
    },
}

impl StorageBinding {
    /// The `service` tag.
    pub fn service(&self) -> &'static str {
        match self {
            Self::S3 { .. } => "s3",
            Self::Gcs { .. } => "gcs",
            Self::Blob { .. } => "blob",
            Self::Local { .. } => "local",
        }
    }
}

/// `[impersonation]`: identities the manager assumes per cloud.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ImpersonationConfig {
    /// AWS identity (IAM role for STS AssumeRole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsImpersonation>,
    /// GCP identity (service account for token exchange).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpImpersonation>,
    /// Azure identity (managed identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureImpersonation>,
}

/// AWS impersonation binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "service",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum AwsImpersonation {
    /// An IAM role assumed with STS AssumeRole.
    Awsiam {
        /// Role name: the role `roleArn` names (checked).
        role_name: String,
        /// Role ARN.
        role_arn: String,
        /// External id required by the role's trust policy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        external_id: Option<String>,
    },
}

/// GCP impersonation binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "service",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum GcpImpersonation {
    /// A service account impersonated through IAM Credentials.
    Gcpserviceaccount {
        /// Service account email.
        email: String,
        /// Service account unique id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unique_id: Option<String>,
    },
}

/// Azure impersonation binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "service",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum AzureImpersonation {
    /// A user-assigned managed identity.
    Azuremanagedidentity {
        /// Client id of the identity.
        client_id: String,
        /// Resource id of the identity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource_id: Option<String>,
        /// Principal (object) id of the identity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        principal_id: Option<String>,
        /// Tenant id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant_id: Option<String>,
    },
}

/// `[telemetry]`: forwarding of OpenTelemetry data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL; signals go to `{base}/v1/{logs,traces,metrics}`. Unset: data is
    /// counted and discarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// HTTP headers sent with every forwarded request (for authentication).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// Compression of forwarded requests.
    pub compression: Compression,
    /// Timeout of one forwarded request, in seconds (>= 1).
    pub timeout_secs: u64,
    /// Bound of the forward queue, in bytes; beyond it clients get 429.
    pub queue_bytes: u64,
    /// Also export the manager's own traces and metrics to the same endpoint.
    #[serde(rename = "self")]
    pub self_telemetry: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            timeout_secs: 10,
            queue_bytes: 64 * 1024 * 1024,
            self_telemetry: true,
        }
    }
}

/// Compression of forwarded telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip.
    Gzip,
    /// No compression.
    None,
}

/// A secret string: shown as `<redacted>` by `Debug` and `Display`, so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
