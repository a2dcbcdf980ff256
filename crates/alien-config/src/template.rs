//! The commented template printed by `alien-manager serve --init`.
//!
//! Active lines carry the defaults; optional settings are commented out, and so is
//! `[database] path`, which `url` excludes (set beside `url`, even to its default, it is
//! refused). A test proves the template parses back to exactly
//! [`ManagerConfig::default`](crate::ManagerConfig).

/// The `--init` template.
pub const TEMPLATE: &str = r#"# alien-manager.toml
# Priority, lowest to highest: built-in defaults, this file, environment variables, CLI flags.
# Every key can also be set as ALIEN_<SECTION>__<KEY> (e.g. ALIEN_DATABASE__ENCRYPTION_KEY).
# Reference: docs/configuration.md

[server]
port = 8080                       # env PORT, flag --port
host = "0.0.0.0"                  # env HOST, flag --host
# Public URL of this manager (default http://localhost:{port}); set it behind a proxy.
# base-url = "https://manager.example.com"   # env BASE_URL, flag --base-url
releases-url = "https://releases.alien.dev"
deployment-interval-secs = 10
deployment-lease-secs = 300       # another replica takes over a dead one's deployments after it
heartbeat-interval-secs = 60
deployment-loop = true            # flag --disable-deployment-loop
heartbeat-loop = true             # flag --disable-heartbeat-loop
# metrics-token = "..."           # require a bearer token on GET /metrics
max-body-bytes = 2097152
request-timeout-secs = 30
shutdown-timeout-secs = 10
log-format = "pretty"             # "pretty" or "json"; flag --log-format

[database]
# The SQLite file, relative to state-dir; refused together with url (the default otherwise).
# path = "alien-manager.db"
# PostgreSQL instead of the SQLite file, shared by several replicas (docs/scale-out.md).
# url = "postgres://alien:<password>@db.internal:5432/alien"   # env ALIEN_DATABASE__URL
state-dir = ".alien-manager"      # flag --state-dir
# AEGIS-256 key for data at rest; generate with `openssl rand -hex 32`.
# Unset: a key is generated once in {state-dir}/encryption.key.
# encryption-key = "<64 hex characters>"

# Artifact registry per platform; default is the embedded registry at /v2.
# [artifact-registry.aws]
# service = "ecr"
# repositoryPrefix = "alien-artifacts"
# pullRoleArn = "arn:aws:iam::123456789012:role/ecr-pull"
# pushRoleArn = "arn:aws:iam::123456789012:role/ecr-push"
#
# [artifact-registry.gcp]
# service = "gar"
# repositoryName = "projects/my-project/locations/us-central1/repositories/alien"
#
# [artifact-registry.azure]
# service = "acr"
# registryName = "myregistry"
# resourceGroupName = "rg-alien"
# subscriptionId = "00000000-0000-0000-0000-000000000000"   # else AZURE_SUBSCRIPTION_ID

# Commands backends; default is local files in {state-dir}/commands_kv and commands_storage.
# [commands]
# kv = { service = "dynamodb", tableName = "alien-commands", region = "us-east-1" }
# storage = { service = "s3", bucketName = "alien-command-storage" }
# (GCP: kv = { service = "firestore", ... }, storage = { service = "gcs", ... };
#  Azure: kv = { service = "tablestorage", ... }, storage = { service = "blob", ... })

# Identities assumed for push-mode deployments.
# [impersonation.aws]
# service = "awsiam"
# roleName = "alien-management"
# roleArn = "arn:aws:iam::123456789012:role/alien-management"
#
# [impersonation.azure]
# service = "azuremanagedidentity"
# clientId = "00000000-0000-0000-0000-000000000000"

[telemetry]
# otlp-endpoint = "https://otel-collector.example.com:4318"   # env OTLP_ENDPOINT
compression = "gzip"              # "gzip" or "none"
timeout-secs = 10
queue-bytes = 67108864
self = true

# [telemetry.headers]
# DD-API-KEY = "your-datadog-key"
"#;
